/*
 * sim.h - the deterministic cluster simulator (design section 7).
 *
 * All replicas of a cluster live in one process and are driven through the public API of the
 * unchanged consensus core (consensus/replica.h), following the driver contract at the top of
 * that header: persist -> sends -> commits (store, then report PBFT_EV_EXECUTED) -> serves ->
 * deadline. Everything that varies - network delay, drops, duplicates, reordering,
 * partitions, crash times, client load, key material, Byzantine choices - comes from ONE
 * seed through a PRNG held in the sim struct: no rand(), no globals, no wall clock. Time is
 * virtual (milliseconds) and advances to the next event of a binary heap ordered by
 * (time, insertion counter), so ties are broken deterministically and a seed replays exactly
 * (the model is canonical/raft's fixture and TigerBeetle's VOPR, see docs/style.md).
 *
 * A checker runs after every processed event, over the honest nodes (not Byzantine, not
 * twins; crashed-then-restarted honest nodes are honest):
 *   agreement  one canonical digest per height; an honest commit of another digest fails;
 *   validity   every committed transaction decodes and was submitted by a simulated client,
 *              and no block an honest primary proposed repeats a transaction already
 *              committed there (a Byzantine primary's may: the ledger refuses the copy);
 *   integrity  each durable chain grows by exactly one height, chain_hash(h) =
 *              pbft_chain_next(chain_hash(h-1), digest(h)), the committed block decodes and
 *              matches its digest and height, and the executed height never goes back
 *              (not even across a restart); and no honest replica signs two different
 *              PRE-PREPAREs, PREPAREs, COMMITs or CHECKPOINTs for one (view, seq), across
 *              crashes and power cuts alike (a lossy table: a check, never a false alarm);
 *              and every PRE-PREPARE, PREPARE, COMMIT and VIEW-CHANGE an honest replica
 *              sends is already in its durable records (persist before send);
 *   liveness   after the faults heal (heal_ms), every submitted transaction is committed at
 *              every honest, running node by heal_ms + liveness_bound_ms.
 * The first violation stops the run and is kept as a one-line reason.
 */
#ifndef PBFT_TESTS_SIM_H
#define PBFT_TESTS_SIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "consensus/byz.h"
#include "consensus/replica.h"

typedef struct sim sim;

/* The one PRNG: xoshiro256** seeded through splitmix64 (Blackman and Vigna). Deterministic
 * and platform-independent; integer-only draws. */
typedef struct {
    uint64_t s[4];
} sim_rng;
void sim_rng_seed(sim_rng *r, uint64_t seed);
uint64_t sim_rng_next(sim_rng *r);
uint64_t sim_rng_below(sim_rng *r, uint64_t n);               /* uniform in [0, n), n > 0 */
uint64_t sim_rng_range(sim_rng *r, uint64_t lo, uint64_t hi); /* uniform in [lo, hi] */
bool sim_rng_ppm(sim_rng *r, uint32_t ppm);                   /* true with ppm / 10^6 */
uint64_t sim_mix64(uint64_t x); /* splitmix64 finaliser: derive sub-seeds */

/* Upper bounds of the fixture (TigerBeetle: put a limit on everything). */
#define SIM_MAX_NODES (PBFT_MAX_N + 8) /* replicas plus twins */
#define SIM_MAX_CLIENTS 64
#define SIM_MAX_PARTITIONS 32
#define SIM_MAX_EXEC_DEPTH 64 /* nested PBFT_EV_EXECUTED reports per event */
#define SIM_REASON_BYTES 512

/* A probability, in parts per million. */
#define SIM_PPM 1000000u

/* sim_filter_fn is called for every delivery the network model is about to schedule
 * (replica-to-replica frames, after the partition check). Return false to drop it. It must
 * not call back into the simulator except the read-only sim_node_* / sim_now accessors. */
typedef bool (*sim_filter_fn)(void *ctx, sim *s, int from_node, int to_node, const uint8_t *frame,
                              size_t n);
/* sim_hook_fn is called after every processed event (after the checker). It may inject faults
 * (sim_crash, sim_restart, sim_heal, sim_set_link, ...). */
typedef void (*sim_hook_fn)(void *ctx, sim *s);

