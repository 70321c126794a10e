/*
 * ledger.c - deterministic execution of committed blocks (see ledger.h).
 */
#include "node/ledger.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/keys.h"

#define ACCT_VAL 16 /* balance u64 || nonce u64 */

/* The overlay: state written by executed blocks whose batch is not durable yet. Open
 * addressing on a hash of the key; grows at half load. */
struct ov_ent {
    uint8_t *key; /* NULL: empty */
    size_t kn;
    uint8_t *val;
    size_t vn;
};

struct ledger {
    store *s;
    struct ov_ent *ov;
    size_t ov_cap, ov_len;
    uint8_t app_hash[32];
};

const char *ledger_code_name(int code)
{
    switch (code) {
    case LEDGER_OK:
        return "ok";
    case LEDGER_MALFORMED:
        return "malformed";
    case LEDGER_BAD_SIGNATURE:
        return "bad_signature";
    case LEDGER_BAD_NONCE:
        return "bad_nonce";
    case LEDGER_INSUFFICIENT_FUNDS:
        return "insufficient_funds";
    case LEDGER_OVERFLOW:
        return "overflow";
    default:
        return "unknown";
    }
}

static uint64_t hash_key(const uint8_t *k, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= k[i];
        h *= 1099511628211ull;
    }
    return h;
}

static struct ov_ent *ov_slot(struct ov_ent *tab, size_t cap, const uint8_t *k, size_t kn)
{
    for (size_t i = (size_t)hash_key(k, kn) & (cap - 1);; i = (i + 1) & (cap - 1)) {
        struct ov_ent *e = &tab[i];
        if (e->key == NULL || (e->kn == kn && memcmp(e->key, k, kn) == 0))
            return e;
    }
}

static int ov_grow(ledger *l)
{
    size_t cap = l->ov_cap ? l->ov_cap * 2 : 1024;
    struct ov_ent *t = calloc(cap, sizeof *t);
    if (t == NULL)
        return STORE_E_NOMEM;
    for (size_t i = 0; i < l->ov_cap; i++)
        if (l->ov[i].key != NULL)
            *ov_slot(t, cap, l->ov[i].key, l->ov[i].kn) = l->ov[i];
    free(l->ov);
    l->ov = t;
    l->ov_cap = cap;
    return STORE_OK;
}

static int ov_put(ledger *l, const uint8_t *k, size_t kn, const uint8_t *v, size_t vn)
{
    if (2 * (l->ov_len + 1) > l->ov_cap && ov_grow(l) != STORE_OK)
        return STORE_E_NOMEM;
    struct ov_ent *e = ov_slot(l->ov, l->ov_cap, k, kn);
    uint8_t *nv = malloc(vn ? vn : 1);
    if (nv == NULL)
        return STORE_E_NOMEM;
    if (vn > 0)
        memcpy(nv, v, vn);
    if (e->key == NULL) {
        e->key = malloc(kn);
        if (e->key == NULL) {
            free(nv);
            return STORE_E_NOMEM;
        }
        memcpy(e->key, k, kn);
        e->kn = kn;
        l->ov_len++;
    } else {
        free(e->val);
    }
    e->val = nv;
    e->vn = vn;
    return STORE_OK;
}

/* state_get reads the overlay, then the store. *v is malloc'd. */
static int state_get(ledger *l, const uint8_t *k, size_t kn, uint8_t **v, size_t *vn)
{
    if (l->ov_cap > 0) {
        struct ov_ent *e = ov_slot(l->ov, l->ov_cap, k, kn);
        if (e->key != NULL) {
            *v = malloc(e->vn ? e->vn : 1);
            if (*v == NULL)
                return STORE_E_NOMEM;
            if (e->vn > 0)
                memcpy(*v, e->val, e->vn);
            *vn = e->vn;
            return STORE_OK;
        }
    }
    return store_state_get(l->s, k, kn, v, vn);
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (56 - 8 * i));
}

