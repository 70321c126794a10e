/*
 * test_store.c - unit tests for storage/store.c: column families, atomic synced batches,
 * crash recovery (a forked writer killed with SIGKILL), and rejection of corrupt values.
 *
 * Every database lives under a fresh mkdtemp directory in $PBFT_TEST_TMPDIR (or /tmp) that
 * the group teardown removes. Corrupt values are planted with the RocksDB C API directly,
 * using the layout documented at the top of store.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <rocksdb/c.h>

#include "storage/store.h"

/* ---- fixture ----------------------------------------------------------------------------- */

static char tmpdir[PATH_MAX];
static uint8_t CHAIN_A[32];
static uint8_t CHAIN_B[32];

/* rm_tree removes path and everything below it (RocksDB directories are flat, but be
 * general). */
static int rm_tree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0) {
        return errno == ENOENT ? 0 : -1;
    }
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        if (d == NULL) {
            return -1;
        }
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) {
                continue;
            }
            char p[PATH_MAX];
            int n = snprintf(p, sizeof p, "%s/%s", path, e->d_name);
            if (n < 0 || (size_t)n >= sizeof p || rm_tree(p) != 0) {
                (void)closedir(d);
                return -1;
            }
        }
        (void)closedir(d);
        return rmdir(path);
    }
    return unlink(path);
}

/* Group setup: a fresh directory for all databases, and two distinct chain digests. */
static int group_setup(void **state)
{
    (void)state;
    const char *base = getenv("PBFT_TEST_TMPDIR");
    if (base == NULL || base[0] == '\0') {
        base = "/tmp";
    }
    int n = snprintf(tmpdir, sizeof tmpdir, "%s/test_store.XXXXXX", base);
    if (n < 0 || (size_t)n >= sizeof tmpdir || mkdtemp(tmpdir) == NULL) {
        perror("test_store: mkdtemp");
        return -1;
    }
    memset(CHAIN_A, 0xA1, sizeof CHAIN_A);
    memset(CHAIN_B, 0xA1, sizeof CHAIN_B);
    CHAIN_B[31] = 0xB2; /* differs in the last byte only */
    return 0;
}

/* Group teardown: remove every database the tests left, then the directory itself. */
static int group_teardown(void **state)
{
    (void)state;
    return rm_tree(tmpdir);
}

/* db_path builds tmpdir/name into out. */
static void db_path(char *out, size_t cap, const char *name)
{
    int n = snprintf(out, cap, "%s/%s", tmpdir, name);
    assert_true(n > 0 && (size_t)n < cap);
}

/* open_ok opens path for chain A, failing the test with the message otherwise. */
static store *open_ok(const char *path)
{
    store *s = NULL;
    char err[512] = "";
    int rc = store_open(path, CHAIN_A, &s, err, sizeof err);
    if (rc != STORE_OK) {
        fail_msg("store_open(%s): %s: %s", path, store_strerror(rc), err);
    }
    assert_non_null(s);
    return s;
}

/* write_ok writes b to s, failing the test with the message otherwise. */
static void write_ok(store *s, store_batch *b, bool sync)
{
    char err[512] = "";
    int rc = store_write(s, b, sync, err, sizeof err);
    if (rc != STORE_OK) {
        fail_msg("store_write: %s: %s", store_strerror(rc), err);
    }
}

/* ---- raw RocksDB access, to plant values store.c would never write ------------------------ */

enum { RAW_DEFAULT, RAW_CONSENSUS, RAW_BLOCKS, RAW_CERTS, RAW_HASHES, RAW_TXINDEX, RAW_STATE };
#define RAW_NCF 7
static const char *const raw_cf_names[RAW_NCF] = {"default", "consensus", "blocks", "certs",
                                                  "hashes",  "txindex",   "state"};

typedef struct {
    rocksdb_t *db;
    rocksdb_column_family_handle_t *cf[RAW_NCF];
    rocksdb_options_t *opts;
    rocksdb_writeoptions_t *wo;
    rocksdb_readoptions_t *ro;
} raw_db;

static void raw_open(raw_db *r, const char *path)
{
    memset(r, 0, sizeof *r);
    r->opts = rocksdb_options_create();
    r->wo = rocksdb_writeoptions_create();
    r->ro = rocksdb_readoptions_create();
    const rocksdb_options_t *cfo[RAW_NCF];
    for (int i = 0; i < RAW_NCF; i++) {
        cfo[i] = r->opts;
    }
    char *e = NULL;
    r->db = rocksdb_open_column_families(r->opts, path, RAW_NCF, raw_cf_names, cfo, r->cf, &e);
    if (e != NULL) {
        fail_msg("raw open %s: %s", path, e);
    }
}

static void raw_put(raw_db *r, int cf, const void *k, size_t kn, const void *v, size_t vn)
{
    char *e = NULL;
    rocksdb_put_cf(r->db, r->wo, r->cf[cf], k, kn, v, vn, &e);
    if (e != NULL) {
        fail_msg("raw put: %s", e);
    }
}

static void raw_del(raw_db *r, int cf, const void *k, size_t kn)
{
    char *e = NULL;
    rocksdb_delete_cf(r->db, r->wo, r->cf[cf], k, kn, &e);
    if (e != NULL) {
        fail_msg("raw delete: %s", e);
    }
}

/* raw_last_key returns the largest key of a CF into out (up to cap bytes) and its length, or
 * 0 for an empty CF. */
static size_t raw_last_key(raw_db *r, int cf, uint8_t *out, size_t cap)
{
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(r->db, r->ro, r->cf[cf]);
    rocksdb_iter_seek_to_last(it);
    size_t kn = 0;
    if (rocksdb_iter_valid(it)) {
        const char *k = rocksdb_iter_key(it, &kn);
        assert_true(kn <= cap);
        memcpy(out, k, kn);
    }
    rocksdb_iter_destroy(it);
    return kn;
}

