/*
 * node.h - the pbftd runtime: wires the pure core to the network (nng), the disk (RocksDB),
 * the ledger and the RPC server.
 *
 * Threads:
 *   - the loop thread owns the replica, the ledger and all writes to the store. It takes up
 *     to NODE_BATCH events from one bounded queue, steps the core for each, executes the
 *     blocks they commit, writes everything they produced in ONE synced RocksDB batch, and
 *     only then sends their frames (persist-before-send, replica.h) and answers state
 *     transfer requests;
 *   - verify workers check signatures of incoming frames (pbft_frame_preverify) before they
 *     reach the queue, because verification is where the CPU goes;
 *   - nng's own threads receive frames and serve HTTP.
 *
 * Prefix: node_.
 */
#ifndef PBFT_NODE_NODE_H
#define PBFT_NODE_NODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "consensus/replica.h"
#include "node/config.h"
#include "storage/store.h"

typedef struct node node;

typedef struct {
    const char *home;      /* the node home directory */
    bool unsafe_byzantine; /* allow a Byzantine mode (testing only) */
    bool byzantine_armed;  /* start honest; node_request_byzantine turns the mode on */
    const char *byzantine; /* MODE[:delay_ms[:percent]] from the command line, or NULL */
    const char *log_level; /* overrides log.level when not NULL */
} node_options;

/* node_open loads the home (config, genesis, key), opens and recovers the store, restores
 * the replica from its records and starts the network, workers and RPC. Returns 0, or -1
 * with a message in err that names the file and key at fault; -2 likewise when, undoing
 * what it had opened, an nng close was abandoned at its deadline (node_close): the caller
 * must then end the process with _exit, as after NODE_CLOSE_ABANDONED. */
int node_open(const node_options *o, node **out, char *err, size_t errlen);
/* node_open's -3: the data directory's filesystem is full, or nearly (node.min_free_mb), or
 * RocksDB could not open it for lack of space. pbftd exits NODE_EXIT_DISK_FULL, as does a
 * running node that runs short of space; systemd does not restart it (scripts/pbftd.service):
 * free space, then start it again. */
#define NODE_OPEN_DISK_FULL (-3)
#define NODE_EXIT_DISK_FULL 4

/* node_run blocks until node_request_stop is called (e.g. from a signal handler through
 * its flag). The node keeps running meanwhile (an RPC handler waiting for the loop's verdict
 * still gets it); node_close then shuts everything down in order. */
void node_run(node *n);
void node_request_stop(node *n); /* async-signal-safe */
/* node_request_byzantine activates an armed Byzantine mode (async-signal-safe; SIGUSR1). */
void node_request_byzantine(node *n);
/* node_close shuts down in order: RPC, the loop, storage and the event log, then the peer
 * transport. It returns NODE_CLOSED, or NODE_CLOSE_ABANDONED when an nng close did not end
 * within its deadline (NODE_RPC_CLOSE_MS, NODE_TRANSPORT_CLOSE_MS: nng 1.5.2 can deadlock
 * there). The node is then left allocated, since nng threads may still use it, and the
 * caller must end the process at once with _exit. Safe on NULL. */
#define NODE_RPC_CLOSE_MS 3000u
#define NODE_TRANSPORT_CLOSE_MS 2000u
enum { NODE_CLOSED = 0, NODE_CLOSE_ABANDONED = 1 };
int node_close(node *n);

/* node_library_fini ends nng after a node_close that returned NODE_CLOSED: it waits for
 * nng's reaper, which frees closed sockets and servers asynchronously, so that a leak
 * checker at exit sees only real leaks. Within NODE_TRANSPORT_CLOSE_MS, or false: then the
 * caller must _exit as after NODE_CLOSE_ABANDONED. No nng call may follow. */
bool node_library_fini(void);

/* A snapshot of what RPC and logs report, taken by the loop thread after each iteration. */
typedef struct {
    uint16_t id;
    uint64_t height;
    uint8_t last_chain[32];
    uint8_t last_app_hash[32];
    uint64_t view;
    uint16_t primary;
    bool in_view_change;
    uint64_t stable;
    size_t pending;
    bool catching_up;
    uint64_t request_timeout_ms; /* the adaptive request timer's length now */
    uint64_t commit_latency_ms;  /* the commit latency it follows */
    pbft_stats stats;
    uint64_t peers_connected;
    uint64_t dropped_queue; /* frames dropped because a node queue was full */
    uint64_t byz_actions;   /* actions of a Byzantine mode (testing only) */
    /* The view the others work in (pbft_replica_others_view; UINT64_MAX: not known yet), and
     * whether ours has differed from it for NODE_OUT_OF_VIEW_MS or longer. */
    uint64_t others_view;
    bool out_of_view;
} node_status;

void node_status_get(node *n, node_status *out);

/* node_submit verifies a client transaction (on the caller's thread) and queues it for the
 * core. With wait, it returns the core's PBFT_REQ_* verdict (the loop answers within one
 * iteration); without, PBFT_REQ_ACCEPTED once queued (or PBFT_REQ_FULL). */
int node_submit(node *n, const uint8_t *tx, size_t len, bool wait);

/* Accessors for the RPC layer. The store is thread-safe for reads. */
struct store *node_store(node *n);
const genesis *node_genesis(node *n);
const node_config *node_cfg(node *n);
int node_account(node *n, const uint8_t pk[32], uint64_t *balance, uint64_t *nonce);

/* node_read_block reads committed block `height` and checks it before anything is served
 * from it (issue 12; docs/operations.md, "Durability and recovery"): the block decodes and
 * is the one at that height; its transactions match its root; its digest is the stored digest; its
 * chain hash follows from its predecessor's (the genesis hash below height 1); its certificate
 * holds n - f signed COMMITs for it from distinct validators (pbft_commit_cert_verify). Returns
 * STORE_OK with *out filled, STORE_E_NOTFOUND (or another store error), or STORE_E_CORRUPT with
 * *why naming the failed check: the read is then counted (node_corrupt) and *out is released.
 * Thread-safe. */
int node_read_block(node *n, uint64_t height, store_block_read *out, const char **why);
/* What node_read_block found since start, and the repair of it: a block that fails is
 * queued, fetched again from peers with its certificate and written back (node.c,
 * repair_offer). */
typedef struct {
    uint64_t reads;          /* reads that failed their checks */
    uint64_t lowest;         /* the lowest height that failed (0: none) */
    uint64_t repaired;       /* blocks written again from a peer's proven copy */
    uint64_t overflow;       /* failed heights not queued: the queue was full */
    size_t pending;          /* blocks waiting for repair now */
    uint64_t lowest_pending; /* the lowest of them (0: none) */
} node_corruption;
void node_corrupt(node *n, node_corruption *out);

/* One peer's connection state, as the transport reports it (net_info). */
typedef struct {
    uint16_t id;
    const char *address; /* the genesis p2p address (valid while the node is open) */
    bool connected;
    uint64_t sent, received, dropped;
} node_peer;

/* node_metrics appends the node's metrics in Prometheus text format (GET /metrics). */
struct mtext;
void node_metrics(node *n, struct mtext *t);

/* node_peers fills out[0..max) with every other validator's state and returns the count. */
size_t node_peers(node *n, node_peer *out, size_t max);

#endif
