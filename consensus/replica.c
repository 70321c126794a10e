/*
 * replica.c - the PBFT replica state machine (see replica.h for the contract).
 *
 * References, cited throughout as [OSDI §x] and [TOCS §x]:
 *   M. Castro, B. Liskov. Practical Byzantine Fault Tolerance. OSDI 1999.
 *   M. Castro, B. Liskov. Practical Byzantine Fault Tolerance and Proactive Recovery.
 *   ACM TOCS 20(4), 2002.
 * We implement the signature variant ([OSDI §4], [TOCS §2-4]) with these choices, all
 * documented in docs/architecture.md:
 *   - quorum q = n - f (2f+1 when n = 3f+1), weak quorum f+1;
 *   - the block is an attachment of the PRE-PREPARE authenticated by its digest [OSDI §4.2];
 *   - a replica holding 2f+1 valid COMMITs for (v, n, d) treats n as committed even if it
 *     missed the pre-prepare, and fetches the block by digest (the certificate is proof);
 *   - blocks are chained at commit time; checkpoints certify H(chain hash || app hash);
 *   - replicas advertise their executed height with signed CHECKPOINT claims when idle, so a
 *     replica that fell behind between checkpoints learns it from f+1 of them.
 *
 * Peer input never reaches an assert: every check on it counts a drop reason and returns.
 * Asserts below state our own invariants only.
 */
#include "consensus/replica.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "consensus/byz_internal.h"

#define NONE UINT64_MAX

/* Record kinds (first key byte). Keys: kind | seq u64 | view u64 | type u8 | sender u16. */
enum {
    REC_META = 1,   /* value: view u64, in_vc u8, vc_len u32, own VIEW-CHANGE */
    REC_STABLE = 2, /* value: seq u64, digest, proof list (u16 count + elems) */
    REC_LOG = 3,    /* value: a frame (PRE-PREPARE with block, own PREPARE / COMMIT) or PCERT */
};
#define REC_TYPE_PCERT 0x10 /* LOG record holding a prepared certificate */

struct vote {
    bool set;
    uint64_t view;
    pbft_digest d;
    uint8_t *frame; /* the signed message (no attachment) */
    uint32_t n;
};

#define SLOT_KEEP 4

struct slot {
    uint64_t seq; /* 0: unused */
    /* The accepted pre-prepare, in view pp_view [OSDI §4.2]. */
    bool has_pp;
    uint64_t pp_view;
    pbft_digest d;
    uint8_t *pp; /* signed PRE-PREPARE, no attachment */
    uint32_t pp_n;
    uint8_t *block; /* NULL while the body is missing (NEW-VIEW entries) */
    uint32_t block_n;
    struct vote *prep; /* latest PREPARE per sender */
    struct vote *com;  /* latest COMMIT per sender */
    bool prepared;
    bool committed;
    uint64_t cview; /* committed: the view and digest of the certificate */
    pbft_digest cd;
    /* The certificate itself, frozen when the slot commits: the per-sender votes above
     * may be replaced by a later view's before the block executes. */
    uint8_t *cert;
    uint32_t cert_n;
    uint16_t cert_count;
    /* The prepared certificate with the highest view, kept across views for VIEW-CHANGE
     * [OSDI §4.4: the set P]. Encoded as in VIEW-CHANGE: elem(pre-prepare), list(prepares). */
    bool has_pc;
    uint64_t pc_view;
    pbft_digest pc_d;
    uint8_t *pc;
    uint32_t pc_n;
    /* Bodies of earlier pre-prepares we accepted (and so voted for) in this slot, kept
     * until the slot is collected, as PBFT keeps every request it logged [OSDI §4.3]: a
     * later NEW-VIEW may choose one of them again from any prepared certificate, and then
     * a correct replica that voted for it must still have the body (found by the
     * simulator: 2f+1 replicas committed a block whose only holder was Byzantine). At most
     * SLOT_KEEP, the oldest view evicted first. */
    struct kept {
        pbft_digest d;
        uint64_t view;
        uint8_t *p; /* NULL: free entry */
        uint32_t n;
    } kept[SLOT_KEEP];
    uint64_t sent_ms; /* last (re)transmission of our part */
    uint64_t pp_ms;   /* when the pre-prepare was accepted (the request timer's latency) */
    uint32_t resends; /* how many times; the interval doubles with each (capped) */
    uint64_t help_ms; /* last time we re-sent our COMMIT to a lagging peer */
    uint64_t want_ms; /* last time we asked for the missing body */
};

struct ckslot {
    uint64_t seq; /* multiple of K, 0: unused */
    struct vote *v;
};

struct vcent {
    bool set;
    uint64_t view;
    uint8_t *msg; /* signed VIEW-CHANGE, already fully verified */
    uint32_t n;
};

/* Transaction pool entry: held (waiting to commit), a committed hash kept for dedup, or
 * in flight: the hash of a transaction this replica does not hold, seen in an accepted
 * block that has not executed yet. An in-flight entry keeps a primary from proposing that
 * transaction again when a client re-sends it (after a view change, or a restart that
 * restored the block from the records); it becomes held if the bytes arrive, done when the
 * block executes, and is dropped when a NEW-VIEW replaces the blocks in flight (issue 12,
 * "one transaction, one block"; docs/protocol.md section 9). */
enum { TX_EMPTY = 0, TX_HELD = 1, TX_DONE = 2, TX_INFLIGHT = 3 };
struct txent {
    uint8_t state;
    bool queued;  /* primary: in the proposal FIFO */
    bool inblock; /* seen in an accepted pre-prepare of the current view */
    pbft_digest h;
    uint8_t *tx;
    uint32_t n;
    uint64_t arrival_ms;
    /* Admission order: a burst arrives within one ms, and one client's transfers must keep
     * their order (nonces) when a new primary re-proposes held transactions. */
    uint64_t arrival_no;
    uint64_t fwd_ms;
    /* Primary monitoring: when this replica first sent it to the primary of view
     * mon_fwd_view - 1 (0: not in any view yet). Waiting is counted from there. */
    uint64_t mon_fwd_view;
    uint64_t mon_fwd_ms;
};

struct out_arrays {
    pbft_persist *persist;
    size_t n_persist, cap_persist;
    pbft_send *sends;
    size_t n_sends, cap_sends;
    pbft_commit *commits;
    size_t n_commits, cap_commits;
    pbft_serve *serves;
    size_t n_serves, cap_serves;
};

struct pbft_replica {
    pbft_config c;
    uint16_t f, q; /* q = n - f */
    pbft_byz *byz;
    bool unsafe_skip_nv_check; /* pbft_replica_unsafe_skip_newview_check */
    pbft_stats st;
    pbft_trace_fn trace;
    void *trace_ctx;
    uint64_t first_commit_view; /* the newest view a block committed in (for the trace) */
    /* Primary monitoring (below, "Primary monitoring"): what this replica saw of the primary
     * of view mon_view. */
    bool mon_init;
    uint64_t mon_view;
    uint64_t mon_since;      /* when we entered mon_view (or started) */
    uint64_t mon_newest_fwd; /* newest forward time of a held tx the primary proposed */
    uint64_t mon_busy_ms;    /* when the primary last proposed a block over half full */
    uint64_t mon_gap_seq;    /* the sequence number missing a pre-prepare below others */
    uint64_t mon_gap_ms;     /* ... since when */
    uint64_t mon_deadline;   /* next check */
    uint64_t complained_ms;  /* when we last sent a COMPLAINT in mon_view; 0: never */
    /* Per replica, 1 + the highest view it complained about (0: none): it wants to leave
     * every view up to that one. f+1 wishes above our view move us (count_complaint). */
    uint64_t cwant[PBFT_MAX_N];
    uint64_t own_timeout; /* 1 + the view our last timeout complaint was about (0: none) */
    uint64_t nv_fwd_ms[PBFT_MAX_N]; /* when we last handed each replica our NEW-VIEW */
    /* Per replica, 1 + the view of its newest valid normal-case message (0: none seen): the
     * view the others use (pbft_replica_others_view). */
    uint64_t pview[PBFT_MAX_N];
    /* Transactions this replica forwarded to the primary of the current view, in forward
     * order, so the one waiting longest is found without a scan of the pool: entries
     * proposed, committed or superseded since are popped lazily at the head. Rebuilt from
     * the pool on entering a view (a view change un-proposes) or after an overflow. */
    struct monent {
        pbft_digest h;
        uint64_t fwd_ms;
    } * mon_ring;
    uint32_t mon_cap, mon_head, mon_len;
    bool mon_overflow; /* a forward did not fit: rebuild at the next check */

    uint64_t now;
    uint64_t arrivals; /* transactions admitted so far (txent.arrival_no) */
    uint64_t wall;     /* wall-clock ms for block timestamps (0: use now) */
    bool started;

    /* View state [OSDI §4.4]. */
    uint64_t view;
    bool in_vc;     /* sent VIEW-CHANGE for `view`, waiting for NEW-VIEW */
    uint8_t *my_vc; /* own signed VIEW-CHANGE for `view` */
    uint32_t my_vc_n;
    uint8_t *nv; /* primary: the NEW-VIEW frame it sent for `view` */
    uint32_t nv_n;
    uint64_t nv_max_s; /* highest seq in that NEW-VIEW's O set */
    struct vcent *vcs; /* latest valid VIEW-CHANGE per sender */
    uint32_t T;        /* current view-change timeout [TOCS §4.5.2] */
    uint64_t req_deadline;
    uint32_t req_defers; /* times the request timer waited on a single claim (on_tick) */
    /* The adaptive request timer (req_timeout): measured commit latency of the requests this
     * replica held, in ms (0: no sample yet), and when it last entered a view. */
    uint64_t lat_ms;
    uint64_t view_entered_ms;
    uint64_t vc_deadline;
    uint64_t vc_sent_ms; /* last (re)transmission of our VIEW-CHANGE */
    uint32_t vc_resends;

    /* Log and watermarks [OSDI §4.3]. */
    uint64_t h;            /* last stable checkpoint = low watermark */
    pbft_digest stable_d;  /* its state digest */
    uint8_t *stable_proof; /* list region (u16 count + elems) of 2f+1 CHECKPOINTs */
    uint32_t stable_proof_n;
    struct slot *slots;  /* ring of `window` slots for seq in (h, h+L] */
    struct ckslot *cks;  /* ring of window/K checkpoint slots */
    struct vote *far;    /* 2 per sender: its newest CHECKPOINTs beyond the window (view =
                            their seq), so a replica left behind still sees one stabilise */
    uint64_t *claims;    /* highest executed seq each replica claimed (signed) */
    uint64_t next_seq;   /* primary: next sequence number to assign */
    uint64_t max_pp_seq; /* highest seq with a pre-prepare accepted in this view */

    /* Execution. */
    uint64_t last_exec;      /* highest seq handed to the driver as committed */
    pbft_digest exec_chain;  /* chain_hash(last_exec) */
    pbft_digest *chain_ring; /* chain_hash(seq) for recent seqs, indexed seq % window */
    uint64_t last_applied;   /* highest seq the driver reported executed */
    uint8_t app_hash[32];    /* its application hash */
    uint64_t claim_sent;     /* highest seq we advertised in a CHECKPOINT */

    /* State transfer [TOCS §6.2, simplified to blocks + commit certificates]. */
    uint64_t st_proven; /* committed for sure: a stable checkpoint, a NEW-VIEW's min-s, or a
                           height f+1 replicas claim */
    uint64_t st_target; /* max(st_proven, the highest trusted single claim): how far we try */
    uint64_t st_doubt;  /* bit j: replica j's claim was discounted (it delivered nothing, or
                           bad blocks); its single claims no longer set the target until it
                           delivers a certified block. Its claims still count towards the
                           f+1 that prove a height. */
    uint16_t st_peer;
    bool st_delivered; /* st_peer sent a certified block since the current request */
    uint64_t claim_ms; /* when we last advertised our executed height */
    bool st_active;
    uint64_t st_deadline;
    uint64_t *serve_win;  /* per peer: start of its current serving window */
    uint32_t *serve_used; /* per peer: blocks served in that window */

    /* Transaction pool: open addressing, linear probing, backward-shift deletion. */
    struct txent *tx;
    uint32_t tx_cap;   /* power of two */
    uint32_t held;     /* entries in state TX_HELD */
    uint32_t inflight; /* entries in state TX_INFLIGHT, at most inflight_cap */
    uint32_t inflight_cap;
    uint64_t held_bytes; /* their total size */
    pbft_digest *fifo;   /* primary proposal queue (hashes; stale entries skipped) */
    uint32_t fifo_cap, fifo_head, fifo_len;
    /* Entries held, queued and not in a block (invariant: inblock => !queued), counted
     * incrementally because try_propose runs after every event. */
    uint32_t q_count;
    uint64_t q_bytes;
    pbft_digest *done; /* ring of committed hashes, for dedup of replays */
    uint32_t done_cap, done_next, done_len;

    uint64_t resend_deadline;

    /* Failure (sticky): an allocation failed or an output bound was passed, in this call or
     * an earlier one. The call that met it emits nothing, nor does any later one
     * (pbft_replica_step). */
    const char *failed;
    pbft_alloc_fault_fn alloc_fault; /* test hook: fail chosen allocations */
    void *alloc_fault_ctx;
    pbft_out_limits lim;
    uint64_t send_bytes; /* frame bytes in this call's sends (lim.send_bytes) */

    /* Output of the current call. */
    pbft_output out;
    struct out_arrays oa;
    void **arena;
    size_t arena_n, arena_cap;
    pbft_wbuf w; /* scratch encoder */
};

/* ------------------------------------------------------------------------------------------
 * Small helpers.
 * ----------------------------------------------------------------------------------------*/
static uint16_t primary_of(const pbft_replica *r, uint64_t view)
{
    return (uint16_t)(view % r->c.n);
}

static bool is_primary(const pbft_replica *r)
{
    return primary_of(r, r->view) == r->c.id;
}

static bool digest_eq(const pbft_digest *a, const pbft_digest *b)
{
    return memcmp(a->b, b->b, 32) == 0;
}

static uint64_t min_u64(uint64_t a, uint64_t b)
{
    return a < b ? a : b;
}

static bool digest_zero(const pbft_digest *a)
{
    static const pbft_digest z;
    return digest_eq(a, &z);
}

static void drop(pbft_replica *r, int reason)
{
    r->st.drops[reason]++;
}

static void trace(pbft_replica *r, int kind, uint64_t view, uint64_t seq, int arg, const char *fmt,
                  ...) __attribute__((format(printf, 6, 7)));