static void raw_close(raw_db *r)
{
    for (int i = 0; i < RAW_NCF; i++) {
        rocksdb_column_family_handle_destroy(r->cf[i]);
    }
    rocksdb_close(r->db);
    rocksdb_readoptions_destroy(r->ro);
    rocksdb_writeoptions_destroy(r->wo);
    rocksdb_options_destroy(r->opts);
}

/* ---- deterministic test data ------------------------------------------------------------- */

static void be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

static void be32(uint8_t *p, uint32_t v)
{
    for (int i = 3; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

/* fill writes a pattern that depends on (h, salt) and the position. */
static void fill(uint8_t *p, size_t n, uint64_t h, unsigned salt)
{
    for (size_t i = 0; i < n; i++) {
        p[i] = (uint8_t)(h * 131u + i * 7u + salt * 29u);
    }
}

#define GEN_BLOCK_MAX 16384
#define GEN_CERT_N 3
#define GEN_CERT_MAX (GEN_CERT_N * (4 + 64))

/* A block at height h with its certificate; every byte is a function of h. */
typedef struct {
    store_block blk;
    uint8_t block[GEN_BLOCK_MAX];
    uint8_t cert[GEN_CERT_MAX];
} gen_block;

static void gen_block_make(uint64_t h, gen_block *g)
{
    memset(&g->blk, 0, sizeof g->blk);
    g->blk.height = h;
    g->blk.view = h / 3;
    fill(g->blk.digest.b, 32, h, 1);
    be64(g->blk.digest.b, h); /* unique per height, for the hashes CF */
    fill(g->blk.chain.b, 32, h, 2);
    fill(g->blk.app_hash, 32, h, 3);
    size_t bn = 64 + (size_t)((h * 7919u) % (GEN_BLOCK_MAX - 64));
    fill(g->block, bn, h, 4);
    g->blk.block.p = g->block;
    g->blk.block.n = bn;
    size_t off = 0;
    for (unsigned i = 0; i < GEN_CERT_N; i++) {
        uint32_t len = 10 + (uint32_t)((h + i) % 50);
        be32(g->cert + off, len);
        fill(g->cert + off + 4, len, h, 10 + i);
        off += 4 + len;
    }
    g->blk.cert.count = GEN_CERT_N;
    g->blk.cert.region.p = g->cert;
    g->blk.cert.region.n = off;
}

/* tx_hash_of names transaction i of block h. */
static void tx_hash_of(uint64_t h, uint32_t i, pbft_digest *d)
{
    fill(d->b, 32, h, 50 + i);
    d->b[0] = 0x54;
    be64(d->b + 1, h);
    be32(d->b + 9, i);
}

/* block_matches reads block h back and compares every field with gen_block_make(h). Returns
 * the store_get_block code, or -1 on a mismatch. Usable in the forked children too. */
static int block_matches(store *s, uint64_t h)
{
    static gen_block g;
    gen_block_make(h, &g);
    store_block_read r;
    int rc = store_get_block(s, h, &r);
    if (rc != STORE_OK) {
        return rc;
    }
    bool ok = r.height == h && r.view == g.blk.view &&
              memcmp(r.digest.b, g.blk.digest.b, 32) == 0 &&
              memcmp(r.chain.b, g.blk.chain.b, 32) == 0 &&
              memcmp(r.app_hash, g.blk.app_hash, 32) == 0 && r.block_n == g.blk.block.n &&
              memcmp(r.block, g.block, r.block_n) == 0 && r.cert_count == g.blk.cert.count &&
              r.cert_n == g.blk.cert.region.n && memcmp(r.cert, g.cert, r.cert_n) == 0;
    store_block_read_free(&r);
    return ok ? STORE_OK : -1;
}

/* add_height fills b with everything "executing" block h produces: the block, its
 * certificate and head, two tx index entries, a per-height state key and the "last" key. */
static void add_height(store_batch *b, uint64_t h)
{
    static gen_block g;
    gen_block_make(h, &g);
    store_batch_block(b, &g.blk);
    for (uint32_t i = 0; i < 2; i++) {
        pbft_digest t;
        tx_hash_of(h, i, &t);
        store_batch_tx(b, &t, h, i, (uint8_t)(i + 1));
    }
    char k[32];
    int kn = snprintf(k, sizeof k, "h/%llu", (unsigned long long)h);
    uint8_t hv[8];
    be64(hv, h);
    store_batch_state_put(b, (const uint8_t *)k, (size_t)kn, hv, sizeof hv);
    store_batch_state_put(b, (const uint8_t *)"last", 4, hv, sizeof hv);
}

/* height_present checks, through the store, every effect of add_height(h). Returns true
 * only if all are there and intact. */
static bool height_present(store *s, uint64_t h)
{
    if (block_matches(s, h) != STORE_OK) {
        return false;
    }
    static gen_block g;
    gen_block_make(h, &g);
    uint64_t got = 0;
    if (store_get_height_by_digest(s, &g.blk.digest, &got) != STORE_OK || got != h) {
        return false;
    }
    for (uint32_t i = 0; i < 2; i++) {
        pbft_digest t;
        tx_hash_of(h, i, &t);
        uint64_t th = 0;
        uint32_t ti = 0;
        uint8_t code = 0;
        if (store_get_tx(s, &t, &th, &ti, &code) != STORE_OK || th != h || ti != i ||
            code != i + 1) {
            return false;
        }
    }
    char k[32];
    int kn = snprintf(k, sizeof k, "h/%llu", (unsigned long long)h);
    uint8_t *v = NULL;
    size_t vn = 0;
    if (store_state_get(s, (const uint8_t *)k, (size_t)kn, &v, &vn) != STORE_OK) {
        return false;
    }
    uint8_t want[8];
    be64(want, h);
    bool ok = vn == 8 && memcmp(v, want, 8) == 0;
    free(v);
    return ok;
}

/* height_absent checks that no effect of add_height(h) is visible. */
static bool height_absent(store *s, uint64_t h)
{
    store_block_read r;
    if (store_get_block(s, h, &r) != STORE_E_NOTFOUND) {
        return false;
    }
    static gen_block g;
    gen_block_make(h, &g);
    uint64_t got;
    if (store_get_height_by_digest(s, &g.blk.digest, &got) != STORE_E_NOTFOUND) {
        return false;
    }
    pbft_digest t;
    tx_hash_of(h, 0, &t);
    if (store_get_tx(s, &t, NULL, NULL, NULL) != STORE_E_NOTFOUND) {
        return false;
    }
    char k[32];
    int kn = snprintf(k, sizeof k, "h/%llu", (unsigned long long)h);
    uint8_t *v = NULL;
    size_t vn = 0;
    return store_state_get(s, (const uint8_t *)k, (size_t)kn, &v, &vn) == STORE_E_NOTFOUND;
}

/* rec_key builds a consensus record key: kind, seq, view, type, sender. */
static void rec_key(uint8_t key[PBFT_REC_KEY_BYTES], uint8_t kind, uint64_t seq, uint64_t view,
                    uint8_t type, uint16_t sender)
{
    key[0] = kind;
    be64(key + 1, seq);
    be64(key + 9, view);
    key[17] = type;
    key[18] = (uint8_t)(sender >> 8);
    key[19] = (uint8_t)sender;
}

static void persist_put(store_batch *b, const uint8_t key[PBFT_REC_KEY_BYTES], const char *val)
{
    pbft_persist p = {.op = PBFT_PERSIST_PUT};
    memcpy(p.key, key, PBFT_REC_KEY_BYTES);
    p.value.p = (const uint8_t *)val;
    p.value.n = strlen(val);
    store_batch_persist(b, &p);
}

static void persist_del_below(store_batch *b, uint8_t kind, uint64_t seq)
{
    pbft_persist p = {.op = PBFT_PERSIST_DEL_BELOW};
    /* Non-zero view, type and sender: only kind and seq may matter. */
    rec_key(p.key, kind, seq, 0x0102030405060708u, 0x5A, 0xBEEF);
    store_batch_persist(b, &p);
}

/* Records collected by store_each_record. */
#define MAX_RECS 64
typedef struct {
    uint8_t key[MAX_RECS][PBFT_REC_KEY_BYTES];
    char val[MAX_RECS][32];
    size_t n;
    size_t stop_at; /* return 7 when the (stop_at)th record is seen; 0 = never */
} rec_list;

static int collect(void *ctx, const uint8_t key[PBFT_REC_KEY_BYTES], const uint8_t *value, size_t n)
{
    rec_list *l = ctx;
    if (l->n >= MAX_RECS || n >= sizeof l->val[0]) {
        return -1;
    }
    memcpy(l->key[l->n], key, PBFT_REC_KEY_BYTES);
    memcpy(l->val[l->n], value, n);
    l->val[l->n][n] = '\0';
    l->n++;
    return l->stop_at != 0 && l->n == l->stop_at ? 7 : 0;
}

/* ---- open, reopen, chain, schema --------------------------------------------------------- */

/* Data written before close is read back after reopening the same path. */
static void test_store_reopen_keeps_data(void **state)
{
    (void)state;
    char path[PATH_MAX];
    db_path(path, sizeof path, "reopen");
    store *s = open_ok(path);
    store_batch *b = store_batch_new();
    assert_non_null(b);
    store_batch_state_put(b, (const uint8_t *)"k", 1, (const uint8_t *)"value", 5);
    write_ok(s, b, true);
    store_batch_free(b);
    store_close(s);

    s = open_ok(path);
    uint8_t *v = NULL;
    size_t vn = 0;
    assert_int_equal(store_state_get(s, (const uint8_t *)"k", 1, &v, &vn), STORE_OK);
    assert_int_equal(vn, 5);
    assert_memory_equal(v, "value", 5);
    free(v);
    store_close(s);
}

/* Reopening with another chain digest fails with STORE_E_CHAIN and a message naming the
 * path; the right digest still opens it afterwards. */
static void test_store_open_wrong_chain_returns_chain(void **state)
{
    (void)state;
    char path[PATH_MAX];
    db_path(path, sizeof path, "chain");
    store_close(open_ok(path));

    store *s = (store *)&s; /* poison: must be reset to NULL */
    char err[512] = "";
    assert_int_equal(store_open(path, CHAIN_B, &s, err, sizeof err), STORE_E_CHAIN);
    assert_null(s);
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "chain"));
    store_close(open_ok(path));
}

