/*
 * sim.c - the deterministic cluster simulator. See sim.h for the model and the checker.
 */
#ifdef NDEBUG
#error "the simulator refuses to run without assertions"
#endif

#include "tests/sim/sim.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "consensus/msg.h"
#include "crypto/keys.h"

/* A state-transfer reply carries at most this many bytes of blocks (plus one block, so that
 * a single huge block still moves). The encoder's hard limit is above it. */
#define SIM_REPLY_BUDGET (1u << 20)
#define SIM_REPLY_LIMIT (PBFT_MAX_BLOCK_BYTES + (2u << 20))
/* Verified-frame cache: direct mapped, keyed by SHA-256 of the frame. */
#define SIM_VCACHE 4096
/* Livelock guard: this many consecutive events without virtual time moving is a violation. */
#define SIM_MAX_SAME_TIME 200000
#define SIM_TX_CAP 512 /* one encoded simulated transaction */

_Static_assert(SIM_MAX_NODES <= 0x7fff, "node indices fit the event's int16 field");
_Static_assert(PBFT_REC_KEY_BYTES >= 9, "a record key holds a kind byte and a u64 seq");

/* ---------------------------------------------------------------------------------------
 * PRNG.
 * -------------------------------------------------------------------------------------*/
uint64_t sim_mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

void sim_rng_seed(sim_rng *r, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) {
        x += 0x9e3779b97f4a7c15ull;
        r->s[i] = sim_mix64(x);
    }
    if ((r->s[0] | r->s[1] | r->s[2] | r->s[3]) == 0)
        r->s[0] = 1; /* the all-zero state is a fixed point */
}

static uint64_t rotl64(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

uint64_t sim_rng_next(sim_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl64(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl64(s[3], 45);
    return result;
}

uint64_t sim_rng_below(sim_rng *r, uint64_t n)
{
    assert(n > 0);
    uint64_t threshold = (0 - n) % n; /* reject the short last bucket: no modulo bias */
    for (;;) {
        uint64_t x = sim_rng_next(r);
        if (x >= threshold)
            return x % n;
    }
}

uint64_t sim_rng_range(sim_rng *r, uint64_t lo, uint64_t hi)
{
    assert(lo <= hi);
    if (hi - lo == UINT64_MAX)
        return sim_rng_next(r);
    return lo + sim_rng_below(r, hi - lo + 1);
}

bool sim_rng_ppm(sim_rng *r, uint32_t ppm)
{
    if (ppm == 0)
        return false;
    return sim_rng_below(r, SIM_PPM) < ppm;
}

/* ---------------------------------------------------------------------------------------
 * Types.
 * -------------------------------------------------------------------------------------*/

/* A frame in flight, shared by every delivery of one send (refcounted). */
typedef struct {
    uint32_t refs;
    uint8_t verdict; /* 0 unknown, 1 preverify OK, 2 preverify failed */
    size_t n;
    uint8_t p[];
} sim_frame;

enum {
    EV_DELIVER = 1,
    EV_TICK,
    EV_CLIENT_SUBMIT,
    EV_CLIENT_DELIVER,
    EV_CLIENT_RETRY,
    EV_CRASH,
    EV_POWER_CUT,
    EV_ALLOC_FAULT,
    EV_RESTART,
    EV_PART_ON,
    EV_PART_OFF,
    EV_HEAL,
    EV_LIVENESS,
};

typedef struct {
    uint64_t at;
    uint64_t order; /* insertion counter: ties in time are broken by it */
    sim_frame *frame;
    uint64_t arg; /* timer generation, tx index, partition index, client index */
    uint32_t inc; /* the target node's incarnation when the event was created */
    uint16_t kind;
    int16_t node;
    int16_t from;
} sim_ev;

typedef struct {
    uint8_t key[PBFT_REC_KEY_BYTES];
    uint8_t *v;
    size_t n;
} sim_rec;

typedef struct {
    uint8_t *block;
    size_t block_n;
    pbft_digest d;
    uint64_t view;
    uint16_t cert_count;
    uint8_t *cert;
    size_t cert_n;
    pbft_digest chain;
} sim_blk;

/* One statement an honest replica signed: (type, view, seq) -> digest. */
#define SIM_SIGNED_SLOTS 4096
struct signed_slot {
    uint8_t type; /* 0: empty */
    uint64_t view, seq;
    pbft_digest d;
};

typedef struct {
    uint16_t id;
    uint8_t twin; /* 0: not twinned; else the id has two instances */
    bool byz_node;
    bool honest;
    pbft_config cfg;
    pbft_replica *r; /* volatile: NULL while crashed */
    pbft_byz *byz;
    uint32_t inc; /* incarnation: bumped on crash, stale deliveries are lost */
    uint64_t timer_gen;
    uint64_t timer_at;
    bool timer_armed;
    uint64_t want_deadline;
    /* Durable: survives a crash. */
    sim_rec *recs;
    size_t nrecs, caprecs;
    sim_blk *chain;
    uint64_t height;
    size_t capchain;
    /* Power cut (sim_power_cut): armed until the node's next step of the chosen kind. */
    bool cut_armed;
    uint8_t cut_type; /* a PBFT_MSG_* the step must send, or 0 for any step */
    bool cut_fire;    /* the cut landed in this event's step: crash after it */
    /* Allocation fault (sim_alloc_fault): the core's alloc_left-th allocation fails. */
    uint32_t alloc_left; /* 0: disarmed */
    bool alloc_fired;    /* it failed an allocation: the next failed step is expected */
    bool fail_fire;      /* the core failed in this event: crash after it */
    /* Checker. */
    uint64_t exec_seen;             /* the largest executed height observed; must never go back */
    struct signed_slot *signed_tab; /* what this replica signed (honest nodes), lossy */
    uint8_t *txc;                   /* per submitted tx: committed here */
    uint32_t ntxc;                  /* distinct submitted transactions committed here */
    /* Trace / accounting. */
    uint64_t last_view;
    bool last_ivc;
    uint64_t votes_sent;   /* PREPAREs and COMMITs it sent (all incarnations) */
    uint64_t last_vote_ms; /* when it last sent one */
    pbft_stats acc;        /* stats of earlier incarnations */
    struct sim *sim;       /* back pointer, for the core's trace (verbose runs) */
} sim_node;

typedef struct {
    uint8_t *p;
    uint32_t n;
    pbft_digest h;
    uint32_t client;
    bool committed_any;    /* at some honest node */
    uint64_t first_height; /* where it was first committed by an honest node */
    uint64_t first_view;   /* the view that block was proposed in (its header) */
    uint64_t first_ms;     /* when (virtual time) */
} sim_tx;

typedef struct {
    uint8_t pk[32];
    uint8_t sk[64];
    uint64_t nonce;
    uint32_t quota;
    uint32_t sent;
    uint8_t group;
} sim_client;

typedef struct {
    bool set;
    int first_node;
    pbft_digest d;
    uint8_t *block;
    size_t block_n;
    uint32_t *txids;
    uint32_t ntx;
} sim_canon;

typedef struct {
    uint64_t start, end;
    uint8_t *cut; /* nn x nn */
    int nn;       /* node count when the partition was added */
    bool active;
} sim_part;

struct sim {
    sim_options o;
    sim_rng rng;
    uint64_t now;
    uint64_t order;
    uint64_t same_time;
    bool started;

    sim_ev *heap;
    size_t nheap, capheap;

    sim_node nodes[SIM_MAX_NODES];
    int nnodes;

    /* Network. */
    uint32_t drop_ppm, dup_ppm;
    bool healed;
    uint64_t heal_at; /* when the faults healed: the liveness bound runs from here */
    sim_part parts[SIM_MAX_PARTITIONS];
    int nparts;
    uint8_t manual_cut[SIM_MAX_NODES * SIM_MAX_NODES];
    uint8_t allowed[SIM_MAX_NODES * SIM_MAX_NODES];
    bool twin_part;
    uint8_t twin_group[SIM_MAX_NODES];

    /* Clients and the submitted set. */
    sim_client clients[SIM_MAX_CLIENTS];
    sim_tx *txs;
    uint32_t ntx, captx;
    uint32_t *txset; /* open addressing: tx index + 1, 0 = empty */
    size_t txset_cap;
    uint32_t presigned; /* benchmark: txs[0..presigned) are fed by the feeder */
    uint32_t feed_next;
    int feed_node;
    uint32_t feed_inflight;
    bool feeding;

    /* Checker. */
    sim_canon *canon;
    uint64_t ncanon;
    size_t capcanon;
    int state;
    int vclass;
    char reason[SIM_REASON_BYTES];

    struct {
        pbft_digest h;
        bool used;
    } vcache[SIM_VCACHE];

    sim_totals tot;
    uint8_t chain_id[32];
    uint8_t genesis[32];
};

/* ---------------------------------------------------------------------------------------
 * Small helpers.
 * -------------------------------------------------------------------------------------*/
static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "pbft-sim: out of memory (%zu bytes)\n", n);
        abort();
    }
    return p;
}

static void *xcalloc(size_t k, size_t n)
{
    void *p = calloc(k ? k : 1, n ? n : 1);
    if (!p) {
        fprintf(stderr, "pbft-sim: out of memory (%zu x %zu bytes)\n", k, n);
        abort();
    }
    return p;
}

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q) {
        fprintf(stderr, "pbft-sim: out of memory (%zu bytes)\n", n);
        abort();
    }
    return q;
}

static void *xmemdup(const void *p, size_t n)
{
    void *q = xmalloc(n);
    if (n)
        memcpy(q, p, n);
    return q;
}

static uint64_t get_be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

static void put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)(v & 0xff);
        v >>= 8;
    }
}

