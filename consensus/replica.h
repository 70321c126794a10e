/*
 * replica.h - one PBFT replica as a pure, deterministic state machine.
 *
 * Castro and Liskov, "Practical Byzantine Fault Tolerance" (OSDI'99) and "Practical Byzantine
 * Fault Tolerance and Proactive Recovery" (TOCS 2002), signature variant.
 *
 * The replica performs no I/O, reads no clock, starts no thread and touches no global. Time
 * arrives in every event (now_ms, monotonic milliseconds chosen by the driver). Every call
 * returns a pbft_output describing what the driver must do, IN THIS ORDER:
 *
 *   1. persist:  write every record durably (one synced batch) - nothing in 2. may leave the
 *                process before these are on disk (TOCS 2002 section 4.1 assumes a replica's
 *                promises survive a crash; this is how we keep that true);
 *   2. sends:    transmit the frames (after delay_ms, if non-zero);
 *   3. commits:  store and execute the committed blocks, in order, then report each with a
 *                PBFT_EV_EXECUTED event carrying the application's state hash;
 *   4. serves:   answer peers' state-transfer requests from the block store
 *                (pbft_state_reply_build helps);
 *   5. deadline: call pbft_replica_step with a PBFT_EV_TICK at or after deadline_ms.
 *
 * The same code runs inside pbftd and inside the simulator (tests/sim/), bit for bit.
 *
 * Ownership: every pointer in a pbft_output points into memory owned by the replica, valid
 * until the next call on that replica. Event payloads are borrowed for the call only.
 */
#ifndef PBFT_CONSENSUS_REPLICA_H
#define PBFT_CONSENSUS_REPLICA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "consensus/msg.h"

typedef struct pbft_replica pbft_replica;
typedef struct pbft_byz pbft_byz;

/* Configuration. pbft_config_validate checks every field and the relations between them. */
typedef struct {
    uint16_t n;  /* replicas, n = 3f+1 (n >= 4 and n <= PBFT_MAX_N; n = 1 allowed for tests) */
    uint16_t id; /* this replica, 0..n-1 */
    uint8_t chain[32];               /* SHA-256 of the chain id: binds every signature */
    uint8_t genesis[32];             /* chain_hash(0) */
    uint8_t pubkeys[PBFT_MAX_N][32]; /* validator keys, index = replica id */
    uint8_t sk[64];                  /* this replica's secret key */

    uint32_t checkpoint_interval; /* K: a checkpoint every K blocks (section 4.3) */
    uint32_t window;              /* L: watermark window, a multiple of K, >= 2K */
    uint32_t max_inflight;        /* primary: proposed but uncommitted blocks, <= window */
    uint32_t max_block_txs;       /* cut a block at this many transactions */
    uint32_t max_block_bytes;     /* ... or this many encoded bytes */
    uint32_t block_interval_ms;   /* ... or when the oldest pending tx waited this long */
    uint32_t max_pending_txs;     /* transactions held (queued or watched), bound */
    uint32_t max_pending_bytes;   /* ... and their total encoded size */
    uint32_t view_timeout_ms;     /* initial view-change timeout T (section 4.5.2) */
    uint32_t view_timeout_max_ms; /* cap on T as it doubles */
    uint32_t resend_ms;           /* retransmission interval for unfinished work */
    uint32_t state_retry_ms;      /* state transfer: ask another peer after this */
    uint32_t max_state_blocks;    /* blocks per state-transfer request, <= PBFT_MAX_STATE_BLOCKS */
    uint32_t monitor_ms;          /* primary monitoring: a backup complains when a request it
                                     holds waits this long (plus resend_ms) for a pre-prepare
                                     while the primary is not saturated; 0: off; < view timeout */
} pbft_config;

/* pbft_config_defaults fills sensible values for every limit and timer (not the keys). */
void pbft_config_defaults(pbft_config *c);

/* pbft_config_validate returns 0 or -1 with a message naming the field in err. */
int pbft_config_validate(const pbft_config *c, char *err, size_t errlen);

