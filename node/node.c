/*
 * node.c - the pbftd runtime (see node.h).
 */
#include "node/node.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <nng/nng.h>

#include "consensus/byz.h"
#include "crypto/keys.h"
#include "node/events.h"
#include "node/ledger.h"
#include "node/log.h"
#include "node/metrics.h"
#include "node/order.h"
#include "node/transport.h"
#include "rpc/rpc.h"
#include "storage/store.h"

#define NODE_BATCH 256    /* events per loop iteration (one synced write) */
#define NODE_QUEUE 65536  /* peer frames waiting for the loop */
#define NODE_RQUEUE 16384 /* client transactions waiting for the loop */
#define NODE_VQUEUE 16384 /* frames waiting for verification */
/* Votes (PREPARE, COMMIT, CHECKPOINT, COMPLAINT, VIEW-CHANGE, NEW-VIEW, state requests) from
 * trusted connections wait in their own queue, served before pre-prepares, requests and
 * state replies: one signature each, against up to max_block_txs for a pre-prepare. In one
 * queue a backlog of pre-prepares held back the votes that commit them, and under overload
 * the backups executed nothing for the 2 s request timer and replaced a correct primary
 * (docs/security.md, finding 17). Every NODE_VSHARE-th pick takes the other queue first,
 * so a flood of votes cannot starve pre-prepares either. */
#define NODE_HQUEUE 16384
#define NODE_VSHARE 4
/* Frames from a connection not known to carry valid frames (a new one, or one whose last
 * frame failed its checks) wait in a separate, smaller queue, checked only by some of the
 * workers and after the others: a peer outside the validator set cannot crowd out, delay or
 * take every worker from the frames of the validators (docs/operations.md, "Hostile
 * peers"). A connection is trusted once a frame from it verifies. */
#define NODE_LQUEUE 4096
#define NODE_LOW_BYTES (64u << 20)
#define NODE_TRUSTED 128 /* connections remembered as trusted */
/* Bytes of peer frames held between arrival and the loop (both queues): the counts above
 * alone would let a peer pin 16,384 frames of p2p.max_msg_bytes each. */
#define NODE_FRAME_BYTES (256u << 20)
#define NODE_MAX_WORKERS 16
#define NODE_MAX_DEPTH 64  /* EXECUTED feedback rounds per event */
#define NODE_HEAD_CHECK 16 /* committed blocks checked at start (check_head) */
/* Repair of committed blocks that failed their checks (node_read_block, repair_tick): at
 * most this many heights wait at once (more are noticed again when read again), a request
 * asks one peer for at most NODE_REPAIR_SPAN blocks from the lowest, and an unanswered one
 * goes to the next peer after NODE_REPAIR_RETRY_MS. */
/* A view that differs from the one the others work in this long is reported (status, health,
 * /metrics, event log): longer than a view change normally takes. */
#define NODE_OUT_OF_VIEW_MS 5000
/* Committed blocks whose records passed node_read_block's checks, by a fingerprint of every
 * byte read: the same record read again is not verified again (3 signature checks and a
 * Merkle root made a block read 7 times slower: 194 against 27 microseconds). A record that
 * changes in any byte has another fingerprint and is checked in full. */
#define NODE_VCACHE_SLOTS 4096
#define NODE_REPAIR_MAX 64
#define NODE_REPAIR_SPAN 16
#define NODE_REPAIR_RETRY_MS 500
/* Submit times of transactions taken through this node's RPC, for the commit-latency
 * histogram: a fixed table indexed by hash, where a newer entry overwrites an older one. */
#define NODE_LAT_SLOTS 65536
/* Transactions whose signatures verified (pbft_txcache): a fixed table indexed by hash, a
 * newer entry replacing an older one, under striped locks. */
#define NODE_TXC_SLOTS 65536
#define NODE_TXC_STRIPES 64
/* Frames without attachment whose signatures verified in the last NODE_DUP_WINDOW_MS, by
 * signature: an exact copy arriving within the window is dropped before its signature is
 * checked again. A
 * flooding peer's copies then cost a table lookup, not an Ed25519 verification; honest
 * retransmissions come after resend_ms (500 ms by default) and pass. */
#define NODE_DUP_SLOTS 16384
#define NODE_DUP_WINDOW_MS 200
/* In-order hand-off (node/order.h): connections with frames in flight tracked at once, and
 * frames verified early held for an earlier one of their connection. */
#define NODE_ORDER_SLOTS 1024
#define NODE_ORDER_PARKED 4096

enum { EV_FRAME = 1, EV_REQUEST = 2 };

/* A request waiting for the core's verdict (node_submit). */
struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    int status;
};

struct qev {
    int kind;
    uint8_t *p;
    size_t n;
    bool pre;
    struct waiter *w;
    uint32_t conn; /* frames: the connection it came on */
    order_tag tag; /* frames: its place on that connection */
};

struct ring {
    struct qev *v;
    size_t cap, head, len;
};

struct outframe {
    uint16_t to;
    uint64_t due_ms; /* 0: now (after the write); else a Byzantine delay */
    uint8_t *p;
    size_t n;
};

struct latslot {
    uint64_t key; /* the first 8 bytes of the tx hash; 0 = empty */
    uint64_t t_ms;
};

struct node {
    node_options opt;
    char home[CONFIG_PATH_MAX];
    node_config cfg;
    genesis gen;
    pbft_config pc;
    uint8_t pk[32];
    store *st;
    ledger *lg;
    pbft_replica *r;
    pbft_byz *byz;
    transport *tp;
    rpc_server *rpc;

    pthread_mutex_t mu; /* guards q, hq, vq, lq, stop, status */
    pthread_cond_t cv;  /* loop: events or stop */
    pthread_cond_t vcv; /* workers: frames or stop */
    struct ring q;      /* verified peer frames */
    struct ring rq;     /* client transactions: served after frames, so a flood of requests
                           cannot delay the protocol messages that commit them */
    struct ring hq;     /* votes to verify, from trusted connections (NODE_HQUEUE) */
    struct ring vq;     /* other frames to verify, from trusted connections */
    uint64_t picks;     /* frames taken from hq or vq (under mu), for NODE_VSHARE */
    struct ring lq;     /* frames to verify, from other connections (NODE_LQUEUE) */
    order *ord;         /* verified frames go to q in their connection's arrival order */
    uint64_t low_bytes; /* bytes of the frames in lq (under mu) */
    uint32_t low_busy;  /* workers checking a frame from lq (under mu) */
    uint32_t low_max;   /* at most this many at once */
    uint32_t trusted[NODE_TRUSTED]; /* connections whose last checked frame verified; 0: none */
    uint32_t trusted_next;
    volatile sig_atomic_t stop_flag;
    volatile sig_atomic_t byz_flag; /* SIGUSR1: activate the armed adversary */
    bool stop;
    pthread_t loop_th;
    pthread_t workers[NODE_MAX_WORKERS];
    uint32_t nworkers;
    bool loop_started;

    struct timespec t0;
    uint64_t deadline;
    store_batch *batch;
    struct outframe *outs;
    size_t nouts, capouts;
    pbft_serve *serves;
    size_t nserves, capserves;
    uint64_t dropped_queue; /* incoming frames dropped: verify or event queue full */
    uint64_t frame_bytes;   /* bytes of frames queued or in verification (under mu) */

    node_status status;
    uint64_t exec_height; /* executed into the current batch, not yet durable */
    uint8_t exec_chain[32];
    uint8_t exec_app[32];
    /* Loop statistics, logged at debug level every 5 s. */
    uint64_t st_iters, st_events, st_write_us, st_step_us, st_last_ms;
    char data_path[CONFIG_PATH_MAX + 64]; /* the data directory, for its free space */
    uint64_t space_ms;                    /* when the free space was last checked */
    uint64_t durable_height;              /* written to disk: what status reports */
    uint8_t durable_chain[32];
    uint8_t durable_app[32];

    /* Observability (design section 8). The event log is written by the loop thread (and
     * is thread-safe); the metrics below are guarded by mmu, which GET /metrics takes. */
    evlog *ev;
    evlog *mlog; /* log.msg_log: received signed messages, or NULL */
    pthread_mutex_t mmu;
    mhist h_vc;           /* view change start -> new view entered */
    mhist h_commit;       /* RPC submit -> commit, for transactions taken here */
    mhist h_interval;     /* between consecutive committed blocks */
    uint64_t vc_start_ms; /* start of the view change in progress; 0: none */
    uint64_t last_commit_ms;
    struct latslot *lat;    /* NODE_LAT_SLOTS */
    uint64_t byz_reported;  /* Byzantine actions already in the event log */
    uint64_t byz_report_ms; /* when they were last reported */
    bool peer_up[PBFT_MAX_N];
    char twin_buf[512], override_buf[512]; /* testing-only address lists, split */
    pbft_digest *txc;                      /* NODE_TXC_SLOTS verified transaction hashes */
    pthread_mutex_t txc_mu[NODE_TXC_STRIPES];
    pbft_txcache txcache;
    uint64_t txc_hits; /* atomic: a statistic for /metrics */
    struct dupslot {
        uint8_t sig[32]; /* the first half of the frame's signature */
        uint64_t t_ms;
    } * dup;              /* NODE_DUP_SLOTS, under txc_mu stripes */
    uint64_t dup_dropped; /* atomic */
    /* Frames the verify workers dropped for the core's first reasons (atomics): added to the
     * core's counts in the status. */
    uint64_t pre_drops[PBFT_DROP__COUNT];
    /* Committed blocks read back that failed their checks (node_read_block), atomics. */
    uint64_t corrupt_reads;
    uint64_t corrupt_lowest; /* lowest such height; 0: none */
    /* Heights waiting to be fetched again from peers, ascending, under rpmu (RPC threads add
     * to it through node_read_block); the rest is the loop's. */
    pthread_mutex_t vcmu; /* guards vcache */
    struct vcent {
        uint64_t height;
        uint8_t fp[32];
    } * vcache;
    pthread_mutex_t rpmu;
    uint64_t rp_h[NODE_REPAIR_MAX];
    size_t rp_n;
    uint64_t rp_next_ms;  /* loop: when the next request may go */
    uint16_t rp_peer;     /* loop: the peer asked last */
    uint64_t rp_asked;    /* loop: requests sent */
    uint64_t repaired;    /* blocks written again from a peer's proof (atomic) */
    uint64_t rp_overflow; /* failed heights not queued at NODE_REPAIR_MAX (atomic) */
    uint64_t ov_since; /* loop: when our view began to differ from the others' (0: it does not) */
    bool ov_reported;  /* loop: out_of_view was reported and not yet cleared */
};

/* ---------------------------------------------------------------------------------------- */

static uint64_t now_ms(node *n)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    int64_t ms = (int64_t)(t.tv_sec - n->t0.tv_sec) * 1000 + (t.tv_nsec - n->t0.tv_nsec) / 1000000;
    return (uint64_t)(ms < 0 ? 0 : ms) + 1;
}

/* wall_ms: the Unix time in ms, given to the core for block timestamps only. */
static uint64_t wall_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (uint64_t)t.tv_sec * 1000u + (uint64_t)t.tv_nsec / 1000000u;
}

static bool ring_push(struct ring *r, const struct qev *e)
{
    if (r->len == r->cap)
        return false;
    r->v[(r->head + r->len) % r->cap] = *e;
    r->len++;
    return true;
}

static bool ring_pop(struct ring *r, struct qev *e)
{
    if (r->len == 0)
        return false;
    *e = r->v[r->head];
    r->head = (r->head + 1) % r->cap;
    r->len--;
    return true;
}

/* trusted_slot returns conn's index in n->trusted, or -1 (under mu). */
static int trusted_slot(const node *n, uint32_t conn)
{
    for (int i = 0; conn != 0 && i < NODE_TRUSTED; i++)
        if (n->trusted[i] == conn)
            return i;
    return -1;
}

/* trusted_ring picks a trusted connection's frame's queue from its header's type byte
 * (docs/protocol.md 5.1); anything short or unknown goes with the pre-prepares. */
static struct ring *trusted_ring(node *n, const uint8_t *p, size_t len)
{
    if (len < 8)
        return &n->vq;
    switch (p[1]) {
    case PBFT_MSG_PREPARE:
    case PBFT_MSG_COMMIT:
    case PBFT_MSG_CHECKPOINT:
    case PBFT_MSG_VIEWCHANGE:
    case PBFT_MSG_NEWVIEW:
    case PBFT_MSG_STATE_REQ:
    case PBFT_MSG_COMPLAINT:
        return &n->hq;
    default:
        return &n->vq;
    }
}

/* on_recv runs on an nng thread: copy the frame and hand it to the verify workers. */
static void on_recv(void *ctx, uint32_t conn, const uint8_t *p, size_t len)
{
    node *n = ctx;
    struct qev e = {.kind = EV_FRAME, .n = len, .conn = conn};
    e.p = malloc(len ? len : 1);
    if (e.p == NULL)
        return;
    memcpy(e.p, p, len);
    pthread_mutex_lock(&n->mu);
    bool hi = trusted_slot(n, conn) >= 0;
    struct ring *to = hi ? trusted_ring(n, p, len) : &n->lq;
    bool ok = !n->stop && n->frame_bytes + len <= NODE_FRAME_BYTES &&
              (hi || n->low_bytes + len <= NODE_LOW_BYTES) && to->len < to->cap;
    if (ok) {
        e.tag = order_arrive(n->ord, conn);
        ring_push(to, &e);
        n->frame_bytes += len;
        if (!hi)
            n->low_bytes += len;
        pthread_cond_signal(&n->vcv);
    } else {
        n->dropped_queue++;
    }
    pthread_mutex_unlock(&n->mu);
    if (!ok)
        free(e.p);
}