static uint64_t fnv_add(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static uint64_t fnv_u64(uint64_t h, uint64_t v)
{
    uint8_t b[8];
    put_be64(b, v);
    return fnv_add(h, b, 8);
}

#define FNV_INIT 0xcbf29ce484222325ull

static void hex8(const pbft_digest *d, char out[17])
{
    keys_hex_encode(d->b, 8, out);
}

static bool digest_eq(const pbft_digest *a, const pbft_digest *b)
{
    return memcmp(a->b, b->b, 32) == 0;
}

static bool is_zero32(const uint8_t *p)
{
    uint8_t acc = 0;
    for (int i = 0; i < 32; i++)
        acc |= p[i];
    return acc == 0;
}

static void trace(sim *s, const char *fmt, ...)
{
    if (!s->o.verbose)
        return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%8llu ", (unsigned long long)s->now);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static void fail(sim *s, int cls, const char *fmt, ...)
{
    if (s->state == SIM_VIOLATION)
        return; /* only the first violation counts */
    va_list ap;
    va_start(ap, fmt);
    char msg[SIM_REASON_BYTES - 64];
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    static const char *names[] = {"none", "agreement", "validity", "integrity", "liveness", "core"};
    snprintf(s->reason, sizeof s->reason, "%s: %s (t=%llu ms)", names[cls], msg,
             (unsigned long long)s->now);
    s->state = SIM_VIOLATION;
    s->vclass = cls;
    trace(s, "VIOLATION %s", s->reason);
}

static const char *msg_type_name(uint8_t t)
{
    static const char *names[] = {"?",          "PREPREPARE", "PREPARE",  "COMMIT",
                                  "CHECKPOINT", "VIEWCHANGE", "NEWVIEW",  "STATE_REQ",
                                  "STATE_REP",  "REQUEST",    "COMPLAINT"};
    return t <= PBFT_MSG__MAX ? names[t] : "?";
}

/* describe a frame for the trace: type and, where the body starts with them, view/seq. */
static void frame_desc(const uint8_t *p, size_t n, char *out, size_t cap)
{
    if (n < 8) {
        snprintf(out, cap, "short(%zu)", n);
        return;
    }
    uint8_t t = p[1];
    const uint8_t *b = p + 8;
    size_t bn = n - 8;
    switch (t) {
    case PBFT_MSG_PREPREPARE:
    case PBFT_MSG_PREPARE:
    case PBFT_MSG_COMMIT:
        if (bn >= 48) {
            pbft_digest d;
            memcpy(d.b, b + 16, 32);
            char h[17];
            hex8(&d, h);
            snprintf(out, cap, "%s v=%llu s=%llu d=%.8s", msg_type_name(t),
                     (unsigned long long)get_be64(b), (unsigned long long)get_be64(b + 8), h);
            return;
        }
        break;
    case PBFT_MSG_CHECKPOINT:
        if (bn >= 8) {
            snprintf(out, cap, "CHECKPOINT s=%llu", (unsigned long long)get_be64(b));
            return;
        }
        break;
    case PBFT_MSG_VIEWCHANGE:
    case PBFT_MSG_NEWVIEW:
        if (bn >= 8) {
            snprintf(out, cap, "%s v=%llu", msg_type_name(t), (unsigned long long)get_be64(b));
            return;
        }
        break;
    case PBFT_MSG_STATE_REQ:
        if (bn >= 48) {
            snprintf(out, cap, "STATE_REQ %llu..%llu%s", (unsigned long long)get_be64(b),
                     (unsigned long long)get_be64(b + 8), is_zero32(b + 16) ? "" : " by digest");
            return;
        }
        break;
    case PBFT_MSG_STATE_REP: {
        pbft_env e;
        pbft_state_rep rep;
        if (pbft_frame_decode(p, n, &e) != PBFT_OK ||
            pbft_state_rep_decode(e.body, &rep) != PBFT_OK)
            break;
        size_t w = (size_t)snprintf(out, cap, "STATE_REP %u blocks:", rep.n);
        size_t off = 0;
        pbft_span blk;
        pbft_list cert;
        while (w < cap && pbft_state_rep_next(&rep, &off, &blk, &cert)) {
            pbft_block bl;
            uint64_t h = pbft_block_decode(blk.p, blk.n, &bl) == PBFT_OK ? bl.height : 0;
            int r = snprintf(out + w, cap - w, " h%llu/cert%u", (unsigned long long)h, cert.count);
            if (r < 0)
                break;
            w += (size_t)r;
        }
        return;
    }
    default:
        break;
    }
    snprintf(out, cap, "%s (%zu bytes)", msg_type_name(t), n);
}

/* ---------------------------------------------------------------------------------------
 * Event heap, ordered by (at, order).
 * -------------------------------------------------------------------------------------*/
static bool ev_less(const sim_ev *a, const sim_ev *b)
{
    return a->at < b->at || (a->at == b->at && a->order < b->order);
}

static void heap_push(sim *s, sim_ev ev)
{
    ev.order = s->order++;
    if (s->nheap == s->capheap) {
        s->capheap = s->capheap ? s->capheap * 2 : 1024;
        s->heap = xrealloc(s->heap, s->capheap * sizeof *s->heap);
    }
    size_t i = s->nheap++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!ev_less(&ev, &s->heap[parent]))
            break;
        s->heap[i] = s->heap[parent];
        i = parent;
    }
    s->heap[i] = ev;
}

static sim_ev heap_pop(sim *s)
{
    assert(s->nheap > 0);
    sim_ev top = s->heap[0];
    sim_ev last = s->heap[--s->nheap];
    size_t i = 0;
    size_t n = s->nheap;
    for (;;) {
        size_t l = 2 * i + 1;
        if (l >= n)
            break;
        size_t c = l;
        if (l + 1 < n && ev_less(&s->heap[l + 1], &s->heap[l]))
            c = l + 1;
        if (!ev_less(&s->heap[c], &last))
            break;
        s->heap[i] = s->heap[c];
        i = c;
    }
    if (n > 0)
        s->heap[i] = last;
    return top;
}

static void push_ev(sim *s, uint64_t at, uint16_t kind, int node, int from, uint64_t arg,
                    sim_frame *fr)
{
    assert(at >= s->now);
    sim_ev ev = {0};
    ev.at = at;
    ev.kind = kind;
    ev.node = (int16_t)node;
    ev.from = (int16_t)from;
    ev.arg = arg;
    ev.frame = fr;
    ev.inc = node >= 0 ? s->nodes[node].inc : 0;
    if (fr)
        fr->refs++;
    heap_push(s, ev);
}

/* ---------------------------------------------------------------------------------------
 * Frames and the verification cache.
 * -------------------------------------------------------------------------------------*/
static sim_frame *frame_new(const uint8_t *p, size_t n)
{
    sim_frame *f = xmalloc(sizeof *f + n);
    f->refs = 1; /* the creator's reference, dropped after dispatch */
    f->verdict = 0;
    f->n = n;
    if (n)
        memcpy(f->p, p, n);
    return f;
}

static void frame_release(sim_frame *f)
{
    if (!f)
        return;
    assert(f->refs > 0);
    if (--f->refs == 0)
        free(f);
}

/* frame_preverified returns the preverified flag for a delivery of f: true only if the real
 * pbft_frame_preverify accepted these exact bytes (for this frame object or, through the
 * hash cache, an identical earlier one). Frames that fail go to the core unverified so that
 * it rejects and counts them itself. */
static bool frame_preverified(sim *s, const sim_node *nd, sim_frame *f)
{
    if (f->verdict == 0) {
        pbft_digest h;
        keys_sha256(f->p, f->n, h.b);
        size_t slot = (size_t)(get_be64(h.b) % SIM_VCACHE);
        if (s->vcache[slot].used && digest_eq(&s->vcache[slot].h, &h)) {
            f->verdict = 1;
            s->tot.preverify_hits++;
        } else {
            s->tot.preverify_calls++;
            int rc = pbft_frame_preverify(&nd->cfg, f->p, f->n);
            f->verdict = rc == 0 ? 1 : 2;
            if (rc == 0) {
                s->vcache[slot].h = h;
                s->vcache[slot].used = true;
            }
        }
    } else {
        s->tot.preverify_hits++;
    }
    return f->verdict == 1;
}

/* ---------------------------------------------------------------------------------------
 * Network model.
 * -------------------------------------------------------------------------------------*/
static void recompute_links(sim *s)
{
    int nn = s->nnodes;
    for (int a = 0; a < nn; a++) {
        for (int b = 0; b < nn; b++) {
            size_t k = (size_t)a * SIM_MAX_NODES + (size_t)b;
            bool open = !s->manual_cut[k];
            for (int i = 0; i < s->nparts && open; i++) {
                const sim_part *pt = &s->parts[i];
                if (pt->active && a < pt->nn && b < pt->nn &&
                    pt->cut[(size_t)a * (size_t)pt->nn + (size_t)b])
                    open = false;
            }
            s->allowed[k] = open;
        }
    }
}

static uint64_t net_delay(sim *s)
{
    return sim_rng_range(&s->rng, s->o.delay_min_ms, s->o.delay_max_ms);
}

/* net_send schedules the delivery of frame f from node `from` to node `to`. */
static void net_send(sim *s, int from, int to, sim_frame *f, uint32_t extra_ms)
{
    sim_node *dst = &s->nodes[to];
    if (!s->allowed[(size_t)from * SIM_MAX_NODES + (size_t)to] ||
        (s->twin_part && s->twin_group[from] != s->twin_group[to]) || dst->r == NULL) {
        s->tot.drops_net++;
        return;
    }
    if (s->o.filter && !s->o.filter(s->o.ctx, s, from, to, f->p, f->n)) {
        s->tot.drops_net++;
        return;
    }
    if (sim_rng_ppm(&s->rng, s->drop_ppm)) {
        s->tot.drops_net++;
        return;
    }
    int copies = sim_rng_ppm(&s->rng, s->dup_ppm) ? 2 : 1;
    for (int i = 0; i < copies; i++)
        push_ev(s, s->now + extra_ms + net_delay(s), EV_DELIVER, to, from, 0, f);
}

/* dispatch a frame addressed to replica id `to` (or PBFT_TO_ALL) to every matching node. */
static void dispatch(sim *s, int from, uint16_t to, sim_frame *f, uint32_t extra_ms)
{
    uint16_t self = s->nodes[from].id;
    for (int j = 0; j < s->nnodes; j++) {
        uint16_t id = s->nodes[j].id;
        if (to == PBFT_TO_ALL ? id != self : id == to)
            net_send(s, from, j, f, extra_ms);
    }
}

/* ---------------------------------------------------------------------------------------
 * Submitted transactions.
 * -------------------------------------------------------------------------------------*/
static size_t txset_slot(const sim *s, const pbft_digest *h)
{
    return (size_t)(get_be64(h->b) & (s->txset_cap - 1));
}

static int64_t tx_lookup(const sim *s, const pbft_digest *h)
{
    if (s->txset_cap == 0)
        return -1;
    for (size_t i = txset_slot(s, h);; i = (i + 1) & (s->txset_cap - 1)) {
        uint32_t v = s->txset[i];
        if (v == 0)
            return -1;
        if (digest_eq(&s->txs[v - 1].h, h))
            return (int64_t)(v - 1);
    }
}

/* request_used_up models pbftd's check of a peer's REQUEST (node/node.c): a transaction
 * whose nonce the node's durable state has used is dropped before the core sees it. Here
 * "used" is "committed in this node's durable chain" (the simulated clients never sign two
 * transactions with one nonce). */
static bool request_used_up(const sim *s, const sim_node *nd, const sim_frame *f)
{
    pbft_env e;
    pbft_span tx;
    if (f->n < 2 || f->p[1] != PBFT_MSG_REQUEST || pbft_frame_decode(f->p, f->n, &e) != PBFT_OK ||
        pbft_request_decode(e.body, &tx) != PBFT_OK)
        return false;
    pbft_digest h;
    pbft_tx_hash(tx.p, tx.n, &h);
    int64_t id = tx_lookup(s, &h);
    return id >= 0 && nd->txc[id];
}

static void txset_insert(sim *s, uint32_t idx)
{
    for (size_t i = txset_slot(s, &s->txs[idx].h);; i = (i + 1) & (s->txset_cap - 1)) {
        if (s->txset[i] == 0) {
            s->txset[i] = idx + 1;
            return;
        }
    }
}

/* tx_add records a signed transaction in the submitted set; returns its index. */
static uint32_t tx_add(sim *s, const uint8_t *p, size_t n, uint32_t client)
{
    if (s->ntx == s->captx) {
        size_t old = s->captx;
        s->captx = s->captx ? s->captx * 2 : 64;
        s->txs = xrealloc(s->txs, s->captx * sizeof *s->txs);
        for (int i = 0; i < s->nnodes; i++) {
            s->nodes[i].txc = xrealloc(s->nodes[i].txc, s->captx);
            memset(s->nodes[i].txc + old, 0, s->captx - old);
        }
    }
    if ((size_t)(s->ntx + 1) * 2 > s->txset_cap) {
        free(s->txset);
        s->txset_cap = s->txset_cap ? s->txset_cap * 2 : 256;
        s->txset = calloc(s->txset_cap, sizeof *s->txset);
        if (!s->txset)
            abort();
        uint32_t keep = s->ntx;
        for (uint32_t i = 0; i < keep; i++)
            txset_insert(s, i);
    }
    uint32_t idx = s->ntx++;
    sim_tx *t = &s->txs[idx];
    t->p = xmemdup(p, n);
    t->n = (uint32_t)n;
    pbft_tx_hash(p, n, &t->h);
    t->client = client;
    t->committed_any = false;
    t->first_height = 0;
    txset_insert(s, idx);
    return idx;
}