/* Events. */
enum {
    PBFT_EV_TICK = 1,     /* a deadline passed (or just: time moved) */
    PBFT_EV_MESSAGE = 2,  /* a frame arrived from a peer */
    PBFT_EV_REQUEST = 3,  /* a client submitted a transaction to this replica */
    PBFT_EV_EXECUTED = 4, /* the driver executed committed block `seq` */
};

typedef struct {
    int kind;
    uint64_t now_ms;
    /* Wall-clock time (ms since the Unix epoch) for block timestamps only; the core never
     * times anything with it. 0: use now_ms (the simulator's virtual clock). */
    uint64_t wall_ms;
    union {
        struct {
            const uint8_t *p; /* the frame */
            size_t n;
            /* The driver already checked the frame's signature against the sender's key, and
             * for a PRE-PREPARE every transaction signature in the block (pbft_frame_preverify,
             * run in a worker pool by pbftd). Never set this for unchecked input. */
            bool preverified;
        } msg;
        struct {
            const uint8_t *p; /* the encoded transaction */
            size_t n;
            bool preverified; /* signature already checked */
        } req;
        struct {
            uint64_t seq;
            uint8_t app_hash[32]; /* the application's state hash after this block */
        } exec;
    } u;
} pbft_event;

/* Result of a PBFT_EV_REQUEST, in pbft_output.request_status. */
enum {
    PBFT_REQ_ACCEPTED = 0,
    PBFT_REQ_MALFORMED = 1,
    PBFT_REQ_BAD_SIGNATURE = 2,
    PBFT_REQ_DUPLICATE = 3,
    PBFT_REQ_FULL = 4,
    PBFT_REQ_TOO_LARGE = 5,
    PBFT_REQ_BAD_NONCE = 6, /* the driver's check: the sender's nonce is already used */
};

/* Persistence. Records are key -> value; keys are fixed-size and sort in replay order. */
#define PBFT_REC_KEY_BYTES 20
enum {
    PBFT_PERSIST_PUT = 1,       /* store value under key */
    PBFT_PERSIST_DEL_BELOW = 2, /* delete every log record whose seq is <= key's seq */
};
typedef struct {
    int op;
    uint8_t key[PBFT_REC_KEY_BYTES];
    pbft_span value;
} pbft_persist;

#define PBFT_TO_ALL 0xFFFFu
typedef struct {
    uint16_t to;       /* replica id, or PBFT_TO_ALL (every replica but this one) */
    uint32_t delay_ms; /* 0: now. Only a Byzantine adversary delays. */
    pbft_span frame;
} pbft_send;

typedef struct {
    uint64_t seq;      /* = block height */
    uint64_t view;     /* the view of the commit certificate */
    pbft_digest d;     /* block digest */
    pbft_digest chain; /* chain_hash(seq) */
    pbft_span block;   /* encoded block */
    pbft_list cert;    /* 2f+1 signed COMMITs for (view, seq, d), ascending by sender */
} pbft_commit;

typedef struct {
    uint16_t to;       /* the peer that asked */
    uint64_t from_seq; /* committed blocks from_seq..to_seq (inclusive) */
    uint64_t to_seq;
    pbft_digest d; /* all-zero, or: only the block at from_seq with this digest */
} pbft_serve;

typedef struct {
    pbft_persist *persist;
    size_t n_persist;
    pbft_send *sends;
    size_t n_sends;
    pbft_commit *commits;
    size_t n_commits;
    pbft_serve *serves;
    size_t n_serves;
    uint64_t deadline_ms; /* UINT64_MAX: no deadline */
    int request_status;   /* PBFT_REQ_*, for PBFT_EV_REQUEST */
} pbft_output;

