/*
 * load.c - pbft-load: drives a running network with pre-signed transfers over JSON-RPC and
 * measures committed throughput and submit-to-commit latency. Used by scripts/bench.sh.
 *
 * Everything expensive for the client (key derivation, signing, hex, JSON) happens before the
 * clock starts. Each account's transactions are sent by one thread in nonce order (the
 * ledger rejects a nonce gap), in JSON-RPC batches of broadcast_tx_async. A follower thread
 * polls the node for new blocks and stamps each transaction's commit time; latency is
 * commit observed minus batch sent (the polling interval, 2 ms, is the resolution).
 *
 * It prints one JSON line (last on stdout), with the ceiling measured in the same run:
 * raw Ed25519 verifications per second on one core.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <nng/nng.h>
#include <nng/supplemental/http/http.h>

#include "consensus/msg.h"
#include "crypto/keys.h"

#define MAX_ACCOUNTS 1024
#define MAX_THREADS 32

struct txrec {
    pbft_digest h;
    double sent;   /* seconds since t0, set when its batch is sent */
    double commit; /* seconds since t0, 0 until seen in a block */
};

static struct txrec *txs;
static size_t ntx;
static char **bodies;                   /* pre-built JSON batch bodies */
static size_t *body_first, *body_count; /* tx index range of each body */
static size_t nbodies;
static const char *rpc_url = "http://127.0.0.1:26700"; /* control calls; senders' default */
#define MAX_URLS 16
static char *send_urls[MAX_URLS]; /* --rpc A,B,...: sender thread t uses send_urls[t % n] */
static size_t nsend_urls;
static char *follow_urls[MAX_URLS]; /* --follow: one follower per node (default: --rpc's first) */
static size_t nfollow;
static double *fcommit[MAX_URLS]; /* per follower: commit time of each tx, 0 = not seen */
static int follow_id[MAX_URLS];   /* the followed node's id (status.node_id) */
static atomic_int followers_stop;
static _Thread_local const char *t_url; /* this thread's node; NULL: rpc_url */
static struct timespec t0;
static atomic_size_t committed;
static atomic_int sending_done;
static double rate = 0; /* tx/s limit, 0 = as fast as possible */
static int ingest = 0;  /* --ingest: measure acceptance only, follow no blocks */
static atomic_size_t accepted, refused;
static size_t block_count, block_txs_total;

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0.tv_sec) + (double)(t.tv_nsec - t0.tv_nsec) / 1e9;
}

static void die(const char *msg)
{
    fprintf(stderr, "pbft-load: %s\n", msg);
    exit(1);
}

/* Each thread keeps one HTTP/1.1 connection open and reuses it, as wrk does; a request that
 * fails on a kept connection is retried once on a fresh one. */
struct conn {
    const char *for_url; /* the URL url/cl/c belong to */
    nng_url *url;
    nng_http_client *cl;
    nng_http_conn *c;
};
static _Thread_local struct conn tconn;

static void conn_close(struct conn *k)
{
    if (k->c != NULL)
        nng_http_conn_close(k->c);
    k->c = NULL;
}

static int conn_open(struct conn *k)
{
    const char *want = t_url != NULL ? t_url : rpc_url;
    if (k->url != NULL && k->for_url != want) { /* this thread now talks to another node */
        nng_http_client_free(k->cl);
        nng_url_free(k->url);
        k->url = NULL;
    }
    k->for_url = want;
    if (k->url == NULL) {
        if (nng_url_parse(&k->url, t_url != NULL ? t_url : rpc_url) != 0)
            die("bad --rpc");
        if (nng_http_client_alloc(&k->cl, k->url) != 0)
            die("nng allocation failed");
    }
    nng_aio *aio;
    if (nng_aio_alloc(&aio, NULL, NULL) != 0)
        die("nng allocation failed");
    nng_aio_set_timeout(aio, 5000);
    nng_http_client_connect(k->cl, aio);
    nng_aio_wait(aio);
    int rv = nng_aio_result(aio);
    if (rv == 0)
        k->c = nng_aio_get_output(aio, 0);
    nng_aio_free(aio);
    return rv;
}

