/*
 * cli.c - pbft-cli: a JSON-RPC client for the ledger (keys, transactions, queries).
 *
 * It builds and signs transactions locally (the key never leaves the machine) and talks to
 * one node's JSON-RPC endpoint. Human-readable output by default; --json prints the raw
 * JSON-RPC result. Exit codes: 0 success, 1 the node refused or an error, 2 usage.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <nng/nng.h>
#include <nng/supplemental/http/http.h>

#include "consensus/msg.h"
#include "crypto/keys.h"
#include "node/config.h"

static const char *usage_text =
    "pbft-cli - submit transactions to and query a pbft ledger over JSON-RPC\n"
    "\n"
    "usage: pbft-cli [--rpc URL] [--json] <command> [args]\n"
    "\n"
    "commands:\n"
    "  keygen --out FILE                         write a new key file (mode 0600)\n"
    "  status                                    node status: height, view, primary\n"
    "  account (PUBKEY | --key FILE)             balance and nonce\n"
    "  transfer --key FILE --to PUBKEY --amount N [--nonce N] [--wait]\n"
    "  put --key FILE --k KEY --v VALUE [--hex] [--nonce N] [--wait]\n"
    "  get [--hex] KEY                           a value of the key-value namespace\n"
    "  block [HEIGHT]                            a block (latest without HEIGHT)\n"
    "  verify-block --genesis FILE [HEIGHT]      check a block's commit certificate against\n"
    "                                            the validator keys of a genesis file\n"
    "  tx HASH                                   a committed transaction's receipt\n"
    "  wait (--height H | --tx HASH) [--timeout SECONDS]\n"
    "\n"
    "options:\n"
    "  --rpc URL   node endpoint (default http://127.0.0.1:26700)\n"
    "  --json      print the JSON-RPC result as JSON\n"
    "\n"
    "transfer and put fetch the sender's next nonce from the node unless --nonce is given;\n"
    "--wait waits (up to 30 s) until the transaction is committed. With --hex, put's KEY and\n"
    "VALUE and get's KEY are hex (a key or value of any bytes) and get prints the value in\n"
    "hex; without it get prints a value that is not UTF-8 as hex:HEX.\n";

static const char *rpc_url = "http://127.0.0.1:26700";
static int json_out = 0;

static void die(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("pbft-cli: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(code);
}

/* call performs one JSON-RPC request. On a JSON-RPC error it returns NULL and sets *ecode
 * and *emsg (malloc'd); transport errors are fatal. */
static json_t *call(const char *method, json_t *params, int *ecode, char **emsg)
{
    json_t *req = json_object();
    json_object_set_new(req, "jsonrpc", json_string("2.0"));
    json_object_set_new(req, "id", json_integer(1));
    json_object_set_new(req, "method", json_string(method));
    json_object_set_new(req, "params", params ? params : json_object());
    char *body = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    nng_url *url;
    nng_http_client *cl;
    nng_http_req *hreq;
    nng_http_res *hres;
    nng_aio *aio;
    int rv;
    if ((rv = nng_url_parse(&url, rpc_url)) != 0)
        die(2, "--rpc %s: %s", rpc_url, nng_strerror(rv));
    if ((rv = nng_http_client_alloc(&cl, url)) != 0 || (rv = nng_http_req_alloc(&hreq, url)) != 0 ||
        (rv = nng_http_res_alloc(&hres)) != 0 || (rv = nng_aio_alloc(&aio, NULL, NULL)) != 0)
        die(1, "%s", nng_strerror(rv));
    nng_http_req_set_method(hreq, "POST");
    nng_http_req_set_uri(hreq, "/");
    nng_http_req_set_header(hreq, "Content-Type", "application/json");
    nng_http_req_copy_data(hreq, body, strlen(body));
    free(body);
    nng_aio_set_timeout(aio, 15000);
    nng_http_client_transact(cl, hreq, hres, aio);
    nng_aio_wait(aio);
    if ((rv = nng_aio_result(aio)) != 0)
        die(1, "cannot reach %s: %s", rpc_url, nng_strerror(rv));
    void *data;
    size_t len;
    nng_http_res_get_data(hres, &data, &len);
    json_error_t je;
    json_t *resp = json_loadb(data, len, 0, &je);
    if (resp == NULL)
        die(1, "%s answered HTTP %u with a body that is not JSON", rpc_url,
            (unsigned)nng_http_res_get_status(hres));
    nng_aio_free(aio);
    nng_http_res_free(hres);
    nng_http_req_free(hreq);
    nng_http_client_free(cl);
    nng_url_free(url);
    json_t *err = json_object_get(resp, "error");
    if (err != NULL) {
        *ecode = (int)json_integer_value(json_object_get(err, "code"));
        const char *m = json_string_value(json_object_get(err, "message"));
        *emsg = strdup(m ? m : "error");
        json_decref(resp);
        return NULL;
    }
    json_t *result = json_incref(json_object_get(resp, "result"));
    json_decref(resp);
    return result;
}

