/*
 * config.h - the node's configuration file (config/config.toml) and the network's genesis
 * document (config/genesis.json).
 *
 * config.toml is a subset of TOML (no C TOML library is packaged in Debian 12): comments (#),
 * [section] headers, key = value with values that are "strings" (with \" \\ \n \t escapes),
 * integers (decimal, optional sign, optional _ separators), true/false, and one-line arrays
 * of strings or integers. Anything else is an error naming the file, line and key. Unknown
 * keys are errors too: a typo must not silently fall back to a default.
 *
 * genesis.json is JSON (jansson) and is shared, byte for byte, by every replica.
 *
 * Prefixes: config_, genesis_.
 */
#ifndef PBFT_NODE_CONFIG_H
#define PBFT_NODE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "consensus/replica.h"

#define CONFIG_ADDR_MAX 128
#define CONFIG_PATH_MAX 512

/* ---- config.toml --------------------------------------------------------------------- */
typedef struct {
    /* [node] */
    char moniker[64];               /* node.moniker, default "node" */
    char key_file[CONFIG_PATH_MAX]; /* node.key_file, default "config/node_key.json" (relative
                                      to the home directory) */
    char data_dir[CONFIG_PATH_MAX]; /* node.data_dir, default "data" */
    uint32_t min_free_mb;           /* node.min_free_mb: free space pbftd needs to start on the
                                       data directory's filesystem (it stops below half),
                                       default 512; 0: no check */
    /* [p2p] */
    char p2p_listen[CONFIG_ADDR_MAX]; /* p2p.listen, default "tcp://127.0.0.1:26600" */
    uint32_t p2p_max_msg_bytes;       /* p2p.max_msg_bytes, default 32 MiB, <= PBFT_MAX_MSG_BYTES */
    uint32_t p2p_send_queue;          /* p2p.send_queue: frames queued per peer, default 1024 */
    uint32_t p2p_verify_workers;      /* p2p.verify_workers: signature threads, default 2 */
    char p2p_twin_dial[512];          /* p2p.twin_dial: "none" or ID=tcp://host:port[,...] */
    char p2p_peer_override[512];      /* p2p.peer_override: "none" or ID=tcp://host:port[,...] */
    /* [rpc] */
    char rpc_listen[CONFIG_ADDR_MAX]; /* rpc.listen, default "http://127.0.0.1:26700" */
    uint32_t rpc_max_body_bytes;      /* rpc.max_body_bytes, default 1 MiB */
    uint32_t rpc_max_batch;           /* rpc.max_batch, default 100 */
    uint32_t rpc_max_connections;     /* rpc.max_connections, default 256 */
    uint32_t rpc_commit_timeout_ms;   /* rpc.commit_timeout_ms, default 10000 */
    uint32_t rpc_body_timeout_ms;     /* rpc.body_timeout_ms, default 10000 */
    /* [mempool] */
    uint32_t mempool_max_txs;   /* mempool.max_txs, default 20000 */
    uint32_t mempool_max_bytes; /* mempool.max_bytes, default 64 MiB */
    /* [log] */
    char log_level[16];              /* log.level: "debug" | "info" | "warn" | "error" */
    char event_log[CONFIG_PATH_MAX]; /* log.event_log, default "data/events.jsonl" */
    uint32_t event_log_max_bytes;    /* log.event_log_max_bytes, default 64 MiB */
    char msg_log[CONFIG_PATH_MAX];   /* log.msg_log: "none", or the audit log of received
                                        consensus messages (crash-consistency test) */
    /* [byzantine] (testing only; refused without --unsafe-byzantine) */
    char byz_mode[32];     /* byzantine.mode, default "honest" */
    uint32_t byz_delay_ms; /* byzantine.delay_ms */
    uint32_t byz_percent;  /* byzantine.percent */
    char byz_options[200]; /* byzantine.options: "none" or OPTION[:OPTION...] (--byzantine) */
} node_config;

/* config_defaults fills every field with its default. */
void config_defaults(node_config *c);