/* post sends one HTTP POST and returns the response body (malloc'd) or NULL. */
static char *post(const char *body, size_t len)
{
    struct conn *k = &tconn;
    if (k->c != NULL && k->for_url != (t_url != NULL ? t_url : rpc_url))
        conn_close(k);
    for (int attempt = 0; attempt < 2; attempt++) {
        if (k->c == NULL && conn_open(k) != 0)
            return NULL;
        nng_http_req *req;
        nng_http_res *res;
        nng_aio *aio;
        if (nng_http_req_alloc(&req, k->url) != 0 || nng_http_res_alloc(&res) != 0 ||
            nng_aio_alloc(&aio, NULL, NULL) != 0)
            die("nng allocation failed");
        nng_http_req_set_method(req, "POST");
        nng_http_req_set_uri(req, "/");
        nng_http_req_set_header(req, "Content-Type", "application/json");
        nng_http_req_copy_data(req, body, len);
        nng_aio_set_timeout(aio, 30000);
        nng_http_conn_transact(k->c, req, res, aio);
        nng_aio_wait(aio);
        char *out = NULL;
        int rv = nng_aio_result(aio);
        if (rv == 0) {
            void *d;
            size_t n;
            nng_http_res_get_data(res, &d, &n);
            out = malloc(n + 1);
            memcpy(out, d, n);
            out[n] = 0;
            const char *cc = nng_http_res_get_header(res, "Connection");
            if (cc != NULL && strcasecmp(cc, "close") == 0)
                conn_close(k);
        } else {
            conn_close(k);
        }
        nng_aio_free(aio);
        nng_http_res_free(res);
        nng_http_req_free(req);
        if (out != NULL)
            return out;
    }
    return NULL;
}

static json_t *call(const char *method, json_t *params)
{
    json_t *req = json_object();
    json_object_set_new(req, "jsonrpc", json_string("2.0"));
    json_object_set_new(req, "id", json_integer(1));
    json_object_set_new(req, "method", json_string(method));
    json_object_set_new(req, "params", params ? params : json_object());
    char *b = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    char *r = post(b, strlen(b));
    free(b);
    if (r == NULL)
        return NULL;
    json_t *j = json_loads(r, 0, NULL);
    free(r);
    json_t *res = j ? json_incref(json_object_get(j, "result")) : NULL;
    json_decref(j);
    return res;
}

/* Transactions are found by hash with a sorted index. */
static size_t *by_hash;
static int cmp_hash(const void *a, const void *b)
{
    return memcmp(txs[*(const size_t *)a].h.b, txs[*(const size_t *)b].h.b, 32);
}
static struct txrec *find(const pbft_digest *h)
{
    size_t lo = 0, hi = ntx;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = memcmp(txs[by_hash[mid]].h.b, h->b, 32);
        if (c == 0)
            return &txs[by_hash[mid]];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static const char *str_or(json_t *o, const char *k, const char *dflt)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s != NULL ? s : dflt;
}