/* Reasons a peer message was dropped; counted in pbft_stats.drops. */
enum {
    PBFT_DROP_MALFORMED = 0,  /* the codec rejected it */
    PBFT_DROP_UNKNOWN_SENDER, /* sender id >= n */
    PBFT_DROP_BAD_SIGNATURE,  /* envelope signature or an embedded one */
    PBFT_DROP_SELF,           /* claims to be from us */
    PBFT_DROP_WRONG_VIEW,     /* view is not the current one (or older view-change) */
    PBFT_DROP_WATERMARK,      /* seq outside (h, h+L] */
    PBFT_DROP_NOT_PRIMARY,    /* a pre-prepare or new-view from a non-primary */
    PBFT_DROP_CONFLICT,       /* a second, different pre-prepare for (v, n) */
    PBFT_DROP_BAD_BLOCK,      /* block does not decode, match its digest, or has a bad tx */
    PBFT_DROP_BAD_CERT,       /* an invalid checkpoint proof or prepared certificate */
    PBFT_DROP_BAD_NEWVIEW,    /* NEW-VIEW whose O set does not match the recomputed one */
    PBFT_DROP_BAD_STATE,      /* state-transfer reply with a wrong block or certificate */
    PBFT_DROP_STALE,          /* old, already-done or unsolicited */
    PBFT_DROP_IN_VIEW_CHANGE, /* normal-case message while changing views */
    PBFT_DROP_LIMIT,          /* a bound was reached (memory, pending, in-flight) */
    PBFT_DROP__COUNT
};
const char *pbft_drop_name(int reason);

/* View-change reasons; counted in pbft_stats.view_changes. */
enum {
    PBFT_VC_REQUEST_TIMEOUT = 0, /* a request or pre-prepare waited past T */
    PBFT_VC_NEWVIEW_TIMEOUT,     /* view change to v did not complete within T */
    PBFT_VC_JOINED,              /* f+1 replicas moved to a higher view (section 4.5.2) */
    PBFT_VC_COMPLAINTS,          /* f+1 replicas complained about the primary (monitoring) */
    PBFT_VC__COUNT
};
const char *pbft_vc_reason_name(int reason);

/* Why a backup complained about the primary (primary monitoring, replica.c). */
enum {
    PBFT_COMPLAINT_SLOW = 0, /* a request waited past monitor_ms for a pre-prepare while the
                                primary was not saturated */
    PBFT_COMPLAINT_UNFAIR,   /* the primary proposed requests that arrived well after one it
                                leaves waiting, or left one waiting 10 view timeouts */
    PBFT_COMPLAINT_TIMEOUT,  /* the request timer expired, or the view change to this view did
                                not complete within T: a replica leaves a view only on f+1
                                such wishes, never alone (docs/protocol.md §11) */
    PBFT_COMPLAINT__COUNT
};
const char *pbft_complaint_reason_name(int reason);

typedef struct {
    uint64_t drops[PBFT_DROP__COUNT];
    uint64_t view_changes[PBFT_VC__COUNT];
    uint64_t complaints[PBFT_COMPLAINT__COUNT]; /* complaints this replica sent */
    uint64_t blocks_committed;
    uint64_t txs_committed;
    uint64_t state_transfers; /* blocks obtained by state transfer */
    uint64_t sig_verifies;    /* Ed25519 verifications the core performed */
    uint64_t out_dropped;     /* sends and serves dropped at their bound (pbft_out_limits) */
    /* PREPAREs and COMMITs this replica signed and sent for the first time (resends not
     * counted): whether it takes part in the normal case, or only follows it. */
    uint64_t prepares_sent;
    uint64_t commits_sent;
} pbft_stats;

/* Lifecycle. pbft_replica_new copies the config (the caller may free it). On error returns
 * -1 with err filled. pbft_replica_free is safe on NULL. */
int pbft_replica_new(const pbft_config *c, pbft_replica **out, char *err, size_t errlen);
void pbft_replica_free(pbft_replica *r);

/* Restart. Before pbft_replica_start, a restarted replica is given back (a) the height and
 * chain hash of the last block its store executed, and (b) every record it persisted, in key
 * order. Records came from our own disk, but are checked: each decodes as its key's kind,
 * and every signed message in one still verifies (a pre-prepare, a prepare, a commit, our
 * VIEW-CHANGE; the PREPAREs inside a prepared certificate are not re-verified). Returns 0, or
 * -1 if a record is corrupt (the driver should refuse to start). */
int pbft_replica_restore_executed(pbft_replica *r, uint64_t seq, const pbft_digest *chain,
                                  const uint8_t app_hash[32]);
int pbft_replica_restore_record(pbft_replica *r, const uint8_t key[PBFT_REC_KEY_BYTES],
                                const uint8_t *value, size_t n);

/* pbft_replica_start begins operation at now_ms. */
int pbft_replica_start(pbft_replica *r, uint64_t now_ms, pbft_output **out);

