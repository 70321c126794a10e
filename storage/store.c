/*
 * store.c - the node's durable state in RocksDB (store.h, design section 5).
 *
 * On-disk layout. All integers are unsigned big-endian, so numeric keys sort in numeric
 * order under RocksDB's default bytewise comparator.
 *
 *   CF         key                        value
 *   default    "schema"                   u32 schema version (STORE_SCHEMA_VERSION)
 *              "chain"                    32-byte chain digest the database belongs to
 *              "head"                     height u64 | chain hash 32 | app hash 32  (72 bytes)
 *   consensus  20-byte record key         the core's record value, verbatim
 *   blocks     height u64                 view u64 | digest 32 | chain hash 32 | app hash 32 |
 *                                         block bytes                       (104 + n bytes)
 *   certs      height u64                 count u16 | region: count x (u32 len, len bytes)
 *   hashes     block digest 32            height u64                         (8 bytes)
 *   txindex    tx hash 32                 height u64 | index u32 | code u8   (13 bytes)
 *   state      opaque                     opaque
 *
 * Every value read back is checked against this shape before any field is used; a mismatch
 * is STORE_E_CORRUPT, never a crash.
 *
 * Batches. store_batch_new takes no store, so a batch cannot know the column family handles
 * that rocksdb_writebatch_*_cf need while the caller fills it. A batch therefore records its
 * operations in its own buffer (column family index, key, value), and store_write replays
 * them into the rocksdb_writebatch_t the batch owns, against that store's handles, right
 * before the one rocksdb_write. Allocation failures while filling are remembered in the
 * batch (the add functions return void) and reported by store_write, which then writes
 * nothing: a half-built batch must never reach the disk.
 */
#include "storage/store.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <rocksdb/c.h>

#define STORE_SCHEMA_VERSION 1u

/* Shared by all column families of one store, so a busy CF can use the others' share. */
#define BLOCK_CACHE_BYTES ((size_t)64 << 20)
/* Bounded so a long-lived node with many SST files cannot run out of descriptors (sockets
 * share the same limit). */
#define MAX_OPEN_FILES 256
/* The consensus and meta CFs see few writes; without a cap their unflushed memtables pin
 * old WAL files forever (the default cap is 4x the sum of all write buffers). */
#define MAX_TOTAL_WAL_BYTES ((uint64_t)256 << 20)
#define KEEP_INFO_LOGS 4
#define BLOOM_BITS_PER_KEY 10.0
/* A cleared batch that grew past this gives its buffer back (one 16 MiB block should not
 * pin 32 MiB for the life of the node). */
#define BATCH_KEEP_BYTES ((size_t)4 << 20)

enum { CF_DEFAULT, CF_CONSENSUS, CF_BLOCKS, CF_CERTS, CF_HASHES, CF_TXINDEX, CF_STATE, CF__COUNT };

static const char *const cf_names[CF__COUNT] = {
    "default", "consensus", "blocks", "certs", "hashes", "txindex", "state",
};

static const char META_SCHEMA[] = "schema";
static const char META_CHAIN[] = "chain";
static const char META_HEAD[] = "head";
#define META_KEY(k) (k), (sizeof(k) - 1)

#define HEIGHT_BYTES 8
#define SCHEMA_BYTES 4
#define HEAD_BYTES (8 + 32 + 32)
#define BLOCK_HDR_BYTES (8 + 32 + 32 + 32)
#define CERT_HDR_BYTES 2
#define TX_BYTES (8 + 4 + 1)

/* Lets the compiler check our format strings against their arguments. */
#if defined(__GNUC__)
#define PRINTF_LIKE(f, a) __attribute__((format(printf, f, a)))
#else
#define PRINTF_LIKE(f, a)
#endif

struct store {
    rocksdb_t *db;
    rocksdb_column_family_handle_t *cf[CF__COUNT];
    rocksdb_readoptions_t *ropts;
    rocksdb_writeoptions_t *wsync;   /* sync = 1: fsync the WAL before returning */
    rocksdb_writeoptions_t *wnosync; /* sync = 0 */
    char *path;                      /* for error messages */
};

/* Operations recorded in a batch. a is the key (or the range start), b the value (or the
 * range end). */
enum { OP_PUT = 1, OP_DEL = 2, OP_DEL_RANGE = 3 };

typedef struct {
    uint8_t cf;
    uint8_t kind;
    size_t an;
    size_t bn;
} op_hdr; /* followed by an bytes of a, then bn bytes of b; copied with memcpy (unaligned) */

struct store_batch {
    uint8_t *buf;
    size_t len;
    size_t cap;
    size_t count;     /* store_batch_* calls since clear */
    int err;          /* first failure while filling; STORE_OK if none */
    char errmsg[128]; /* its description, for store_write's err */
    rocksdb_writebatch_t *wb;
};

/* ---- small helpers ------------------------------------------------------------------- */