static void acct_key(uint8_t key[33], const uint8_t pk[32])
{
    key[0] = 'a';
    memcpy(key + 1, pk, 32);
}

int ledger_account(ledger *l, const uint8_t pk[32], uint64_t *balance, uint64_t *nonce)
{
    uint8_t key[33];
    acct_key(key, pk);
    uint8_t *v = NULL;
    size_t vn = 0;
    int rc = state_get(l, key, sizeof key, &v, &vn);
    if (rc == STORE_E_NOTFOUND) {
        *balance = 0;
        *nonce = 0;
        return STORE_OK;
    }
    if (rc != STORE_OK)
        return rc;
    if (vn != ACCT_VAL) {
        free(v);
        return STORE_E_CORRUPT;
    }
    *balance = pbft_get_u64(v);
    *nonce = pbft_get_u64(v + 8);
    free(v);
    return STORE_OK;
}

int ledger_kv_get(ledger *l, const uint8_t *k, size_t kn, uint8_t **v, size_t *vn)
{
    if (kn == 0 || kn > PBFT_MAX_KEY_BYTES)
        return STORE_E_NOTFOUND;
    uint8_t key[1 + PBFT_MAX_KEY_BYTES];
    key[0] = 'k';
    memcpy(key + 1, k, kn);
    return state_get(l, key, kn + 1, v, vn);
}

/* write_state records one state write: overlay, batch and the running write hash. */
static int write_state(ledger *l, store_batch *b, keys_sha256_ctx *w, const uint8_t *k, size_t kn,
                       const uint8_t *v, size_t vn)
{
    int rc = ov_put(l, k, kn, v, vn);
    if (rc != STORE_OK)
        return rc;
    store_batch_state_put(b, k, kn, v, vn);
    uint8_t len[6] = {(uint8_t)(kn >> 8),  (uint8_t)kn,        (uint8_t)(vn >> 24),
                      (uint8_t)(vn >> 16), (uint8_t)(vn >> 8), (uint8_t)vn};
    keys_sha256_update(w, len, 2);
    keys_sha256_update(w, k, kn);
    keys_sha256_update(w, len + 2, 4);
    keys_sha256_update(w, v, vn);
    return STORE_OK;
}

static int put_account(ledger *l, store_batch *b, keys_sha256_ctx *w, const uint8_t pk[32],
                       uint64_t balance, uint64_t nonce)
{
    uint8_t key[33], val[ACCT_VAL];
    acct_key(key, pk);
    put_u64(val, balance);
    put_u64(val + 8, nonce);
    return write_state(l, b, w, key, sizeof key, val, sizeof val);
}

/* apply_tx executes one transaction; returns a LEDGER_* receipt code, or -1 on a storage
 * failure (the node must stop: it cannot execute deterministically without its state). */
static int apply_tx(ledger *l, store_batch *b, keys_sha256_ctx *w, pbft_span t)
{
    pbft_tx tx;
    if (pbft_tx_decode(t.p, t.n, &tx) != PBFT_OK)
        return LEDGER_MALFORMED;
    uint64_t bal, nonce;
    if (ledger_account(l, tx.sender, &bal, &nonce) != STORE_OK)
        return -1;
    if (tx.nonce != nonce)
        return LEDGER_BAD_NONCE;
    int code = LEDGER_OK;
    if (tx.type == PBFT_TX_TRANSFER) {
        if (tx.amount > bal) {
            code = LEDGER_INSUFFICIENT_FUNDS;
        } else if (memcmp(tx.to, tx.sender, 32) != 0) {
            uint64_t tb, tn;
            if (ledger_account(l, tx.to, &tb, &tn) != STORE_OK)
                return -1;
            if (tb > UINT64_MAX - tx.amount) {
                code = LEDGER_OVERFLOW;
            } else {
                bal -= tx.amount;
                if (put_account(l, b, w, tx.to, tb + tx.amount, tn) != STORE_OK)
                    return -1;
            }
        }
    } else {
        uint8_t key[1 + PBFT_MAX_KEY_BYTES];
        key[0] = 'k';
        memcpy(key + 1, tx.key.p, tx.key.n);
        if (write_state(l, b, w, key, tx.key.n + 1, tx.value.p, tx.value.n) != STORE_OK)
            return -1;
    }
    if (put_account(l, b, w, tx.sender, bal, nonce + 1) != STORE_OK)
        return -1;
    return code;
}

