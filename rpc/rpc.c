/*
 * rpc.c - JSON-RPC 2.0 over nng's HTTP server (see rpc.h, docs/rpc.md).
 *
 * Every request is answered exactly as the JSON-RPC 2.0 specification prescribes: -32700 for
 * a body that is not JSON, -32600 for one that is not a request object, -32601 for an unknown
 * method, -32602 for bad params; an empty batch gets one -32600; a batch of notifications gets
 * no body at all. Transactions the node refuses get codes -32001..-32006 (docs/rpc.md).
 * A number jansson cannot hold is valid JSON, not -32700 (load_big). Refusals at the HTTP
 * level (400, 408, 411, 413, 503, and nng's own 400, 404, 405, 505) carry a JSON-RPC error
 * object as their body too (reply_close, nng_error_pages).
 * 64-bit integers are decimal strings; hashes, keys and transactions are lower-case hex.
 */
#include "rpc/rpc.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <jansson.h>
#include <nng/nng.h>
#include <nng/supplemental/http/http.h>
#include <nng/supplemental/util/platform.h>

#include "crypto/keys.h"
#include "node/ledger.h"
#include "node/metrics.h"
#include "node/node.h"
#include "storage/store.h"

#define RPC_PARSE_ERROR (-32700)
#define RPC_INVALID_REQUEST (-32600)
#define RPC_METHOD_NOT_FOUND (-32601)
#define RPC_INVALID_PARAMS (-32602)
#define RPC_INTERNAL (-32603)
/* Transaction refusals, one code per reason. */
#define RPC_TX_MALFORMED (-32001)
#define RPC_TX_BAD_SIGNATURE (-32002)
#define RPC_TX_BAD_NONCE (-32003)
#define RPC_TX_DUPLICATE (-32004)
#define RPC_TX_MEMPOOL_FULL (-32005)
#define RPC_TX_TOO_LARGE (-32006)
#define RPC_BUSY (-32007)         /* too many broadcast_tx_commit requests waiting */
#define RPC_BODY_TIMEOUT (-32008) /* HTTP 408: the body did not arrive in time */
#define RPC_UNAVAILABLE (-32009)  /* HTTP 503: no body slot (or memory) for the request */
#define RPC_NOT_FOUND (-32010)
#define RPC_COMMIT_TIMEOUT (-32011)
#define RPC_STORAGE_CORRUPT (-32012) /* a stored block failed its checks (node_read_block) */

#define RPC_POLL_MS 20    /* broadcast_tx_commit: how often the tx index is polled */
#define RPC_SWEEP_MS 100  /* how often body reads are checked against their deadline */
#define RPC_DRAIN_MS 2000 /* after a 408, how long nng may take to write it and close */

/* A broadcast_tx_commit waiting for its transaction to commit. The HTTP aio is kept (not
 * finished) while a sleep aio polls the tx index; no nng worker thread is blocked. */
struct pending {
    struct rpc_server *s;
    bool in_use;
    nng_aio *http;  /* the HTTP handler's aio; NULL once finished or cancelled */
    nng_aio *sleep; /* allocated at rpc_open, reused */
    json_t *id;
    pbft_digest hash;
    nng_time deadline;
};

/* A POST body being read from the connection (nng does not collect it: it would answer 400,
 * not 413, to an oversized body). At most rpc.max_connections are read at once (those with
 * http set); each must arrive within rpc.body_timeout_ms, and when all are taken the oldest
 * is given up for the newcomer, so slow clients cannot lock the others out (docs/rpc.md,
 * "Limits"). A read given up is answered 408 and stays in its slot until nng has written
 * that and closed the connection, which completes the read: twice as many slots as reads. */
struct bodyread {
    struct rpc_server *s;
    bool in_use;
    nng_aio *http; /* the HTTP handler's aio; NULL once finished, cancelled or answered 408 */
    nng_aio *rd;   /* allocated at rpc_open, reused */
    char *buf;
    size_t len;
    nng_time started;  /* when the read began: the oldest is given up first */
    nng_time deadline; /* reading: answer 408 then; answered: abort the read then */
};

struct rpc_server {
    nng_http_server *srv;
    nng_url *url;
    struct node *n;
    nng_mtx *mu; /* guards pending[] and closing */
    bool closing;
    struct pending *pending;
    size_t npending; /* slots: rpc.max_connections */
    struct bodyread *reads;
    size_t nreads;  /* 2 * rpc.max_connections (see bodyread) */
    nng_aio *sweep; /* every RPC_SWEEP_MS: body reads past their deadline */
};

/* A method either fills *result (and returns 0) or sets *code and *msg, and may then set
 * *result to the error's data member. */
typedef int (*method_fn)(struct node *n, json_t *params, json_t **result, int *code,
                         const char **msg);

static json_t *hex_json(const uint8_t *p, size_t n)
{
    char *s = malloc(2 * n + 1);
    if (s == NULL)
        return NULL;
    keys_hex_encode(p, n, s);
    json_t *j = json_string(s);
    free(s);
    return j;
}

static json_t *u64_json(uint64_t v)
{
    char b[24];
    snprintf(b, sizeof b, "%llu", (unsigned long long)v);
    return json_string(b);
}

/* param fetches a parameter by name (object params) or position (array params). */
static json_t *param(json_t *params, const char *name, size_t pos)
{
    if (json_is_object(params))
        return json_object_get(params, name);
    if (json_is_array(params))
        return json_array_get(params, pos);
    return NULL;
}

static int param_hex(json_t *params, const char *name, size_t pos, uint8_t *out, size_t want,
                     int *code, const char **msg)
{
    json_t *v = param(params, name, pos);
    if (!json_is_string(v) || json_string_length(v) != 2 * want ||
        keys_hex_decode(json_string_value(v), out, want) != KEYS_OK) {
        static _Thread_local char buf[128];
        snprintf(buf, sizeof buf, "params.%s: expected %zu hex characters", name, 2 * want);
        *code = RPC_INVALID_PARAMS;
        *msg = buf;
        return -1;
    }
    return 0;
}

static int param_u64(json_t *params, const char *name, size_t pos, uint64_t *out, bool *present)
{
    json_t *v = param(params, name, pos);
    *present = v != NULL && !json_is_null(v);
    if (!*present)
        return 0;
    if (json_is_integer(v) && json_integer_value(v) >= 0) {
        *out = (uint64_t)json_integer_value(v);
        return 0;
    }
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        char *end;
        if (*s >= '0' && *s <= '9') {
            unsigned long long x = strtoull(s, &end, 10);
            if (*end == 0) {
                *out = x;
                return 0;
            }
        }
    }
    return -1;
}

/* health: "ok", or "degraded" while stored blocks that failed their checks
 * (node_read_block) wait for repair: they are refused until then, so queries for them should
 * go to another replica. */
static int m_health(struct node *n, json_t *params, json_t **result, int *code, const char **msg)
{
    (void)params, (void)code, (void)msg;
    node_corruption c;
    node_corrupt(n, &c);
    node_status s;
    node_status_get(n, &s);
    json_t *r = json_object();
    json_object_set_new(r, "status",
                        json_string(c.pending == 0 && !s.out_of_view ? "ok" : "degraded"));
    json_object_set_new(r, "storage", json_string(c.pending == 0 ? "ok" : "repairing"));
    json_object_set_new(r, "consensus", json_string(s.out_of_view ? "out_of_view" : "ok"));
    json_object_set_new(r, "corrupt_reads", u64_json(c.reads));
    json_object_set_new(r, "repaired", u64_json(c.repaired));
    if (c.pending > 0) {
        json_object_set_new(r, "repair_pending", u64_json(c.pending));
        json_object_set_new(r, "lowest_pending_height", u64_json(c.lowest_pending));
    }
    *result = r;
    return 0;
}

static int m_status(struct node *n, json_t *params, json_t **result, int *code, const char **msg)
{
    (void)params, (void)code, (void)msg;
    node_status s;
    node_status_get(n, &s);
    json_t *r = json_object();
    json_object_set_new(r, "node_id", json_integer(s.id));
    json_object_set_new(r, "chain_id", json_string(node_genesis(n)->chain_id));
    json_object_set_new(r, "latest_height", u64_json(s.height));
    json_object_set_new(r, "latest_chain_hash", hex_json(s.last_chain, 32));
    json_object_set_new(r, "latest_app_hash", hex_json(s.last_app_hash, 32));
    json_object_set_new(r, "catching_up", json_boolean(s.catching_up));
    json_object_set_new(r, "view", u64_json(s.view));
    json_object_set_new(r, "primary", json_integer(s.primary));
    json_object_set_new(r, "view_change", json_boolean(s.in_view_change));
    json_object_set_new(r, "view_of_others",
                        s.others_view == UINT64_MAX ? json_null() : u64_json(s.others_view));
    json_object_set_new(r, "out_of_view", json_boolean(s.out_of_view));
    json_object_set_new(r, "stable_checkpoint", u64_json(s.stable));
    json_object_set_new(r, "mempool_size", json_integer((json_int_t)s.pending));
    json_object_set_new(r, "peers_connected", json_integer((json_int_t)s.peers_connected));
    json_t *drops = json_object();
    for (int d = 0; d < PBFT_DROP__COUNT; d++)
        if (s.stats.drops[d] > 0)
            json_object_set_new(drops, pbft_drop_name(d), u64_json(s.stats.drops[d]));
    json_object_set_new(r, "dropped_messages", drops);
    json_t *vcs = json_object();
    for (int v = 0; v < PBFT_VC__COUNT; v++)
        json_object_set_new(vcs, pbft_vc_reason_name(v), u64_json(s.stats.view_changes[v]));
    json_object_set_new(r, "view_changes", vcs);
    json_object_set_new(r, "dropped_queue_full", u64_json(s.dropped_queue));
    *result = r;
    return 0;
}