/* ---------------------------------------------------------------------------------------
 * Durable store: records.
 * -------------------------------------------------------------------------------------*/
static size_t rec_find(const sim_node *nd, const uint8_t *key, bool *found)
{
    size_t lo = 0, hi = nd->nrecs;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = memcmp(nd->recs[mid].key, key, PBFT_REC_KEY_BYTES);
        if (c == 0) {
            *found = true;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = false;
    return lo;
}

static void apply_persist(sim *s, sim_node *nd, const pbft_persist *ps)
{
    if (ps->op == PBFT_PERSIST_PUT) {
        bool found;
        size_t i = rec_find(nd, ps->key, &found);
        if (found) {
            free(nd->recs[i].v);
        } else {
            if (nd->nrecs == nd->caprecs) {
                nd->caprecs = nd->caprecs ? nd->caprecs * 2 : 64;
                nd->recs = xrealloc(nd->recs, nd->caprecs * sizeof *nd->recs);
            }
            memmove(&nd->recs[i + 1], &nd->recs[i], (nd->nrecs - i) * sizeof *nd->recs);
            nd->nrecs++;
            memcpy(nd->recs[i].key, ps->key, PBFT_REC_KEY_BYTES);
        }
        nd->recs[i].v = xmemdup(ps->value.p, ps->value.n);
        nd->recs[i].n = ps->value.n;
    } else if (ps->op == PBFT_PERSIST_DEL_BELOW) {
        uint8_t kind = ps->key[0];
        uint64_t seq = get_be64(ps->key + 1);
        size_t w = 0;
        for (size_t i = 0; i < nd->nrecs; i++) {
            sim_rec *r = &nd->recs[i];
            if (r->key[0] == kind && get_be64(r->key + 1) <= seq) {
                free(r->v);
                continue;
            }
            nd->recs[w++] = *r;
        }
        nd->nrecs = w;
    } else {
        fail(s, SIM_V_CORE, "node %d: unknown persist op %d", (int)(nd - s->nodes), ps->op);
    }
}

/* ---------------------------------------------------------------------------------------
 * The checker: commits.
 * -------------------------------------------------------------------------------------*/

/* validate_block decodes a committed block and maps its transactions to submitted ones.
 * Returns true and fills *ids / *nids (malloc'd) or records a violation. */
static bool validate_block(sim *s, int node, uint64_t h, const pbft_digest *d, const uint8_t *p,
                           size_t n, uint32_t **ids, uint32_t *nids)
{
    pbft_block b;
    int rc = pbft_block_decode(p, n, &b);
    if (rc != PBFT_OK) {
        fail(s, SIM_V_VALIDITY,
             "node %d committed a block at height %llu that does not decode (%s)", node,
             (unsigned long long)h, pbft_strerror(rc));
        return false;
    }
    if (b.height != h) {
        fail(s, SIM_V_INTEGRITY, "node %d committed a block with height %llu at height %llu", node,
             (unsigned long long)b.height, (unsigned long long)h);
        return false;
    }
    pbft_digest bd;
    pbft_block_digest(&b, &bd);
    if (!digest_eq(&bd, d)) {
        fail(s, SIM_V_INTEGRITY, "node %d: block at height %llu does not match its digest", node,
             (unsigned long long)h);
        return false;
    }
    if (pbft_block_check_root(&b, NULL) != PBFT_OK) {
        fail(s, SIM_V_INTEGRITY, "node %d: block at height %llu has a wrong tx_root", node,
             (unsigned long long)h);
        return false;
    }
    uint32_t *out = xmalloc((size_t)b.ntx * sizeof *out);
    size_t off = 0;
    pbft_span tx;
    uint32_t k = 0;
    while (pbft_block_next_tx(&b, &off, &tx)) {
        pbft_digest th;
        pbft_tx_hash(tx.p, tx.n, &th);
        int64_t idx = tx_lookup(s, &th);
        if (idx < 0) {
            char hx[17];
            hex8(&th, hx);
            fail(s, SIM_V_VALIDITY,
                 "node %d committed transaction %s at height %llu that no client submitted", node,
                 hx, (unsigned long long)h);
            free(out);
            return false;
        }
        assert(k < b.ntx);
        out[k++] = (uint32_t)idx;
    }
    if (k != b.ntx) {
        fail(s, SIM_V_VALIDITY, "node %d: block at height %llu declares %u txs, holds %u", node,
             (unsigned long long)h, b.ntx, k);
        free(out);
        return false;
    }
    *ids = out;
    *nids = k;
    return true;
}

static void check_honest_commit(sim *s, int node, uint64_t h, const pbft_commit *c)
{
    sim_node *nd = &s->nodes[node];
    if (h > s->ncanon) {
        if (h > s->capcanon) {
            size_t old = s->capcanon;
            s->capcanon = s->capcanon ? s->capcanon * 2 : 256;
            while (s->capcanon < h)
                s->capcanon *= 2;
            s->canon = xrealloc(s->canon, s->capcanon * sizeof *s->canon);
            memset(s->canon + old, 0, (s->capcanon - old) * sizeof *s->canon);
        }
        s->ncanon = h;
    }
    sim_canon *cn = &s->canon[h - 1];
    uint32_t *ids = NULL;
    uint32_t nids = 0;
    bool own_ids = false;
    if (!cn->set) {
        if (!validate_block(s, node, h, &c->d, c->block.p, c->block.n, &ids, &nids))
            return;
        cn->set = true;
        cn->first_node = node;
        cn->d = c->d;
        cn->block = xmemdup(c->block.p, c->block.n);
        cn->block_n = c->block.n;
        cn->txids = ids;
        cn->ntx = nids;
    } else {
        if (!digest_eq(&cn->d, &c->d)) {
            char a[17], b[17];
            hex8(&cn->d, a);
            hex8(&c->d, b);
            fail(s, SIM_V_AGREEMENT,
                 "height %llu: node %d (replica %u) committed %s but node %d (replica %u) "
                 "committed %s",
                 (unsigned long long)h, cn->first_node, s->nodes[cn->first_node].id, a, node,
                 nd->id, b);
            return;
        }
        if (cn->block_n == c->block.n && memcmp(cn->block, c->block.p, c->block.n) == 0) {
            ids = cn->txids;
            nids = cn->ntx;
        } else {
            /* Same digest, other bytes: validate this copy on its own. */
            if (!validate_block(s, node, h, &c->d, c->block.p, c->block.n, &ids, &nids))
                return;
            own_ids = true;
        }
    }
    pbft_block pb;
    bool decoded = pbft_block_decode(c->block.p, c->block.n, &pb) == PBFT_OK;
    bool honest_proposer = decoded && pb.proposer < s->o.n && s->nodes[pb.proposer].honest;
    for (uint32_t i = 0; i < nids; i++) {
        uint32_t id = ids[i];
        if (nd->txc[id]) {
            s->tot.dup_tx_commits++;
            if (honest_proposer &&
                (pb.view == s->txs[id].first_view || pb.timestamp_ms > s->txs[id].first_ms)) {
                /* An honest primary never proposes a transaction committed or in a block in
                 * flight (issue 12, "one transaction, one block"); a Byzantine one may. Its
                 * own view's blocks it knows; and once a transaction committed anywhere, its
                 * block is in flight in every later view (the NEW-VIEW carries it), so a
                 * repeat proposed after that moment (an honest block's timestamp is its
                 * proposer's clock: here virtual time) is a fault. What remains is PBFT's
                 * own case: prepared in view v but missing from view v+1's NEW-VIEW, so
                 * view v+1 proposed the transaction again before anything committed it,
                 * and a later NEW-VIEW revived the view-v certificate; both commit, in
                 * either order of heights (docs/protocol.md section 9; seed 4005981 has
                 * the revived block first). */
                s->tot.dup_tx_honest++;
                fail(s, SIM_V_VALIDITY,
                     "node %d committed tx#%u again at height %llu (first at %llu), in a block "
                     "proposed by honest replica %u",
                     node, id, (unsigned long long)h, (unsigned long long)s->txs[id].first_height,
                     pb.proposer);
                break;
            }
            trace(s, "duplicate: node %d committed tx#%u again at height %llu (first at %llu)",
                  node, id, (unsigned long long)h, (unsigned long long)s->txs[id].first_height);
        } else {
            nd->txc[id] = 1;
            nd->ntxc++;
            if (!s->txs[id].committed_any) {
                s->txs[id].first_height = h;
                s->txs[id].first_view = decoded ? pb.view : 0;
                s->txs[id].first_ms = s->now;
            }
            s->txs[id].committed_any = true;
        }
    }
    s->tot.txs_committed += nids;
    if (own_ids)
        free(ids);
}

/* store_commit appends a committed block to the node's durable chain. Returns false if it
 * was not stored (out of order). */
static bool store_commit(sim *s, int node, const pbft_commit *c)
{
    sim_node *nd = &s->nodes[node];
    uint64_t h = nd->height;
    if (c->seq != h + 1) {
        if (nd->honest)
            fail(s, SIM_V_INTEGRITY, "node %d committed height %llu after height %llu", node,
                 (unsigned long long)c->seq, (unsigned long long)h);
        return false;
    }
    pbft_digest prev, ch;
    if (h == 0)
        memcpy(prev.b, s->genesis, 32);
    else
        prev = nd->chain[h - 1].chain;
    pbft_chain_next(&prev, &c->d, &ch);
    if (nd->honest && !digest_eq(&ch, &c->chain)) {
        fail(s, SIM_V_INTEGRITY,
             "node %d: chain hash at height %llu is not pbft_chain_next(chain(h-1), digest)", node,
             (unsigned long long)c->seq);
        return false;
    }
    if (nd->honest) {
        check_honest_commit(s, node, c->seq, c);
        if (s->state == SIM_VIOLATION)
            return false;
    }
    if (nd->height == nd->capchain) {
        nd->capchain = nd->capchain ? nd->capchain * 2 : 64;
        nd->chain = xrealloc(nd->chain, nd->capchain * sizeof *nd->chain);
    }
    sim_blk *b = &nd->chain[nd->height++];
    b->block = xmemdup(c->block.p, c->block.n);
    b->block_n = c->block.n;
    b->d = c->d;
    b->view = c->view;
    b->cert_count = c->cert.count;
    b->cert = xmemdup(c->cert.region.p, c->cert.region.n);
    b->cert_n = c->cert.region.n;
    b->chain = ch;
    if (nd->honest)
        s->tot.commits++;
    s->tot.trace_hash =
        fnv_u64(fnv_add(fnv_u64(s->tot.trace_hash, (uint64_t)node), c->d.b, 32), c->seq);
    if (s->o.verbose) {
        char hx[17];
        hex8(&c->d, hx);
        trace(s, "commit node %d (replica %u) h=%llu v=%llu d=%.8s cert=%u %zu bytes", node, nd->id,
              (unsigned long long)c->seq, (unsigned long long)c->view, hx, (unsigned)c->cert.count,
              c->block.n);
    }
    return true;
}

static void app_hash_of(const pbft_digest *chain, uint8_t out[32])
{
    uint8_t buf[3 + 32];
    memcpy(buf, "app", 3);
    memcpy(buf + 3, chain->b, 32);
    keys_sha256(buf, sizeof buf, out);
}

/* ---------------------------------------------------------------------------------------
 * State transfer: serve from the durable chain.
 * -------------------------------------------------------------------------------------*/
static void serve(sim *s, int node, const pbft_serve *sv)
{
    sim_node *nd = &s->nodes[node];
    trace(s, "serve request at node %d from replica %u: %llu..%llu%s (height %llu)", node, sv->to,
          (unsigned long long)sv->from_seq, (unsigned long long)sv->to_seq,
          is_zero32(sv->d.b) ? "" : " by digest", (unsigned long long)nd->height);
    if (sv->from_seq == 0 || sv->from_seq > nd->height || sv->to_seq < sv->from_seq)
        return;
    bool by_digest = !is_zero32(sv->d.b);
    pbft_state_reply sr;
    pbft_state_reply_begin(&sr, nd->id, SIM_REPLY_LIMIT);
    uint64_t last = sv->to_seq < nd->height ? sv->to_seq : nd->height;
    uint32_t cap = nd->cfg.max_state_blocks;
    if (cap == 0 || cap > PBFT_MAX_STATE_BLOCKS)
        cap = PBFT_MAX_STATE_BLOCKS;
    if (by_digest) {
        last = sv->from_seq;
        if (!digest_eq(&nd->chain[sv->from_seq - 1].d, &sv->d)) {
            pbft_wbuf_free(&sr.w);
            return;
        }
    }
    size_t bytes = 0;
    uint32_t count = 0;
    for (uint64_t h = sv->from_seq; h <= last && count < cap; h++) {
        const sim_blk *b = &nd->chain[h - 1];
        size_t sz = 4 + b->block_n + 2 + b->cert_n;
        if (count > 0 && bytes + sz > SIM_REPLY_BUDGET)
            break;
        pbft_list cert = {.count = b->cert_count, .region = {.p = b->cert, .n = b->cert_n}};
        pbft_span blk = {.p = b->block, .n = b->block_n};
        uint8_t *bogus = NULL;
        if (nd->byz != NULL && pbft_byz_mode(nd->byz) == PBFT_BYZ_BOGUS_STATE &&
            (bogus = malloc(b->block_n)) != NULL) {
            memcpy(bogus, b->block, b->block_n);
            pbft_byz_corrupt_state(nd->byz, bogus, b->block_n);
            blk.p = bogus;
        }
        int added = pbft_state_reply_add(&sr, blk, &cert);
        free(bogus);
        if (added != 0)
            break;
        bytes += sz;
        count++;
    }
    if (count == 0) {
        pbft_wbuf_free(&sr.w);
        return;
    }
    pbft_state_reply_seal(&sr, nd->cfg.chain, nd->cfg.sk);
    if (sr.w.err == 0) {
        sim_frame *f = frame_new(sr.w.p, sr.w.len);
        trace(s, "serve node %d -> replica %u blocks %llu..%llu (%u)", node, sv->to,
              (unsigned long long)sv->from_seq, (unsigned long long)(sv->from_seq + count - 1),
              count);
        dispatch(s, node, sv->to, f, 0);
        frame_release(f);
    }
    pbft_wbuf_free(&sr.w);
}

/* ---------------------------------------------------------------------------------------
 * Driving one replica.
 * -------------------------------------------------------------------------------------*/
static void process_output(sim *s, int node, pbft_output *out, int depth);

static void observe_view(sim *s, int node)
{
    sim_node *nd = &s->nodes[node];
    if (!nd->r)
        return;
    uint64_t v = pbft_replica_view(nd->r);
    bool ivc = pbft_replica_in_view_change(nd->r);
    if (v != nd->last_view || ivc != nd->last_ivc) {
        trace(s, "view node %d (replica %u) v=%llu %s primary=%u", node, nd->id,
              (unsigned long long)v, ivc ? "changing" : "active", pbft_replica_primary(nd->r));
        nd->last_view = v;
        nd->last_ivc = ivc;
    }
}

static void arm_timer(sim *s, int node)
{
    sim_node *nd = &s->nodes[node];
    if (!nd->r)
        return;
    uint64_t d = nd->want_deadline;
    if (d == UINT64_MAX) {
        if (nd->timer_armed) {
            nd->timer_gen++;
            nd->timer_armed = false;
        }
        return;
    }
    uint64_t at = d > s->now ? d : s->now;
    if (nd->timer_armed && nd->timer_at == at)
        return;
    nd->timer_gen++;
    nd->timer_armed = true;
    nd->timer_at = at;
    push_ev(s, at, EV_TICK, node, -1, nd->timer_gen, NULL);
}

/* fail_stopped: a step that returned rc failed because the allocation fault armed at this
 * node landed (the core then emits nothing: replica.h). The node fail-stops after the event,
 * as pbftd does (node.c, step). Any other failure is the core's fault. */
static bool fail_stopped(sim *s, int node, int rc)
{
    sim_node *nd = &s->nodes[node];
    if (rc != PBFT_STEP_FAILED || !nd->alloc_fired)
        return false;
    if (!nd->fail_fire)
        trace(s, "node %d (replica %u) fail-stops: %s", node, nd->id, pbft_replica_failure(nd->r));
    nd->fail_fire = true;
    return true;
}

static bool alloc_fault_hook(void *ctx)
{
    sim_node *nd = ctx;
    if (nd->alloc_left == 0)
        return false;
    if (--nd->alloc_left > 0)
        return false;
    nd->alloc_fired = true;
    return true;
}

/* check_recorded: every PRE-PREPARE, PREPARE and COMMIT an honest replica sends as its own
 * is in its durable LOG records, and every VIEW-CHANGE it sends is its durable META record's
 * [TOCS §4.1: a replica's promises survive a crash], at the moment the frame leaves. This
 * is what sticky failure guarantees when a persist cannot be made (replica.h). */
static void check_recorded(sim *s, int node, const uint8_t *p, size_t n)
{
    sim_node *nd = &s->nodes[node];
    pbft_env e;
    if (!nd->honest || pbft_frame_decode(p, n, &e) != PBFT_OK || e.sender != nd->id)
        return;
    static const char *const names[] = {"?", "PRE-PREPARE", "PREPARE", "COMMIT"};
    if (e.type == PBFT_MSG_PREPREPARE || e.type == PBFT_MSG_PREPARE || e.type == PBFT_MSG_COMMIT) {
        pbft_vote v;
        if (pbft_vote_decode(e.body, &v) != PBFT_OK)
            return;
        uint8_t key[PBFT_REC_KEY_BYTES];
        key[0] = 3; /* REC_LOG (replica.c): kind | seq | view | type | sender */
        put_be64(key + 1, v.seq);
        put_be64(key + 9, v.view);
        key[17] = e.type;
        key[18] = (uint8_t)(nd->id >> 8);
        key[19] = (uint8_t)nd->id;
        bool found;
        (void)rec_find(nd, key, &found);
        if (!found)
            fail(s, SIM_V_INTEGRITY,
                 "node %d (replica %u) sent its %s for view %llu seq %llu without its record", node,
                 nd->id, names[e.type], (unsigned long long)v.view, (unsigned long long)v.seq);
    } else if (e.type == PBFT_MSG_VIEWCHANGE && e.body.n >= 8) {
        uint64_t v = get_be64(e.body.p);
        uint8_t key[PBFT_REC_KEY_BYTES] = {1}; /* REC_META: one record, all-zero key rest */
        bool found;
        size_t i = rec_find(nd, key, &found);
        if (!found || nd->recs[i].n < 8 || get_be64(nd->recs[i].v) < v)
            fail(s, SIM_V_INTEGRITY,
                 "node %d (replica %u) sent its VIEW-CHANGE for view %llu before recording it",
                 node, nd->id, (unsigned long long)v);
    }
}

/* step_node feeds one event to a running node and carries out the output. */
static void step_node(sim *s, int node, const pbft_event *ev)
{
    sim_node *nd = &s->nodes[node];
    assert(nd->r);
    pbft_output *out = NULL;
    int rc = pbft_replica_step(nd->r, ev, &out);
    if (rc != 0 || out == NULL) {
        if (!fail_stopped(s, node, rc))
            fail(s, SIM_V_CORE, "node %d: pbft_replica_step(kind %d) returned %d", node, ev->kind,
                 rc);
        return;
    }
    if (ev->kind == PBFT_EV_REQUEST) {
        s->tot.requests++;
        int st = out->request_status;
        if (st >= 0 && st < 8)
            s->tot.request_status[st]++;
    }
    process_output(s, node, out, 0);
    arm_timer(s, node);
    observe_view(s, node);
}

/* check_signed: an honest replica never signs two different PRE-PREPAREs, PREPAREs,
 * COMMITs or CHECKPOINTs for one (view, seq) [OSDI'99 §4.2], not even across a crash or a
 * power cut (what it signed before must be on disk before it is sent). The table keeps the
 * latest statement per slot; a collision overwrites, so a miss is possible, a false alarm
 * is not. */
static void check_signed(sim *s, int node, const uint8_t *p, size_t n)
{
    sim_node *nd = &s->nodes[node];
    pbft_env e;
    if (!nd->honest || pbft_frame_decode(p, n, &e) != PBFT_OK)
        return;
    struct signed_slot x = {.type = e.type};
    if (e.type == PBFT_MSG_PREPREPARE || e.type == PBFT_MSG_PREPARE || e.type == PBFT_MSG_COMMIT) {
        pbft_vote v;
        if (pbft_vote_decode(e.body, &v) != PBFT_OK)
            return;
        x.view = v.view;
        x.seq = v.seq;
        x.d = v.d;
    } else if (e.type == PBFT_MSG_CHECKPOINT) {
        pbft_ckpt c;
        if (pbft_ckpt_decode(e.body, &c) != PBFT_OK)
            return;
        x.seq = c.seq;
        x.d = c.d;
    } else {
        return;
    }
    if (nd->signed_tab == NULL)
        nd->signed_tab = xcalloc(SIM_SIGNED_SLOTS, sizeof *nd->signed_tab);
    uint64_t h = sim_mix64(x.seq * 0x9e3779b97f4a7c15ull ^ x.view ^ ((uint64_t)x.type << 56));
    struct signed_slot *slot = &nd->signed_tab[h % SIM_SIGNED_SLOTS];
    if (slot->type == x.type && slot->view == x.view && slot->seq == x.seq &&
        memcmp(slot->d.b, x.d.b, 32) != 0) {
        static const char *const names[] = {"?", "PRE-PREPARE", "PREPARE", "COMMIT", "CHECKPOINT"};
        fail(s, SIM_V_INTEGRITY,
             "node %d (replica %u) signed two different %s for view %llu seq %llu", node, nd->id,
             names[x.type], (unsigned long long)x.view, (unsigned long long)x.seq);
        return;
    }
    *slot = x;
}

/* power_cut_step: the cut lands in this step. pbftd builds the step's batch (records and
 * executed blocks), fsyncs it, then sends (node/node.c, flush); the power fails before the
 * fsync, so the batch is lost and nothing was sent. With unsafe_send_before_sync the
 * messages escaped first. Either way the node goes down after the event (step_once). */
static void power_cut_step(sim *s, int node, const pbft_output *out)
{
    sim_node *nd = &s->nodes[node];
    nd->cut_armed = false;
    nd->cut_fire = true;
    trace(s, "power cut at node %d (replica %u): %zu records, %zu commits and %zu sends lost%s",
          node, nd->id, out->n_persist, out->n_commits, out->n_sends,
          s->o.unsafe_send_before_sync ? " (sends escaped: unsafe driver)" : "");
    if (!s->o.unsafe_send_before_sync)
        return;
    for (size_t i = 0; i < out->n_sends; i++) {
        const pbft_send *sd = &out->sends[i];
        if (sd->to != PBFT_TO_ALL && sd->to >= s->o.n)
            continue;
        check_signed(s, node, sd->frame.p, sd->frame.n);
        sim_frame *f = frame_new(sd->frame.p, sd->frame.n);
        s->tot.frames_sent++;
        dispatch(s, node, sd->to, f, sd->delay_ms);
        frame_release(f);
    }
}

static bool cut_lands(const sim_node *nd, const pbft_output *out)
{
    if (!nd->cut_armed)
        return false;
    if (nd->cut_type == 0)
        return true;
    for (size_t i = 0; i < out->n_sends; i++)
        if (out->sends[i].frame.n > 1 && out->sends[i].frame.p[1] == nd->cut_type)
            return true;
    return false;
}

static void process_output(sim *s, int node, pbft_output *out, int depth)
{
    sim_node *nd = &s->nodes[node];
    nd->want_deadline = out->deadline_ms;
    if (cut_lands(nd, out)) {
        power_cut_step(s, node, out);
        return;
    }

    /* 1. persist (durable before anything is sent, as pbftd's synced batch) */
    for (size_t i = 0; i < out->n_persist && !s->o.unsafe_lose_records; i++)
        apply_persist(s, nd, &out->persist[i]);

    /* 2. sends */
    for (size_t i = 0; i < out->n_sends; i++) {
        const pbft_send *sd = &out->sends[i];
        check_signed(s, node, sd->frame.p, sd->frame.n);
        check_recorded(s, node, sd->frame.p, sd->frame.n);
        if (sd->to != PBFT_TO_ALL && sd->to >= s->o.n) {
            fail(s, SIM_V_CORE, "node %d sent to replica %u of %u", node, sd->to, s->o.n);
            continue;
        }
        if (s->o.verbose) {
            char desc[128];
            frame_desc(sd->frame.p, sd->frame.n, desc, sizeof desc);
            if (sd->to == PBFT_TO_ALL)
                trace(s, "send %d->* %s%s", node, desc, sd->delay_ms ? " (delayed)" : "");
            else
                trace(s, "send %d->%u %s%s", node, sd->to, desc, sd->delay_ms ? " (delayed)" : "");
        }
        if (sd->frame.n >= 2 &&
            (sd->frame.p[1] == PBFT_MSG_PREPARE || sd->frame.p[1] == PBFT_MSG_COMMIT)) {
            nd->votes_sent++;
            nd->last_vote_ms = s->now;
        }
        sim_frame *f = frame_new(sd->frame.p, sd->frame.n);
        s->tot.frames_sent++;
        dispatch(s, node, sd->to, f, sd->delay_ms);
        frame_release(f);
    }

    /* 3. commits: store all, in order; they are reported as executed below, after the
     * serves, because the next call on the replica invalidates `out`. */
    uint64_t seqs_small[16];
    uint64_t *seqs = seqs_small;
    size_t nseq = 0;
    if (out->n_commits > 16)
        seqs = xmalloc(out->n_commits * sizeof *seqs);
    for (size_t i = 0; i < out->n_commits; i++) {
        if (store_commit(s, node, &out->commits[i]))
            seqs[nseq++] = out->commits[i].seq;
    }

    /* 4. serves */
    for (size_t i = 0; i < out->n_serves; i++)
        serve(s, node, &out->serves[i]);

    /* 3 (cont.) execute and report each committed block (out is dead from here on). */
    if (nseq > 0 && depth >= SIM_MAX_EXEC_DEPTH) {
        fail(s, SIM_V_CORE, "node %d: more than %d nested executions", node, SIM_MAX_EXEC_DEPTH);
        nseq = 0;
    }
    for (size_t i = 0; i < nseq && s->state != SIM_VIOLATION; i++) {
        pbft_event ev = {0};
        ev.kind = PBFT_EV_EXECUTED;
        ev.now_ms = s->now;
        ev.u.exec.seq = seqs[i];
        app_hash_of(&nd->chain[seqs[i] - 1].chain, ev.u.exec.app_hash);
        pbft_output *o2 = NULL;
        int rc = pbft_replica_step(nd->r, &ev, &o2);
        if (rc != 0 || o2 == NULL) {
            if (!fail_stopped(s, node, rc))
                fail(s, SIM_V_CORE, "node %d: pbft_replica_step(EXECUTED %llu) returned %d", node,
                     (unsigned long long)seqs[i], rc);
            break;
        }
        process_output(s, node, o2, depth + 1);
    }
    if (seqs != seqs_small)
        free(seqs);
    /* 5. deadline: the caller arms the timer from the last output's deadline. */
}

/* ---------------------------------------------------------------------------------------
 * Lifecycle of replicas: create, crash, restart.
 * -------------------------------------------------------------------------------------*/
/* core_trace: a verbose run prints the core's refusals and view-change milestones. */
static void core_trace(void *ctx, int kind, uint64_t view, uint64_t seq, int arg, const char *text)
{
    (void)view;
    (void)seq;
    (void)arg;
    sim_node *nd = ctx;
    if (kind == PBFT_TRACE_REJECT || kind == PBFT_TRACE_NEW_VIEW_SENT ||
        kind == PBFT_TRACE_NEW_VIEW_ACCEPTED)
        trace(nd->sim, "core %u: %s", nd->id, text);
}

static int node_create(sim *s, int node, char *err, size_t errlen)
{
    sim_node *nd = &s->nodes[node];
    assert(nd->r == NULL);
    if (pbft_replica_new(&nd->cfg, &nd->r, err, errlen) != 0) {
        nd->r = NULL;
        return -1;
    }
    if (nd->byz)
        pbft_replica_set_byz(nd->r, nd->byz);
    pbft_replica_set_alloc_fault(nd->r, alloc_fault_hook, nd);
    pbft_replica_unsafe_skip_newview_check(nd->r, s->o.unsafe_skip_newview_check);
    if (s->o.verbose)
        pbft_replica_set_trace(nd->r, core_trace, nd);
    nd->alloc_left = 0;
    nd->alloc_fired = false;
    nd->timer_armed = false;
    nd->timer_gen++;
    nd->want_deadline = UINT64_MAX;
    return 0;
}

static void stats_add(pbft_stats *acc, const pbft_stats *st)
{
    for (int i = 0; i < PBFT_DROP__COUNT; i++)
        acc->drops[i] += st->drops[i];
    for (int i = 0; i < PBFT_VC__COUNT; i++)
        acc->view_changes[i] += st->view_changes[i];
    for (int i = 0; i < PBFT_COMPLAINT__COUNT; i++)
        acc->complaints[i] += st->complaints[i];
    acc->blocks_committed += st->blocks_committed;
    acc->txs_committed += st->txs_committed;
    acc->state_transfers += st->state_transfers;
    acc->sig_verifies += st->sig_verifies;
    acc->prepares_sent += st->prepares_sent;
    acc->commits_sent += st->commits_sent;
}

void sim_crash(sim *s, int node)
{
    assert(node >= 0 && node < s->nnodes);
    sim_node *nd = &s->nodes[node];
    if (!nd->r)
        return;
    stats_add(&nd->acc, pbft_replica_stats(nd->r));
    pbft_replica_free(nd->r);
    nd->r = NULL;
    nd->inc++; /* in-flight deliveries to the old incarnation are lost */
    nd->timer_gen++;
    nd->timer_armed = false;
    nd->cut_armed = false;
    nd->alloc_left = 0;
    nd->alloc_fired = false;
    s->tot.crashes++;
    trace(s, "crash node %d (replica %u) height=%llu", node, nd->id,
          (unsigned long long)nd->height);
}

int sim_restart(sim *s, int node)
{
    assert(node >= 0 && node < s->nnodes);
    sim_node *nd = &s->nodes[node];
    if (nd->r) {
        nd->cut_armed = false; /* a power cut that never landed: its window is over */
        nd->alloc_left = 0;    /* so is an allocation fault */
        return 0;
    }
    char err[256];
    if (node_create(s, node, err, sizeof err) != 0) {
        fail(s, SIM_V_CORE, "node %d: pbft_replica_new on restart: %s", node, err);
        return -1;
    }
    pbft_digest ch;
    uint8_t app[32] = {0};
    if (nd->height == 0) {
        memcpy(ch.b, s->genesis, 32);
    } else {
        ch = nd->chain[nd->height - 1].chain;
        app_hash_of(&ch, app);
    }
    if (pbft_replica_restore_executed(nd->r, nd->height, &ch, app) != 0) {
        fail(s, SIM_V_CORE, "node %d: pbft_replica_restore_executed(%llu) failed", node,
             (unsigned long long)nd->height);
        return -1;
    }
    for (size_t i = 0; i < nd->nrecs; i++) {
        if (pbft_replica_restore_record(nd->r, nd->recs[i].key, nd->recs[i].v, nd->recs[i].n) !=
            0) {
            fail(s, SIM_V_CORE, "node %d: restore_record rejected its own record #%zu (kind %u)",
                 node, i, nd->recs[i].key[0]);
            return -1;
        }
    }
    s->tot.restarts++;
    trace(s, "restart node %d (replica %u) height=%llu records=%zu", node, nd->id,
          (unsigned long long)nd->height, nd->nrecs);
    pbft_output *out = NULL;
    if (pbft_replica_start(nd->r, s->now, &out) != 0 || out == NULL) {
        fail(s, SIM_V_CORE, "node %d: pbft_replica_start after restart failed", node);
        return -1;
    }
    process_output(s, node, out, 0);
    arm_timer(s, node);
    nd->last_view = UINT64_MAX;
    observe_view(s, node);
    if (nd->honest && nd->r && pbft_replica_executed(nd->r) < nd->height)
        fail(s, SIM_V_INTEGRITY, "node %d restarted at executed height %llu below durable %llu",
             node, (unsigned long long)pbft_replica_executed(nd->r),
             (unsigned long long)nd->height);
    return 0;
}

/* ---------------------------------------------------------------------------------------
 * Clients.
 * -------------------------------------------------------------------------------------*/
static bool node_in_group(const sim *s, int node, uint8_t group)
{
    return group == 0 || !s->twin_part || s->twin_group[node] == group;
}

/* pick_target: usually the primary as last known from a running honest node in the
 * client's group, otherwise a random node of the group. */
static int pick_target(sim *s, uint8_t group)
{
    int cand[SIM_MAX_NODES];
    int nc = 0;
    for (int i = 0; i < s->nnodes; i++)
        if (node_in_group(s, i, group))
            cand[nc++] = i;
    if (nc == 0)
        return -1;
    if (s->o.submit_to_backups) {
        /* Any replica but the primary as an honest replica sees it. */
        uint16_t prim = UINT16_MAX;
        for (int i = 0; i < s->nnodes && prim == UINT16_MAX; i++)
            if (s->nodes[i].r && s->nodes[i].honest)
                prim = pbft_replica_primary(s->nodes[i].r);
        int k = 0;
        for (int j = 0; j < nc; j++)
            if (s->nodes[cand[j]].id != prim)
                cand[k++] = cand[j];
        if (k > 0)
            nc = k;
        return cand[sim_rng_below(&s->rng, (uint64_t)nc)];
    }
    if (sim_rng_below(&s->rng, 4) != 0) {
        int hon[SIM_MAX_NODES];
        int nh = 0;
        for (int k = 0; k < nc; k++)
            if (s->nodes[cand[k]].r && s->nodes[cand[k]].honest)
                hon[nh++] = cand[k];
        if (nh > 0) {
            int who = hon[sim_rng_below(&s->rng, (uint64_t)nh)];
            uint16_t prim = pbft_replica_primary(s->nodes[who].r);
            int match[SIM_MAX_NODES];
            int nm = 0;
            for (int k = 0; k < nc; k++)
                if (s->nodes[cand[k]].id == prim)
                    match[nm++] = cand[k];
            if (nm > 0)
                return match[sim_rng_below(&s->rng, (uint64_t)nm)];
        }
    }
    return cand[sim_rng_below(&s->rng, (uint64_t)nc)];
}

static void client_send(sim *s, int node, uint32_t tx)
{
    if (!s->nodes[node].r || sim_rng_ppm(&s->rng, s->drop_ppm)) {
        s->tot.drops_net++;
        return;
    }
    push_ev(s, s->now + net_delay(s), EV_CLIENT_DELIVER, node, -1, tx, NULL);
}

static void client_submit_one(sim *s, uint32_t c)
{
    sim_client *cl = &s->clients[c];
    uint32_t peer =
        s->o.n_clients > 1
            ? (c + 1 + (uint32_t)sim_rng_below(&s->rng, s->o.n_clients - 1)) % s->o.n_clients
            : c;
    uint8_t buf[SIM_TX_CAP];
    size_t len = 0;
    uint64_t amount = sim_rng_range(&s->rng, 1, 1000);
    int rc = pbft_tx_encode_transfer(s->chain_id, cl->sk, cl->nonce, s->clients[peer].pk, amount,
                                     buf, sizeof buf, &len);
    if (rc != PBFT_OK) {
        fail(s, SIM_V_CORE, "client %u: pbft_tx_encode_transfer failed (%s)", c, pbft_strerror(rc));
        return;
    }
    cl->nonce++;
    cl->sent++;
    uint32_t idx = tx_add(s, buf, len, c);
    int target = pick_target(s, cl->group);
    if (s->o.verbose) {
        char hx[17];
        hex8(&s->txs[idx].h, hx);
        trace(s, "client %u submits tx#%u %.8s to node %d", c, idx, hx, target);
    }
    if (target >= 0)
        client_send(s, target, idx);
    push_ev(s, s->now + s->o.client_retry_ms, EV_CLIENT_RETRY, -1, -1, idx, NULL);
}

static void client_submit(sim *s, uint32_t c)
{
    sim_client *cl = &s->clients[c];
    if (cl->sent >= cl->quota || s->now > s->o.submit_end_ms)
        return;
    uint64_t burst =
        s->o.submit_burst_max > 1 ? sim_rng_range(&s->rng, 1, s->o.submit_burst_max) : 1;
    for (uint64_t k = 0; k < burst && cl->sent < cl->quota && s->state != SIM_VIOLATION; k++)
        client_submit_one(s, c);
    if (cl->sent < cl->quota) {
        uint64_t gap = sim_rng_range(&s->rng, s->o.submit_gap_min_ms, s->o.submit_gap_max_ms);
        if (s->now + gap <= s->o.submit_end_ms)
            push_ev(s, s->now + gap, EV_CLIENT_SUBMIT, -1, -1, c, NULL);
        else
            cl->quota = cl->sent; /* out of time: this client is done */
    }
}

static void client_retry(sim *s, uint32_t tx)
{
    sim_tx *t = &s->txs[tx];
    if (t->committed_any)
        return;
    uint8_t group = t->client < s->o.n_clients ? s->clients[t->client].group : 0;
    trace(s, "client %u resubmits tx#%u to all replicas", t->client, tx);
    for (int i = 0; i < s->nnodes; i++)
        if (node_in_group(s, i, group))
            client_send(s, i, tx);
    push_ev(s, s->now + s->o.client_retry_ms, EV_CLIENT_RETRY, -1, -1, tx, NULL);
}

static bool clients_done(const sim *s)
{
    for (uint32_t c = 0; c < s->o.n_clients; c++)
        if (s->clients[c].sent < s->clients[c].quota)
            return false;
    return !s->feeding || s->feed_next >= s->presigned;
}

static void bench_feed(sim *s)
{
    if (!s->feeding)
        return;
    sim_node *nd = &s->nodes[s->feed_node];
    while (s->feed_next < s->presigned && s->feed_next - nd->ntxc < s->feed_inflight) {
        uint32_t idx = s->feed_next++;
        push_ev(s, s->now + s->o.delay_min_ms, EV_CLIENT_DELIVER, s->feed_node, -1, idx, NULL);
    }
}

/* ---------------------------------------------------------------------------------------
 * Options, construction.
 * -------------------------------------------------------------------------------------*/
void sim_options_defaults(sim_options *o, uint16_t n, uint64_t seed)
{
    memset(o, 0, sizeof *o);
    o->seed = seed;
    o->n = n;
    pbft_config_defaults(&o->core);
    o->core.checkpoint_interval = 4;
    o->core.window = 16;
    o->core.max_inflight = 8;
    o->core.max_block_txs = 4;
    o->core.block_interval_ms = 5;
    o->core.view_timeout_ms = 800;
    o->core.view_timeout_max_ms = 6400;
    o->core.monitor_ms = 400; /* half the view timeout, as pbftd derives it */
    o->core.resend_ms = 200;
    o->core.state_retry_ms = 500;
    o->core.max_state_blocks = 8;
    /* Runs submit at most a few thousand transactions. pbftd's default (20,000) sizes each
     * replica's transaction table at 14 MiB, which a view change scans: page faults made
     * that half the simulator's time. */
    o->core.max_pending_txs = 4096;
    o->drop_ppm = 0;
    o->dup_ppm = 0;
    o->delay_min_ms = 1;
    o->delay_max_ms = 10;
    o->preverify_cache = true;
    o->n_clients = 2;
    o->txs_total = 20;
    o->submit_start_ms = 0;
    o->submit_end_ms = 3000;
    o->submit_gap_min_ms = 10;
    o->submit_gap_max_ms = 200;
    o->submit_burst_max = 1;
    o->client_retry_ms = 2000;
    o->heal_ms = 0;
    o->liveness_bound_ms = 60000;
    o->max_events = 50000000;
}

static void derive_key(uint64_t seed, const char *what, uint32_t index, uint8_t pk[32],
                       uint8_t sk[64])
{
    uint8_t buf[64];
    size_t wl = strlen(what);
    assert(wl + 12 <= sizeof buf);
    memcpy(buf, what, wl);
    put_be64(buf + wl, seed);
    buf[wl + 8] = (uint8_t)(index >> 24);
    buf[wl + 9] = (uint8_t)(index >> 16);
    buf[wl + 10] = (uint8_t)(index >> 8);
    buf[wl + 11] = (uint8_t)index;
    uint8_t ks[32];
    keys_sha256(buf, wl + 12, ks);
    int rc = keys_from_seed(ks, pk, sk);
    assert(rc == KEYS_OK);
    (void)rc;
}

int sim_new(const sim_options *o, sim **out, char *err, size_t errlen)
{
    *out = NULL;
    if (keys_init() != KEYS_OK) {
        snprintf(err, errlen, "keys_init failed");
        return -1;
    }
    if (o->n == 0 || o->n > PBFT_MAX_N) {
        snprintf(err, errlen, "n = %u out of range", o->n);
        return -1;
    }
    if (o->n_clients > SIM_MAX_CLIENTS) {
        snprintf(err, errlen, "n_clients = %u above %d", o->n_clients, SIM_MAX_CLIENTS);
        return -1;
    }
    if (o->delay_min_ms > o->delay_max_ms || o->submit_gap_min_ms > o->submit_gap_max_ms) {
        snprintf(err, errlen, "a min above its max (delay or submit gap)");
        return -1;
    }
    if (o->txs_total > 0 && o->n_clients == 0) {
        snprintf(err, errlen, "txs_total > 0 needs clients");
        return -1;
    }
    sim *s = calloc(1, sizeof *s);
    if (!s)
        abort();
    s->o = *o;
    sim_rng_seed(&s->rng, o->seed);
    s->drop_ppm = o->drop_ppm;
    s->dup_ppm = o->dup_ppm;
    s->state = SIM_RUNNING;
    s->tot.trace_hash = FNV_INIT;
    keys_sha256((const uint8_t *)"pbft-sim", 8, s->chain_id);
    keys_sha256((const uint8_t *)"genesis", 7, s->genesis);

    pbft_config base = o->core;
    base.n = o->n;
    memcpy(base.chain, s->chain_id, 32);
    memcpy(base.genesis, s->genesis, 32);
    memset(base.pubkeys, 0, sizeof base.pubkeys);
    uint8_t sks[PBFT_MAX_N][64];
    for (uint16_t i = 0; i < o->n; i++)
        derive_key(o->seed, "pbft-sim-replica", i, base.pubkeys[i], sks[i]);
    s->nnodes = o->n;
    for (uint16_t i = 0; i < o->n; i++) {
        sim_node *nd = &s->nodes[i];
        nd->id = i;
        nd->sim = s;
        nd->honest = true;
        nd->cfg = base;
        nd->cfg.id = i;
        memcpy(nd->cfg.sk, sks[i], 64);
        if (pbft_config_validate(&nd->cfg, err, errlen) != 0) {
            sim_free(s);
            return -1;
        }
        if (node_create(s, i, err, errlen) != 0) {
            sim_free(s);
            return -1;
        }
    }
    for (uint32_t c = 0; c < o->n_clients; c++) {
        derive_key(o->seed, "pbft-sim-client", c, s->clients[c].pk, s->clients[c].sk);
        s->clients[c].quota = o->txs_total / o->n_clients + (c < o->txs_total % o->n_clients);
    }
    recompute_links(s);
    *out = s;
    return 0;
}

void sim_free(sim *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->nheap; i++)
        frame_release(s->heap[i].frame);
    free(s->heap);
    for (int i = 0; i < s->nnodes; i++) {
        sim_node *nd = &s->nodes[i];
        pbft_replica_free(nd->r);
        pbft_byz_free(nd->byz);
        for (size_t k = 0; k < nd->nrecs; k++)
            free(nd->recs[k].v);
        free(nd->recs);
        for (uint64_t h = 0; h < nd->height; h++) {
            free(nd->chain[h].block);
            free(nd->chain[h].cert);
        }
        free(nd->chain);
        free(nd->txc);
        free(nd->signed_tab);
    }
    for (uint32_t i = 0; i < s->ntx; i++)
        free(s->txs[i].p);
    free(s->txs);
    free(s->txset);
    for (uint64_t h = 0; h < s->ncanon; h++) {
        free(s->canon[h].block);
        free(s->canon[h].txids);
    }
    free(s->canon);
    for (int i = 0; i < s->nparts; i++)
        free(s->parts[i].cut);
    free(s);
}