static json_t *call_or_die(const char *method, json_t *params)
{
    int code = 0;
    char *msg = NULL;
    json_t *r = call(method, params, &code, &msg);
    if (r == NULL)
        die(1, "%s: error %d: %s", method, code, msg);
    return r;
}

static void print_json(json_t *j)
{
    char *s = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    puts(s);
    free(s);
}

static const char *str(json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "?";
}

static void read_key(const char *path, uint8_t pk[32], uint8_t sk[64])
{
    char err[512];
    if (keys_file_read(path, pk, sk, err, sizeof err) != KEYS_OK)
        die(1, "%s", err);
}

static void parse_pk(const char *hex, uint8_t pk[32])
{
    if (strlen(hex) != 64 || keys_hex_decode(hex, pk, 32) != KEYS_OK)
        die(2, "'%s' is not a public key (64 hex characters)", hex);
}

/* parse_hex decodes hex (min..cap bytes, upper or lower case) into out; returns the length. */
static size_t parse_hex(const char *what, const char *s, uint8_t *out, size_t min, size_t cap)
{
    size_t n = strlen(s);
    if (n % 2 != 0 || n / 2 < min || n / 2 > cap || keys_hex_decode(s, out, n / 2) != KEYS_OK)
        die(2, "%s: '%s' is not %zu..%zu bytes of hex", what, s, min, cap);
    return n / 2;
}

static uint64_t parse_u64(const char *what, const char *s)
{
    char *end;
    if (*s < '0' || *s > '9')
        die(2, "%s: '%s' is not a non-negative integer", what, s);
    unsigned long long v = strtoull(s, &end, 10);
    if (*end != 0)
        die(2, "%s: '%s' is not a non-negative integer", what, s);
    return v;
}

static void chain_digest(uint8_t chain[32])
{
    json_t *st = call_or_die("status", NULL);
    const char *id = json_string_value(json_object_get(st, "chain_id"));
    if (id == NULL)
        die(1, "status: no chain_id in the answer");
    keys_sha256((const uint8_t *)id, strlen(id), chain);
    json_decref(st);
}

static uint64_t next_nonce(const uint8_t pk[32])
{
    char hex[65];
    keys_hex_encode(pk, 32, hex);
    json_t *p = json_object();
    json_object_set_new(p, "public_key", json_string(hex));
    json_t *a = call_or_die("account", p);
    uint64_t n = parse_u64("nonce", str(a, "nonce"));
    json_decref(a);
    return n;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* wait_tx polls until the transaction is committed or the deadline passes. */
static json_t *wait_tx(const char *hash, double timeout_s)
{
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        json_t *p = json_object();
        json_object_set_new(p, "hash", json_string(hash));
        int code;
        char *msg = NULL;
        json_t *r = call("tx", p, &code, &msg);
        if (r != NULL)
            return r;
        free(msg);
        clock_gettime(CLOCK_MONOTONIC, &t);
        if ((double)(t.tv_sec - t0.tv_sec) + (double)(t.tv_nsec - t0.tv_nsec) / 1e9 > timeout_s)
            return NULL;
        sleep_ms(100);
    }
}

static int submit(const uint8_t *tx, size_t n, int wait)
{
    char *hex = malloc(2 * n + 1);
    keys_hex_encode(tx, n, hex);
    json_t *p = json_object();
    json_object_set_new(p, "tx", json_string(hex));
    free(hex);
    if (wait) {
        /* broadcast_tx_commit: the node answers once the transaction is in a block. */
        int code = 0;
        char *msg = NULL;
        json_t *rc = call("broadcast_tx_commit", p, &code, &msg);
        if (rc == NULL && code == -32011)
            die(1, "%s (check later with 'pbft-cli tx HASH')", msg);
        if (rc == NULL)
            die(1, "broadcast_tx_commit: error %d: %s", code, msg);
        if (json_out)
            print_json(rc);
        else
            printf("committed %s at height %s: %s\n", str(rc, "hash"), str(rc, "height"),
                   str(rc, "result"));
        int ok = json_integer_value(json_object_get(rc, "code")) == 0;
        json_decref(rc);
        return ok ? 0 : 1;
    }
    json_t *r = call_or_die("broadcast_tx_sync", p);
    if (json_out)
        print_json(r);
    else
        printf("accepted %s\n", str(r, "hash"));
    json_decref(r);
    return 0;
}