static int submit(struct node *n, json_t *params, bool wait, json_t **result, int *code,
                  const char **msg, pbft_digest *hash_out)
{
    json_t *v = param(params, "tx", 0);
    if (!json_is_string(v)) {
        *code = RPC_INVALID_PARAMS;
        *msg = "params.tx: expected the transaction as a hex string";
        return -1;
    }
    size_t hl = json_string_length(v);
    if (hl % 2 != 0) {
        *code = RPC_TX_MALFORMED;
        *msg = "transaction hex has an odd length";
        return -1;
    }
    if (hl / 2 > PBFT_MAX_TX_BYTES) {
        *code = RPC_TX_TOO_LARGE;
        *msg = "transaction larger than 8192 bytes";
        return -1;
    }
    uint8_t tx[PBFT_MAX_TX_BYTES];
    if (keys_hex_decode(json_string_value(v), tx, hl / 2) != KEYS_OK) {
        *code = RPC_TX_MALFORMED;
        *msg = "transaction is not valid hex";
        return -1;
    }
    pbft_digest h;
    pbft_tx_hash(tx, hl / 2, &h);
    int st = node_submit(n, tx, hl / 2, wait);
    switch (st) {
    case PBFT_REQ_ACCEPTED:
        break;
    case PBFT_REQ_MALFORMED:
        *code = RPC_TX_MALFORMED;
        *msg = "transaction does not decode (docs/protocol.md section 2)";
        return -1;
    case PBFT_REQ_BAD_SIGNATURE:
        *code = RPC_TX_BAD_SIGNATURE;
        *msg = "transaction signature does not verify for this chain";
        return -1;
    case PBFT_REQ_DUPLICATE:
        break; /* below */
    case PBFT_REQ_TOO_LARGE:
        *code = RPC_TX_TOO_LARGE;
        *msg = "transaction larger than 8192 bytes";
        return -1;
    case PBFT_REQ_BAD_NONCE: {
        /* The nonce is used: by this very transaction, committed, if the tx index has it.
         * A client resending after a lost answer must learn that it is a duplicate (and
         * look up the receipt), not be told to sign again with the next nonce: that would
         * pay twice. */
        uint64_t height;
        uint32_t index;
        uint8_t rc8;
        if (store_get_tx(node_store(n), &h, &height, &index, &rc8) == STORE_OK)
            break; /* a duplicate, below */
        *code = RPC_TX_BAD_NONCE;
        *msg = "bad nonce: the sender already used it (ask 'account' for the next one)";
        return -1;
    }
    default:
        *code = RPC_TX_MEMPOOL_FULL;
        *msg = "mempool full; retry later";
        return -1;
    }
    if (st != PBFT_REQ_ACCEPTED) { /* a duplicate: pending, or committed */
        *code = RPC_TX_DUPLICATE;
        *msg = "transaction already pending or committed (its receipt: the tx method)";
        json_t *d = json_object();
        json_object_set_new(d, "hash", hex_json(h.b, 32));
        *result = d;
        return -1;
    }
    if (hash_out != NULL)
        *hash_out = h;
    json_t *r = json_object();
    json_object_set_new(r, "hash", hex_json(h.b, 32));
    json_object_set_new(r, "code", json_integer(0));
    json_object_set_new(r, "log", json_string(wait ? "accepted into the mempool" : "queued"));
    *result = r;
    return 0;
}

static int m_broadcast_sync(struct node *n, json_t *p, json_t **r, int *c, const char **m)
{
    return submit(n, p, true, r, c, m, NULL);
}

static int m_broadcast_async(struct node *n, json_t *p, json_t **r, int *c, const char **m)
{
    return submit(n, p, false, r, c, m, NULL);
}

static int m_account(struct node *n, json_t *params, json_t **result, int *code, const char **msg)
{
    uint8_t pk[32];
    if (param_hex(params, "public_key", 0, pk, 32, code, msg) != 0)
        return -1;
    uint64_t bal, nonce;
    if (node_account(n, pk, &bal, &nonce) != STORE_OK) {
        *code = RPC_INTERNAL;
        *msg = "state unreadable";
        return -1;
    }
    json_t *r = json_object();
    json_object_set_new(r, "public_key", hex_json(pk, 32));
    json_object_set_new(r, "balance", u64_json(bal));
    json_object_set_new(r, "nonce", u64_json(nonce));
    *result = r;
    return 0;
}

static json_t *block_json(const store_block_read *b)
{
    json_t *r = json_object();
    json_object_set_new(r, "height", u64_json(b->height));
    json_object_set_new(r, "digest", hex_json(b->digest.b, 32));
    json_object_set_new(r, "chain_hash", hex_json(b->chain.b, 32));
    /* All zero: unknown. A block fetched again from peers after its record became unreadable
     * has no proven app hash to restore (node.c, repair_offer); it is not made up. */
    static const uint8_t zero[32];
    json_object_set_new(r, "app_hash",
                        memcmp(b->app_hash, zero, 32) == 0 ? json_null()
                                                           : hex_json(b->app_hash, 32));
    json_object_set_new(r, "commit_view", u64_json(b->view));
    pbft_block blk;
    if (pbft_block_decode(b->block, b->block_n, &blk) == PBFT_OK) {
        json_object_set_new(r, "view", u64_json(blk.view));
        json_object_set_new(r, "proposer", json_integer(blk.proposer));
        json_object_set_new(r, "timestamp_ms", u64_json(blk.timestamp_ms));
        json_object_set_new(r, "tx_root", hex_json(blk.tx_root.b, 32));
        json_t *txs = json_array();
        size_t off = 0;
        pbft_span t;
        while (pbft_block_next_tx(&blk, &off, &t)) {
            pbft_digest h;
            pbft_tx_hash(t.p, t.n, &h);
            json_array_append_new(txs, hex_json(h.b, 32));
        }
        json_object_set_new(r, "txs", txs);
    }
    json_object_set_new(r, "block", hex_json(b->block, b->block_n));
    return r;
}

/* read_height_param reads the block at params.height (the latest durable block without it);
 * on error sets the JSON-RPC code and message. b must be freed by the caller on success. */
/* corrupt_error: a committed block this replica holds failed its checks (node_read_block),
 * or an index entry could not be read (height 0), so it is not served: the client is told
 * which and to ask another replica. */
static int corrupt_error(uint64_t height, const char *why, json_t **result, int *code,
                         const char **msg)
{
    *code = RPC_STORAGE_CORRUPT;
    *msg = height > 0 ? "this replica's stored block failed its integrity check and is not "
                        "served until it is fetched again from peers; ask another replica "
                        "meanwhile"
                      : "this replica's stored index failed its integrity check and is not "
                        "served; ask another replica";
    json_t *d = json_object();
    if (height > 0)
        json_object_set_new(d, "height", u64_json(height));
    json_object_set_new(d, "check", json_string(why));
    *result = d;
    return -1;
}

static int read_height_param(struct node *n, json_t *params, store_block_read *b, json_t **result,
                             int *code, const char **msg)
{
    uint64_t h = 0;
    bool present;
    if (param_u64(params, "height", 0, &h, &present) != 0) {
        *code = RPC_INVALID_PARAMS;
        *msg = "params.height: expected a decimal string or a non-negative integer";
        return -1;
    }
    if (!present) {
        node_status s;
        node_status_get(n, &s);
        h = s.height;
    }
    const char *why;
    int rc = node_read_block(n, h, b, &why);
    if (rc == STORE_E_CORRUPT)
        return corrupt_error(h, why, result, code, msg);
    if (rc != STORE_OK) {
        *code = RPC_NOT_FOUND;
        *msg = "no block at that height";
        return -1;
    }
    return 0;
}

static int m_block(struct node *n, json_t *params, json_t **result, int *code, const char **msg)
{
    store_block_read b;
    if (read_height_param(n, params, &b, result, code, msg) != 0)
        return -1;
    *result = block_json(&b);
    store_block_read_free(&b);
    return 0;
}