static bool txc_seen(void *ctx, const pbft_digest *h)
{
    node *n = ctx;
    uint64_t k = pbft_get_u64(h->b);
    pthread_mutex_t *mu = &n->txc_mu[k % NODE_TXC_STRIPES];
    pthread_mutex_lock(mu);
    bool hit = memcmp(n->txc[k % NODE_TXC_SLOTS].b, h->b, 32) == 0;
    pthread_mutex_unlock(mu);
    if (hit)
        __atomic_fetch_add(&n->txc_hits, 1, __ATOMIC_RELAXED);
    return hit;
}

static void txc_add(void *ctx, const pbft_digest *h)
{
    node *n = ctx;
    uint64_t k = pbft_get_u64(h->b);
    pthread_mutex_t *mu = &n->txc_mu[k % NODE_TXC_STRIPES];
    pthread_mutex_lock(mu);
    n->txc[k % NODE_TXC_SLOTS] = *h;
    pthread_mutex_unlock(mu);
}

/* frame_sig finds a frame's signature (docs/protocol.md 5.1): the 64 bytes after the
 * 8-byte header and the body. False if the frame is too short to have one, or if it has an
 * attachment: the signature does not cover a PRE-PREPARE's block, so a copy with another
 * (or no) block is not the same frame and must not be dropped as one. (Such copies are
 * cheap anyway: the block's transactions hit the verified-transaction cache.) */
static bool frame_sig(const uint8_t *p, size_t len, const uint8_t **sig)
{
    if (len < 8 + 64 + 4)
        return false;
    uint64_t body = (uint64_t)p[4] << 24 | (uint64_t)p[5] << 16 | (uint64_t)p[6] << 8 | p[7];
    if (body + 8 + 64 + 4 != len)
        return false;
    *sig = p + 8 + body;
    return true;
}

/* dup_check returns true if sig verified within the window; with note, records it now. */
static bool dup_check(node *n, const uint8_t *sig, bool note)
{
    uint64_t k = pbft_get_u64(sig), t = now_ms(n);
    struct dupslot *d = &n->dup[k % NODE_DUP_SLOTS];
    pthread_mutex_t *mu = &n->txc_mu[k % NODE_TXC_STRIPES];
    pthread_mutex_lock(mu);
    bool dup = memcmp(d->sig, sig, 32) == 0 && t - d->t_ms < NODE_DUP_WINDOW_MS;
    if (note) {
        memcpy(d->sig, sig, 32);
        d->t_ms = t;
    }
    pthread_mutex_unlock(mu);
    return dup;
}

/* msglog_record appends a received, signature-verified consensus message to log.msg_log:
 * who signed what, for which (view, seq). A replica that signs two different messages for
 * the same (type, view, seq) equivocates; tests/integration/crash_consistency.sh looks for
 * that across kill -9 and restart, from what the peers received. CHECKPOINT has no view
 * (0), VIEW-CHANGE and NEW-VIEW no seq (0), a COMPLAINT's seq is its reason. */
static void msglog_record(node *n, const uint8_t *p, size_t len)
{
    static const char *const names[] = {
        [PBFT_MSG_PREPREPARE] = "PREPREPARE", [PBFT_MSG_PREPARE] = "PREPARE",
        [PBFT_MSG_COMMIT] = "COMMIT",         [PBFT_MSG_CHECKPOINT] = "CHECKPOINT",
        [PBFT_MSG_VIEWCHANGE] = "VIEWCHANGE", [PBFT_MSG_NEWVIEW] = "NEWVIEW",
        [PBFT_MSG_COMPLAINT] = "COMPLAINT"};
    pbft_env e;
    if (pbft_frame_decode(p, len, &e) != PBFT_OK || e.sender >= n->pc.n)
        return;
    uint64_t view = 0, seq = 0;
    switch (e.type) {
    case PBFT_MSG_PREPREPARE:
    case PBFT_MSG_PREPARE:
    case PBFT_MSG_COMMIT: {
        pbft_vote v;
        if (pbft_vote_decode(e.body, &v) != PBFT_OK)
            return;
        view = v.view;
        seq = v.seq;
        break;
    }
    case PBFT_MSG_CHECKPOINT: {
        pbft_ckpt c;
        if (pbft_ckpt_decode(e.body, &c) != PBFT_OK)
            return;
        seq = c.seq;
        break;
    }
    case PBFT_MSG_VIEWCHANGE: {
        pbft_viewchange vc;
        if (pbft_viewchange_decode(e.body, &vc) != PBFT_OK)
            return;
        view = vc.new_view;
        break;
    }
    case PBFT_MSG_NEWVIEW: {
        pbft_newview nv;
        if (pbft_newview_decode(e.body, &nv) != PBFT_OK)
            return;
        view = nv.view;
        break;
    }
    case PBFT_MSG_COMPLAINT: {
        pbft_complaint_msg c;
        if (pbft_complaint_decode(e.body, &c) != PBFT_OK)
            return;
        view = c.view;
        seq = c.reason;
        break;
    }
    default:
        return; /* requests and state transfer state nothing about an order */
    }
    uint8_t h[32];
    char hex[65];
    keys_sha256(e.whole.p, e.whole.n, h);
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", h[i]);
    json_t *f = json_pack("{s:i, s:s, s:I, s:I, s:s}", "from", (int)e.sender, "type", names[e.type],
                          "view", (json_int_t)view, "seq", (json_int_t)seq, "hash", hex);
    evlog_emit(n->mlog, "msg", f);
}

/* promote moves the frames of a connection just trusted from the untrusted queue to the
 * end of the trusted one (under mu), keeping the order of the rest. Its later frames go
 * there directly, and the in-order hand-off (node/order.c) holds them until these earlier
 * ones are verified: left in the untrusted queue, which is served only when the trusted one
 * is empty, they would hold up the connection for as long as the load lasts. O(queue), once
 * per connection that becomes trusted. */
static void promote(node *n, uint32_t conn)
{
    for (size_t k = n->lq.len; k > 0; k--) {
        struct qev e;
        ring_pop(&n->lq, &e);
        if (e.conn == conn && ring_push(trusted_ring(n, e.p, e.n), &e)) {
            n->low_bytes -= e.n;
            continue;
        }
        ring_push(&n->lq, &e); /* there is room: one was just popped */
    }
    if (n->vq.len > 0 || n->hq.len > 0)
        pthread_cond_broadcast(&n->vcv);
}

/* worker_done ends a worker's check of a frame (under mu): verdict > 0, the frame verified
 * and its connection is trusted from now on; < 0, it failed its first checks, which a
 * validator's frame never does, and the connection is no longer trusted. (It is not closed:
 * nng 1.5 leaks the descriptor of a connection closed from this side.) */
static void worker_done(node *n, bool low, uint32_t conn, int verdict)
{
    if (low) {
        n->low_busy--;
        if (n->lq.len > 0)
            pthread_cond_signal(&n->vcv);
    }
    int i = trusted_slot(n, conn);
    if (verdict > 0 && i < 0 && conn != 0) {
        n->trusted[n->trusted_next++ % NODE_TRUSTED] = conn;
        promote(n, conn);
    } else if (verdict < 0 && i >= 0) {
        n->trusted[i] = 0;
    }
}

/* to_loop passes a verified frame to the loop (under mu), called by order_done in its
 * connection's order. */
static void to_loop(void *ctx, void *item)
{
    node *n = ctx;
    struct qev *e = item;
    if (!n->stop && ring_push(&n->q, e)) {
        pthread_cond_signal(&n->cv);
    } else {
        n->dropped_queue++;
        n->frame_bytes -= e->n;
        free(e->p);
    }
}

static void release_frame(void *item)
{
    free(((struct qev *)item)->p);
}

/* request_used_up: a peer's REQUEST whose nonce is below the sender's durable nonce carries a
 * transaction that executed already (or can only fail). The core forgets committed hashes
 * across a restart, so without this a primary could propose such a re-sent copy again in a
 * new block (issue 12, "one transaction, one block"); node_submit refuses clients' copies
 * the same way. */
static bool request_used_up(node *n, const pbft_env *env)
{
    pbft_span tx;
    pbft_tx t;
    uint64_t bal, used;
    return pbft_request_decode(env->body, &tx) == PBFT_OK &&
           pbft_tx_decode(tx.p, tx.n, &t) == PBFT_OK &&
           node_account(n, t.sender, &bal, &used) == STORE_OK && t.nonce < used;
}

static void *worker_main(void *arg)
{
    node *n = arg;
    for (;;) {
        struct qev e;
        pthread_mutex_lock(&n->mu);
        while (!n->stop && n->hq.len == 0 && n->vq.len == 0 &&
               (n->lq.len == 0 || n->low_busy >= n->low_max))
            pthread_cond_wait(&n->vcv, &n->mu);
        if (n->stop) {
            pthread_mutex_unlock(&n->mu);
            return NULL;
        }
        bool vfirst = n->picks++ % NODE_VSHARE == 0;
        bool low = vfirst ? !ring_pop(&n->vq, &e) && !ring_pop(&n->hq, &e)
                          : !ring_pop(&n->hq, &e) && !ring_pop(&n->vq, &e);
        if (low) {
            ring_pop(&n->lq, &e);
            n->low_bytes -= e.n;
            n->low_busy++;
        }
        pthread_mutex_unlock(&n->mu);
        const uint8_t *sig = NULL;
        if (frame_sig(e.p, e.n, &sig) && dup_check(n, sig, false)) {
            __atomic_fetch_add(&n->dup_dropped, 1, __ATOMIC_RELAXED);
            pthread_mutex_lock(&n->mu);
            n->frame_bytes -= e.n;
            worker_done(n, low, e.conn, 0);
            order_done(n->ord, e.tag, NULL, to_loop, n);
            pthread_mutex_unlock(&n->mu);
            free(e.p);
            continue;
        }
        /* A frame that is malformed, from no validator, claims to be ours or fails its
         * envelope signature is dropped here and counted under the reason the core would give
         * (it checks in this order): such frames cost no verification on the loop thread, so
         * a peer sending them cannot slow consensus down. A frame failing later checks (a
         * PRE-PREPARE's block) goes on unverified: the core re-checks it and counts why. */
        pbft_env env;
        int why;
        if (e.n > PBFT_MAX_MSG_BYTES || pbft_frame_decode(e.p, e.n, &env) != PBFT_OK)
            why = PBFT_DROP_MALFORMED + 1;
        else if (env.sender >= n->pc.n)
            why = PBFT_DROP_UNKNOWN_SENDER + 1;
        else if (env.sender == n->pc.id)
            why = PBFT_DROP_SELF + 1;
        else
            why = pbft_frame_preverify_cached(&n->pc, e.p, e.n, &n->txcache);
        if (why == 0 && env.type == PBFT_MSG_REQUEST && request_used_up(n, &env))
            why = PBFT_DROP_STALE + 1;
        if (why == PBFT_DROP_MALFORMED + 1 || why == PBFT_DROP_UNKNOWN_SENDER + 1 ||
            why == PBFT_DROP_SELF + 1 || why == PBFT_DROP_BAD_SIGNATURE + 1 ||
            why == PBFT_DROP_STALE + 1) {
            __atomic_fetch_add(&n->pre_drops[why - 1], 1, __ATOMIC_RELAXED);
            pthread_mutex_lock(&n->mu);
            n->frame_bytes -= e.n;
            /* a used-up REQUEST verified: an honest peer forwards a client's late copy */
            worker_done(n, low, e.conn, why == PBFT_DROP_STALE + 1 ? 1 : -1);
            order_done(n->ord, e.tag, NULL, to_loop, n);
            pthread_mutex_unlock(&n->mu);
            free(e.p);
            continue;
        }
        e.pre = why == 0;
        if (e.pre && sig != NULL)
            dup_check(n, sig, true);
        pthread_mutex_lock(&n->mu);
        worker_done(n, low, e.conn, e.pre ? 1 : 0);
        order_done(n->ord, e.tag, &e, to_loop, n);
        pthread_mutex_unlock(&n->mu);
    }
}

/* ---------------------------------------------------------------------------------------- */

/* no_space: does a storage error say the filesystem is full? */
static bool no_space(const char *msg)
{
    return strstr(msg, "No space left on device") != NULL || strstr(msg, "ENOSPC") != NULL;
}

static void fatal_status(const char *what, const char *msg, int status)
{
    log_msg(LOG_ERROR, "fatal: %s: %s; stopping so nothing is sent that is not on disk", what, msg);
    /* _exit, not exit: other threads (nng's, RocksDB's) still run, and exit()'s teardown of
     * libraries under them can crash or hang. Every write so far was synced. */
    _exit(status);
}

/* fatal: exit status 2, or NODE_EXIT_DISK_FULL when the filesystem is full, so that systemd
 * does not restart the node into it. */
static void fatal(node *n, const char *what, const char *msg)
{
    (void)n;
    fatal_status(what, msg, no_space(msg) ? NODE_EXIT_DISK_FULL : 2);
}

/* RocksDB 7.8 (Debian 12) is built with its assertions on, and opening a store on a
 * filesystem with no space left can end in one (`sync_without_flush_called_`, in
 * WritableFileWriter) after a write failed. node.min_free_mb keeps a node from opening so
 * close to full; for the case where it is off, an abort inside store_open ends the process
 * with a message that says what happened and the status a full disk has (1 otherwise),
 * instead of a bare SIGABRT that systemd would restart into again and again. The message is
 * written before the open (a signal handler may only write and exit). */
static char open_abort_msg[CONFIG_PATH_MAX + 400];
static size_t open_abort_len;
static volatile sig_atomic_t open_abort_status = 1;

