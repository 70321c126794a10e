/*
 * store.h - the node's durable state in RocksDB (design section 5).
 *
 * Column families:
 *   default    meta: schema version, chain digest
 *   consensus  the core's persisted records (pbft_persist), keyed by their 20-byte keys
 *   blocks     height (u64 BE) -> block record: view, digest, chain hash, app hash, block bytes
 *   certs      height (u64 BE) -> commit certificate (pbft_list: count u16 + region)
 *   hashes     block digest (32) -> height (u64 BE), for lookups by hash
 *   txindex    tx hash (32) -> height u64, index u32, result code u8
 *   state      application state: opaque key -> opaque value (the ledger defines keys)
 *
 * Writes go through a batch: everything one step of the node produces (consensus records,
 * committed blocks with certificates, their tx index entries and state changes) is applied
 * in ONE RocksDB WriteBatch, with sync when asked. So a crash leaves either all of a
 * block's effects or none of them.
 *
 * Prefix: store_. Functions return STORE_OK (0) or a STORE_E_* code; err buffers (when not
 * NULL) receive a message naming the path and the RocksDB error.
 */
#ifndef PBFT_STORAGE_STORE_H
#define PBFT_STORAGE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "consensus/replica.h"

enum {
    STORE_OK = 0,
    STORE_E_NOTFOUND = 1,
    STORE_E_IO = 2,      /* RocksDB reported an error (message in err) */
    STORE_E_CORRUPT = 3, /* a stored value does not have the documented shape */
    STORE_E_NOMEM = 4,
    STORE_E_CHAIN = 5, /* the database belongs to another chain */
};

const char *store_strerror(int rc);

typedef struct store store;
typedef struct store_batch store_batch;

/* A committed block as written. Spans are borrowed for the call. */
typedef struct {
    uint64_t height;
    uint64_t view;        /* view of the commit certificate */
    pbft_digest digest;   /* block digest */
    pbft_digest chain;    /* chain_hash(height) */
    uint8_t app_hash[32]; /* application state hash after executing the block */
    pbft_span block;      /* the encoded block */
    pbft_list cert;       /* 2f+1 signed COMMITs */
} store_block;

/* A block as read back: owns its memory; release with store_block_read_free. */
typedef struct {
    uint64_t height;
    uint64_t view;
    pbft_digest digest;
    pbft_digest chain;
    uint8_t app_hash[32];
    uint8_t *block;
    size_t block_n;
    uint16_t cert_count;
    uint8_t *cert; /* the certificate region (cert_count list elements) */
    size_t cert_n;
} store_block_read;

void store_block_read_free(store_block_read *b); /* safe on a zeroed struct */

/* store_open opens (creating if missing) the database at path. chain is the chain digest: a
 * new database records it; an existing one must match (STORE_E_CHAIN otherwise). */
int store_open(const char *path, const uint8_t chain[32], store **out, char *err, size_t errlen);
void store_close(store *s); /* safe on NULL */

/* store_destroy removes the database at path (pbftd unsafe-reset-all). Missing is not an
 * error. */
int store_destroy(const char *path, char *err, size_t errlen);

/* Batches. A batch is reusable after store_batch_clear. */
store_batch *store_batch_new(void);
void store_batch_free(store_batch *b); /* safe on NULL */
void store_batch_clear(store_batch *b);
size_t store_batch_count(const store_batch *b); /* operations added since clear */
/* True when an operation could not be added (no memory, too large, unknown op): the batch is
 * poisoned until clear, store_write refuses it, and store_batch_count may still be 0 (the
 * first operation failed). A caller must then write it to learn the failure, not skip it. */
bool store_batch_failed(const store_batch *b);
/* A core record: PBFT_PERSIST_PUT stores value under key; PBFT_PERSIST_DEL_BELOW deletes
 * every consensus record whose kind (key[0]) equals key[0] and whose seq (key[1..9]) is <=
 * the seq in key (one DeleteRange). */
void store_batch_persist(store_batch *b, const pbft_persist *p);
void store_batch_block(store_batch *b, const store_block *blk);
/* store_batch_block_repair writes a committed block again in place (its block, certificate
 * and digest index) without touching the head record: a block fetched from peers to replace
 * one that failed its checks (node/node.c, repair). */
void store_batch_block_repair(store_batch *b, const store_block *blk);
/* store_block_of views a block read back as one to write (borrowing r's memory). */
store_block store_block_of(const store_block_read *r);
void store_batch_tx(store_batch *b, const pbft_digest *tx_hash, uint64_t height, uint32_t index,
                    uint8_t code);
void store_batch_state_put(store_batch *b, const uint8_t *k, size_t kn, const uint8_t *v,
                           size_t vn);
void store_batch_state_del(store_batch *b, const uint8_t *k, size_t kn);

/* store_write applies the batch atomically; sync = fsync the WAL before returning. */
int store_write(store *s, store_batch *b, bool sync, char *err, size_t errlen);

/* store_flush writes every column family's memtable to SST files and waits (pbft-tamper:
 * so that the corruption tests have SST files to flip bytes in). */
int store_flush(store *s, char *err, size_t errlen);
/* store_each_sst calls fn for every live SST file: its column family, its name (relative to
 * the database directory, with a leading '/') and size. */
typedef void (*store_sst_fn)(void *ctx, const char *cf, const char *name, size_t size);
int store_each_sst(store *s, store_sst_fn fn, void *ctx);

/* Reads. */

/* store_head: the highest stored block's height, chain hash and app hash; height 0 and
 * all-zero hashes when there is none (the caller substitutes its genesis hash). It is kept
 * in meta by store_batch_block, in the same batch. */
int store_head(store *s, uint64_t *height, pbft_digest *chain, uint8_t app_hash[32]);
/* store_each_record calls fn for every consensus record in key order; a non-zero return from
 * fn stops the walk and is returned. */
typedef int (*store_record_fn)(void *ctx, const uint8_t key[PBFT_REC_KEY_BYTES],
                               const uint8_t *value, size_t n);
int store_each_record(store *s, store_record_fn fn, void *ctx);
int store_get_block(store *s, uint64_t height, store_block_read *out);
int store_get_height_by_digest(store *s, const pbft_digest *d, uint64_t *height);
int store_get_tx(store *s, const pbft_digest *tx_hash, uint64_t *height, uint32_t *index,
                 uint8_t *code);
/* store_state_get returns a malloc'd copy in *v (free with free()). */
int store_state_get(store *s, const uint8_t *k, size_t kn, uint8_t **v, size_t *vn);

#endif