int sim_add_twin(sim *s, uint16_t id)
{
    assert(!s->started);
    if (id >= s->o.n || s->nnodes >= SIM_MAX_NODES)
        return -1;
    int k = s->nnodes++;
    sim_node *nd = &s->nodes[k];
    memset(nd, 0, sizeof *nd);
    nd->id = id;
    nd->sim = s;
    nd->twin = 1;
    nd->honest = false;
    nd->cfg = s->nodes[id].cfg;
    s->nodes[id].twin = 1;
    s->nodes[id].honest = false;
    if (s->captx) {
        nd->txc = xmalloc(s->captx);
        memset(nd->txc, 0, s->captx);
    }
    char err[256];
    if (node_create(s, k, err, sizeof err) != 0) {
        s->nnodes--;
        return -1;
    }
    recompute_links(s);
    return k;
}

int sim_set_byz(sim *s, int node, int mode, uint32_t delay_ms, uint32_t percent)
{
    assert(!s->started);
    if (node < 0 || node >= s->nnodes)
        return -1;
    sim_node *nd = &s->nodes[node];
    pbft_byz_config bc = {.mode = mode,
                          .seed = sim_mix64(s->o.seed ^ ((uint64_t)0xb12a << 32) ^ (uint64_t)node),
                          .delay_ms = delay_ms,
                          .percent = percent,
                          .factor = 2, /* FLOOD: enough to exercise it, cheap to simulate */
                          .crash_after = 3};
    pbft_byz *b = NULL;
    if (pbft_byz_new(&bc, &b) != 0)
        return -1;
    if (nd->r)
        pbft_replica_set_byz(nd->r, b);
    pbft_byz_free(nd->byz);
    nd->byz = b;
    nd->byz_node = true;
    nd->honest = false;
    return 0;
}