static void on_abort_in_open(int sig)
{
    (void)sig;
    ssize_t w = write(2, open_abort_msg, open_abort_len);
    (void)w;
    _exit(open_abort_status);
}

/* free_mib returns the MiB an unprivileged writer may still use on the filesystem holding
 * path, or -1 if statvfs fails. */
static int64_t free_mib(const char *path)
{
    struct statvfs v;
    if (statvfs(path, &v) != 0)
        return -1;
    return (int64_t)(((uint64_t)v.f_bavail * (uint64_t)v.f_frsize) >> 20);
}

/* check_space stops the node, before the batch is written, once the data directory's
 * filesystem has less than half of node.min_free_mb free: RocksDB out of space mid-write
 * fails the write (and, reopened on a full disk, can abort on an assertion of its own), so
 * stopping with room left is the clean end. Checked at most once a second, and before every
 * large batch. */
static void check_space(node *n, bool large)
{
    if (n->cfg.min_free_mb == 0)
        return;
    uint64_t t = now_ms(n);
    if (!large && n->space_ms != 0 && t - n->space_ms < 1000)
        return; /* (the first write is always checked: a node's first second counts too) */
    n->space_ms = t;
    int64_t f = free_mib(n->data_path);
    if (f >= 0 && (uint64_t)f * 2 < n->cfg.min_free_mb) {
        char msg[CONFIG_PATH_MAX + 400];
        snprintf(msg, sizeof msg,
                 "%s: %lld MiB free on its filesystem, below half of node.min_free_mb (%u MiB); "
                 "free space, then start it again",
                 n->data_path, (long long)f, n->cfg.min_free_mb);
        fatal_status("disk nearly full", msg, NODE_EXIT_DISK_FULL);
    }
}

static void queue_out(node *n, uint16_t to, uint64_t due, const uint8_t *p, size_t len)
{
    if (n->nouts == n->capouts) {
        size_t cap = n->capouts ? n->capouts * 2 : 256;
        struct outframe *o = realloc(n->outs, cap * sizeof *o);
        if (o == NULL)
            return; /* dropped: PBFT retransmits */
        n->outs = o;
        n->capouts = cap;
    }
    uint8_t *c = malloc(len);
    if (c == NULL)
        return;
    memcpy(c, p, len);
    n->outs[n->nouts++] = (struct outframe){to, due, c, len};
}

static void step_and_collect(node *n, const pbft_event *ev, int depth);

static uint64_t lat_key(const pbft_digest *h)
{
    uint64_t k = pbft_get_u64(h->b);
    return k != 0 ? k : 1;
}

/* observe_commit feeds the block-interval and commit-latency histograms. */
static void observe_commit(node *n, const pbft_commit *c)
{
    uint64_t t = now_ms(n);
    pbft_block b;
    bool ok = pbft_block_decode(c->block.p, c->block.n, &b) == PBFT_OK;
    pthread_mutex_lock(&n->mmu);
    if (n->last_commit_ms != 0)
        mhist_observe(&n->h_interval, (double)(t - n->last_commit_ms) / 1000.0);
    n->last_commit_ms = t;
    size_t off = 0;
    pbft_span tx;
    while (ok && n->lat != NULL && pbft_block_next_tx(&b, &off, &tx)) {
        pbft_digest h;
        pbft_tx_hash(tx.p, tx.n, &h);
        uint64_t k = lat_key(&h);
        struct latslot *sl = &n->lat[k % NODE_LAT_SLOTS];
        if (sl->key == k) {
            mhist_observe(&n->h_commit, (double)(t - sl->t_ms) / 1000.0);
            sl->key = 0;
        }
    }
    pthread_mutex_unlock(&n->mmu);
}

/* collect takes everything out of one output before the next call invalidates it. */
static void collect(node *n, pbft_output *o, int depth)
{
    if (o == NULL)
        return;
    for (size_t i = 0; i < o->n_persist; i++)
        store_batch_persist(n->batch, &o->persist[i]);
    uint64_t t = now_ms(n);
    for (size_t i = 0; i < o->n_sends; i++) {
        const pbft_send *s = &o->sends[i];
        queue_out(n, s->to, s->delay_ms ? t + s->delay_ms : 0, s->frame.p, s->frame.n);
    }
    for (size_t i = 0; i < o->n_serves; i++) {
        if (n->nserves == n->capserves) {
            size_t cap = n->capserves ? n->capserves * 2 : 16;
            pbft_serve *sv = realloc(n->serves, cap * sizeof *sv);
            if (sv == NULL)
                break;
            n->serves = sv;
            n->capserves = cap;
        }
        n->serves[n->nserves++] = o->serves[i];
    }
    n->deadline = o->deadline_ms;
    /* Execute committed blocks now (into the same batch), then report them to the core. */
    size_t nc = o->n_commits;
    if (nc == 0)
        return;
    uint64_t *seqs = malloc(nc * sizeof *seqs);
    uint8_t(*apps)[32] = malloc(nc * 32);
    if (seqs == NULL || apps == NULL)
        fatal(n, "execute", "out of memory");
    for (size_t i = 0; i < nc; i++) {
        const pbft_commit *c = &o->commits[i];
        if (ledger_execute(n->lg, c, n->batch, apps[i]) != STORE_OK)
            fatal(n, "execute", "the ledger could not read its state");
        observe_commit(n, c);
        seqs[i] = c->seq;
        /* Reported only after the batch is durable (flush), so a height seen in status is
         * always readable through the block RPC. */
        n->exec_height = c->seq;
        memcpy(n->exec_chain, c->chain.b, 32);
        memcpy(n->exec_app, apps[i], 32);
    }
    for (size_t i = 0; i < nc && depth < NODE_MAX_DEPTH; i++) {
        pbft_event ev = {.kind = PBFT_EV_EXECUTED, .now_ms = now_ms(n), .wall_ms = wall_ms()};
        ev.u.exec.seq = seqs[i];
        memcpy(ev.u.exec.app_hash, apps[i], 32);
        step_and_collect(n, &ev, depth + 1);
    }
    free(seqs);
    free(apps);
}

/* step steps the core. A failed core (replica.h: an allocation failed or an output bound was
 * passed) emitted nothing in that step, and this iteration's batch and frames are still
 * unwritten and unsent: stop now, fail-stop, and a restart recovers from the records. */
static int step(node *n, const pbft_event *ev, pbft_output **o)
{
    int rc = pbft_replica_step(n->r, ev, o);
    if (rc == PBFT_STEP_FAILED)
        fatal(n, "consensus core", pbft_replica_failure(n->r));
    return rc;
}

static void step_and_collect(node *n, const pbft_event *ev, int depth)
{
    pbft_output *o = NULL;
    if (step(n, ev, &o) != 0)
        return;
    collect(n, o, depth);
}

static void serve(node *n, const pbft_serve *sv)
{
    uint64_t head;
    pbft_digest chain;
    uint8_t app[32];
    if (store_head(n->st, &head, &chain, app) != STORE_OK)
        return;
    static const pbft_digest zero;
    pbft_state_reply sr;
    pbft_state_reply_begin(&sr, n->pc.id, n->cfg.p2p_max_msg_bytes);
    for (uint64_t h = sv->from_seq; h <= sv->to_seq && h <= head; h++) {
        store_block_read b;
        const char *why;
        if (node_read_block(n, h, &b, &why) != STORE_OK)
            break; /* never sent: what its certificate does not prove */
        bool want = memcmp(sv->d.b, zero.b, 32) == 0 || memcmp(sv->d.b, b.digest.b, 32) == 0;
        int rc = 0;
        if (want) {
            pbft_list cert = {b.cert_count, {b.cert, b.cert_n}};
            (void)pbft_byz_corrupt_state(n->byz, b.block, b.block_n); /* testing only */
            rc = pbft_state_reply_add(&sr, (pbft_span){b.block, b.block_n}, &cert);
        }
        store_block_read_free(&b);
        if (rc != 0)
            break;
    }
    if (sr.count > 0) {
        pbft_state_reply_seal(&sr, n->pc.chain, n->pc.sk);
        if (sr.w.err == 0)
            transport_send(n->tp, sv->to, sr.w.p, sr.w.len);
    }
    pbft_wbuf_free(&sr.w);
}

/* flush: durable first, then out. */
static uint64_t mono_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000u + (uint64_t)t.tv_nsec / 1000u;
}

static void flush(node *n)
{
    /* A poisoned batch is written too, so that its failure stops the node here, before any
     * frame goes out: its first operation may be the one that failed (count 0), and skipping
     * it would send votes without their records and drop every later write. */
    if (store_batch_count(n->batch) > 0 || store_batch_failed(n->batch)) {
        char err[512];
        check_space(n, store_batch_count(n->batch) > 1024);
        uint64_t t0 = mono_us();
        if (store_write(n->st, n->batch, true, err, sizeof err) != STORE_OK)
            fatal(n, "store write", err);
        n->st_write_us += mono_us() - t0;
        store_batch_clear(n->batch);
    }
    ledger_written(n->lg);
    n->durable_height = n->exec_height; /* published by update_status, under the lock */
    memcpy(n->durable_chain, n->exec_chain, 32);
    memcpy(n->durable_app, n->exec_app, 32);
    uint64_t t = now_ms(n);
    size_t keep = 0;
    for (size_t i = 0; i < n->nouts; i++) {
        struct outframe *o = &n->outs[i];
        if (o->due_ms > t) {
            n->outs[keep++] = *o; /* a Byzantine delay: later */
            continue;
        }
        if (o->to == PBFT_TO_ALL) {
            for (uint16_t j = 0; j < n->pc.n; j++)
                if (j != n->pc.id)
                    transport_send(n->tp, j, o->p, o->n);
        } else {
            transport_send(n->tp, o->to, o->p, o->n);
        }
        free(o->p);
    }
    n->nouts = keep;
    for (size_t i = 0; i < n->nserves; i++)
        serve(n, &n->serves[i]);
    n->nserves = 0;
}

static void update_status(node *n)
{
    node_status s = n->status;
    s.id = n->pc.id;
    s.height = n->durable_height;
    memcpy(s.last_chain, n->durable_chain, 32);
    memcpy(s.last_app_hash, n->durable_app, 32);
    s.view = pbft_replica_view(n->r);
    s.primary = pbft_replica_primary(n->r);
    s.in_view_change = pbft_replica_in_view_change(n->r);
    s.stable = pbft_replica_stable(n->r);
    s.pending = pbft_replica_pending(n->r);
    s.stats = *pbft_replica_stats(n->r);
    for (int d = 0; d < PBFT_DROP__COUNT; d++)
        s.stats.drops[d] += __atomic_load_n(&n->pre_drops[d], __ATOMIC_RELAXED);
    s.catching_up = pbft_replica_catching_up(n->r);
    s.request_timeout_ms = pbft_replica_request_timeout(n->r);
    s.commit_latency_ms = pbft_replica_commit_latency(n->r);
    uint64_t up = 0;
    for (uint16_t j = 0; j < n->pc.n; j++) {
        transport_peer_stats ps;
        if (j == n->pc.id)
            continue;
        transport_peer_stats_get(n->tp, j, &ps);
        up += ps.connected > 0;
    }
    s.peers_connected = up;
    s.byz_actions = pbft_byz_actions(n->byz); /* the loop's own: read it here, not on RPC */
    s.others_view = pbft_replica_others_view(n->r);
    s.out_of_view = n->ov_reported;
    pthread_mutex_lock(&n->mu);
    s.dropped_queue = n->dropped_queue;
    n->status = s;
    pthread_mutex_unlock(&n->mu);
}

static void observe_loop(node *n);
static bool rp_wants(node *n, uint64_t height, uint64_t *lowest, uint64_t *highest);
static void repair_offer(node *n, const uint8_t *p, size_t len);
static void repair_tick(node *n);