static void wr_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void wr_u32(uint8_t *p, uint32_t v)
{
    for (int i = 3; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

static void wr_u64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

static uint16_t rd_u16(const uint8_t *p)
{
    return (uint16_t)(((unsigned)p[0] << 8) | p[1]);
}

static uint32_t rd_u32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        v = (v << 8) | p[i];
    }
    return v;
}

static uint64_t rd_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) {
        v = (v << 8) | p[i];
    }
    return v;
}

/* copy_bytes is memcpy that accepts (NULL, 0): empty spans may carry a NULL pointer, and
 * memcpy with NULL is undefined even for zero bytes. */
static void copy_bytes(uint8_t *dst, const uint8_t *src, size_t n)
{
    if (n > 0) {
        memcpy(dst, src, n);
    }
}

/* dup_bytes returns a malloc'd copy (never NULL for n == 0, so NULL always means NOMEM). */
static uint8_t *dup_bytes(const uint8_t *src, size_t n)
{
    uint8_t *p = malloc(n > 0 ? n : 1);
    if (p != NULL) {
        copy_bytes(p, src, n);
    }
    return p;
}

/* set_err formats a message into the caller's err buffer, when there is one. */
static void set_err(char *err, size_t errlen, const char *fmt, ...) PRINTF_LIKE(3, 4);
static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (err == NULL || errlen == 0) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* rocks_fail reports a RocksDB error string (taking ownership of it) as STORE_E_IO. */
static int rocks_fail(char *rerr, const char *path, const char *what, char *err, size_t errlen)
{
    set_err(err, errlen, "%s: %s: %s", path, what, rerr != NULL ? rerr : "unknown error");
    rocksdb_free(rerr);
    return STORE_E_IO;
}

/* hex16 writes the first 8 bytes of a digest as 16 hex digits (enough to tell chains apart
 * in a message). */
static void hex16(const uint8_t *d, char out[17])
{
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < 8; i++) {
        out[2 * i] = digits[d[i] >> 4];
        out[2 * i + 1] = digits[d[i] & 0x0f];
    }
    out[16] = '\0';
}

const char *store_strerror(int rc)
{
    switch (rc) {
    case STORE_OK:
        return "ok";
    case STORE_E_NOTFOUND:
        return "not found";
    case STORE_E_IO:
        return "storage I/O error";
    case STORE_E_CORRUPT:
        return "stored value is corrupt";
    case STORE_E_NOMEM:
        return "out of memory";
    case STORE_E_CHAIN:
        return "database belongs to another chain";
    default:
        return "unknown storage error";
    }
}

/* ---- options ------------------------------------------------------------------------- */

/* make_options builds the DB options used for open and destroy. The block cache and the
 * table options are reference-counted inside RocksDB once installed, so our handles to them
 * are released here. */
static int make_options(rocksdb_options_t **out)
{
    *out = NULL;
    rocksdb_options_t *o = rocksdb_options_create();
    rocksdb_block_based_table_options_t *t = rocksdb_block_based_options_create();
    rocksdb_cache_t *c = rocksdb_cache_create_lru(BLOCK_CACHE_BYTES);
    rocksdb_filterpolicy_t *bloom = rocksdb_filterpolicy_create_bloom_full(BLOOM_BITS_PER_KEY);
    if (o == NULL || t == NULL || c == NULL || bloom == NULL) {
        if (bloom != NULL) {
            rocksdb_filterpolicy_destroy(bloom);
        }
        if (c != NULL) {
            rocksdb_cache_destroy(c);
        }
        if (t != NULL) {
            rocksdb_block_based_options_destroy(t);
        }
        if (o != NULL) {
            rocksdb_options_destroy(o);
        }
        return STORE_E_NOMEM;
    }
    rocksdb_block_based_options_set_block_cache(t, c);
    /* Point lookups (hashes, txindex, state) mostly ask for keys that exist or are fresh;
     * a full bloom filter saves a disk read per SST for the misses. Takes ownership. */
    rocksdb_block_based_options_set_filter_policy(t, bloom);
    rocksdb_options_set_block_based_table_factory(o, t);
    rocksdb_block_based_options_destroy(t);
    rocksdb_cache_destroy(c);

    rocksdb_options_set_create_if_missing(o, 1);
    rocksdb_options_set_create_missing_column_families(o, 1);
    rocksdb_options_set_max_open_files(o, MAX_OPEN_FILES);
    rocksdb_options_set_max_total_wal_size(o, MAX_TOTAL_WAL_BYTES);
    rocksdb_options_set_keep_log_file_num(o, KEEP_INFO_LOGS);
    /* Values are mostly hashes, signatures and public keys, which do not compress; this also
     * keeps us independent of which codecs the system librocksdb was built with. */
    rocksdb_options_set_compression(o, rocksdb_no_compression);
    /* After a crash, replay the WAL up to the first torn record and stop there: every synced
     * batch survives and a half-written tail batch disappears as a whole. */
    rocksdb_options_set_wal_recovery_mode(o, rocksdb_point_in_time_recovery);
    rocksdb_options_set_paranoid_checks(o, 1);
    *out = o;
    return STORE_OK;
}