void sim_set_twin_groups(sim *s, const uint8_t *group)
{
    if (!group) {
        s->twin_part = false;
        return;
    }
    s->twin_part = true;
    memcpy(s->twin_group, group, (size_t)s->nnodes);
}

void sim_set_client_group(sim *s, uint32_t client, uint8_t group)
{
    assert(client < s->o.n_clients);
    s->clients[client].group = group;
}

int sim_at_crash(sim *s, uint64_t at_ms, int node)
{
    if (node < 0 || node >= s->nnodes || at_ms < s->now)
        return -1;
    push_ev(s, at_ms, EV_CRASH, node, -1, 0, NULL);
    return 0;
}

void sim_power_cut(sim *s, int node, uint8_t msg_type)
{
    assert(node >= 0 && node < s->nnodes);
    sim_node *nd = &s->nodes[node];
    if (!nd->r)
        return;
    nd->cut_armed = true;
    nd->cut_type = msg_type;
}

int sim_at_power_cut(sim *s, uint64_t at_ms, int node, uint8_t msg_type)
{
    if (node < 0 || node >= s->nnodes || at_ms < s->now || msg_type > PBFT_MSG__MAX)
        return -1;
    push_ev(s, at_ms, EV_POWER_CUT, node, -1, msg_type, NULL);
    return 0;
}