static void *loop_main(void *arg)
{
    node *n = arg;
    struct qev evs[2 * NODE_BATCH];
    for (;;) {
        size_t got = 0;
        pthread_mutex_lock(&n->mu);
        for (;;) {
            /* Only node_close stops the loop (n->stop), not the signal's stop_flag: node_close
             * closes RPC first, and an RPC handler waiting in node_submit needs the loop to
             * answer it. The loop stopping on the signal itself deadlocked that (a replica
             * that never exited on SIGTERM under load, seen in backup_restart). */
            if (n->stop || n->q.len > 0 || n->rq.len > 0)
                break;
            uint64_t t = now_ms(n);
            uint64_t wake = n->deadline;
            for (size_t i = 0; i < n->nouts; i++)
                if (n->outs[i].due_ms != 0 && n->outs[i].due_ms < wake)
                    wake = n->outs[i].due_ms;
            if (wake <= t)
                break;
            /* Sleep until the deadline, at most 100 ms: then one (idle) iteration runs, so a
             * stop request, a peer's connection state and the status are noticed. */
            uint64_t ms = wake - t > 100 ? 100 : wake - t;
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += (long)(ms % 1000) * 1000000L;
            ts.tv_sec += (time_t)(ms / 1000) + ts.tv_nsec / 1000000000L;
            ts.tv_nsec %= 1000000000L;
            pthread_cond_timedwait(&n->cv, &n->mu, &ts);
            break;
        }
        if (n->stop) {
            pthread_mutex_unlock(&n->mu);
            break;
        }
        /* Protocol frames first, then at most as many client transactions. */
        while (got < NODE_BATCH && ring_pop(&n->q, &evs[got]))
            got++;
        size_t frames = got;
        while (got < frames + NODE_BATCH && ring_pop(&n->rq, &evs[got]))
            got++;
        pthread_mutex_unlock(&n->mu);

        uint64_t step_t0 = mono_us();
        uint64_t done_bytes = 0;
        for (size_t i = 0; i < got; i++) {
            if (evs[i].kind == EV_FRAME)
                done_bytes += evs[i].n;
            pbft_event ev = {.now_ms = now_ms(n), .wall_ms = wall_ms()};
            if (evs[i].kind == EV_FRAME && evs[i].pre && n->mlog != NULL)
                msglog_record(n, evs[i].p, evs[i].n);
            uint64_t rp_lo = 0;
            if (evs[i].kind == EV_FRAME && evs[i].n > 1 && evs[i].p[1] == PBFT_MSG_STATE_REP &&
                (rp_wants(n, 0, &rp_lo, NULL), rp_lo != 0))
                repair_offer(n, evs[i].p, evs[i].n); /* then the core, which drops it as stale */
            if (evs[i].kind == EV_FRAME) {
                ev.kind = PBFT_EV_MESSAGE;
                ev.u.msg.p = evs[i].p;
                ev.u.msg.n = evs[i].n;
                ev.u.msg.preverified = evs[i].pre;
            } else {
                ev.kind = PBFT_EV_REQUEST;
                ev.u.req.p = evs[i].p;
                ev.u.req.n = evs[i].n;
                ev.u.req.preverified = evs[i].pre;
            }
            pbft_output *o = NULL;
            int status = PBFT_REQ_FULL;
            if (step(n, &ev, &o) == 0) {
                status = o->request_status;
                collect(n, o, 0);
            }
            if (evs[i].w != NULL) {
                pthread_mutex_lock(&evs[i].w->mu);
                evs[i].w->status = status;
                evs[i].w->done = true;
                pthread_cond_signal(&evs[i].w->cv);
                pthread_mutex_unlock(&evs[i].w->mu);
            }
            free(evs[i].p);
        }
        if (n->deadline != UINT64_MAX && now_ms(n) >= n->deadline) {
            pbft_event ev = {.kind = PBFT_EV_TICK, .now_ms = now_ms(n), .wall_ms = wall_ms()};
            step_and_collect(n, &ev, 0);
        }
        n->st_step_us += mono_us() - step_t0;
        if (done_bytes > 0) {
            pthread_mutex_lock(&n->mu);
            n->frame_bytes -= done_bytes;
            pthread_mutex_unlock(&n->mu);
        }
        n->st_iters++;
        n->st_events += got;
        flush(n);
        repair_tick(n);
        update_status(n);
        observe_loop(n);
        uint64_t t = now_ms(n);
        if (t - n->st_last_ms >= 5000) {
            log_msg(LOG_DEBUG,
                    "loop: %llu iterations, %llu events, %llu ms stepping, %llu ms in synced "
                    "writes over %llu ms; queues: frames %zu, requests %zu, to verify %zu",
                    (unsigned long long)n->st_iters, (unsigned long long)n->st_events,
                    (unsigned long long)(n->st_step_us / 1000),
                    (unsigned long long)(n->st_write_us / 1000),
                    (unsigned long long)(t - n->st_last_ms), n->q.len, n->rq.len,
                    n->hq.len + n->vq.len + n->lq.len);
            n->st_iters = n->st_events = n->st_write_us = n->st_step_us = 0;
            n->st_last_ms = t;
        }
    }
    return NULL;
}

/* ---------------------------------------------------------------------------------------- */

int node_submit(node *n, const uint8_t *tx, size_t len, bool wait)
{
    if (len > PBFT_MAX_TX_BYTES)
        return PBFT_REQ_TOO_LARGE;
    pbft_tx t;
    if (pbft_tx_decode(tx, len, &t) != PBFT_OK)
        return PBFT_REQ_MALFORMED;
    /* Verify on the caller's thread (an RPC worker), not on the loop; remember it, so the
     * pre-prepare that carries it here is not checked again. */
    if (!pbft_tx_verify(&t, n->pc.chain))
        return PBFT_REQ_BAD_SIGNATURE;
    pbft_digest th;
    pbft_tx_hash(tx, len, &th);
    txc_add(n, &th);
    /* A nonce below the sender's durable nonce is used up: it can only fail at execution.
     * (Higher nonces are accepted: the sender may have earlier ones in flight.) */
    uint64_t bal, used;
    if (node_account(n, t.sender, &bal, &used) == STORE_OK && t.nonce < used)
        return PBFT_REQ_BAD_NONCE;
    struct waiter w;
    struct qev e = {.kind = EV_REQUEST, .n = len, .pre = true, .w = wait ? &w : NULL};
    e.p = malloc(len);
    if (e.p == NULL)
        return PBFT_REQ_FULL;
    memcpy(e.p, tx, len);
    if (wait) {
        pthread_mutex_init(&w.mu, NULL);
        pthread_cond_init(&w.cv, NULL);
        w.done = false;
        w.status = PBFT_REQ_FULL;
    }
    pthread_mutex_lock(&n->mu);
    bool ok = !n->stop && ring_push(&n->rq, &e);
    if (ok)
        pthread_cond_signal(&n->cv);
    pthread_mutex_unlock(&n->mu);
    if (!ok) {
        free(e.p);
    } else if (n->lat != NULL) {
        uint64_t k = lat_key(&th);
        pthread_mutex_lock(&n->mmu);
        n->lat[k % NODE_LAT_SLOTS] = (struct latslot){k, now_ms(n)};
        pthread_mutex_unlock(&n->mmu);
    }
    if (!wait)
        return ok ? PBFT_REQ_ACCEPTED : PBFT_REQ_FULL;
    if (ok) {
        /* The loop answers every queued waiter, even when it stops (node_close), so this
         * wait ends and the waiter on our stack is never used after we return. */
        pthread_mutex_lock(&w.mu);
        while (!w.done)
            pthread_cond_wait(&w.cv, &w.mu);
        pthread_mutex_unlock(&w.mu);
    }
    pthread_mutex_destroy(&w.mu);
    pthread_cond_destroy(&w.cv);
    return ok ? w.status : PBFT_REQ_FULL;
}

void node_status_get(node *n, node_status *out)
{
    pthread_mutex_lock(&n->mu);
    *out = n->status;
    pthread_mutex_unlock(&n->mu);
}

struct store *node_store(node *n)
{
    return n->st;
}

/* block_proven: `block` decodes as the block at `height`, its transactions match its root,
 * and `cert` holds n - f signed COMMITs for its digest (pbft_commit_cert_verify): the block
 * is the committed one, whoever handed it over. Fills *d and *view. NULL, or what failed. */
static const char *block_proven(node *n, uint64_t height, pbft_span block, const pbft_list *cert,
                                pbft_digest *d, uint64_t *view)
{
    pbft_block blk;
    if (pbft_block_decode(block.p, block.n, &blk) != PBFT_OK || blk.height != height)
        return "the block does not decode as the block at its height";
    int root = pbft_block_check_root(&blk, NULL);
    if (root == PBFT_E_NOMEM)
        return "out of memory checking the block"; /* refused too: not proven */
    if (root != PBFT_OK)
        return "the block's transactions do not match its transaction root";
    pbft_block_digest(&blk, d);
    if (!pbft_commit_cert_verify(cert, n->pc.n, n->pc.chain, (const uint8_t(*)[32])n->pc.pubkeys,
                                 height, d, view))
        return "the commit certificate does not prove the block";
    return NULL;
}

/* prev_chain: the stored chain hash of block height - 1 (the genesis hash below 1), as
 * stored: block_check compares the link, and a wrong predecessor fails its own check. */
static int prev_chain(node *n, uint64_t height, pbft_digest *prev)
{
    if (height == 1) {
        memcpy(prev->b, n->pc.genesis, 32);
        return STORE_OK;
    }
    store_block_read p;
    memset(&p, 0, sizeof p);
    int rc = store_get_block(n->st, height - 1, &p);
    memcpy(prev->b, p.chain.b, 32);
    store_block_read_free(&p);
    return rc;
}

static const char *block_check(node *n, uint64_t height, const store_block_read *b)
{
    if (b->height != height)
        return "the block does not decode as the block at its height";
    pbft_digest d;
    uint64_t view;
    pbft_list cert = {b->cert_count, {b->cert, b->cert_n}};
    const char *why = block_proven(n, height, (pbft_span){b->block, b->block_n}, &cert, &d, &view);
    if (why != NULL)
        return why;
    if (memcmp(d.b, b->digest.b, 32) != 0)
        return "the block's digest is not the stored digest";
    if (view != b->view)
        return "the commit certificate's view is not the stored view";
    pbft_digest prev, c;
    if (prev_chain(n, height, &prev) != STORE_OK)
        return "the block's predecessor cannot be read";
    pbft_chain_next(&prev, &d, &c);
    if (memcmp(c.b, b->chain.b, 32) != 0)
        return "the block's chain hash does not follow from its predecessor's";
    return NULL;
}

/* rp_add queues height for repair (any thread). */
static void rp_add(node *n, uint64_t height)
{
    pthread_mutex_lock(&n->rpmu);
    size_t i = 0;
    while (i < n->rp_n && n->rp_h[i] < height)
        i++;
    if (i < n->rp_n && n->rp_h[i] == height) {
        /* already waiting */
    } else if (n->rp_n == NODE_REPAIR_MAX) {
        __atomic_add_fetch(&n->rp_overflow, 1, __ATOMIC_RELAXED);
    } else {
        memmove(&n->rp_h[i + 1], &n->rp_h[i], (n->rp_n - i) * sizeof n->rp_h[0]);
        n->rp_h[i] = height;
        n->rp_n++;
    }
    pthread_mutex_unlock(&n->rpmu);
}

static bool rp_take(node *n, uint64_t height)
{
    pthread_mutex_lock(&n->rpmu);
    bool had = false;
    for (size_t i = 0; i < n->rp_n; i++)
        if (n->rp_h[i] == height) {
            memmove(&n->rp_h[i], &n->rp_h[i + 1], (n->rp_n - i - 1) * sizeof n->rp_h[0]);
            n->rp_n--;
            had = true;
            break;
        }
    pthread_mutex_unlock(&n->rpmu);
    return had;
}

static bool rp_wants(node *n, uint64_t height, uint64_t *lowest, uint64_t *highest)
{
    pthread_mutex_lock(&n->rpmu);
    bool want = false;
    for (size_t i = 0; i < n->rp_n && !want; i++)
        want = n->rp_h[i] == height;
    if (lowest != NULL)
        *lowest = n->rp_n > 0 ? n->rp_h[0] : 0;
    if (highest != NULL)
        *highest = n->rp_n > 0 ? n->rp_h[n->rp_n - 1] : 0;
    pthread_mutex_unlock(&n->rpmu);
    return want;
}

/* record_fp: SHA-256 over everything a block record read back holds. */
static void record_fp(const store_block_read *b, uint8_t fp[32])
{
    uint8_t hdr[8 + 8 + 32 + 32 + 32 + 2];
    for (int i = 0; i < 8; i++) {
        hdr[i] = (uint8_t)(b->height >> (56 - 8 * i));
        hdr[8 + i] = (uint8_t)(b->view >> (56 - 8 * i));
    }
    memcpy(hdr + 16, b->digest.b, 32);
    memcpy(hdr + 48, b->chain.b, 32);
    memcpy(hdr + 80, b->app_hash, 32);
    hdr[112] = (uint8_t)(b->cert_count >> 8);
    hdr[113] = (uint8_t)b->cert_count;
    keys_sha256_ctx c;
    keys_sha256_init(&c);
    keys_sha256_update(&c, hdr, sizeof hdr);
    keys_sha256_update(&c, b->block, b->block_n);
    keys_sha256_update(&c, b->cert, b->cert_n);
    keys_sha256_final(&c, fp);
}

/* checked_block: block_check, skipped for a record checked before byte for byte. */
static const char *checked_block(node *n, uint64_t height, const store_block_read *b)
{
    uint8_t fp[32];
    record_fp(b, fp);
    struct vcent *e = n->vcache != NULL ? &n->vcache[height % NODE_VCACHE_SLOTS] : NULL;
    bool seen = false;
    if (e != NULL) {
        pthread_mutex_lock(&n->vcmu);
        seen = e->height == height && memcmp(e->fp, fp, 32) == 0;
        pthread_mutex_unlock(&n->vcmu);
    }
    if (seen)
        return NULL;
    const char *why = block_check(n, height, b);
    if (why == NULL && e != NULL) {
        pthread_mutex_lock(&n->vcmu);
        e->height = height;
        memcpy(e->fp, fp, 32);
        pthread_mutex_unlock(&n->vcmu);
    }
    return why;
}

int node_read_block(node *n, uint64_t height, store_block_read *out, const char **why)
{
    memset(out, 0, sizeof *out);
    *why = NULL;
    int rc = store_get_block(n->st, height, out);
    uint64_t head = 0;
    if (rc == STORE_OK)
        *why = checked_block(n, height, out);
    else if (rc == STORE_E_CORRUPT)
        *why = "the stored value does not have the block record's shape";
    else if (rc == STORE_E_IO)
        *why = "the store could not read it (a RocksDB checksum or I/O error)";
    else if (rc == STORE_E_NOTFOUND && height > 0 &&
             store_head(n->st, &head, NULL, NULL) == STORE_OK && height <= head)
        *why = "it is missing, though at or below the head";
    if (*why == NULL)
        return rc;
    store_block_read_free(out);
    memset(out, 0, sizeof *out);
    uint64_t k = __atomic_add_fetch(&n->corrupt_reads, 1, __ATOMIC_RELAXED);
    uint64_t low = __atomic_load_n(&n->corrupt_lowest, __ATOMIC_RELAXED);
    while ((low == 0 || height < low) &&
           !__atomic_compare_exchange_n(&n->corrupt_lowest, &low, height, false, __ATOMIC_RELAXED,
                                        __ATOMIC_RELAXED))
        ;
    rp_add(n, height);
    if (k <= 16 || (k & (k - 1)) == 0) /* the first ones, then at powers of two */
        log_msg(LOG_ERROR,
                "storage: committed block %llu failed its check (%s): not served, fetched "
                "again from peers; %llu such reads since start",
                (unsigned long long)height, *why, (unsigned long long)k);
    return STORE_E_CORRUPT;
}