/* ---- open / close / destroy ---------------------------------------------------------- */

/* get_value looks a key up. On STORE_OK *ps holds the value (release with
 * rocksdb_pinnableslice_destroy) and *v, *n point into it. A pinnable slice is used rather
 * than rocksdb_get_cf because it tells "absent" from "empty value" without depending on
 * malloc(0), and avoids one copy. */
static int get_value(store *s, int cf, const void *k, size_t kn, rocksdb_pinnableslice_t **ps,
                     const uint8_t **v, size_t *n, char *err, size_t errlen)
{
    char *rerr = NULL;
    *ps = rocksdb_get_pinned_cf(s->db, s->ropts, s->cf[cf], (const char *)k, kn, &rerr);
    if (rerr != NULL) {
        if (*ps != NULL) {
            rocksdb_pinnableslice_destroy(*ps);
            *ps = NULL;
        }
        return rocks_fail(rerr, s->path, "read", err, errlen);
    }
    if (*ps == NULL) {
        return STORE_E_NOTFOUND;
    }
    *v = (const uint8_t *)rocksdb_pinnableslice_value(*ps, n);
    return STORE_OK;
}

/* init_meta records schema version and chain digest in a new database, in one synced
 * batch so that a crash cannot leave one without the other. */
static int init_meta(store *s, const uint8_t chain[32], char *err, size_t errlen)
{
    uint8_t ver[SCHEMA_BYTES];
    wr_u32(ver, STORE_SCHEMA_VERSION);
    rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
    if (wb == NULL) {
        set_err(err, errlen, "%s: out of memory", s->path);
        return STORE_E_NOMEM;
    }
    rocksdb_writebatch_put_cf(wb, s->cf[CF_DEFAULT], META_KEY(META_SCHEMA), (const char *)ver,
                              sizeof ver);
    rocksdb_writebatch_put_cf(wb, s->cf[CF_DEFAULT], META_KEY(META_CHAIN), (const char *)chain, 32);
    char *rerr = NULL;
    rocksdb_write(s->db, s->wsync, wb, &rerr);
    rocksdb_writebatch_destroy(wb);
    if (rerr != NULL) {
        return rocks_fail(rerr, s->path, "writing meta records", err, errlen);
    }
    return STORE_OK;
}

/* check_meta validates the meta records of an opened database against chain, or writes them
 * if the database is new. */
static int check_meta(store *s, const uint8_t chain[32], char *err, size_t errlen)
{
    rocksdb_pinnableslice_t *ps;
    const uint8_t *v = NULL;
    size_t n = 0;
    int rc = get_value(s, CF_DEFAULT, META_KEY(META_SCHEMA), &ps, &v, &n, err, errlen);
    if (rc == STORE_E_NOTFOUND) {
        rc = get_value(s, CF_DEFAULT, META_KEY(META_CHAIN), &ps, &v, &n, err, errlen);
        if (rc == STORE_OK) {
            rocksdb_pinnableslice_destroy(ps);
            set_err(err, errlen, "%s: chain digest recorded without a schema version", s->path);
            return STORE_E_CORRUPT;
        }
        if (rc != STORE_E_NOTFOUND) {
            return rc;
        }
        return init_meta(s, chain, err, errlen);
    }
    if (rc != STORE_OK) {
        return rc;
    }
    bool len_ok = n == SCHEMA_BYTES;
    uint32_t ver = len_ok ? rd_u32(v) : 0;
    rocksdb_pinnableslice_destroy(ps);
    if (!len_ok) {
        set_err(err, errlen, "%s: schema version record has %zu bytes, want %d", s->path, n,
                SCHEMA_BYTES);
        return STORE_E_CORRUPT;
    }
    if (ver != STORE_SCHEMA_VERSION) {
        set_err(err, errlen, "%s: unknown schema version %lu (this build reads version %u)",
                s->path, (unsigned long)ver, STORE_SCHEMA_VERSION);
        return STORE_E_CORRUPT;
    }

    rc = get_value(s, CF_DEFAULT, META_KEY(META_CHAIN), &ps, &v, &n, err, errlen);
    if (rc == STORE_E_NOTFOUND) {
        set_err(err, errlen, "%s: no chain digest recorded", s->path);
        return STORE_E_CORRUPT;
    }
    if (rc != STORE_OK) {
        return rc;
    }
    if (n != 32) {
        rocksdb_pinnableslice_destroy(ps);
        set_err(err, errlen, "%s: chain digest record has %zu bytes, want 32", s->path, n);
        return STORE_E_CORRUPT;
    }
    char have[17], want[17];
    hex16(v, have);
    hex16(chain, want);
    bool same = memcmp(v, chain, 32) == 0;
    rocksdb_pinnableslice_destroy(ps);
    if (!same) {
        set_err(err, errlen,
                "%s: database belongs to chain %s..., not to the configured chain %s... "
                "(wrong home directory, or reset it with unsafe-reset-all)",
                s->path, have, want);
        return STORE_E_CHAIN;
    }
    return STORE_OK;
}

