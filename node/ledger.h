/*
 * ledger.h - the ledger application: accounts (balance, nonce) and a key-value namespace,
 * executed deterministically block by block (design section 4).
 *
 * State lives in the store's state column family:
 *   'a' || public key (32)  ->  balance u64 BE || nonce u64 BE
 *   'k' || key (1..256)     ->  value (0..4096 bytes)
 *   'g'                     ->  genesis applied marker: the genesis hash (32)
 *
 * Execution of one transaction (receipt codes are part of the protocol: every correct
 * replica records the same code for the same transaction):
 *   - its nonce must equal the sender's nonce, else LEDGER_BAD_NONCE (no state change);
 *   - otherwise the sender's nonce increments, whether the operation succeeds or not, so a
 *     failed transaction cannot be replayed;
 *   - transfer: amount > balance -> LEDGER_INSUFFICIENT_FUNDS; a recipient balance that
 *     would overflow u64 -> LEDGER_OVERFLOW; else the amount moves. Amount 0 is ok (the
 *     recipient's account is written unchanged, created if absent); to == sender is ok
 *     when amount <= balance and changes no balance (docs/protocol.md section 2.2);
 *   - put: the key takes the value.
 * The tx index keeps the receipt of each transaction's execution that took effect (code
 * LEDGER_OK), else its FIRST receipt. A transaction committed again (a Byzantine primary's
 * re-proposal, a replayed REQUEST) after one that took effect fails there with
 * LEDGER_BAD_NONCE and changes nothing, and its receipt is not recorded over the first one;
 * one that failed bad_nonce before its predecessor and is committed again after it takes
 * effect, and that receipt replaces the failure (ledger.c:tx_receipt).
 * Signatures are not checked again here: the consensus core admits only blocks whose every
 * transaction signature verifies (on every path: pre-prepare, NEW-VIEW body fetch, state
 * transfer). LEDGER_BAD_SIGNATURE exists for completeness of the receipt codes.
 *
 * App hash: app_hash(0) = SHA-256("PBFT-APP" || genesis hash); for each block,
 *   app_hash(h) = SHA-256("PBFT-APP" || app_hash(h-1) || W(h))
 * where W(h) is SHA-256 over the block's state writes in execution order, each written as
 * key_len u16 || key || value_len u32 || value. It commits to every state change in order;
 * checkpoints sign it (with the chain hash) every K blocks, so replicas whose state diverges
 * cannot form a stable checkpoint together.
 *
 * Prefix: ledger_.
 */
#ifndef PBFT_NODE_LEDGER_H
#define PBFT_NODE_LEDGER_H

#include <stdint.h>

#include "node/config.h"
#include "storage/store.h"

enum {
    LEDGER_OK = 0,
    LEDGER_MALFORMED = 1,
    LEDGER_BAD_SIGNATURE = 2,
    LEDGER_BAD_NONCE = 3,
    LEDGER_INSUFFICIENT_FUNDS = 4,
    LEDGER_OVERFLOW = 5,
};

const char *ledger_code_name(int code);

typedef struct ledger ledger;

/* ledger_open binds the ledger to a store. If the store holds no genesis marker, the genesis
 * accounts are written (synced) first. app_hash receives the hash after the store's head
 * block (or after genesis). */
int ledger_open(store *s, const genesis *g, ledger **out, uint8_t app_hash[32], char *err,
                size_t errlen);
void ledger_close(ledger *l);

/* ledger_execute runs one committed block on top of everything executed so far (including
 * blocks whose batch is not written yet), appends its state writes, tx index entries and
 * receipts into b, and returns the new app hash. Bounded: at most one block's writes are
 * buffered per call; the overlay holds what is not yet written. */
int ledger_execute(ledger *l, const pbft_commit *c, store_batch *b, uint8_t app_hash[32]);

/* ledger_written tells the ledger the batch it filled is durable: the overlay is dropped. */
void ledger_written(ledger *l);

/* Queries (read the overlay, then the store). */
int ledger_account(ledger *l, const uint8_t pk[32], uint64_t *balance, uint64_t *nonce);
/* ledger_kv_get: *v is malloc'd (free it); STORE_E_NOTFOUND if absent. */
int ledger_kv_get(ledger *l, const uint8_t *k, size_t kn, uint8_t **v, size_t *vn);

#endif