void sim_alloc_fault(sim *s, int node, uint32_t k)
{
    assert(node >= 0 && node < s->nnodes && k > 0);
    sim_node *nd = &s->nodes[node];
    if (!nd->r)
        return;
    nd->alloc_left = k;
    nd->alloc_fired = false;
}

int sim_at_alloc_fault(sim *s, uint64_t at_ms, int node, uint32_t k)
{
    if (node < 0 || node >= s->nnodes || at_ms < s->now || k == 0)
        return -1;
    push_ev(s, at_ms, EV_ALLOC_FAULT, node, -1, k, NULL);
    return 0;
}

int sim_at_restart(sim *s, uint64_t at_ms, int node)
{
    if (node < 0 || node >= s->nnodes || at_ms < s->now)
        return -1;
    push_ev(s, at_ms, EV_RESTART, node, -1, 0, NULL);
    return 0;
}

int sim_add_partition(sim *s, uint64_t start_ms, uint64_t end_ms, const uint8_t *cut)
{
    if (s->nparts >= SIM_MAX_PARTITIONS || start_ms > end_ms || start_ms < s->now)
        return -1;
    int i = s->nparts++;
    size_t nn = (size_t)s->nnodes * (size_t)s->nnodes;
    s->parts[i].cut = xmemdup(cut, nn);
    s->parts[i].start = start_ms;
    s->parts[i].end = end_ms;
    s->parts[i].nn = s->nnodes;
    s->parts[i].active = false;
    push_ev(s, start_ms, EV_PART_ON, -1, -1, (uint64_t)i, NULL);
    push_ev(s, end_ms, EV_PART_OFF, -1, -1, (uint64_t)i, NULL);
    return 0;
}