static void next_app_hash(const uint8_t prev[32], const uint8_t writes[32], uint8_t out[32])
{
    keys_sha256_ctx c;
    keys_sha256_init(&c);
    keys_sha256_update(&c, (const uint8_t *)"PBFT-APP", 8);
    keys_sha256_update(&c, prev, 32);
    keys_sha256_update(&c, writes, 32);
    keys_sha256_final(&c, out);
}

/* tx_receipt decides whether this execution of h, with result code, writes h's receipt
 * (1), or an earlier one stands (0); -1 on a storage error. Earlier executions are found at
 * earlier heights (the tx index) or earlier in this batch (an overlay entry 'x' || hash
 * holding the code, never written to the store).
 *
 * A transaction can be committed twice: a Byzantine primary may propose it again, or a
 * replayed REQUEST may reach a block before the first copy executes.
 *   - After a copy that took effect, a later one fails (bad_nonce, no state change) and must
 *     not overwrite the receipt: `tx` and broadcast_tx_commit would report bad_nonce for a
 *     transfer that happened, and a wallet that trusted them would sign it again (found by
 *     the security review).
 *   - After a copy that failed, a later one can take effect: a transfer that failed
 *     bad_nonce because a reordering primary put it before its predecessor succeeds when
 *     committed again after it. Then its receipt must become that success, for the same
 *     reason (docs/security.md, finding 18).
 * Otherwise the first receipt stands. */
static int tx_receipt(ledger *l, const pbft_digest *h, int code)
{
    uint8_t key[33];
    key[0] = 'x';
    memcpy(key + 1, h->b, 32);
    int prior = -1; /* none */
    struct ov_ent *e = l->ov_cap > 0 ? ov_slot(l->ov, l->ov_cap, key, sizeof key) : NULL;
    if (e != NULL && e->key != NULL) {
        prior = e->val[0]; /* every receipt entry holds its code (below) */
    } else {
        uint64_t height;
        uint32_t index;
        uint8_t c;
        int rc = store_get_tx(l->s, h, &height, &index, &c);
        if (rc == STORE_OK)
            prior = c;
        else if (rc != STORE_E_NOTFOUND)
            return -1;
    }
    if (prior != -1 && (prior == LEDGER_OK || code != LEDGER_OK))
        return 0;
    uint8_t v = (uint8_t)code;
    return ov_put(l, key, sizeof key, &v, 1) == STORE_OK ? 1 : -1;
}

int ledger_execute(ledger *l, const pbft_commit *c, store_batch *b, uint8_t app_hash[32])
{
    pbft_block blk;
    if (pbft_block_decode(c->block.p, c->block.n, &blk) != PBFT_OK)
        return STORE_E_CORRUPT; /* the core only commits blocks that decode */
    keys_sha256_ctx w;
    keys_sha256_init(&w);
    size_t off = 0;
    pbft_span t;
    uint32_t index = 0;
    while (pbft_block_next_tx(&blk, &off, &t)) {
        int code = apply_tx(l, b, &w, t);
        if (code < 0)
            return STORE_E_IO;
        pbft_digest h;
        pbft_tx_hash(t.p, t.n, &h);
        int write = tx_receipt(l, &h, code);
        if (write < 0)
            return STORE_E_IO;
        if (write)
            store_batch_tx(b, &h, c->seq, index, (uint8_t)code);
        index++;
    }
    uint8_t writes[32];
    keys_sha256_final(&w, writes);
    next_app_hash(l->app_hash, writes, l->app_hash);
    memcpy(app_hash, l->app_hash, 32);
    store_block sb;
    memset(&sb, 0, sizeof sb);
    sb.height = c->seq;
    sb.view = c->view;
    sb.digest = c->d;
    sb.chain = c->chain;
    memcpy(sb.app_hash, l->app_hash, 32);
    sb.block = c->block;
    sb.cert = c->cert;
    store_batch_block(b, &sb);
    return STORE_OK;
}