/* A schema version other than 1 in meta is STORE_E_CORRUPT on open. */
static void test_store_open_unknown_schema_returns_corrupt(void **state)
{
    (void)state;
    char path[PATH_MAX];
    db_path(path, sizeof path, "schema");
    store_close(open_ok(path));
    raw_db r;
    raw_open(&r, path);
    raw_put(&r, RAW_DEFAULT, "schema", 6, "\x00\x00\x00\x02", 4);
    raw_close(&r);

    store *s = NULL;
    char err[512] = "";
    assert_int_equal(store_open(path, CHAIN_A, &s, err, sizeof err), STORE_E_CORRUPT);
    assert_null(s);
    assert_non_null(strstr(err, "schema version 2"));
}

/* A fresh database has no head: height 0 and all-zero hashes. */
static void test_store_head_empty_returns_zero(void **state)
{
    (void)state;
    char path[PATH_MAX];
    db_path(path, sizeof path, "emptyhead");
    store *s = open_ok(path);
    uint64_t h = 99;
    pbft_digest c;
    uint8_t a[32];
    memset(&c, 0xEE, sizeof c);
    memset(a, 0xEE, sizeof a);
    assert_int_equal(store_head(s, &h, &c, a), STORE_OK);
    assert_int_equal(h, 0);
    static const uint8_t zero[32];
    assert_memory_equal(c.b, zero, 32);
    assert_memory_equal(a, zero, 32);
    store_close(s);
}