/* verify_block checks, offline against a genesis file (the only thing trusted), that the
 * block at height is certified: its digest recomputed from its bytes, its transaction root,
 * and 2f+1 distinct validators' valid signatures on COMMIT(view, height, digest) of one view.
 * The node is only a source of bytes. */
static int verify_block(const char *genesis_path, const char *height)
{
    if (genesis_path == NULL)
        die(2, "verify-block: --genesis FILE is required (the validator keys are trusted from it)");
    genesis g;
    char err[512];
    memset(&g, 0, sizeof g);
    if (genesis_load(genesis_path, &g, err, sizeof err) != 0)
        die(1, "%s", err);
    uint8_t chain[32];
    keys_sha256((const uint8_t *)g.chain_id, strlen(g.chain_id), chain);
    json_t *p1 = json_object(), *p2 = json_object();
    if (height != NULL) {
        json_object_set_new(p1, "height", json_string(height));
        json_object_set_new(p2, "height", json_string(height));
    }
    json_t *blk = call_or_die("block", p1);
    json_t *cm = call_or_die("commit", p2);
    const char *hex = json_string_value(json_object_get(blk, "block"));
    uint64_t h = parse_u64("height", str(blk, "height"));
    if (hex == NULL || strlen(hex) % 2 != 0)
        die(1, "verify-block: the node sent no block bytes");
    size_t n = strlen(hex) / 2;
    uint8_t *bytes = malloc(n ? n : 1);
    pbft_block b;
    pbft_digest d;
    if (bytes == NULL || keys_hex_decode(hex, bytes, n) != KEYS_OK ||
        pbft_block_decode(bytes, n, &b) != PBFT_OK)
        die(1, "verify-block: block %llu does not decode", (unsigned long long)h);
    pbft_block_digest(&b, &d);
    if (b.height != h || pbft_block_check_root(&b, NULL) != PBFT_OK)
        die(1, "verify-block: block %llu: wrong height or transaction root", (unsigned long long)h);
    uint16_t f = (uint16_t)((g.n - 1) / 3), q = (uint16_t)(g.n - f);
    bool seen[PBFT_MAX_N] = {false};
    uint16_t good = 0;
    uint64_t view = 0;
    json_t *cert = json_object_get(cm, "certificate");
    for (size_t i = 0; i < json_array_size(cert); i++) {
        const char *mh =
            json_string_value(json_object_get(json_array_get(cert, i), "signed_message"));
        size_t mn = mh ? strlen(mh) / 2 : 0;
        uint8_t *m = malloc(mn ? mn : 1);
        pbft_env e;
        pbft_vote v;
        bool ok = mh != NULL && m != NULL && keys_hex_decode(mh, m, mn) == KEYS_OK &&
                  pbft_signed_decode(m, mn, PBFT_MSG_COMMIT, &e) == PBFT_OK &&
                  pbft_vote_decode(e.body, &v) == PBFT_OK && e.sender < g.n && !seen[e.sender] &&
                  v.seq == h && memcmp(v.d.b, d.b, 32) == 0 && (good == 0 || v.view == view) &&
                  pbft_env_verify(&e, chain, g.validators[e.sender].public_key);
        if (ok) {
            seen[e.sender] = true;
            view = v.view;
            good++;
        }
        free(m);
    }
    char dh[65];
    keys_hex_encode(d.b, 32, dh);
    int rc = good >= q ? 0 : 1;
    if (json_out)
        printf("{\"height\":\"%llu\",\"digest\":\"%s\",\"valid_signatures\":%u,\"quorum\":%u,"
               "\"verified\":%s}\n",
               (unsigned long long)h, dh, good, q, rc == 0 ? "true" : "false");
    else if (rc == 0)
        printf("block %llu verified: digest %s, %u of %u validators signed COMMIT in view %llu "
               "(quorum %u)\n",
               (unsigned long long)h, dh, good, g.n, (unsigned long long)view, q);
    else
        printf("block %llu NOT verified: only %u valid signatures over digest %s (quorum %u)\n",
               (unsigned long long)h, good, dh, q);
    free(bytes);
    json_decref(blk);
    json_decref(cm);
    genesis_free(&g);
    return rc;
}