void store_close(store *s)
{
    if (s == NULL) {
        return;
    }
    /* RocksDB requires the column family handles to go before the DB. */
    for (int i = 0; i < CF__COUNT; i++) {
        if (s->cf[i] != NULL) {
            rocksdb_column_family_handle_destroy(s->cf[i]);
        }
    }
    if (s->db != NULL) {
        rocksdb_close(s->db);
    }
    if (s->ropts != NULL) {
        rocksdb_readoptions_destroy(s->ropts);
    }
    if (s->wsync != NULL) {
        rocksdb_writeoptions_destroy(s->wsync);
    }
    if (s->wnosync != NULL) {
        rocksdb_writeoptions_destroy(s->wnosync);
    }
    free(s->path);
    free(s);
}

int store_open(const char *path, const uint8_t chain[32], store **out, char *err, size_t errlen)
{
    *out = NULL;
    store *s = calloc(1, sizeof *s);
    if (s == NULL) {
        set_err(err, errlen, "%s: out of memory", path);
        return STORE_E_NOMEM;
    }
    rocksdb_options_t *opts = NULL;
    s->path = strdup(path);
    s->ropts = rocksdb_readoptions_create();
    s->wsync = rocksdb_writeoptions_create();
    s->wnosync = rocksdb_writeoptions_create();
    if (s->path == NULL || s->ropts == NULL || s->wsync == NULL || s->wnosync == NULL ||
        make_options(&opts) != STORE_OK) {
        store_close(s);
        set_err(err, errlen, "%s: out of memory", path);
        return STORE_E_NOMEM;
    }
    /* Every read checks the checksums of the SST blocks it touches (RocksDB's default, set
     * here so that no change of default can turn it off): a flipped byte in a file is then a
     * read error, which node_read_block counts and repairs, never a wrong value. */
    rocksdb_readoptions_set_verify_checksums(s->ropts, 1);
    rocksdb_writeoptions_set_sync(s->wsync, 1);
    rocksdb_writeoptions_set_sync(s->wnosync, 0);

    const rocksdb_options_t *cf_opts[CF__COUNT];
    for (int i = 0; i < CF__COUNT; i++) {
        cf_opts[i] = opts;
    }
    char *rerr = NULL;
    s->db = rocksdb_open_column_families(opts, path, CF__COUNT, cf_names, cf_opts, s->cf, &rerr);
    rocksdb_options_destroy(opts);
    if (rerr != NULL || s->db == NULL) {
        /* On failure RocksDB hands out no handles; make sure close does not touch any. */
        s->db = NULL;
        memset(s->cf, 0, sizeof s->cf);
        int rc = rocks_fail(rerr, path, "open", err, errlen);
        store_close(s);
        return rc;
    }
    int rc = check_meta(s, chain, err, errlen);
    if (rc != STORE_OK) {
        store_close(s);
        return rc;
    }
    *out = s;
    return STORE_OK;
}

int store_destroy(const char *path, char *err, size_t errlen)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        if (errno == ENOENT) {
            return STORE_OK;
        }
        set_err(err, errlen, "%s: %s", path, strerror(errno));
        return STORE_E_IO;
    }
    rocksdb_options_t *opts = NULL;
    if (make_options(&opts) != STORE_OK) {
        set_err(err, errlen, "%s: out of memory", path);
        return STORE_E_NOMEM;
    }
    /* DestroyDB takes the DB's lock first, so it refuses a database that is open (in this
     * process or another), and it deletes only files that RocksDB itself names. */
    char *rerr = NULL;
    rocksdb_destroy_db(opts, path, &rerr);
    rocksdb_options_destroy(opts);
    if (rerr != NULL) {
        return rocks_fail(rerr, path, "destroy", err, errlen);
    }
    /* RocksDB may already have removed the directory; a directory that still holds files
     * that are not RocksDB's stays, with them. */
    if (rmdir(path) != 0 && errno != ENOENT && errno != ENOTEMPTY && errno != EEXIST) {
        set_err(err, errlen, "%s: rmdir: %s", path, strerror(errno));
        return STORE_E_IO;
    }
    return STORE_OK;
}

/* ---- batches ------------------------------------------------------------------------- */

store_batch *store_batch_new(void)
{
    store_batch *b = calloc(1, sizeof *b);
    if (b == NULL) {
        return NULL;
    }
    b->wb = rocksdb_writebatch_create();
    if (b->wb == NULL) {
        free(b);
        return NULL;
    }
    return b;
}

void store_batch_free(store_batch *b)
{
    if (b == NULL) {
        return;
    }
    rocksdb_writebatch_destroy(b->wb);
    free(b->buf);
    free(b);
}

void store_batch_clear(store_batch *b)
{
    if (b == NULL) {
        return;
    }
    if (b->cap > BATCH_KEEP_BYTES) {
        free(b->buf);
        b->buf = NULL;
        b->cap = 0;
    }
    b->len = 0;
    b->count = 0;
    b->err = STORE_OK;
    b->errmsg[0] = '\0';
    rocksdb_writebatch_clear(b->wb);
}