/* ---- consensus records ------------------------------------------------------------------- */

/* Records put in shuffled order come back through store_each_record in key order. */
static void test_store_each_record_returns_key_order(void **state)
{
    (void)state;
    char path[PATH_MAX];
    db_path(path, sizeof path, "recorder");
    store *s = open_ok(path);
    store_batch *b = store_batch_new();
    assert_non_null(b);
    uint8_t k[6][PBFT_REC_KEY_BYTES]; /* ascending */
    rec_key(k[0], 1, 1, 0, 1, 0);
    rec_key(k[1], 1, 1, 0, 1, 3);
    rec_key(k[2], 1, 1, 2, 0, 0);
    rec_key(k[3], 1, 256, 0, 0, 0);
    rec_key(k[4], 2, 0, 0, 0, 0);
    rec_key(k[5], 0xFF, UINT64_MAX, UINT64_MAX, 0xFF, 0xFFFF);
    static const char *const vals[6] = {"a", "b", "c", "d", "", "f"};
    static const int order[6] = {3, 5, 0, 4, 2, 1};
    for (int i = 0; i < 6; i++) {
        persist_put(b, k[order[i]], vals[order[i]]);
    }
    assert_int_equal(store_batch_count(b), 6);
    write_ok(s, b, true);
    store_batch_free(b);
    store_close(s);

    s = open_ok(path);
    rec_list l = {0};
    assert_int_equal(store_each_record(s, collect, &l), 0);
    assert_int_equal(l.n, 6);
    for (int i = 0; i < 6; i++) {
        assert_memory_equal(l.key[i], k[i], PBFT_REC_KEY_BYTES);
        assert_string_equal(l.val[i], vals[i]);
    }
    store_close(s);
}

/* DEL_BELOW (kind, N) removes exactly that kind's records with seq <= N, whatever their view,
 * type and sender, and keeps other kinds and seq N+1; seq 0 and UINT64_MAX work at the
 * edges, including kind 0xFF. */
static void test_store_del_below_deletes_exact_range(void **state)
{
    (void)state;
    char path[PATH_MAX];
    db_path(path, sizeof path, "delbelow");
    store *s = open_ok(path);
    store_batch *b = store_batch_new();
    assert_non_null(b);
    uint8_t k[PBFT_REC_KEY_BYTES];
    for (uint8_t kind = 1; kind <= 3; kind++) {
        for (uint64_t seq = 0; seq <= 6; seq++) {
            rec_key(k, kind, seq, 0, 0, 0);
            persist_put(b, k, "x");
            rec_key(k, kind, seq, UINT64_MAX, 0xFF, 0xFFFF); /* largest key with this seq */
            persist_put(b, k, "y");
        }
    }
    rec_key(k, 0xFE, UINT64_MAX, UINT64_MAX, 0xFF, 0xFFFF);
    persist_put(b, k, "fe");
    rec_key(k, 0xFF, 0, 0, 0, 0);
    persist_put(b, k, "ff0");
    rec_key(k, 0xFF, UINT64_MAX, UINT64_MAX, 0xFF, 0xFFFF);
    persist_put(b, k, "ffmax");
    write_ok(s, b, false);

    store_batch_clear(b);
    persist_del_below(b, 2, 4);             /* kind 2: seq 0..4 go, 5 and 6 stay */
    persist_del_below(b, 3, 0);             /* kind 3: only seq 0 goes */
    persist_del_below(b, 0xFF, UINT64_MAX); /* kind 0xFF: everything goes, 0xFE stays */
    assert_int_equal(store_batch_count(b), 3);
    write_ok(s, b, true);
    store_batch_free(b);

    rec_list l = {0};
    assert_int_equal(store_each_record(s, collect, &l), 0);
    /* kind 1: 14 records; kind 2: seq 5, 6 (4); kind 3: seq 1..6 (12); kind 0xFE: 1. */
    assert_int_equal(l.n, 14 + 4 + 12 + 1);
    size_t i = 0;
    for (uint64_t seq = 0; seq <= 6; seq++, i += 2) {
        rec_key(k, 1, seq, 0, 0, 0);
        assert_memory_equal(l.key[i], k, PBFT_REC_KEY_BYTES);
    }
    for (uint64_t seq = 5; seq <= 6; seq++, i += 2) {
        rec_key(k, 2, seq, 0, 0, 0);
        assert_memory_equal(l.key[i], k, PBFT_REC_KEY_BYTES);
        rec_key(k, 2, seq, UINT64_MAX, 0xFF, 0xFFFF);
        assert_memory_equal(l.key[i + 1], k, PBFT_REC_KEY_BYTES);
    }
    for (uint64_t seq = 1; seq <= 6; seq++, i += 2) {
        rec_key(k, 3, seq, 0, 0, 0);
        assert_memory_equal(l.key[i], k, PBFT_REC_KEY_BYTES);
    }
    assert_int_equal(l.key[i][0], 0xFE);
    assert_string_equal(l.val[i], "fe");
    store_close(s);
}