static int m_tx(struct node *n, json_t *params, json_t **result, int *code, const char **msg)
{
    pbft_digest h;
    if (param_hex(params, "hash", 0, h.b, 32, code, msg) != 0)
        return -1;
    uint64_t height;
    uint32_t index;
    uint8_t rc8;
    int irc = store_get_tx(node_store(n), &h, &height, &index, &rc8);
    if (irc != STORE_OK && irc != STORE_E_NOTFOUND)
        return corrupt_error(0,
                             "the transaction index cannot be read (a RocksDB checksum or I/O "
                             "error, or a value of the wrong shape)",
                             result, code, msg);
    if (irc != STORE_OK) {
        *code = RPC_NOT_FOUND;
        *msg = "unknown transaction (not committed, or never seen)";
        return -1;
    }
    /* The receipt names a place: the transaction must be there, in a block that passes its
     * checks, or the index entry is not served. */
    store_block_read b;
    const char *why;
    int brc = node_read_block(n, height, &b, &why);
    if (brc == STORE_E_CORRUPT)
        return corrupt_error(height, why, result, code, msg);
    bool there = false;
    pbft_block blk;
    if (brc == STORE_OK && pbft_block_decode(b.block, b.block_n, &blk) == PBFT_OK) {
        size_t off = 0;
        pbft_span t;
        for (uint32_t i = 0; pbft_block_next_tx(&blk, &off, &t); i++)
            if (i == index) {
                pbft_digest th;
                pbft_tx_hash(t.p, t.n, &th);
                there = memcmp(th.b, h.b, 32) == 0;
                break;
            }
    }
    store_block_read_free(&b);
    if (!there)
        return corrupt_error(height,
                             "the transaction index names a place that holds another "
                             "transaction",
                             result, code, msg);
    json_t *r = json_object();
    json_object_set_new(r, "hash", hex_json(h.b, 32));
    json_object_set_new(r, "height", u64_json(height));
    json_object_set_new(r, "index", json_integer(index));
    json_object_set_new(r, "code", json_integer(rc8));
    json_object_set_new(r, "result", json_string(ledger_code_name(rc8)));
    *result = r;
    return 0;
}

static int m_block_by_hash(struct node *n, json_t *params, json_t **result, int *code,
                           const char **msg)
{
    pbft_digest d;
    if (param_hex(params, "hash", 0, d.b, 32, code, msg) != 0)
        return -1;
    uint64_t h;
    store_block_read b;
    const char *why;
    int rc = store_get_height_by_digest(node_store(n), &d, &h);
    if (rc != STORE_OK && rc != STORE_E_NOTFOUND)
        return corrupt_error(0,
                             "the digest index cannot be read (a RocksDB checksum or I/O "
                             "error, or a value of the wrong shape)",
                             result, code, msg);
    if (rc == STORE_OK)
        rc = node_read_block(n, h, &b, &why);
    if (rc == STORE_E_CORRUPT)
        return corrupt_error(h, why, result, code, msg);
    if (rc == STORE_OK && memcmp(b.digest.b, d.b, 32) != 0) {
        store_block_read_free(&b);
        return corrupt_error(h, "the digest index names a block of another digest", result, code,
                             msg);
    }
    if (rc != STORE_OK) {
        *code = RPC_NOT_FOUND;
        *msg = "no committed block with that digest";
        return -1;
    }
    *result = block_json(&b);
    store_block_read_free(&b);
    return 0;
}

/* cert_json decodes a stored commit certificate into one entry per signed COMMIT. */
static json_t *cert_json(const store_block_read *b)
{
    json_t *a = json_array();
    pbft_list l = {.count = b->cert_count, .region = {.p = b->cert, .n = b->cert_n}};
    size_t off = 0;
    pbft_span m;
    while (pbft_list_next(&l, &off, &m)) {
        pbft_env e;
        pbft_vote v;
        if (pbft_signed_decode(m.p, m.n, PBFT_MSG_COMMIT, &e) != PBFT_OK ||
            pbft_vote_decode(e.body, &v) != PBFT_OK)
            continue;
        json_t *c = json_object();
        json_object_set_new(c, "validator", json_integer(e.sender));
        json_object_set_new(c, "view", u64_json(v.view));
        json_object_set_new(c, "seq", u64_json(v.seq));
        json_object_set_new(c, "digest", hex_json(v.d.b, 32));
        json_object_set_new(c, "signature", hex_json(e.sig, KEYS_SIG_BYTES));
        json_object_set_new(c, "signed_message", hex_json(e.whole.p, e.whole.n));
        json_array_append_new(a, c);
    }
    return a;
}

static int m_commit(struct node *n, json_t *params, json_t **result, int *code, const char **msg)
{
    store_block_read b;
    if (read_height_param(n, params, &b, result, code, msg) != 0)
        return -1;
    json_t *r = block_json(&b);
    json_object_del(r, "txs");
    json_object_del(r, "block");
    json_object_set_new(r, "chain_id", json_string(node_genesis(n)->chain_id));
    json_object_set_new(r, "certificate", cert_json(&b));
    store_block_read_free(&b);
    *result = r;
    return 0;
}

static int m_validators(struct node *n, json_t *params, json_t **result, int *code,
                        const char **msg)
{
    (void)params, (void)code, (void)msg;
    const genesis *g = node_genesis(n);
    json_t *vs = json_array();
    for (uint16_t i = 0; i < g->n; i++) {
        json_t *v = json_object();
        json_object_set_new(v, "id", json_integer(i));
        json_object_set_new(v, "public_key", hex_json(g->validators[i].public_key, 32));
        json_object_set_new(v, "p2p_address", json_string(g->validators[i].p2p_address));
        json_object_set_new(v, "name", json_string(g->validators[i].name));
        json_array_append_new(vs, v);
    }
    int f = (g->n - 1) / 3;
    json_t *r = json_object();
    json_object_set_new(r, "validators", vs);
    json_object_set_new(r, "n", json_integer(g->n));
    json_object_set_new(r, "f", json_integer(f));
    json_object_set_new(r, "quorum", json_integer(2 * f + 1));
    *result = r;
    return 0;
}