size_t store_batch_count(const store_batch *b)
{
    return b != NULL ? b->count : 0;
}

bool store_batch_failed(const store_batch *b)
{
    return b != NULL && b->err != STORE_OK;
}

/* batch_fail poisons the batch: store_write will refuse it with rc and this message. */
static void batch_fail(store_batch *b, int rc, const char *fmt, ...) PRINTF_LIKE(3, 4);
static void batch_fail(store_batch *b, int rc, const char *fmt, ...)
{
    if (b->err != STORE_OK) {
        return; /* keep the first failure: it is the cause */
    }
    b->err = rc;
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(b->errmsg, sizeof b->errmsg, fmt, ap);
    va_end(ap);
}

/* batch_op appends one operation header and reserves an + bn bytes after it, returning where
 * a goes (b follows at + an), or NULL after recording the failure in the batch. */
static uint8_t *batch_op(store_batch *b, int cf, int kind, size_t an, size_t bn)
{
    if (b->err != STORE_OK) {
        return NULL;
    }
    /* RocksDB's WriteBatch rejects keys and values of 4 GiB or more with a Status that the C
     * API drops, which would silently lose the operation; refuse here instead. */
    if ((uint64_t)an > UINT32_MAX || (uint64_t)bn > UINT32_MAX) {
        batch_fail(b, STORE_E_IO, "an operation of %zu + %zu bytes exceeds RocksDB's limit", an,
                   bn);
        return NULL;
    }
    size_t need = sizeof(op_hdr);
    if (an > SIZE_MAX - need || bn > SIZE_MAX - need - an || need + an + bn > SIZE_MAX - b->len) {
        batch_fail(b, STORE_E_NOMEM, "batch size overflows");
        return NULL;
    }
    need += an + bn;
    if (need > b->cap - b->len) {
        size_t cap = b->cap > 0 ? b->cap : 256;
        while (cap - b->len < need) {
            if (cap > SIZE_MAX / 2) {
                cap = b->len + need;
                break;
            }
            cap *= 2;
        }
        uint8_t *p = realloc(b->buf, cap);
        if (p == NULL) {
            batch_fail(b, STORE_E_NOMEM, "out of memory growing the batch to %zu bytes", cap);
            return NULL;
        }
        b->buf = p;
        b->cap = cap;
    }
    op_hdr h = {(uint8_t)cf, (uint8_t)kind, an, bn};
    memcpy(b->buf + b->len, &h, sizeof h);
    uint8_t *a = b->buf + b->len + sizeof h;
    b->len += need;
    return a;
}

/* batch_put records a put whose key and value are both contiguous. */
static bool batch_put(store_batch *b, int cf, const uint8_t *k, size_t kn, const uint8_t *v,
                      size_t vn)
{
    uint8_t *p = batch_op(b, cf, OP_PUT, kn, vn);
    if (p == NULL) {
        return false;
    }
    copy_bytes(p, k, kn);
    copy_bytes(p + kn, v, vn);
    return true;
}

void store_batch_persist(store_batch *b, const pbft_persist *p)
{
    if (b == NULL || p == NULL) {
        return;
    }
    switch (p->op) {
    case PBFT_PERSIST_PUT:
        if (!batch_put(b, CF_CONSENSUS, p->key, PBFT_REC_KEY_BYTES, p->value.p, p->value.n)) {
            return;
        }
        break;
    case PBFT_PERSIST_DEL_BELOW: {
        /* [kind, 0 x 19] .. exclusive end [kind, seq+1, 0 x 11]: exactly the keys of this
         * kind whose seq is <= seq, whatever their view, type and sender. For seq =
         * UINT64_MAX the end is [kind, 0xFF x 19, 0x00], one byte longer than any record key
         * and so above every key of this kind (and below kind+1, even for kind 0xFF). */
        uint8_t start[PBFT_REC_KEY_BYTES] = {0};
        uint8_t end[PBFT_REC_KEY_BYTES + 1] = {0};
        size_t end_n = PBFT_REC_KEY_BYTES;
        uint64_t seq = rd_u64(p->key + 1);
        start[0] = p->key[0];
        end[0] = p->key[0];
        if (seq < UINT64_MAX) {
            wr_u64(end + 1, seq + 1);
        } else {
            memset(end + 1, 0xFF, PBFT_REC_KEY_BYTES - 1);
            end_n = PBFT_REC_KEY_BYTES + 1;
        }
        uint8_t *d = batch_op(b, CF_CONSENSUS, OP_DEL_RANGE, sizeof start, end_n);
        if (d == NULL) {
            return;
        }
        memcpy(d, start, sizeof start);
        memcpy(d + sizeof start, end, end_n);
        break;
    }
    default:
        /* The core emits only the two ops above; dropping an unknown one could lose a
         * promise, so the whole batch is refused instead. */
        batch_fail(b, STORE_E_CORRUPT, "unknown persist op %d", p->op);
        return;
    }
    b->count++;
}