/* A non-zero return from the callback stops the walk and is returned. */
static void test_store_each_record_callback_nonzero_stops(void **state)
{
    (void)state;
    char path[PATH_MAX];
    db_path(path, sizeof path, "recstop");
    store *s = open_ok(path);
    store_batch *b = store_batch_new();
    assert_non_null(b);
    uint8_t k[PBFT_REC_KEY_BYTES];
    for (uint64_t seq = 1; seq <= 5; seq++) {
        rec_key(k, 1, seq, 0, 0, 0);
        persist_put(b, k, "v");
    }
    write_ok(s, b, false);
    store_batch_free(b);
    rec_list l = {.stop_at = 3};
    assert_int_equal(store_each_record(s, collect, &l), 7);
    assert_int_equal(l.n, 3);
    store_close(s);
}

/* A persist record with an unknown op poisons the batch: store_write writes nothing and
 * reports it; after clear the batch works again. */
static void test_store_write_unknown_op_writes_nothing(void **state)
{
    (void)state;
    char path[PATH_MAX];
    db_path(path, sizeof path, "badop");
    store *s = open_ok(path);
    store_batch *b = store_batch_new();
    assert_non_null(b);
    store_batch_state_put(b, (const uint8_t *)"a", 1, (const uint8_t *)"1", 1);
    pbft_persist p = {.op = 99};
    store_batch_persist(b, &p);
    char err[256] = "";
    assert_int_equal(store_write(s, b, true, err, sizeof err), STORE_E_CORRUPT);
    assert_non_null(strstr(err, "unknown persist op 99"));
    uint8_t *v = NULL;
    size_t vn = 0;
    assert_int_equal(store_state_get(s, (const uint8_t *)"a", 1, &v, &vn), STORE_E_NOTFOUND);
    assert_null(v);

    store_batch_clear(b);
    assert_int_equal(store_batch_count(b), 0);
    store_batch_state_put(b, (const uint8_t *)"a", 1, (const uint8_t *)"1", 1);
    write_ok(s, b, true);
    assert_int_equal(store_state_get(s, (const uint8_t *)"a", 1, &v, &vn), STORE_OK);
    free(v);
    store_batch_free(b);
    store_close(s);
}

/* A batch whose first operation fails holds no operation, yet is poisoned: it says so
 * (store_batch_failed, which node.c's flush checks before it sends anything), refuses later
 * operations and is refused by store_write until clear. */
static void test_store_batch_failed_first_op(void **state)
{
    (void)state;
    char path[PATH_MAX];
    db_path(path, sizeof path, "failfirst");
    store *s = open_ok(path);
    store_batch *b = store_batch_new();
    assert_non_null(b);
    assert_false(store_batch_failed(b));
    store_block blk = {.height = 1};
    blk.block.n = SIZE_MAX; /* refused by its size, before anything reads it */
    store_batch_block(b, &blk);
    assert_int_equal(store_batch_count(b), 0);
    assert_true(store_batch_failed(b));
    store_batch_state_put(b, (const uint8_t *)"a", 1, (const uint8_t *)"1", 1);
    assert_int_equal(store_batch_count(b), 0);
    char err[256] = "";
    assert_int_equal(store_write(s, b, true, err, sizeof err), STORE_E_NOMEM);
    assert_non_null(strstr(err, "too large"));
    store_batch_clear(b);
    assert_false(store_batch_failed(b));
    store_batch_state_put(b, (const uint8_t *)"a", 1, (const uint8_t *)"1", 1);
    write_ok(s, b, true);
    store_batch_free(b);
    store_close(s);
}

/* ---- blocks, certificates, tx index, state ----------------------------------------------- */

/* A block with its certificate, tx index entries and state changes written in one batch is
 * readable after reopen: head, block by height and by digest, tx entries, state; absent keys
 * are STORE_E_NOTFOUND. */
static void test_store_block_batch_readable_after_reopen(void **state)
{
    (void)state;
    char path[PATH_MAX];
    db_path(path, sizeof path, "block");
    store *s = open_ok(path);
    store_batch *b = store_batch_new();
    assert_non_null(b);
    store_batch_state_put(b, (const uint8_t *)"gone", 4, (const uint8_t *)"x", 1);
    write_ok(s, b, false);
    store_batch_clear(b);

    add_height(b, 1);
    store_batch_state_put(b, (const uint8_t *)"empty", 5, NULL, 0);
    store_batch_state_del(b, (const uint8_t *)"gone", 4);
    assert_int_equal(store_batch_count(b), 1 + 2 + 2 + 2);
    write_ok(s, b, true);
    store_batch_free(b);
    store_close(s);

    s = open_ok(path);
    static gen_block g;
    gen_block_make(1, &g);
    uint64_t h = 0;
    pbft_digest c;
    uint8_t a[32];
    assert_int_equal(store_head(s, &h, &c, a), STORE_OK);
    assert_int_equal(h, 1);
    assert_memory_equal(c.b, g.blk.chain.b, 32);
    assert_memory_equal(a, g.blk.app_hash, 32);
    assert_true(height_present(s, 1));
    assert_true(height_absent(s, 2));

    uint8_t *v = (uint8_t *)&v;
    size_t vn = 42;
    assert_int_equal(store_state_get(s, (const uint8_t *)"empty", 5, &v, &vn), STORE_OK);
    assert_non_null(v);
    assert_int_equal(vn, 0);
    free(v);
    assert_int_equal(store_state_get(s, (const uint8_t *)"gone", 4, &v, &vn), STORE_E_NOTFOUND);
    assert_null(v);
    assert_int_equal(vn, 0);

    store_block_read r;
    assert_int_equal(store_get_block(s, 0, &r), STORE_E_NOTFOUND);
    assert_null(r.block);
    store_block_read_free(&r); /* zeroed by the failed call: safe */
    pbft_digest unknown;
    memset(unknown.b, 0x77, 32);
    assert_int_equal(store_get_height_by_digest(s, &unknown, &h), STORE_E_NOTFOUND);
    assert_int_equal(store_get_tx(s, &unknown, &h, NULL, NULL), STORE_E_NOTFOUND);
    store_close(s);
}