int main(int argc, char **argv)
{
    int i = 1;
    for (; i < argc; i++) {
        if (strcmp(argv[i], "--rpc") == 0 && i + 1 < argc)
            rpc_url = argv[++i];
        else if (strncmp(argv[i], "--rpc=", 6) == 0)
            rpc_url = argv[i] + 6;
        else if (strcmp(argv[i], "--json") == 0)
            json_out = 1;
        else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(usage_text, stdout);
            return 0;
        } else
            break;
    }
    if (i >= argc) {
        fputs(usage_text, stderr);
        return 2;
    }
    if (keys_init() != KEYS_OK)
        die(1, "libsodium failed to initialise");
    const char *cmd = argv[i++];
    /* options of the command */
    const char *key = NULL, *to = NULL, *amount = NULL, *nonce = NULL, *k = NULL, *v = NULL;
    const char *out = NULL, *height = NULL, *txh = NULL, *timeout = NULL, *pos = NULL;
    const char *genesis_path = NULL;
    int wait = 0, hex_args = 0;
    for (; i < argc; i++) {
        const char *a = argv[i];
#define OPT(name, var)                                                                             \
    if (strcmp(a, name) == 0) {                                                                    \
        if (i + 1 >= argc)                                                                         \
            die(2, "%s needs a value", name);                                                      \
        var = argv[++i];                                                                           \
        continue;                                                                                  \
    }
        OPT("--key", key)
        OPT("--to", to)
        OPT("--amount", amount)
        OPT("--nonce", nonce)
        OPT("--k", k)
        OPT("--v", v)
        OPT("--out", out)
        OPT("--height", height)
        OPT("--tx", txh)
        OPT("--timeout", timeout)
        OPT("--rpc", rpc_url)
        OPT("--genesis", genesis_path)
#undef OPT
        if (strcmp(a, "--wait") == 0)
            wait = 1;
        else if (strcmp(a, "--hex") == 0)
            hex_args = 1;
        else if (strcmp(a, "--json") == 0)
            json_out = 1;
        else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(usage_text, stdout);
            return 0;
        } else if (a[0] != '-' && pos == NULL)
            pos = a;
        else
            die(2, "%s: unexpected argument '%s' (try --help)", cmd, a);
    }

    if (strcmp(cmd, "keygen") == 0) {
        if (out == NULL)
            die(2, "keygen: --out FILE is required");
        uint8_t pk[32], sk[64];
        char err[512], hex[65];
        keys_generate(pk, sk);
        if (keys_file_write(out, pk, sk, err, sizeof err) != KEYS_OK)
            die(1, "%s", err);
        keys_hex_encode(pk, 32, hex);
        printf("%s\n", hex);
        return 0;
    }
    if (strcmp(cmd, "status") == 0) {
        json_t *r = call_or_die("status", NULL);
        if (json_out)
            print_json(r);
        else
            printf("node %lld of chain %s: height %s, view %s, primary %lld%s, mempool %lld, "
                   "peers %lld\n",
                   (long long)json_integer_value(json_object_get(r, "node_id")), str(r, "chain_id"),
                   str(r, "latest_height"), str(r, "view"),
                   (long long)json_integer_value(json_object_get(r, "primary")),
                   json_is_true(json_object_get(r, "view_change")) ? " (view change)" : "",
                   (long long)json_integer_value(json_object_get(r, "mempool_size")),
                   (long long)json_integer_value(json_object_get(r, "peers_connected")));
        json_decref(r);
        return 0;
    }
    if (strcmp(cmd, "account") == 0) {
        uint8_t pk[32], sk[64];
        if (key != NULL)
            read_key(key, pk, sk);
        else if (pos != NULL)
            parse_pk(pos, pk);
        else
            die(2, "account: give a public key or --key FILE");
        char hex[65];
        keys_hex_encode(pk, 32, hex);
        json_t *p = json_object();
        json_object_set_new(p, "public_key", json_string(hex));
        json_t *r = call_or_die("account", p);
        if (json_out)
            print_json(r);
        else
            printf("%s balance %s nonce %s\n", hex, str(r, "balance"), str(r, "nonce"));
        json_decref(r);
        return 0;
    }
    if (strcmp(cmd, "transfer") == 0 || strcmp(cmd, "put") == 0) {
        if (key == NULL)
            die(2, "%s: --key FILE is required", cmd);
        uint8_t pk[32], sk[64], chain[32], tx[PBFT_MAX_TX_BYTES];
        read_key(key, pk, sk);
        chain_digest(chain);
        uint64_t n = nonce ? parse_u64("--nonce", nonce) : next_nonce(pk);
        size_t len = 0;
        int rc;
        if (cmd[0] == 't') {
            if (to == NULL || amount == NULL)
                die(2, "transfer: --to PUBKEY and --amount N are required");
            uint8_t top[32];
            parse_pk(to, top);
            rc = pbft_tx_encode_transfer(chain, sk, n, top, parse_u64("--amount", amount), tx,
                                         sizeof tx, &len);
        } else {
            if (k == NULL || v == NULL)
                die(2, "put: --k KEY and --v VALUE are required");
            uint8_t kb[PBFT_MAX_KEY_BYTES], vb[PBFT_MAX_VALUE_BYTES];
            size_t kl = strlen(k), vl = strlen(v);
            const uint8_t *kp = (const uint8_t *)k, *vp = (const uint8_t *)v;
            if (hex_args) {
                kl = parse_hex("--k", k, kb, 1, sizeof kb);
                vl = parse_hex("--v", v, vb, 0, sizeof vb);
                kp = kb;
                vp = vb;
            }
            rc = pbft_tx_encode_put(chain, sk, n, kp, kl, vp, vl, tx, sizeof tx, &len);
        }
        if (rc != PBFT_OK)
            die(2, "%s: cannot encode the transaction: %s", cmd, pbft_strerror(rc));
        return submit(tx, len, wait);
    }
    if (strcmp(cmd, "block") == 0) {
        json_t *p = json_object();
        if (pos != NULL)
            json_object_set_new(p, "height", json_string(pos));
        json_t *r = call_or_die("block", p);
        if (json_out)
            print_json(r);
        else
            printf("block %s: %zu txs, view %s, proposer %lld, chain hash %s, app hash %s\n",
                   str(r, "height"), json_array_size(json_object_get(r, "txs")), str(r, "view"),
                   (long long)json_integer_value(json_object_get(r, "proposer")),
                   str(r, "chain_hash"), str(r, "app_hash"));
        json_decref(r);
        return 0;
    }
    if (strcmp(cmd, "get") == 0) {
        if (pos == NULL)
            die(2, "get: give the key");
        json_t *p = json_object();
        if (hex_args) {
            uint8_t kb[PBFT_MAX_KEY_BYTES];
            (void)parse_hex("get", pos, kb, 1, sizeof kb);
            json_object_set_new(p, "key_hex", json_string(pos));
        } else {
            json_object_set_new(p, "key", json_string(pos));
        }
        json_t *r = call_or_die("kv_get", p);
        bool text = strcmp(str(r, "encoding"), "utf8") == 0;
        if (json_out)
            print_json(r);
        else if (!json_is_true(json_object_get(r, "found")))
            printf("%s: not found (height %s)\n", pos, str(r, "height"));
        else if (hex_args)
            printf("%s = %s (height %s)\n", pos, str(r, "value_hex"), str(r, "height"));
        else
            printf("%s = %s%s (height %s)\n", pos,
                   text ? "" : "hex:", str(r, text ? "value" : "value_hex"), str(r, "height"));
        json_decref(r);
        return 0;
    }
    if (strcmp(cmd, "verify-block") == 0)
        return verify_block(genesis_path, pos);
    if (strcmp(cmd, "tx") == 0) {
        if (pos == NULL)
            die(2, "tx: give the transaction hash");
        json_t *p = json_object();
        json_object_set_new(p, "hash", json_string(pos));
        json_t *r = call_or_die("tx", p);
        if (json_out)
            print_json(r);
        else
            printf("%s: height %s index %lld result %s\n", pos, str(r, "height"),
                   (long long)json_integer_value(json_object_get(r, "index")), str(r, "result"));
        json_decref(r);
        return 0;
    }
    if (strcmp(cmd, "wait") == 0) {
        double t = timeout ? (double)parse_u64("--timeout", timeout) : 60;
        if (txh != NULL) {
            json_t *r = wait_tx(txh, t);
            if (r == NULL)
                die(1, "wait: %s not committed within %.0f s", txh, t);
            printf("committed at height %s\n", str(r, "height"));
            json_decref(r);
            return 0;
        }
        if (height == NULL)
            die(2, "wait: --height H or --tx HASH is required");
        uint64_t want = parse_u64("--height", height);
        struct timespec t0, tn;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (;;) {
            int code;
            char *msg = NULL;
            json_t *r = call("status", NULL, &code, &msg);
            if (r != NULL) {
                uint64_t h = parse_u64("latest_height", str(r, "latest_height"));
                json_decref(r);
                if (h >= want) {
                    printf("height %llu\n", (unsigned long long)h);
                    return 0;
                }
            }
            free(msg);
            clock_gettime(CLOCK_MONOTONIC, &tn);
            if ((double)(tn.tv_sec - t0.tv_sec) > t)
                die(1, "wait: height %llu not reached within %.0f s", (unsigned long long)want, t);
            sleep_ms(100);
        }
    }
    die(2, "unknown command '%s' (try --help)", cmd);
    return 2;
}