/* utf8_ok: well-formed UTF-8 without NUL (so it round-trips as a JSON string). */
static bool utf8_ok(const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = p[i];
        size_t k;
        uint32_t cp;
        if (c == 0)
            return false;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            k = 1;
            cp = c & 0x1fu;
        } else if ((c & 0xf0) == 0xe0) {
            k = 2;
            cp = c & 0x0fu;
        } else if ((c & 0xf8) == 0xf0) {
            k = 3;
            cp = c & 0x07u;
        } else
            return false;
        if (i + k >= n)
            return false;
        for (size_t j = 1; j <= k; j++) {
            if ((p[i + j] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (p[i + j] & 0x3fu);
        }
        if ((k == 1 && cp < 0x80) || (k == 2 && cp < 0x800) || (k == 3 && cp < 0x10000) ||
            cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += k + 1;
    }
    return true;
}

/* kv_key reads the key of kv_get into key (without the 'k' prefix) and sets *kn: params.key,
 * a JSON string whose UTF-8 bytes are the key (by name or at position 0), or params.key_hex
 * (by name only), for a put key that is not text (docs/protocol.md section 2 allows any
 * bytes). Exactly one of the two. */
static int kv_key(json_t *params, uint8_t key[PBFT_MAX_KEY_BYTES], size_t *kn, int *code,
                  const char **msg)
{
    json_t *k = param(params, "key", 0);
    json_t *kh = json_is_object(params) ? json_object_get(params, "key_hex") : NULL;
    *code = RPC_INVALID_PARAMS;
    if (k != NULL && kh != NULL) {
        *msg = "params: give key or key_hex, not both";
        return -1;
    }
    if (kh != NULL) {
        size_t hl = json_is_string(kh) ? json_string_length(kh) : 0;
        if (hl < 2 || hl > 2 * PBFT_MAX_KEY_BYTES || hl % 2 != 0 ||
            keys_hex_decode(json_string_value(kh), key, hl / 2) != KEYS_OK) {
            *msg = "params.key_hex: expected 2..512 hex characters (a key of 1..256 bytes)";
            return -1;
        }
        *kn = hl / 2;
        return 0;
    }
    size_t n = json_is_string(k) ? json_string_length(k) : 0;
    if (n < 1 || n > PBFT_MAX_KEY_BYTES) {
        *msg = "params.key: expected a string of 1..256 bytes (or params.key_hex)";
        return -1;
    }
    memcpy(key, json_string_value(k), n);
    *kn = n;
    return 0;
}

static int m_kv_get(struct node *n, json_t *params, json_t **result, int *code, const char **msg)
{
    uint8_t key[1 + PBFT_MAX_KEY_BYTES];
    size_t kn;
    key[0] = 'k';
    if (kv_key(params, key + 1, &kn, code, msg) != 0)
        return -1;
    /* The durable height first: the value read next is at least that recent. */
    node_status s;
    node_status_get(n, &s);
    uint8_t *v = NULL;
    size_t vn = 0;
    int rc = store_state_get(node_store(n), key, kn + 1, &v, &vn);
    if (rc != STORE_OK && rc != STORE_E_NOTFOUND) {
        *code = RPC_INTERNAL;
        *msg = "state unreadable";
        return -1;
    }
    json_t *r = json_object();
    /* "key" only when the key is text (it is always when given as params.key). */
    if (utf8_ok(key + 1, kn))
        json_object_set_new(r, "key", json_stringn((const char *)key + 1, kn));
    json_object_set_new(r, "key_hex", hex_json(key + 1, kn));
    json_object_set_new(r, "found", json_boolean(rc == STORE_OK));
    if (rc == STORE_OK) {
        bool text = utf8_ok(v, vn);
        json_object_set_new(r, "value", text ? json_stringn((const char *)v, vn) : hex_json(v, vn));
        json_object_set_new(r, "encoding", json_string(text ? "utf8" : "hex"));
        json_object_set_new(r, "value_hex", hex_json(v, vn));
    }
    json_object_set_new(r, "height", u64_json(s.height));
    free(v);
    *result = r;
    return 0;
}

static int m_num_unconfirmed(struct node *n, json_t *params, json_t **result, int *code,
                             const char **msg)
{
    (void)params, (void)code, (void)msg;
    node_status s;
    node_status_get(n, &s);
    *result = json_object();
    json_object_set_new(*result, "n_txs", json_integer((json_int_t)s.pending));
    return 0;
}

static int m_consensus_state(struct node *n, json_t *params, json_t **result, int *code,
                             const char **msg)
{
    (void)params, (void)code, (void)msg;
    node_status s;
    node_status_get(n, &s);
    json_t *r = json_object();
    json_object_set_new(r, "view", u64_json(s.view));
    json_object_set_new(r, "primary", json_integer(s.primary));
    json_object_set_new(r, "view_change", json_boolean(s.in_view_change));
    json_object_set_new(r, "view_of_others",
                        s.others_view == UINT64_MAX ? json_null() : u64_json(s.others_view));
    json_object_set_new(r, "out_of_view", json_boolean(s.out_of_view));
    json_object_set_new(r, "last_executed", u64_json(s.height));
    json_object_set_new(r, "stable_checkpoint", u64_json(s.stable));
    json_t *drops = json_object();
    for (int d = 0; d < PBFT_DROP__COUNT; d++)
        json_object_set_new(drops, pbft_drop_name(d), u64_json(s.stats.drops[d]));
    json_object_set_new(r, "dropped_messages", drops);
    json_t *vcs = json_object();
    for (int v = 0; v < PBFT_VC__COUNT; v++)
        json_object_set_new(vcs, pbft_vc_reason_name(v), u64_json(s.stats.view_changes[v]));
    json_object_set_new(r, "view_changes", vcs);
    json_t *cs = json_object();
    for (int k = 0; k < PBFT_COMPLAINT__COUNT; k++)
        json_object_set_new(cs, pbft_complaint_reason_name(k), u64_json(s.stats.complaints[k]));
    json_object_set_new(r, "complaints_sent", cs);
    json_t *vs = json_object();
    json_object_set_new(vs, "prepare", u64_json(s.stats.prepares_sent));
    json_object_set_new(vs, "commit", u64_json(s.stats.commits_sent));
    json_object_set_new(r, "votes_sent", vs);
    *result = r;
    return 0;
}

static int m_net_info(struct node *n, json_t *params, json_t **result, int *code, const char **msg)
{
    (void)params, (void)code, (void)msg;
    node_peer ps[PBFT_MAX_N];
    size_t np = node_peers(n, ps, PBFT_MAX_N);
    json_t *a = json_array();
    size_t up = 0;
    for (size_t i = 0; i < np; i++) {
        json_t *p = json_object();
        json_object_set_new(p, "id", json_integer(ps[i].id));
        json_object_set_new(p, "address", json_string(ps[i].address));
        json_object_set_new(p, "connected", json_boolean(ps[i].connected));
        json_object_set_new(p, "sent", u64_json(ps[i].sent));
        json_object_set_new(p, "received", u64_json(ps[i].received));
        json_object_set_new(p, "dropped", u64_json(ps[i].dropped));
        json_array_append_new(a, p);
        up += ps[i].connected;
    }
    json_t *r = json_object();
    json_object_set_new(r, "n_peers", json_integer((json_int_t)np));
    json_object_set_new(r, "n_connected", json_integer((json_int_t)up));
    json_object_set_new(r, "peers", a);
    *result = r;
    return 0;
}

static int m_genesis(struct node *n, json_t *params, json_t **result, int *code, const char **msg)
{
    (void)params, (void)code, (void)msg;
    const genesis *g = node_genesis(n);
    json_t *r = json_object();
    json_object_set_new(r, "chain_id", json_string(g->chain_id));
    json_object_set_new(r, "genesis_time_ms", u64_json(g->genesis_time_ms));
    json_t *c = json_object();
    json_object_set_new(c, "checkpoint_interval", json_integer(g->checkpoint_interval));
    json_object_set_new(c, "window", json_integer(g->window));
    json_object_set_new(c, "max_inflight", json_integer(g->max_inflight));
    json_object_set_new(c, "max_block_txs", json_integer(g->max_block_txs));
    json_object_set_new(c, "max_block_bytes", json_integer(g->max_block_bytes));
    json_object_set_new(c, "block_interval_ms", json_integer(g->block_interval_ms));
    json_object_set_new(c, "view_timeout_ms", json_integer(g->view_timeout_ms));
    json_object_set_new(c, "view_timeout_max_ms", json_integer(g->view_timeout_max_ms));
    json_object_set_new(c, "resend_ms", json_integer(g->resend_ms));
    json_object_set_new(c, "state_retry_ms", json_integer(g->state_retry_ms));
    json_object_set_new(c, "max_state_blocks", json_integer(g->max_state_blocks));
    json_object_set_new(r, "consensus", c);
    json_t *vs = json_array();
    for (uint16_t i = 0; i < g->n; i++) {
        json_t *v = json_object();
        json_object_set_new(v, "id", json_integer(i));
        json_object_set_new(v, "public_key", hex_json(g->validators[i].public_key, 32));
        json_object_set_new(v, "p2p_address", json_string(g->validators[i].p2p_address));
        json_object_set_new(v, "rpc_address", json_string(g->validators[i].rpc_address));
        json_object_set_new(v, "name", json_string(g->validators[i].name));
        json_array_append_new(vs, v);
    }
    json_object_set_new(r, "validators", vs);
    json_t *as = json_array();
    for (size_t i = 0; i < g->n_accounts; i++) {
        json_t *a = json_object();
        json_object_set_new(a, "public_key", hex_json(g->accounts[i].public_key, 32));
        json_object_set_new(a, "balance", u64_json(g->accounts[i].balance));
        json_array_append_new(as, a);
    }
    json_object_set_new(r, "accounts", as);
    json_object_set_new(r, "genesis_hash", hex_json(g->hash, 32));
    *result = r;
    return 0;
}

/* Stands in the table so the name is known; dispatch() handles it before calling. */
static int m_broadcast_commit(struct node *n, json_t *p, json_t **r, int *c, const char **m)
{
    (void)n, (void)p, (void)r;
    *c = RPC_INTERNAL;
    *m = "broadcast_tx_commit is served only over HTTP";
    return -1;
}

static const struct {
    const char *name;
    method_fn fn;
} methods[] = {
    {"health", m_health},
    {"status", m_status},
    {"broadcast_tx_sync", m_broadcast_sync},
    {"broadcast_tx_async", m_broadcast_async},
    {"account", m_account},
    {"block", m_block},
    {"tx", m_tx},
    {"block_by_hash", m_block_by_hash},
    {"commit", m_commit},
    {"validators", m_validators},
    {"kv_get", m_kv_get},
    {"num_unconfirmed_txs", m_num_unconfirmed},
    {"consensus_state", m_consensus_state},
    {"net_info", m_net_info},
    {"genesis", m_genesis},
    {"broadcast_tx_commit", m_broadcast_commit},
};

/* Requests by method and answer code, for GET /metrics. Per process (pbftd runs one node);
 * the label sets are fixed, so the table is bounded whatever clients send. */
#define N_METHODS (sizeof methods / sizeof methods[0])
#define M_UNKNOWN N_METHODS       /* a method name we do not serve */
#define M_INVALID (N_METHODS + 1) /* not a request at all: parse error, invalid request */
static const int counted_codes[] = {0,      -32700, -32600, -32601, -32602, -32603,
                                    -32001, -32002, -32003, -32004, -32005, -32006,
                                    -32007, -32008, -32009, -32010, -32011};
#define N_CODES (sizeof counted_codes / sizeof counted_codes[0])
static uint64_t rpc_counts[N_METHODS + 2][N_CODES + 1]; /* last column: any other code */

static void count_answer(size_t method, const json_t *resp)
{
    const json_t *e = json_object_get(resp, "error");
    int code = e != NULL ? (int)json_integer_value(json_object_get(e, "code")) : 0;
    size_t k = N_CODES;
    for (size_t i = 0; i < N_CODES; i++)
        if (counted_codes[i] == code)
            k = i;
    __atomic_fetch_add(&rpc_counts[method][k], 1, __ATOMIC_RELAXED);
}

static void rpc_metrics(mtext *t)
{
    mtext_family(t, "pbft_rpc_requests_total", "counter",
                 "JSON-RPC requests answered, by method and code (0: a result).");
    for (size_t m = 0; m < N_METHODS + 2; m++)
        for (size_t k = 0; k <= N_CODES; k++) {
            uint64_t v = __atomic_load_n(&rpc_counts[m][k], __ATOMIC_RELAXED);
            if (v == 0)
                continue;
            const char *name = m < N_METHODS    ? methods[m].name
                               : m == M_UNKNOWN ? "unknown"
                                                : "invalid";
            if (k < N_CODES)
                mtext_printf(t, "pbft_rpc_requests_total{method=\"%s\",code=\"%d\"} %llu\n", name,
                             counted_codes[k], (unsigned long long)v);
            else
                mtext_printf(t, "pbft_rpc_requests_total{method=\"%s\",code=\"other\"} %llu\n",
                             name, (unsigned long long)v);
        }
}

static json_t *error_obj(json_t *id, int code, const char *msg)
{
    json_t *r = json_object();
    json_object_set_new(r, "jsonrpc", json_string("2.0"));
    json_t *e = json_object();
    json_object_set_new(e, "code", json_integer(code));
    json_object_set_new(e, "message", json_string(msg));
    json_object_set_new(r, "error", e);
    json_object_set(r, "id", id != NULL ? id : json_null());
    return r;
}

/* error_data adds data (if any; taken over) to the error of the answer resp. */
static json_t *error_data(json_t *resp, json_t *data)
{
    if (data != NULL)
        json_object_set_new(json_object_get(resp, "error"), "data", data);
    return resp;
}

static json_t *result_obj(json_t *id, json_t *result)
{
    json_t *r = json_object();
    json_object_set_new(r, "jsonrpc", json_string("2.0"));
    json_object_set_new(r, "result", result);
    json_object_set(r, "id", id != NULL ? id : json_null());
    return r;
}

/* What one request may need from the HTTP layer. */
struct call {
    rpc_server *s; /* NULL when called through rpc_handle */
    nng_aio *aio;  /* the HTTP aio (single requests over HTTP only) */
    bool in_batch; /* broadcast_tx_commit is refused inside a batch */
    bool deferred; /* set: the aio was kept; the reply comes later */
    bool big;      /* the body held numbers jansson cannot hold, now marks (load_big) */
};

/* ---------------------------------------------------------------------------------------
 * Numbers jansson cannot hold. An integer outside json_int_t (-2^63..2^63-1) or a number
 * beyond double is valid JSON, but json_loadb fails on it (json_error_numeric_overflow) as
 * on a syntax error. So that such a request gets -32602 (in params) or -32600 (in id), not
 * -32700, load_big parses the body again with each such number replaced by a mark, the
 * string "\u0000": an ordinary parse never yields a NUL (a body that holds the escape is a
 * parse error here too), and in a key position the mark is refused (jansson never allows a
 * NUL in a key), so the replacement turns no invalid body into a valid one.
 * -------------------------------------------------------------------------------------*/
_Static_assert(sizeof(json_int_t) == 8, "json_int_t is 64 bits");

/* is_big: v is a mark left by load_big. */
static bool is_big(const json_t *v)
{
    return json_is_string(v) && json_string_length(v) == 1 && json_string_value(v)[0] == 0;
}

/* has_big: a mark anywhere in v. Depth is bounded by jansson's parser (2048 levels). */
static bool has_big(json_t *v)
{
    if (is_big(v))
        return true;
    size_t i;
    const char *k;
    json_t *x;
    if (json_is_array(v)) {
        json_array_foreach(v, i, x) if (has_big(x)) return true;
    } else if (json_is_object(v)) {
        json_object_foreach(v, k, x) if (has_big(x)) return true;
    }
    return false;
}

/* number_len: the length of the JSON number (RFC 8259 section 6) at p, or 0 if the run of
 * number characters there is not exactly one. */
static size_t number_len(const char *p, size_t n)
{
    size_t run = 0;
    while (run < n && strchr("0123456789+-.eE", p[run]) != NULL && p[run] != 0)
        run++;
    size_t i = 0;
    if (i < run && p[i] == '-')
        i++;
    if (i < run && p[i] == '0')
        i++;
    else if (i < run && p[i] >= '1' && p[i] <= '9')
        while (i < run && p[i] >= '0' && p[i] <= '9')
            i++;
    else
        return 0;
    if (i < run && p[i] == '.') {
        size_t d = ++i;
        while (i < run && p[i] >= '0' && p[i] <= '9')
            i++;
        if (i == d)
            return 0;
    }
    if (i < run && (p[i] == 'e' || p[i] == 'E')) {
        i++;
        if (i < run && (p[i] == '+' || p[i] == '-'))
            i++;
        size_t d = i;
        while (i < run && p[i] >= '0' && p[i] <= '9')
            i++;
        if (i == d)
            return 0;
    }
    return i == run ? run : 0;
}

/* number_overflows: jansson cannot hold the number p[0..n) (well formed): an integer
 * outside json_int_t, or a real whose magnitude overflows double (as jansson's strtod). */
static bool number_overflows(const char *p, size_t n)
{
    if (memchr(p, '.', n) == NULL && memchr(p, 'e', n) == NULL && memchr(p, 'E', n) == NULL) {
        bool neg = p[0] == '-';
        size_t digits = n - neg; /* no leading zeros in a well-formed integer */
        if (digits != 19)
            return digits > 19;
        return memcmp(p + neg, neg ? "9223372036854775808" : "9223372036854775807", 19) > 0;
    }
    char *c = malloc(n + 1);
    if (c == NULL)
        return false; /* then the body stays a parse error */
    memcpy(c, p, n);
    c[n] = 0;
    errno = 0;
    double x = strtod(c, NULL);
    free(c);
    return errno == ERANGE && (x == HUGE_VAL || x == -HUGE_VAL);
}

/* load_big parses a body that json_loadb refused for a numeric overflow, with each number it
 * cannot hold replaced by a mark; NULL if the body is not valid JSON after all (or holds an
 * escaped NUL, a parse error for every body). */
static json_t *load_big(const char *body, size_t len)
{
    static const char mark[] = "\"\\u0000\""; /* 8 bytes; a number replaced is >= 5 */
    char *out = malloc(2 * len + sizeof mark);
    if (out == NULL)
        return NULL;
    size_t o = 0, i = 0;
    bool ok = true;
    while (i < len && ok) {
        char ch = body[i];
        if (ch == '"') { /* copy a string whole: numbers inside are text */
            out[o++] = body[i++];
            while (i < len && body[i] != '"') {
                if (body[i] == '\\' && i + 1 < len) {
                    if (body[i + 1] == 'u' && i + 5 < len && strncmp(body + i + 2, "0000", 4) == 0)
                        ok = false; /* \u0000: refused like any NUL */
                    out[o++] = body[i++];
                }
                out[o++] = body[i++];
            }
            if (i < len)
                out[o++] = body[i++];
            continue;
        }
        size_t nl = (ch == '-' || (ch >= '0' && ch <= '9')) ? number_len(body + i, len - i) : 0;
        if (nl > 0 && number_overflows(body + i, nl)) {
            memcpy(out + o, mark, sizeof mark - 1);
            o += sizeof mark - 1;
            i += nl;
        } else if (nl > 0) {
            memcpy(out + o, body + i, nl);
            o += nl;
            i += nl;
        } else {
            out[o++] = body[i++];
        }
    }
    json_t *j = NULL;
    if (ok) {
        json_error_t je;
        j = json_loadb(out, o, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
    }
    free(out);
    return j;
}

static int commit_begin(struct call *c, json_t *id, const pbft_digest *h, const char **msg);

/* broadcast_tx_commit: submit, then (over HTTP) keep the aio and poll the tx index. */
static json_t *one_commit(struct node *n, struct call *c, json_t *id, json_t *params)
{
    if (c->in_batch)
        return error_obj(id, RPC_INVALID_REQUEST, "broadcast_tx_commit is not allowed in a batch");
    json_t *result = NULL;
    int code = 0;
    const char *msg = NULL;
    pbft_digest h;
    if (id != NULL && (c->s == NULL || c->aio == NULL))
        return error_obj(id, RPC_INTERNAL, "broadcast_tx_commit is served only over HTTP");
    if (submit(n, params, true, &result, &code, &msg, &h) != 0) {
        if (id != NULL)
            return error_data(error_obj(id, code, msg), result);
        json_decref(result); /* a notification's error data: nobody reads it */
        return NULL;
    }
    json_decref(result);
    if (id == NULL) /* a notification: nobody waits for the answer */
        return NULL;
    if (commit_begin(c, id, &h, &msg) != 0)
        return error_obj(id, RPC_BUSY, msg);
    c->deferred = true;
    return NULL;
}

static json_t *one_uncounted(struct node *n, struct call *c, json_t *req, size_t *method);

/* one handles one request object; returns NULL for a notification (or a deferred reply). */
static json_t *one(struct node *n, struct call *c, json_t *req)
{
    size_t method = M_INVALID;
    json_t *resp = one_uncounted(n, c, req, &method);
    /* A notification has no answer: counted as a result. A deferred commit counts when
     * its wait begins. */
    if (resp != NULL)
        count_answer(method, resp);
    else
        __atomic_fetch_add(&rpc_counts[method][0], 1, __ATOMIC_RELAXED);
    return resp;
}

static json_t *one_uncounted(struct node *n, struct call *c, json_t *req, size_t *method)
{
    json_t *id = json_is_object(req) ? json_object_get(req, "id") : NULL;
    /* A mark (load_big) is a number the node cannot hold: no valid id, method or request. */
    bool valid_id = id == NULL || (json_is_string(id) && !is_big(id)) || json_is_integer(id) ||
                    json_is_null(id);
    json_t *m = json_object_get(req, "method");
    if (!json_is_object(req) || !valid_id || !json_is_string(json_object_get(req, "jsonrpc")) ||
        strcmp(json_string_value(json_object_get(req, "jsonrpc")), "2.0") != 0 ||
        !json_is_string(m) || is_big(m))
        return error_obj(valid_id ? id : NULL, RPC_INVALID_REQUEST, "Invalid Request");
    json_t *params = json_object_get(req, "params");
    if (params != NULL && !json_is_object(params) && !json_is_array(params))
        return error_obj(id, RPC_INVALID_REQUEST,
                         "Invalid Request: params must be an object "
                         "or an array");
    const char *name = json_string_value(json_object_get(req, "method"));
    method_fn fn = NULL;
    *method = M_UNKNOWN;
    for (size_t i = 0; i < N_METHODS; i++)
        if (strcmp(methods[i].name, name) == 0) {
            fn = methods[i].fn;
            *method = i;
        }
    json_t *result = NULL;
    int code = 0;
    const char *msg = NULL;
    json_t *resp;
    if (fn != NULL && c->big && params != NULL && has_big(params))
        resp = error_obj(id, RPC_INVALID_PARAMS,
                         "Invalid params: a number out of range (integers must be within "
                         "-2^63..2^63-1; send 64-bit values as decimal strings)");
    else if (strcmp(name, "broadcast_tx_commit") == 0)
        return one_commit(n, c, id, params);
    else if (fn == NULL)
        resp = error_obj(id, RPC_METHOD_NOT_FOUND, "Method not found");
    else if (fn(n, params, &result, &code, &msg) != 0)
        resp = error_data(error_obj(id, code, msg), result);
    else
        resp = result_obj(id, result);
    if (id == NULL) { /* a notification: no response */
        json_decref(resp);
        return NULL;
    }
    return resp;
}

static char *dispatch(struct node *n, struct call *c, const char *body, size_t len,
                      int *http_status)
{
    *http_status = 200;
    json_error_t je;
    json_t *req = json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
    if (req == NULL && json_error_code(&je) == json_error_numeric_overflow) {
        req = load_big(body, len);
        c->big = req != NULL;
    }
    json_t *resp = NULL;
    if (req == NULL) {
        resp = error_obj(NULL, RPC_PARSE_ERROR, "Parse error");
        count_answer(M_INVALID, resp);
    } else if (json_is_array(req)) {
        size_t nreq = json_array_size(req);
        size_t max = node_cfg(n)->rpc_max_batch;
        c->in_batch = true;
        if (nreq == 0 || nreq > max) {
            resp = error_obj(NULL, RPC_INVALID_REQUEST,
                             nreq == 0 ? "Invalid Request: empty batch"
                                       : "Invalid Request: batch too large");
            count_answer(M_INVALID, resp);
        } else {
            resp = json_array();
            for (size_t i = 0; i < nreq; i++) {
                json_t *r = one(n, c, json_array_get(req, i));
                if (r != NULL)
                    json_array_append_new(resp, r);
            }
            if (json_array_size(resp) == 0) {
                json_decref(resp);
                resp = NULL;
            }
        }
    } else {
        resp = one(n, c, req);
    }
    json_decref(req);
    if (resp == NULL) {
        *http_status = c->deferred ? 0 : 204;
        return NULL;
    }
    char *out = json_dumps(resp, JSON_COMPACT);
    json_decref(resp);
    return out;
}

char *rpc_handle(struct node *n, const char *body, size_t len, int *http_status)
{
    struct call c = {0};
    return dispatch(n, &c, body, len, http_status);
}

static void reply(nng_aio *aio, uint16_t status, const char *ctype, const char *body, size_t n)
{
    nng_http_res *res;
    if (nng_http_res_alloc(&res) != 0) {
        nng_aio_finish(aio, NNG_ENOMEM);
        return;
    }
    nng_http_res_set_status(res, status);
    if (ctype != NULL)
        nng_http_res_set_header(res, "Content-Type", ctype);
    if (n > 0)
        nng_http_res_copy_data(res, body, n);
    nng_aio_set_output(aio, 0, res);
    nng_aio_finish(aio, 0);
}

static void reply_json(nng_aio *aio, json_t *resp)
{
    char *out = json_dumps(resp, JSON_COMPACT);
    json_decref(resp);
    if (out == NULL) {
        nng_aio_finish(aio, NNG_ENOMEM);
        return;
    }
    reply(aio, 200, "application/json", out, strlen(out));
    free(out);
}

/* commit_tick polls the tx index every RPC_POLL_MS until the tx is found, the deadline
 * passes, the HTTP aio is cancelled or the server closes. */
static void commit_tick(void *arg)
{
    struct pending *p = arg;
    rpc_server *s = p->s;
    int rv = nng_aio_result(p->sleep);
    uint64_t height = 0;
    uint32_t index = 0;
    uint8_t code = 0;
    nng_mtx_lock(s->mu);
    if (!p->in_use) {
        nng_mtx_unlock(s->mu);
        return;
    }
    bool found = false;
    if (p->http != NULL && rv == 0)
        found = store_get_tx(node_store(s->n), &p->hash, &height, &index, &code) == STORE_OK;
    bool timeout = nng_clock() >= p->deadline;
    if (p->http != NULL && rv == 0 && !s->closing && !found && !timeout) {
        nng_sleep_aio(RPC_POLL_MS, p->sleep);
        nng_mtx_unlock(s->mu);
        return;
    }
    nng_aio *http = p->http;
    json_t *id = p->id;
    pbft_digest h = p->hash;
    p->http = NULL;
    p->id = NULL;
    p->in_use = false;
    nng_mtx_unlock(s->mu);
    if (http == NULL) {
        json_decref(id);
        return;
    }
    json_t *resp;
    if (found) {
        json_t *r = json_object();
        json_object_set_new(r, "hash", hex_json(h.b, 32));
        json_object_set_new(r, "height", u64_json(height));
        json_object_set_new(r, "index", json_integer(index));
        json_object_set_new(r, "code", json_integer(code));
        json_object_set_new(r, "result", json_string(ledger_code_name(code)));
        resp = result_obj(id, r);
    } else {
        resp = error_obj(id, RPC_COMMIT_TIMEOUT,
                         timeout ? "timed out waiting for the commit; the transaction may still "
                                   "commit: check with the tx method (pbft-cli tx HASH)"
                                 : "the server is shutting down; the transaction may still "
                                   "commit: check with the tx method (pbft-cli tx HASH)");
        json_t *d = json_object();
        json_object_set_new(d, "hash", hex_json(h.b, 32));
        json_object_set_new(json_object_get(resp, "error"), "data", d);
    }
    json_decref(id);
    reply_json(http, resp);
}

static int commit_begin(struct call *c, json_t *id, const pbft_digest *h, const char **msg)
{
    rpc_server *s = c->s;
    nng_mtx_lock(s->mu);
    struct pending *p = NULL;
    for (size_t i = 0; i < s->npending && !s->closing; i++)
        if (!s->pending[i].in_use) {
            p = &s->pending[i];
            break;
        }
    if (p == NULL) {
        nng_mtx_unlock(s->mu);
        *msg = "too many broadcast_tx_commit requests waiting; the transaction was accepted: "
               "check with the tx method";
        return -1;
    }
    p->in_use = true;
    p->http = c->aio;
    p->id = json_incref(id);
    p->hash = *h;
    p->deadline = nng_clock() + node_cfg(s->n)->rpc_commit_timeout_ms;
    /* The cancel function registered when the body read started (http_cancel) covers
     * this slot too: nng allows one per operation. */
    nng_sleep_aio(RPC_POLL_MS, p->sleep);
    nng_mtx_unlock(s->mu);
    return 0;
}

/* process answers one complete POST body on the HTTP aio (or keeps it: broadcast_tx_commit). */
static void process(rpc_server *s, nng_aio *aio, const char *body, size_t len)
{
    int status;
    struct call c = {.s = s, .aio = aio};
    char *out = dispatch(s->n, &c, body, len, &status);
    if (c.deferred)
        return; /* commit_tick finishes the aio */
    if (out == NULL) {
        reply(aio, (uint16_t)status, NULL, NULL, 0);
        return;
    }
    reply(aio, (uint16_t)status, "application/json", out, strlen(out));
    free(out);
}

/* http_reason: the reason phrase of each HTTP status rpc.c answers itself (nng 1.5.2 has
 * none for 413: it would send "413 Unknown HTTP Status"). */
static const char *http_reason(uint16_t status)
{
    switch (status) {
    case NNG_HTTP_STATUS_BAD_REQUEST:
        return "Bad Request";
    case NNG_HTTP_STATUS_REQUEST_TIMEOUT:
        return "Request Timeout";
    case NNG_HTTP_STATUS_LENGTH_REQUIRED:
        return "Length Required";
    case NNG_HTTP_STATUS_PAYLOAD_TOO_LARGE:
        return "Payload Too Large";
    case NNG_HTTP_STATUS_SERVICE_UNAVAILABLE:
        return "Service Unavailable";
    default:
        return NULL; /* nng's */
    }
}

/* reply_close answers an HTTP error with a JSON-RPC error object as its body (id null: the
 * request was not read) and closes the connection (its body is left unread). Not an nng
 * error response (nng_http_res_alloc_error): nng would replace the body by its HTML page. */
static void reply_close(nng_aio *aio, uint16_t status, int code, const char *msg)
{
    json_t *e = error_obj(NULL, code, msg);
    char *out = json_dumps(e, JSON_COMPACT);
    json_decref(e);
    nng_http_res *res;
    if (out == NULL || nng_http_res_alloc(&res) != 0) {
        free(out);
        nng_aio_finish(aio, NNG_ENOMEM);
        return;
    }
    int rv = nng_http_res_set_status(res, status);
    if (rv == 0)
        rv = nng_http_res_set_reason(res, http_reason(status));
    if (rv == 0)
        rv = nng_http_res_set_header(res, "Content-Type", "application/json");
    if (rv == 0)
        rv = nng_http_res_set_header(res, "Connection", "close");
    if (rv == 0)
        rv = nng_http_res_copy_data(res, out, strlen(out));
    free(out);
    if (rv != 0) {
        nng_http_res_free(res);
        nng_aio_finish(aio, rv); /* nng closes the connection */
        return;
    }
    nng_aio_set_output(aio, 0, res);
    nng_aio_finish(aio, 0);
}

/* The answers of nng's own HTTP errors, sent before any handler of ours runs (a request
 * line or Host header it refuses, no handler for the path or the method, HTTP/2): nng
 * serves these pages as the body (with its Content-Type, text/html; charset=UTF-8). */
static const struct {
    uint16_t status;
    const char *body;
} nng_error_pages[] = {
    {NNG_HTTP_STATUS_BAD_REQUEST,
     "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32600,\"message\":\"Invalid Request: malformed "
     "HTTP request (HTTP/1.1 needs a Host header)\"},\"id\":null}"},
    {NNG_HTTP_STATUS_NOT_FOUND,
     "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32600,\"message\":\"Invalid Request: no such "
     "path (JSON-RPC is POST /; also GET /health, GET /metrics)\"},\"id\":null}"},
    {NNG_HTTP_STATUS_METHOD_NOT_ALLOWED,
     "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32600,\"message\":\"Invalid Request: HTTP "
     "method not allowed (JSON-RPC is POST /; also GET /health, GET /metrics)\"},\"id\":null}"},
    {NNG_HTTP_STATUS_HTTP_VERSION_NOT_SUPP,
     "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32600,\"message\":\"Invalid Request: HTTP "
     "version not supported (HTTP/1.1 or 1.0)\"},\"id\":null}"},
    {NNG_HTTP_STATUS_INTERNAL_SERVER_ERROR,
     "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32603,\"message\":\"Internal error\"},"
     "\"id\":null}"},
};

/* http_cancel runs when nng gives up an HTTP aio we hold (connection closed, server
 * stopping): whichever slot holds it (body read or commit wait) lets it go; the slot's own
 * callback then releases the slot. Registered once per request, when the body read starts. */
static void http_cancel(nng_aio *aio, void *arg, int rv)
{
    rpc_server *s = arg;
    bool mine = false;
    nng_mtx_lock(s->mu);
    for (size_t i = 0; i < s->nreads; i++)
        if (s->reads[i].in_use && s->reads[i].http == aio) {
            s->reads[i].http = NULL;
            /* Under the lock: once it is released the slot may serve another request. */
            nng_aio_abort(s->reads[i].rd, rv);
            mine = true;
        }
    for (size_t i = 0; i < s->npending; i++)
        if (s->pending[i].in_use && s->pending[i].http == aio) {
            s->pending[i].http = NULL;
            mine = true;
        }
    nng_mtx_unlock(s->mu);
    if (mine)
        nng_aio_finish(aio, rv);
}

static void read_done(void *arg)
{
    struct bodyread *b = arg;
    rpc_server *s = b->s;
    int rv = nng_aio_result(b->rd);
    nng_mtx_lock(s->mu);
    if (!b->in_use) {
        nng_mtx_unlock(s->mu);
        return;
    }
    nng_aio *http = b->http;
    char *buf = b->buf;
    size_t len = b->len;
    b->http = NULL;
    b->buf = NULL;
    b->in_use = false;
    nng_mtx_unlock(s->mu);
    if (http != NULL) {
        if (rv != 0)
            nng_aio_finish(http, rv); /* the connection is closed */
        else
            process(s, http, buf, len);
    }
    free(buf);
}

static void handle_post(nng_aio *aio)
{
    nng_http_req *req = nng_aio_get_input(aio, 0);
    nng_http_handler *h = nng_aio_get_input(aio, 1);
    nng_http_conn *conn = nng_aio_get_input(aio, 2);
    rpc_server *s = nng_http_handler_get_data(h);
    const char *cl = nng_http_req_get_header(req, "Content-Length");
    if (nng_http_req_get_header(req, "Transfer-Encoding") != NULL || cl == NULL) {
        reply_close(aio, NNG_HTTP_STATUS_LENGTH_REQUIRED, RPC_INVALID_REQUEST,
                    "Invalid Request: a body needs a Content-Length (no Transfer-Encoding)");
        return;
    }
    size_t digits = strspn(cl, "0123456789");
    if (digits == 0 || digits > 19 || cl[digits] != 0) {
        reply_close(aio, NNG_HTTP_STATUS_BAD_REQUEST, RPC_INVALID_REQUEST,
                    "Invalid Request: Content-Length is not a decimal number below 10^19");
        return;
    }
    unsigned long long len = strtoull(cl, NULL, 10);
    if (len > node_cfg(s->n)->rpc_max_body_bytes) {
        reply_close(aio, NNG_HTTP_STATUS_PAYLOAD_TOO_LARGE, RPC_INVALID_REQUEST,
                    "Invalid Request: body larger than rpc.max_body_bytes");
        return;
    }
    if (len == 0) {
        process(s, aio, "", 0);
        return;
    }
    nng_mtx_lock(s->mu);
    struct bodyread *b = NULL, *oldest = NULL;
    size_t reading = 0;
    for (size_t i = 0; i < s->nreads && !s->closing; i++) {
        struct bodyread *r = &s->reads[i];
        if (!r->in_use) {
            if (b == NULL)
                b = r;
        } else if (r->http != NULL) {
            reading++;
            if (oldest == NULL || r->started < oldest->started)
                oldest = r;
        }
    }
    char *buf = b != NULL ? malloc((size_t)len) : NULL;
    if (buf == NULL) {
        nng_mtx_unlock(s->mu);
        reply_close(aio, NNG_HTTP_STATUS_SERVICE_UNAVAILABLE, RPC_UNAVAILABLE,
                    "Service Unavailable: no room for the request body; retry later");
        return;
    }
    nng_time now = nng_clock();
    nng_aio *evicted = NULL;
    if (reading >= s->npending && oldest != NULL) {
        /* Every allowed body is being read: give up the one that has taken longest. */
        evicted = oldest->http;
        oldest->http = NULL;
        oldest->deadline = now + RPC_DRAIN_MS;
    }
    b->in_use = true;
    b->http = aio;
    b->buf = buf;
    b->len = (size_t)len;
    b->started = now;
    b->deadline = now + node_cfg(s->n)->rpc_body_timeout_ms;
    nng_iov iov = {.iov_buf = buf, .iov_len = (size_t)len};
    nng_aio_set_iov(b->rd, 1, &iov);
    nng_aio_defer(aio, http_cancel, s);
    nng_http_conn_read_all(conn, b->rd);
    nng_mtx_unlock(s->mu);
    if (evicted != NULL)
        reply_close(evicted, NNG_HTTP_STATUS_REQUEST_TIMEOUT, RPC_BODY_TIMEOUT,
                    "Request Timeout: every body slot (rpc.max_connections) was taken and this "
                    "body had been arriving longest");
}

/* sweep_tick answers 408 to each body not read by its deadline (nng then writes that and
 * closes the connection, which ends the read), and aborts a read whose connection is still
 * open RPC_DRAIN_MS after its 408 (a client that reads nothing can stall the write). */
static void sweep_tick(void *arg)
{
    rpc_server *s = arg;
    if (nng_aio_result(s->sweep) != 0)
        return; /* stopped by rpc_close */
    nng_aio *late[64];
    size_t nlate;
    do {
        nlate = 0;
        nng_time now = nng_clock();
        nng_mtx_lock(s->mu);
        for (size_t i = 0; i < s->nreads && nlate < 64; i++) {
            struct bodyread *b = &s->reads[i];
            if (!b->in_use || now < b->deadline)
                continue;
            b->deadline = now + RPC_DRAIN_MS;
            if (b->http != NULL) {
                late[nlate++] = b->http;
                b->http = NULL;
            } else {
                nng_aio_abort(b->rd, NNG_ETIMEDOUT); /* read_done releases the slot */
            }
        }
        if (nlate < 64 && !s->closing)
            nng_sleep_aio(RPC_SWEEP_MS, s->sweep);
        nng_mtx_unlock(s->mu);
        for (size_t i = 0; i < nlate; i++)
            reply_close(late[i], NNG_HTTP_STATUS_REQUEST_TIMEOUT, RPC_BODY_TIMEOUT,
                        "Request Timeout: the body did not arrive within rpc.body_timeout_ms");
    } while (nlate == 64);
}

static void handle_health(nng_aio *aio)
{
    rpc_server *s = nng_http_handler_get_data(nng_aio_get_input(aio, 1));
    node_corruption c;
    node_corrupt(s->n, &c);
    node_status st;
    node_status_get(s->n, &st);
    if (c.pending == 0 && !st.out_of_view) {
        reply(aio, 200, "application/json", "{\"status\":\"ok\"}", 15);
    } else {
        char body[128];
        int k = snprintf(
            body, sizeof body, "{\"status\":\"degraded\",\"storage\":\"%s\",\"consensus\":\"%s\"}",
            c.pending == 0 ? "ok" : "repairing", st.out_of_view ? "out_of_view" : "ok");
        reply(aio, 503, "application/json", body, (size_t)k);
    }
}

/* GET /metrics: Prometheus text format 0.0.4 (docs/operations.md lists the metrics). */
static void handle_metrics(nng_aio *aio)
{
    rpc_server *s = nng_http_handler_get_data(nng_aio_get_input(aio, 1));
    mtext t = {0};
    node_metrics(s->n, &t);
    rpc_metrics(&t);
    if (t.err)
        reply(aio, 500, "text/plain", "out of memory\n", 14);
    else
        reply(aio, 200, "text/plain; version=0.0.4; charset=utf-8", t.p, t.len);
    mtext_free(&t);
}

/* raise_nofile lifts the soft descriptor limit to the hard one. Each client connection
 * holds a descriptor until it closes, and nng 1.5's HTTP server has neither a timeout for
 * request headers nor a cap on connections: at the limit it stops accepting (every client
 * then waits in the listen backlog) and retries accept in a busy loop. With the soft limit
 * often 1024, a thousand idle connections would do that; the hard limit (the operator's
 * choice, e.g. systemd LimitNOFILE) is the connection cap instead (docs/rpc.md, "Limits"). */
static void raise_nofile(void)
{
    struct rlimit r;
    if (getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur < r.rlim_max) {
        r.rlim_cur = r.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &r); /* best effort: the old limit still works */
    }
}

int rpc_open(struct node *n, const char *url, rpc_server **out, char *err, size_t errlen)
{
    *out = NULL;
    rpc_server *s = calloc(1, sizeof *s);
    if (s == NULL) {
        snprintf(err, errlen, "rpc: out of memory");
        return -1;
    }
    s->n = n;
    raise_nofile();
    int rv;
    s->npending = node_cfg(n)->rpc_max_connections;
    s->nreads = 2 * s->npending;
    s->pending = calloc(s->npending, sizeof *s->pending);
    s->reads = calloc(s->nreads, sizeof *s->reads);
    if (s->pending == NULL || s->reads == NULL || nng_mtx_alloc(&s->mu) != 0) {
        snprintf(err, errlen, "rpc: out of memory");
        goto fail;
    }
    for (size_t i = 0; i < s->npending; i++) {
        s->pending[i].s = s;
        if ((rv = nng_aio_alloc(&s->pending[i].sleep, commit_tick, &s->pending[i])) != 0) {
            snprintf(err, errlen, "rpc: %s", nng_strerror(rv));
            goto fail;
        }
    }
    for (size_t i = 0; i < s->nreads; i++) {
        s->reads[i].s = s;
        if ((rv = nng_aio_alloc(&s->reads[i].rd, read_done, &s->reads[i])) != 0) {
            snprintf(err, errlen, "rpc: %s", nng_strerror(rv));
            goto fail;
        }
    }
    if ((rv = nng_aio_alloc(&s->sweep, sweep_tick, s)) != 0) {
        snprintf(err, errlen, "rpc: %s", nng_strerror(rv));
        goto fail;
    }
    nng_http_handler *hp = NULL, *hh = NULL;
    if ((rv = nng_url_parse(&s->url, url)) != 0 ||
        (rv = nng_http_server_hold(&s->srv, s->url)) != 0) {
        snprintf(err, errlen, "rpc: %s: %s", url, nng_strerror(rv));
        goto fail;
    }
    for (size_t i = 0; i < sizeof nng_error_pages / sizeof nng_error_pages[0]; i++)
        if ((rv = nng_http_server_set_error_page(s->srv, nng_error_pages[i].status,
                                                 nng_error_pages[i].body)) != 0) {
            snprintf(err, errlen, "rpc: error page: %s", nng_strerror(rv));
            goto fail;
        }
    if ((rv = nng_http_handler_alloc(&hp, "/", handle_post)) != 0 ||
        (rv = nng_http_handler_set_method(hp, "POST")) != 0 ||
        (rv = nng_http_handler_collect_body(hp, false, 0)) != 0 ||
        (rv = nng_http_handler_set_data(hp, s, NULL)) != 0 ||
        (rv = nng_http_server_add_handler(s->srv, hp)) != 0) {
        snprintf(err, errlen, "rpc: handler: %s", nng_strerror(rv));
        nng_http_handler_free(hp);
        goto fail;
    }
    if ((rv = nng_http_handler_alloc(&hh, "/health", handle_health)) != 0 ||
        (rv = nng_http_handler_set_method(hh, "GET")) != 0 ||
        (rv = nng_http_handler_set_data(hh, s, NULL)) != 0 ||
        (rv = nng_http_server_add_handler(s->srv, hh)) != 0) {
        snprintf(err, errlen, "rpc: handler: %s", nng_strerror(rv));
        nng_http_handler_free(hh);
        goto fail;
    }
    nng_http_handler *hm = NULL;
    if ((rv = nng_http_handler_alloc(&hm, "/metrics", handle_metrics)) != 0 ||
        (rv = nng_http_handler_set_method(hm, "GET")) != 0 ||
        (rv = nng_http_handler_set_data(hm, s, NULL)) != 0 ||
        (rv = nng_http_server_add_handler(s->srv, hm)) != 0) {
        snprintf(err, errlen, "rpc: handler: %s", nng_strerror(rv));
        nng_http_handler_free(hm);
        goto fail;
    }
    if ((rv = nng_http_server_start(s->srv)) != 0) {
        snprintf(err, errlen, "rpc: cannot listen on %s: %s", url, nng_strerror(rv));
        goto fail;
    }
    nng_sleep_aio(RPC_SWEEP_MS, s->sweep);
    *out = s;
    return 0;
fail:
    rpc_close(s);
    return -1;
}

void rpc_close(rpc_server *s)
{
    if (s == NULL)
        return;
    /* Refuse new waits, then stop every poll: a stopped tick answers its HTTP aio ("may
     * still commit") before nng_aio_stop returns. Only then stop the HTTP server, which
     * waits for the connections whose aios we held. */
    if (s->mu != NULL) {
        nng_mtx_lock(s->mu);
        s->closing = true;
        nng_mtx_unlock(s->mu);
    }
    if (s->sweep != NULL)
        nng_aio_stop(s->sweep);
    for (size_t i = 0; s->pending != NULL && i < s->npending; i++)
        if (s->pending[i].sleep != NULL)
            nng_aio_stop(s->pending[i].sleep);
    for (size_t i = 0; s->reads != NULL && i < s->nreads; i++)
        if (s->reads[i].rd != NULL)
            nng_aio_stop(s->reads[i].rd);
    if (s->srv != NULL) {
        nng_http_server_stop(s->srv);
        nng_http_server_release(s->srv);
    }
    for (size_t i = 0; s->pending != NULL && i < s->npending; i++) {
        if (s->pending[i].sleep != NULL)
            nng_aio_free(s->pending[i].sleep);
        json_decref(s->pending[i].id);
    }
    for (size_t i = 0; s->reads != NULL && i < s->nreads; i++) {
        if (s->reads[i].rd != NULL)
            nng_aio_free(s->reads[i].rd);
        free(s->reads[i].buf);
    }
    if (s->sweep != NULL)
        nng_aio_free(s->sweep);
    free(s->reads);
    free(s->pending);
    if (s->mu != NULL)
        nng_mtx_free(s->mu);
    if (s->url != NULL)
        nng_url_free(s->url);
    free(s);
}