/* Several blocks in one batch: each is stored and the head is the last one added. */
static void test_store_multi_block_batch_head_is_last(void **state)
{
    (void)state;
    char path[PATH_MAX];
    db_path(path, sizeof path, "multi");
    store *s = open_ok(path);
    store_batch *b = store_batch_new();
    assert_non_null(b);
    for (uint64_t h = 1; h <= 4; h++) {
        add_height(b, h);
    }
    write_ok(s, b, true);
    store_batch_free(b);
    uint64_t head = 0;
    assert_int_equal(store_head(s, &head, NULL, NULL), STORE_OK);
    assert_int_equal(head, 4);
    for (uint64_t h = 1; h <= 4; h++) {
        assert_true(height_present(s, h));
    }
    store_close(s);
}

/* A block written again in place (node.c's repair) replaces its value and leaves the head
 * record alone; store_block_of round-trips a read block, and store_flush leaves SST files
 * that store_each_sst lists by column family. */
static void sst_count(void *ctx, const char *cf, const char *name, size_t size)
{
    if (strcmp(cf, "blocks") == 0 && name[0] == '/' && size > 0)
        (*(int *)ctx)++;
}

static void test_store_block_repair_keeps_head(void **state)
{
    (void)state;
    char path[PATH_MAX];
    db_path(path, sizeof path, "repair");
    store *s = open_ok(path);
    store_batch *b = store_batch_new();
    assert_non_null(b);
    for (uint64_t h = 1; h <= 4; h++) {
        add_height(b, h);
    }
    write_ok(s, b, true);
    store_batch_clear(b);
    store_block_read r;
    memset(&r, 0, sizeof r);
    assert_int_equal(store_get_block(s, 2, &r), STORE_OK);
    store_block w = store_block_of(&r);
    w.chain.b[0] ^= 0xff;
    store_batch_block_repair(b, &w);
    assert_int_equal(store_batch_count(b), 1);
    write_ok(s, b, true);
    store_block_read again;
    memset(&again, 0, sizeof again);
    assert_int_equal(store_get_block(s, 2, &again), STORE_OK);
    assert_int_equal(again.chain.b[0], (uint8_t)(r.chain.b[0] ^ 0xff));
    assert_int_equal(again.block_n, r.block_n);
    assert_memory_equal(again.block, r.block, r.block_n);
    assert_int_equal(again.cert_count, r.cert_count);
    uint64_t head = 0;
    assert_int_equal(store_head(s, &head, NULL, NULL), STORE_OK);
    assert_int_equal(head, 4);
    store_block_read_free(&r);
    store_block_read_free(&again);
    char err[256];
    assert_int_equal(store_flush(s, err, sizeof err), STORE_OK);
    int files = 0;
    assert_int_equal(store_each_sst(s, sst_count, &files), STORE_OK);
    assert_true(files >= 1);
    store_batch_free(b);
    store_close(s);
}

/* ---- corruption -------------------------------------------------------------------------- */

/* Values of the wrong shape in blocks, certs, hashes, txindex, meta head and consensus keys
 * are reported as STORE_E_CORRUPT, never trusted or crashed on. */
static void test_store_corrupt_values_return_corrupt(void **state)
{
    (void)state;
    char path[PATH_MAX];
    db_path(path, sizeof path, "corrupt");
    store *s = open_ok(path);
    store_batch *b = store_batch_new();
    assert_non_null(b);
    for (uint64_t h = 1; h <= 6; h++) {
        add_height(b, h);
    }
    write_ok(s, b, true);
    store_batch_free(b);
    store_close(s);

    raw_db r;
    raw_open(&r, path);
    uint8_t hk[8];
    be64(hk, 1);
    raw_put(&r, RAW_BLOCKS, hk, 8, "short", 5); /* < 104-byte header */
    be64(hk, 2);
    raw_put(&r, RAW_CERTS, hk, 8, "\x01", 1); /* < 2-byte count */
    be64(hk, 3);
    /* count 2 but only one (len 1) entry */
    raw_put(&r, RAW_CERTS, hk, 8, "\x00\x02\x00\x00\x00\x01Z", 7);
    be64(hk, 4);
    /* count 1, entry length runs past the end */
    raw_put(&r, RAW_CERTS, hk, 8, "\x00\x01\x00\x00\x01\x00Z", 7);
    be64(hk, 5);
    raw_del(&r, RAW_CERTS, hk, 8); /* block without certificate */
    static gen_block g;
    gen_block_make(6, &g);
    raw_put(&r, RAW_HASHES, g.blk.digest.b, 32, "1234567", 7);
    pbft_digest t;
    tx_hash_of(6, 0, &t);
    raw_put(&r, RAW_TXINDEX, t.b, 32, "123456789012", 12);
    raw_close(&r);

    s = open_ok(path);
    store_block_read br;
    for (uint64_t h = 1; h <= 5; h++) {
        assert_int_equal(store_get_block(s, h, &br), STORE_E_CORRUPT);
        assert_null(br.block);
        assert_null(br.cert);
    }
    assert_int_equal(block_matches(s, 6), STORE_OK);
    uint64_t got;
    assert_int_equal(store_get_height_by_digest(s, &g.blk.digest, &got), STORE_E_CORRUPT);
    assert_int_equal(store_get_tx(s, &t, &got, NULL, NULL), STORE_E_CORRUPT);
    store_close(s);

    raw_open(&r, path);
    raw_put(&r, RAW_DEFAULT, "head", 4, "\x00\x01", 2);
    uint8_t shortkey[5] = {1, 0, 0, 0, 0};
    raw_put(&r, RAW_CONSENSUS, shortkey, sizeof shortkey, "v", 1);
    raw_close(&r);
    s = open_ok(path);
    assert_int_equal(store_head(s, &got, NULL, NULL), STORE_E_CORRUPT);
    rec_list l = {0};
    assert_int_equal(store_each_record(s, collect, &l), STORE_E_CORRUPT);
    assert_int_equal(l.n, 0);
    store_close(s);
}

