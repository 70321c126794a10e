/*
 * tamper.c - pbft-tamper: rewrites one committed block of a stopped replica's database, for
 * the corruption tests (issue 12; tests/integration/corrupt_block.sh). Testing only.
 *
 *   pbft-tamper --db DIR --genesis FILE --height H --what
 * tx|cert|chain|digest|record|record-sig|flush
 *
 *   tx      flips a byte of the block's last transaction (its root no longer matches)
 *   cert    flips a byte inside the first COMMIT's signature
 *   chain   flips a byte of the stored chain hash
 *   digest  flips a byte of the stored block digest
 *   record  flips the first byte of the last consensus record's value (--height not needed)
 *   record-sig  flips the first signature byte of the last consensus record (a signed frame)
 *   flush   changes nothing: writes every memtable to SST files (for a test that then flips
 *           bytes in those files) and prints one line per live SST file: "sst CF PATH";
 *           --height is not needed
 *
 * The head record is written back unchanged, so only the one value differs. Exits 0 on
 * success, 2 on a usage error, 1 otherwise.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/keys.h"
#include "node/config.h"
#include "storage/store.h"

static int usage(void)
{
    fputs("usage: pbft-tamper --db DIR --genesis FILE --height H --what "
          "tx|cert|chain|digest|record|flush\n"
          "Rewrites one committed block of a stopped replica's database (testing only).\n",
          stderr);
    return 2;
}

struct last_rec {
    uint8_t key[PBFT_REC_KEY_BYTES];
    uint8_t *v;
    size_t n;
};

static int keep_last(void *ctx, const uint8_t key[PBFT_REC_KEY_BYTES], const uint8_t *value,
                     size_t n)
{
    struct last_rec *lr = ctx;
    if (n == 0)
        return 0;
    uint8_t *c = realloc(lr->v, n);
    if (c == NULL)
        return -1;
    memcpy(c, value, n);
    memcpy(lr->key, key, PBFT_REC_KEY_BYTES);
    lr->v = c;
    lr->n = n;
    return 0;
}

static void print_sst(void *ctx, const char *cf, const char *name, size_t size)
{
    (void)ctx, (void)size;
    printf("sst %s %s\n", cf, name);
}

int main(int argc, char **argv)
{
    const char *db = NULL, *gen = NULL, *what = NULL;
    uint64_t height = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            (void)usage();
            return 0;
        }
        if (i + 1 >= argc)
            return usage();
        if (strcmp(argv[i], "--db") == 0)
            db = argv[++i];
        else if (strcmp(argv[i], "--genesis") == 0)
            gen = argv[++i];
        else if (strcmp(argv[i], "--height") == 0)
            height = strtoull(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--what") == 0)
            what = argv[++i];
        else
            return usage();
    }
    if (db == NULL || gen == NULL || what == NULL ||
        (height == 0 && strcmp(what, "flush") != 0 && strncmp(what, "record", 6) != 0))
        return usage();
    char err[512];
    genesis g;
    if (genesis_load(gen, &g, err, sizeof err) != 0) {
        fprintf(stderr, "pbft-tamper: %s\n", err);
        return 1;
    }
    uint8_t chain[32];
    keys_sha256((const uint8_t *)g.chain_id, strnlen(g.chain_id, sizeof g.chain_id), chain);
    genesis_free(&g); /* only its chain id is needed */
    store *s;
    if (store_open(db, chain, &s, err, sizeof err) != STORE_OK) {
        fprintf(stderr, "pbft-tamper: %s\n", err);
        return 1;
    }
    if (strcmp(what, "flush") == 0) {
        int frc = store_flush(s, err, sizeof err);
        if (frc != STORE_OK)
            fprintf(stderr, "pbft-tamper: %s\n", err);
        else
            frc = store_each_sst(s, print_sst, NULL);
        store_close(s);
        return frc == STORE_OK ? 0 : 1;
    }
    if (strcmp(what, "record") == 0 || strcmp(what, "record-sig") == 0) {
        struct last_rec lr;
        memset(&lr, 0, sizeof lr);
        store_batch *rb = store_batch_new();
        int rrc = 1;
        if (rb != NULL && store_each_record(s, keep_last, &lr) == STORE_OK && lr.n > 0) {
            size_t at = 0; /* record: the version byte of a frame, or a length's top byte */
            /* a prepared certificate (key type 0x10, replica.c) starts with its
             * pre-prepare's length; other log records are frames */
            size_t base = lr.key[17] == 0x10 ? 4 : 0;
            if (strcmp(what, "record-sig") == 0 && lr.n >= base + 8) {
                const uint8_t *q = lr.v + base;
                uint32_t body =
                    (uint32_t)q[4] << 24 | (uint32_t)q[5] << 16 | (uint32_t)q[6] << 8 | q[7];
                at = base + 8 + (size_t)body;
            }
            if (at >= lr.n) {
                fprintf(stderr, "pbft-tamper: the last record holds no signature there\n");
                goto rec_out;
            }
            lr.v[at] ^= 0x01;
            pbft_persist pp = {PBFT_PERSIST_PUT, {0}, {lr.v, lr.n}};
            memcpy(pp.key, lr.key, sizeof pp.key);
            store_batch_persist(rb, &pp);
            if (store_write(s, rb, true, err, sizeof err) == STORE_OK) {
                printf("pbft-tamper: flipped byte %zu of a consensus record of kind %u\n", at,
                       lr.key[0]);
                rrc = 0;
            } else {
                fprintf(stderr, "pbft-tamper: %s\n", err);
            }
        } else {
            fprintf(stderr, "pbft-tamper: no consensus record to tamper with\n");
        }
    rec_out:
        free(lr.v);
        store_batch_free(rb);
        store_close(s);
        return rrc;
    }
    int rc = 1;
    uint64_t head;
    pbft_digest hc;
    uint8_t app[32];
    store_block_read b, hb;
    memset(&b, 0, sizeof b);
    memset(&hb, 0, sizeof hb);
    store_batch *wb = store_batch_new();
    if (wb == NULL || store_head(s, &head, &hc, app) != STORE_OK || height > head ||
        store_get_block(s, height, &b) != STORE_OK || store_get_block(s, head, &hb) != STORE_OK) {
        fprintf(stderr, "pbft-tamper: no block %llu to tamper with\n", (unsigned long long)height);
        goto out;
    }
    if (strcmp(what, "tx") == 0 && b.block_n > 0)
        b.block[b.block_n - 1] ^= 0x01;
    else if (strcmp(what, "cert") == 0 && b.cert_n > 8)
        b.cert[b.cert_n / (b.cert_count > 0 ? b.cert_count : 1) - 8] ^= 0x01;
    else if (strcmp(what, "chain") == 0)
        b.chain.b[5] ^= 0x01;
    else if (strcmp(what, "digest") == 0)
        b.digest.b[5] ^= 0x01;
    else {
        fprintf(stderr, "pbft-tamper: --what %s: unknown, or nothing to flip\n", what);
        rc = 2;
        goto out;
    }
    store_block tb = store_block_of(&b);
    store_batch_block(wb, &tb);
    if (height != head) { /* the head record back as it was */
        store_block h = store_block_of(&hb);
        store_batch_block(wb, &h);
    }
    if (store_write(s, wb, true, err, sizeof err) != STORE_OK) {
        fprintf(stderr, "pbft-tamper: %s\n", err);
        goto out;
    }
    printf("pbft-tamper: block %llu: flipped a byte of its %s\n", (unsigned long long)height, what);
    rc = 0;
out:
    store_block_read_free(&b);
    store_block_read_free(&hb);
    store_batch_free(wb);
    store_close(s);
    return rc;
}