/* repair_offer takes a peer's STATE-REPLY frame (loop thread, before the core sees it) and
 * writes again every block in it that waits for repair and is proven: by its certificate,
 * and by its chain link to the verified predecessor [TOCS §5.3.2: state is fetched with the
 * proof that makes it trustworthy, whoever sends it]. The stored app hash is kept where the
 * old record still has its shape (it has no proof yet: issue 15's state root), else zero. */
static void repair_offer(node *n, const uint8_t *p, size_t len)
{
    pbft_env e;
    pbft_state_rep rep;
    if (pbft_frame_decode(p, len, &e) != PBFT_OK || e.type != PBFT_MSG_STATE_REP ||
        pbft_state_rep_decode(e.body, &rep) != PBFT_OK)
        return; /* the core counts it */
    size_t off = 0;
    pbft_span blk;
    pbft_list cert;
    while (pbft_state_rep_next(&rep, &off, &blk, &cert)) {
        if (blk.n < PBFT_BLOCK_HEADER_BYTES)
            continue;
        pbft_block b;
        if (pbft_block_decode(blk.p, blk.n, &b) != PBFT_OK || !rp_wants(n, b.height, NULL, NULL))
            continue;
        uint64_t h = b.height;
        pbft_digest d, prev;
        uint64_t view;
        const char *why = block_proven(n, h, blk, &cert, &d, &view);
        store_block_read pb;
        const char *pwhy = NULL;
        if (why != NULL) {
            log_msg(LOG_WARN, "storage repair: replica %u sent block %llu that is not proven (%s)",
                    e.sender, (unsigned long long)h, why);
            continue;
        }
        if (h > 1) {
            if (node_read_block(n, h - 1, &pb, &pwhy) != STORE_OK)
                continue; /* the predecessor first: it is queued now, and lower */
            prev = pb.chain;
            store_block_read_free(&pb);
        } else {
            memcpy(prev.b, n->pc.genesis, 32);
        }
        store_block_read old;
        memset(&old, 0, sizeof old);
        store_block sb;
        memset(&sb, 0, sizeof sb);
        if (store_get_block(n->st, h, &old) == STORE_OK)
            memcpy(sb.app_hash, old.app_hash, 32);
        store_block_read_free(&old);
        sb.height = h;
        sb.view = view;
        sb.digest = d;
        pbft_chain_next(&prev, &d, &sb.chain);
        sb.block = blk;
        sb.cert = cert;
        store_batch *wb = store_batch_new();
        char err[512];
        if (wb == NULL) {
            store_batch_free(wb);
            continue;
        }
        store_batch_block_repair(wb, &sb);
        int rc = store_write(n->st, wb, true, err, sizeof err);
        store_batch_free(wb);
        if (rc != STORE_OK) {
            char msg[900];
            snprintf(msg, sizeof msg,
                     "committed block %llu cannot be written again (%s). Remedy: move this node's "
                     "data directory aside and start again, so that it fetches the chain by "
                     "state transfer (docs/operations.md, \"Durability and recovery\")",
                     (unsigned long long)h, err);
            fatal(n, "storage repair", msg);
        }
        rp_take(n, h);
        __atomic_add_fetch(&n->repaired, 1, __ATOMIC_RELAXED);
        log_msg(LOG_WARN,
                "storage repair: committed block %llu written again from replica %u's "
                "copy and its commit certificate",
                (unsigned long long)h, e.sender);
        n->rp_next_ms = 0; /* the next one at once */
    }
}

/* repair_tick asks one peer at a time for the blocks waiting for repair, from the lowest, and
 * another peer after NODE_REPAIR_RETRY_MS. A waiting block that now passes its checks (its
 * predecessor was the one at fault) leaves the queue without a fetch. Loop thread. */
static void repair_tick(node *n)
{
    uint64_t lo, hi, t = now_ms(n);
    /* Paced as the requests: the loop runs this every iteration, thousands a second under
     * load, and a recheck costs three signature checks. */
    if (t < n->rp_next_ms || n->pc.n < 2)
        return;
    for (;;) {
        rp_wants(n, 0, &lo, &hi);
        if (lo == 0)
            return;
        store_block_read b;
        memset(&b, 0, sizeof b);
        bool fine = store_get_block(n->st, lo, &b) == STORE_OK && block_check(n, lo, &b) == NULL;
        store_block_read_free(&b);
        if (!fine)
            break;
        rp_take(n, lo);
        log_msg(LOG_INFO, "storage repair: committed block %llu passes its checks again",
                (unsigned long long)lo);
    }
    uint64_t to = hi - lo + 1 > NODE_REPAIR_SPAN ? lo + NODE_REPAIR_SPAN - 1 : hi;
    n->rp_peer = (uint16_t)((n->rp_peer + 1) % n->pc.n);
    if (n->rp_peer == n->pc.id)
        n->rp_peer = (uint16_t)((n->rp_peer + 1) % n->pc.n);
    pbft_wbuf w;
    pbft_wbuf_init(&w, 256);
    size_t start = pbft_msg_begin(&w, PBFT_MSG_STATE_REQ, n->pc.id);
    pbft_put_u64(&w, lo);
    pbft_put_u64(&w, to);
    static const uint8_t zero[32];
    pbft_put_bytes(&w, zero, 32);
    pbft_msg_end(&w, start, n->pc.chain, n->pc.sk);
    pbft_put_attach(&w, NULL, 0);
    if (w.err == 0)
        transport_send(n->tp, n->rp_peer, w.p, w.len);
    pbft_wbuf_free(&w);
    n->rp_asked++;
    if (n->rp_asked <= 4 || (n->rp_asked & (n->rp_asked - 1)) == 0)
        log_msg(LOG_INFO,
                "storage repair: asked replica %u for committed blocks %llu..%llu (%llu "
                "requests so far)",
                n->rp_peer, (unsigned long long)lo, (unsigned long long)to,
                (unsigned long long)n->rp_asked);
    n->rp_next_ms = t + NODE_REPAIR_RETRY_MS;
}

void node_corrupt(node *n, node_corruption *out)
{
    memset(out, 0, sizeof *out);
    out->reads = __atomic_load_n(&n->corrupt_reads, __ATOMIC_RELAXED);
    out->lowest = __atomic_load_n(&n->corrupt_lowest, __ATOMIC_RELAXED);
    out->repaired = __atomic_load_n(&n->repaired, __ATOMIC_RELAXED);
    out->overflow = __atomic_load_n(&n->rp_overflow, __ATOMIC_RELAXED);
    pthread_mutex_lock(&n->rpmu);
    out->pending = n->rp_n;
    out->lowest_pending = n->rp_n > 0 ? n->rp_h[0] : 0;
    pthread_mutex_unlock(&n->rpmu);
}

const genesis *node_genesis(node *n)
{
    return &n->gen;
}

const node_config *node_cfg(node *n)
{
    return &n->cfg;
}

int node_account(node *n, const uint8_t pk[32], uint64_t *balance, uint64_t *nonce)
{
    /* Read the durable state directly (RocksDB reads are thread-safe); at most one loop
     * iteration behind the loop's own view. */
    uint8_t key[33];
    key[0] = 'a';
    memcpy(key + 1, pk, 32);
    uint8_t *v = NULL;
    size_t vn = 0;
    int rc = store_state_get(n->st, key, sizeof key, &v, &vn);
    if (rc == STORE_E_NOTFOUND) {
        *balance = *nonce = 0;
        return STORE_OK;
    }
    if (rc != STORE_OK)
        return rc;
    if (vn != 16) {
        free(v);
        return STORE_E_CORRUPT;
    }
    *balance = pbft_get_u64(v);
    *nonce = pbft_get_u64(v + 8);
    free(v);
    return STORE_OK;
}

size_t node_peers(node *n, node_peer *out, size_t max)
{
    size_t k = 0;
    for (uint16_t j = 0; j < n->pc.n && k < max; j++) {
        if (j == n->pc.id)
            continue;
        transport_peer_stats ps;
        memset(&ps, 0, sizeof ps);
        if (n->tp != NULL)
            transport_peer_stats_get(n->tp, j, &ps);
        out[k].id = j;
        out[k].address = n->gen.validators[j].p2p_address;
        out[k].connected = ps.connected > 0;
        out[k].sent = ps.sent;
        out[k].received = ps.received;
        out[k].dropped = ps.dropped_full + ps.dropped_large;
        k++;
    }
    return k;
}

static uint64_t resident_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long size = 0, rss = 0;
    if (f == NULL)
        return 0;
    if (fscanf(f, "%lu %lu", &size, &rss) != 2)
        rss = 0;
    fclose(f);
    return (uint64_t)rss * 4096u;
}

void node_metrics(node *n, mtext *t)
{
    node_status s;
    node_status_get(n, &s);
    mtext_metric(t, "pbft_height", "gauge", "Latest durable block height.", (double)s.height);
    mtext_metric(t, "pbft_view", "gauge", "Current view.", (double)s.view);
    mtext_metric(t, "pbft_primary", "gauge", "Replica id of the current view's primary.",
                 (double)s.primary);
    mtext_metric(t, "pbft_is_primary", "gauge", "1 if this replica is the current primary.",
                 s.primary == s.id && !s.in_view_change ? 1 : 0);
    mtext_metric(t, "pbft_view_change_in_progress", "gauge",
                 "1 while this replica is changing views.", s.in_view_change ? 1 : 0);
    mtext_family(t, "pbft_view_changes_total", "counter", "View changes started, by reason.");
    for (int i = 0; i < PBFT_VC__COUNT; i++)
        mtext_printf(t, "pbft_view_changes_total{reason=\"%s\"} %llu\n", pbft_vc_reason_name(i),
                     (unsigned long long)s.stats.view_changes[i]);
    mtext_family(t, "pbft_complaints_total", "counter",
                 "Complaints this replica sent about a primary, by reason.");
    for (int i = 0; i < PBFT_COMPLAINT__COUNT; i++)
        mtext_printf(t, "pbft_complaints_total{reason=\"%s\"} %llu\n",
                     pbft_complaint_reason_name(i), (unsigned long long)s.stats.complaints[i]);
    mtext_metric(t, "pbft_committed_blocks_total", "counter", "Blocks committed and executed.",
                 (double)s.stats.blocks_committed);
    mtext_metric(t, "pbft_committed_txs_total", "counter", "Transactions committed.",
                 (double)s.stats.txs_committed);
    mtext_metric(t, "pbft_state_transfer_blocks_total", "counter",
                 "Blocks obtained by state transfer.", (double)s.stats.state_transfers);
    mtext_family(t, "pbft_votes_sent_total", "counter",
                 "PREPAREs and COMMITs this replica signed and sent (resends not counted).");
    mtext_printf(t, "pbft_votes_sent_total{type=\"prepare\"} %llu\n",
                 (unsigned long long)s.stats.prepares_sent);
    mtext_printf(t, "pbft_votes_sent_total{type=\"commit\"} %llu\n",
                 (unsigned long long)s.stats.commits_sent);
    mtext_metric(t, "pbft_request_timeout_seconds", "gauge",
                 "The adaptive request timer's length: 3 x the measured commit latency, within "
                 "[view timeout, 4 x view_timeout_ms].",
                 (double)s.request_timeout_ms / 1000.0);
    mtext_metric(t, "pbft_request_latency_seconds", "gauge",
                 "The commit latency the request timer follows (rises at once, decays by 1/8 "
                 "per block).",
                 (double)s.commit_latency_ms / 1000.0);
    mtext_metric(t, "pbft_core_out_dropped_total", "counter",
                 "Frames and state-transfer serves the core dropped at their per-step bound.",
                 (double)s.stats.out_dropped);
    mtext_metric(t, "pbft_stable_checkpoint", "gauge", "Sequence number of the stable checkpoint.",
                 (double)s.stable);
    mtext_metric(t, "pbft_mempool_txs", "gauge", "Transactions held, not yet committed.",
                 (double)s.pending);
    mtext_family(t, "pbft_dropped_messages_total", "counter", "Peer messages dropped, by reason.");
    for (int i = 0; i < PBFT_DROP__COUNT; i++)
        mtext_printf(t, "pbft_dropped_messages_total{reason=\"%s\"} %llu\n", pbft_drop_name(i),
                     (unsigned long long)s.stats.drops[i]);
    mtext_metric(t, "pbft_dropped_queue_full_total", "counter",
                 "Peer frames dropped because a node queue was full.", (double)s.dropped_queue);
    transport_listen_stats ls;
    transport_listen_stats_get(n->tp, &ls);
    mtext_metric(t, "pbft_p2p_connections_accepted_total", "counter",
                 "Inbound peer connections accepted (from anyone).", (double)ls.accepted);
    mtext_metric(t, "pbft_p2p_receive_errors_total", "counter",
                 "Inbound peer connections closed by the transport on a receive error, before "
                 "the node saw the frame: one over p2p.max_msg_bytes, or cut short.",
                 (double)ls.rx_errors);
    node_corruption cr;
    node_corrupt(n, &cr);
    mtext_metric(t, "pbft_storage_corrupt_reads_total", "counter",
                 "Reads of a committed block that failed their checks (digest, certificate, "
                 "chain link, record shape, RocksDB checksum, missing): refused, never served.",
                 (double)cr.reads);
    mtext_metric(t, "pbft_storage_corrupt_lowest_height", "gauge",
                 "The lowest height whose stored block failed its checks since start (0: none).",
                 (double)cr.lowest);
    mtext_metric(t, "pbft_storage_repaired_total", "counter",
                 "Committed blocks written again from a peer's copy, proven by its commit "
                 "certificate and chain link.",
                 (double)cr.repaired);
    mtext_metric(t, "pbft_storage_repair_pending", "gauge",
                 "Committed blocks that failed their checks and wait to be fetched again.",
                 (double)cr.pending);
    mtext_metric(t, "pbft_out_of_view", "gauge",
                 "1 while this replica's view has differed for 5 s or more from the one f+1 "
                 "others work in (pbft_view_of_others), else 0.",
                 s.out_of_view ? 1.0 : 0.0);
    mtext_metric(t, "pbft_view_of_others", "gauge",
                 "The view f+1 other replicas work in, from their signed messages (-1: not "
                 "heard from f+1 yet).",
                 s.others_view == UINT64_MAX ? -1.0 : (double)s.others_view);
    mtext_metric(t, "pbft_peers", "gauge", "Other validators.", (double)(n->pc.n - 1));
    mtext_metric(t, "pbft_peers_connected", "gauge", "Other validators with a connection up.",
                 (double)s.peers_connected);
    mtext_metric(t, "pbft_byzantine_actions_total", "counter",
                 "Byzantine actions taken by this replica (testing only; 0 when honest).",
                 (double)s.byz_actions);
    mtext_metric(t, "pbft_verify_cache_hits_total", "counter",
                 "Transactions in a pre-prepare or relay whose signature check was skipped: the "
                 "same signed bytes had verified here before.",
                 (double)__atomic_load_n(&n->txc_hits, __ATOMIC_RELAXED));
    mtext_metric(t, "pbft_duplicate_frames_dropped_total", "counter",
                 "Exact copies of a frame that verified in the last 200 ms, dropped before "
                 "their signature check.",
                 (double)__atomic_load_n(&n->dup_dropped, __ATOMIC_RELAXED));
    pthread_mutex_lock(&n->mu);
    double parked = (double)order_parked(n->ord), gave_up = (double)order_overflows(n->ord);
    pthread_mutex_unlock(&n->mu);
    mtext_metric(t, "pbft_p2p_order_parked_frames", "gauge",
                 "Verified peer frames waiting for an earlier frame of their connection.", parked);
    mtext_metric(t, "pbft_p2p_order_overflows_total", "counter",
                 "Times a connection's arrival order was given up because too many frames "
                 "were parked (node/order.h).",
                 gave_up);
    mtext_metric(t, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.",
                 (double)resident_bytes());
    pthread_mutex_lock(&n->mmu);
    mhist vc = n->h_vc, cl = n->h_commit, bi = n->h_interval;
    pthread_mutex_unlock(&n->mmu);
    mtext_hist(t, "pbft_view_change_duration_seconds",
               "From starting a view change to entering the new view.", &vc);
    mtext_hist(t, "pbft_commit_latency_seconds",
               "From a transaction's RPC submission at this node to its commit here.", &cl);
    mtext_hist(t, "pbft_block_interval_seconds", "Between consecutive committed blocks.", &bi);
}