static void sleep_us(long us)
{
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

static uint64_t status_height(void)
{
    json_t *s = call("status", NULL);
    if (s == NULL)
        return 0;
    uint64_t h = strtoull(str_or(s, "latest_height", "0"), NULL, 10);
    json_decref(s);
    return h;
}

static uint64_t start_height;
static int cmp_double(const void *a, const void *b);

/* follower f polls its node for new blocks and stamps when each transaction appears there.
 * Follower 0 also counts the blocks and ends the run: when all transactions committed, or
 * nothing new came for 20 s after the last send. The others stop with it. */
static void *follower(void *arg)
{
    size_t f = (size_t)(uintptr_t)arg;
    t_url = follow_urls[f];
    uint64_t seen = start_height;
    size_t mine = 0;
    double idle_since = -1;
    double stop_seen = -1;
    while (mine < ntx) {
        uint64_t h = status_height();
        double t = now_s();
        /* The others keep following for 5 s after follower 0 is done: their node may be a
         * block or two behind. */
        if (f > 0 && atomic_load(&followers_stop)) {
            if (stop_seen < 0)
                stop_seen = t;
            else if (t - stop_seen > 5)
                break;
        }
        if (h <= seen) {
            if (atomic_load(&sending_done) && f == 0) {
                if (idle_since < 0)
                    idle_since = t;
                else if (t - idle_since > 20)
                    break; /* nothing new for 20 s after the last send: give up */
            }
            sleep_us(2000);
            continue;
        }
        idle_since = -1;
        for (uint64_t k = seen + 1; k <= h; k++) {
            json_t *p = json_object();
            char hs[24];
            snprintf(hs, sizeof hs, "%llu", (unsigned long long)k);
            json_object_set_new(p, "height", json_string(hs));
            json_t *b = call("block", p);
            if (b == NULL) {
                h = k - 1; /* not readable yet: retry from here next round */
                break;
            }
            json_t *arr = json_object_get(b, "txs");
            if (f == 0) {
                block_count++;
                block_txs_total += json_array_size(arr);
            }
            for (size_t i = 0; i < json_array_size(arr); i++) {
                pbft_digest d;
                if (keys_hex_decode(json_string_value(json_array_get(arr, i)), d.b, 32) != 0)
                    continue;
                struct txrec *r = find(&d);
                if (r == NULL || fcommit[f][r - txs] != 0)
                    continue;
                fcommit[f][r - txs] = t;
                mine++;
                if (f == 0) {
                    r->commit = t;
                    atomic_fetch_add(&committed, 1);
                }
            }
            json_decref(b);
        }
        seen = h;
    }
    if (f == 0)
        atomic_store(&followers_stop, 1);
    return NULL;
}

/* count_receipts asks follower 0's node for the receipt of every committed transaction, in
 * batches of `tx` calls, after the timed part: a commit is not a success (a transfer that
 * reached the primary after its successor fails bad_nonce, docs/security.md finding 16).
 * A receipt that cannot be read counts as neither. */
static void count_receipts(size_t *ok, size_t *failed)
{
    enum { PER = 100 }; /* rpc.max_batch's default */
    t_url = follow_urls[0];
    *ok = *failed = 0;
    for (size_t i = 0; i < ntx;) {
        json_t *req = json_array();
        size_t k = 0;
        for (; i < ntx && k < PER; i++) {
            if (txs[i].commit == 0)
                continue;
            char hex[65];
            keys_hex_encode(txs[i].h.b, 32, hex);
            json_t *c = json_pack("{s:s, s:I, s:s, s:{s:s}}", "jsonrpc", "2.0", "id", (json_int_t)k,
                                  "method", "tx", "params", "hash", hex);
            json_array_append_new(req, c);
            k++;
        }
        if (k == 0) {
            json_decref(req);
            break;
        }
        char *b = json_dumps(req, JSON_COMPACT);
        json_decref(req);
        char *r = post(b, strlen(b));
        free(b);
        json_t *j = r != NULL ? json_loads(r, 0, NULL) : NULL;
        free(r);
        for (size_t a = 0; a < json_array_size(j); a++) {
            json_t *res = json_object_get(json_array_get(j, a), "result");
            json_t *code = json_object_get(res, "code");
            if (!json_is_integer(code))
                continue;
            if (json_integer_value(code) == 0) {
                (*ok)++;
            } else {
                if (*failed < 5) /* a sample, for whoever reads load.err */
                    fprintf(stderr, "pbft-load: receipt %s: code %lld (%s) at height %s\n",
                            str_or(res, "hash", "?"), (long long)json_integer_value(code),
                            str_or(res, "result", "?"), str_or(res, "height", "?"));
                (*failed)++;
            }
        }
        json_decref(j);
    }
}

/* write_commits writes one line per (followed node, committed transaction): when that node
 * was seen to commit it (Unix ms) and its submit-to-commit latency. */
static void write_commits(const char *path, double t0_unix_ms)
{
    FILE *o = fopen(path, "w");
    if (o == NULL)
        die("cannot write --commits");
    fprintf(o, "node,commit_unix_ms,latency_ms\n");
    for (size_t f = 0; f < nfollow; f++)
        for (size_t i = 0; i < ntx; i++)
            if (fcommit[f][i] != 0)
                fprintf(o, "%d,%.0f,%.1f\n", follow_id[f], t0_unix_ms + fcommit[f][i] * 1000,
                        (fcommit[f][i] - txs[i].sent) * 1000);
    fclose(o);
}

/* write_series writes, for every followed node and every second since the start, the
 * transactions it committed in that second and their submit-to-commit latency. */
static void write_series(const char *path, double t0_unix_ms)
{
    FILE *o = fopen(path, "w");
    if (o == NULL)
        die("cannot write --series");
    fprintf(o, "second,unix_ms,node,txs,lat_mean_ms,lat_p99_ms\n");
    double last = 0;
    for (size_t f = 0; f < nfollow; f++)
        for (size_t i = 0; i < ntx; i++)
            if (fcommit[f][i] > last)
                last = fcommit[f][i];
    for (size_t f = 0; f < nfollow; f++)
        for (long sec = 0; sec <= (long)last; sec++) {
            double *l = malloc((ntx ? ntx : 1) * sizeof *l);
            size_t k = 0;
            double sum = 0;
            for (size_t i = 0; i < ntx; i++) {
                double c = fcommit[f][i];
                if (c != 0 && (long)c == sec) {
                    l[k] = (c - txs[i].sent) * 1000;
                    sum += l[k++];
                }
            }
            qsort(l, k, sizeof *l, cmp_double);
            fprintf(o, "%ld,%.0f,%d,%zu,", sec, t0_unix_ms + (double)sec * 1000, follow_id[f], k);
            if (k > 0)
                fprintf(o, "%.1f,%.1f\n", sum / (double)k, l[(k * 99) / 100]);
            else
                fprintf(o, ",\n");
            free(l);
        }
    fclose(o);
}

struct sender {
    size_t id;         /* sends the bodies it owns, in order */
    double per_body_s; /* pacing, when rate-limited */
};

static size_t *owner_of; /* body -> sender thread */

static void *sender_main(void *arg)
{
    struct sender *s = arg;
    if (nsend_urls > 0)
        t_url = send_urls[s->id % nsend_urls];
    double next = now_s();
    for (size_t b = 0; b < nbodies; b++) {
        if (owner_of[b] != s->id)
            continue;
        if (s->per_body_s > 0) {
            double t = now_s();
            if (next > t)
                sleep_us((long)((next - t) * 1e6));
            next += s->per_body_s;
        }
        double t = now_s();
        for (size_t i = body_first[b]; i < body_first[b] + body_count[b]; i++)
            txs[i].sent = t;
        char *r = post(bodies[b], strlen(bodies[b]));
        if (ingest && r != NULL) {
            /* count the answers: one object, or an array of them */
            json_t *j = json_loads(r, 0, NULL);
            size_t n = json_is_array(j) ? json_array_size(j) : 1;
            for (size_t i = 0; i < n; i++) {
                json_t *o = json_is_array(j) ? json_array_get(j, i) : j;
                if (json_object_get(o, "result") != NULL)
                    atomic_fetch_add(&accepted, 1);
                else
                    atomic_fetch_add(&refused, 1);
            }
            json_decref(j);
        } else if (ingest) {
            atomic_fetch_add(&refused, body_count[b]);
        }
        free(r);
    }
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double verify_rate(void)
{
    uint8_t pk[32], sk[64], sig[64], msg[72] = {1};
    keys_generate(pk, sk);
    keys_sign(sk, msg, sizeof msg, sig);
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    size_t n = 0;
    double el;
    do {
        for (int i = 0; i < 200; i++)
            n += keys_verify(pk, msg, sizeof msg, sig);
        clock_gettime(CLOCK_MONOTONIC, &b);
        el = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
    } while (el < 1.0);
    return (double)n / el;
}

/* split_urls splits a comma-separated list into out[0..MAX_URLS); returns the count. */
static size_t split_urls(const char *v, char **out)
{
    size_t k = 0;
    char *copy = strdup(v);
    for (char *save = NULL, *u = strtok_r(copy, ",", &save); u != NULL && k < MAX_URLS;
         u = strtok_r(NULL, ",", &save))
        out[k++] = strdup(u);
    free(copy);
    if (k == 0)
        die("an empty URL list");
    return k;
}

int main(int argc, char **argv)
{
    const char *net = NULL, *series = NULL, *commits_out = NULL;
    size_t want = 20000, batch = 100, nacc = 64, nthreads = 4, n = 4;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--help") == 0) {
            puts("usage: pbft-load --net DIR [--rpc URL[,URL...]] [--txs N] [--accounts A]\n"
                 "                 [--batch B] [--threads T] [--rate TX_PER_S] [--n REPLICAS]\n"
                 "                 [--ingest 1] [--follow URL[,URL...]] [--series FILE]\n"
                 "                 [--commits FILE]\n"
                 "Sends N pre-signed transfers from DIR/accounts/account{0..A-1}.json to URL in\n"
                 "JSON-RPC batches of B broadcast_tx_async calls from T threads, follows the\n"
                 "blocks, and prints one JSON line with throughput and latency. After the\n"
                 "timed part it reads every committed transaction's receipt from the first\n"
                 "followed node: receipts_ok and receipts_failed (a commit is not a success).\n"
                 "Exits 1 if some transaction did not commit.\n"
                 "--ingest 1: measure only how fast the node accepts them (no commits).\n"
                 "--rpc with several URLs: sender thread t sends to URL t mod count.\n"
                 "--follow: follow each of these nodes' blocks (default: the first --rpc URL);\n"
                 "the first one decides when the run ends and gives the printed figures.\n"
                 "--series FILE: per second and followed node, a CSV line\n"
                 "second,unix_ms,node,txs,lat_mean_ms,lat_p99_ms.\n"
                 "--commits FILE: one line per followed node and committed transaction:\n"
                 "node,commit_unix_ms,latency_ms (scripts/viewchange.sh buckets them).");
            return 0;
        }
        if (v == NULL)
            die("option needs a value (try --help)");
        if (strcmp(a, "--net") == 0)
            net = v;
        else if (strcmp(a, "--rpc") == 0)
            nsend_urls = split_urls(v, send_urls);
        else if (strcmp(a, "--follow") == 0)
            nfollow = split_urls(v, follow_urls);
        else if (strcmp(a, "--series") == 0)
            series = v;
        else if (strcmp(a, "--commits") == 0)
            commits_out = v;
        else if (strcmp(a, "--txs") == 0)
            want = strtoul(v, NULL, 10);
        else if (strcmp(a, "--accounts") == 0)
            nacc = strtoul(v, NULL, 10);
        else if (strcmp(a, "--batch") == 0)
            batch = strtoul(v, NULL, 10);
        else if (strcmp(a, "--threads") == 0)
            nthreads = strtoul(v, NULL, 10);
        else if (strcmp(a, "--rate") == 0)
            rate = strtod(v, NULL);
        else if (strcmp(a, "--n") == 0)
            n = strtoul(v, NULL, 10);
        else if (strcmp(a, "--ingest") == 0)
            ingest = atoi(v);
        else
            die("unknown option (try --help)");
        i++;
    }
    if (net == NULL || nacc == 0 || nacc > MAX_ACCOUNTS || batch == 0 || nthreads == 0 ||
        nthreads > MAX_THREADS || want == 0)
        die("bad options (try --help)");
    if (keys_init() != 0)
        die("libsodium");
    if (nsend_urls > 0)
        rpc_url = send_urls[0];
    if (nfollow == 0) {
        follow_urls[0] = (char *)rpc_url;
        nfollow = 1;
    }
    for (size_t f = 0; f < nfollow; f++) {
        t_url = follow_urls[f];
        json_t *fs = call("status", NULL);
        follow_id[f] = fs != NULL ? (int)json_integer_value(json_object_get(fs, "node_id")) : -1;
        json_decref(fs);
    }
    t_url = NULL;
    double vps = verify_rate();

    json_t *st = call("status", NULL);
    if (st == NULL)
        die("the node does not answer");
    uint8_t chain[32];
    const char *cid = json_string_value(json_object_get(st, "chain_id"));
    keys_sha256((const uint8_t *)cid, strlen(cid), chain);
    json_decref(st);
    start_height = status_height();

    /* Pre-sign. Thread t owns the accounts j with j % T == t and sends only their
     * transactions, in nonce order, one body after the other: so every account's nonces
     * reach the primary in order (the ledger refuses a nonce gap). */
    if (nthreads > nacc)
        nthreads = nacc;
    size_t per_acc = (want + nacc - 1) / nacc;
    ntx = per_acc * nacc;
    txs = calloc(ntx, sizeof *txs);
    char **hex = calloc(ntx, sizeof *hex);
    size_t *thread_start = calloc(nthreads + 1, sizeof *thread_start);
    uint8_t to[32] = {0x42};
    uint8_t(*sks)[64] = calloc(nacc, 64);
    uint64_t *nonces = calloc(nacc, sizeof *nonces);
    for (size_t j = 0; j < nacc; j++) {
        char path[4096], err[256];
        uint8_t pk[32];
        snprintf(path, sizeof path, "%s/accounts/account%zu.json", net, j);
        if (keys_file_read(path, pk, sks[j], err, sizeof err) != 0)
            die(err);
        char pkh[65];
        keys_hex_encode(pk, 32, pkh);
        json_t *p = json_object();
        json_object_set_new(p, "public_key", json_string(pkh));
        json_t *acc = call("account", p);
        nonces[j] = strtoull(str_or(acc, "nonce", "0"), NULL, 10);
        json_decref(acc);
    }
    size_t idx = 0;
    for (size_t t = 0; t < nthreads; t++) {
        thread_start[t] = idx;
        for (size_t k = 0; k < per_acc; k++)
            for (size_t j = t; j < nacc; j += nthreads) {
                uint8_t tx[256];
                size_t len;
                pbft_tx_encode_transfer(chain, sks[j], nonces[j] + k, to, 1, tx, sizeof tx, &len);
                pbft_tx_hash(tx, len, &txs[idx].h);
                hex[idx] = malloc(2 * len + 1);
                keys_hex_encode(tx, len, hex[idx]);
                idx++;
            }
    }
    thread_start[nthreads] = idx;
    free(sks);
    free(nonces);
    /* Bodies never straddle two threads' ranges. */
    nbodies = 0;
    for (size_t t = 0; t < nthreads; t++)
        nbodies += (thread_start[t + 1] - thread_start[t] + batch - 1) / batch;
    bodies = calloc(nbodies, sizeof *bodies);
    body_first = calloc(nbodies, sizeof *body_first);
    body_count = calloc(nbodies, sizeof *body_count);
    size_t *body_owner = calloc(nbodies, sizeof *body_owner);
    size_t b = 0;
    for (size_t t = 0; t < nthreads; t++)
        for (size_t i = thread_start[t]; i < thread_start[t + 1]; i += batch, b++) {
            body_first[b] = i;
            body_count[b] = i + batch <= thread_start[t + 1] ? batch : thread_start[t + 1] - i;
            body_owner[b] = t;
            size_t cap = body_count[b] * 700 + 16, off = 0;
            char *s = malloc(cap);
            if (batch > 1)
                s[off++] = '[';
            for (size_t q = 0; q < body_count[b]; q++)
                off += (size_t)snprintf(s + off, cap - off,
                                        "%s{\"jsonrpc\":\"2.0\",\"id\":%zu,\"method\":"
                                        "\"broadcast_tx_async\",\"params\":{\"tx\":\"%s\"}}",
                                        q ? "," : "", i + q, hex[i + q]);
            if (batch > 1)
                s[off++] = ']';
            s[off] = 0;
            bodies[b] = s;
        }
    for (size_t i = 0; i < ntx; i++)
        free(hex[i]);
    free(hex);
    by_hash = malloc(ntx * sizeof *by_hash);
    for (size_t i = 0; i < ntx; i++)
        by_hash[i] = i;
    qsort(by_hash, ntx, sizeof *by_hash, cmp_hash);
    owner_of = body_owner;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (ingest) {
        /* Acceptance only: every body sent and answered, no commits followed. */
        pthread_t th[MAX_THREADS];
        struct sender sd[MAX_THREADS];
        for (size_t t = 0; t < nthreads; t++) {
            sd[t].id = t;
            sd[t].per_body_s = 0;
            pthread_create(&th[t], NULL, sender_main, &sd[t]);
        }
        for (size_t t = 0; t < nthreads; t++)
            pthread_join(th[t], NULL);
        double el = now_s();
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        printf("{\"bench\":\"ingest\",\"batch\":%zu,\"threads\":%zu,\"requests\":%zu,"
               "\"txs\":%zu,\"accepted\":%zu,\"refused\":%zu,\"seconds\":%.3f,"
               "\"requests_per_s\":%.1f,\"tx_per_s\":%.1f,\"verify_per_s_per_core\":%.0f,"
               "\"cores\":%ld}\n",
               batch, nthreads, nbodies, ntx, atomic_load(&accepted), atomic_load(&refused), el,
               (double)nbodies / el, (double)atomic_load(&accepted) / el, vps, cores);
        return atomic_load(&refused) == 0 ? 0 : 1;
    }
    struct timespec wall;
    clock_gettime(CLOCK_REALTIME, &wall);
    double t0_unix_ms = (double)wall.tv_sec * 1000 + (double)wall.tv_nsec / 1e6;
    pthread_t fol[MAX_URLS];
    for (size_t f = 0; f < nfollow; f++) {
        fcommit[f] = calloc(ntx, sizeof *fcommit[f]);
        pthread_create(&fol[f], NULL, follower, (void *)(uintptr_t)f);
    }
    pthread_t th[MAX_THREADS];
    struct sender sd[MAX_THREADS];
    for (size_t t = 0; t < nthreads; t++) {
        sd[t].id = t;
        sd[t].per_body_s = rate > 0 ? (double)batch * (double)nthreads / rate : 0;
        pthread_create(&th[t], NULL, sender_main, &sd[t]);
    }
    for (size_t t = 0; t < nthreads; t++)
        pthread_join(th[t], NULL);
    double send_end = now_s();
    atomic_store(&sending_done, 1);
    for (size_t f = 0; f < nfollow; f++)
        pthread_join(fol[f], NULL);
    if (series != NULL)
        write_series(series, t0_unix_ms);
    if (commits_out != NULL)
        write_commits(commits_out, t0_unix_ms);

    size_t done = atomic_load(&committed);
    double *lat = malloc((done ? done : 1) * sizeof *lat);
    size_t k = 0;
    double first = 1e18, last = 0;
    for (size_t i = 0; i < ntx; i++) {
        if (txs[i].commit == 0)
            continue;
        lat[k++] = (txs[i].commit - txs[i].sent) * 1000;
        if (txs[i].sent < first)
            first = txs[i].sent;
        if (txs[i].commit > last)
            last = txs[i].commit;
    }
    qsort(lat, k, sizeof *lat, cmp_double);
    double span = last > first ? last - first : 1e-9;
    double tps = (double)k / span;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    double ceiling = vps * (double)cores / (double)n;
    size_t rok = 0, rfailed = 0;
    count_receipts(&rok, &rfailed);
    printf("{\"bench\":\"load\",\"n\":%zu,\"submitted\":%zu,\"committed\":%zu,"
           "\"receipts_ok\":%zu,\"receipts_failed\":%zu,\"committed_tx_per_s\":%.1f,\"p50_ms\":%."
           "1f,\"p99_ms\":%.1f,\"block_txs\":%.1f,"
           "\"blocks\":%zu,\"send_s\":%.2f,\"rate_limit\":%.0f,\"verify_per_s_per_core\":%.0f,"
           "\"cores\":%ld,\"ceiling_tx_per_s\":%.1f,\"efficiency\":%.3f}\n",
           n, ntx, k, rok, rfailed, tps, k ? lat[k / 2] : 0, k ? lat[(k * 99) / 100] : 0,
           block_count ? (double)block_txs_total / (double)block_count : 0, block_count, send_end,
           rate, vps, cores, ceiling, tps / ceiling);
    return k == ntx ? 0 : 1;
}