static void batch_block(store_batch *b, const store_block *blk, bool head_too);

void store_batch_block(store_batch *b, const store_block *blk)
{
    batch_block(b, blk, true);
}

void store_batch_block_repair(store_batch *b, const store_block *blk)
{
    batch_block(b, blk, false);
}

store_block store_block_of(const store_block_read *r)
{
    store_block b;
    memset(&b, 0, sizeof b);
    b.height = r->height;
    b.view = r->view;
    b.digest = r->digest;
    b.chain = r->chain;
    memcpy(b.app_hash, r->app_hash, 32);
    b.block = (pbft_span){r->block, r->block_n};
    b.cert = (pbft_list){r->cert_count, {r->cert, r->cert_n}};
    return b;
}

static void batch_block(store_batch *b, const store_block *blk, bool head_too)
{
    if (b == NULL || blk == NULL) {
        return;
    }
    uint8_t hk[HEIGHT_BYTES];
    wr_u64(hk, blk->height);

    /* blocks: view | digest | chain | app hash | block bytes (layout at the top). */
    if (blk->block.n > SIZE_MAX - BLOCK_HDR_BYTES) {
        batch_fail(b, STORE_E_NOMEM, "block of %zu bytes is too large", blk->block.n);
        return;
    }
    uint8_t *p = batch_op(b, CF_BLOCKS, OP_PUT, sizeof hk, BLOCK_HDR_BYTES + blk->block.n);
    if (p == NULL) {
        return;
    }
    memcpy(p, hk, sizeof hk);
    p += sizeof hk;
    wr_u64(p, blk->view);
    memcpy(p + 8, blk->digest.b, 32);
    memcpy(p + 40, blk->chain.b, 32);
    memcpy(p + 72, blk->app_hash, 32);
    copy_bytes(p + BLOCK_HDR_BYTES, blk->block.p, blk->block.n);

    /* certs: count | region */
    if (blk->cert.region.n > SIZE_MAX - CERT_HDR_BYTES) {
        batch_fail(b, STORE_E_NOMEM, "certificate of %zu bytes is too large", blk->cert.region.n);
        return;
    }
    p = batch_op(b, CF_CERTS, OP_PUT, sizeof hk, CERT_HDR_BYTES + blk->cert.region.n);
    if (p == NULL) {
        return;
    }
    memcpy(p, hk, sizeof hk);
    wr_u16(p + sizeof hk, blk->cert.count);
    copy_bytes(p + sizeof hk + CERT_HDR_BYTES, blk->cert.region.p, blk->cert.region.n);

    /* hashes: digest -> height */
    if (!batch_put(b, CF_HASHES, blk->digest.b, 32, hk, sizeof hk)) {
        return;
    }

    if (!head_too) {
        b->count++;
        return;
    }
    /* head: the caller adds blocks in height order, so the last one added is the highest
     * (within one batch a later put of the same key wins). */
    uint8_t head[HEAD_BYTES];
    memcpy(head, hk, sizeof hk);
    memcpy(head + 8, blk->chain.b, 32);
    memcpy(head + 40, blk->app_hash, 32);
    if (!batch_put(b, CF_DEFAULT, (const uint8_t *)META_HEAD, sizeof META_HEAD - 1, head,
                   sizeof head)) {
        return;
    }
    b->count++;
}

void store_batch_tx(store_batch *b, const pbft_digest *tx_hash, uint64_t height, uint32_t index,
                    uint8_t code)
{
    if (b == NULL || tx_hash == NULL) {
        return;
    }
    uint8_t v[TX_BYTES];
    wr_u64(v, height);
    wr_u32(v + 8, index);
    v[12] = code;
    if (batch_put(b, CF_TXINDEX, tx_hash->b, 32, v, sizeof v)) {
        b->count++;
    }
}

void store_batch_state_put(store_batch *b, const uint8_t *k, size_t kn, const uint8_t *v, size_t vn)
{
    if (b == NULL) {
        return;
    }
    if (batch_put(b, CF_STATE, k, kn, v, vn)) {
        b->count++;
    }
}

void store_batch_state_del(store_batch *b, const uint8_t *k, size_t kn)
{
    if (b == NULL) {
        return;
    }
    uint8_t *p = batch_op(b, CF_STATE, OP_DEL, kn, 0);
    if (p == NULL) {
        return;
    }
    copy_bytes(p, k, kn);
    b->count++;
}

/* batch_replay rebuilds the batch's rocksdb_writebatch_t from the recorded operations,
 * against s's column family handles. Done on every store_write so a batch can be written
 * again (after an I/O error, or to another store) with the same effect. */