/* pbft_replica_step feeds one event. Returns 0; peer input never makes it fail (bad input is
 * counted in stats and dropped). Returns -1 for a misuse by the driver, and PBFT_STEP_FAILED
 * when the replica has failed (below). On either, *out is NULL.
 *
 * Failure is sticky and fail-stop. When an allocation fails, or a call would pass an output
 * bound that cannot drop (records, commits: pbft_out_limits), the call that met it returns
 * PBFT_STEP_FAILED and emits nothing at all, so no vote leaves without the record that makes
 * it a durable promise [TOCS §4.1]; every later call returns PBFT_STEP_FAILED too. The
 * driver must then stop (restart from its records, as after a crash). pbft_replica_failure
 * says why. pbft_replica_start behaves the same. */
#define PBFT_STEP_FAILED (-2)
int pbft_replica_step(pbft_replica *r, const pbft_event *ev, pbft_output **out);

/* pbft_replica_failure: NULL while the replica works; after a failure, a static string that
 * says what failed. */
const char *pbft_replica_failure(const pbft_replica *r);

/* Bounds on one call's output (TigerBeetle: put a limit on everything). Sends and serves past
 * their bound are dropped and counted (pbft_stats.out_dropped): PBFT retransmits, and a lost
 * frame is what any network may do. Records and commits cannot be dropped, so passing their
 * bound is a failure (above). pbft_replica_new derives them from the config: records
 * 4 * window + 16 (pre-prepare, prepare, commit and prepared certificate per slot, plus meta
 * and stable), commits window + PBFT_MAX_STATE_BLOCKS, sends 4 * window * n + 64 * n frames
 * and PBFT_OUT_MAX_SEND_BYTES bytes, serves 4 * n. */
#define PBFT_OUT_MAX_SEND_BYTES (256u << 20)
typedef struct {
    size_t persist;
    size_t commits;
    size_t sends;
    uint64_t send_bytes;
    size_t serves;
} pbft_out_limits;
void pbft_replica_out_limits(const pbft_replica *r, pbft_out_limits *out);
/* pbft_replica_set_out_limits replaces them (tests: to reach a bound on purpose). */
void pbft_replica_set_out_limits(pbft_replica *r, const pbft_out_limits *lim);

/* A fault hook for tests (the simulator's allocation faults): called before each allocation
 * of the core; returning true makes that allocation fail. NULL detaches. */
typedef bool (*pbft_alloc_fault_fn)(void *ctx);
void pbft_replica_set_alloc_fault(pbft_replica *r, pbft_alloc_fault_fn fn, void *ctx);

/* The negative control of the NEW-VIEW check (simulator only; pbftd never calls it): a
 * replica with the check off takes a NEW-VIEW's O set as sent, without recomputing it from
 * the VIEW-CHANGEs [OSDI §4.4]. The VIEW-CHANGEs themselves are still verified. */
void pbft_replica_unsafe_skip_newview_check(pbft_replica *r, bool skip);

/* pbft_frame_preverify checks what PBFT_EV_MESSAGE's preverified flag promises: the frame
 * decodes, its sender is a validator, its signature holds, and for a PRE-PREPARE every
 * transaction in the attached block verifies. Pure and thread-safe: pbftd runs it in workers.
 * Returns 0 or a PBFT_DROP_* reason + 1. */
int pbft_frame_preverify(const pbft_config *c, const uint8_t *p, size_t n);

/* A driver's cache of transactions whose signatures verified, keyed by the hash of all their
 * bytes (so a hit is the very same signed transaction): a backup checks a transaction when
 * it is forwarded and need not check it again in the PRE-PREPARE's block. Shared by threads;
 * the driver makes it thread-safe and bounded. */
typedef struct {
    bool (*seen)(void *ctx, const pbft_digest *h);
    void (*add)(void *ctx, const pbft_digest *h);
    void *ctx;
} pbft_txcache;

/* pbft_frame_preverify_cached is pbft_frame_preverify that consults and fills tc. */
int pbft_frame_preverify_cached(const pbft_config *c, const uint8_t *p, size_t n,
                                const pbft_txcache *tc);

