/*
 * rpc.c - JSON-RPC 2.0 over nng's HTTP server (see rpc.h, docs/rpc.md).
 *
 * Every request is answered exactly as the JSON-RPC 2.0 specification prescribes: -32700 for
 * a body that is not JSON, -32600 for one that is not a request object, -32601 for an unknown
 * method, -32602 for bad params; an empty batch gets one -32600; a batch of notifications gets
 * no body at all. Transactions the node refuses get codes -32001..-32006 (docs/rpc.md).
 * 64-bit integers are decimal strings; hashes, keys and transactions are lower-case hex.
 */
#include "rpc/rpc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <nng/nng.h>
#include <nng/supplemental/http/http.h>

#include "crypto/keys.h"
#include "node/ledger.h"
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
#define RPC_NOT_FOUND (-32010)

struct rpc_server {
    nng_http_server *srv;
    nng_url *url;
    struct node *n;
};

/* A method either fills *result (and returns 0) or sets *code and *msg. */
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
        *code = RPC_INVALID_PARAMS;
        *msg = "expected a hex string of the right length";
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

static int m_health(struct node *n, json_t *params, json_t **result, int *code, const char **msg)
{
    (void)n, (void)params, (void)code, (void)msg;
    *result = json_object();
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
                  const char **msg)
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
        *code = RPC_TX_DUPLICATE;
        *msg = "transaction already pending or recently committed";
        return -1;
    case PBFT_REQ_TOO_LARGE:
        *code = RPC_TX_TOO_LARGE;
        *msg = "transaction larger than 8192 bytes";
        return -1;
    default:
        *code = RPC_TX_MEMPOOL_FULL;
        *msg = "mempool full; retry later";
        return -1;
    }
    json_t *r = json_object();
    json_object_set_new(r, "hash", hex_json(h.b, 32));
    json_object_set_new(r, "code", json_integer(0));
    json_object_set_new(r, "log", json_string(wait ? "accepted into the mempool" : "queued"));
    *result = r;
    return 0;
}

static int m_broadcast_sync(struct node *n, json_t *p, json_t **r, int *c, const char **m)
{
    return submit(n, p, true, r, c, m);
}

static int m_broadcast_async(struct node *n, json_t *p, json_t **r, int *c, const char **m)
{
    return submit(n, p, false, r, c, m);
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
    json_object_set_new(r, "app_hash", hex_json(b->app_hash, 32));
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

static int m_block(struct node *n, json_t *params, json_t **result, int *code, const char **msg)
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
    store_block_read b;
    memset(&b, 0, sizeof b);
    int rc = store_get_block(node_store(n), h, &b);
    if (rc != STORE_OK) {
        store_block_read_free(&b);
        *code = RPC_NOT_FOUND;
        *msg = "no block at that height";
        return -1;
    }
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
    if (store_get_tx(node_store(n), &h, &height, &index, &rc8) != STORE_OK) {
        *code = RPC_NOT_FOUND;
        *msg = "unknown transaction (not committed, or never seen)";
        return -1;
    }
    json_t *r = json_object();
    json_object_set_new(r, "hash", hex_json(h.b, 32));
    json_object_set_new(r, "height", u64_json(height));
    json_object_set_new(r, "index", json_integer(index));
    json_object_set_new(r, "code", json_integer(rc8));
    json_object_set_new(r, "result", json_string(ledger_code_name(rc8)));
    *result = r;
    return 0;
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
};

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

/* one handles one request object; returns NULL for a notification. */
static json_t *one(struct node *n, json_t *req)
{
    json_t *id = json_is_object(req) ? json_object_get(req, "id") : NULL;
    bool valid_id = id == NULL || json_is_string(id) || json_is_integer(id) || json_is_null(id);
    if (!json_is_object(req) || !valid_id || !json_is_string(json_object_get(req, "jsonrpc")) ||
        strcmp(json_string_value(json_object_get(req, "jsonrpc")), "2.0") != 0 ||
        !json_is_string(json_object_get(req, "method")))
        return error_obj(valid_id ? id : NULL, RPC_INVALID_REQUEST, "Invalid Request");
    json_t *params = json_object_get(req, "params");
    if (params != NULL && !json_is_object(params) && !json_is_array(params))
        return error_obj(id, RPC_INVALID_REQUEST,
                         "Invalid Request: params must be an object "
                         "or an array");
    const char *name = json_string_value(json_object_get(req, "method"));
    method_fn fn = NULL;
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++)
        if (strcmp(methods[i].name, name) == 0)
            fn = methods[i].fn;
    json_t *result = NULL;
    int code = 0;
    const char *msg = NULL;
    json_t *resp;
    if (fn == NULL)
        resp = error_obj(id, RPC_METHOD_NOT_FOUND, "Method not found");
    else if (fn(n, params, &result, &code, &msg) != 0)
        resp = error_obj(id, code, msg);
    else {
        resp = json_object();
        json_object_set_new(resp, "jsonrpc", json_string("2.0"));
        json_object_set_new(resp, "result", result);
        json_object_set(resp, "id", id != NULL ? id : json_null());
    }
    if (id == NULL) { /* a notification: no response */
        json_decref(resp);
        return NULL;
    }
    return resp;
}