typedef struct {
    uint64_t seed;
    uint16_t n; /* replicas 0..n-1 */

    /* The core's configuration: every limit and timer (keys, id, n, chain, genesis are filled
     * per node by the simulator). sim_options_defaults starts from pbft_config_defaults and
     * shrinks the limits so checkpoints, GC and the window are exercised. */
    pbft_config core;

    /* Network model. Delay is uniform in [delay_min_ms, delay_max_ms] per delivery (this
     * reorders), plus the send's own delay_ms. */
    uint32_t drop_ppm;
    uint32_t dup_ppm;
    uint32_t delay_min_ms;
    uint32_t delay_max_ms;
    bool preverify_cache; /* share pbft_frame_preverify results between receivers (default on) */

    /* Clients. Each client submits up to its share of txs_total transfers, a burst of
     * 1..submit_burst_max every submit_gap_min_ms..submit_gap_max_ms (bursts fill blocks, so
     * batching is exercised), starting at submit_start_ms and never after
     * submit_end_ms; an uncommitted transaction is resubmitted to all replicas every
     * client_retry_ms (PBFT section 4.1). */
    uint32_t n_clients;
    uint32_t txs_total;
    uint64_t submit_start_ms;
    uint64_t submit_end_ms;
    uint32_t submit_gap_min_ms;
    uint32_t submit_gap_max_ms;
    uint32_t submit_burst_max; /* each submission sends 1..this many transactions at once */
    uint32_t client_retry_ms;
    bool submit_to_backups;   /* clients never submit to the current primary (monitoring) */
    bool clients_preverified; /* requests arrive with preverified = true (benchmark feeder) */

    /* Faults heal at heal_ms (drop/dup to 0, every link open; UINT64_MAX: only when a hook
     * calls sim_heal). From the heal on, every submitted transaction must commit at every
     * honest running node within liveness_bound_ms (the run ends as soon as it has). */
    uint64_t heal_ms;
    uint64_t liveness_bound_ms;
    /* The run also stops (with a violation) after this many events: a livelock guard. */
    uint64_t max_events;

    /* Storage model. pbftd writes each loop iteration's records and executed blocks in one
     * batch and fsyncs it before it sends anything (node/node.c, flush), and the simulator
     * applies outputs in that order. A power cut (sim_power_cut) loses the batch of the
     * step it lands in: nothing of that step was synced, so nothing of it may have been
     * sent. unsafe_send_before_sync models a driver that sends first (the negative
     * control: the step's messages escape while its records are lost). */
    bool unsafe_send_before_sync;
    /* unsafe_lose_records models the driver bug that sticky failure fixed: a step whose
     * records were lost (a persist that failed silently) whose votes were sent anyway. The
     * negative control of the "every vote leaves with its record" check. */
    bool unsafe_lose_records;
    /* unsafe_skip_newview_check turns off every replica's recomputation of a NEW-VIEW's O
     * set (pbft_replica_unsafe_skip_newview_check): the negative control of the NEW-VIEW
     * forgery scenarios. */
    bool unsafe_skip_newview_check;

    bool verbose; /* one trace line per interesting event, on stderr */

    sim_filter_fn filter;
    sim_hook_fn hook;
    void *ctx;
} sim_options;

/* Result of a run. */
enum {
    SIM_RUNNING = 0,
    SIM_LIVE = 1,      /* every transaction committed everywhere after the heal */
    SIM_VIOLATION = 2, /* the checker failed: see sim_violation */
    SIM_STOPPED = 3,   /* sim_stop was called (scenario decided) */
};

/* Violation classes, for scenarios that expect a particular one. */
enum {
    SIM_V_NONE = 0,
    SIM_V_AGREEMENT,
    SIM_V_VALIDITY,
    SIM_V_INTEGRITY,
    SIM_V_LIVENESS,
    SIM_V_CORE, /* the core misbehaved towards the driver (step returned -1, bad restore) */
};

typedef struct {
    uint64_t events;
    uint64_t deliveries;
    uint64_t drops_net; /* deliveries the network model dropped (loss, partition, crashed) */
    uint64_t commits;   /* blocks committed at honest nodes (all nodes counted) */
    uint64_t txs_committed;
    uint64_t dup_tx_commits; /* a transaction committed again at a node that had it */
    uint64_t dup_tx_honest;  /* ... in a block an honest primary proposed knowing the first
                                (a violation: see the checker's validity rule) */
    uint64_t view_changes;   /* sum of honest stats.view_changes (across restarts) */
    uint64_t vc_complaints;  /* of which: on f+1 complaints (primary monitoring) */
    uint64_t crashes;
    uint64_t power_cuts;   /* of the crashes: power cuts that landed in a step */
    uint64_t alloc_faults; /* of the crashes: fail-stops on an allocation that failed */
    uint64_t restarts;
    uint64_t byz_actions;
    uint64_t frames_sent;  /* frames the replicas produced (one signature each, at least) */
    uint64_t sig_verifies; /* Ed25519 verifications inside the cores (stats.sig_verifies) */
    uint64_t preverify_calls;
    uint64_t preverify_hits;
    uint64_t requests;
    uint64_t request_status[8];
    uint64_t sim_ms;          /* virtual time reached */
    uint64_t heal_to_live_ms; /* from the heal until every tx was committed everywhere */
    uint64_t trace_hash;      /* FNV-1a over every processed event and commit */
    uint64_t commit_hash;     /* FNV-1a over the canonical (height, digest) history */
    uint64_t height;          /* canonical history length */
} sim_totals;

/* sim_options_defaults fills o for an honest, fault-free cluster of n replicas. */
void sim_options_defaults(sim_options *o, uint16_t n, uint64_t seed);

/* sim_new builds the cluster (replicas are created but not started). Returns 0, or -1 with
 * err filled (a bad option or a configuration the core rejects). */