/* Building a state-transfer reply (used by the driver for pbft_serve). Append up to
 * PBFT_MAX_STATE_BLOCKS (block, certificate) entries with pbft_state_reply_add, then seal. */
typedef struct {
    pbft_wbuf w;
    size_t count_off;
    size_t start;
    uint16_t count;
} pbft_state_reply;
void pbft_state_reply_begin(pbft_state_reply *sr, uint16_t sender, size_t limit);
int pbft_state_reply_add(pbft_state_reply *sr, pbft_span block, const pbft_list *cert);
/* Seal signs and appends the empty attachment; the frame is sr->w.p, sr->w.len. */
void pbft_state_reply_seal(pbft_state_reply *sr, const uint8_t chain[32], const uint8_t sk[64]);

/* Introspection (for metrics, RPC and the simulator's checker). */
uint16_t pbft_replica_id(const pbft_replica *r);
uint64_t pbft_replica_view(const pbft_replica *r);
uint16_t pbft_replica_primary(const pbft_replica *r); /* primary of the current view */
bool pbft_replica_in_view_change(const pbft_replica *r);
/* The view the others work in: the (f+1)-th highest view seen in the signed PRE-PREPAREs,
 * PREPAREs, COMMITs and NEW-VIEWs of each other replica (so at least one correct replica is
 * in it or later); UINT64_MAX until f+1 others were heard. A replica whose own view differs
 * for long is out of the view the others use (pbftd reports it: health, /metrics). */
uint64_t pbft_replica_others_view(const pbft_replica *r);
uint64_t pbft_replica_executed(const pbft_replica *r); /* last executed height */
uint64_t pbft_replica_stable(const pbft_replica *r);   /* last stable checkpoint */
bool pbft_replica_catching_up(const pbft_replica *r);  /* a state transfer is under way */
uint64_t pbft_replica_next_seq(const pbft_replica *r); /* primary: next seq to assign */
size_t pbft_replica_pending(const pbft_replica *r);    /* transactions held */
uint32_t pbft_replica_view_timeout(const pbft_replica *r);
/* The request timer's current length (adaptive: replica.c, req_timeout) and the commit
 * latency it follows, in ms. */
uint64_t pbft_replica_request_timeout(const pbft_replica *r);
uint64_t pbft_replica_commit_latency(const pbft_replica *r);
const pbft_stats *pbft_replica_stats(const pbft_replica *r);

/* Events worth a log line (design section 8: the event log). The core reports them through
 * a callback the driver sets; it does no I/O itself. The text is valid for the call only.
 * `arg` is kind-specific (below); -1 when unused. */
enum {
    PBFT_TRACE_VIEW_CHANGE = 1,   /* started a view change to `view`; arg: PBFT_VC_* reason */
    PBFT_TRACE_NEW_VIEW_SENT,     /* as the new primary, sent NEW-VIEW and entered `view` */
    PBFT_TRACE_NEW_VIEW_ACCEPTED, /* accepted a NEW-VIEW and entered `view`; arg: its sender */
    PBFT_TRACE_REJECT,            /* refused a VIEW-CHANGE or NEW-VIEW, and why */
    PBFT_TRACE_CHECKPOINT,        /* checkpoint `seq` became stable */
    PBFT_TRACE_STATE_START,       /* state transfer started at height `seq` */
    PBFT_TRACE_STATE_DONE,        /* state transfer reached its target: height `seq` */
    PBFT_TRACE_FIRST_COMMIT,      /* the first block committed in `view` (height `seq`) */
    PBFT_TRACE_COMPLAINT,         /* complained about the primary of `view`; arg: reason */
    PBFT_TRACE_FAILED,            /* the replica failed (pbft_replica_failure): fail-stop */
};
typedef void (*pbft_trace_fn)(void *ctx, int kind, uint64_t view, uint64_t seq, int arg,
                              const char *text);
void pbft_replica_set_trace(pbft_replica *r, pbft_trace_fn fn, void *ctx);

/* Byzantine behaviour (consensus/byz.h). A replica with an adversary attached passes every
 * message it creates through it before signing. NULL detaches. The adversary is borrowed and
 * must outlive the replica. */
void pbft_replica_set_byz(pbft_replica *r, pbft_byz *b);

#endif