void ledger_written(ledger *l)
{
    for (size_t i = 0; i < l->ov_cap; i++) {
        free(l->ov[i].key);
        free(l->ov[i].val);
    }
    if (l->ov_cap > 0)
        memset(l->ov, 0, l->ov_cap * sizeof *l->ov);
    l->ov_len = 0;
}

int ledger_open(store *s, const genesis *g, ledger **out, uint8_t app_hash[32], char *err,
                size_t errlen)
{
    *out = NULL;
    ledger *l = calloc(1, sizeof *l);
    if (l == NULL) {
        snprintf(err, errlen, "ledger: out of memory");
        return STORE_E_NOMEM;
    }
    l->s = s;
    uint8_t *marker = NULL;
    size_t mn = 0;
    int rc = store_state_get(s, (const uint8_t *)"g", 1, &marker, &mn);
    if (rc == STORE_E_NOTFOUND) {
        /* First start: write the genesis allocations, durably, before anything else. */
        store_batch *b = store_batch_new();
        if (b == NULL) {
            free(l);
            snprintf(err, errlen, "ledger: out of memory");
            return STORE_E_NOMEM;
        }
        uint8_t key[33], val[ACCT_VAL];
        for (size_t i = 0; i < g->n_accounts; i++) {
            acct_key(key, g->accounts[i].public_key);
            put_u64(val, g->accounts[i].balance);
            put_u64(val + 8, 0);
            store_batch_state_put(b, key, sizeof key, val, sizeof val);
        }
        store_batch_state_put(b, (const uint8_t *)"g", 1, g->hash, 32);
        rc = store_write(s, b, true, err, errlen);
        store_batch_free(b);
        if (rc != STORE_OK) {
            free(l);
            return rc;
        }
    } else if (rc != STORE_OK) {
        free(l);
        snprintf(err, errlen,
                 "ledger: reading the genesis marker: %s; refusing to start. Remedy: see "
                 "docs/operations.md, \"Durability and recovery\"",
                 store_strerror(rc));
        return rc;
    } else {
        bool same = mn == 32 && memcmp(marker, g->hash, 32) == 0;
        free(marker);
        if (!same) {
            free(l);
            snprintf(err, errlen,
                     "ledger: the data directory was initialised from another "
                     "genesis file");
            return STORE_E_CHAIN;
        }
    }
    uint64_t height;
    pbft_digest chain;
    uint8_t app[32];
    rc = store_head(s, &height, &chain, app);
    if (rc != STORE_OK) {
        free(l);
        snprintf(err, errlen,
                 "ledger: reading the head block: %s; refusing to start. Remedy: see "
                 "docs/operations.md, \"Durability and recovery\"",
                 store_strerror(rc));
        return rc;
    }
    if (height == 0) {
        keys_sha256_ctx c;
        keys_sha256_init(&c);
        keys_sha256_update(&c, (const uint8_t *)"PBFT-APP", 8);
        keys_sha256_update(&c, g->hash, 32);
        keys_sha256_final(&c, l->app_hash);
    } else {
        memcpy(l->app_hash, app, 32);
    }
    memcpy(app_hash, l->app_hash, 32);
    *out = l;
    return STORE_OK;
}

void ledger_close(ledger *l)
{
    if (l == NULL)
        return;
    ledger_written(l);
    free(l->ov);
    free(l);
}