/* ---------------------------------------------------------------------------------------- */

struct restore_ctx {
    pbft_replica *r;
    uint64_t n;
};

static int restore_one(void *ctx, const uint8_t key[PBFT_REC_KEY_BYTES], const uint8_t *v,
                       size_t len)
{
    struct restore_ctx *rc = ctx;
    rc->n++;
    return pbft_replica_restore_record(rc->r, key, v, len) == 0 ? 0 : -1;
}

/* on_trace turns the core's trace into log lines, event-log lines and view-change timing. */
static void on_trace(void *ctx, int kind, uint64_t view, uint64_t seq, int arg, const char *text)
{
    node *n = ctx;
    log_msg(kind == PBFT_TRACE_REJECT ? LOG_WARN : LOG_INFO, "replica %u: %s", n->pc.id, text);
    const char *ev = NULL;
    json_t *f = json_object();
    switch (kind) {
    case PBFT_TRACE_VIEW_CHANGE:
        ev = "view_change_start";
        json_object_set_new(f, "view", json_integer((json_int_t)view));
        json_object_set_new(f, "reason", json_string(pbft_vc_reason_name(arg)));
        json_object_set_new(f, "height", json_integer((json_int_t)seq));
        pthread_mutex_lock(&n->mmu);
        if (n->vc_start_ms == 0)
            n->vc_start_ms = now_ms(n);
        pthread_mutex_unlock(&n->mmu);
        break;
    case PBFT_TRACE_NEW_VIEW_SENT:
    case PBFT_TRACE_NEW_VIEW_ACCEPTED:
        ev = kind == PBFT_TRACE_NEW_VIEW_SENT ? "new_view_sent" : "new_view_accepted";
        json_object_set_new(f, "view", json_integer((json_int_t)view));
        if (kind == PBFT_TRACE_NEW_VIEW_ACCEPTED)
            json_object_set_new(f, "from", json_integer(arg));
        pthread_mutex_lock(&n->mmu);
        if (n->vc_start_ms != 0) {
            double d = (double)(now_ms(n) - n->vc_start_ms) / 1000.0;
            mhist_observe(&n->h_vc, d);
            json_object_set_new(f, "view_change_s", json_real(d));
        }
        n->vc_start_ms = 0;
        pthread_mutex_unlock(&n->mmu);
        break;
    case PBFT_TRACE_FIRST_COMMIT:
        ev = "first_commit_in_view";
        json_object_set_new(f, "view", json_integer((json_int_t)view));
        json_object_set_new(f, "height", json_integer((json_int_t)seq));
        break;
    case PBFT_TRACE_CHECKPOINT:
        ev = "checkpoint_stable";
        json_object_set_new(f, "seq", json_integer((json_int_t)seq));
        break;
    case PBFT_TRACE_STATE_START:
    case PBFT_TRACE_STATE_DONE:
        ev = kind == PBFT_TRACE_STATE_START ? "state_transfer_start" : "state_transfer_done";
        json_object_set_new(f, "height", json_integer((json_int_t)seq));
        break;
    case PBFT_TRACE_COMPLAINT:
        ev = "complaint_sent";
        json_object_set_new(f, "view", json_integer((json_int_t)view));
        json_object_set_new(f, "reason", json_string(pbft_complaint_reason_name(arg)));
        break;
    default:
        ev = "rejected";
        json_object_set_new(f, "view", json_integer((json_int_t)view));
        break;
    }
    json_object_set_new(f, "text", json_string(text));
    evlog_emit(n->ev, ev, f);
}

/* observe_loop reports, after each loop iteration, what the core does not trace: peers
 * coming and going, and (at most once a second) the adversary's actions. */
/* observe_view reports a view that differs from the one the others work in for
 * NODE_OUT_OF_VIEW_MS, and its end, in the log and the event log (issue 12, part 2). */
static void observe_view(node *n)
{
    uint64_t mine = pbft_replica_view(n->r), theirs = pbft_replica_others_view(n->r);
    bool differs = theirs != UINT64_MAX && theirs != mine;
    uint64_t t = now_ms(n);
    if (!differs) {
        n->ov_since = 0;
        if (n->ov_reported) {
            n->ov_reported = false;
            log_msg(LOG_INFO, "back in the view the others use: view %llu",
                    (unsigned long long)mine);
            json_t *f = json_object();
            json_object_set_new(f, "view", json_integer((json_int_t)mine));
            evlog_emit(n->ev, "in_view_again", f);
        }
        return;
    }
    if (n->ov_since == 0)
        n->ov_since = t > 0 ? t : 1;
    if (n->ov_reported || t - n->ov_since < NODE_OUT_OF_VIEW_MS)
        return;
    n->ov_reported = true;
    log_msg(LOG_WARN,
            "out of the view the others use: this replica is in view %llu%s, f+1 others in "
            "view %llu, for %llu ms",
            (unsigned long long)mine, pbft_replica_in_view_change(n->r) ? " (changing views)" : "",
            (unsigned long long)theirs, (unsigned long long)(t - n->ov_since));
    json_t *f = json_object();
    json_object_set_new(f, "view", json_integer((json_int_t)mine));
    json_object_set_new(f, "others_view", json_integer((json_int_t)theirs));
    json_object_set_new(f, "view_change", json_boolean(pbft_replica_in_view_change(n->r)));
    evlog_emit(n->ev, "out_of_view", f);
}

static void observe_loop(node *n)
{
    observe_view(n);
    if (n->byz_flag && n->byz != NULL && !pbft_byz_active(n->byz)) {
        pbft_byz_set_active(n->byz, true);
        log_msg(LOG_WARN, "THIS REPLICA TURNS BYZANTINE NOW: mode=%s",
                pbft_byz_mode_name(pbft_byz_mode(n->byz)));
        json_t *f = json_object();
        json_object_set_new(f, "mode", json_string(pbft_byz_mode_name(pbft_byz_mode(n->byz))));
        json_object_set_new(f, "view", json_integer((json_int_t)pbft_replica_view(n->r)));
        evlog_emit(n->ev, "byzantine_active", f);
    }
    for (uint16_t j = 0; j < n->pc.n && n->tp != NULL; j++) {
        if (j == n->pc.id)
            continue;
        transport_peer_stats ps;
        transport_peer_stats_get(n->tp, j, &ps);
        bool up = ps.connected > 0;
        if (up != n->peer_up[j]) {
            n->peer_up[j] = up;
            json_t *f = json_object();
            json_object_set_new(f, "peer", json_integer(j));
            evlog_emit(n->ev, up ? "peer_connected" : "peer_disconnected", f);
        }
    }
    if (pbft_byz_crashed(n->byz)) {
        log_msg(LOG_WARN, "THIS REPLICA CRASHES NOW, as its Byzantine mode asked");
        evlog_emit(n->ev, "byzantine_crash", NULL);
        _exit(3);
    }
    if (n->byz != NULL) {
        uint64_t a = pbft_byz_actions(n->byz), t = now_ms(n);
        if (a > n->byz_reported && (n->byz_reported == 0 || t - n->byz_report_ms >= 1000)) {
            json_t *f = json_object();
            json_object_set_new(f, "mode", json_string(pbft_byz_mode_name(pbft_byz_mode(n->byz))));
            json_object_set_new(f, "actions", json_integer((json_int_t)a));
            json_object_set_new(f, "new", json_integer((json_int_t)(a - n->byz_reported)));
            evlog_emit(n->ev, "byzantine_action", f);
            n->byz_reported = a;
            n->byz_report_ms = t;
        }
    }
}

/* parse_byz reads MODE[:OPTION[:OPTION...]]. An option is key=value, or (the older form) a
 * bare number: delay_ms first, then percent. docs/operations.md lists the keys. */
static int parse_byz(const char *spec, pbft_byz_config *bc, char *err, size_t errlen)
{
    static const struct {
        const char *name;
        uint8_t type;
    } types[] = {{"any", 0},
                 {"preprepare", PBFT_MSG_PREPREPARE},
                 {"prepare", PBFT_MSG_PREPARE},
                 {"commit", PBFT_MSG_COMMIT},
                 {"checkpoint", PBFT_MSG_CHECKPOINT},
                 {"viewchange", PBFT_MSG_VIEWCHANGE},
                 {"newview", PBFT_MSG_NEWVIEW}};
    char buf[512];
    memset(bc, 0, sizeof *bc);
    if (strlen(spec) >= sizeof buf) {
        snprintf(err, errlen, "--byzantine: longer than %zu characters", sizeof buf - 1);
        return -1;
    }
    snprintf(buf, sizeof buf, "%s", spec);
    char *save = NULL;
    char *mode = strtok_r(buf, ":", &save);
    if (mode == NULL) {
        snprintf(err, errlen, "--byzantine: expected MODE[:OPTION...], got \"%s\"", spec);
        return -1;
    }
    bc->mode = pbft_byz_mode_parse(mode);
    if (bc->mode < 0) {
        snprintf(err, errlen, "--byzantine: unknown mode \"%s\" (pbftd start --help lists them)",
                 mode);
        return -1;
    }
    int positional = 0;
    for (char *opt = strtok_r(NULL, ":", &save); opt != NULL; opt = strtok_r(NULL, ":", &save)) {
        char *eq = strchr(opt, '=');
        const char *key = eq != NULL ? opt : (positional++ == 0 ? "delay_ms" : "percent");
        const char *val = eq != NULL ? eq + 1 : opt;
        if (eq != NULL)
            *eq = 0;
        char *end = NULL;
        unsigned long long v = 0;
        bool numeric =
            strcmp(key, "at") != 0 && strcmp(key, "peers") != 0 && strcmp(key, "client") != 0;
        if (numeric) {
            v = strtoull(val, &end, 10);
            if (end == val || *end != 0) {
                snprintf(err, errlen, "--byzantine: %s: \"%s\" is not a number", key, val);
                return -1;
            }
        }
        if (strcmp(key, "delay_ms") == 0 && v <= 3600000) {
            bc->delay_ms = (uint32_t)v;
        } else if (strcmp(key, "percent") == 0 && v <= 100) {
            bc->percent = (uint32_t)v;
        } else if (strcmp(key, "after") == 0 && v >= 1 && v <= 1000000000) {
            bc->crash_after = (uint32_t)v;
        } else if (strcmp(key, "factor") == 0 && v >= 1 && v <= 1000) {
            bc->factor = (uint32_t)v;
        } else if (strcmp(key, "at") == 0) {
            size_t k = 0;
            while (k < sizeof types / sizeof types[0] && strcmp(types[k].name, val) != 0)
                k++;
            if (k == sizeof types / sizeof types[0]) {
                snprintf(err, errlen,
                         "--byzantine: at: \"%s\" is not one of any, preprepare, prepare, "
                         "commit, checkpoint, viewchange, newview",
                         val);
                return -1;
            }
            bc->crash_type = types[k].type;
        } else if (strcmp(key, "peers") == 0) {
            char *pe = NULL;
            for (const char *q = val; *q != 0; q = pe + (*pe == '+')) {
                unsigned long id = strtoul(q, &pe, 10);
                if (pe == q || id >= PBFT_MAX_N || (*pe != '+' && *pe != 0)) {
                    snprintf(err, errlen,
                             "--byzantine: peers: expected ids joined by +, got \"%s\"", val);
                    return -1;
                }
                bc->peers |= 1ull << id;
            }
            if (bc->peers == 0) {
                snprintf(err, errlen, "--byzantine: peers: empty");
                return -1;
            }
        } else if (strcmp(key, "client") == 0) {
            if (strlen(val) != 64 || keys_hex_decode(val, bc->censor_pk, 32) != KEYS_OK) {
                snprintf(err, errlen, "--byzantine: client: expected a 64-hex-digit public key");
                return -1;
            }
            bc->censor_set = true;
        } else {
            snprintf(err, errlen,
                     "--byzantine: option \"%s=%s\" is unknown or out of range (delay_ms "
                     "0..3600000, percent 0..100, at, after 1.., peers, factor 1..1000, client)",
                     key, val);
            return -1;
        }
    }
    return 0;
}