static void trace(pbft_replica *r, int kind, uint64_t view, uint64_t seq, int arg, const char *fmt,
                  ...)
{
    if (r->trace == NULL)
        return;
    char text[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    r->trace(r->trace_ctx, kind, view, seq, arg, text);
}

/* ------------------------------------------------------------------------------------------
 * Allocation. Every allocation of the core goes through these three. A failure is sticky
 * (r->failed): the call that met it emits no message, record or commit, and neither does any
 * later call, so a vote can never leave without the record that makes it a durable promise
 * [TOCS §4.1]. The driver then stops (fail-stop). The test hook fails chosen allocations.
 * ----------------------------------------------------------------------------------------*/
static void fail_sticky(pbft_replica *r, const char *why)
{
    if (r->failed == NULL)
        r->failed = why;
}

/* wbuf_ok: an encoder's growth (msg.c, plain realloc) that failed is a failed allocation of
 * the core like any other, sticky; an encoder over its size limit is not. */
static bool wbuf_ok(pbft_replica *r, const pbft_wbuf *w)
{
    if (w->err == PBFT_E_OOM)
        fail_sticky(r, "an allocation failed");
    return w->err == 0;
}

static bool alloc_allowed(pbft_replica *r)
{
    if (r->alloc_fault != NULL && r->alloc_fault(r->alloc_fault_ctx)) {
        fail_sticky(r, "an allocation failed");
        return false;
    }
    return true;
}

static void *r_malloc(pbft_replica *r, size_t n)
{
    void *p = alloc_allowed(r) ? malloc(n == 0 ? 1 : n) : NULL;
    if (p == NULL)
        fail_sticky(r, "an allocation failed");
    return p;
}

static void *r_calloc(pbft_replica *r, size_t k, size_t n)
{
    void *p = alloc_allowed(r) ? calloc(k == 0 ? 1 : k, n == 0 ? 1 : n) : NULL;
    if (p == NULL)
        fail_sticky(r, "an allocation failed");
    return p;
}

static void *r_realloc(pbft_replica *r, void *old, size_t n)
{
    void *p = alloc_allowed(r) ? realloc(old, n == 0 ? 1 : n) : NULL;
    if (p == NULL)
        fail_sticky(r, "an allocation failed");
    return p;
}

static uint8_t *dup_bytes(pbft_replica *r, const uint8_t *p, size_t n)
{
    uint8_t *c = r_malloc(r, n);
    if (c != NULL && n > 0)
        memcpy(c, p, n);
    return c;
}

static void vote_clear(struct vote *v)
{
    free(v->frame);
    memset(v, 0, sizeof *v);
}

static bool vote_set(pbft_replica *r, struct vote *v, uint64_t view, const pbft_digest *d,
                     pbft_span msg)
{
    uint8_t *c = dup_bytes(r, msg.p, msg.n);
    if (c == NULL)
        return false;
    free(v->frame);
    v->set = true;
    v->view = view;
    v->d = *d;
    v->frame = c;
    v->n = (uint32_t)msg.n;
    return true;
}

static void put_key(uint8_t key[PBFT_REC_KEY_BYTES], uint8_t kind, uint64_t seq, uint64_t view,
                    uint8_t type, uint16_t sender)
{
    key[0] = kind;
    for (int i = 0; i < 8; i++) {
        key[1 + i] = (uint8_t)(seq >> (56 - 8 * i));
        key[9 + i] = (uint8_t)(view >> (56 - 8 * i));
    }
    key[17] = type;
    key[18] = (uint8_t)(sender >> 8);
    key[19] = (uint8_t)sender;
}

/* ------------------------------------------------------------------------------------------
 * Output: arrays and an arena, both reset at the start of every call.
 * ----------------------------------------------------------------------------------------*/
static void *arena_alloc(pbft_replica *r, size_t n)
{
    if (r->arena_n == r->arena_cap) {
        size_t cap = r->arena_cap ? r->arena_cap * 2 : 64;
        void **a = r_realloc(r, r->arena, cap * sizeof *a);
        if (a == NULL)
            return NULL;
        r->arena = a;
        r->arena_cap = cap;
    }
    void *p = r_malloc(r, n);
    if (p != NULL)
        r->arena[r->arena_n++] = p;
    return p;
}

static uint8_t *arena_dup(pbft_replica *r, const uint8_t *p, size_t n)
{
    uint8_t *c = arena_alloc(r, n);
    if (c != NULL && n > 0)
        memcpy(c, p, n);
    return c;
}

static void out_reset(pbft_replica *r)
{
    for (size_t i = 0; i < r->arena_n; i++)
        free(r->arena[i]);
    r->arena_n = 0;
    r->oa.n_persist = r->oa.n_sends = r->oa.n_commits = r->oa.n_serves = 0;
    r->send_bytes = 0;
    memset(&r->out, 0, sizeof r->out);
    r->out.deadline_ms = NONE;
}

#define GROW(arr, n, cap)                                                                          \
    do {                                                                                           \
        if ((n) == (cap)) {                                                                        \
            size_t nc_ = (cap) ? (cap)*2 : 16;                                                     \
            void *np_ = r_realloc(r, (arr), nc_ * sizeof *(arr));                                  \
            if (np_ == NULL)                                                                       \
                return false;                                                                      \
            (arr) = np_;                                                                           \
            (cap) = nc_;                                                                           \
        }                                                                                          \
    } while (0)

#define GROW_VOID(arr, n, cap)                                                                     \
    do {                                                                                           \
        if ((n) == (cap)) {                                                                        \
            size_t nc_ = (cap) ? (cap)*2 : 16;                                                     \
            void *np_ = r_realloc(r, (arr), nc_ * sizeof *(arr));                                  \
            if (np_ == NULL)                                                                       \
                return;                                                                            \
            (arr) = np_;                                                                           \
            (cap) = nc_;                                                                           \
        }                                                                                          \
    } while (0)

static bool out_persist(pbft_replica *r, int op, const uint8_t key[PBFT_REC_KEY_BYTES],
                        const uint8_t *value, size_t n)
{
    if (r->oa.n_persist >= r->lim.persist) {
        fail_sticky(r, "output bound passed: records in one call");
        return false;
    }
    GROW(r->oa.persist, r->oa.n_persist, r->oa.cap_persist);
    pbft_persist *p = &r->oa.persist[r->oa.n_persist];
    p->op = op;
    memcpy(p->key, key, PBFT_REC_KEY_BYTES);
    p->value.p = NULL;
    p->value.n = 0;
    if (n > 0) {
        uint8_t *c = arena_dup(r, value, n);
        if (c == NULL)
            return false;
        p->value.p = c;
        p->value.n = n;
    }
    r->oa.n_persist++;
    return true;
}

/* send_room: whether one more frame of n bytes fits the output bounds; if not, it is
 * dropped and counted, as a lossy network would drop it (PBFT retransmits). */
static bool send_room(pbft_replica *r, size_t n)
{
    if (r->oa.n_sends >= r->lim.sends || n > r->lim.send_bytes - r->send_bytes) {
        r->st.out_dropped++;
        return false;
    }
    return true;
}

static bool out_send_raw(pbft_replica *r, uint16_t to, uint32_t delay_ms, const uint8_t *p,
                         size_t n)
{
    if (!send_room(r, n))
        return false;
    GROW(r->oa.sends, r->oa.n_sends, r->oa.cap_sends);
    uint8_t *c = arena_dup(r, p, n);
    if (c == NULL)
        return false;
    r->send_bytes += n;
    pbft_send *s = &r->oa.sends[r->oa.n_sends++];
    s->to = to;
    s->delay_ms = delay_ms;
    s->frame.p = c;
    s->frame.n = n;
    return true;
}

static bool out_commit(pbft_replica *r, const pbft_commit *cm)
{
    if (r->oa.n_commits >= r->lim.commits) {
        fail_sticky(r, "output bound passed: commits in one call");
        return false;
    }
    GROW(r->oa.commits, r->oa.n_commits, r->oa.cap_commits);
    r->oa.commits[r->oa.n_commits++] = *cm;
    return true;
}

static bool out_serve(pbft_replica *r, uint16_t to, uint64_t from, uint64_t upto,
                      const pbft_digest *d)
{
    if (r->oa.n_serves >= r->lim.serves) {
        r->st.out_dropped++; /* the peer asks again after state_retry_ms */
        return false;
    }
    GROW(r->oa.serves, r->oa.n_serves, r->oa.cap_serves);
    pbft_serve *s = &r->oa.serves[r->oa.n_serves++];
    s->to = to;
    s->from_seq = from;
    s->to_seq = upto;
    s->d = *d;
    return true;
}

static void out_finish(pbft_replica *r, pbft_output **out)
{
    r->out.persist = r->oa.persist;
    r->out.n_persist = r->oa.n_persist;
    r->out.sends = r->oa.sends;
    r->out.n_sends = r->oa.n_sends;
    r->out.commits = r->oa.commits;
    r->out.n_commits = r->oa.n_commits;
    r->out.serves = r->oa.serves;
    r->out.n_serves = r->oa.n_serves;
    *out = &r->out;
}

/* ------------------------------------------------------------------------------------------
 * Transaction pool.
 * ----------------------------------------------------------------------------------------*/
static uint32_t tx_home(const pbft_replica *r, const pbft_digest *h)
{
    uint32_t v = (uint32_t)h->b[0] | (uint32_t)h->b[1] << 8 | (uint32_t)h->b[2] << 16 |
                 (uint32_t)h->b[3] << 24;
    return v & (r->tx_cap - 1);
}

static void unqueue(pbft_replica *r, struct txent *e);

static struct txent *tx_find(pbft_replica *r, const pbft_digest *h)
{
    for (uint32_t i = tx_home(r, h);; i = (i + 1) & (r->tx_cap - 1)) {
        struct txent *e = &r->tx[i];
        if (e->state == TX_EMPTY)
            return NULL;
        if (digest_eq(&e->h, h))
            return e;
    }
}

/* tx_remove deletes an entry with backward-shift deletion (no tombstones). */
static void tx_remove(pbft_replica *r, struct txent *e)
{
    uint32_t mask = r->tx_cap - 1;
    uint32_t i = (uint32_t)(e - r->tx);
    unqueue(r, e);
    if (e->state == TX_HELD) {
        r->held--;
        r->held_bytes -= e->n;
    } else if (e->state == TX_INFLIGHT) {
        r->inflight--;
    }
    free(e->tx);
    memset(e, 0, sizeof *e);
    for (uint32_t j = (i + 1) & mask; r->tx[j].state != TX_EMPTY; j = (j + 1) & mask) {
        uint32_t home = tx_home(r, &r->tx[j].h);
        /* Move j into the hole at i if its home is not cyclically within (i, j]. */
        bool between = (i <= j) ? (home > i && home <= j) : (home > i || home <= j);
        if (!between) {
            r->tx[i] = r->tx[j];
            memset(&r->tx[j], 0, sizeof r->tx[j]);
            i = j;
        }
    }
}

static struct txent *tx_insert(pbft_replica *r, const pbft_digest *h)
{
    for (uint32_t i = tx_home(r, h);; i = (i + 1) & (r->tx_cap - 1)) {
        struct txent *e = &r->tx[i];
        if (e->state == TX_EMPTY) {
            e->h = *h;
            return e;
        }
    }
}

/* tx_mark_done records a committed transaction: frees its bytes and keeps its hash in a
 * bounded ring so a replayed copy is recognised as a duplicate. */
/* tx_mark_done records h as committed; returns when this replica first held it (NONE if it
 * did not hold it). */
static uint64_t tx_mark_done(pbft_replica *r, const pbft_digest *h)
{
    struct txent *e = tx_find(r, h);
    if (e != NULL && e->state == TX_DONE)
        return NONE;
    uint64_t arrival = NONE;
    if (e != NULL) {
        if (e->state == TX_HELD)
            arrival = e->arrival_ms;
        tx_remove(r, e);
    }
    if (r->done_len == r->done_cap) {
        struct txent *old = tx_find(r, &r->done[r->done_next]);
        if (old != NULL && old->state == TX_DONE)
            tx_remove(r, old);
        r->done_len--;
    }
    struct txent *n = tx_insert(r, h);
    n->state = TX_DONE;
    r->done[r->done_next] = *h;
    r->done_next = (r->done_next + 1) % r->done_cap;
    r->done_len++;
    return arrival;
}

static void unqueue(pbft_replica *r, struct txent *e)
{
    if (e->queued) {
        e->queued = false;
        r->q_count--;
        r->q_bytes -= 4 + e->n;
    }
}

static void fifo_push(pbft_replica *r, const pbft_digest *h)
{
    if (r->fifo_len == r->fifo_cap) {
        /* Compact into a fresh array, keeping order: drop entries no longer queued. */
        pbft_digest *nf = r_malloc(r, r->fifo_cap * sizeof *nf);
        if (nf == NULL)
            return; /* the tx stays held; it is proposed after a view change at worst */
        uint32_t w = 0;
        for (uint32_t k = 0; k < r->fifo_len; k++) {
            pbft_digest x = r->fifo[(r->fifo_head + k) % r->fifo_cap];
            struct txent *e = tx_find(r, &x);
            if (e != NULL && e->state == TX_HELD && e->queued)
                nf[w++] = x;
        }
        free(r->fifo);
        r->fifo = nf;
        r->fifo_head = 0;
        r->fifo_len = w;
        /* fifo_cap > max_pending_txs >= queued entries, so there is room now. */
        assert(w < r->fifo_cap);
    }
    r->fifo[(r->fifo_head + r->fifo_len) % r->fifo_cap] = *h;
    r->fifo_len++;
}

/* mon_push appends a forwarded transaction to the monitoring ring. */
static void mon_push(pbft_replica *r, const struct txent *e)
{
    if (r->mon_len == r->mon_cap) {
        r->mon_overflow = true;
        return;
    }
    r->mon_ring[(r->mon_head + r->mon_len) % r->mon_cap] = (struct monent){e->h, e->mon_fwd_ms};
    r->mon_len++;
}

/* mon_forwarded records that this replica just sent e to the primary of its view: the
 * first time in this view starts e's wait (primary monitoring). */
static void mon_forwarded(pbft_replica *r, struct txent *e)
{
    if (e->mon_fwd_view == r->view + 1)
        return;
    e->mon_fwd_view = r->view + 1;
    e->mon_fwd_ms = r->now;
    if (!r->in_vc)
        mon_push(r, e);
}

static bool mon_waiting(const pbft_replica *r, const struct txent *t)
{
    return t->state == TX_HELD && !t->inblock && t->mon_fwd_view == r->view + 1;
}

static int cmp_fwd(const void *a, const void *b)
{
    const struct txent *x = *(const struct txent *const *)a, *y = *(const struct txent *const *)b;
    return x->mon_fwd_ms < y->mon_fwd_ms ? -1 : x->mon_fwd_ms > y->mon_fwd_ms;
}

/* mon_rebuild refills the ring from the pool, in forward order. */
static void mon_rebuild(pbft_replica *r)
{
    r->mon_head = r->mon_len = 0;
    r->mon_overflow = false;
    struct txent **v = r_malloc(r, (r->held > 0 ? r->held : 1) * sizeof *v);
    if (v == NULL) {
        r->mon_overflow = true; /* try again at the next check */
        return;
    }
    uint32_t k = 0;
    for (uint32_t i = 0; i < r->tx_cap && k < r->held; i++)
        if (mon_waiting(r, &r->tx[i]))
            v[k++] = &r->tx[i];
    qsort(v, k, sizeof *v, cmp_fwd);
    for (uint32_t i = 0; i < k; i++)
        mon_push(r, v[i]);
    free(v);
}

/* mon_oldest returns when the transaction waiting longest for the primary was forwarded to
 * it, or NONE. */
static uint64_t mon_oldest(pbft_replica *r)
{
    if (r->mon_overflow)
        mon_rebuild(r);
    while (r->mon_len > 0) {
        const struct monent *m = &r->mon_ring[r->mon_head];
        const struct txent *t = tx_find(r, &m->h);
        if (t != NULL && mon_waiting(r, t) && t->mon_fwd_ms == m->fwd_ms)
            return m->fwd_ms;
        r->mon_head = (r->mon_head + 1) % r->mon_cap;
        r->mon_len--;
    }
    return NONE;
}

/* enqueue_tx puts a held transaction on the primary's proposal queue. */
static void enqueue_tx(pbft_replica *r, struct txent *e)
{
    if (e->queued || e->inblock || e->state != TX_HELD)
        return;
    if (r->byz != NULL && pbft_byz_mode(r->byz) == PBFT_BYZ_CENSOR) {
        pbft_tx t;
        if (pbft_tx_decode(e->tx, e->n, &t) == PBFT_OK && pbft_byz_censors(r->byz, t.sender))
            return; /* held, never proposed: backups see it wait (primary monitoring) */
    }
    e->queued = true;
    r->q_count++;
    r->q_bytes += 4 + e->n;
    fifo_push(r, &e->h);
}

/* ------------------------------------------------------------------------------------------
 * Outbound messages. Every message is described by an outmsg, signed over its canonical
 * bytes, and then passed through the adversary (if any) on its way out. The adversary
 * rebuilds and re-signs a mutated copy, so its lies carry valid signatures (design §6).
 * ----------------------------------------------------------------------------------------*/
struct outmsg {
    uint8_t type;
    pbft_vote vote;      /* PREPREPARE, PREPARE, COMMIT */
    pbft_ckpt ck;        /* CHECKPOINT */
    const uint8_t *body; /* other types: the body bytes */
    size_t body_n;
    const uint8_t *attach; /* PREPREPARE: the block */
    size_t attach_n;
};

/* build_frame signs m into w (reset first). Returns false if the encoder failed. */
static bool build_frame(pbft_replica *r, const struct outmsg *m, pbft_wbuf *w)
{
    pbft_wbuf_reset(w);
    size_t start = pbft_msg_begin(w, m->type, r->c.id);
    switch (m->type) {
    case PBFT_MSG_PREPREPARE:
    case PBFT_MSG_PREPARE:
    case PBFT_MSG_COMMIT:
        pbft_put_u64(w, m->vote.view);
        pbft_put_u64(w, m->vote.seq);
        pbft_put_bytes(w, m->vote.d.b, 32);
        break;
    case PBFT_MSG_CHECKPOINT:
        pbft_put_u64(w, m->ck.seq);
        pbft_put_bytes(w, m->ck.d.b, 32);
        break;
    default:
        pbft_put_bytes(w, m->body, m->body_n);
        break;
    }
    pbft_msg_end(w, start, r->c.chain, r->c.sk);
    pbft_put_attach(w, m->attach, m->attach_n);
    return wbuf_ok(r, w);
}

/* signed_len: the signed part of a frame built by build_frame (frame minus attachment). */
static size_t signed_len(const struct outmsg *m, size_t frame_n)
{
    return frame_n - 4 - m->attach_n;
}

/* byz_send passes one honest message through the adversary. */
static void byz_send(pbft_replica *r, const struct outmsg *m, const uint8_t *frame, size_t n,
                     uint16_t to)
{
    pbft_byz *b = r->byz;
    struct outmsg mm = *m;
    bool is_vote =
        m->type == PBFT_MSG_PREPREPARE || m->type == PBFT_MSG_PREPARE || m->type == PBFT_MSG_COMMIT;
    uint32_t delay = 0;
    pbft_wbuf w2 = {0};
    pbft_wbuf_init(&w2, PBFT_MAX_MSG_BYTES);
    const uint8_t *fp = frame;
    size_t fn = n;

    switch (b->c.mode) {
    case PBFT_BYZ_SILENT:
        b->actions++;
        goto out;
    case PBFT_BYZ_WRONG_DIGEST:
        if (is_vote) {
            mm.vote.d.b[0] ^= 0x5a;
            if (build_frame(r, &mm, &w2)) {
                fp = w2.p;
                fn = w2.len;
                b->actions++;
            }
        }
        break;
    case PBFT_BYZ_MUTATE:
        if ((is_vote || m->type == PBFT_MSG_CHECKPOINT) && pbft__byz_chance(b, b->c.percent)) {
            int64_t delta = (pbft__byz_next(b) & 1) ? 1 : -1;
            if (m->type == PBFT_MSG_CHECKPOINT)
                mm.ck.seq = (uint64_t)((int64_t)mm.ck.seq + delta);
            else if (pbft__byz_next(b) & 1)
                mm.vote.view = (uint64_t)((int64_t)mm.vote.view + delta);
            else
                mm.vote.seq = (uint64_t)((int64_t)mm.vote.seq + delta);
            if (build_frame(r, &mm, &w2)) {
                fp = w2.p;
                fn = w2.len;
                b->actions++;
            }
        }
        break;
    case PBFT_BYZ_CRASH:
        if (!b->crashed && (b->c.crash_type == 0 || m->type == b->c.crash_type) &&
            ++b->crash_count >= (b->c.crash_after > 0 ? b->c.crash_after : 1))
            b->crashed = true;
        if (b->crashed) {
            b->actions++;
            goto out;
        }
        break;
    case PBFT_BYZ_SELECTIVE: {
        uint64_t mask = b->c.peers;
        if (mask == 0)
            for (uint16_t j = 0; j < r->c.n / 2; j++)
                mask |= 1ull << j;
        if (to == PBFT_TO_ALL) {
            for (uint16_t j = 0; j < r->c.n; j++)
                if (j != r->c.id && (mask >> j & 1))
                    out_send_raw(r, j, 0, frame, n);
            b->actions++;
            goto out;
        }
        if (!(mask >> to & 1)) {
            b->actions++;
            goto out;
        }
        break;
    }
    case PBFT_BYZ_FLOOD: {
        /* Copies cost each receiver a signature check before they are dropped as
         * duplicates; the junk frame costs it a decode. Both go through its bounded queues. */
        uint32_t k = b->c.factor > 0 ? b->c.factor : 8;
        for (uint32_t i = 0; i < k; i++)
            out_send_raw(r, to, 0, frame, n);
        uint8_t *junk = arena_alloc(r, n);
        if (junk != NULL) {
            for (size_t i = 0; i < n; i += 8) {
                uint64_t x = pbft__byz_next(b);
                memcpy(junk + i, &x, n - i < 8 ? n - i : 8);
            }
            out_send_raw(r, to, 0, junk, n);
        }
        b->actions += k + 1;
        break;
    }
    case PBFT_BYZ_BOGUS_STATE:
        /* The lure: claim to have executed one checkpoint interval further than it has, so a
         * replica that is catching up asks it first (and gets corrupted blocks, made by the
         * driver's pbft_byz_corrupt_state). */
        if (m->type == PBFT_MSG_CHECKPOINT) {
            mm.ck.seq += r->c.checkpoint_interval;
            if (build_frame(r, &mm, &w2)) {
                fp = w2.p;
                fn = w2.len;
                b->actions++;
            }
        }
        break;
    case PBFT_BYZ_SLOW_PRIMARY:
        if (m->type == PBFT_MSG_PREPREPARE) {
            delay = b->c.delay_ms;
            b->actions++;
        }
        break;
    case PBFT_BYZ_BAD_SIGNATURE: {
        uint8_t *c = arena_dup(r, frame, n);
        if (c != NULL) {
            c[signed_len(m, n) - 1] ^= 0x01; /* last signature byte */
            fp = c;
            fn = n;
            b->actions++;
        }
        break;
    }
    case PBFT_BYZ_EQUIVOCATE:
        /* Primary: the second half of the replicas gets a different, equally valid block
         * (same transactions, another timestamp) under its own signed digest. */
        if (m->type == PBFT_MSG_PREPREPARE && m->attach_n > 0 && to == PBFT_TO_ALL) {
            pbft_block blk;
            if (pbft_block_decode(m->attach, m->attach_n, &blk) != PBFT_OK)
                break;
            pbft_span *txs = r_malloc(r, (blk.ntx ? blk.ntx : 1) * sizeof *txs);
            uint8_t *alt = r_malloc(r, m->attach_n);
            size_t alt_n = 0;
            size_t off = 0;
            uint32_t k = 0;
            while (txs != NULL && pbft_block_next_tx(&blk, &off, &txs[k]))
                k++;
            if (txs != NULL && alt != NULL &&
                pbft_block_encode(blk.height, blk.view, blk.proposer, blk.timestamp_ms + 1, txs, k,
                                  alt, m->attach_n, &alt_n) == PBFT_OK) {
                pbft_block ab;
                if (pbft_block_decode(alt, alt_n, &ab) == PBFT_OK) {
                    pbft_block_digest(&ab, &mm.vote.d);
                    mm.attach = alt;
                    mm.attach_n = alt_n;
                    if (build_frame(r, &mm, &w2)) {
                        for (uint16_t j = 0; j < r->c.n; j++) {
                            if (j == r->c.id)
                                continue;
                            if (j < r->c.n / 2)
                                out_send_raw(r, j, 0, frame, n);
                            else
                                out_send_raw(r, j, 0, w2.p, w2.len);
                        }
                        b->actions++;
                        free(txs);
                        free(alt);
                        goto out;
                    }
                }
            }
            free(txs);
            free(alt);
        }
        break;
    case PBFT_BYZ_CONFLICT_VC:
        /* A VIEW-CHANGE without its prepared certificates to every other replica. */
        if (m->type == PBFT_MSG_VIEWCHANGE && to == PBFT_TO_ALL) {
            pbft_viewchange vc;
            pbft_span body = {m->body, m->body_n};
            if (pbft_viewchange_decode(body, &vc) != PBFT_OK)
                break;
            size_t prefix = (size_t)(vc.pcerts.p - m->body) - 2; /* up to n_pcert */
            uint8_t *nb = r_malloc(r, prefix + 2);
            if (nb == NULL)
                break;
            memcpy(nb, m->body, prefix);
            nb[prefix] = 0;
            nb[prefix + 1] = 0;
            mm.body = nb;
            mm.body_n = prefix + 2;
            if (build_frame(r, &mm, &w2)) {
                for (uint16_t j = 0; j < r->c.n; j++) {
                    if (j == r->c.id)
                        continue;
                    if (j % 2)
                        out_send_raw(r, j, 0, w2.p, w2.len);
                    else
                        out_send_raw(r, j, 0, frame, n);
                }
                b->actions++;
                free(nb);
                goto out;
            }
            free(nb);
        }
        break;
    case PBFT_BYZ_REPLAY: {
        /* Alongside the real message, re-send one signed in an earlier view. */
        uint64_t cur = r->view;
        if (pbft__byz_chance(b, b->c.percent)) {
            unsigned start = (unsigned)(pbft__byz_next(b) % PBFT_BYZ_REPLAY_RING);
            for (unsigned k = 0; k < PBFT_BYZ_REPLAY_RING; k++) {
                unsigned i = (start + k) % PBFT_BYZ_REPLAY_RING;
                if (b->ring[i].p != NULL && b->ring[i].view < cur) {
                    out_send_raw(r, to, 0, b->ring[i].p, b->ring[i].n);
                    b->actions++;
                    break;
                }
            }
        }
        if (is_vote || m->type == PBFT_MSG_CHECKPOINT)
            pbft__byz_remember(b, frame, n, is_vote ? m->vote.view : cur);
        break;
    }
    default:
        break;
    }
    out_send_raw(r, to, delay, fp, fn);
out:
    pbft_wbuf_free(&w2);
}

/* transmit sends one signed frame (already built from m) to `to`. */
static void transmit(pbft_replica *r, const struct outmsg *m, const uint8_t *frame, size_t n,
                     uint16_t to)
{
    if (r->byz != NULL && r->byz->active && r->byz->c.mode != PBFT_BYZ_HONEST) {
        byz_send(r, m, frame, n, to);
        return;
    }
    /* An armed replay adversary already keeps what it sends: it will have old-view
     * messages to replay from the moment it turns on. */
    if (r->byz != NULL && r->byz->c.mode == PBFT_BYZ_REPLAY) {
        bool vote = m->type == PBFT_MSG_PREPREPARE || m->type == PBFT_MSG_PREPARE ||
                    m->type == PBFT_MSG_COMMIT;
        if (vote || m->type == PBFT_MSG_CHECKPOINT)
            pbft__byz_remember(r->byz, frame, n, vote ? m->vote.view : r->view);
    }
    out_send_raw(r, to, 0, frame, n);
}

/* send_new builds, signs and transmits m (messages not kept in the log). */
static void send_new(pbft_replica *r, const struct outmsg *m, uint16_t to)
{
    if (build_frame(r, m, &r->w))
        transmit(r, m, r->w.p, r->w.len, to);
}

/* resend_signed transmits a stored signed message again (no re-signing needed). */
static void resend_signed(pbft_replica *r, const struct outmsg *m, const uint8_t *msg, size_t n,
                          uint16_t to)
{
    size_t fn = n + 4 + m->attach_n;
    uint8_t *f = arena_alloc(r, fn);
    if (f == NULL)
        return;
    memcpy(f, msg, n);
    f[n] = (uint8_t)(m->attach_n >> 24);
    f[n + 1] = (uint8_t)(m->attach_n >> 16);
    f[n + 2] = (uint8_t)(m->attach_n >> 8);
    f[n + 3] = (uint8_t)m->attach_n;
    if (m->attach_n > 0)
        memcpy(f + n + 4, m->attach, m->attach_n);
    transmit(r, m, f, fn, to);
}

/* forward_signed relays a signed message of another replica, as a frame with no attachment.
 * It carries that replica's signature, so it is not ours to mutate: no adversary here. */
static void forward_signed(pbft_replica *r, uint16_t to, const uint8_t *msg, size_t n)
{
    if (!send_room(r, n + 4))
        return;
    uint8_t *f = arena_alloc(r, n + 4);
    if (f == NULL)
        return;
    memcpy(f, msg, n);
    memset(f + n, 0, 4);
    GROW_VOID(r->oa.sends, r->oa.n_sends, r->oa.cap_sends);
    r->send_bytes += n + 4;
    pbft_send *sd = &r->oa.sends[r->oa.n_sends++];
    sd->to = to;
    sd->delay_ms = 0;
    sd->frame.p = f;
    sd->frame.n = n + 4;
}

static struct outmsg vote_msg(uint8_t type, uint64_t view, uint64_t seq, const pbft_digest *d)
{
    struct outmsg m;
    memset(&m, 0, sizeof m);
    m.type = type;
    m.vote.view = view;
    m.vote.seq = seq;
    m.vote.d = *d;
    return m;
}

/* persist_frame writes a LOG record whose value is a frame or a signed message. */
static void persist_log(pbft_replica *r, uint64_t seq, uint64_t view, uint8_t type, uint16_t sender,
                        const uint8_t *v, size_t n)
{
    uint8_t key[PBFT_REC_KEY_BYTES];
    put_key(key, REC_LOG, seq, view, type, sender);
    out_persist(r, PBFT_PERSIST_PUT, key, v, n);
}

static bool verify_env(pbft_replica *r, const pbft_env *e, bool pre)
{
    if (pre)
        return true;
    r->st.sig_verifies++;
    return pbft_env_verify(e, r->c.chain, r->c.pubkeys[e->sender]);
}

/* ------------------------------------------------------------------------------------------
 * The log: a ring of `window` slots for seq in (h, h+L] [OSDI §4.3].
 * ----------------------------------------------------------------------------------------*/
static void slot_free(pbft_replica *r, struct slot *s)
{
    free(s->pp);
    free(s->block);
    free(s->pc);
    for (int k = 0; k < SLOT_KEEP; k++)
        free(s->kept[k].p);
    free(s->cert);
    for (uint16_t j = 0; j < r->c.n; j++) {
        vote_clear(&s->prep[j]);
        vote_clear(&s->com[j]);
    }
    struct vote *p = s->prep, *c = s->com;
    memset(s, 0, sizeof *s);
    s->prep = p;
    s->com = c;
}

/* keep_body stores a body this slot voted for (takes ownership of p). */
static void keep_body(struct slot *s, const pbft_digest *d, uint64_t view, uint8_t *p, uint32_t n)
{
    int slot = -1;
    for (int k = 0; k < SLOT_KEEP; k++) {
        if (s->kept[k].p != NULL && digest_eq(&s->kept[k].d, d)) {
            free(p); /* already kept */
            return;
        }
        if (s->kept[k].p == NULL && slot < 0)
            slot = k;
    }
    if (slot < 0) { /* full: evict the oldest view */
        slot = 0;
        for (int k = 1; k < SLOT_KEEP; k++)
            if (s->kept[k].view < s->kept[slot].view)
                slot = k;
        free(s->kept[slot].p);
    }
    s->kept[slot].d = *d;
    s->kept[slot].view = view;
    s->kept[slot].p = p;
    s->kept[slot].n = n;
}

/* take_body removes and returns a kept body with digest d (ownership to the caller). */
static uint8_t *take_body(struct slot *s, const pbft_digest *d, uint32_t *n)
{
    for (int k = 0; k < SLOT_KEEP; k++)
        if (s->kept[k].p != NULL && digest_eq(&s->kept[k].d, d)) {
            uint8_t *p = s->kept[k].p;
            *n = s->kept[k].n;
            s->kept[k].p = NULL;
            return p;
        }
    return NULL;
}

/* find_body returns the current or a kept body with digest d, or NULL. */
static const uint8_t *find_body(const struct slot *s, const pbft_digest *d, uint32_t *n)
{
    if (s->block != NULL && digest_eq(&s->d, d)) {
        *n = s->block_n;
        return s->block;
    }
    for (int k = 0; k < SLOT_KEEP; k++)
        if (s->kept[k].p != NULL && digest_eq(&s->kept[k].d, d)) {
            *n = s->kept[k].n;
            return s->kept[k].p;
        }
    return NULL;
}

static bool in_window(const pbft_replica *r, uint64_t seq)
{
    return seq > r->h && seq - r->h <= r->c.window;
}

/* get_slot returns the slot for seq (claiming it if unused), or NULL outside the window. */
static struct slot *get_slot(pbft_replica *r, uint64_t seq)
{
    if (!in_window(r, seq))
        return NULL;
    struct slot *s = &r->slots[(seq - 1) % r->c.window];
    if (s->seq != seq) {
        slot_free(r, s);
        s->seq = seq;
    }
    return s;
}

/* find_slot returns the slot only if it is in use for seq. */
static struct slot *find_slot(pbft_replica *r, uint64_t seq)
{
    if (!in_window(r, seq))
        return NULL;
    struct slot *s = &r->slots[(seq - 1) % r->c.window];
    return s->seq == seq ? s : NULL;
}

/* validate_block checks a block against the (seq, digest) it is ordered under: structure,
 * limits, digest, transaction root and - unless the driver did so - every tx signature. */
static bool validate_block(pbft_replica *r, const uint8_t *p, size_t n, uint64_t seq,
                           const pbft_digest *d, bool pre, pbft_block *out)
{
    if (n > r->c.max_block_bytes)
        return false;
    if (pbft_block_decode(p, n, out) != PBFT_OK)
        return false;
    if (out->height != seq || out->ntx > r->c.max_block_txs)
        return false;
    pbft_digest bd;
    pbft_block_digest(out, &bd);
    if (!digest_eq(&bd, d))
        return false;
    if (pbft_block_check_root(out, NULL) != PBFT_OK)
        return false;
    if (!pre) {
        size_t off = 0;
        pbft_span t;
        while (pbft_block_next_tx(out, &off, &t)) {
            pbft_tx tx;
            r->st.sig_verifies++;
            if (pbft_tx_decode(t.p, t.n, &tx) != PBFT_OK || !pbft_tx_verify(&tx, r->c.chain))
                return false;
        }
    }
    return true;
}

/* null_block builds PBFT's null request for (seq, view) [TOCS §4.4] into the arena. */
static bool null_block(pbft_replica *r, uint64_t seq, uint64_t view, pbft_span *blk, pbft_digest *d)
{
    uint8_t *b = arena_alloc(r, PBFT_BLOCK_HEADER_BYTES);
    size_t len = 0;
    if (b == NULL || pbft_block_encode(seq, view, primary_of(r, view), 0, NULL, 0, b,
                                       PBFT_BLOCK_HEADER_BYTES, &len) != PBFT_OK)
        return false;
    pbft_block pb;
    if (pbft_block_decode(b, len, &pb) != PBFT_OK)
        return false;
    pbft_block_digest(&pb, d);
    blk->p = b;
    blk->n = len;
    return true;
}

/* mark_inblock flags held transactions that appear in an accepted block, so that a primary
 * does not propose them again while that block is in flight. */
static void mon_sync(pbft_replica *r);

static void mark_inblock(pbft_replica *r, const uint8_t *p, size_t n)
{
    pbft_block b;
    if (pbft_block_decode(p, n, &b) != PBFT_OK)
        return;
    /* Primary monitoring observes what the primary proposes: how full, and how recent. */
    bool observe = !r->in_vc;
    if (observe) {
        mon_sync(r);
        if ((uint64_t)b.ntx * 2 >= r->c.max_block_txs || (uint64_t)n * 2 >= r->c.max_block_bytes)
            r->mon_busy_ms = r->now;
    }
    size_t off = 0;
    pbft_span t;
    while (pbft_block_next_tx(&b, &off, &t)) {
        pbft_digest h;
        pbft_tx_hash(t.p, t.n, &h);
        struct txent *e = tx_find(r, &h);
        if (e != NULL && e->state == TX_HELD) {
            /* Only what we forwarded to this primary says anything about its order. */
            if (observe && mon_waiting(r, e) && e->mon_fwd_ms > r->mon_newest_fwd)
                r->mon_newest_fwd = e->mon_fwd_ms;
            unqueue(r, e);
            e->inblock = true;
        } else if (e == NULL && r->inflight < r->inflight_cap) {
            e = tx_insert(r, &h);
            e->state = TX_INFLIGHT;
            e->inblock = true;
            r->inflight++;
        }
    }
}

/* mark_executed records the transactions of a block executed before a restart (restored
 * from the records below the executed height) as committed. */
static void mark_executed(pbft_replica *r, const uint8_t *p, size_t n)
{
    pbft_block b;
    if (pbft_block_decode(p, n, &b) != PBFT_OK)
        return;
    size_t off = 0;
    pbft_span t;
    while (pbft_block_next_tx(&b, &off, &t)) {
        pbft_digest h;
        pbft_tx_hash(t.p, t.n, &h);
        tx_mark_done(r, &h);
    }
}

/* ------------------------------------------------------------------------------------------
 * Execution [OSDI §4.2: "executes the operation after all requests with lower sequence
 * numbers have been executed"].
 * ----------------------------------------------------------------------------------------*/
static void update_req_timer(pbft_replica *r, bool progress);
static void observe_latency(pbft_replica *r, uint64_t arrival_ms);
static void start_state_transfer(pbft_replica *r);

/* cert_from_votes encodes the COMMITs matching (view, d) as a list into the arena. */
static bool cert_from_votes(pbft_replica *r, struct slot *s, uint64_t view, const pbft_digest *d,
                            pbft_list *cert)
{
    size_t total = 0;
    uint16_t count = 0;
    for (uint16_t j = 0; j < r->c.n; j++) {
        struct vote *v = &s->com[j];
        if (v->set && v->view == view && digest_eq(&v->d, d)) {
            total += 4 + v->n;
            count++;
        }
    }
    uint8_t *p = arena_alloc(r, total);
    if (p == NULL)
        return false;
    size_t off = 0;
    for (uint16_t j = 0; j < r->c.n; j++) {
        struct vote *v = &s->com[j];
        if (v->set && v->view == view && digest_eq(&v->d, d)) {
            p[off] = (uint8_t)(v->n >> 24);
            p[off + 1] = (uint8_t)(v->n >> 16);
            p[off + 2] = (uint8_t)(v->n >> 8);
            p[off + 3] = (uint8_t)v->n;
            memcpy(p + off + 4, v->frame, v->n);
            off += 4 + v->n;
        }
    }
    cert->count = count;
    cert->region.p = p;
    cert->region.n = total;
    return true;
}

/* execute hands block seq to the driver and advances the chain. The block bytes and the
 * certificate are copied into the arena: the slot may be collected later in this call. */
static void execute(pbft_replica *r, uint64_t seq, uint64_t view, const pbft_digest *d,
                    const uint8_t *block, size_t block_n, const pbft_list *cert)
{
    assert(seq == r->last_exec + 1);
    pbft_commit cm;
    memset(&cm, 0, sizeof cm);
    cm.seq = seq;
    cm.view = view;
    cm.d = *d;
    pbft_chain_next(&r->exec_chain, d, &cm.chain);
    uint8_t *bc = arena_dup(r, block, block_n);
    uint8_t *cc = arena_dup(r, cert->region.p, cert->region.n);
    if (bc == NULL || cc == NULL)
        return; /* out of memory: not executed now; retried on the next event */
    cm.block.p = bc;
    cm.block.n = block_n;
    cm.cert.count = cert->count;
    cm.cert.region.p = cc;
    cm.cert.region.n = cert->region.n;
    if (!out_commit(r, &cm))
        return;
    r->exec_chain = cm.chain;
    r->chain_ring[seq % r->c.window] = cm.chain;
    r->last_exec = seq;

    pbft_block b;
    if (pbft_block_decode(block, block_n, &b) == PBFT_OK) {
        size_t off = 0;
        pbft_span t;
        uint64_t oldest = NONE;
        while (pbft_block_next_tx(&b, &off, &t)) {
            pbft_digest h;
            pbft_tx_hash(t.p, t.n, &h);
            oldest = min_u64(oldest, tx_mark_done(r, &h));
        }
        r->st.txs_committed += b.ntx;
        /* A backup the load does not reach holds no request, and its timer runs on accepted
         * pre-prepares: their wait counts too. */
        const struct slot *sl = find_slot(r, seq);
        if (sl != NULL && sl->has_pp && sl->pp_view == r->view)
            oldest = min_u64(oldest, sl->pp_ms);
        observe_latency(r, oldest);
    }
    r->st.blocks_committed++;
    if (view > r->first_commit_view || r->st.blocks_committed == 1) {
        r->first_commit_view = view;
        trace(r, PBFT_TRACE_FIRST_COMMIT, view, seq, -1, "first commit in view %llu: height %llu",
              (unsigned long long)view, (unsigned long long)seq);
    }
    /* Progress: the view works, so the timeout returns to its base [TOCS §4.5.2]. */
    r->T = r->c.view_timeout_ms;
    update_req_timer(r, true);
}

static void want_body(pbft_replica *r, struct slot *s, const pbft_digest *d);

/* try_execute executes committed blocks in sequence order while their bodies are here. */
static void try_execute(pbft_replica *r)
{
    for (;;) {
        uint64_t seq = r->last_exec + 1;
        struct slot *s = find_slot(r, seq);
        if (s == NULL || !s->committed)
            break;
        if (s->block == NULL) {
            want_body(r, s, &s->cd);
            break;
        }
        pbft_list cert = {s->cert_count, {s->cert, s->cert_n}};
        uint64_t before = r->last_exec;
        execute(r, seq, s->cview, &s->cd, s->block, s->block_n, &cert);
        if (r->last_exec == before)
            break;
    }
    if (r->st_target > r->last_exec)
        start_state_transfer(r);
}

/* ------------------------------------------------------------------------------------------
 * Normal case [OSDI §4.2].
 * ----------------------------------------------------------------------------------------*/
static void check_committed(pbft_replica *r, struct slot *s, uint64_t view, const pbft_digest *d)
{
    if (s->committed)
        return;
    uint16_t count = 0;
    for (uint16_t j = 0; j < r->c.n; j++) {
        struct vote *v = &s->com[j];
        if (v->set && v->view == view && digest_eq(&v->d, d))
            count++;
    }
    if (count < r->q)
        return;
    /* committed-local needs prepared + 2f+1 commits; a replica that missed the pre-prepare
     * but holds 2f+1 valid COMMITs has a commit certificate, which proves the same thing
     * (at least f+1 correct replicas prepared it), so it commits and fetches the body. */
    pbft_list cert;
    if (!cert_from_votes(r, s, view, d, &cert))
        return; /* out of memory: retried when the next vote arrives */
    uint8_t *frozen = dup_bytes(r, cert.region.p, cert.region.n);
    if (frozen == NULL)
        return;
    free(s->cert);
    s->cert = frozen;
    s->cert_n = (uint32_t)cert.region.n;
    s->cert_count = cert.count;
    s->committed = true;
    s->cview = view;
    s->cd = *d;
    if (s->block != NULL && !digest_eq(&s->d, d)) {
        keep_body(s, &s->d, s->pp_view, s->block, s->block_n);
        s->block = NULL;
    }
    if (s->block == NULL) {
        uint32_t kn = 0;
        s->block = take_body(s, d, &kn);
        s->block_n = kn;
        s->d = *d;
    }
    try_execute(r);
}

static void check_prepared(pbft_replica *r, struct slot *s)
{
    if (!s->has_pp || s->prepared || s->pp_view != r->view || r->in_vc)
        return;
    uint16_t prim = primary_of(r, s->pp_view);
    uint16_t count = 0;
    size_t total = 0;
    for (uint16_t j = 0; j < r->c.n; j++) {
        struct vote *v = &s->prep[j];
        if (j != prim && v->set && v->view == s->pp_view && digest_eq(&v->d, &s->d)) {
            count++;
            total += 4 + v->n;
        }
    }
    /* prepared(m, v, n, i): the pre-prepare plus 2f matching prepares from backups. */
    if (count + 1 < r->q)
        return;
    s->prepared = true;

    /* The prepared certificate, kept for VIEW-CHANGE [OSDI §4.4] and persisted before our
     * COMMIT leaves (a restarted replica must still report what it prepared). */
    size_t pcn = 4 + s->pp_n + 2 + total;
    uint8_t *pc = r_malloc(r, pcn);
    if (pc != NULL) {
        size_t off = 0;
        pc[off++] = (uint8_t)(s->pp_n >> 24);
        pc[off++] = (uint8_t)(s->pp_n >> 16);
        pc[off++] = (uint8_t)(s->pp_n >> 8);
        pc[off++] = (uint8_t)s->pp_n;
        memcpy(pc + off, s->pp, s->pp_n);
        off += s->pp_n;
        pc[off++] = (uint8_t)(count >> 8);
        pc[off++] = (uint8_t)count;
        for (uint16_t j = 0; j < r->c.n; j++) {
            struct vote *v = &s->prep[j];
            if (j != prim && v->set && v->view == s->pp_view && digest_eq(&v->d, &s->d)) {
                pc[off++] = (uint8_t)(v->n >> 24);
                pc[off++] = (uint8_t)(v->n >> 16);
                pc[off++] = (uint8_t)(v->n >> 8);
                pc[off++] = (uint8_t)v->n;
                memcpy(pc + off, v->frame, v->n);
                off += v->n;
            }
        }
        assert(off == pcn);
        free(s->pc);
        s->pc = pc;
        s->pc_n = (uint32_t)pcn;
        s->has_pc = true;
        s->pc_view = s->pp_view;
        s->pc_d = s->d;
        persist_log(r, s->seq, 0, REC_TYPE_PCERT, 0, pc, pcn);
    }

    struct outmsg m = vote_msg(PBFT_MSG_COMMIT, s->pp_view, s->seq, &s->d);
    if (!build_frame(r, &m, &r->w))
        return;
    pbft_span own = {r->w.p, signed_len(&m, r->w.len)};
    vote_set(r, &s->com[r->c.id], s->pp_view, &s->d, own);
    persist_log(r, s->seq, s->pp_view, PBFT_MSG_COMMIT, r->c.id, r->w.p, r->w.len);
    transmit(r, &m, r->w.p, r->w.len, PBFT_TO_ALL);
    r->st.commits_sent++;
    s->sent_ms = r->now;
    check_committed(r, s, s->pp_view, &s->d);
}

/* accept_pp installs a pre-prepare (and its block, if known) in a slot. */
static bool accept_pp(pbft_replica *r, struct slot *s, uint64_t view, const pbft_digest *d,
                      pbft_span pp, const uint8_t *block, size_t block_n)
{
    uint8_t *ppc = dup_bytes(r, pp.p, pp.n);
    uint8_t *bc = block != NULL ? dup_bytes(r, block, block_n) : NULL;
    if (ppc == NULL || (block != NULL && bc == NULL)) {
        free(ppc);
        free(bc);
        drop(r, PBFT_DROP_LIMIT);
        return false;
    }
    free(s->pp);
    if (s->block != NULL && !digest_eq(&s->d, d))
        keep_body(s, &s->d, s->pp_view, s->block, s->block_n); /* we voted for it */
    else
        free(s->block);
    if (bc == NULL) {
        uint32_t kn = 0;
        bc = take_body(s, d, &kn); /* re-proposed: a kept body becomes current again */
        block_n = kn;
    } else {
        uint32_t kn;
        free(take_body(s, d, &kn)); /* the current block is that body */
    }
    s->has_pp = true;
    s->resends = 0;
    s->pp_view = view;
    s->d = *d;
    s->pp = ppc;
    s->pp_n = (uint32_t)pp.n;
    s->block = bc;
    s->block_n = (uint32_t)block_n;
    s->prepared = false;
    s->sent_ms = r->now;
    s->pp_ms = r->now;
    if (view == r->view && s->seq > r->max_pp_seq)
        r->max_pp_seq = s->seq;
    if (bc != NULL && s->seq <= r->last_exec)
        mark_executed(r, bc, block_n); /* restored from the records: already executed */
    else if (bc != NULL)
        mark_inblock(r, bc, block_n);
    return true;
}

/* send_prepare: a backup's PREPARE for the slot's pre-prepare, persisted first. */
static void send_prepare(pbft_replica *r, struct slot *s)
{
    struct outmsg m = vote_msg(PBFT_MSG_PREPARE, s->pp_view, s->seq, &s->d);
    if (!build_frame(r, &m, &r->w))
        return;
    pbft_span own = {r->w.p, signed_len(&m, r->w.len)};
    vote_set(r, &s->prep[r->c.id], s->pp_view, &s->d, own);
    persist_log(r, s->seq, s->pp_view, PBFT_MSG_PREPARE, r->c.id, r->w.p, r->w.len);
    transmit(r, &m, r->w.p, r->w.len, PBFT_TO_ALL);
    r->st.prepares_sent++;
}

/* send_block sends one block (with its certificate, or an empty one for a body asked for by
 * digest) to a peer as a state-transfer reply. */
static void send_block(pbft_replica *r, uint16_t to, const uint8_t *blk, size_t n,
                       const pbft_list *cert)
{
    pbft_state_reply sr;
    pbft_state_reply_begin(&sr, r->c.id, PBFT_MAX_MSG_BYTES);
    if (pbft_state_reply_add(&sr, (pbft_span){blk, n}, cert) == 0) {
        pbft_state_reply_seal(&sr, r->c.chain, r->c.sk);
        struct outmsg m;
        memset(&m, 0, sizeof m);
        m.type = PBFT_MSG_STATE_REP;
        if (wbuf_ok(r, &sr.w))
            transmit(r, &m, sr.w.p, sr.w.len, to);
    }
    pbft_wbuf_free(&sr.w);
}

/* help_lagging: a peer still voting on a block we executed gets the commit certificate, so it
 * can commit by certificate instead of waiting for a view change. Rate-limited per slot. */
static void help_lagging(pbft_replica *r, uint64_t seq, uint16_t to)
{
    struct slot *s = find_slot(r, seq);
    if (s == NULL || !s->committed || s->cert == NULL || s->block == NULL ||
        r->now - s->help_ms < r->c.resend_ms)
        return;
    s->help_ms = r->now;
    /* The block with its frozen certificate, as a state-transfer reply: the peer verifies
     * and executes it whatever votes it holds. (Relaying the COMMITs one by one did not
     * work: a peer keeps only each sender's newest vote, and drops an older view's as stale
     * - found by the simulator, seed 4000830.) */
    pbft_list cert = {s->cert_count, {s->cert, s->cert_n}};
    send_block(r, to, s->block, s->block_n, &cert);
}

static void on_preprepare(pbft_replica *r, const pbft_env *e, const uint8_t *frame, size_t fn,
                          bool pre)
{
    pbft_vote v;
    if (pbft_vote_decode(e->body, &v) != PBFT_OK) {
        drop(r, PBFT_DROP_MALFORMED);
        return;
    }
    /* [OSDI §4.2] a backup accepts a pre-prepare if it is signed by the primary of the
     * current view, it is in that view, n is between the watermarks, and it has not accepted
     * a different pre-prepare for (v, n). */
    if (r->in_vc) {
        drop(r, PBFT_DROP_IN_VIEW_CHANGE);
        return;
    }
    if (v.view != r->view) {
        drop(r, PBFT_DROP_WRONG_VIEW);
        return;
    }
    if (e->sender != primary_of(r, v.view)) {
        drop(r, PBFT_DROP_NOT_PRIMARY);
        return;
    }
    if (v.seq <= r->last_exec) {
        drop(r, PBFT_DROP_STALE);
        return;
    }
    struct slot *s = get_slot(r, v.seq);
    if (s == NULL) {
        drop(r, PBFT_DROP_WATERMARK);
        return;
    }
    if (s->committed) {
        drop(r, PBFT_DROP_STALE);
        return;
    }
    if (s->has_pp && s->pp_view == v.view) {
        drop(r, digest_eq(&s->d, &v.d) ? PBFT_DROP_STALE : PBFT_DROP_CONFLICT);
        return;
    }
    pbft_block b;
    if (e->attach.n == 0 || !validate_block(r, e->attach.p, e->attach.n, v.seq, &v.d, pre, &b) ||
        b.view != v.view || b.proposer != e->sender) {
        drop(r, PBFT_DROP_BAD_BLOCK);
        return;
    }
    if (!accept_pp(r, s, v.view, &v.d, e->whole, e->attach.p, e->attach.n))
        return;
    /* Durability: the accepted pre-prepare and our PREPARE are on disk before it leaves. */
    persist_log(r, v.seq, v.view, PBFT_MSG_PREPREPARE, e->sender, frame, fn);
    send_prepare(r, s);
    update_req_timer(r, false);
    check_prepared(r, s);
}

static void on_prepare(pbft_replica *r, const pbft_env *e)
{
    pbft_vote v;
    if (pbft_vote_decode(e->body, &v) != PBFT_OK) {
        drop(r, PBFT_DROP_MALFORMED);
        return;
    }
    if (v.seq <= r->last_exec) {
        help_lagging(r, v.seq, e->sender);
        drop(r, PBFT_DROP_STALE);
        return;
    }
    if (r->in_vc) {
        drop(r, PBFT_DROP_IN_VIEW_CHANGE);
        return;
    }
    if (v.view != r->view) {
        drop(r, PBFT_DROP_WRONG_VIEW);
        return;
    }
    if (e->sender == primary_of(r, v.view)) {
        drop(r, PBFT_DROP_NOT_PRIMARY); /* the primary's pre-prepare is its prepare */
        return;
    }
    struct slot *s = get_slot(r, v.seq);
    if (s == NULL) {
        drop(r, PBFT_DROP_WATERMARK);
        return;
    }
    struct vote *old = &s->prep[e->sender];
    if (old->set && old->view == v.view) {
        drop(r, digest_eq(&old->d, &v.d) ? PBFT_DROP_STALE : PBFT_DROP_CONFLICT);
        return;
    }
    if (!vote_set(r, old, v.view, &v.d, e->whole)) {
        drop(r, PBFT_DROP_LIMIT);
        return;
    }
    check_prepared(r, s);
}

static void on_commit(pbft_replica *r, const pbft_env *e)
{
    pbft_vote v;
    if (pbft_vote_decode(e->body, &v) != PBFT_OK) {
        drop(r, PBFT_DROP_MALFORMED);
        return;
    }
    if (v.seq <= r->last_exec) {
        help_lagging(r, v.seq, e->sender);
        drop(r, PBFT_DROP_STALE);
        return;
    }
    /* COMMITs of the current or an earlier view are kept even during a view change: 2f+1 of
     * them for one (v, n, d) form a certificate whatever view we are in now. Future views are
     * not ours to judge yet. */
    if (v.view > r->view) {
        drop(r, PBFT_DROP_WRONG_VIEW);
        return;
    }
    struct slot *s = get_slot(r, v.seq);
    if (s == NULL) {
        drop(r, PBFT_DROP_WATERMARK);
        return;
    }
    struct vote *old = &s->com[e->sender];
    if (old->set && old->view >= v.view) {
        drop(r, old->view == v.view && !digest_eq(&old->d, &v.d) ? PBFT_DROP_CONFLICT
                                                                 : PBFT_DROP_STALE);
        return;
    }
    if (!vote_set(r, old, v.view, &v.d, e->whole)) {
        drop(r, PBFT_DROP_LIMIT);
        return;
    }
    check_committed(r, s, v.view, &v.d);
}

/* ------------------------------------------------------------------------------------------
 * Checkpoints and garbage collection [OSDI §4.3].
 * ----------------------------------------------------------------------------------------*/
static void state_digest(const pbft_digest *chain, const uint8_t app[32], pbft_digest *out)
{
    keys_sha256_ctx c;
    keys_sha256_init(&c);
    keys_sha256_update(&c, (const uint8_t *)"PBFT-CKP", 8);
    keys_sha256_update(&c, chain->b, 32);
    keys_sha256_update(&c, app, 32);
    keys_sha256_final(&c, out->b);
}

static struct ckslot *get_ck(pbft_replica *r, uint64_t seq)
{
    if (!in_window(r, seq) || seq % r->c.checkpoint_interval != 0)
        return NULL;
    uint32_t nck = r->c.window / r->c.checkpoint_interval;
    struct ckslot *k = &r->cks[(seq / r->c.checkpoint_interval) % nck];
    if (k->seq != seq) {
        for (uint16_t j = 0; j < r->c.n; j++) {
            vote_clear(&k->v[j]);
            /* A vote kept while seq was beyond the window moves in: it was sent once. */
            for (int i = 0; i < 2; i++) {
                struct vote *fv = &r->far[2 * j + i];
                if (fv->set && fv->view == seq) {
                    k->v[j] = *fv;
                    k->v[j].view = 0;
                    memset(fv, 0, sizeof *fv);
                }
            }
        }
        k->seq = seq;
    }
    return k;
}

/* make_stable: checkpoint seq with digest d and proof (a list region) is stable: advance the
 * low watermark and discard the log below it [OSDI §4.3]. */
static void make_stable(pbft_replica *r, uint64_t seq, const pbft_digest *d, const uint8_t *proof,
                        size_t proof_n)
{
    if (seq <= r->h)
        return;
    uint8_t *pc = dup_bytes(r, proof, proof_n);
    if (pc == NULL)
        return;
    free(r->stable_proof);
    r->stable_proof = pc;
    r->stable_proof_n = (uint32_t)proof_n;
    r->stable_d = *d;
    uint64_t old_h = r->h;
    r->h = seq;
    trace(r, PBFT_TRACE_CHECKPOINT, r->view, seq, -1, "checkpoint %llu stable",
          (unsigned long long)seq);
    for (uint64_t s = old_h + 1; s <= seq && s <= old_h + r->c.window; s++) {
        struct slot *sl = &r->slots[(s - 1) % r->c.window];
        if (sl->seq == s)
            slot_free(r, sl);
    }
    uint32_t nck = r->c.window / r->c.checkpoint_interval;
    for (uint32_t i = 0; i < nck; i++) {
        if (r->cks[i].seq != 0 && r->cks[i].seq <= seq) {
            for (uint16_t j = 0; j < r->c.n; j++)
                vote_clear(&r->cks[i].v[j]);
            r->cks[i].seq = 0;
        }
    }
    for (uint32_t i = 0; i < 2 * (uint32_t)r->c.n; i++)
        if (r->far[i].set && r->far[i].view <= seq)
            vote_clear(&r->far[i]);
    uint8_t key[PBFT_REC_KEY_BYTES];
    pbft_wbuf w = {0};
    pbft_wbuf_init(&w, 64 + proof_n);
    pbft_put_u64(&w, seq);
    pbft_put_bytes(&w, d->b, 32);
    pbft_put_bytes(&w, proof, proof_n);
    put_key(key, REC_STABLE, 0, 0, 0, 0);
    /* (If the record cannot be built, the step fails: the DEL_BELOW after it must not be
     * written without it, and finished() emits neither.) */
    if (wbuf_ok(r, &w))
        out_persist(r, PBFT_PERSIST_PUT, key, w.p, w.len);
    pbft_wbuf_free(&w);
    put_key(key, REC_LOG, seq, 0, 0, 0);
    out_persist(r, PBFT_PERSIST_DEL_BELOW, key, NULL, 0);
    if (r->next_seq <= seq)
        r->next_seq = seq + 1;
    if (r->max_pp_seq < seq)
        r->max_pp_seq = seq;
    if (r->last_exec < seq) {
        /* We are behind the stable checkpoint: fetch the blocks [TOCS §6.2]. */
        if (r->st_proven < seq)
            r->st_proven = seq;
        if (r->st_target < seq)
            r->st_target = seq;
        start_state_transfer(r);
    }
}

/* stable_if_quorum: v[j] is sender j's CHECKPOINT for seq (or NULL). If 2f+1 of them
 * name one digest, they are the proof: the checkpoint is stable [OSDI §4.3]. */
static void stable_if_quorum(pbft_replica *r, uint64_t seq, const struct vote *const *v)
{
    for (uint16_t a = 0; a < r->c.n; a++) {
        if (v[a] == NULL)
            continue;
        uint16_t count = 0;
        size_t total = 2;
        for (uint16_t j = 0; j < r->c.n; j++)
            if (v[j] != NULL && digest_eq(&v[j]->d, &v[a]->d)) {
                count++;
                total += 4 + v[j]->n;
            }
        if (count < r->q)
            continue;
        uint8_t *proof = arena_alloc(r, total);
        if (proof == NULL)
            return;
        size_t off = 0;
        proof[off++] = (uint8_t)(count >> 8);
        proof[off++] = (uint8_t)count;
        for (uint16_t j = 0; j < r->c.n; j++) {
            if (v[j] != NULL && digest_eq(&v[j]->d, &v[a]->d)) {
                proof[off++] = (uint8_t)(v[j]->n >> 24);
                proof[off++] = (uint8_t)(v[j]->n >> 16);
                proof[off++] = (uint8_t)(v[j]->n >> 8);
                proof[off++] = (uint8_t)v[j]->n;
                memcpy(proof + off, v[j]->frame, v[j]->n);
                off += v[j]->n;
            }
        }
        pbft_digest d = v[a]->d;
        make_stable(r, seq, &d, proof, total);
        return;
    }
}

static void check_stable(pbft_replica *r, struct ckslot *k)
{
    const struct vote *v[PBFT_MAX_N];
    for (uint16_t j = 0; j < r->c.n; j++)
        v[j] = k->v[j].set ? &k->v[j] : NULL;
    stable_if_quorum(r, k->seq, v);
}

/* on_far_checkpoint: a CHECKPOINT beyond our high watermark. A replica that was down or cut
 * off while the others moved more than a window on would drop every PRE-PREPARE and
 * CHECKPOINT they send and could only chase their head by state transfer, never voting
 * again (issue 12: a backup restarted under load ran 100+ transfers in 35 s and sent no
 * PREPARE). The paper's remedy is the same: a replica that learns of a stable checkpoint
 * beyond its window fetches the state and moves its watermarks there [TOCS §4.3, §6.2].
 * So each sender's two newest such CHECKPOINTs are kept (two, so a quorum still meets when
 * one sender is a checkpoint ahead of the others), and 2f+1 that agree make the
 * checkpoint stable here: the log below is discarded, the window moves, and the blocks up
 * to it come by state transfer while the replica votes on the slots after it. A Byzantine
 * sender can fill only its own two entries, and its votes alone never make a quorum. */
static void on_far_checkpoint(pbft_replica *r, const pbft_env *e, const pbft_ckpt *c)
{
    struct vote *fv = &r->far[2 * (size_t)e->sender];
    struct vote *slot = NULL;
    for (int i = 0; i < 2; i++)
        if (fv[i].set && fv[i].view == c->seq) {
            drop(r, digest_eq(&fv[i].d, &c->d) ? PBFT_DROP_STALE : PBFT_DROP_CONFLICT);
            return;
        }
    if (!fv[0].set)
        slot = &fv[0];
    else if (!fv[1].set)
        slot = &fv[1];
    else
        slot = fv[0].view < fv[1].view ? &fv[0] : &fv[1];
    if (slot->set && slot->view > c->seq) {
        drop(r, PBFT_DROP_STALE); /* older than both we keep of this sender */
        return;
    }
    if (!vote_set(r, slot, c->seq, &c->d, e->whole)) {
        drop(r, PBFT_DROP_LIMIT);
        return;
    }
    const struct vote *v[PBFT_MAX_N];
    for (uint16_t j = 0; j < r->c.n; j++) {
        v[j] = NULL;
        for (int i = 0; i < 2; i++)
            if (r->far[2 * j + i].set && r->far[2 * j + i].view == c->seq)
                v[j] = &r->far[2 * j + i];
    }
    stable_if_quorum(r, c->seq, v);
}

/* retarget recomputes how far state transfer should go. f+1 claims of height X include a
 * correct replica, so X is proven committed. A single claim is only a hint, but a cheap one
 * to check: we ask the claimer itself, and its commit certificates are the proof. A claimer
 * that then delivers nothing has its claim discounted (see on_tick) and is doubted: its
 * later single claims are ignored until it delivers a certified block, so a liar costs one
 * request, not one per claim it signs (each fresh inflated claim used to reopen the
 * transfer, and the replica stayed "catching up" for good). Returns the trusted replica
 * with the highest claim. */
/* nth_largest returns the (i+1)-th largest of v[0..k) (i < k), reordering v: with i = f,
 * the value that at least one correct replica's report reaches or exceeds. */
static uint64_t nth_largest(uint64_t *v, uint16_t k, uint16_t i)
{
    for (uint16_t a = 0; a <= i && a < k; a++) /* partial selection sort; k <= PBFT_MAX_N */
        for (uint16_t b = (uint16_t)(a + 1); b < k; b++)
            if (v[b] > v[a]) {
                uint64_t t = v[a];
                v[a] = v[b];
                v[b] = t;
            }
    return v[i];
}

static uint16_t retarget(pbft_replica *r)
{
    uint64_t top[PBFT_MAX_N];
    uint16_t k = 0, best_j = r->st_peer;
    uint64_t best = 0;
    for (uint16_t j = 0; j < r->c.n; j++) {
        if (j == r->c.id)
            continue;
        top[k++] = r->claims[j];
        if (r->claims[j] > best && !(r->st_doubt >> j & 1)) {
            best = r->claims[j];
            best_j = j;
        }
    }
    uint64_t proven = r->f < k ? nth_largest(top, k, r->f) : 0;
    if (proven > r->st_proven)
        r->st_proven = proven;
    r->st_target = best > r->st_proven ? best : r->st_proven;
    return best_j;
}

static void update_target(pbft_replica *r)
{
    uint16_t who = retarget(r);
    if (r->st_target > r->last_exec && !r->st_active && r->claims[who] > r->last_exec)
        r->st_peer = who; /* ask the replica that says it has the blocks */
    if (r->st_target > r->last_exec)
        start_state_transfer(r);
}

static void send_checkpoint(pbft_replica *r, uint64_t seq, const pbft_digest *sd)
{
    struct outmsg m;
    memset(&m, 0, sizeof m);
    m.type = PBFT_MSG_CHECKPOINT;
    m.ck.seq = seq;
    m.ck.d = *sd;
    if (!build_frame(r, &m, &r->w))
        return;
    struct ckslot *k = get_ck(r, seq);
    if (k != NULL)
        vote_set(r, &k->v[r->c.id], 0, sd, (pbft_span){r->w.p, signed_len(&m, r->w.len)});
    transmit(r, &m, r->w.p, r->w.len, PBFT_TO_ALL);
    if (seq > r->claim_sent)
        r->claim_sent = seq;
    if (k != NULL)
        check_stable(r, k);
}

static void on_executed(pbft_replica *r, uint64_t seq, const uint8_t app[32])
{
    if (seq <= r->last_applied || seq > r->last_exec)
        return;
    r->last_applied = seq;
    memcpy(r->app_hash, app, 32);
    if (seq % r->c.checkpoint_interval == 0 && seq + r->c.window > r->last_exec) {
        pbft_digest sd;
        state_digest(&r->chain_ring[seq % r->c.window], app, &sd);
        send_checkpoint(r, seq, &sd);
    }
}

static void on_checkpoint(pbft_replica *r, const pbft_env *e)
{
    pbft_ckpt c;
    if (pbft_ckpt_decode(e->body, &c) != PBFT_OK) {
        drop(r, PBFT_DROP_MALFORMED);
        return;
    }
    if (c.seq == 0) {
        drop(r, PBFT_DROP_STALE);
        return;
    }
    if (c.seq > r->claims[e->sender]) {
        r->claims[e->sender] = c.seq;
        update_target(r);
    }
    if (c.seq % r->c.checkpoint_interval != 0)
        return; /* an idle claim: only tells how far the sender executed */
    if (c.seq <= r->h) {
        drop(r, PBFT_DROP_STALE);
        return;
    }
    struct ckslot *k = get_ck(r, c.seq);
    if (k == NULL) {
        on_far_checkpoint(r, e, &c);
        return;
    }
    struct vote *old = &k->v[e->sender];
    if (old->set) {
        drop(r, digest_eq(&old->d, &c.d) ? PBFT_DROP_STALE : PBFT_DROP_CONFLICT);
        return;
    }
    if (!vote_set(r, old, 0, &c.d, e->whole)) {
        drop(r, PBFT_DROP_LIMIT);
        return;
    }
    check_stable(r, k);
}

/* ------------------------------------------------------------------------------------------
 * State transfer: blocks with their commit certificates, verified against the validator
 * keys, so a lying peer can make us waste a request but never accept a wrong block.
 * ----------------------------------------------------------------------------------------*/
static void send_state_req(pbft_replica *r, uint16_t to, uint64_t from, uint64_t upto,
                           const pbft_digest *d)
{
    uint8_t body[48];
    for (int i = 0; i < 8; i++) {
        body[i] = (uint8_t)(from >> (56 - 8 * i));
        body[8 + i] = (uint8_t)(upto >> (56 - 8 * i));
    }
    memcpy(body + 16, d->b, 32);
    struct outmsg m;
    memset(&m, 0, sizeof m);
    m.type = PBFT_MSG_STATE_REQ;
    m.body = body;
    m.body_n = sizeof body;
    send_new(r, &m, to);
}

static void st_request(pbft_replica *r)
{
    static const pbft_digest zero;
    uint64_t from = r->last_exec + 1;
    uint64_t upto = r->st_target;
    if (upto - from + 1 > r->c.max_state_blocks)
        upto = from + r->c.max_state_blocks - 1;
    send_state_req(r, r->st_peer, from, upto, &zero);
    r->st_deadline = r->now + r->c.state_retry_ms;
    r->st_delivered = false;
}

static void st_rotate(pbft_replica *r)
{
    r->st_peer = (uint16_t)((r->st_peer + 1) % r->c.n);
    if (r->st_peer == r->c.id)
        r->st_peer = (uint16_t)((r->st_peer + 1) % r->c.n);
}

static void st_done(pbft_replica *r)
{
    r->st_active = false;
    trace(r, PBFT_TRACE_STATE_DONE, r->view, r->last_exec, -1, "state transfer done: height %llu",
          (unsigned long long)r->last_exec);
}

/* st_move_on: the transfer's peer has given us all it claimed, yet the target (another
 * replica's claim) is still ahead: ask that claimer now, not at the next retry. A liar's
 * inflated claim is so put to the test within a round trip of the honest blocks: it used to
 * wait for the retry, and then for the retry after the liar's useless answer, 4 s in all
 * at the defaults, during which the replica counted as catching up (byzantine_bogus-state
 * under ASan). Returns whether it asked another peer. */
static bool st_move_on(pbft_replica *r)
{
    if (!r->st_active || r->last_exec >= r->st_target || r->claims[r->st_peer] > r->last_exec)
        return false;
    uint16_t who = retarget(r);
    if (who == r->st_peer || r->claims[who] <= r->last_exec)
        return false;
    r->st_peer = who;
    st_request(r);
    return true;
}

static void start_state_transfer(pbft_replica *r)
{
    if (r->st_active || r->st_target <= r->last_exec || !r->started)
        return;
    r->st_active = true;
    trace(r, PBFT_TRACE_STATE_START, r->view, r->last_exec, -1,
          "state transfer: executed %llu, target %llu", (unsigned long long)r->last_exec,
          (unsigned long long)r->st_target);
    st_request(r);
}

static void want_body(pbft_replica *r, struct slot *s, const pbft_digest *d)
{
    if (s->want_ms != 0 && r->now - s->want_ms < r->c.resend_ms)
        return;
    s->want_ms = r->now;
    send_state_req(r, PBFT_TO_ALL, s->seq, s->seq, d);
}

/* verify_commit_cert: 2f+1 distinct validators signed COMMIT(v, seq, d) for one view v. */
static bool verify_commit_cert(pbft_replica *r, const pbft_list *cert, uint64_t seq,
                               const pbft_digest *d, uint64_t *view)
{
    if (cert->count < r->q)
        return false;
    size_t off = 0;
    pbft_span m;
    bool first = true;
    while (pbft_list_next(cert, &off, &m)) {
        pbft_env e;
        pbft_vote v;
        if (pbft_signed_decode(m.p, m.n, PBFT_MSG_COMMIT, &e) != PBFT_OK || e.sender >= r->c.n ||
            pbft_vote_decode(e.body, &v) != PBFT_OK)
            return false;
        if (v.seq != seq || !digest_eq(&v.d, d) || (!first && v.view != *view))
            return false;
        *view = v.view;
        first = false;
        if (!verify_env(r, &e, false))
            return false;
    }
    return true;
}

static void on_state_rep(pbft_replica *r, const pbft_env *e)
{
    pbft_state_rep rep;
    if (pbft_state_rep_decode(e->body, &rep) != PBFT_OK) {
        drop(r, PBFT_DROP_MALFORMED);
        return;
    }
    size_t off = 0;
    pbft_span blk;
    pbft_list cert;
    bool useful = false;
    while (pbft_state_rep_next(&rep, &off, &blk, &cert)) {
        pbft_block b;
        if (pbft_block_decode(blk.p, blk.n, &b) != PBFT_OK) {
            drop(r, PBFT_DROP_BAD_STATE);
            break;
        }
        pbft_digest d;
        pbft_block_digest(&b, &d);
        if (cert.count == 0) {
            /* A body we asked for by digest (uncommitted, e.g. from a NEW-VIEW). */
            struct slot *s = find_slot(r, b.height);
            if (s == NULL || s->block != NULL || !digest_eq(&s->d, &d)) {
                drop(r, PBFT_DROP_STALE);
                continue;
            }
            pbft_block vb;
            if (!validate_block(r, blk.p, blk.n, b.height, &d, false, &vb)) {
                drop(r, PBFT_DROP_BAD_STATE);
                continue;
            }
            s->block = dup_bytes(r, blk.p, blk.n);
            s->block_n = s->block != NULL ? (uint32_t)blk.n : 0;
            if (s->block != NULL)
                mark_inblock(r, s->block, s->block_n);
            useful = true;
            try_execute(r);
            continue;
        }
        if (b.height <= r->last_exec)
            continue;
        if (b.height != r->last_exec + 1)
            break; /* a gap: the rest cannot be applied yet */
        uint64_t cview = 0;
        pbft_block vb;
        bool cert_ok = verify_commit_cert(r, &cert, b.height, &d, &cview);
        if (!cert_ok || !validate_block(r, blk.p, blk.n, b.height, &d, false, &vb)) {
            drop(r, PBFT_DROP_BAD_STATE);
            trace(r, PBFT_TRACE_REJECT, r->view, b.height, -1,
                  "state transfer from %u: block %llu %s", e->sender, (unsigned long long)b.height,
                  cert_ok ? "does not validate" : "has no valid commit certificate");
            /* This peer lies: forget its claim and retarget at once (the next tick asks
             * another claimer). Rotating first would have discounted the next peer instead
             * and kept coming back to the liar (found when the serving budget let the
             * lying peer of test_replica_state_transfer_lying_peers_rejected answer every
             * request). */
            if (r->claims[e->sender] > r->last_exec)
                r->claims[e->sender] = r->last_exec;
            r->st_doubt |= 1ull << e->sender;
            if (r->st_active && e->sender == r->st_peer)
                r->st_deadline = r->now;
            break;
        }
        struct slot *s = find_slot(r, b.height);
        uint8_t *frozen =
            s != NULL && !s->committed ? dup_bytes(r, cert.region.p, cert.region.n) : NULL;
        if (frozen != NULL) {
            free(s->cert);
            s->cert = frozen;
            s->cert_n = (uint32_t)cert.region.n;
            s->cert_count = cert.count;
            s->committed = true;
            s->cview = cview;
            s->cd = d;
        }
        execute(r, b.height, cview, &d, blk.p, blk.n, &cert);
        r->st.state_transfers++;
        r->st_doubt &= ~(1ull << e->sender); /* it delivers: trust its claims again */
        if (e->sender == r->st_peer)
            r->st_delivered = true;
        useful = true;
    }
    if (!useful)
        return;
    try_execute(r);
    if (r->st_active) {
        if (r->last_exec >= r->st_target)
            st_done(r);
        else if (e->sender == r->st_peer && !st_move_on(r))
            st_request(r); /* this peer helps: keep going */
    }
}

/* serve_budget grants a peer up to `want` blocks of state transfer and returns how many.
 * Each peer may have 4 * max_state_blocks blocks served per state_retry_ms / 16: enough for
 * a correct replica that chains range requests to catch up at thousands of blocks per
 * second, while bounding the disk reads and bytes any one peer can make us spend (a 48-byte
 * request can ask for a megabyte block). By-digest requests count one block each. */
static uint64_t serve_budget(pbft_replica *r, uint16_t peer, uint64_t want)
{
    uint64_t win = r->c.state_retry_ms / 16 > 0 ? r->c.state_retry_ms / 16 : 1;
    uint64_t budget = 4 * (uint64_t)r->c.max_state_blocks;
    if (r->now - r->serve_win[peer] >= win || r->serve_win[peer] == 0) {
        r->serve_win[peer] = r->now;
        r->serve_used[peer] = 0;
    }
    uint64_t left = budget - r->serve_used[peer];
    uint64_t grant = want < left ? want : left;
    r->serve_used[peer] += (uint32_t)grant;
    return grant;
}

static void on_state_req(pbft_replica *r, const pbft_env *e)
{
    pbft_state_req q;
    if (pbft_state_req_decode(e->body, &q) != PBFT_OK) {
        drop(r, PBFT_DROP_MALFORMED);
        return;
    }
    if (!digest_zero(&q.d)) {
        if (serve_budget(r, e->sender, 1) == 0) {
            drop(r, PBFT_DROP_LIMIT);
            return;
        }
        struct slot *s = find_slot(r, q.from_seq);
        uint32_t kn = 0;
        const uint8_t *kb = s != NULL ? find_body(s, &q.d, &kn) : NULL;
        if (kb != NULL && !(s->block != NULL && digest_eq(&s->d, &q.d))) {
            /* a kept body we voted for (not committed under this digest here) */
            pbft_list none = {0, {NULL, 0}};
            send_block(r, e->sender, kb, kn, &none);
            return;
        }
        if (s != NULL && s->block != NULL && digest_eq(&s->d, &q.d)) {
            pbft_list cert = {0, {NULL, 0}};
            if (s->committed) {
                cert.count = s->cert_count;
                cert.region.p = s->cert;
                cert.region.n = s->cert_n;
            }
            send_block(r, e->sender, s->block, s->block_n, &cert);
        } else if (q.from_seq <= r->last_exec) {
            out_serve(r, e->sender, q.from_seq, q.from_seq, &q.d);
        } else {
            drop(r, PBFT_DROP_STALE);
        }
        return;
    }
    if (q.from_seq > r->last_exec) {
        drop(r, PBFT_DROP_STALE);
        return;
    }
    uint64_t upto = q.to_seq < r->last_exec ? q.to_seq : r->last_exec;
    if (upto - q.from_seq + 1 > r->c.max_state_blocks)
        upto = q.from_seq + r->c.max_state_blocks - 1;
    uint64_t grant = serve_budget(r, e->sender, upto - q.from_seq + 1);
    if (grant == 0) {
        drop(r, PBFT_DROP_LIMIT);
        return;
    }
    upto = q.from_seq + grant - 1;
    static const pbft_digest zero;
    out_serve(r, e->sender, q.from_seq, upto, &zero);
}

/* ------------------------------------------------------------------------------------------
 * Client requests and batching.
 * ----------------------------------------------------------------------------------------*/
/* queue_head drops stale FIFO heads and returns the oldest queued entry, or NULL. */
static struct txent *queue_head(pbft_replica *r)
{
    while (r->fifo_len > 0) {
        struct txent *e = tx_find(r, &r->fifo[r->fifo_head]);
        if (e != NULL && e->state == TX_HELD && e->queued)
            return e;
        r->fifo_head = (r->fifo_head + 1) % r->fifo_cap;
        r->fifo_len--;
    }
    return NULL;
}

/* nv_bodies_missing: after a view change, is a block the NEW-VIEW re-proposed still without
 * its body here? Until it arrives the primary cannot know which transactions it carries,
 * and would propose them again (found by the simulator: the same transaction committed in
 * two blocks, the second failing its nonce check). */
static bool nv_bodies_missing(const pbft_replica *r)
{
    /* A stable checkpoint ahead of what we executed frees the slots below it: the blocks
     * there are known only to the state transfer that fetches them (seed 4000545). */
    if (r->last_exec < r->h)
        return true;
    if (r->nv_max_s <= r->last_exec)
        return false;
    for (uint64_t seq = r->last_exec + 1; seq <= r->nv_max_s; seq++) {
        const struct slot *s = &r->slots[(seq - 1) % r->c.window];
        /* A slot committed before the view change but whose body never came counts too:
         * install_newview skips committed slots (seed 4000259). */
        if (in_window(r, seq) && s->seq == seq && s->block == NULL &&
            (s->committed || (s->has_pp && s->pp_view == r->view)))
            return true;
    }
    return false;
}

static bool can_propose(const pbft_replica *r)
{
    return r->started && !r->in_vc && is_primary(r) && in_window(r, r->next_seq) &&
           r->next_seq - r->last_exec - 1 < r->c.max_inflight && !nv_bodies_missing(r);
}

/* try_propose: the primary cuts blocks while it may (watermarks, in-flight bound) and a
 * block is due: full by count or bytes, or its oldest transaction waited block_interval. */
static uint64_t try_propose(pbft_replica *r)
{
    while (can_propose(r)) {
        struct txent *head = queue_head(r);
        if (head == NULL)
            return NONE;
        uint32_t n = r->q_count < r->c.max_block_txs ? r->q_count : r->c.max_block_txs;
        bool full = r->q_count >= r->c.max_block_txs ||
                    r->q_bytes + PBFT_BLOCK_HEADER_BYTES >= r->c.max_block_bytes;
        if (!full && r->now < head->arrival_ms + r->c.block_interval_ms)
            return head->arrival_ms + r->c.block_interval_ms;

        pbft_span *txs = r_malloc(r, n * sizeof *txs);
        if (txs == NULL)
            return NONE;
        uint32_t k = 0;
        size_t size = PBFT_BLOCK_HEADER_BYTES;
        while (k < n && r->fifo_len > 0) {
            pbft_digest h = r->fifo[r->fifo_head];
            struct txent *e = tx_find(r, &h);
            if (e == NULL || e->state != TX_HELD || !e->queued) {
                r->fifo_head = (r->fifo_head + 1) % r->fifo_cap;
                r->fifo_len--;
                continue;
            }
            if (size + 4 + e->n > r->c.max_block_bytes && k > 0)
                break;
            txs[k].p = e->tx;
            txs[k].n = e->n;
            size += 4 + e->n;
            unqueue(r, e);
            e->inblock = true;
            k++;
            r->fifo_head = (r->fifo_head + 1) % r->fifo_cap;
            r->fifo_len--;
        }
        uint8_t *blk = r_malloc(r, size);
        size_t blk_n = 0;
        if (blk == NULL ||
            pbft_block_encode(r->next_seq, r->view, r->c.id, r->wall != 0 ? r->wall : r->now, txs,
                              k, blk, size, &blk_n) != PBFT_OK) {
            free(txs);
            free(blk);
            return NONE;
        }
        free(txs);
        pbft_block b;
        pbft_digest d;
        if (pbft_block_decode(blk, blk_n, &b) != PBFT_OK) {
            free(blk);
            return NONE;
        }
        pbft_block_digest(&b, &d);
        uint64_t seq = r->next_seq;
        struct slot *s = get_slot(r, seq);
        assert(s != NULL && !(s->has_pp && s->pp_view == r->view));
        struct outmsg m = vote_msg(PBFT_MSG_PREPREPARE, r->view, seq, &d);
        m.attach = blk;
        m.attach_n = blk_n;
        if (!build_frame(r, &m, &r->w)) {
            free(blk);
            return NONE;
        }
        pbft_span pp = {r->w.p, signed_len(&m, r->w.len)};
        if (!accept_pp(r, s, r->view, &d, pp, blk, blk_n)) {
            free(blk);
            return NONE;
        }
        r->next_seq++;
        /* [OSDI §4.2] the primary logs its pre-prepare; durable before it is multicast. */
        persist_log(r, seq, r->view, PBFT_MSG_PREPREPARE, r->c.id, r->w.p, r->w.len);
        transmit(r, &m, r->w.p, r->w.len, PBFT_TO_ALL);
        free(blk);
        update_req_timer(r, false);
    }
    return NONE;
}

static void send_request_to(pbft_replica *r, uint16_t to, const uint8_t *tx, size_t n)
{
    uint8_t *body = arena_alloc(r, 4 + n);
    if (body == NULL)
        return;
    body[0] = (uint8_t)(n >> 24);
    body[1] = (uint8_t)(n >> 16);
    body[2] = (uint8_t)(n >> 8);
    body[3] = (uint8_t)n;
    memcpy(body + 4, tx, n);
    struct outmsg m;
    memset(&m, 0, sizeof m);
    m.type = PBFT_MSG_REQUEST;
    m.body = body;
    m.body_n = 4 + n;
    send_new(r, &m, to);
}

/* accept_tx admits a transaction into the pool: bounded, deduplicated, signature checked.
 * A backup forwards a client's transaction to the other replicas and watches it: if it is not
 * committed in time the request timer fires and the view changes [OSDI §4.4]. */
static int accept_tx(pbft_replica *r, const uint8_t *p, size_t n, bool pre, bool from_client)
{
    if (n > PBFT_MAX_TX_BYTES)
        return PBFT_REQ_TOO_LARGE;
    pbft_tx tx;
    if (pbft_tx_decode(p, n, &tx) != PBFT_OK)
        return PBFT_REQ_MALFORMED;
    pbft_digest h;
    pbft_tx_hash(p, n, &h);
    struct txent *known = tx_find(r, &h);
    if (known != NULL && known->state != TX_INFLIGHT)
        return PBFT_REQ_DUPLICATE;
    if (r->held >= r->c.max_pending_txs || r->held_bytes + n > r->c.max_pending_bytes)
        return PBFT_REQ_FULL;
    if (!pre) {
        r->st.sig_verifies++;
        if (!pbft_tx_verify(&tx, r->c.chain))
            return PBFT_REQ_BAD_SIGNATURE;
    }
    uint8_t *c = dup_bytes(r, p, n);
    if (c == NULL)
        return PBFT_REQ_FULL;
    /* In a block in flight already: held from now on, but not proposed again unless a
     * NEW-VIEW drops that block (install_newview clears inblock). */
    bool inblock = known != NULL;
    if (inblock)
        tx_remove(r, known);
    struct txent *e = tx_insert(r, &h);
    e->inblock = inblock;
    e->state = TX_HELD;
    e->tx = c;
    e->n = (uint32_t)n;
    e->arrival_ms = r->now;
    e->arrival_no = r->arrivals++;
    r->held++;
    r->held_bytes += n;
    if (is_primary(r) && !r->in_vc) {
        enqueue_tx(r, e);
    } else if (from_client) {
        /* To every replica, not only the primary: then every correct backup watches it, and
         * a primary that censors it is timed out by 2f+1 of them together. During a view
         * change too: the next primary, whichever it is, then holds one client's
         * transactions in the order this replica took them, and proposes them in that order
         * (install_newview). Held back until the new view, they raced the client's newer
         * ones there and failed bad_nonce (docs/security.md, finding 16). Monitoring starts
         * with the view (do_resend). */
        e->fwd_ms = r->now;
        send_request_to(r, PBFT_TO_ALL, p, n);
        if (!r->in_vc)
            mon_forwarded(r, e);
    }
    update_req_timer(r, false);
    return PBFT_REQ_ACCEPTED;
}

static void on_request_msg(pbft_replica *r, const pbft_env *e, bool pre)
{
    pbft_span tx;
    if (pbft_request_decode(e->body, &tx) != PBFT_OK) {
        drop(r, PBFT_DROP_MALFORMED);
        return;
    }
    int rc = accept_tx(r, tx.p, tx.n, pre, false);
    if (rc == PBFT_REQ_BAD_SIGNATURE || rc == PBFT_REQ_MALFORMED || rc == PBFT_REQ_TOO_LARGE)
        drop(r, PBFT_DROP_BAD_BLOCK);
    else if (rc == PBFT_REQ_FULL)
        drop(r, PBFT_DROP_LIMIT);
    else if (rc == PBFT_REQ_DUPLICATE)
        drop(r, PBFT_DROP_STALE);
}

/* ------------------------------------------------------------------------------------------
 * View changes [OSDI §4.4], liveness rules [TOCS §4.5.2].
 * ----------------------------------------------------------------------------------------*/
static void persist_meta(pbft_replica *r)
{
    uint8_t key[PBFT_REC_KEY_BYTES];
    put_key(key, REC_META, 0, 0, 0, 0);
    uint32_t vn = r->in_vc ? r->my_vc_n : 0;
    size_t n = 13 + vn;
    uint8_t *v = arena_alloc(r, n);
    if (v == NULL)
        return;
    for (int i = 0; i < 8; i++)
        v[i] = (uint8_t)(r->view >> (56 - 8 * i));
    v[8] = r->in_vc ? 1 : 0;
    v[9] = (uint8_t)(vn >> 24);
    v[10] = (uint8_t)(vn >> 16);
    v[11] = (uint8_t)(vn >> 8);
    v[12] = (uint8_t)vn;
    if (vn > 0)
        memcpy(v + 13, r->my_vc, vn);
    out_persist(r, PBFT_PERSIST_PUT, key, v, n);
}

/* verify_vc checks a VIEW-CHANGE's checkpoint proof and prepared certificates: every
 * embedded signature, the quorum sizes, the primaries and the watermark bounds. */
static bool verify_vc(pbft_replica *r, const pbft_viewchange *vc)
{
    uint32_t K = r->c.checkpoint_interval;
    if (vc->stable_seq % K != 0)
        return false;
    if (vc->stable_seq == 0) {
        if (vc->ckpts.count != 0 || memcmp(vc->stable_d.b, r->c.genesis, 32) != 0)
            return false;
    } else {
        if (vc->ckpts.count < r->q)
            return false;
        size_t off = 0;
        pbft_span m;
        while (pbft_list_next(&vc->ckpts, &off, &m)) {
            pbft_env e;
            pbft_ckpt c;
            if (pbft_signed_decode(m.p, m.n, PBFT_MSG_CHECKPOINT, &e) != PBFT_OK ||
                e.sender >= r->c.n || pbft_ckpt_decode(e.body, &c) != PBFT_OK ||
                c.seq != vc->stable_seq || !digest_eq(&c.d, &vc->stable_d) ||
                !verify_env(r, &e, false))
                return false;
        }
    }
    size_t off = 0;
    pbft_span pp;
    pbft_list preps;
    while (pbft_vc_next_pcert(vc, &off, &pp, &preps)) {
        pbft_env e;
        pbft_vote v;
        if (pbft_signed_decode(pp.p, pp.n, PBFT_MSG_PREPREPARE, &e) != PBFT_OK ||
            e.sender >= r->c.n || pbft_vote_decode(e.body, &v) != PBFT_OK)
            return false;
        if (e.sender != primary_of(r, v.view) || v.view >= vc->new_view ||
            v.seq <= vc->stable_seq || v.seq - vc->stable_seq > r->c.window ||
            preps.count + 1 < r->q || !verify_env(r, &e, false))
            return false;
        size_t o2 = 0;
        pbft_span pm;
        while (pbft_list_next(&preps, &o2, &pm)) {
            pbft_env pe;
            pbft_vote pv;
            if (pbft_signed_decode(pm.p, pm.n, PBFT_MSG_PREPARE, &pe) != PBFT_OK ||
                pe.sender >= r->c.n || pe.sender == e.sender ||
                pbft_vote_decode(pe.body, &pv) != PBFT_OK || pv.view != v.view || pv.seq != v.seq ||
                !digest_eq(&pv.d, &v.d) || !verify_env(r, &pe, false))
                return false;
        }
    }
    return true;
}

/* The O computation [OSDI §4.4]: min-s is the latest stable checkpoint in V, max-s the
 * highest prepared sequence number; each n in between gets the digest prepared in the highest
 * view, or the null request. Shared by the new primary and the backups that check it. */
struct ocalc {
    uint64_t min_s, max_s;
    pbft_digest min_d;
    pbft_span proof;     /* the checkpoint proof list region (with count) for min_s */
    uint64_t *best_view; /* window entries, index seq - min_s - 1 */
    pbft_digest *best_d;
    bool *has;
};

static bool compute_o(pbft_replica *r, const pbft_span *vcs, uint16_t nvc, struct ocalc *o)
{
    o->min_s = 0;
    o->max_s = 0;
    memcpy(o->min_d.b, r->c.genesis, 32);
    o->proof.p = NULL;
    o->proof.n = 0;
    memset(o->has, 0, r->c.window * sizeof *o->has);
    for (uint16_t i = 0; i < nvc; i++) {
        pbft_env e;
        pbft_viewchange vc;
        if (pbft_signed_decode(vcs[i].p, vcs[i].n, PBFT_MSG_VIEWCHANGE, &e) != PBFT_OK ||
            pbft_viewchange_decode(e.body, &vc) != PBFT_OK)
            return false;
        if (vc.stable_seq > o->min_s || (i == 0 && vc.stable_seq == 0)) {
            o->min_s = vc.stable_seq;
            o->min_d = vc.stable_d;
            o->proof.p = vc.ckpts.region.p - 2; /* include the count */
            o->proof.n = vc.ckpts.region.n + 2;
        }
    }
    o->max_s = o->min_s;
    for (uint16_t i = 0; i < nvc; i++) {
        pbft_env e;
        pbft_viewchange vc;
        if (pbft_signed_decode(vcs[i].p, vcs[i].n, PBFT_MSG_VIEWCHANGE, &e) != PBFT_OK ||
            pbft_viewchange_decode(e.body, &vc) != PBFT_OK)
            return false;
        size_t off = 0;
        pbft_span pp;
        pbft_list preps;
        while (pbft_vc_next_pcert(&vc, &off, &pp, &preps)) {
            pbft_env pe;
            pbft_vote v;
            if (pbft_signed_decode(pp.p, pp.n, PBFT_MSG_PREPREPARE, &pe) != PBFT_OK ||
                pbft_vote_decode(pe.body, &v) != PBFT_OK)
                return false;
            if (v.seq <= o->min_s)
                continue;
            if (v.seq - o->min_s > r->c.window)
                return false; /* cannot happen for verified VIEW-CHANGEs */
            uint64_t idx = v.seq - o->min_s - 1;
            if (!o->has[idx] || v.view > o->best_view[idx]) {
                o->has[idx] = true;
                o->best_view[idx] = v.view;
                o->best_d[idx] = v.d;
            }
            if (v.seq > o->max_s)
                o->max_s = v.seq;
        }
    }
    return true;
}

static void check_vc_quorum(pbft_replica *r);
static void nv_hand_over(pbft_replica *r, uint16_t to);
static void start_view_change(pbft_replica *r, uint64_t v, int reason);

static int cmp_arrival(const void *a, const void *b)
{
    const struct txent *x = *(const struct txent *const *)a, *y = *(const struct txent *const *)b;
    return x->arrival_no < y->arrival_no ? -1 : x->arrival_no > y->arrival_no;
}

/* install_newview enters view `view` with the O set (seq, digest, signed pre-prepare). */
static void install_newview(pbft_replica *r, const struct ocalc *o, const pbft_span *pps)
{
    r->in_vc = false;
    r->view_entered_ms = r->now;
    r->vc_deadline = NONE;
    r->max_pp_seq = 0;
    persist_meta(r);
    if (o->min_s > r->h && o->proof.p != NULL)
        make_stable(r, o->min_s, &o->min_d, o->proof.p, o->proof.n);
    /* The blocks in flight are the O set's now: forget the old ones' transactions. Removal
     * shifts a later entry into slot i, so i is looked at again. */
    for (uint32_t i = 0; i < r->tx_cap;) {
        if (r->tx[i].state == TX_INFLIGHT) {
            tx_remove(r, &r->tx[i]);
            continue;
        }
        r->tx[i].inblock = false;
        i++;
    }
    /* Committed blocks not executed yet still carry their transactions: the new primary
     * must not propose those again (found by the simulator, seed 4000014). The O set's
     * blocks are marked as their pre-prepares are installed below. */
    for (uint64_t seq = r->last_exec + 1; seq <= r->h + r->c.window; seq++) {
        struct slot *cs = find_slot(r, seq);
        if (cs != NULL && cs->committed && cs->block != NULL)
            mark_inblock(r, cs->block, cs->block_n);
    }

    for (uint64_t seq = o->min_s + 1; seq <= o->max_s; seq++) {
        pbft_span pp = pps[seq - o->min_s - 1];
        pbft_env e;
        pbft_vote v;
        if (pbft_signed_decode(pp.p, pp.n, PBFT_MSG_PREPREPARE, &e) != PBFT_OK ||
            pbft_vote_decode(e.body, &v) != PBFT_OK)
            continue; /* checked by the caller */
        if (seq <= r->last_exec) {
            r->max_pp_seq = seq;
            continue;
        }
        struct slot *s = get_slot(r, seq);
        if (s == NULL || s->committed)
            continue;
        /* The body: the block we hold for this digest, the null block, or fetch it. */
        const uint8_t *blk = NULL;
        size_t blk_n = 0;
        uint32_t kept_n = 0;
        pbft_span nb;
        pbft_digest nd;
        if (s->block != NULL && digest_eq(&s->d, &v.d)) {
            blk = s->block;
            blk_n = s->block_n;
        } else if (find_body(s, &v.d, &kept_n) != NULL) {
            blk = find_body(s, &v.d, &kept_n);
            blk_n = kept_n;
        } else if (null_block(r, seq, r->view, &nb, &nd) && digest_eq(&nd, &v.d)) {
            blk = nb.p;
            blk_n = nb.n;
        }
        uint8_t *keep = blk != NULL ? dup_bytes(r, blk, blk_n) : NULL; /* blk may be s->block */
        if (!accept_pp(r, s, r->view, &v.d, pp, keep, blk_n)) {
            free(keep);
            continue;
        }
        free(keep);
        /* Log the pre-prepare (with its body when known) before our PREPARE leaves. */
        size_t fn = pp.n + 4 + (s->block != NULL ? s->block_n : 0);
        uint8_t *f = arena_alloc(r, fn);
        if (f != NULL) {
            memcpy(f, pp.p, pp.n);
            uint32_t an = s->block != NULL ? s->block_n : 0;
            f[pp.n] = (uint8_t)(an >> 24);
            f[pp.n + 1] = (uint8_t)(an >> 16);
            f[pp.n + 2] = (uint8_t)(an >> 8);
            f[pp.n + 3] = (uint8_t)an;
            if (an > 0)
                memcpy(f + pp.n + 4, s->block, an);
            persist_log(r, seq, r->view, PBFT_MSG_PREPREPARE, e.sender, f, fn);
        }
        if (!is_primary(r))
            send_prepare(r, s);
        if (s->block == NULL)
            want_body(r, s, &v.d);
        check_prepared(r, s);
    }
    if (r->max_pp_seq < o->max_s)
        r->max_pp_seq = o->max_s;
    uint64_t base = o->max_s > r->h ? o->max_s : r->h;
    if (base < r->last_exec)
        base = r->last_exec;
    r->next_seq = base + 1;

    /* The new primary proposes every transaction it holds that no O block carries, in the
     * order it admitted them: first come, first served across the view change too (backups'
     * monitoring expects it, docs/protocol.md section 8), and one client's burst keeps its
     * nonce order (qsort is not stable, and a burst shares one arrival_ms). */
    if (is_primary(r)) {
        struct txent **order = r_malloc(r, (r->held > 0 ? r->held : 1) * sizeof *order);
        uint32_t k = 0;
        for (uint32_t i = 0; i < r->tx_cap; i++) {
            struct txent *t = &r->tx[i];
            if (t->state != TX_HELD || t->inblock)
                continue;
            if (order != NULL && k < r->held)
                order[k++] = t;
            else
                enqueue_tx(r, t); /* no memory for the order: table order */
        }
        if (order != NULL) {
            qsort(order, k, sizeof *order, cmp_arrival);
            for (uint32_t i = 0; i < k; i++)
                enqueue_tx(r, order[i]);
            free(order);
        }
    }
    r->req_deadline = NONE;
    update_req_timer(r, true);
    if (o->min_s > r->last_exec) {
        if (r->st_proven < o->min_s)
            r->st_proven = o->min_s;
        if (r->st_target < o->min_s)
            r->st_target = o->min_s;
        start_state_transfer(r);
    }
    try_execute(r);
}

/* byz_forge_newview: a Byzantine new primary (the PBFT_BYZ_NEWVIEW_* modes) forges the O
 * set, the VIEW-CHANGE list or the view of the NEW-VIEW it is about to build. It installs the
 * forgery itself, so its own votes back its claim, which is the strongest form of the lie.
 * Each forgery is one that on_newview must refuse; a forgery that has nothing to act on (no
 * prepared certificate to omit) leaves the NEW-VIEW honest and is not counted. */
static void byz_forge_newview(pbft_replica *r, struct ocalc *o, pbft_span *vcs, uint16_t *nvc,
                              uint64_t *claim_view)
{
    pbft_byz *b = r->byz;
    if (b == NULL || !b->active || !pbft_byz_forges_newview(b->c.mode))
        return;
    uint64_t span = o->max_s - o->min_s, prep = NONE, null = NONE;
    for (uint64_t i = 0; i < span; i++) {
        if (o->has[i] && prep == NONE)
            prep = i;
        if (!o->has[i] && null == NONE)
            null = i;
    }
    switch (b->c.mode) {
    case PBFT_BYZ_NEWVIEW_OMIT:
        if (prep == NONE)
            return;
        o->has[prep] = false; /* the null request takes its place */
        break;
    case PBFT_BYZ_NEWVIEW_DIGEST:
        if (prep == NONE)
            return;
        o->best_d[prep].b[0] ^= 0x5a;
        break;
    case PBFT_BYZ_NEWVIEW_INVENT: {
        uint64_t i = null != NONE ? null : span;
        pbft_span nb;
        pbft_digest d;
        if (i >= r->c.window || !null_block(r, o->min_s + 1 + i, r->view, &nb, &d))
            return;
        if (i == span)
            o->max_s++;
        d.b[31] ^= 0x01; /* not the null request: a block no VIEW-CHANGE prepared */
        o->has[i] = true;
        o->best_view[i] = r->view;
        o->best_d[i] = d;
        break;
    }
    case PBFT_BYZ_NEWVIEW_FEW:
        if (*nvc == 0)
            return;
        (*nvc)--;
        break;
    case PBFT_BYZ_NEWVIEW_DUP:
        if (*nvc < 2)
            return;
        vcs[*nvc - 1] = vcs[0];
        break;
    case PBFT_BYZ_NEWVIEW_VIEW:
        *claim_view = r->view + r->c.n; /* the next view whose primary it is too */
        break;
    default:
        return;
    }
    b->actions++;
}

/* make_newview: the primary of `view` holds 2f+1 VIEW-CHANGEs for it [OSDI §4.4]. */
static void make_newview(pbft_replica *r)
{
    pbft_span vcs[PBFT_MAX_N];
    uint16_t nvc = 0;
    for (uint16_t j = 0; j < r->c.n && nvc < r->q; j++)
        if (r->vcs[j].set && r->vcs[j].view == r->view) {
            vcs[nvc].p = r->vcs[j].msg;
            vcs[nvc].n = r->vcs[j].n;
            nvc++;
        }
    if (nvc < r->q)
        return;
    struct ocalc o;
    o.best_view = r_calloc(r, r->c.window, sizeof *o.best_view);
    o.best_d = r_calloc(r, r->c.window, sizeof *o.best_d);
    o.has = r_calloc(r, r->c.window, sizeof *o.has);
    pbft_span *pps = r_calloc(r, r->c.window, sizeof *pps);
    pbft_wbuf body = {0};
    pbft_wbuf_init(&body, PBFT_MAX_MSG_BYTES);
    if (o.best_view == NULL || o.best_d == NULL || o.has == NULL || pps == NULL ||
        !compute_o(r, vcs, nvc, &o)) {
        trace(r, PBFT_TRACE_REJECT, r->view, 0, -1, "NEW-VIEW: cannot compute O");
        goto done;
    }
    uint64_t claim_view = r->view;
    byz_forge_newview(r, &o, vcs, &nvc, &claim_view);

    pbft_put_u64(&body, claim_view);
    pbft_put_u16(&body, nvc);
    for (uint16_t i = 0; i < nvc; i++)
        pbft_put_elem(&body, vcs[i].p, vcs[i].n);
    pbft_put_u16(&body, (uint16_t)(o.max_s - o.min_s));
    for (uint64_t seq = o.min_s + 1; seq <= o.max_s; seq++) {
        uint64_t idx = seq - o.min_s - 1;
        pbft_digest d;
        pbft_span nb;
        if (o.has[idx])
            d = o.best_d[idx];
        else if (!null_block(r, seq, r->view, &nb, &d)) {
            trace(r, PBFT_TRACE_REJECT, r->view, seq, -1, "NEW-VIEW: cannot build a null block");
            goto done;
        }
        struct outmsg m = vote_msg(PBFT_MSG_PREPREPARE, r->view, seq, &d);
        if (!build_frame(r, &m, &r->w)) {
            trace(r, PBFT_TRACE_REJECT, r->view, seq, -1, "NEW-VIEW: cannot sign a pre-prepare");
            goto done;
        }
        size_t sl = signed_len(&m, r->w.len);
        pbft_put_elem(&body, r->w.p, sl);
        uint8_t *c = arena_dup(r, r->w.p, sl);
        if (c == NULL)
            goto done;
        pps[idx].p = c;
        pps[idx].n = sl;
    }
    if (!wbuf_ok(r, &body)) {
        trace(r, PBFT_TRACE_REJECT, r->view, 0, -1, "NEW-VIEW: body over %zu bytes", body.limit);
        goto done;
    }
    struct outmsg m;
    memset(&m, 0, sizeof m);
    m.type = PBFT_MSG_NEWVIEW;
    m.body = body.p;
    m.body_n = body.len;
    if (!build_frame(r, &m, &r->w)) {
        trace(r, PBFT_TRACE_REJECT, r->view, 0, -1, "NEW-VIEW: cannot sign (%zu-byte body)",
              body.len);
        goto done;
    }
    free(r->nv);
    r->nv = dup_bytes(r, r->w.p, r->w.len);
    r->nv_n = r->nv != NULL ? (uint32_t)r->w.len : 0;
    r->nv_max_s = o.max_s;
    /* Install (and persist) first, then send: persist-before-send. */
    uint8_t *frame = arena_dup(r, r->w.p, r->w.len);
    size_t fn = r->w.len;
    install_newview(r, &o, pps);
    trace(r, PBFT_TRACE_NEW_VIEW_SENT, r->view, o.min_s, -1,
          "sent NEW-VIEW for view %llu: min-s %llu, max-s %llu, %u view-changes",
          (unsigned long long)r->view, (unsigned long long)o.min_s, (unsigned long long)o.max_s,
          nvc);
    if (frame != NULL)
        transmit(r, &m, frame, fn, PBFT_TO_ALL);
done:
    pbft_wbuf_free(&body);
    free(o.best_view);
    free(o.best_d);
    free(o.has);
    free(pps);
}

static void check_vc_quorum(pbft_replica *r)
{
    if (!r->in_vc)
        return;
    uint16_t exact = 0, at_least = 0;
    for (uint16_t j = 0; j < r->c.n; j++) {
        if (!r->vcs[j].set || r->vcs[j].view < r->view)
            continue;
        at_least++;
        if (r->vcs[j].view == r->view)
            exact++;
    }
    /* [TOCS §4.5.2] with 2f+1 VIEW-CHANGEs for v, wait T for the NEW-VIEW. We start the
     * timer when 2f+1 replicas are at views >= v: one that already moved on to v+1 keeps
     * only its newest VIEW-CHANGE here, and counting only exact matches then left honest
     * replicas split between v and v+1 with no timer running (found by the simulator). */
    if (at_least >= r->q && r->vc_deadline == NONE)
        r->vc_deadline = r->now + r->T;
    /* The NEW-VIEW itself needs 2f+1 VIEW-CHANGEs for exactly this view [OSDI §4.4]. */
    if (exact >= r->q && primary_of(r, r->view) == r->c.id && r->nv == NULL)
        make_newview(r);
}

static void start_view_change(pbft_replica *r, uint64_t v, int reason)
{
    assert(v > r->view || (v == r->view && !r->in_vc));
    r->st.view_changes[reason]++;
    trace(r, PBFT_TRACE_VIEW_CHANGE, v, r->last_exec, reason,
          "view change to %llu (%s), timeout %u ms", (unsigned long long)v,
          pbft_vc_reason_name(reason), r->T);
    r->view = v;
    r->in_vc = true;
    r->vc_sent_ms = r->now;
    r->vc_resends = 0;
    r->req_deadline = NONE;
    r->vc_deadline = NONE;
    free(r->nv);
    r->nv = NULL;
    r->nv_n = 0;

    /* VIEW-CHANGE(v+1, n, C, P, i) [OSDI §4.4]. */
    pbft_wbuf body = {0};
    pbft_wbuf_init(&body, PBFT_MAX_MSG_BYTES);
    pbft_put_u64(&body, v);
    pbft_put_u64(&body, r->h);
    pbft_put_bytes(&body, r->stable_d.b, 32);
    if (r->h == 0 || r->stable_proof == NULL)
        pbft_put_u16(&body, 0);
    else
        pbft_put_bytes(&body, r->stable_proof, r->stable_proof_n);
    uint16_t np = 0;
    size_t np_off = body.len;
    pbft_put_u16(&body, 0);
    for (uint64_t seq = r->h + 1; seq <= r->h + r->c.window; seq++) {
        struct slot *s = find_slot(r, seq);
        if (s != NULL && s->has_pc) {
            pbft_put_bytes(&body, s->pc, s->pc_n);
            np++;
        }
    }
    if (wbuf_ok(r, &body)) {
        body.p[np_off] = (uint8_t)(np >> 8);
        body.p[np_off + 1] = (uint8_t)np;
    }
    struct outmsg m;
    memset(&m, 0, sizeof m);
    m.type = PBFT_MSG_VIEWCHANGE;
    m.body = body.p;
    m.body_n = body.len;
    if (body.err == 0 && build_frame(r, &m, &r->w)) {
        size_t sl = signed_len(&m, r->w.len);
        free(r->my_vc);
        r->my_vc = dup_bytes(r, r->w.p, sl);
        r->my_vc_n = r->my_vc != NULL ? (uint32_t)sl : 0;
        if (r->my_vc != NULL) {
            free(r->vcs[r->c.id].msg);
            r->vcs[r->c.id].set = true;
            r->vcs[r->c.id].view = v;
            r->vcs[r->c.id].msg = dup_bytes(r, r->my_vc, r->my_vc_n);
            r->vcs[r->c.id].n = r->vcs[r->c.id].msg != NULL ? r->my_vc_n : 0;
            if (r->vcs[r->c.id].msg == NULL)
                r->vcs[r->c.id].set = false;
        }
        persist_meta(r); /* the promise (view, VIEW-CHANGE) is durable before it leaves */
        transmit(r, &m, r->w.p, r->w.len, PBFT_TO_ALL);
    }
    pbft_wbuf_free(&body);
    check_vc_quorum(r);
}

/* check_join [TOCS §4.5.2]: f+1 valid VIEW-CHANGEs for views above ours mean a correct
 * replica wants to move: join the smallest of those views. */
static void check_join(pbft_replica *r)
{
    uint16_t count = 0;
    uint64_t minv = NONE;
    for (uint16_t j = 0; j < r->c.n; j++) {
        if (j == r->c.id || !r->vcs[j].set || r->vcs[j].view <= r->view)
            continue;
        count++;
        if (r->vcs[j].view < minv)
            minv = r->vcs[j].view;
    }
    if (count > r->f)
        start_view_change(r, minv, PBFT_VC_JOINED);
}

static void on_viewchange(pbft_replica *r, const pbft_env *e)
{
    pbft_viewchange vc;
    if (pbft_viewchange_decode(e->body, &vc) != PBFT_OK) {
        drop(r, PBFT_DROP_MALFORMED);
        return;
    }
    if (vc.new_view < r->view || (vc.new_view == r->view && !r->in_vc)) {
        /* A replica still trying to reach a view we are in (or past) missed the NEW-VIEW:
         * hand it the one we have; it is self-verifying. */
        nv_hand_over(r, e->sender);
        drop(r, PBFT_DROP_STALE);
        return;
    }
    struct vcent *old = &r->vcs[e->sender];
    if (old->set && old->view >= vc.new_view) {
        drop(r, PBFT_DROP_STALE);
        return;
    }
    if (!verify_vc(r, &vc)) {
        drop(r, PBFT_DROP_BAD_CERT);
        trace(r, PBFT_TRACE_REJECT, vc.new_view, 0, -1, "VIEW-CHANGE from %u does not verify",
              e->sender);
        return;
    }
    uint8_t *c = dup_bytes(r, e->whole.p, e->whole.n);
    if (c == NULL) {
        drop(r, PBFT_DROP_LIMIT);
        return;
    }
    free(old->msg);
    old->set = true;
    old->view = vc.new_view;
    old->msg = c;
    old->n = (uint32_t)e->whole.n;
    check_join(r);
    check_vc_quorum(r);
}

static void on_newview(pbft_replica *r, const pbft_env *e, const uint8_t *frame, size_t fn)
{
    pbft_newview nv;
    int drc = pbft_newview_decode(e->body, &nv);
    if (drc != PBFT_OK) {
        /* a repeated or unordered VIEW-CHANGE list lands here too (strictly ascending
         * senders), as do lists longer than n */
        drop(r, PBFT_DROP_MALFORMED);
        trace(r, PBFT_TRACE_REJECT, r->view, 0, -1, "NEW-VIEW from %u does not decode: %s",
              e->sender, pbft_strerror(drc));
        return;
    }
    if (e->sender != primary_of(r, nv.view)) {
        drop(r, PBFT_DROP_NOT_PRIMARY);
        return;
    }
    if (nv.view < r->view || (nv.view == r->view && !r->in_vc)) {
        drop(r, PBFT_DROP_STALE);
        return;
    }
    if (nv.vcs.count < r->q) {
        drop(r, PBFT_DROP_BAD_NEWVIEW);
        trace(r, PBFT_TRACE_REJECT, nv.view, 0, -1,
              "NEW-VIEW from %u carries %u VIEW-CHANGEs, fewer than 2f+1 = %u", e->sender,
              nv.vcs.count, r->q);
        return;
    }
    /* Check V: 2f+1 valid VIEW-CHANGEs for this view from distinct replicas (the list is
     * canonical: ascending senders). Ones we already verified are recognised by their bytes. */
    pbft_span vcs[PBFT_MAX_N];
    uint16_t nvc = 0;
    size_t off = 0;
    pbft_span m;
    while (pbft_list_next(&nv.vcs, &off, &m)) {
        pbft_env ve;
        pbft_viewchange vc;
        if (pbft_signed_decode(m.p, m.n, PBFT_MSG_VIEWCHANGE, &ve) != PBFT_OK ||
            ve.sender >= r->c.n || pbft_viewchange_decode(ve.body, &vc) != PBFT_OK ||
            vc.new_view != nv.view) {
            drop(r, PBFT_DROP_BAD_NEWVIEW);
            trace(r, PBFT_TRACE_REJECT, nv.view, 0, -1,
                  "NEW-VIEW from %u for view %llu: a VIEW-CHANGE in it is not one for that view",
                  e->sender, (unsigned long long)nv.view);
            return;
        }
        struct vcent *known = &r->vcs[ve.sender];
        bool cached = known->set && known->n == m.n && memcmp(known->msg, m.p, m.n) == 0;
        if (!cached && (!verify_env(r, &ve, false) || !verify_vc(r, &vc))) {
            drop(r, PBFT_DROP_BAD_CERT);
            trace(r, PBFT_TRACE_REJECT, nv.view, 0, -1,
                  "NEW-VIEW from %u: VIEW-CHANGE of %u does not verify", e->sender, ve.sender);
            return;
        }
        vcs[nvc++] = m;
    }
    struct ocalc o;
    o.best_view = r_calloc(r, r->c.window, sizeof *o.best_view);
    o.best_d = r_calloc(r, r->c.window, sizeof *o.best_d);
    o.has = r_calloc(r, r->c.window, sizeof *o.has);
    pbft_span *pps = r_calloc(r, r->c.window, sizeof *pps);
    if (o.best_view == NULL || o.best_d == NULL || o.has == NULL || pps == NULL) {
        drop(r, PBFT_DROP_LIMIT);
        goto done;
    }
    bool skip = r->unsafe_skip_nv_check; /* the negative control only */
    if (!compute_o(r, vcs, nvc, &o) || nv.pps.count > r->c.window ||
        (!skip && nv.pps.count != o.max_s - o.min_s)) {
        drop(r, PBFT_DROP_BAD_NEWVIEW);
        trace(r, PBFT_TRACE_REJECT, nv.view, 0, -1, "NEW-VIEW from %u: O has %u entries, want %llu",
              e->sender, nv.pps.count, (unsigned long long)(o.max_s - o.min_s));
        goto done;
    }
    if (skip)
        o.max_s = o.min_s + nv.pps.count;
    /* Recompute O and compare: a NEW-VIEW that omits or alters a prepared certificate, or
     * invents a request where a null one belongs, is rejected [OSDI §4.4]. */
    off = 0;
    uint64_t seq = o.min_s;
    while (pbft_list_next(&nv.pps, &off, &m)) {
        seq++;
        pbft_env pe;
        pbft_vote v;
        if (pbft_signed_decode(m.p, m.n, PBFT_MSG_PREPREPARE, &pe) != PBFT_OK ||
            pbft_vote_decode(pe.body, &v) != PBFT_OK || pe.sender != e->sender ||
            v.view != nv.view || v.seq != seq) {
            drop(r, PBFT_DROP_BAD_NEWVIEW);
            trace(r, PBFT_TRACE_REJECT, nv.view, seq, -1,
                  "NEW-VIEW from %u: its O entry for seq %llu is not the primary's PRE-PREPARE "
                  "for (view %llu, seq %llu)",
                  e->sender, (unsigned long long)seq, (unsigned long long)nv.view,
                  (unsigned long long)seq);
            goto done;
        }
        uint64_t idx = seq - o.min_s - 1;
        pbft_digest want;
        pbft_span nb;
        if (skip)
            want = v.d;
        else if (o.has[idx])
            want = o.best_d[idx];
        else if (!null_block(r, seq, nv.view, &nb, &want)) {
            drop(r, PBFT_DROP_LIMIT);
            goto done;
        }
        if (!digest_eq(&want, &v.d) || !verify_env(r, &pe, false)) {
            drop(r, PBFT_DROP_BAD_NEWVIEW);
            trace(r, PBFT_TRACE_REJECT, nv.view, seq, -1,
                  "NEW-VIEW from %u: its O entry for seq %llu differs from the recomputed one",
                  e->sender, (unsigned long long)seq);
            goto done;
        }
        pps[idx] = m;
    }
    if (nv.view > r->view)
        r->view = nv.view; /* a valid NEW-VIEW for a later view: join it directly */
    free(r->nv);
    r->nv = dup_bytes(r, frame, fn);
    r->nv_n = r->nv != NULL ? (uint32_t)fn : 0;
    r->nv_max_s = o.max_s;
    install_newview(r, &o, pps);
    trace(r, PBFT_TRACE_NEW_VIEW_ACCEPTED, r->view, o.min_s, e->sender,
          "accepted NEW-VIEW for view %llu from %u: min-s %llu, max-s %llu",
          (unsigned long long)r->view, e->sender, (unsigned long long)o.min_s,
          (unsigned long long)o.max_s);
done:
    free(o.best_view);
    free(o.best_d);
    free(o.has);
    free(pps);
}

/* ------------------------------------------------------------------------------------------
 * Timers and retransmission.
 * ----------------------------------------------------------------------------------------*/

/* The adaptive request timer (docs/protocol.md §8, docs/security.md finding 17). A fixed
 * timer replaced a correct primary under peak load: with the primary's queue seconds long,
 * a backup saw more than view_timeout_ms pass without executing while it held requests, and
 * suspected the primary of what was only load. So the timer follows the commit latency
 * this replica measures: REQ_LATENCY_FACTOR times, for each executed block, the wait of the
 * oldest request of it this replica held or of its accepted pre-prepare, counted from its
 * arrival or from the start of the view, whichever is later (a view change's own time is not the
 * new primary's latency). The measure rises at once and decays by an eighth of the difference per
 * block, so a burst lengthens the timer at once and quiet shortens it again. The timer stays within
 * [T, max(T, REQ_TIMEOUT_CAP * view_timeout_ms)], T being the view timeout (doubled by failed view
 * changes): a primary that delays on purpose can stretch it at most to that cap, and primary
 * monitoring (its COMPLAINTs, which compare waits with monitor_ms) is not affected by it. */
#define REQ_LATENCY_FACTOR 3
#define REQ_TIMEOUT_CAP 4
/* How many times the request timer waits another T for a catch-up only a single claim
 * supports (on_tick). */
#define REQ_DEFER_MAX 3

static void observe_latency(pbft_replica *r, uint64_t arrival_ms)
{
    if (arrival_ms == NONE)
        return;
    uint64_t from = arrival_ms > r->view_entered_ms ? arrival_ms : r->view_entered_ms;
    uint64_t sample = r->now > from ? r->now - from : 0;
    if (sample >= r->lat_ms)
        r->lat_ms = sample;
    else
        r->lat_ms -= (r->lat_ms - sample + 7) / 8;
}

static uint64_t req_timeout(const pbft_replica *r)
{
    uint64_t cap = (uint64_t)REQ_TIMEOUT_CAP * r->c.view_timeout_ms;
    uint64_t a = (uint64_t)REQ_LATENCY_FACTOR * r->lat_ms;
    if (a > cap)
        a = cap;
    return a > r->T ? a : r->T;
}

/* update_req_timer implements the request timer [OSDI §4.4]: running while some request or
 * accepted pre-prepare waits; restarted when a block executes and others still wait. */
static void update_req_timer(pbft_replica *r, bool progress)
{
    bool waiting = r->held > 0 || r->max_pp_seq > r->last_exec;
    if (r->in_vc || !r->started || !waiting)
        r->req_deadline = NONE;
    else if (progress || r->req_deadline == NONE) {
        r->req_deadline = r->now + req_timeout(r);
        r->req_defers = 0;
    }
}

static bool has_resend_work(const pbft_replica *r)
{
    return r->in_vc || r->max_pp_seq > r->last_exec || r->last_applied > 0 ||
           (r->held > 0 && !is_primary(r));
}

static void do_resend(pbft_replica *r)
{
    if (r->in_vc) {
        /* Re-send our VIEW-CHANGE to every replica: that one sent us its own says nothing
         * about whether it got ours (found by the simulator: the new primary never did). */
        uint32_t shift = r->vc_resends < 4 ? r->vc_resends : 4;
        if (r->now - r->vc_sent_ms < ((uint64_t)r->c.resend_ms << shift))
            return;
        r->vc_sent_ms = r->now;
        r->vc_resends++;
        for (uint16_t j = 0; j < r->c.n && r->my_vc != NULL; j++) {
            if (j == r->c.id)
                continue;
            struct outmsg m;
            memset(&m, 0, sizeof m);
            m.type = PBFT_MSG_VIEWCHANGE;
            m.body = r->my_vc + 8;
            m.body_n = r->my_vc_n - PBFT_SIGNED_OVERHEAD;
            resend_signed(r, &m, r->my_vc, r->my_vc_n, j);
        }
        return;
    }
    bool busy = false;
    uint64_t top = r->h + r->c.window;
    for (uint64_t seq = r->last_exec + 1; seq <= top && seq <= r->max_pp_seq; seq++) {
        struct slot *s = find_slot(r, seq);
        if (s == NULL)
            continue;
        if (s->committed) {
            if (s->block == NULL)
                want_body(r, s, &s->cd);
            continue;
        }
        if (!s->has_pp || s->pp_view != r->view)
            continue;
        busy = true;
        /* Over TCP a frame is lost only with a connection or to a full queue, so resends
         * back off (resend_ms, doubling to 16x) and go only to the peers whose votes show
         * they lack ours: an overloaded network is not flooded with duplicates. */
        uint32_t shift = s->resends < 4 ? s->resends : 4;
        if (r->now - s->sent_ms < ((uint64_t)r->c.resend_ms << shift))
            continue;
        s->sent_ms = r->now;
        s->resends++;
        struct vote *p = &s->prep[r->c.id];
        struct vote *c = &s->com[r->c.id];
        for (uint16_t j = 0; j < r->c.n; j++) {
            if (j == r->c.id)
                continue;
            bool has_commit =
                s->com[j].set && s->com[j].view == s->pp_view && digest_eq(&s->com[j].d, &s->d);
            bool has_prepare =
                s->prep[j].set && s->prep[j].view == s->pp_view && digest_eq(&s->prep[j].d, &s->d);
            /* What j's votes prove it has: a PREPARE or COMMIT from j means it holds the
             * pre-prepare (the big frame); a COMMIT means it prepared and needs no PREPARE.
             * Nothing proves it has our COMMIT, so that one always goes. */
            if (is_primary(r) && !has_prepare && !has_commit) {
                struct outmsg m = vote_msg(PBFT_MSG_PREPREPARE, s->pp_view, seq, &s->d);
                m.attach = s->block;
                m.attach_n = s->block != NULL ? s->block_n : 0;
                resend_signed(r, &m, s->pp, s->pp_n, j);
            }
            if (p->set && p->view == r->view && !has_commit) {
                struct outmsg m = vote_msg(PBFT_MSG_PREPARE, p->view, seq, &p->d);
                resend_signed(r, &m, p->frame, p->n, j);
            }
            if (c->set && c->view == r->view) {
                struct outmsg m = vote_msg(PBFT_MSG_COMMIT, c->view, seq, &c->d);
                resend_signed(r, &m, c->frame, c->n, j);
            }
        }
        if (!is_primary(r) && s->block == NULL)
            want_body(r, s, &s->d);
    }
    /* The primary re-sends its NEW-VIEW while blocks of its O set are unfinished. */
    if (is_primary(r) && r->nv != NULL && r->nv_max_s > r->last_exec) {
        uint32_t shift = r->vc_resends < 4 ? r->vc_resends : 4;
        if (r->now - r->vc_sent_ms >= ((uint64_t)r->c.resend_ms << shift)) {
            r->vc_sent_ms = r->now; /* the view change is over: its counters pace this */
            r->vc_resends++;
            forward_signed(r, PBFT_TO_ALL, r->nv, r->nv_n - 4);
        }
    }
    /* Backups re-forward transactions the primary has not put in a block yet, oldest
     * first: a primary that lost them (restarted) takes one client's transactions in the
     * order that client sent them. At most 256 each time. */
    if (!is_primary(r) && r->held > 0) {
        struct txent **due = r_malloc(r, r->held * sizeof *due);
        uint32_t k = 0;
        for (uint32_t i = 0; due != NULL && i < r->tx_cap && k < r->held; i++) {
            struct txent *t = &r->tx[i];
            if (t->state == TX_HELD && !t->inblock && r->now - t->fwd_ms >= r->c.resend_ms)
                due[k++] = t;
        }
        if (k > 0)
            qsort(due, k, sizeof *due, cmp_arrival);
        for (uint32_t i = 0; i < k && i < 256; i++) {
            due[i]->fwd_ms = r->now;
            send_request_to(r, primary_of(r, r->view), due[i]->tx, due[i]->n);
            mon_forwarded(r, due[i]);
        }
        free(due); /* no memory: nothing re-forwarded now, all of it at the next resend */
    }
    /* Idle: advertise how far we executed (a signed CHECKPOINT claim), so a replica that
     * fell behind between checkpoints learns it from f+1 of us. */
    /* ... and repeat it every 8 resend intervals while idle: a replica that was cut off when
     * we last said it would otherwise never hear it (found by the simulator). */
    bool due = r->last_applied > r->claim_sent ||
               (r->last_applied > 0 && r->now - r->claim_ms >= 8 * (uint64_t)r->c.resend_ms);
    if (!busy && due && r->last_applied + r->c.window > r->last_exec) {
        r->claim_ms = r->now;
        pbft_digest sd;
        state_digest(&r->chain_ring[r->last_applied % r->c.window], r->app_hash, &sd);
        send_checkpoint(r, r->last_applied, &sd);
    }
}

/* ------------------------------------------------------------------------------------------
 * Primary monitoring, after Aardvark [Clement et al., NSDI'09, §4.3] and RBFT [Aublin et al.,
 * ICDCS'13]. The request timer [OSDI §4.4] only catches a primary that stops: it restarts on
 * every execution, so a primary that holds each pre-prepare just under T, or serves some
 * clients and not others, keeps its view forever. Backups therefore watch the requests they
 * hold (each was forwarded to the primary on arrival) and COMPLAIN, with a signed message,
 * when the primary is
 *   - slow: a request we forwarded to it waited monitor_ms + resend_ms (one re-forward of
 *     slack) for a pre-prepare while the primary was not saturated (no block over half full
 *     within that time, fewer than max_inflight/2 pre-prepares in flight without a hole).
 *     A saturated primary has a legitimate queue, so latency alone does not count. Also
 *     slow: a hole, no pre-prepare for the next block while later ones arrived, for as long;
 *   - unfair: it proposed a request we forwarded more than monitor_ms + resend_ms after one
 *     it leaves waiting (a FIFO primary cannot do that, saturated or not), or it left one
 *     waiting 10 initial view timeouts (starvation, whatever the load).
 * Waiting counts from when we forwarded the request to this primary, and not before we
 * entered the view, so a new primary is not blamed for the old one's backlog nor for
 * requests it was never sent (another replica's relays reach it from us only when we
 * re-forward them). A replica that is catching up does not judge. A complaint does not leave the
 * view: a replica changes view (reason "complaints") only on f+1 complaints for its view, its own
 * included, so at least one correct replica agrees and f faulty ones cannot vote a correct primary
 * out.
 * ----------------------------------------------------------------------------------------*/
/* nv_hand_over sends replica `to`, which showed it is in a view below ours, the NEW-VIEW
 * of our view (self-verifying: the primary's signature over 2f+1 VIEW-CHANGEs), at most once
 * per resend interval. Nothing when we are changing views or are in view 0 (no NEW-VIEW). */
static void nv_hand_over(pbft_replica *r, uint16_t to)
{
    if (r->in_vc || r->nv == NULL || to >= r->c.n ||
        (r->nv_fwd_ms[to] != 0 && r->now - r->nv_fwd_ms[to] < r->c.resend_ms))
        return;
    r->nv_fwd_ms[to] = r->now;
    forward_signed(r, to, r->nv, r->nv_n - 4);
}

static void mon_sync(pbft_replica *r)
{
    /* While changing views, what we see belongs to no installed view: wait. */
    if (r->in_vc || (r->mon_view == r->view && r->mon_init))
        return;
    r->mon_init = true;
    r->mon_view = r->view;
    r->mon_since = r->now;
    r->mon_overflow = true; /* a new view un-proposed what the old one had: rebuild */
    r->mon_newest_fwd = 0;
    r->mon_busy_ms = 0;
    r->mon_gap_seq = 0;
    r->mon_gap_ms = 0;
    r->complained_ms = 0;
}

/* count_complaint records that `who` wants to leave `view` (and every view below it), and
 * moves on f+1 such wishes above our view: at least one of them is a correct replica's, so f
 * faulty ones cannot vote a correct primary out, and no replica leaves a view alone. The
 * target is the smallest wished-for view, as for f+1 VIEW-CHANGEs [TOCS §4.5.2]. This is
 * what keeps a replica cut off from the others in the view they use: its timers only make
 * it complain, so when the partition heals it is where they are (docs/protocol.md §11). */
static void count_complaint(pbft_replica *r, uint16_t who, uint64_t view)
{
    mon_sync(r);
    if (view + 1 > r->cwant[who])
        r->cwant[who] = view + 1;
    uint32_t k = 0;
    uint64_t target = NONE;
    for (uint16_t j = 0; j < r->c.n; j++)
        if (r->cwant[j] > r->view) {
            k++;
            if (r->cwant[j] < target)
                target = r->cwant[j];
        }
    if (k < (uint32_t)r->f + 1)
        return;
    int reason = PBFT_VC_COMPLAINTS;
    if (r->in_vc) {
        /* The view change to our view failed: try the next, waiting twice as long. */
        uint64_t t2 = (uint64_t)r->T * 2;
        r->T = t2 > r->c.view_timeout_max_ms ? r->c.view_timeout_max_ms : (uint32_t)t2;
        reason = PBFT_VC_NEWVIEW_TIMEOUT;
    } else if (r->own_timeout == r->view + 1) {
        reason = PBFT_VC_REQUEST_TIMEOUT;
    }
    start_view_change(r, target, reason);
}

static void send_complaint(pbft_replica *r, int reason, uint64_t age)
{
    uint8_t body[9];
    for (int i = 0; i < 8; i++)
        body[i] = (uint8_t)(r->view >> (56 - 8 * i));
    body[8] = (uint8_t)reason;
    struct outmsg m;
    memset(&m, 0, sizeof m);
    m.type = PBFT_MSG_COMPLAINT;
    m.body = body;
    m.body_n = sizeof body;
    r->complained_ms = r->now;
    r->st.complaints[reason]++;
    trace(r, PBFT_TRACE_COMPLAINT, r->view, r->last_exec, reason,
          "complaint about primary %u of view %llu: %s (a request waited %llu ms)",
          primary_of(r, r->view), (unsigned long long)r->view, pbft_complaint_reason_name(reason),
          (unsigned long long)age);
    send_new(r, &m, PBFT_TO_ALL);
    count_complaint(r, r->c.id, r->view);
}

/* A backup that is catching up cannot tell a slow primary from its own gap: blocks it has
 * not fetched carry the transactions it sees waiting. */
static bool mon_wanted(const pbft_replica *r)
{
    return r->c.monitor_ms > 0 && r->started && !r->in_vc && !is_primary(r) && r->held > 0 &&
           !r->st_active && r->st_target <= r->last_exec;
}

/* mon_inflight counts the pre-prepares of this view accepted without a gap after the last
 * executed block, up to `cap`: a primary that leaves a hole cannot claim to be busy. */
static uint32_t mon_inflight(pbft_replica *r, uint32_t cap)
{
    uint32_t k = 0;
    for (uint64_t seq = r->last_exec + 1; k < cap; seq++, k++) {
        struct slot *s = find_slot(r, seq);
        if (s == NULL || !s->has_pp || s->pp_view != r->view)
            break;
    }
    return k;
}

static void monitor(pbft_replica *r)
{
    if (!mon_wanted(r))
        return;
    mon_sync(r);
    uint64_t oldest = mon_oldest(r);
    if (oldest == NONE)
        return;
    uint64_t from = oldest > r->mon_since ? oldest : r->mon_since;
    /* One re-forward interval of slack: a forward lost with a connection is sent again
     * after resend_ms, and that is the network's delay, not the primary's. */
    uint64_t age = r->now - from, lim = (uint64_t)r->c.monitor_ms + r->c.resend_ms;
    uint32_t half = r->c.max_inflight / 2 > 0 ? r->c.max_inflight / 2 : 1;
    bool saturated =
        mon_inflight(r, half) >= half || (r->mon_busy_ms != 0 && r->now - r->mon_busy_ms < lim);
    /* A hole: no pre-prepare for the next block while later ones arrived. */
    struct slot *next = find_slot(r, r->last_exec + 1);
    bool hole = r->max_pp_seq > r->last_exec + 1 &&
                (next == NULL || ((!next->has_pp || next->pp_view != r->view) && !next->committed));
    if (!hole) {
        r->mon_gap_seq = 0;
    } else if (r->mon_gap_seq != r->last_exec + 1) {
        r->mon_gap_seq = r->last_exec + 1;
        r->mon_gap_ms = r->now;
    }
    int reason = -1;
    if (age >= 10ull * r->c.view_timeout_ms || r->mon_newest_fwd > from + lim) {
        reason = PBFT_COMPLAINT_UNFAIR;
    } else if (!saturated && age >= lim) {
        reason = PBFT_COMPLAINT_SLOW;
    } else if (r->mon_gap_seq != 0 && r->now - r->mon_gap_ms >= lim) {
        reason = PBFT_COMPLAINT_SLOW;
        age = r->now - r->mon_gap_ms;
    }
    if (reason < 0)
        return;
    /* Once per view, and again every 4 resend intervals while it lasts (a complaint may be
     * lost with a connection). */
    if (r->complained_ms != 0 && r->now - r->complained_ms < 4ull * r->c.resend_ms)
        return;
    send_complaint(r, reason, age);
}

static void on_complaint(pbft_replica *r, const pbft_env *e)
{
    pbft_complaint_msg c;
    if (pbft_complaint_decode(e->body, &c) != PBFT_OK) {
        drop(r, PBFT_DROP_MALFORMED);
        return;
    }
    if (c.view < r->view) {
        /* The sender is behind, in a view we left: hand it our NEW-VIEW, which proves the
         * view we are in and lets it join directly (on_newview), at most once per resend
         * interval (a faulty sender could otherwise make us send it again and again). */
        nv_hand_over(r, e->sender);
        drop(r, PBFT_DROP_STALE);
        return;
    }
    count_complaint(r, e->sender, c.view);
}

static void on_tick(pbft_replica *r)
{
    if (r->mon_deadline != NONE && r->now >= r->mon_deadline) {
        r->mon_deadline = NONE;
        monitor(r);
    }
    if (r->req_deadline != NONE && r->now >= r->req_deadline && !r->in_vc) {
        /* A replica that is catching up cannot tell a slow primary from its own gap (the
         * rule monitoring follows): it waits another T. Alone in a higher view it would stay
         * out while the others commit (restart_votes beside CPU hogs: a backup restarted 349
         * blocks behind timed out during its transfers and never voted). Behind a height
         * f+1 replicas claim (one of them correct) it waits as long as that lasts. Behind
         * only a single claim, or a transfer it started on one, it waits at most
         * REQ_DEFER_MAX times: the claimer may be a faulty primary that makes every replica
         * "catch up" so that none times out. If the primary is faulty, the replicas that
         * are not behind time out, and f+1 VIEW-CHANGEs bring this one along [OSDI §4.5.2]. */
        bool proven_behind = r->st_proven > r->last_exec;
        bool hinted_behind = r->st_active || r->st_target > r->last_exec;
        if (proven_behind || (hinted_behind && r->req_defers < REQ_DEFER_MAX)) {
            if (!proven_behind)
                r->req_defers++;
            r->req_deadline = r->now + r->T;
        } else {
            /* [OSDI §4.4] has the backup move to v+1 on its own here. We complain instead,
             * and move on f+1 complaints (count_complaint): a replica cut off from the
             * others would otherwise climb views alone and stay out after the heal (issue
             * 12). The complaint is repeated every T while the timer keeps expiring. */
            r->own_timeout = r->view + 1;
            r->req_deadline = r->now + r->T;
            send_complaint(r, PBFT_COMPLAINT_TIMEOUT, r->T);
        }
    }
    if (r->vc_deadline != NONE && r->now >= r->vc_deadline && r->in_vc) {
        /* The view change to v did not complete within T [TOCS §4.5.2]: complain about v;
         * f+1 such complaints move us to v+1 with T doubled (count_complaint). Again every
         * T while it lasts. */
        r->vc_deadline = r->now + r->T;
        send_complaint(r, PBFT_COMPLAINT_TIMEOUT, r->T);
    }
    if (r->resend_deadline != NONE && r->now >= r->resend_deadline) {
        r->resend_deadline = NONE;
        do_resend(r);
    }
    if (r->st_active && r->now >= r->st_deadline) {
        /* Only what the peer itself delivered counts: progress by the normal case used to
         * excuse a claimer that sent nothing, so a liar claiming ahead of everyone was asked
         * every other retry, for good (byzantine_bogus-state in CI). */
        if (!r->st_delivered && r->claims[r->st_peer] > r->last_exec) {
            r->claims[r->st_peer] = r->last_exec; /* it claimed blocks it did not deliver */
            r->st_doubt |= 1ull << r->st_peer;
        }
        uint16_t who = retarget(r);
        if (r->last_exec >= r->st_target) {
            st_done(r);
        } else {
            if (r->claims[who] > r->last_exec && who != r->st_peer)
                r->st_peer = who;
            else
                st_rotate(r);
            st_request(r);
        }
    }
}

static void finish(pbft_replica *r, pbft_output **out)
{
    /* A transfer whose target the normal case reached is over, whatever delivered the
     * blocks: waiting for a useful reply or the next retry kept a replica that was in fact
     * caught up "catching up" while the peers' newest claims stayed ahead of it, i.e. until
     * the load stopped (byzantine_bogus-state under ASan). One that is not over moves on to
     * the next claimer once its peer has given all it claimed. */
    if (r->st_active && r->last_exec >= r->st_target)
        st_done(r);
    else
        (void)st_move_on(r);
    uint64_t batch = try_propose(r);
    if (has_resend_work(r)) {
        if (r->resend_deadline == NONE)
            r->resend_deadline = r->now + r->c.resend_ms;
    } else {
        r->resend_deadline = NONE;
    }
    if (!mon_wanted(r))
        r->mon_deadline = NONE;
    else if (r->mon_deadline == NONE)
        r->mon_deadline = r->now + (r->c.monitor_ms / 4 > 0 ? r->c.monitor_ms / 4 : 1);
    uint64_t d = min_u64(r->req_deadline, r->vc_deadline);
    d = min_u64(d, r->resend_deadline);
    d = min_u64(d, r->mon_deadline);
    d = min_u64(d, batch);
    if (r->st_active)
        d = min_u64(d, r->st_deadline);
    out_finish(r, out);
    r->out.deadline_ms = d;
}

/* ------------------------------------------------------------------------------------------
 * Messages in.
 * ----------------------------------------------------------------------------------------*/
static void on_message(pbft_replica *r, const uint8_t *p, size_t n, bool pre)
{
    pbft_env e;
    if (n > PBFT_MAX_MSG_BYTES || pbft_frame_decode(p, n, &e) != PBFT_OK) {
        drop(r, PBFT_DROP_MALFORMED);
        return;
    }
    if (e.sender >= r->c.n) {
        drop(r, PBFT_DROP_UNKNOWN_SENDER);
        return;
    }
    if (e.sender == r->c.id) {
        drop(r, PBFT_DROP_SELF);
        return;
    }
    if (!verify_env(r, &e, pre)) {
        drop(r, PBFT_DROP_BAD_SIGNATURE);
        return;
    }
    /* The view the sender works in, from its signed normal-case messages and NEW-VIEWs
     * (their bodies start with the view), whatever becomes of them below. */
    if ((e.type == PBFT_MSG_PREPREPARE || e.type == PBFT_MSG_PREPARE || e.type == PBFT_MSG_COMMIT ||
         e.type == PBFT_MSG_NEWVIEW) &&
        e.body.n >= 8) {
        uint64_t v = pbft_get_u64(e.body.p);
        if (v < NONE && v + 1 > r->pview[e.sender])
            r->pview[e.sender] = v + 1;
    }
    switch (e.type) {
    case PBFT_MSG_PREPREPARE:
        on_preprepare(r, &e, p, n, pre);
        break;
    case PBFT_MSG_PREPARE:
        on_prepare(r, &e);
        break;
    case PBFT_MSG_COMMIT:
        on_commit(r, &e);
        break;
    case PBFT_MSG_CHECKPOINT:
        on_checkpoint(r, &e);
        break;
    case PBFT_MSG_VIEWCHANGE:
        on_viewchange(r, &e);
        break;
    case PBFT_MSG_NEWVIEW:
        on_newview(r, &e, p, n);
        break;
    case PBFT_MSG_STATE_REQ:
        on_state_req(r, &e);
        break;
    case PBFT_MSG_STATE_REP:
        on_state_rep(r, &e);
        break;
    case PBFT_MSG_REQUEST:
        on_request_msg(r, &e, pre);
        break;
    case PBFT_MSG_COMPLAINT:
        on_complaint(r, &e);
        break;
    default:
        drop(r, PBFT_DROP_MALFORMED);
        break;
    }
}

/* tx_verify_cached verifies one transaction unless tc has seen it verify. */
static bool tx_verify_cached(const pbft_config *c, const pbft_tx *tx, pbft_span bytes,
                             const pbft_txcache *tc)
{
    pbft_digest h;
    if (tc != NULL) {
        pbft_tx_hash(bytes.p, bytes.n, &h);
        if (tc->seen(tc->ctx, &h))
            return true;
    }
    if (!pbft_tx_verify(tx, c->chain))
        return false;
    if (tc != NULL)
        tc->add(tc->ctx, &h);
    return true;
}

int pbft_frame_preverify(const pbft_config *c, const uint8_t *p, size_t n)
{
    return pbft_frame_preverify_cached(c, p, n, NULL);
}

int pbft_frame_preverify_cached(const pbft_config *c, const uint8_t *p, size_t n,
                                const pbft_txcache *tc)
{
    pbft_env e;
    if (n > PBFT_MAX_MSG_BYTES || pbft_frame_decode(p, n, &e) != PBFT_OK)
        return PBFT_DROP_MALFORMED + 1;
    if (e.sender >= c->n)
        return PBFT_DROP_UNKNOWN_SENDER + 1;
    if (!pbft_env_verify(&e, c->chain, c->pubkeys[e.sender]))
        return PBFT_DROP_BAD_SIGNATURE + 1;
    if (e.type == PBFT_MSG_PREPREPARE && e.attach.n > 0) {
        pbft_block b;
        if (pbft_block_decode(e.attach.p, e.attach.n, &b) != PBFT_OK)
            return PBFT_DROP_BAD_BLOCK + 1;
        size_t off = 0;
        pbft_span t;
        while (pbft_block_next_tx(&b, &off, &t)) {
            pbft_tx tx;
            if (pbft_tx_decode(t.p, t.n, &tx) != PBFT_OK || !tx_verify_cached(c, &tx, t, tc))
                return PBFT_DROP_BAD_BLOCK + 1;
        }
    } else if (e.type == PBFT_MSG_REQUEST) {
        pbft_span t;
        pbft_tx tx;
        if (pbft_request_decode(e.body, &t) != PBFT_OK ||
            pbft_tx_decode(t.p, t.n, &tx) != PBFT_OK || !tx_verify_cached(c, &tx, t, tc))
            return PBFT_DROP_BAD_BLOCK + 1;
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------
 * Public API.
 * ----------------------------------------------------------------------------------------*/
void pbft_config_defaults(pbft_config *c)
{
    c->checkpoint_interval = 64;
    c->window = 256;
    c->max_inflight = 64;
    c->max_block_txs = 1000;
    c->max_block_bytes = 1u << 20;
    c->block_interval_ms = 10;
    c->max_pending_txs = 20000;
    c->max_pending_bytes = 64u << 20;
    c->view_timeout_ms = 2000;
    c->view_timeout_max_ms = 60000;
    c->resend_ms = 500;
    c->state_retry_ms = 2000;
    c->max_state_blocks = 64;
    c->monitor_ms = 1000; /* half the view timeout */
}

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            snprintf(err, errlen, __VA_ARGS__);                                                    \
            return -1;                                                                             \
        }                                                                                          \
    } while (0)

int pbft_config_validate(const pbft_config *c, char *err, size_t errlen)
{
    CHECK(c->n >= 4 && c->n <= PBFT_MAX_N, "n: %u replicas; must be 4..%u", c->n, PBFT_MAX_N);
    CHECK(c->id < c->n, "id: %u is not a replica of a network of %u", c->id, c->n);
    CHECK(c->checkpoint_interval >= 1, "checkpoint_interval: must be at least 1");
    CHECK(c->window >= 2 * c->checkpoint_interval && c->window % c->checkpoint_interval == 0 &&
              c->window <= PBFT_MAX_WINDOW,
          "window: %u; must be a multiple of checkpoint_interval (%u), at least twice it, and "
          "at most %u",
          c->window, c->checkpoint_interval, PBFT_MAX_WINDOW);
    {
        /* The largest NEW-VIEW (2f+1 VIEW-CHANGEs, each with a full window of prepared
         * certificates) must fit in one frame. Signed vote 120 bytes, checkpoint 112. */
        uint64_t q = (uint64_t)c->n - (uint64_t)(c->n - 1) / 3;
        uint64_t vc = 128 + q * 116 + (uint64_t)c->window * (4 + 120 + 2 + (q - 1) * 124);
        uint64_t nv = 100 + q * (4 + vc) + (uint64_t)c->window * 124;
        CHECK(nv <= PBFT_MAX_MSG_BYTES,
              "window: %u is too large for %u replicas: a NEW-VIEW could reach %llu bytes, over "
              "the %u-byte frame limit",
              c->window, c->n, (unsigned long long)nv, PBFT_MAX_MSG_BYTES);
    }
    CHECK(c->max_inflight >= 1 && c->max_inflight <= c->window,
          "max_inflight: %u; must be 1..window (%u)", c->max_inflight, c->window);
    CHECK(c->max_block_txs >= 1 && c->max_block_txs <= PBFT_MAX_BLOCK_TXS,
          "max_block_txs: %u; must be 1..%u", c->max_block_txs, PBFT_MAX_BLOCK_TXS);
    CHECK(c->max_block_bytes >= PBFT_BLOCK_HEADER_BYTES + 4 + PBFT_MAX_TX_BYTES &&
              c->max_block_bytes <= PBFT_MAX_BLOCK_BYTES,
          "max_block_bytes: %u; must be %u..%u (room for one largest transaction)",
          c->max_block_bytes, PBFT_BLOCK_HEADER_BYTES + 4 + PBFT_MAX_TX_BYTES,
          PBFT_MAX_BLOCK_BYTES);
    CHECK(c->max_pending_txs >= c->max_block_txs && c->max_pending_txs <= (1u << 24),
          "max_pending_txs: %u; must be max_block_txs (%u)..%u", c->max_pending_txs,
          c->max_block_txs, 1u << 24);
    CHECK(c->max_pending_bytes >= PBFT_MAX_TX_BYTES, "max_pending_bytes: %u; must be at least %u",
          c->max_pending_bytes, PBFT_MAX_TX_BYTES);
    CHECK(c->view_timeout_ms >= 1, "view_timeout_ms: must be at least 1");
    CHECK(c->monitor_ms == 0 || (uint64_t)c->monitor_ms + c->resend_ms < c->view_timeout_ms,
          "monitor_ms: %u plus resend_ms (%u) must be below view_timeout_ms (%u), or 0 to turn "
          "monitoring off",
          c->monitor_ms, c->resend_ms, c->view_timeout_ms);
    CHECK(c->view_timeout_max_ms >= c->view_timeout_ms,
          "view_timeout_max_ms: %u; must be at least view_timeout_ms (%u)", c->view_timeout_max_ms,
          c->view_timeout_ms);
    CHECK(c->resend_ms >= 1, "resend_ms: must be at least 1");
    CHECK(c->state_retry_ms >= 4, "state_retry_ms: must be at least 4");
    CHECK(c->max_state_blocks >= 1 && c->max_state_blocks <= PBFT_MAX_STATE_BLOCKS,
          "max_state_blocks: %u; must be 1..%u", c->max_state_blocks, PBFT_MAX_STATE_BLOCKS);
    return 0;
}

int pbft_replica_new(const pbft_config *c, pbft_replica **out, char *err, size_t errlen)
{
    *out = NULL;
    if (pbft_config_validate(c, err, errlen) != 0)
        return -1;
    pbft_replica *r = calloc(1, sizeof *r);
    if (r == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    r->c = *c;
    r->f = (uint16_t)((c->n - 1) / 3);
    r->q = (uint16_t)(c->n - r->f);
    r->T = c->view_timeout_ms;
    r->req_deadline = r->vc_deadline = r->resend_deadline = r->mon_deadline = NONE;
    memcpy(r->stable_d.b, c->genesis, 32);
    memcpy(r->exec_chain.b, c->genesis, 32);
    r->next_seq = 1;
    r->st_peer = (uint16_t)((c->id + 1) % c->n);
    /* Output bounds (replica.h, pbft_out_limits). */
    r->lim.persist = 4 * (size_t)c->window + 16;
    r->lim.commits = (size_t)c->window + PBFT_MAX_STATE_BLOCKS;
    r->lim.sends = 4 * (size_t)c->window * c->n + 64 * (size_t)c->n;
    r->lim.send_bytes = PBFT_OUT_MAX_SEND_BYTES;
    r->lim.serves = 4 * (size_t)c->n;
    uint32_t nck = c->window / c->checkpoint_interval;
    r->slots = r_calloc(r, c->window, sizeof *r->slots);
    r->cks = r_calloc(r, nck, sizeof *r->cks);
    r->far = r_calloc(r, 2 * (size_t)c->n, sizeof *r->far);
    r->claims = r_calloc(r, c->n, sizeof *r->claims);
    r->serve_win = r_calloc(r, c->n, sizeof *r->serve_win);
    r->serve_used = r_calloc(r, c->n, sizeof *r->serve_used);
    r->vcs = r_calloc(r, c->n, sizeof *r->vcs);
    r->chain_ring = r_calloc(r, c->window, sizeof *r->chain_ring);
    /* The pool holds max_pending_txs held entries plus as many committed hashes and as many
     * in flight; keep the load factor at or below one half. */
    r->done_cap = c->max_pending_txs;
    r->inflight_cap = c->max_pending_txs;
    uint64_t need = 2 * ((uint64_t)c->max_pending_txs + r->done_cap + r->inflight_cap);
    r->tx_cap = 16;
    while (r->tx_cap < need)
        r->tx_cap *= 2;
    r->tx = r_calloc(r, r->tx_cap, sizeof *r->tx);
    r->done = r_calloc(r, r->done_cap, sizeof *r->done);
    r->fifo_cap = c->max_pending_txs + 1;
    r->fifo = r_calloc(r, r->fifo_cap, sizeof *r->fifo);
    r->mon_cap = 2 * c->max_pending_txs;
    r->mon_ring = r_calloc(r, r->mon_cap, sizeof *r->mon_ring);
    bool ok = r->slots && r->cks && r->far && r->claims && r->serve_win && r->serve_used &&
              r->vcs && r->chain_ring && r->tx && r->done && r->fifo && r->mon_ring;
    for (uint32_t i = 0; ok && i < c->window; i++) {
        r->slots[i].prep = r_calloc(r, c->n, sizeof(struct vote));
        r->slots[i].com = r_calloc(r, c->n, sizeof(struct vote));
        ok = r->slots[i].prep && r->slots[i].com;
    }
    for (uint32_t i = 0; ok && i < nck; i++) {
        r->cks[i].v = r_calloc(r, c->n, sizeof(struct vote));
        ok = r->cks[i].v != NULL;
    }
    pbft_wbuf_init(&r->w, PBFT_MAX_MSG_BYTES);
    if (!ok) {
        pbft_replica_free(r);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    *out = r;
    return 0;
}

void pbft_replica_free(pbft_replica *r)
{
    if (r == NULL)
        return;
    if (r->slots != NULL)
        for (uint32_t i = 0; i < r->c.window; i++) {
            if (r->slots[i].prep != NULL && r->slots[i].com != NULL)
                slot_free(r, &r->slots[i]);
            free(r->slots[i].prep);
            free(r->slots[i].com);
        }
    if (r->cks != NULL)
        for (uint32_t i = 0; i < r->c.window / r->c.checkpoint_interval; i++) {
            if (r->cks[i].v != NULL)
                for (uint16_t j = 0; j < r->c.n; j++)
                    vote_clear(&r->cks[i].v[j]);
            free(r->cks[i].v);
        }
    if (r->far != NULL)
        for (uint32_t i = 0; i < 2 * (uint32_t)r->c.n; i++)
            vote_clear(&r->far[i]);
    if (r->vcs != NULL)
        for (uint16_t j = 0; j < r->c.n; j++)
            free(r->vcs[j].msg);
    if (r->tx != NULL)
        for (uint32_t i = 0; i < r->tx_cap; i++)
            free(r->tx[i].tx);
    out_reset(r);
    free(r->arena);
    free(r->oa.persist);
    free(r->oa.sends);
    free(r->oa.commits);
    free(r->oa.serves);
    free(r->slots);
    free(r->cks);
    free(r->far);
    free(r->claims);
    free(r->serve_win);
    free(r->serve_used);
    free(r->vcs);
    free(r->chain_ring);
    free(r->tx);
    free(r->done);
    free(r->fifo);
    free(r->mon_ring);
    free(r->my_vc);
    free(r->nv);
    free(r->stable_proof);
    pbft_wbuf_free(&r->w);
    free(r);
}

int pbft_replica_restore_executed(pbft_replica *r, uint64_t seq, const pbft_digest *chain,
                                  const uint8_t app_hash[32])
{
    if (r->started)
        return -1;
    r->last_exec = r->last_applied = seq;
    r->exec_chain = *chain;
    r->chain_ring[seq % r->c.window] = *chain;
    memcpy(r->app_hash, app_hash, 32);
    if (r->next_seq <= seq)
        r->next_seq = seq + 1;
    return 0;
}

static uint64_t key_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

/* restored_sig_ok: a signed message read back from our own records still carries a valid
 * signature of a validator. Every one was verified (or signed) before it was persisted, so a
 * failure is corruption at rest, and the record is refused: resending it would only make
 * every peer drop it, and a vote we cannot re-send is a promise we cannot show (issue 12). */
static bool restored_sig_ok(pbft_replica *r, const pbft_env *e)
{
    return e->sender < r->c.n && verify_env(r, e, false);
}

int pbft_replica_restore_record(pbft_replica *r, const uint8_t key[PBFT_REC_KEY_BYTES],
                                const uint8_t *value, size_t n)
{
    if (r->started)
        return -1;
    uint64_t seq = key_u64(key + 1);
    switch (key[0]) {
    case REC_META: {
        if (n < 13)
            return -1;
        uint32_t vn = pbft_get_u32(value + 9);
        if (vn != n - 13)
            return -1;
        r->view = key_u64(value);
        r->in_vc = value[8] != 0;
        if (r->in_vc) {
            pbft_env e;
            if (pbft_signed_decode(value + 13, vn, PBFT_MSG_VIEWCHANGE, &e) != PBFT_OK ||
                !restored_sig_ok(r, &e))
                return -1;
            free(r->my_vc);
            r->my_vc = dup_bytes(r, value + 13, vn);
            r->my_vc_n = vn;
            free(r->vcs[r->c.id].msg);
            r->vcs[r->c.id].msg = dup_bytes(r, value + 13, vn);
            r->vcs[r->c.id].n = vn;
            r->vcs[r->c.id].view = r->view;
            r->vcs[r->c.id].set = r->vcs[r->c.id].msg != NULL;
        }
        return 0;
    }
    case REC_STABLE: {
        if (n < 42)
            return -1;
        uint64_t s = key_u64(value);
        if (s <= r->h)
            return 0;
        free(r->stable_proof);
        r->stable_proof = dup_bytes(r, value + 40, n - 40);
        r->stable_proof_n = (uint32_t)(n - 40);
        memcpy(r->stable_d.b, value + 8, 32);
        r->h = s;
        if (r->next_seq <= s)
            r->next_seq = s + 1;
        return 0;
    }
    case REC_LOG:
        break;
    default:
        return -1;
    }
    struct slot *s = get_slot(r, seq);
    if (s == NULL)
        return 0; /* below the stable checkpoint: garbage */
    uint8_t type = key[17];
    if (type == REC_TYPE_PCERT) {
        if (n < 4)
            return -1;
        uint32_t ppn = pbft_get_u32(value);
        if (ppn > n - 4)
            return -1;
        pbft_env e;
        pbft_vote v;
        if (pbft_signed_decode(value + 4, ppn, PBFT_MSG_PREPREPARE, &e) != PBFT_OK ||
            pbft_vote_decode(e.body, &v) != PBFT_OK || !restored_sig_ok(r, &e))
            return -1;
        uint8_t *c = dup_bytes(r, value, n);
        if (c == NULL)
            return -1;
        free(s->pc);
        s->pc = c;
        s->pc_n = (uint32_t)n;
        s->has_pc = true;
        s->pc_view = v.view;
        s->pc_d = v.d;
        return 0;
    }
    pbft_env e;
    pbft_vote v;
    if (pbft_frame_decode(value, n, &e) != PBFT_OK || pbft_vote_decode(e.body, &v) != PBFT_OK ||
        !restored_sig_ok(r, &e))
        return -1;
    if (e.type == PBFT_MSG_PREPREPARE) {
        if (s->has_pp && s->pp_view > v.view)
            return 0;
        if (!accept_pp(r, s, v.view, &v.d, e.whole, e.attach.n > 0 ? e.attach.p : NULL, e.attach.n))
            return -1;
        if (e.sender == r->c.id && v.view == r->view && r->next_seq <= v.seq)
            r->next_seq = v.seq + 1; /* never assign a sequence number twice in a view */
    } else if (e.type == PBFT_MSG_PREPARE) {
        vote_set(r, &s->prep[e.sender], v.view, &v.d, e.whole);
    } else if (e.type == PBFT_MSG_COMMIT) {
        vote_set(r, &s->com[e.sender], v.view, &v.d, e.whole);
        if (s->has_pp && s->pp_view == v.view && digest_eq(&s->d, &v.d))
            s->prepared = true; /* we sent COMMIT only once prepared */
    } else {
        return -1;
    }
    return 0;
}

/* finished: a call that met a failure (r->failed) hands out nothing of what it built. */
static int finished(pbft_replica *r, pbft_output **out)
{
    if (r->failed == NULL)
        return 0;
    *out = NULL;
    r->out.n_persist = r->out.n_sends = r->out.n_commits = r->out.n_serves = 0;
    trace(r, PBFT_TRACE_FAILED, r->view, r->last_exec, -1, "failed: %s", r->failed);
    return PBFT_STEP_FAILED;
}

const char *pbft_replica_failure(const pbft_replica *r)
{
    return r->failed;
}

void pbft_replica_out_limits(const pbft_replica *r, pbft_out_limits *out)
{
    *out = r->lim;
}

void pbft_replica_set_out_limits(pbft_replica *r, const pbft_out_limits *lim)
{
    r->lim = *lim;
}

void pbft_replica_set_alloc_fault(pbft_replica *r, pbft_alloc_fault_fn fn, void *ctx)
{
    r->alloc_fault = fn;
    r->alloc_fault_ctx = ctx;
}

void pbft_replica_unsafe_skip_newview_check(pbft_replica *r, bool skip)
{
    r->unsafe_skip_nv_check = skip;
}

int pbft_replica_start(pbft_replica *r, uint64_t now_ms, pbft_output **out)
{
    *out = NULL;
    if (r->failed != NULL)
        return PBFT_STEP_FAILED;
    if (r->started)
        return -1;
    out_reset(r);
    r->now = now_ms;
    r->started = true;
    /* Pre-prepares restored for the current view still count as waiting work. */
    r->max_pp_seq = 0;
    for (uint32_t i = 0; i < r->c.window; i++) {
        struct slot *s = &r->slots[i];
        if (s->seq != 0 && s->has_pp && s->pp_view == r->view && s->seq > r->max_pp_seq)
            r->max_pp_seq = s->seq;
        if (s->seq != 0 && s->seq <= r->last_exec)
            s->committed = true; /* executed before the crash */
    }
    if (r->next_seq <= r->last_exec)
        r->next_seq = r->last_exec + 1;
    if (r->in_vc) {
        do_resend(r); /* re-send the persisted VIEW-CHANGE, never a new one */
    }
    update_req_timer(r, false);
    finish(r, out);
    return finished(r, out);
}

int pbft_replica_step(pbft_replica *r, const pbft_event *ev, pbft_output **out)
{
    *out = NULL;
    if (r->failed != NULL)
        return PBFT_STEP_FAILED;
    if (!r->started || ev->now_ms < r->now)
        return -1; /* driver misuse: not started, or time went backwards */
    out_reset(r);
    r->now = ev->now_ms;
    r->wall = ev->wall_ms;
    switch (ev->kind) {
    case PBFT_EV_TICK:
        on_tick(r);
        break;
    case PBFT_EV_MESSAGE:
        on_message(r, ev->u.msg.p, ev->u.msg.n, ev->u.msg.preverified);
        break;
    case PBFT_EV_REQUEST:
        r->out.request_status = accept_tx(r, ev->u.req.p, ev->u.req.n, ev->u.req.preverified, true);
        break;
    case PBFT_EV_EXECUTED:
        on_executed(r, ev->u.exec.seq, ev->u.exec.app_hash);
        break;
    default:
        return -1;
    }
    int status = r->out.request_status;
    finish(r, out);
    r->out.request_status = status;
    return finished(r, out);
}

/* State-transfer reply builder (driver side). */
void pbft_state_reply_begin(pbft_state_reply *sr, uint16_t sender, size_t limit)
{
    memset(sr, 0, sizeof *sr);
    pbft_wbuf_init(&sr->w, limit);
    sr->start = pbft_msg_begin(&sr->w, PBFT_MSG_STATE_REP, sender);
    sr->count_off = sr->w.len;
    pbft_put_u16(&sr->w, 0);
}

int pbft_state_reply_add(pbft_state_reply *sr, pbft_span block, const pbft_list *cert)
{
    if (sr->count >= PBFT_MAX_STATE_BLOCKS || sr->w.err != 0)
        return -1;
    size_t before = sr->w.len;
    /* Leave room for the signature and the attachment length. */
    size_t need = 4 + block.n + 2 + cert->region.n + KEYS_SIG_BYTES + 4;
    if (sr->w.len + need > sr->w.limit)
        return -1;
    pbft_put_u32(&sr->w, (uint32_t)block.n);
    pbft_put_bytes(&sr->w, block.p, block.n);
    pbft_put_u16(&sr->w, cert->count);
    pbft_put_bytes(&sr->w, cert->region.p, cert->region.n);
    if (sr->w.err != 0) {
        sr->w.len = before;
        sr->w.err = 0;
        return -1;
    }
    sr->count++;
    return 0;
}

void pbft_state_reply_seal(pbft_state_reply *sr, const uint8_t chain[32], const uint8_t sk[64])
{
    if (sr->w.err != 0)
        return;
    sr->w.p[sr->count_off] = (uint8_t)(sr->count >> 8);
    sr->w.p[sr->count_off + 1] = (uint8_t)sr->count;
    pbft_msg_end(&sr->w, sr->start, chain, sk);
    pbft_put_attach(&sr->w, NULL, 0);
}

uint16_t pbft_replica_id(const pbft_replica *r)
{
    return r->c.id;
}
uint64_t pbft_replica_view(const pbft_replica *r)
{
    return r->view;
}

uint64_t pbft_replica_others_view(const pbft_replica *r)
{
    /* The (f+1)-th highest view among the others': at least one correct replica works in
     * that view or a later one, and f faulty ones cannot raise it. */
    uint64_t top[PBFT_MAX_N];
    uint16_t k = 0;
    for (uint16_t j = 0; j < r->c.n; j++)
        if (j != r->c.id && r->pview[j] > 0)
            top[k++] = r->pview[j] - 1;
    return k < r->f + 1 ? UINT64_MAX : nth_largest(top, k, r->f);
}
uint16_t pbft_replica_primary(const pbft_replica *r)
{
    return primary_of(r, r->view);
}
bool pbft_replica_in_view_change(const pbft_replica *r)
{
    return r->in_vc;
}
uint64_t pbft_replica_executed(const pbft_replica *r)
{
    return r->last_exec;
}
uint64_t pbft_replica_stable(const pbft_replica *r)
{
    return r->h;
}
bool pbft_replica_catching_up(const pbft_replica *r)
{
    return r->st_active;
}
uint64_t pbft_replica_next_seq(const pbft_replica *r)
{
    return r->next_seq;
}
size_t pbft_replica_pending(const pbft_replica *r)
{
    return r->held;
}
uint32_t pbft_replica_view_timeout(const pbft_replica *r)
{
    return r->T;
}

uint64_t pbft_replica_request_timeout(const pbft_replica *r)
{
    return req_timeout(r);
}

uint64_t pbft_replica_commit_latency(const pbft_replica *r)
{
    return r->lat_ms;
}
const pbft_stats *pbft_replica_stats(const pbft_replica *r)
{
    return &r->st;
}
void pbft_replica_set_byz(pbft_replica *r, pbft_byz *b)
{
    r->byz = b;
}

void pbft_replica_set_trace(pbft_replica *r, pbft_trace_fn fn, void *ctx)
{
    r->trace = fn;
    r->trace_ctx = ctx;
}

static const char *const drop_names[PBFT_DROP__COUNT] = {
    "malformed",   "unknown_sender", "bad_signature", "self",           "wrong_view",
    "watermark",   "not_primary",    "conflict",      "bad_block",      "bad_cert",
    "bad_newview", "bad_state",      "stale",         "in_view_change", "limit",
};

const char *pbft_drop_name(int reason)
{
    return reason >= 0 && reason < PBFT_DROP__COUNT ? drop_names[reason] : "unknown";
}

const char *pbft_complaint_reason_name(int reason)
{
    static const char *const names[PBFT_COMPLAINT__COUNT] = {"slow", "unfair", "timeout"};
    return reason >= 0 && reason < PBFT_COMPLAINT__COUNT ? names[reason] : "unknown";
}

const char *pbft_vc_reason_name(int reason)
{
    static const char *const names[PBFT_VC__COUNT] = {"request_timeout", "newview_timeout",
                                                      "joined", "complaints"};
    return reason >= 0 && reason < PBFT_VC__COUNT ? names[reason] : "unknown";
}