/* config_load parses path over the defaults already in *c and validates every value. On
 * error returns -1 and err says, e.g.:
 *   "config/config.toml:12: p2p.max_msg_bytes: 0 is out of range (must be 1024..67108864)"
 *   "config/config.toml:3: unknown key \"rpc.lisen\""
 *   "config/config.toml:7: p2p.listen: expected a string" */
int config_load(const char *path, node_config *c, char *err, size_t errlen);

/* config_resolve puts into out the path p (absolute, or relative to home) followed by
 * suffix (may be ""); used for node.key_file and node.data_dir. */
void config_resolve(const char *home, const char *p, const char *suffix, char *out, size_t outlen);

/* config_write writes c as a commented config.toml (every key, with its default documented)
 * that config_load reads back to the same values. Returns 0 or -1 with err. */
int config_write(const char *path, const node_config *c, char *err, size_t errlen);

/* ---- genesis.json ---------------------------------------------------------------------
 * {
 *   "chain_id": "pbft-local",                       1..64 chars [A-Za-z0-9._-]
 *   "genesis_time_ms": 1700000000000,
 *   "consensus": {"checkpoint_interval": 64, "window": 256, "max_inflight": 64,
 *                 "max_block_txs": 1000, "max_block_bytes": 1048576, "block_interval_ms": 10,
 *                 "view_timeout_ms": 2000, "view_timeout_max_ms": 60000, "resend_ms": 500,
 *                 "state_retry_ms": 2000, "max_state_blocks": 64},
 *   "validators": [{"id": 0, "public_key": "<64 hex>", "p2p_address": "tcp://127.0.0.1:26600",
 *                   "rpc_address": "http://127.0.0.1:26700", "name": "node0"}, ...],
 *   "accounts": [{"public_key": "<64 hex>", "balance": "1000000"}, ...]
 * }
 * Validator ids are 0..n-1 in order; n must be 4..PBFT_MAX_N; keys distinct. Balances are
 * decimal strings (u64). Every field is required except "name" and "rpc_address".
 * ------------------------------------------------------------------------------------- */
typedef struct {
    uint8_t public_key[32];
    char p2p_address[CONFIG_ADDR_MAX];
    char rpc_address[CONFIG_ADDR_MAX];
    char name[64];
} genesis_validator;

typedef struct {
    uint8_t public_key[32];
    uint64_t balance;
} genesis_account;

typedef struct {
    char chain_id[65];
    uint64_t genesis_time_ms;
    /* consensus parameters, same names as pbft_config */
    uint32_t checkpoint_interval, window, max_inflight, max_block_txs, max_block_bytes,
        block_interval_ms, view_timeout_ms, view_timeout_max_ms, resend_ms, state_retry_ms,
        max_state_blocks;
    uint16_t n;
    genesis_validator validators[PBFT_MAX_N];
    size_t n_accounts;
    genesis_account *accounts; /* heap; at most GENESIS_MAX_ACCOUNTS */
    uint8_t hash[32];          /* SHA-256 of the file's bytes: the chain's genesis hash */
} genesis;

#define GENESIS_MAX_ACCOUNTS 100000
#define GENESIS_MAX_BYTES (32u << 20)

/* genesis_load reads and validates path. On error returns -1 with err naming the file and
 * the JSON path of the bad field, e.g. "genesis.json: validators[2].public_key: expected 64
 * hex characters". */
int genesis_load(const char *path, genesis *g, char *err, size_t errlen);
/* genesis_write writes g as pretty JSON (2-space indent, keys in the order above). */
int genesis_write(const char *path, const genesis *g, char *err, size_t errlen);
void genesis_free(genesis *g); /* frees accounts; safe on a zeroed struct */

/* genesis_to_pbft fills the consensus part of a pbft_config (n, chain, genesis, pubkeys and
 * every parameter) from g. The caller sets id and sk. */
void genesis_to_pbft(const genesis *g, pbft_config *c);

#endif