/* id_addrs applies a testing-only "ID=tcp://host:port[,...]" list (already checked by
 * config_load) to addr[ID], splitting it into buf (which must outlive the transport). */
static int id_addrs(node *n, const char *home, const char *key, const char *spec, char *buf,
                    const char **addr, char *err, size_t errlen)
{
    if (strcmp(spec, "none") == 0)
        return 0;
    snprintf(buf, 512, "%s", spec);
    char *save = NULL;
    for (char *it = strtok_r(buf, ",", &save); it != NULL; it = strtok_r(NULL, ",", &save)) {
        unsigned long vid = strtoul(it, NULL, 10);
        if (vid >= n->gen.n || vid == n->pc.id) {
            snprintf(err, errlen,
                     "%s/config/config.toml: %s: validator %lu is not another validator of this "
                     "%u-replica network",
                     home, key, vid, n->gen.n);
            return -1;
        }
        addr[vid] = strchr(it, '=') + 1;
        log_msg(LOG_WARN, "TESTING: %s: validator %lu at %s", key, vid, addr[vid]);
    }
    return 0;
}

/* check_head reads the last NODE_HEAD_CHECK committed blocks back through node_read_block
 * before the replica starts on them (docs/operations.md, "Durability and recovery"). One
 * below the head that fails is queued for repair from peers, and the start goes on: the core
 * does not read it. The head block is what the head record and the core's restored state rest
 * on, so a head block that fails, or whose chain hash is not the head record's, stops the
 * start with the height and the remedy. */
static int check_head(node *n, uint64_t height, const pbft_digest *chain, char *err, size_t errlen)
{
    uint64_t from = height > NODE_HEAD_CHECK ? height - NODE_HEAD_CHECK + 1 : 1;
    for (uint64_t h = from; h <= height; h++) {
        store_block_read b;
        const char *why;
        int rc = node_read_block(n, h, &b, &why);
        if (why == NULL)
            why = store_strerror(rc);
        bool ok = rc == STORE_OK && (h < height || memcmp(b.chain.b, chain->b, 32) == 0);
        if (rc == STORE_OK && !ok)
            why = "its chain hash is not the head record's";
        store_block_read_free(&b);
        if (!ok && h < height) {
            log_msg(LOG_WARN,
                    "committed block %llu (of head %llu) failed its check at start (%s): "
                    "starting, and fetching it again from peers",
                    (unsigned long long)h, (unsigned long long)height, why);
            continue;
        }
        if (!ok) {
            snprintf(err, errlen,
                     "the head block %llu failed its check at start: %s. "
                     "Remedy: move this node's data directory aside (keep it for inspection) "
                     "and start again; the replica then fetches the chain from its peers by "
                     "state transfer (docs/operations.md, \"Durability and recovery\")",
                     (unsigned long long)h, why);
            return -1;
        }
    }
    return 0;
}