void sim_set_link(sim *s, int from, int to, bool open)
{
    s->manual_cut[(size_t)from * SIM_MAX_NODES + (size_t)to] = !open;
    recompute_links(s);
}

void sim_heal(sim *s)
{
    if (!s->healed) {
        s->heal_at = s->now;
        push_ev(s, s->now + s->o.liveness_bound_ms, EV_LIVENESS, -1, -1, 0, NULL);
    }
    s->drop_ppm = 0;
    s->dup_ppm = 0;
    s->healed = true;
    memset(s->manual_cut, 0, sizeof s->manual_cut);
    for (int i = 0; i < s->nparts; i++)
        s->parts[i].active = false;
    recompute_links(s);
    trace(s, "heal: no loss, no duplicates, every link open");
}

void sim_stop(sim *s)
{
    if (s->state == SIM_RUNNING)
        s->state = SIM_STOPPED;
}

int sim_start(sim *s)
{
    assert(!s->started);
    s->started = true;
    for (int i = 0; i < s->nnodes; i++) {
        sim_node *nd = &s->nodes[i];
        if (!nd->txc) {
            nd->txc = xmalloc(s->captx ? s->captx : 1);
            memset(nd->txc, 0, s->captx ? s->captx : 1);
        }
        if (!nd->r)
            continue;
        pbft_output *out = NULL;
        if (pbft_replica_start(nd->r, s->now, &out) != 0 || out == NULL) {
            fail(s, SIM_V_CORE, "node %d: pbft_replica_start failed", i);
            return -1;
        }
        nd->last_view = UINT64_MAX;
        process_output(s, i, out, 0);
        arm_timer(s, i);
        observe_view(s, i);
    }
    for (uint32_t c = 0; c < s->o.n_clients; c++) {
        if (s->clients[c].quota == 0)
            continue;
        uint64_t first = s->o.submit_start_ms + sim_rng_range(&s->rng, 0, s->o.submit_gap_max_ms);
        if (first <= s->o.submit_end_ms)
            push_ev(s, first, EV_CLIENT_SUBMIT, -1, -1, c, NULL);
        else
            s->clients[c].quota = 0;
    }
    if (s->o.heal_ms != UINT64_MAX)
        push_ev(s, s->o.heal_ms, EV_HEAL, -1, -1, 0, NULL);
    bench_feed(s);
    return 0;
}

/* ---------------------------------------------------------------------------------------
 * The run loop and the per-event checks.
 * -------------------------------------------------------------------------------------*/
static void liveness_report(sim *s)
{
    for (int i = 0; i < s->nnodes; i++) {
        sim_node *nd = &s->nodes[i];
        if (!nd->honest || !nd->r || nd->ntxc == s->ntx)
            continue;
        uint32_t first = 0;
        while (first < s->ntx && nd->txc[first])
            first++;
        uint32_t nowhere = 0;
        for (uint32_t k = 0; k < s->ntx; k++)
            nowhere += !s->txs[k].committed_any;
        char others[256];
        size_t w = 0;
        others[0] = 0;
        for (int j = 0; j < s->nnodes && w < sizeof others; j++) {
            const sim_node *o = &s->nodes[j];
            if (!o->honest)
                continue;
            int r = o->r ? snprintf(others + w, sizeof others - w, "%s%d:h%llu/v%llu%s",
                                    w ? " " : "", j, (unsigned long long)o->height,
                                    (unsigned long long)pbft_replica_view(o->r),
                                    pbft_replica_in_view_change(o->r) ? "c" : "")
                         : snprintf(others + w, sizeof others - w, "%s%d:down", w ? " " : "", j);
            if (r > 0)
                w += (size_t)r;
        }
        fail(s, SIM_V_LIVENESS,
             "%u of %u transactions not committed at node %d %llu ms after the heal (%u "
             "committed nowhere; first missing tx#%u; node height %llu, view %llu%s, pending "
             "%zu; honest h/view: %s)",
             s->ntx - nd->ntxc, s->ntx, i, (unsigned long long)s->o.liveness_bound_ms, nowhere,
             first, (unsigned long long)nd->height, (unsigned long long)pbft_replica_view(nd->r),
             pbft_replica_in_view_change(nd->r) ? " changing" : "", pbft_replica_pending(nd->r),
             others);
        return;
    }
    if (!clients_done(s)) {
        fail(s, SIM_V_LIVENESS, "clients did not finish submitting before the bound");
        return;
    }
    fail(s, SIM_V_LIVENESS, "no honest node is running at the liveness bound");
}

static void check_after_event(sim *s)
{
    if (s->state != SIM_RUNNING && s->state != SIM_LIVE)
        return;
    /* integrity: the executed height never goes back, and never passes the durable one. */
    bool all_live = s->healed && clients_done(s);
    bool any_live_honest = false;
    for (int i = 0; i < s->nnodes; i++) {
        sim_node *nd = &s->nodes[i];
        if (!nd->honest || !nd->r)
            continue;
        any_live_honest = true;
        uint64_t e = pbft_replica_executed(nd->r);
        if (e < nd->exec_seen) {
            fail(s, SIM_V_INTEGRITY, "node %d: executed height went back from %llu to %llu", i,
                 (unsigned long long)nd->exec_seen, (unsigned long long)e);
            return;
        }
        if (e > nd->height) {
            fail(s, SIM_V_INTEGRITY, "node %d: executed height %llu above its durable %llu", i,
                 (unsigned long long)e, (unsigned long long)nd->height);
            return;
        }
        nd->exec_seen = e;
        if (nd->ntxc != s->ntx)
            all_live = false;
    }
    if (all_live && any_live_honest && s->state == SIM_RUNNING) {
        s->state = SIM_LIVE;
        s->tot.heal_to_live_ms = s->now - s->heal_at;
        trace(s, "live: all %u transactions committed at every honest running node", s->ntx);
    }
}