static void batch_replay(const store *s, store_batch *b)
{
    rocksdb_writebatch_clear(b->wb);
    size_t off = 0;
    while (off < b->len) {
        op_hdr h;
        memcpy(&h, b->buf + off, sizeof h);
        off += sizeof h;
        const char *a = (const char *)b->buf + off;
        const char *v = a + h.an;
        off += h.an + h.bn;
        rocksdb_column_family_handle_t *cf = s->cf[h.cf];
        switch (h.kind) {
        case OP_PUT:
            rocksdb_writebatch_put_cf(b->wb, cf, a, h.an, v, h.bn);
            break;
        case OP_DEL:
            rocksdb_writebatch_delete_cf(b->wb, cf, a, h.an);
            break;
        case OP_DEL_RANGE:
            rocksdb_writebatch_delete_range_cf(b->wb, cf, a, h.an, v, h.bn);
            break;
        default:
            break; /* unreachable: batch_op callers pass only the kinds above */
        }
    }
}

int store_write(store *s, store_batch *b, bool sync, char *err, size_t errlen)
{
    if (b->err != STORE_OK) {
        set_err(err, errlen, "%s: batch not written: %s", s->path, b->errmsg);
        return b->err;
    }
    batch_replay(s, b);
    char *rerr = NULL;
    rocksdb_write(s->db, sync ? s->wsync : s->wnosync, b->wb, &rerr);
    if (rerr != NULL) {
        return rocks_fail(rerr, s->path, "write", err, errlen);
    }
    return STORE_OK;
}

/* ---- reads --------------------------------------------------------------------------- */

int store_head(store *s, uint64_t *height, pbft_digest *chain, uint8_t app_hash[32])
{
    uint64_t h = 0;
    uint8_t c[32] = {0}, a[32] = {0};
    rocksdb_pinnableslice_t *ps;
    const uint8_t *v = NULL;
    size_t n = 0;
    int rc = get_value(s, CF_DEFAULT, META_KEY(META_HEAD), &ps, &v, &n, NULL, 0);
    if (rc == STORE_OK) {
        if (n == HEAD_BYTES) {
            h = rd_u64(v);
            memcpy(c, v + 8, 32);
            memcpy(a, v + 40, 32);
        } else {
            rc = STORE_E_CORRUPT;
        }
        rocksdb_pinnableslice_destroy(ps);
    } else if (rc == STORE_E_NOTFOUND) {
        rc = STORE_OK; /* no block yet: height 0, zero hashes */
    }
    if (rc != STORE_OK) {
        return rc;
    }
    if (height != NULL) {
        *height = h;
    }
    if (chain != NULL) {
        memcpy(chain->b, c, 32);
    }
    if (app_hash != NULL) {
        memcpy(app_hash, a, 32);
    }
    return STORE_OK;
}

int store_each_record(store *s, store_record_fn fn, void *ctx)
{
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(s->db, s->ropts, s->cf[CF_CONSENSUS]);
    if (it == NULL) {
        return STORE_E_NOMEM;
    }
    int rc = 0;
    for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
        size_t kn = 0, vn = 0;
        const char *k = rocksdb_iter_key(it, &kn);
        const char *v = rocksdb_iter_value(it, &vn);
        if (kn != PBFT_REC_KEY_BYTES) {
            rc = STORE_E_CORRUPT;
            break;
        }
        rc = fn(ctx, (const uint8_t *)k, (const uint8_t *)v, vn);
        if (rc != 0) {
            break;
        }
    }
    if (rc == 0) {
        /* An iterator that stops being valid because of an error looks like the end. */
        char *rerr = NULL;
        rocksdb_iter_get_error(it, &rerr);
        if (rerr != NULL) {
            rocksdb_free(rerr);
            rc = STORE_E_IO;
        }
    }
    rocksdb_iter_destroy(it);
    return rc;
}

void store_block_read_free(store_block_read *b)
{
    if (b == NULL) {
        return;
    }
    free(b->block);
    free(b->cert);
    memset(b, 0, sizeof *b);
}

/* cert_region_ok checks that region holds exactly count (u32 len, bytes) entries, so that a
 * caller walking it with pbft_list_next sees the documented shape. */
static bool cert_region_ok(const uint8_t *p, size_t n, uint16_t count)
{
    size_t off = 0;
    for (unsigned i = 0; i < count; i++) {
        if (n - off < 4) {
            return false;
        }
        uint32_t len = rd_u32(p + off);
        off += 4;
        if (n - off < len) {
            return false;
        }
        off += len;
    }
    return off == n;
}