/* ---- crash recovery ---------------------------------------------------------------------- */

/* child_write_heights runs in a forked child: open, write heights from..to (one synced batch
 * each), telling the parent through notify_fd after the first. With kill_self, SIGKILL itself
 * right after the last store_write returns. Never returns; exit codes name the failure. */
static void child_write_heights(const char *path, uint64_t from, uint64_t to, int notify_fd,
                                bool kill_self)
{
    store *s = NULL;
    if (store_open(path, CHAIN_A, &s, NULL, 0) != STORE_OK) {
        _exit(10);
    }
    store_batch *b = store_batch_new();
    if (b == NULL) {
        _exit(11);
    }
    for (uint64_t h = from; h <= to; h++) {
        store_batch_clear(b);
        add_height(b, h);
        if (store_write(s, b, true, NULL, 0) != STORE_OK) {
            _exit(12);
        }
        if (notify_fd >= 0 && h == from) {
            if (write(notify_fd, "w", 1) != 1) {
                _exit(13);
            }
        }
    }
    if (kill_self) {
        (void)kill(getpid(), SIGKILL);
    }
    _exit(14);
}

/* wait_killed waits (at most ~20 s) for pid and asserts that SIGKILL ended it. */
static void wait_killed(pid_t pid)
{
    int status = 0;
    for (int i = 0; i < 2000; i++) {
        pid_t w = waitpid(pid, &status, WNOHANG);
        assert_true(w >= 0);
        if (w == pid) {
            if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL) {
                fail_msg("child did not die by SIGKILL: status 0x%x (exit %d)", status,
                         WIFEXITED(status) ? WEXITSTATUS(status) : -1);
            }
            return;
        }
        struct timespec ts = {0, 10 * 1000 * 1000};
        (void)nanosleep(&ts, NULL);
    }
    (void)kill(pid, SIGKILL);
    (void)waitpid(pid, &status, 0);
    fail_msg("child %d hung", (int)pid);
}

/* assert_consistent_prefix reopens path and checks the atomicity invariant: head h, every
 * height 1..h complete, nothing of h+1 and no block key above h. Returns h. */
static uint64_t assert_consistent_prefix(const char *path)
{
    store *s = open_ok(path);
    uint64_t head = 0;
    pbft_digest c;
    uint8_t a[32];
    assert_int_equal(store_head(s, &head, &c, a), STORE_OK);
    if (head > 0) {
        static gen_block g;
        gen_block_make(head, &g);
        assert_memory_equal(c.b, g.blk.chain.b, 32);
        assert_memory_equal(a, g.blk.app_hash, 32);
        uint8_t *v = NULL;
        size_t vn = 0;
        assert_int_equal(store_state_get(s, (const uint8_t *)"last", 4, &v, &vn), STORE_OK);
        uint8_t want[8];
        be64(want, head);
        assert_int_equal(vn, 8);
        assert_memory_equal(v, want, 8);
        free(v);
    }
    for (uint64_t h = 1; h <= head; h++) {
        if (!height_present(s, h)) {
            fail_msg("height %llu of %llu incomplete after crash", (unsigned long long)h,
                     (unsigned long long)head);
        }
    }
    assert_true(height_absent(s, head + 1));
    store_close(s);

    raw_db r;
    raw_open(&r, path);
    uint8_t last[16];
    size_t kn = raw_last_key(&r, RAW_BLOCKS, last, sizeof last);
    raw_close(&r);
    if (head == 0) {
        assert_int_equal(kn, 0);
    } else {
        uint8_t want[8];
        be64(want, head);
        assert_int_equal(kn, 8);
        assert_memory_equal(last, want, 8);
    }
    return head;
}

/* A child that writes K synced batches and SIGKILLs itself right after the last write
 * returns loses none of them: head is K and blocks 1..K are intact. */
static void test_store_crash_after_synced_writes_keeps_all(void **state)
{
    (void)state;
    enum { K = 40 };
    char path[PATH_MAX];
    db_path(path, sizeof path, "crash_self");
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        child_write_heights(path, 1, K, -1, true);
    }
    wait_killed(pid);
    assert_int_equal(assert_consistent_prefix(path), K);
}

/* A child SIGKILLed by the parent at a random moment while it writes synced batches leaves a
 * consistent prefix: head h >= 1 (the first write was acknowledged), every height 1..h
 * complete, nothing above h. A second run continues from h + 1 on the same database. */
static void test_store_crash_random_kill_leaves_prefix(void **state)
{
    (void)state;
    char path[PATH_MAX];
    db_path(path, sizeof path, "crash_random");
    unsigned seed = (unsigned)time(NULL) ^ ((unsigned)getpid() << 8);
    srand(seed);
    uint64_t head = 0;
    for (int round = 0; round < 3; round++) {
        int fds[2];
        assert_int_equal(pipe(fds), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            (void)close(fds[0]);
            child_write_heights(path, head + 1, UINT64_MAX - 1, fds[1], false);
        }
        (void)close(fds[1]);
        char c;
        ssize_t got = read(fds[0], &c, 1);
        (void)close(fds[0]);
        if (got != 1) {
            int status = 0;
            (void)waitpid(pid, &status, 0);
            fail_msg("seed %u: child ended before its first write (status 0x%x)", seed, status);
        }
        long delay_us = (long)(rand() % 40000);
        struct timespec ts = {0, delay_us * 1000};
        (void)nanosleep(&ts, NULL);
        assert_int_equal(kill(pid, SIGKILL), 0);
        wait_killed(pid);
        uint64_t h = assert_consistent_prefix(path);
        if (h < head + 1) {
            fail_msg("seed %u round %d: head %llu, but height %llu was acknowledged", seed, round,
                     (unsigned long long)h, (unsigned long long)(head + 1));
        }
        head = h;
    }
}