int node_open(const node_options *o, node **out, char *err, size_t errlen)
{
    *out = NULL;
    bool disk_full = false;
    node *n = calloc(1, sizeof *n);
    if (n == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    n->opt = *o;
    snprintf(n->home, sizeof n->home, "%s", o->home);
    clock_gettime(CLOCK_MONOTONIC, &n->t0);
    pthread_mutex_init(&n->mu, NULL);
    pthread_mutex_init(&n->mmu, NULL);
    pthread_mutex_init(&n->rpmu, NULL);
    pthread_mutex_init(&n->vcmu, NULL);
    for (int i = 0; i < NODE_TXC_STRIPES; i++)
        pthread_mutex_init(&n->txc_mu[i], NULL);
    pthread_cond_init(&n->cv, NULL);
    pthread_cond_init(&n->vcv, NULL);
    n->deadline = UINT64_MAX;
    char path[CONFIG_PATH_MAX + 64];

    if (keys_init() != KEYS_OK) {
        snprintf(err, errlen, "libsodium failed to initialise");
        goto fail;
    }
    config_defaults(&n->cfg);
    snprintf(path, sizeof path, "%s/config/config.toml", o->home);
    if (config_load(path, &n->cfg, err, errlen) != 0)
        goto fail;
    if (o->log_level != NULL)
        snprintf(n->cfg.log_level, sizeof n->cfg.log_level, "%s", o->log_level);
    log_set_level(n->cfg.log_level);
    snprintf(path, sizeof path, "%s/config/genesis.json", o->home);
    if (genesis_load(path, &n->gen, err, errlen) != 0)
        goto fail;

    uint8_t sk[64];
    config_resolve(o->home, n->cfg.key_file, "", path, sizeof path);
    if (keys_file_read(path, n->pk, sk, err, errlen) != KEYS_OK)
        goto fail;
    int id = -1;
    for (uint16_t i = 0; i < n->gen.n; i++)
        if (memcmp(n->gen.validators[i].public_key, n->pk, 32) == 0)
            id = i;
    if (id < 0) {
        char hex[65];
        keys_hex_encode(n->pk, 32, hex);
        snprintf(err, errlen,
                 "%s: public key %s is not a validator in config/genesis.json: this node "
                 "cannot take part in this network",
                 path, hex);
        goto fail;
    }
    memset(&n->pc, 0, sizeof n->pc);
    genesis_to_pbft(&n->gen, &n->pc);
    n->pc.id = (uint16_t)id;
    memcpy(n->pc.sk, sk, 64);
    memset(sk, 0, sizeof sk);
    n->pc.max_pending_txs = n->cfg.mempool_max_txs;
    n->pc.max_pending_bytes = n->cfg.mempool_max_bytes;
    if (pbft_config_validate(&n->pc, err, errlen) != 0)
        goto fail;
    if ((uint64_t)n->cfg.p2p_max_msg_bytes < (uint64_t)n->pc.max_block_bytes + 1024) {
        snprintf(err, errlen,
                 "%s/config/config.toml: p2p.max_msg_bytes: %u is too small for the genesis "
                 "max_block_bytes (%u) plus framing; raise it to at least %u",
                 o->home, n->cfg.p2p_max_msg_bytes, n->pc.max_block_bytes,
                 n->pc.max_block_bytes + 1024);
        goto fail;
    }

    /* Byzantine behaviour: testing only, and loudly. */
    const char *spec = o->byzantine;
    char cfgspec[512];
    if (spec == NULL && strcmp(n->cfg.byz_mode, "honest") != 0) {
        snprintf(cfgspec, sizeof cfgspec, "%s:delay_ms=%u:percent=%u%s%s", n->cfg.byz_mode,
                 n->cfg.byz_delay_ms, n->cfg.byz_percent,
                 strcmp(n->cfg.byz_options, "none") != 0 ? ":" : "",
                 strcmp(n->cfg.byz_options, "none") != 0 ? n->cfg.byz_options : "");
        spec = cfgspec;
    }
    if (spec != NULL) {
        pbft_byz_config bc;
        if (parse_byz(spec, &bc, err, errlen) != 0)
            goto fail;
        if (bc.mode != PBFT_BYZ_HONEST) {
            if (!o->unsafe_byzantine) {
                snprintf(err, errlen,
                         "Byzantine mode \"%s\" requested but --unsafe-byzantine was not given: "
                         "refusing to start a faulty replica by accident",
                         pbft_byz_mode_name(bc.mode));
                goto fail;
            }
            bc.seed = (uint64_t)id * 7919u + 1;
            bc.armed = o->byzantine_armed;
            if (pbft_byz_new(&bc, &n->byz) != 0) {
                snprintf(err, errlen, "--byzantine: invalid options");
                goto fail;
            }
            log_msg(LOG_WARN, "THIS REPLICA IS BYZANTINE: mode=%s delay_ms=%u percent=%u%s",
                    pbft_byz_mode_name(bc.mode), bc.delay_ms, bc.percent,
                    bc.armed ? " (armed: honest until SIGUSR1)" : "");
        }
    }

    /* Storage and recovery. The data directory is created if missing (a home copied
     * without it, or node.data_dir pointing somewhere new); RocksDB makes db/ inside. */
    config_resolve(o->home, n->cfg.data_dir, "", path, sizeof path);
    if (mkdir(path, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "%s: cannot create the data directory (node.data_dir): %s", path,
                 strerror(errno));
        goto fail;
    }
    snprintf(n->data_path, sizeof n->data_path, "%s", path);
    if (n->cfg.min_free_mb > 0) {
        int64_t f = free_mib(path);
        if (f >= 0 && (uint64_t)f < n->cfg.min_free_mb) {
            snprintf(err, errlen,
                     "%s: only %lld MiB free on its filesystem, below node.min_free_mb (%u MiB), "
                     "the room RocksDB may need to open and replay its log; free space, then "
                     "start again",
                     path, (long long)f, n->cfg.min_free_mb);
            disk_full = true;
            goto fail;
        }
    }
    int64_t free_now = free_mib(path);
    config_resolve(o->home, n->cfg.data_dir, "/db", path, sizeof path);
    char dbpath[sizeof path];
    memcpy(dbpath, path, sizeof path);
    int len = snprintf(open_abort_msg, sizeof open_abort_msg,
                       "\npbftd: RocksDB stopped on an assertion while opening %s, with %lld MiB "
                       "free on its filesystem; nothing committed is lost (every batch was "
                       "synced); free space, then start again (node.min_free_mb, %u MiB here, "
                       "refuses to open a store so close to full; 0 turns that off)\n",
                       path, (long long)free_now, n->cfg.min_free_mb);
    open_abort_len = len > 0 ? strnlen(open_abort_msg, sizeof open_abort_msg) : 0;
    open_abort_status = free_now >= 0 && free_now < 1 ? NODE_EXIT_DISK_FULL : 1;
    struct sigaction sa_abort, sa_old;
    memset(&sa_abort, 0, sizeof sa_abort);
    sa_abort.sa_handler = on_abort_in_open;
    sigaction(SIGABRT, &sa_abort, &sa_old);
    int src = store_open(path, n->pc.chain, &n->st, err, errlen);
    sigaction(SIGABRT, &sa_old, NULL);
    if (src != STORE_OK) {
        disk_full = no_space(err);
        size_t el = strnlen(err, errlen);
        if (!disk_full && (src == STORE_E_CORRUPT || strstr(err, "Corruption") != NULL) &&
            el + 1 < errlen)
            snprintf(err + el, errlen - el,
                     "; refusing to start. Remedy: see docs/operations.md, \"Durability and "
                     "recovery\"");
        goto fail;
    }
    uint8_t app[32];
    if (ledger_open(n->st, &n->gen, &n->lg, app, err, errlen) != STORE_OK)
        goto fail;
    config_resolve(o->home, n->cfg.event_log, "", path, sizeof path);
    if (evlog_open(path, n->cfg.event_log_max_bytes, (unsigned)id, &n->ev, err, errlen) != 0)
        goto fail;
    if (strcmp(n->cfg.msg_log, "none") != 0) {
        config_resolve(o->home, n->cfg.msg_log, "", path, sizeof path);
        if (evlog_open(path, n->cfg.event_log_max_bytes, (unsigned)id, &n->mlog, err, errlen) != 0)
            goto fail;
    }
    n->lat = calloc(NODE_LAT_SLOTS, sizeof *n->lat);
    n->vcache = calloc(NODE_VCACHE_SLOTS, sizeof *n->vcache); /* NULL: every read checked */
    n->txc = calloc(NODE_TXC_SLOTS, sizeof *n->txc);
    n->dup = calloc(NODE_DUP_SLOTS, sizeof *n->dup);
    n->txcache = (pbft_txcache){txc_seen, txc_add, n};
    if (n->lat == NULL || n->txc == NULL || n->dup == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if (pbft_replica_new(&n->pc, &n->r, err, errlen) != 0)
        goto fail;
    if (n->byz != NULL)
        pbft_replica_set_byz(n->r, n->byz);
    pbft_replica_set_trace(n->r, on_trace, n);
    uint64_t height;
    pbft_digest chain;
    uint8_t sapp[32];
    if (store_head(n->st, &height, &chain, sapp) != STORE_OK) {
        snprintf(err, errlen,
                 "%s: cannot read the head record; refusing to start. Remedy: see "
                 "docs/operations.md, \"Durability and recovery\"",
                 dbpath);
        goto fail;
    }
    if (height == 0)
        memcpy(chain.b, n->pc.genesis, 32);
    if (check_head(n, height, &chain, err, errlen) != 0)
        goto fail;
    pbft_replica_restore_executed(n->r, height, &chain, app);
    struct restore_ctx rc = {n->r, 0};
    int rrc = store_each_record(n->st, restore_one, &rc);
    if (rrc != STORE_OK) {
        snprintf(
            err, errlen,
            "%s: consensus record %llu is corrupt (%s); refusing to start. Remedy: see "
            "docs/operations.md, \"Durability and recovery\"",
            dbpath, (unsigned long long)rc.n + (rrc == -1 ? 0 : 1),
            rrc == -1
                ? "it does not decode as the record its key names, or a signature in it does not "
                  "verify"
                : "the store cannot read it: a RocksDB checksum or I/O error");
        goto fail;
    }
    n->exec_height = n->durable_height = height;
    memcpy(n->exec_chain, chain.b, 32);
    memcpy(n->durable_chain, chain.b, 32);
    memcpy(n->exec_app, app, 32);
    memcpy(n->durable_app, app, 32);
    log_msg(LOG_INFO, "replica %d of %u: recovered height %llu and %llu consensus records", id,
            n->gen.n, (unsigned long long)height, (unsigned long long)rc.n);
    json_t *f = json_object();
    json_object_set_new(f, "height", json_integer((json_int_t)height));
    json_object_set_new(f, "view", json_integer((json_int_t)pbft_replica_view(n->r)));
    json_object_set_new(f, "byzantine",
                        n->byz != NULL ? json_string(pbft_byz_mode_name(pbft_byz_mode(n->byz)))
                                       : json_null());
    evlog_emit(n->ev, "node_start", f);

    n->batch = store_batch_new();
    n->q.cap = NODE_QUEUE;
    n->q.v = calloc(NODE_QUEUE, sizeof *n->q.v);
    n->rq.cap = NODE_RQUEUE;
    n->rq.v = calloc(NODE_RQUEUE, sizeof *n->rq.v);
    n->hq.cap = NODE_HQUEUE;
    n->hq.v = calloc(NODE_HQUEUE, sizeof *n->hq.v);
    n->vq.cap = NODE_VQUEUE;
    n->vq.v = calloc(NODE_VQUEUE, sizeof *n->vq.v);
    n->lq.cap = NODE_LQUEUE;
    n->lq.v = calloc(NODE_LQUEUE, sizeof *n->lq.v);
    n->ord = order_new(NODE_ORDER_SLOTS, NODE_ORDER_PARKED, sizeof(struct qev));
    if (n->batch == NULL || n->q.v == NULL || n->rq.v == NULL || n->hq.v == NULL ||
        n->vq.v == NULL || n->lq.v == NULL || n->ord == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }

    /* Network. */
    transport_config tc;
    memset(&tc, 0, sizeof tc);
    tc.listen = n->cfg.p2p_listen;
    for (uint16_t i = 0; i < n->gen.n; i++)
        tc.peers[i] = n->gen.validators[i].p2p_address;
    tc.n = n->gen.n;
    tc.self = n->pc.id;
    if (id_addrs(n, o->home, "p2p.twin_dial", n->cfg.p2p_twin_dial, n->twin_buf, tc.twin, err,
                 errlen) != 0 ||
        id_addrs(n, o->home, "p2p.peer_override", n->cfg.p2p_peer_override, n->override_buf,
                 tc.peers, err, errlen) != 0)
        goto fail;
    tc.max_msg_bytes = n->cfg.p2p_max_msg_bytes;
    tc.send_queue = n->cfg.p2p_send_queue;
    tc.on_recv = on_recv;
    tc.ctx = n;
    if (transport_open(&tc, &n->tp, err, errlen) != 0)
        goto fail;

    /* Start the core and the threads. */
    pbft_output *po = NULL;
    if (pbft_replica_start(n->r, now_ms(n), &po) != 0) {
        const char *why = pbft_replica_failure(n->r);
        snprintf(err, errlen, "replica failed to start%s%s", why ? ": " : "", why ? why : "");
        goto fail;
    }
    collect(n, po, 0);
    flush(n);
    update_status(n);
    n->nworkers = n->cfg.p2p_verify_workers;
    if (n->nworkers < 1)
        n->nworkers = 1;
    if (n->nworkers > NODE_MAX_WORKERS)
        n->nworkers = NODE_MAX_WORKERS;
    n->low_max = n->nworkers > 1 ? n->nworkers / 2 : 1;
    for (uint32_t i = 0; i < n->nworkers; i++)
        if (pthread_create(&n->workers[i], NULL, worker_main, n) != 0) {
            n->nworkers = i;
            snprintf(err, errlen, "cannot start verify workers");
            goto fail;
        }
    if (pthread_create(&n->loop_th, NULL, loop_main, n) != 0) {
        snprintf(err, errlen, "cannot start the event loop");
        goto fail;
    }
    n->loop_started = true;
    if (rpc_open(n, n->cfg.rpc_listen, &n->rpc, err, errlen) != 0)
        goto fail;
    log_msg(LOG_INFO, "replica %d listening: p2p %s, rpc %s", id, n->cfg.p2p_listen,
            n->cfg.rpc_listen);
    *out = n;
    return 0;
fail:
    if (node_close(n) == NODE_CLOSE_ABANDONED)
        return -2;
    return disk_full ? NODE_OPEN_DISK_FULL : -1;
}

void node_request_stop(node *n)
{
    n->stop_flag = 1;
}

void node_request_byzantine(node *n)
{
    n->byz_flag = 1;
}

void node_run(node *n)
{
    while (!n->stop_flag) {
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

/* close_step logs one finished step of a running node's shutdown and the time since it began
 * (a node that failed to open has nothing to report). */
static void close_step(const node *n, uint64_t t0, const char *what)
{
    if (n->loop_started)
        log_msg(LOG_INFO, "stopping: %s (%llu ms)", what,
                (unsigned long long)((mono_us() - t0) / 1000));
}

/* A close that nng may never finish. nng 1.5.2 (Debian 12's) can deadlock in nng_close: the
 * stacks of a replica that hung on SIGTERM showed the main thread in nng_close of the PULL
 * socket (transport_close) while nng's reaper waited (the class of nanomsg/nng #1813 and
 * #1824, fixed upstream in 1.8). So each nng close runs on a helper thread and the caller
 * waits at most a deadline. Past it the helper is left running with what it closes, and this
 * struct, which it may still touch, is deliberately not freed. */
struct bounded_close {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    void (*fn)(void *);
    void *arg;
};

static void *bounded_close_main(void *p)
{
    struct bounded_close *b = p;
    b->fn(b->arg);
    pthread_mutex_lock(&b->mu);
    b->done = true;
    pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&b->mu);
    return NULL;
}

/* close_within runs fn(arg) and returns true once it returned, or false if it was still
 * running after ms (it then goes on, on a detached thread). */
static bool close_within(void (*fn)(void *), void *arg, uint32_t ms)
{
    struct bounded_close *b = calloc(1, sizeof *b);
    pthread_condattr_t ca;
    if (b == NULL || pthread_condattr_init(&ca) != 0) {
        free(b);
        fn(arg); /* no helper to be had: close inline, unbounded */
        return true;
    }
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cv, &ca);
    pthread_condattr_destroy(&ca);
    b->fn = fn;
    b->arg = arg;
    pthread_t th;
    if (pthread_create(&th, NULL, bounded_close_main, b) != 0) {
        pthread_mutex_destroy(&b->mu);
        pthread_cond_destroy(&b->cv);
        free(b);
        fn(arg);
        return true;
    }
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_sec += (time_t)(ms / 1000);
    dl.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&b->mu);
    while (!b->done && pthread_cond_timedwait(&b->cv, &b->mu, &dl) != ETIMEDOUT)
        ;
    bool done = b->done;
    pthread_mutex_unlock(&b->mu);
    if (!done) {
        pthread_detach(th);
        return false;
    }
    pthread_join(th, NULL);
    pthread_mutex_destroy(&b->mu);
    pthread_cond_destroy(&b->cv);
    free(b);
    return true;
}

/* The test hook PBFTD_FAULT_HANG_CLOSE=rpc|transport makes that close hang for good, as
 * nng's does, so that tests reach the deadline path (docs/operations.md, "Stopping"). */
static bool fault_hang(const char *what)
{
    const char *v = getenv("PBFTD_FAULT_HANG_CLOSE");
    return v != NULL && strcmp(v, what) == 0;
}

static void hang_forever(void)
{
    for (;;)
        pause();
}

static void close_rpc_fn(void *arg)
{
    if (fault_hang("rpc"))
        hang_forever();
    rpc_close(arg);
}

static void close_transport_fn(void *arg)
{
    if (fault_hang("transport"))
        hang_forever();
    transport_close(arg);
}

/* stop_loop stops the consensus loop and the verify workers and joins them. */
static void stop_loop(node *n)
{
    pthread_mutex_lock(&n->mu);
    n->stop = true;
    n->stop_flag = 1;
    pthread_cond_broadcast(&n->cv);
    pthread_cond_broadcast(&n->vcv);
    pthread_mutex_unlock(&n->mu);
    if (n->loop_started)
        pthread_join(n->loop_th, NULL);
    for (uint32_t i = 0; i < n->nworkers; i++)
        pthread_join(n->workers[i], NULL);
}

int node_close(node *n)
{
    if (n == NULL)
        return NODE_CLOSED;
    /* Order matters, and every durable thing is closed before the peer transport:
     *   1. RPC: its handlers may wait for the loop's verdict, so the loop still runs while
     *      they finish; they also read the store, so the store outlives them;
     *   2. the loop and the verify workers: after this nothing writes;
     *   3. storage (every batch was already synced) and the event log;
     *   4. the transport, last: the loop sent through it until it stopped, and its receive
     *      callback only queues (dropping once stop is set).
     * Each nng close (1 and 4) has a deadline (close_within). Past it the node is abandoned,
     * not freed, since nng threads may still use it, and the caller must end the process.
     * Each step is logged with its time, so a shutdown that hangs says where. */
    uint64_t t0 = mono_us();
    bool rpc_done = n->rpc == NULL || close_within(close_rpc_fn, n->rpc, NODE_RPC_CLOSE_MS);
    if (!rpc_done) {
        /* Handlers may still run and read the store: leave it open. Every write so far was
         * synced, so this loses nothing, as a crash would not. */
        log_msg(LOG_WARN,
                "stopping: RPC server close did not finish within %u ms (nng); storage left "
                "open, every write having been synced",
                NODE_RPC_CLOSE_MS);
        stop_loop(n);
        close_step(n, t0, "consensus loop and verify workers joined");
        return NODE_CLOSE_ABANDONED;
    }
    n->rpc = NULL;
    close_step(n, t0, "RPC server closed");
    stop_loop(n);
    close_step(n, t0, "consensus loop and verify workers joined");
    ledger_close(n->lg);
    n->lg = NULL;
    store_close(n->st);
    n->st = NULL;
    close_step(n, t0, "storage closed");
    if (n->ev != NULL)
        evlog_emit(n->ev, "node_stop", NULL);
    evlog_close(n->ev);
    n->ev = NULL;
    evlog_close(n->mlog);
    n->mlog = NULL;
    if (n->tp != NULL && !close_within(close_transport_fn, n->tp, NODE_TRANSPORT_CLOSE_MS)) {
        log_msg(LOG_WARN,
                "stopping: peer transport close did not finish within %u ms (nng); everything "
                "durable is closed",
                NODE_TRANSPORT_CLOSE_MS);
        return NODE_CLOSE_ABANDONED;
    }
    n->tp = NULL;
    close_step(n, t0, "peer transport closed");
    /* Release what never reached the loop; wake any waiter (none remain: RPC is closed). */
    struct qev e;
    while (ring_pop(&n->q, &e) || ring_pop(&n->rq, &e)) {
        if (e.w != NULL) {
            pthread_mutex_lock(&e.w->mu);
            e.w->done = true;
            pthread_cond_signal(&e.w->cv);
            pthread_mutex_unlock(&e.w->mu);
        }
        free(e.p);
    }
    while (ring_pop(&n->hq, &e) || ring_pop(&n->vq, &e) || ring_pop(&n->lq, &e))
        free(e.p);
    order_free(n->ord, release_frame);
    for (size_t i = 0; i < n->nouts; i++)
        free(n->outs[i].p);
    free(n->outs);
    free(n->serves);
    free(n->q.v);
    free(n->rq.v);
    free(n->hq.v);
    free(n->vq.v);
    free(n->lq.v);
    store_batch_free(n->batch);
    pbft_replica_free(n->r);
    pbft_byz_free(n->byz);
    genesis_free(&n->gen);
    free(n->lat);
    free(n->txc);
    free(n->dup);
    for (int i = 0; i < NODE_TXC_STRIPES; i++)
        pthread_mutex_destroy(&n->txc_mu[i]);
    pthread_mutex_destroy(&n->mu);
    pthread_mutex_destroy(&n->rpmu);
    pthread_mutex_destroy(&n->vcmu);
    free(n->vcache);
    pthread_mutex_destroy(&n->mmu);
    pthread_cond_destroy(&n->cv);
    pthread_cond_destroy(&n->vcv);
    free(n);
    return NODE_CLOSED;
}

static void nng_fini_fn(void *arg)
{
    (void)arg;
    nng_fini();
}

bool node_library_fini(void)
{
    return close_within(nng_fini_fn, NULL, NODE_TRANSPORT_CLOSE_MS);
}