int store_get_block(store *s, uint64_t height, store_block_read *out)
{
    memset(out, 0, sizeof *out);
    uint8_t hk[HEIGHT_BYTES];
    wr_u64(hk, height);
    rocksdb_pinnableslice_t *ps;
    const uint8_t *v = NULL;
    size_t n = 0;
    store_block_read r = {0};

    int rc = get_value(s, CF_BLOCKS, hk, sizeof hk, &ps, &v, &n, NULL, 0);
    if (rc != STORE_OK) {
        return rc;
    }
    if (n < BLOCK_HDR_BYTES) {
        rocksdb_pinnableslice_destroy(ps);
        return STORE_E_CORRUPT;
    }
    r.height = height;
    r.view = rd_u64(v);
    memcpy(r.digest.b, v + 8, 32);
    memcpy(r.chain.b, v + 40, 32);
    memcpy(r.app_hash, v + 72, 32);
    r.block_n = n - BLOCK_HDR_BYTES;
    r.block = dup_bytes(v + BLOCK_HDR_BYTES, r.block_n);
    rocksdb_pinnableslice_destroy(ps);
    if (r.block == NULL) {
        return STORE_E_NOMEM;
    }

    rc = get_value(s, CF_CERTS, hk, sizeof hk, &ps, &v, &n, NULL, 0);
    if (rc != STORE_OK) {
        store_block_read_free(&r);
        /* Block and certificate are written in the same batch: one without the other means
         * the database was damaged. */
        return rc == STORE_E_NOTFOUND ? STORE_E_CORRUPT : rc;
    }
    if (n < CERT_HDR_BYTES || !cert_region_ok(v + CERT_HDR_BYTES, n - CERT_HDR_BYTES, rd_u16(v))) {
        rocksdb_pinnableslice_destroy(ps);
        store_block_read_free(&r);
        return STORE_E_CORRUPT;
    }
    r.cert_count = rd_u16(v);
    r.cert_n = n - CERT_HDR_BYTES;
    r.cert = dup_bytes(v + CERT_HDR_BYTES, r.cert_n);
    rocksdb_pinnableslice_destroy(ps);
    if (r.cert == NULL) {
        store_block_read_free(&r);
        return STORE_E_NOMEM;
    }
    *out = r;
    return STORE_OK;
}

int store_get_height_by_digest(store *s, const pbft_digest *d, uint64_t *height)
{
    rocksdb_pinnableslice_t *ps;
    const uint8_t *v = NULL;
    size_t n = 0;
    int rc = get_value(s, CF_HASHES, d->b, 32, &ps, &v, &n, NULL, 0);
    if (rc != STORE_OK) {
        return rc;
    }
    if (n == HEIGHT_BYTES) {
        *height = rd_u64(v);
    } else {
        rc = STORE_E_CORRUPT;
    }
    rocksdb_pinnableslice_destroy(ps);
    return rc;
}

int store_get_tx(store *s, const pbft_digest *tx_hash, uint64_t *height, uint32_t *index,
                 uint8_t *code)
{
    rocksdb_pinnableslice_t *ps;
    const uint8_t *v = NULL;
    size_t n = 0;
    int rc = get_value(s, CF_TXINDEX, tx_hash->b, 32, &ps, &v, &n, NULL, 0);
    if (rc != STORE_OK) {
        return rc;
    }
    if (n == TX_BYTES) {
        if (height != NULL) {
            *height = rd_u64(v);
        }
        if (index != NULL) {
            *index = rd_u32(v + 8);
        }
        if (code != NULL) {
            *code = v[12];
        }
    } else {
        rc = STORE_E_CORRUPT;
    }
    rocksdb_pinnableslice_destroy(ps);
    return rc;
}

int store_state_get(store *s, const uint8_t *k, size_t kn, uint8_t **v, size_t *vn)
{
    *v = NULL;
    *vn = 0;
    rocksdb_pinnableslice_t *ps;
    const uint8_t *p = NULL;
    size_t n = 0;
    int rc = get_value(s, CF_STATE, k, kn, &ps, &p, &n, NULL, 0);
    if (rc != STORE_OK) {
        return rc;
    }
    uint8_t *copy = dup_bytes(p, n);
    rocksdb_pinnableslice_destroy(ps);
    if (copy == NULL) {
        return STORE_E_NOMEM;
    }
    *v = copy;
    *vn = n;
    return STORE_OK;
}

int store_flush(store *s, char *err, size_t errlen)
{
    rocksdb_flushoptions_t *fo = rocksdb_flushoptions_create();
    if (fo == NULL) {
        set_err(err, errlen, "%s: out of memory", s->path);
        return STORE_E_NOMEM;
    }
    rocksdb_flushoptions_set_wait(fo, 1);
    int rc = STORE_OK;
    for (int i = 0; i < CF__COUNT && rc == STORE_OK; i++) {
        char *rerr = NULL;
        rocksdb_flush_cf(s->db, fo, s->cf[i], &rerr);
        if (rerr != NULL)
            rc = rocks_fail(rerr, s->path, "flush", err, errlen);
    }
    rocksdb_flushoptions_destroy(fo);
    return rc;
}

int store_each_sst(store *s, store_sst_fn fn, void *ctx)
{
    const rocksdb_livefiles_t *lf = rocksdb_livefiles(s->db);
    if (lf == NULL)
        return STORE_E_NOMEM;
    int k = rocksdb_livefiles_count(lf);
    for (int i = 0; i < k; i++)
        fn(ctx, rocksdb_livefiles_column_family_name(lf, i), rocksdb_livefiles_name(lf, i),
           rocksdb_livefiles_size(lf, i));
    rocksdb_livefiles_destroy(lf);
    return STORE_OK;
}