char *rpc_handle(struct node *n, const char *body, size_t len, int *http_status)
{
    *http_status = 200;
    json_error_t je;
    json_t *req = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    json_t *resp = NULL;
    if (req == NULL) {
        resp = error_obj(NULL, RPC_PARSE_ERROR, "Parse error");
    } else if (json_is_array(req)) {
        size_t nreq = json_array_size(req);
        size_t max = node_cfg(n)->rpc_max_batch;
        if (nreq == 0)
            resp = error_obj(NULL, RPC_INVALID_REQUEST, "Invalid Request: empty batch");
        else if (nreq > max)
            resp = error_obj(NULL, RPC_INVALID_REQUEST, "Invalid Request: batch too large");
        else {
            resp = json_array();
            for (size_t i = 0; i < nreq; i++) {
                json_t *r = one(n, json_array_get(req, i));
                if (r != NULL)
                    json_array_append_new(resp, r);
            }
            if (json_array_size(resp) == 0) {
                json_decref(resp);
                resp = NULL;
            }
        }
    } else {
        resp = one(n, req);
    }
    json_decref(req);
    if (resp == NULL) {
        *http_status = 204;
        return NULL;
    }
    char *out = json_dumps(resp, JSON_COMPACT);
    json_decref(resp);
    return out;
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

static void handle_post(nng_aio *aio)
{
    nng_http_req *req = nng_aio_get_input(aio, 0);
    nng_http_handler *h = nng_aio_get_input(aio, 1);
    struct node *n = nng_http_handler_get_data(h);
    void *body;
    size_t len;
    nng_http_req_get_data(req, &body, &len);
    int status;
    char *out = rpc_handle(n, body, len, &status);
    if (out == NULL) {
        reply(aio, (uint16_t)status, NULL, NULL, 0);
        return;
    }
    reply(aio, (uint16_t)status, "application/json", out, strlen(out));
    free(out);
}

static void handle_health(nng_aio *aio)
{
    reply(aio, 200, "application/json", "{\"status\":\"ok\"}", 15);
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
    int rv;
    nng_http_handler *hp = NULL, *hh = NULL;
    if ((rv = nng_url_parse(&s->url, url)) != 0 ||
        (rv = nng_http_server_hold(&s->srv, s->url)) != 0) {
        snprintf(err, errlen, "rpc: %s: %s", url, nng_strerror(rv));
        goto fail;
    }
    if ((rv = nng_http_handler_alloc(&hp, "/", handle_post)) != 0 ||
        (rv = nng_http_handler_set_method(hp, "POST")) != 0 ||
        (rv = nng_http_handler_collect_body(hp, true, node_cfg(n)->rpc_max_body_bytes)) != 0 ||
        (rv = nng_http_handler_set_data(hp, n, NULL)) != 0 ||
        (rv = nng_http_server_add_handler(s->srv, hp)) != 0) {
        snprintf(err, errlen, "rpc: handler: %s", nng_strerror(rv));
        nng_http_handler_free(hp);
        goto fail;
    }
    if ((rv = nng_http_handler_alloc(&hh, "/health", handle_health)) != 0 ||
        (rv = nng_http_handler_set_method(hh, "GET")) != 0 ||
        (rv = nng_http_server_add_handler(s->srv, hh)) != 0) {
        snprintf(err, errlen, "rpc: handler: %s", nng_strerror(rv));
        nng_http_handler_free(hh);
        goto fail;
    }
    if ((rv = nng_http_server_start(s->srv)) != 0) {
        snprintf(err, errlen, "rpc: cannot listen on %s: %s", url, nng_strerror(rv));
        goto fail;
    }
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
    if (s->srv != NULL) {
        nng_http_server_stop(s->srv);
        nng_http_server_release(s->srv);
    }
    if (s->url != NULL)
        nng_url_free(s->url);
    free(s);
}