/* ---- destroy, lifecycle, strings --------------------------------------------------------- */

/* store_destroy removes a closed database and its directory; a missing path is STORE_OK; an
 * open database is refused with STORE_E_IO and left intact. */
static void test_store_destroy_removes_db(void **state)
{
    (void)state;
    char path[PATH_MAX];
    db_path(path, sizeof path, "destroy");
    store *s = open_ok(path);
    char err[512] = "";
    assert_int_equal(store_destroy(path, err, sizeof err), STORE_E_IO);
    assert_non_null(strstr(err, path));
    store_batch *b = store_batch_new();
    assert_non_null(b);
    add_height(b, 1);
    write_ok(s, b, true);
    store_batch_free(b);
    store_close(s);

    assert_int_equal(store_destroy(path, err, sizeof err), STORE_OK);
    struct stat st;
    assert_int_equal(stat(path, &st), -1);
    assert_int_equal(errno, ENOENT);
    assert_int_equal(store_destroy(path, err, sizeof err), STORE_OK);
    db_path(path, sizeof path, "no/such/dir");
    assert_int_equal(store_destroy(path, NULL, 0), STORE_OK);

    db_path(path, sizeof path, "destroy");
    s = open_ok(path); /* a destroyed path starts over empty */
    uint64_t head = 9;
    assert_int_equal(store_head(s, &head, NULL, NULL), STORE_OK);
    assert_int_equal(head, 0);
    store_close(s);
}

/* Close and free accept NULL; a batch counts operations and clear resets it; writing an empty
 * batch is fine. */
static void test_store_lifecycle_null_and_count_safe(void **state)
{
    (void)state;
    store_close(NULL);
    store_batch_free(NULL);
    store_block_read_free(NULL);
    store_block_read zero = {0};
    store_block_read_free(&zero);

    char path[PATH_MAX];
    db_path(path, sizeof path, "lifecycle");
    store *s = open_ok(path);
    store_batch *b = store_batch_new();
    assert_non_null(b);
    assert_int_equal(store_batch_count(b), 0);
    write_ok(s, b, true);
    pbft_digest t;
    tx_hash_of(1, 0, &t);
    store_batch_tx(b, &t, 5, 6, 7);
    store_batch_state_del(b, (const uint8_t *)"x", 1);
    assert_int_equal(store_batch_count(b), 2);
    write_ok(s, b, false);
    write_ok(s, b, false); /* the same batch again: same effect */
    store_batch_clear(b);
    assert_int_equal(store_batch_count(b), 0);
    uint64_t th = 0;
    uint32_t ti = 0;
    uint8_t code = 0;
    assert_int_equal(store_get_tx(s, &t, &th, &ti, &code), STORE_OK);
    assert_int_equal(th, 5);
    assert_int_equal(ti, 6);
    assert_int_equal(code, 7);
    store_batch_free(b);
    store_close(s);
}

/* Every code has its own message, and unknown codes still get one. */
static void test_store_strerror_every_code_distinct(void **state)
{
    (void)state;
    static const int codes[] = {STORE_OK,        STORE_E_NOTFOUND, STORE_E_IO,
                                STORE_E_CORRUPT, STORE_E_NOMEM,    STORE_E_CHAIN};
    size_t n = sizeof codes / sizeof codes[0];
    for (size_t i = 0; i < n; i++) {
        const char *m = store_strerror(codes[i]);
        assert_non_null(m);
        assert_true(m[0] != '\0');
        for (size_t j = 0; j < i; j++) {
            assert_string_not_equal(m, store_strerror(codes[j]));
        }
    }
    assert_non_null(store_strerror(-1));
    assert_non_null(store_strerror(1000));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_store_reopen_keeps_data),
        cmocka_unit_test(test_store_open_wrong_chain_returns_chain),
        cmocka_unit_test(test_store_open_unknown_schema_returns_corrupt),
        cmocka_unit_test(test_store_head_empty_returns_zero),
        cmocka_unit_test(test_store_each_record_returns_key_order),
        cmocka_unit_test(test_store_del_below_deletes_exact_range),
        cmocka_unit_test(test_store_each_record_callback_nonzero_stops),
        cmocka_unit_test(test_store_write_unknown_op_writes_nothing),
        cmocka_unit_test(test_store_batch_failed_first_op),
        cmocka_unit_test(test_store_block_batch_readable_after_reopen),
        cmocka_unit_test(test_store_multi_block_batch_head_is_last),
        cmocka_unit_test(test_store_block_repair_keeps_head),
        cmocka_unit_test(test_store_corrupt_values_return_corrupt),
        cmocka_unit_test(test_store_crash_after_synced_writes_keeps_all),
        cmocka_unit_test(test_store_crash_random_kill_leaves_prefix),
        cmocka_unit_test(test_store_destroy_removes_db),
        cmocka_unit_test(test_store_lifecycle_null_and_count_safe),
        cmocka_unit_test(test_store_strerror_every_code_distinct),
    };
    return cmocka_run_group_tests_name("store", tests, group_setup, group_teardown);
}