int sim_new(const sim_options *o, sim **out, char *err, size_t errlen);
void sim_free(sim *s);

/* Before sim_start: instantiate replica id a second time with the same key (a twin, Bano et
 * al.). Returns the new node index. The original keeps index id. */
int sim_add_twin(sim *s, uint16_t id);
/* Before sim_start: make a node Byzantine (consensus/byz.h); the adversary's seed comes from
 * the sim seed. Returns 0 or -1. */
int sim_set_byz(sim *s, int node, int mode, uint32_t delay_ms, uint32_t percent);
/* Twin partition: group[node] in {1 = A, 2 = B}; deliveries only within the sender's group.
 * Clients may be bound to a group (0 = any). NULL clears. */
void sim_set_twin_groups(sim *s, const uint8_t *group);
void sim_set_client_group(sim *s, uint32_t client, uint8_t group);

/* Scheduled faults (before or after start). A partition interval [start_ms, end_ms) cuts
 * every link with cut[from * node_count + to] != 0 (asymmetric allowed). */
int sim_at_crash(sim *s, uint64_t at_ms, int node);
int sim_at_restart(sim *s, uint64_t at_ms, int node);
int sim_add_partition(sim *s, uint64_t start_ms, uint64_t end_ms, const uint8_t *cut);

/* A power cut at a running node: it lands in the node's next step that sends a message of
 * type msg_type (0: its next step at all); that step's unsynced writes and everything it
 * would have sent are lost, and the node is down until restarted. */
int sim_at_power_cut(sim *s, uint64_t at_ms, int node, uint8_t msg_type);

/* An allocation fault at a running node: the k-th allocation of its core from then on fails
 * (pbft_replica_set_alloc_fault). The core fails that step, emitting nothing, and the node
 * fail-stops (a crash) until restarted. A fault that has not landed by the node's next
 * crash or restart is disarmed. */
int sim_at_alloc_fault(sim *s, uint64_t at_ms, int node, uint32_t k);
void sim_alloc_fault(sim *s, int node, uint32_t k);
void sim_power_cut(sim *s, int node, uint8_t msg_type);

/* Immediate faults (from a hook, or between runs). */
void sim_crash(sim *s, int node);
int sim_restart(sim *s, int node);
void sim_set_link(sim *s, int from, int to, bool open);
void sim_heal(sim *s);
void sim_stop(sim *s);

/* sim_start starts every replica at time 0 and schedules the clients and the heal. */
int sim_start(sim *s);
/* sim_step processes one event; returns the state (SIM_RUNNING while it may continue). */
int sim_step(sim *s);
/* sim_run steps until the run ends; returns SIM_LIVE, SIM_VIOLATION or SIM_STOPPED. */
int sim_run(sim *s);
/* sim_run_until processes every event up to t_ms, also after SIM_LIVE (the checker keeps
 * running; a violation still stops it). For post-conditions that need the cluster to go on. */
int sim_run_until(sim *s, uint64_t t_ms);

/* Introspection. */
uint64_t sim_now(const sim *s);
int sim_node_count(const sim *s);
uint16_t sim_node_id(const sim *s, int node);
bool sim_node_honest(const sim *s, int node);
bool sim_node_up(const sim *s, int node);
const pbft_replica *sim_node_replica(const sim *s, int node); /* NULL while crashed */
uint64_t sim_node_height(const sim *s, int node);             /* durable chain height */
/* Durable chain entry at height h (1..height): digest, commit view, chain hash. */
bool sim_node_block(const sim *s, int node, uint64_t h, pbft_digest *d, uint64_t *view,
                    pbft_digest *chain);
/* Number of transactions in the stored block at height h (0 if none). */
uint32_t sim_node_block_txs(const sim *s, int node, uint64_t h);
/* PREPAREs and COMMITs the node sent (every incarnation), and when it last sent one:
 * whether a replica takes part in the normal case, not only follows it. */
uint64_t sim_node_votes(const sim *s, int node, uint64_t *last_ms);
/* Stats of the current incarnation plus every earlier one. */
void sim_node_stats(const sim *s, int node, pbft_stats *st);
uint32_t sim_txs_submitted(const sim *s);
int sim_state(const sim *s);
const char *sim_violation(const sim *s); /* NULL if none */
int sim_violation_class(const sim *s);
void sim_get_totals(const sim *s, sim_totals *t);
/* sim_dump prints every node's state (view, heights, drops by reason) for a post-mortem. */
void sim_dump(const sim *s, FILE *f);
/* A submitted transaction (for scenarios): its hash. */
bool sim_tx_hash(const sim *s, uint32_t i, pbft_digest *h);

/* Benchmark support: pre-sign `count` transactions now (outside any timed region), then
 * feed them to `node` as PBFT_EV_REQUEST whenever fewer than `inflight` are uncommitted. */
int sim_bench_presign(sim *s, uint32_t count);
void sim_bench_feed(sim *s, int node, uint32_t inflight);

#endif