/* step_once processes the next event (state RUNNING, or LIVE when running on). */
static int step_once(sim *s)
{
    if (s->nheap == 0) {
        fail(s, SIM_V_LIVENESS, "the event queue ran dry");
        return s->state;
    }
    sim_ev ev = heap_pop(s);
    assert(ev.at >= s->now);
    if (ev.at == s->now) {
        if (++s->same_time > SIM_MAX_SAME_TIME) {
            fail(s, SIM_V_LIVENESS, "livelock: %d events without virtual time moving",
                 SIM_MAX_SAME_TIME);
            frame_release(ev.frame);
            return s->state;
        }
    } else {
        s->same_time = 0;
    }
    s->now = ev.at;
    s->tot.events++;
    if (s->tot.events > s->o.max_events) {
        fail(s, SIM_V_LIVENESS, "event budget of %llu exhausted",
             (unsigned long long)s->o.max_events);
        frame_release(ev.frame);
        return s->state;
    }
    uint64_t th = s->tot.trace_hash;
    th = fnv_u64(th, ev.at);
    th = fnv_u64(th, ((uint64_t)ev.kind << 32) | ((uint64_t)(uint16_t)ev.node << 16) |
                         (uint16_t)ev.from);
    s->tot.trace_hash = th;

    switch (ev.kind) {
    case EV_DELIVER: {
        sim_node *nd = &s->nodes[ev.node];
        if (!nd->r || nd->inc != ev.inc) {
            s->tot.drops_net++;
            break;
        }
        s->tot.deliveries++;
        if (s->o.verbose) {
            char desc[128];
            frame_desc(ev.frame->p, ev.frame->n, desc, sizeof desc);
            trace(s, "deliver %d->%d %s", ev.from, ev.node, desc);
        }
        if (request_used_up(s, nd, ev.frame)) {
            trace(s, "node %d drops a REQUEST of a transaction it executed (as pbftd does)",
                  ev.node);
            break;
        }
        pbft_event e = {0};
        e.kind = PBFT_EV_MESSAGE;
        e.now_ms = s->now;
        e.u.msg.p = ev.frame->p;
        e.u.msg.n = ev.frame->n;
        e.u.msg.preverified = s->o.preverify_cache && frame_preverified(s, nd, ev.frame);
        step_node(s, ev.node, &e);
        break;
    }
    case EV_TICK: {
        sim_node *nd = &s->nodes[ev.node];
        if (!nd->r || nd->inc != ev.inc || ev.arg != nd->timer_gen)
            break; /* stale */
        nd->timer_armed = false;
        pbft_event e = {0};
        e.kind = PBFT_EV_TICK;
        e.now_ms = s->now;
        step_node(s, ev.node, &e);
        break;
    }
    case EV_CLIENT_SUBMIT:
        client_submit(s, (uint32_t)ev.arg);
        break;
    case EV_CLIENT_DELIVER: {
        sim_node *nd = &s->nodes[ev.node];
        if (!nd->r || nd->inc != ev.inc) {
            s->tot.drops_net++;
            break;
        }
        const sim_tx *t = &s->txs[ev.arg];
        if (nd->txc[ev.arg]) {
            /* pbftd's node_submit refuses a transaction whose nonce its durable state has
             * used (-32004): the core forgets committed hashes across a restart. */
            s->tot.requests++;
            s->tot.request_status[PBFT_REQ_BAD_NONCE]++;
            break;
        }
        pbft_event e = {0};
        e.kind = PBFT_EV_REQUEST;
        e.now_ms = s->now;
        e.u.req.p = t->p;
        e.u.req.n = t->n;
        e.u.req.preverified = s->o.clients_preverified;
        step_node(s, ev.node, &e);
        break;
    }
    case EV_CLIENT_RETRY:
        client_retry(s, (uint32_t)ev.arg);
        break;
    case EV_CRASH:
        sim_crash(s, ev.node);
        break;
    case EV_POWER_CUT:
        sim_power_cut(s, ev.node, (uint8_t)ev.arg);
        break;
    case EV_ALLOC_FAULT:
        sim_alloc_fault(s, ev.node, (uint32_t)ev.arg);
        break;
    case EV_RESTART:
        sim_restart(s, ev.node);
        break;
    case EV_PART_ON:
        if (!s->healed) {
            s->parts[ev.arg].active = true;
            recompute_links(s);
            trace(s, "partition #%llu on", (unsigned long long)ev.arg);
        }
        break;
    case EV_PART_OFF:
        if (s->parts[ev.arg].active) {
            s->parts[ev.arg].active = false;
            recompute_links(s);
            trace(s, "partition #%llu off", (unsigned long long)ev.arg);
        }
        break;
    case EV_HEAL:
        sim_heal(s);
        break;
    case EV_LIVENESS:
        if (s->state == SIM_RUNNING) {
            check_after_event(s);
            if (s->state == SIM_RUNNING)
                liveness_report(s);
        }
        break;
    default:
        assert(0 && "unknown event kind");
    }
    frame_release(ev.frame);
    for (int i = 0; i < s->nnodes; i++)
        if (s->nodes[i].cut_fire) {
            s->nodes[i].cut_fire = false;
            s->tot.power_cuts++;
            sim_crash(s, i);
        }
    for (int i = 0; i < s->nnodes; i++)
        if (s->nodes[i].fail_fire) {
            s->nodes[i].fail_fire = false;
            s->tot.alloc_faults++;
            sim_crash(s, i);
        }
    check_after_event(s);
    bench_feed(s);
    if (s->o.hook && (s->state == SIM_RUNNING || s->state == SIM_LIVE))
        s->o.hook(s->o.ctx, s);
    return s->state;
}

int sim_step(sim *s)
{
    if (s->state != SIM_RUNNING)
        return s->state;
    return step_once(s);
}

int sim_run_until(sim *s, uint64_t t_ms)
{
    if (!s->started && sim_start(s) != 0)
        return s->state;
    while ((s->state == SIM_RUNNING || s->state == SIM_LIVE) && s->nheap > 0 &&
           s->heap[0].at <= t_ms)
        step_once(s);
    return s->state;
}

int sim_run(sim *s)
{
    if (!s->started && sim_start(s) != 0)
        return s->state;
    while (sim_step(s) == SIM_RUNNING) {
    }
    return s->state;
}

/* ---------------------------------------------------------------------------------------
 * Introspection.
 * -------------------------------------------------------------------------------------*/
uint64_t sim_now(const sim *s)
{
    return s->now;
}

int sim_node_count(const sim *s)
{
    return s->nnodes;
}

uint16_t sim_node_id(const sim *s, int node)
{
    return s->nodes[node].id;
}

bool sim_node_honest(const sim *s, int node)
{
    return s->nodes[node].honest;
}

bool sim_node_up(const sim *s, int node)
{
    return s->nodes[node].r != NULL;
}

const pbft_replica *sim_node_replica(const sim *s, int node)
{
    return s->nodes[node].r;
}

uint64_t sim_node_height(const sim *s, int node)
{
    return s->nodes[node].height;
}

bool sim_node_block(const sim *s, int node, uint64_t h, pbft_digest *d, uint64_t *view,
                    pbft_digest *chain)
{
    const sim_node *nd = &s->nodes[node];
    if (h == 0 || h > nd->height)
        return false;
    const sim_blk *b = &nd->chain[h - 1];
    if (d)
        *d = b->d;
    if (view)
        *view = b->view;
    if (chain)
        *chain = b->chain;
    return true;
}

uint32_t sim_node_block_txs(const sim *s, int node, uint64_t h)
{
    const sim_node *nd = &s->nodes[node];
    if (h == 0 || h > nd->height)
        return 0;
    pbft_block b;
    if (pbft_block_decode(nd->chain[h - 1].block, nd->chain[h - 1].block_n, &b) != PBFT_OK)
        return 0;
    return b.ntx;
}

uint64_t sim_node_votes(const sim *s, int node, uint64_t *last_ms)
{
    assert(node >= 0 && node < s->nnodes);
    if (last_ms != NULL)
        *last_ms = s->nodes[node].last_vote_ms;
    return s->nodes[node].votes_sent;
}

void sim_node_stats(const sim *s, int node, pbft_stats *st)
{
    const sim_node *nd = &s->nodes[node];
    *st = nd->acc;
    if (nd->r)
        stats_add(st, pbft_replica_stats(nd->r));
}

uint32_t sim_txs_submitted(const sim *s)
{
    return s->ntx;
}

int sim_state(const sim *s)
{
    return s->state;
}

const char *sim_violation(const sim *s)
{
    return s->state == SIM_VIOLATION ? s->reason : NULL;
}

int sim_violation_class(const sim *s)
{
    return s->state == SIM_VIOLATION ? s->vclass : SIM_V_NONE;
}

bool sim_tx_hash(const sim *s, uint32_t i, pbft_digest *h)
{
    if (i >= s->ntx)
        return false;
    *h = s->txs[i].h;
    return true;
}

void sim_get_totals(const sim *s, sim_totals *t)
{
    *t = s->tot;
    t->sim_ms = s->now;
    t->view_changes = 0;
    t->vc_complaints = 0;
    t->byz_actions = 0;
    t->sig_verifies = 0;
    for (int i = 0; i < s->nnodes; i++) {
        pbft_stats st;
        sim_node_stats(s, i, &st);
        t->sig_verifies += st.sig_verifies;
        if (s->nodes[i].honest) {
            for (int k = 0; k < PBFT_VC__COUNT; k++)
                t->view_changes += st.view_changes[k];
            t->vc_complaints += st.view_changes[PBFT_VC_COMPLAINTS];
        }
        if (s->nodes[i].byz)
            t->byz_actions += pbft_byz_actions(s->nodes[i].byz);
    }
    uint64_t ch = FNV_INIT;
    uint64_t hgt = 0;
    for (uint64_t h = 0; h < s->ncanon && s->canon[h].set; h++) {
        ch = fnv_add(fnv_u64(ch, h + 1), s->canon[h].d.b, 32);
        hgt = h + 1;
    }
    t->commit_hash = ch;
    t->height = hgt;
}

void sim_dump(const sim *s, FILE *f)
{
    fprintf(f, "state at t=%llu ms:\n", (unsigned long long)s->now);
    for (int i = 0; i < s->nnodes; i++) {
        const sim_node *nd = &s->nodes[i];
        fprintf(f, "  node %d replica %u%s%s: height %llu", i, nd->id,
                nd->byz_node ? " byzantine" : "", nd->twin ? " twin" : "",
                (unsigned long long)nd->height);
        if (!nd->r) {
            fprintf(f, " (crashed)\n");
            continue;
        }
        const pbft_stats *st = pbft_replica_stats(nd->r);
        fprintf(f,
                " view %llu%s primary %u executed %llu stable %llu next_seq %llu pending %zu "
                "timeout %u state_transfers %llu\n    drops:",
                (unsigned long long)pbft_replica_view(nd->r),
                pbft_replica_in_view_change(nd->r) ? " (changing)" : "",
                pbft_replica_primary(nd->r), (unsigned long long)pbft_replica_executed(nd->r),
                (unsigned long long)pbft_replica_stable(nd->r),
                (unsigned long long)pbft_replica_next_seq(nd->r), pbft_replica_pending(nd->r),
                pbft_replica_view_timeout(nd->r), (unsigned long long)st->state_transfers);
        for (int k = 0; k < PBFT_DROP__COUNT; k++)
            if (st->drops[k])
                fprintf(f, " %s=%llu", pbft_drop_name(k), (unsigned long long)st->drops[k]);
        fprintf(f, "\n    view changes:");
        for (int k = 0; k < PBFT_VC__COUNT; k++)
            fprintf(f, " %s=%llu", pbft_vc_reason_name(k), (unsigned long long)st->view_changes[k]);
        fprintf(f, "\n");
    }
}

/* ---------------------------------------------------------------------------------------
 * Benchmark support.
 * -------------------------------------------------------------------------------------*/
int sim_bench_presign(sim *s, uint32_t count)
{
    if (s->o.n_clients == 0)
        return -1;
    for (uint32_t i = 0; i < count; i++) {
        uint32_t c = i % s->o.n_clients;
        sim_client *cl = &s->clients[c];
        const sim_client *peer = &s->clients[(c + 1) % s->o.n_clients];
        uint8_t buf[SIM_TX_CAP];
        size_t len = 0;
        if (pbft_tx_encode_transfer(s->chain_id, cl->sk, cl->nonce, peer->pk, 1 + i % 1000, buf,
                                    sizeof buf, &len) != PBFT_OK)
            return -1;
        cl->nonce++;
        tx_add(s, buf, len, c);
    }
    s->presigned = s->ntx;
    return 0;
}

void sim_bench_feed(sim *s, int node, uint32_t inflight)
{
    s->feeding = true;
    s->feed_node = node;
    s->feed_inflight = inflight;
    s->feed_next = 0;
}
