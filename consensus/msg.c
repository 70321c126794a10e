/*
 * msg.c - the canonical wire codec: transactions, blocks, signed replica messages and frames.
 *
 * Decoders work on a bounded reader (rd) and check, before every read, that the bytes remain:
 * the comparison is always `need > n - off` with off <= n, so no addition can overflow. They
 * return views into the caller's buffer and never allocate. Encoders write into caller
 * buffers of a stated capacity or into a pbft_wbuf bounded by its limit.
 *
 * Nesting is fixed by the format: NEWVIEW holds VIEWCHANGEs, which hold CHECKPOINTs,
 * PREPREPAREs and PREPAREs, none of which hold anything; STATE_REP holds blocks and COMMITs.
 * The decoder recursion is therefore at most three signed messages deep.
 */
#include "consensus/msg.h"

#include <stdlib.h>
#include <string.h>

static const uint8_t tag_msg[8] = {'P', 'B', 'F', 'T', '-', 'M', 'S', 'G'};
static const uint8_t tag_tx[8] = {'P', 'B', 'F', 'T', '-', 'T', 'X', '1'};
static const uint8_t tag_blk[8] = {'P', 'B', 'F', 'T', '-', 'B', 'L', 'K'};
static const uint8_t tag_chn[8] = {'P', 'B', 'F', 'T', '-', 'C', 'H', 'N'};

/* Sizes of the fixed parts. */
enum {
    TX_FIXED = 42, /* version, type, sender, nonce */
    TX_TRANSFER_BYTES = 42 + 32 + 8 + KEYS_SIG_BYTES,
    SIGN_INPUT = 8 + 32 + KEYS_HASH_BYTES, /* tag || chain || SHA-256(signed bytes) */
};

_Static_assert(PBFT_MAX_MSG_BYTES <= UINT32_MAX, "lengths are u32 on the wire");
_Static_assert(PBFT_MAX_BLOCK_BYTES <= PBFT_MAX_MSG_BYTES, "a block fits in a frame");
_Static_assert(PBFT_MAX_TX_BYTES >= 42 + 2 + PBFT_MAX_KEY_BYTES + 4 + PBFT_MAX_VALUE_BYTES + 64,
               "the largest put fits the transaction limit");
_Static_assert(PBFT_MAX_N <= UINT16_MAX && PBFT_MAX_WINDOW <= UINT16_MAX, "u16 counts");

const char *pbft_strerror(int rc)
{
    switch (rc) {
    case PBFT_OK:
        return "ok";
    case PBFT_E_TRUNCATED:
        return "input ends before a field or a declared length";
    case PBFT_E_TRAILING:
        return "bytes left over after the last field";
    case PBFT_E_VERSION:
        return "unknown wire version";
    case PBFT_E_TYPE:
        return "unknown or unexpected message or transaction type";
    case PBFT_E_TOO_LARGE:
        return "a length or count above the limits";
    case PBFT_E_NONCANONICAL:
        return "non-canonical encoding or value out of range";
    case PBFT_E_NOMEM:
        return "output buffer limit reached";
    case PBFT_E_SIG:
        return "signature does not verify";
    case PBFT_E_DIGEST:
        return "block does not match its digest or transaction root";
    case PBFT_E_OOM:
        return "out of memory";
    default:
        return "unknown error";
    }
}

/* ---- big-endian helpers ------------------------------------------------------------- */

uint16_t pbft_get_u16(const uint8_t *p)
{
    return (uint16_t)(((unsigned)p[0] << 8) | (unsigned)p[1]);
}

uint32_t pbft_get_u32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

uint64_t pbft_get_u64(const uint8_t *p)
{
    return ((uint64_t)pbft_get_u32(p) << 32) | (uint64_t)pbft_get_u32(p + 4);
}

static void be16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static void be64(uint8_t *p, uint64_t v)
{
    be32(p, (uint32_t)(v >> 32));
    be32(p + 4, (uint32_t)v);
}

/* ---- bounded reader ----------------------------------------------------------------- */

typedef struct {
    const uint8_t *p;
    size_t n;
    size_t off; /* invariant: off <= n */
} rd;

static size_t rd_left(const rd *r)
{
    return r->n - r->off;
}

static bool rd_has(const rd *r, size_t k)
{
    return k <= r->n - r->off;
}

/* Each reader checks the bytes remain; on failure nothing is consumed. */
static int rd_u8(rd *r, uint8_t *v)
{
    if (!rd_has(r, 1))
        return PBFT_E_TRUNCATED;
    *v = r->p[r->off];
    r->off += 1;
    return PBFT_OK;
}

static int rd_u16(rd *r, uint16_t *v)
{
    if (!rd_has(r, 2))
        return PBFT_E_TRUNCATED;
    *v = pbft_get_u16(r->p + r->off);
    r->off += 2;
    return PBFT_OK;
}

static int rd_u32(rd *r, uint32_t *v)
{
    if (!rd_has(r, 4))
        return PBFT_E_TRUNCATED;
    *v = pbft_get_u32(r->p + r->off);
    r->off += 4;
    return PBFT_OK;
}

static int rd_u64(rd *r, uint64_t *v)
{
    if (!rd_has(r, 8))
        return PBFT_E_TRUNCATED;
    *v = pbft_get_u64(r->p + r->off);
    r->off += 8;
    return PBFT_OK;
}

/* rd_span takes the next k bytes as a view. */
static int rd_span(rd *r, size_t k, pbft_span *s)
{
    if (!rd_has(r, k))
        return PBFT_E_TRUNCATED;
    s->p = r->p + r->off;
    s->n = k;
    r->off += k;
    return PBFT_OK;
}

static int rd_digest(rd *r, pbft_digest *d)
{
    pbft_span s;
    int rc = rd_span(r, 32, &s);
    if (rc == PBFT_OK)
        memcpy(d->b, s.p, 32);
    return rc;
}

static int rd_end(const rd *r)
{
    return rd_left(r) == 0 ? PBFT_OK : PBFT_E_TRAILING;
}

/* ---- signing inputs ----------------------------------------------------------------- */

/* sign_input builds tag || chain || SHA-256(p[0..n)), the 72 bytes every signature covers. */
static void sign_input(const uint8_t tag[8], const uint8_t chain[32], const uint8_t *p, size_t n,
                       uint8_t in[SIGN_INPUT])
{
    memcpy(in, tag, 8);
    memcpy(in + 8, chain, 32);
    keys_sha256(p, n, in + 40);
}

/* ---- transactions ------------------------------------------------------------------- */

int pbft_tx_decode(const uint8_t *p, size_t n, pbft_tx *out)
{
    if (n > PBFT_MAX_TX_BYTES)
        return PBFT_E_TOO_LARGE;
    rd r = {p, n, 0};
    pbft_tx t;
    memset(&t, 0, sizeof t);
    uint8_t version;
    pbft_span s;
    int rc;

    if ((rc = rd_u8(&r, &version)) != PBFT_OK)
        return rc;
    if (version != PBFT_WIRE_VERSION)
        return PBFT_E_VERSION;
    if ((rc = rd_u8(&r, &t.type)) != PBFT_OK)
        return rc;
    if (t.type != PBFT_TX_TRANSFER && t.type != PBFT_TX_PUT)
        return PBFT_E_TYPE;
    if ((rc = rd_span(&r, 32, &s)) != PBFT_OK)
        return rc;
    t.sender = s.p;
    if ((rc = rd_u64(&r, &t.nonce)) != PBFT_OK)
        return rc;
    if (t.type == PBFT_TX_TRANSFER) {
        if ((rc = rd_span(&r, 32, &s)) != PBFT_OK)
            return rc;
        t.to = s.p;
        if ((rc = rd_u64(&r, &t.amount)) != PBFT_OK)
            return rc;
    } else {
        uint16_t key_len;
        uint32_t value_len;
        if ((rc = rd_u16(&r, &key_len)) != PBFT_OK)
            return rc;
        if (key_len == 0)
            return PBFT_E_NONCANONICAL;
        if (key_len > PBFT_MAX_KEY_BYTES)
            return PBFT_E_TOO_LARGE;
        if ((rc = rd_span(&r, key_len, &t.key)) != PBFT_OK)
            return rc;
        if ((rc = rd_u32(&r, &value_len)) != PBFT_OK)
            return rc;
        if (value_len > PBFT_MAX_VALUE_BYTES)
            return PBFT_E_TOO_LARGE;
        if ((rc = rd_span(&r, value_len, &t.value)) != PBFT_OK)
            return rc;
    }
    t.unsigned_part.p = p;
    t.unsigned_part.n = r.off;
    if ((rc = rd_span(&r, KEYS_SIG_BYTES, &s)) != PBFT_OK)
        return rc;
    t.sig = s.p;
    if ((rc = rd_end(&r)) != PBFT_OK)
        return rc;
    *out = t;
    return PBFT_OK;
}

bool pbft_tx_verify(const pbft_tx *tx, const uint8_t chain[32])
{
    uint8_t in[SIGN_INPUT];
    sign_input(tag_tx, chain, tx->unsigned_part.p, tx->unsigned_part.n, in);
    return keys_verify(tx->sender, in, sizeof in, tx->sig);
}

void pbft_tx_hash(const uint8_t *p, size_t n, pbft_digest *out)
{
    keys_sha256(p, n, out->b);
}

/* tx_sign appends the signature over out[0..n) at out + n. */
static void tx_sign(const uint8_t chain[32], const uint8_t sk[64], uint8_t *out, size_t n)
{
    uint8_t in[SIGN_INPUT];
    sign_input(tag_tx, chain, out, n, in);
    keys_sign(sk, in, sizeof in, out + n);
}

/* tx_header writes version, type, sender (the public half of sk) and nonce. */
static void tx_header(uint8_t *out, uint8_t type, const uint8_t sk[64], uint64_t nonce)
{
    out[0] = PBFT_WIRE_VERSION;
    out[1] = type;
    memcpy(out + 2, sk + 32, 32);
    be64(out + 34, nonce);
}

int pbft_tx_encode_transfer(const uint8_t chain[32], const uint8_t sk[64], uint64_t nonce,
                            const uint8_t to[32], uint64_t amount, uint8_t *out, size_t cap,
                            size_t *len)
{
    *len = 0;
    if (cap < TX_TRANSFER_BYTES)
        return PBFT_E_NOMEM;
    tx_header(out, PBFT_TX_TRANSFER, sk, nonce);
    memcpy(out + TX_FIXED, to, 32);
    be64(out + TX_FIXED + 32, amount);
    tx_sign(chain, sk, out, TX_FIXED + 40);
    *len = TX_TRANSFER_BYTES;
    return PBFT_OK;
}

int pbft_tx_encode_put(const uint8_t chain[32], const uint8_t sk[64], uint64_t nonce,
                       const uint8_t *key, size_t key_len, const uint8_t *value, size_t value_len,
                       uint8_t *out, size_t cap, size_t *len)
{
    *len = 0;
    if (key_len > PBFT_MAX_KEY_BYTES || value_len > PBFT_MAX_VALUE_BYTES)
        return PBFT_E_TOO_LARGE;
    if (key_len == 0)
        return PBFT_E_NONCANONICAL;
    size_t unsigned_n = TX_FIXED + 2 + key_len + 4 + value_len; /* <= 4400: no overflow */
    size_t total = unsigned_n + KEYS_SIG_BYTES;
    if (cap < total)
        return PBFT_E_NOMEM;
    tx_header(out, PBFT_TX_PUT, sk, nonce);
    size_t off = TX_FIXED;
    be16(out + off, (uint16_t)key_len);
    off += 2;
    memcpy(out + off, key, key_len);
    off += key_len;
    be32(out + off, (uint32_t)value_len);
    off += 4;
    if (value_len > 0)
        memcpy(out + off, value, value_len);
    tx_sign(chain, sk, out, unsigned_n);
    *len = total;
    return PBFT_OK;
}

/* ---- blocks ------------------------------------------------------------------------- */

int pbft_block_decode(const uint8_t *p, size_t n, pbft_block *out)
{
    if (n > PBFT_MAX_BLOCK_BYTES)
        return PBFT_E_TOO_LARGE;
    rd r = {p, n, 0};
    pbft_block b;
    memset(&b, 0, sizeof b);
    uint8_t version;
    int rc;

    if ((rc = rd_u8(&r, &version)) != PBFT_OK)
        return rc;
    if (version != PBFT_WIRE_VERSION)
        return PBFT_E_VERSION;
    if ((rc = rd_u64(&r, &b.height)) != PBFT_OK)
        return rc;
    if (b.height == 0)
        return PBFT_E_NONCANONICAL;
    if ((rc = rd_u64(&r, &b.view)) != PBFT_OK || (rc = rd_u16(&r, &b.proposer)) != PBFT_OK ||
        (rc = rd_u64(&r, &b.timestamp_ms)) != PBFT_OK ||
        (rc = rd_digest(&r, &b.tx_root)) != PBFT_OK || (rc = rd_u32(&r, &b.ntx)) != PBFT_OK)
        return rc;
    if (b.ntx > PBFT_MAX_BLOCK_TXS)
        return PBFT_E_TOO_LARGE;
    b.header.p = p;
    b.header.n = PBFT_BLOCK_HEADER_BYTES;
    size_t txs_start = r.off;
    for (uint32_t i = 0; i < b.ntx; i++) {
        uint32_t tx_len;
        pbft_span tx;
        pbft_tx t;
        if ((rc = rd_u32(&r, &tx_len)) != PBFT_OK)
            return rc;
        if (tx_len == 0)
            return PBFT_E_NONCANONICAL;
        if (tx_len > PBFT_MAX_TX_BYTES)
            return PBFT_E_TOO_LARGE;
        if ((rc = rd_span(&r, tx_len, &tx)) != PBFT_OK)
            return rc;
        if ((rc = pbft_tx_decode(tx.p, tx.n, &t)) != PBFT_OK)
            return rc;
    }
    if ((rc = rd_end(&r)) != PBFT_OK)
        return rc;
    b.txs.p = p + txs_start;
    b.txs.n = r.off - txs_start;
    *out = b;
    return PBFT_OK;
}

bool pbft_block_next_tx(const pbft_block *b, size_t *off, pbft_span *tx)
{
    rd r = {b->txs.p, b->txs.n, *off};
    uint32_t len;
    if (*off > b->txs.n || rd_u32(&r, &len) != PBFT_OK || rd_span(&r, len, tx) != PBFT_OK)
        return false;
    *off = r.off;
    return true;
}

void pbft_block_digest(const pbft_block *b, pbft_digest *out)
{
    keys_sha256_ctx c;
    keys_sha256_init(&c);
    keys_sha256_update(&c, tag_blk, sizeof tag_blk);
    keys_sha256_update(&c, b->header.p, b->header.n);
    keys_sha256_final(&c, out->b);
}

int pbft_block_check_root(const pbft_block *b, pbft_digest *tx_hashes)
{
    uint8_t(*h)[KEYS_HASH_BYTES] = NULL;
    if (b->ntx > 0) {
        h = malloc((size_t)b->ntx * KEYS_HASH_BYTES);
        if (h == NULL)
            return PBFT_E_NOMEM;
    }
    size_t off = 0;
    pbft_span tx;
    uint32_t i = 0;
    while (i < b->ntx && pbft_block_next_tx(b, &off, &tx)) {
        keys_sha256(tx.p, tx.n, h[i]);
        if (tx_hashes != NULL)
            memcpy(tx_hashes[i].b, h[i], KEYS_HASH_BYTES);
        i++;
    }
    int rc = PBFT_E_DIGEST;
    if (i == b->ntx) {
        uint8_t root[KEYS_HASH_BYTES];
        keys_merkle_root((const uint8_t(*)[KEYS_HASH_BYTES])h, b->ntx, root);
        if (memcmp(root, b->tx_root.b, KEYS_HASH_BYTES) == 0)
            rc = PBFT_OK;
    }
    free(h);
    return rc;
}

int pbft_block_encode(uint64_t height, uint64_t view, uint16_t proposer, uint64_t timestamp_ms,
                      const pbft_span *txs, uint32_t ntx, uint8_t *out, size_t cap, size_t *len)
{
    *len = 0;
    if (height == 0)
        return PBFT_E_NONCANONICAL;
    if (ntx > PBFT_MAX_BLOCK_TXS)
        return PBFT_E_TOO_LARGE;
    /* Each term is <= 4 + PBFT_MAX_TX_BYTES and the running total stays <= the block limit,
     * so the sum cannot overflow. */
    size_t total = PBFT_BLOCK_HEADER_BYTES;
    for (uint32_t i = 0; i < ntx; i++) {
        pbft_tx t;
        int rc = pbft_tx_decode(txs[i].p, txs[i].n, &t);
        if (rc != PBFT_OK)
            return rc;
        if (4 + txs[i].n > PBFT_MAX_BLOCK_BYTES - total)
            return PBFT_E_TOO_LARGE;
        total += 4 + txs[i].n;
    }
    if (cap < total)
        return PBFT_E_NOMEM;
    uint8_t(*h)[KEYS_HASH_BYTES] = NULL;
    if (ntx > 0) {
        h = malloc((size_t)ntx * KEYS_HASH_BYTES);
        if (h == NULL)
            return PBFT_E_NOMEM;
    }
    size_t off = PBFT_BLOCK_HEADER_BYTES;
    for (uint32_t i = 0; i < ntx; i++) {
        keys_sha256(txs[i].p, txs[i].n, h[i]);
        be32(out + off, (uint32_t)txs[i].n);
        memcpy(out + off + 4, txs[i].p, txs[i].n);
        off += 4 + txs[i].n;
    }
    out[0] = PBFT_WIRE_VERSION;
    be64(out + 1, height);
    be64(out + 9, view);
    be16(out + 17, proposer);
    be64(out + 19, timestamp_ms);
    keys_merkle_root((const uint8_t(*)[KEYS_HASH_BYTES])h, ntx, out + 27);
    be32(out + 59, ntx);
    free(h);
    *len = total;
    return PBFT_OK;
}

void pbft_chain_next(const pbft_digest *prev, const pbft_digest *d, pbft_digest *out)
{
    keys_sha256_ctx c;
    keys_sha256_init(&c);
    keys_sha256_update(&c, tag_chn, sizeof tag_chn);
    keys_sha256_update(&c, prev->b, 32);
    keys_sha256_update(&c, d->b, 32);
    keys_sha256_final(&c, out->b);
}

/* ---- signed messages and frames ----------------------------------------------------- */

/* env_parse parses exactly n bytes as a signed message, followed (frame = true) by the
 * attachment field, and checks the header, the type (== want_type unless want_type is 0)
 * and the body. */
static int env_parse(const uint8_t *p, size_t n, bool frame, uint8_t want_type, pbft_env *out)
{
    if (n > PBFT_MAX_MSG_BYTES)
        return PBFT_E_TOO_LARGE;
    rd r = {p, n, 0};
    pbft_env e;
    memset(&e, 0, sizeof e);
    uint8_t version;
    uint32_t body_len;
    pbft_span s;
    int rc;

    if ((rc = rd_u8(&r, &version)) != PBFT_OK)
        return rc;
    if (version != PBFT_WIRE_VERSION)
        return PBFT_E_VERSION;
    if ((rc = rd_u8(&r, &e.type)) != PBFT_OK)
        return rc;
    if (e.type == 0 || e.type > PBFT_MSG__MAX)
        return PBFT_E_TYPE;
    if (want_type != 0 && e.type != want_type)
        return PBFT_E_TYPE;
    if ((rc = rd_u16(&r, &e.sender)) != PBFT_OK || (rc = rd_u32(&r, &body_len)) != PBFT_OK ||
        (rc = rd_span(&r, body_len, &e.body)) != PBFT_OK)
        return rc;
    e.signed_part.p = p;
    e.signed_part.n = r.off;
    if ((rc = rd_span(&r, KEYS_SIG_BYTES, &s)) != PBFT_OK)
        return rc;
    e.sig = s.p;
    e.whole.p = p;
    e.whole.n = r.off;
    if (frame) {
        uint32_t attach_len;
        if ((rc = rd_u32(&r, &attach_len)) != PBFT_OK)
            return rc;
        if (attach_len != 0 && e.type != PBFT_MSG_PREPREPARE)
            return PBFT_E_NONCANONICAL;
        if (attach_len > PBFT_MAX_BLOCK_BYTES)
            return PBFT_E_TOO_LARGE;
        if ((rc = rd_span(&r, attach_len, &e.attach)) != PBFT_OK)
            return rc;
        if (attach_len == 0)
            e.attach.p = NULL;
    }
    if ((rc = rd_end(&r)) != PBFT_OK)
        return rc;
    if ((rc = pbft_body_check(e.type, e.body)) != PBFT_OK)
        return rc;
    *out = e;
    return PBFT_OK;
}

int pbft_frame_decode(const uint8_t *p, size_t n, pbft_env *out)
{
    return env_parse(p, n, true, 0, out);
}

int pbft_signed_decode(const uint8_t *p, size_t n, uint8_t want_type, pbft_env *out)
{
    if (want_type == 0 || want_type > PBFT_MSG__MAX)
        return PBFT_E_TYPE;
    return env_parse(p, n, false, want_type, out);
}

bool pbft_env_verify(const pbft_env *e, const uint8_t chain[32], const uint8_t pk[32])
{
    uint8_t in[SIGN_INPUT];
    sign_input(tag_msg, chain, e->signed_part.p, e->signed_part.n, in);
    return keys_verify(pk, in, sizeof in, e->sig);
}

/* ---- bodies ------------------------------------------------------------------------- */

int pbft_vote_decode(pbft_span body, pbft_vote *out)
{
    rd r = {body.p, body.n, 0};
    pbft_vote v;
    int rc;
    if ((rc = rd_u64(&r, &v.view)) != PBFT_OK || (rc = rd_u64(&r, &v.seq)) != PBFT_OK ||
        (rc = rd_digest(&r, &v.d)) != PBFT_OK || (rc = rd_end(&r)) != PBFT_OK)
        return rc;
    *out = v;
    return PBFT_OK;
}

int pbft_ckpt_decode(pbft_span body, pbft_ckpt *out)
{
    rd r = {body.p, body.n, 0};
    pbft_ckpt c;
    int rc;
    if ((rc = rd_u64(&r, &c.seq)) != PBFT_OK || (rc = rd_digest(&r, &c.d)) != PBFT_OK ||
        (rc = rd_end(&r)) != PBFT_OK)
        return rc;
    *out = c;
    return PBFT_OK;
}

/* Canonical order of a list's elements. */
enum {
    ORDER_SENDER = 1, /* lists of votes: strictly ascending sender */
    ORDER_SEQ = 2,    /* the NEW-VIEW O set: strictly ascending sequence number */
};

/* list_parse reads "count u16, count times {len u32, signed message of type}" from r,
 * structure-checking every element and its order. */
static int list_parse(rd *r, uint8_t type, uint16_t max, int order, pbft_list *out)
{
    uint16_t count;
    int rc;
    if ((rc = rd_u16(r, &count)) != PBFT_OK)
        return rc;
    if (count > max)
        return PBFT_E_TOO_LARGE;
    size_t start = r->off;
    uint64_t prev = 0;
    for (uint16_t i = 0; i < count; i++) {
        uint32_t len;
        pbft_span m;
        pbft_env e;
        if ((rc = rd_u32(r, &len)) != PBFT_OK || (rc = rd_span(r, len, &m)) != PBFT_OK)
            return rc;
        if ((rc = pbft_signed_decode(m.p, m.n, type, &e)) != PBFT_OK)
            return rc;
        /* The body was checked above: a vote body is 48 bytes with seq at offset 8. */
        uint64_t key = order == ORDER_SENDER ? e.sender : pbft_get_u64(e.body.p + 8);
        if (i > 0 && key <= prev)
            return PBFT_E_NONCANONICAL;
        prev = key;
    }
    out->count = count;
    out->region.p = r->p + start;
    out->region.n = r->off - start;
    return PBFT_OK;
}

int pbft_viewchange_decode(pbft_span body, pbft_viewchange *out)
{
    rd r = {body.p, body.n, 0};
    pbft_viewchange vc;
    memset(&vc, 0, sizeof vc);
    int rc;
    if ((rc = rd_u64(&r, &vc.new_view)) != PBFT_OK ||
        (rc = rd_u64(&r, &vc.stable_seq)) != PBFT_OK ||
        (rc = rd_digest(&r, &vc.stable_d)) != PBFT_OK ||
        (rc = list_parse(&r, PBFT_MSG_CHECKPOINT, PBFT_MAX_N, ORDER_SENDER, &vc.ckpts)) !=
            PBFT_OK ||
        (rc = rd_u16(&r, &vc.n_pcert)) != PBFT_OK)
        return rc;
    if (vc.n_pcert > PBFT_MAX_WINDOW)
        return PBFT_E_TOO_LARGE;
    size_t start = r.off;
    uint64_t prev_seq = 0;
    for (uint16_t i = 0; i < vc.n_pcert; i++) {
        uint32_t len;
        pbft_span pp;
        pbft_env e;
        pbft_list prepares;
        if ((rc = rd_u32(&r, &len)) != PBFT_OK || (rc = rd_span(&r, len, &pp)) != PBFT_OK ||
            (rc = pbft_signed_decode(pp.p, pp.n, PBFT_MSG_PREPREPARE, &e)) != PBFT_OK ||
            (rc = list_parse(&r, PBFT_MSG_PREPARE, PBFT_MAX_N, ORDER_SENDER, &prepares)) != PBFT_OK)
            return rc;
        /* Canonical: one prepared certificate per sequence number, ascending. */
        uint64_t seq = pbft_get_u64(e.body.p + 8);
        if (i > 0 && seq <= prev_seq)
            return PBFT_E_NONCANONICAL;
        prev_seq = seq;
    }
    if ((rc = rd_end(&r)) != PBFT_OK)
        return rc;
    vc.pcerts.p = body.p + start;
    vc.pcerts.n = r.off - start;
    *out = vc;
    return PBFT_OK;
}

int pbft_newview_decode(pbft_span body, pbft_newview *out)
{
    rd r = {body.p, body.n, 0};
    pbft_newview nv;
    int rc;
    if ((rc = rd_u64(&r, &nv.view)) != PBFT_OK ||
        (rc = list_parse(&r, PBFT_MSG_VIEWCHANGE, PBFT_MAX_N, ORDER_SENDER, &nv.vcs)) != PBFT_OK ||
        (rc = list_parse(&r, PBFT_MSG_PREPREPARE, PBFT_MAX_WINDOW, ORDER_SEQ, &nv.pps)) !=
            PBFT_OK ||
        (rc = rd_end(&r)) != PBFT_OK)
        return rc;
    *out = nv;
    return PBFT_OK;
}

int pbft_state_req_decode(pbft_span body, pbft_state_req *out)
{
    rd r = {body.p, body.n, 0};
    pbft_state_req q;
    int rc;
    if ((rc = rd_u64(&r, &q.from_seq)) != PBFT_OK || (rc = rd_u64(&r, &q.to_seq)) != PBFT_OK ||
        (rc = rd_digest(&r, &q.d)) != PBFT_OK || (rc = rd_end(&r)) != PBFT_OK)
        return rc;
    if (q.from_seq > q.to_seq)
        return PBFT_E_NONCANONICAL;
    static const uint8_t zero[32] = {0};
    if (memcmp(q.d.b, zero, 32) != 0 && q.from_seq != q.to_seq)
        return PBFT_E_NONCANONICAL;
    *out = q;
    return PBFT_OK;
}

int pbft_state_rep_decode(pbft_span body, pbft_state_rep *out)
{
    rd r = {body.p, body.n, 0};
    pbft_state_rep sr;
    int rc;
    if ((rc = rd_u16(&r, &sr.n)) != PBFT_OK)
        return rc;
    if (sr.n > PBFT_MAX_STATE_BLOCKS)
        return PBFT_E_TOO_LARGE;
    size_t start = r.off;
    for (uint16_t i = 0; i < sr.n; i++) {
        uint32_t len;
        pbft_span blk;
        pbft_block b;
        pbft_list commits;
        if ((rc = rd_u32(&r, &len)) != PBFT_OK)
            return rc;
        if (len > PBFT_MAX_BLOCK_BYTES)
            return PBFT_E_TOO_LARGE;
        if ((rc = rd_span(&r, len, &blk)) != PBFT_OK ||
            (rc = pbft_block_decode(blk.p, blk.n, &b)) != PBFT_OK ||
            (rc = list_parse(&r, PBFT_MSG_COMMIT, PBFT_MAX_N, ORDER_SENDER, &commits)) != PBFT_OK)
            return rc;
    }
    if ((rc = rd_end(&r)) != PBFT_OK)
        return rc;
    sr.entries.p = body.p + start;
    sr.entries.n = r.off - start;
    *out = sr;
    return PBFT_OK;
}

int pbft_request_decode(pbft_span body, pbft_span *tx)
{
    rd r = {body.p, body.n, 0};
    uint32_t len;
    pbft_span s;
    pbft_tx t;
    int rc;
    if ((rc = rd_u32(&r, &len)) != PBFT_OK)
        return rc;
    if (len == 0)
        return PBFT_E_NONCANONICAL;
    if (len > PBFT_MAX_TX_BYTES)
        return PBFT_E_TOO_LARGE;
    if ((rc = rd_span(&r, len, &s)) != PBFT_OK || (rc = rd_end(&r)) != PBFT_OK ||
        (rc = pbft_tx_decode(s.p, s.n, &t)) != PBFT_OK)
        return rc;
    *tx = s;
    return PBFT_OK;
}

int pbft_complaint_decode(pbft_span body, pbft_complaint_msg *out)
{
    rd r = {body.p, body.n, 0};
    pbft_complaint_msg c;
    int rc;
    if ((rc = rd_u64(&r, &c.view)) != PBFT_OK || (rc = rd_u8(&r, &c.reason)) != PBFT_OK ||
        (rc = rd_end(&r)) != PBFT_OK)
        return rc;
    if (c.reason >= PBFT_COMPLAINT_REASONS)
        return PBFT_E_NONCANONICAL;
    *out = c;
    return PBFT_OK;
}

int pbft_body_check(uint8_t type, pbft_span body)
{
    switch (type) {
    case PBFT_MSG_PREPREPARE:
    case PBFT_MSG_PREPARE:
    case PBFT_MSG_COMMIT: {
        pbft_vote v;
        return pbft_vote_decode(body, &v);
    }
    case PBFT_MSG_CHECKPOINT: {
        pbft_ckpt c;
        return pbft_ckpt_decode(body, &c);
    }
    case PBFT_MSG_VIEWCHANGE: {
        pbft_viewchange vc;
        return pbft_viewchange_decode(body, &vc);
    }
    case PBFT_MSG_NEWVIEW: {
        pbft_newview nv;
        return pbft_newview_decode(body, &nv);
    }
    case PBFT_MSG_STATE_REQ: {
        pbft_state_req q;
        return pbft_state_req_decode(body, &q);
    }
    case PBFT_MSG_STATE_REP: {
        pbft_state_rep sr;
        return pbft_state_rep_decode(body, &sr);
    }
    case PBFT_MSG_REQUEST: {
        pbft_span tx;
        return pbft_request_decode(body, &tx);
    }
    case PBFT_MSG_COMPLAINT: {
        pbft_complaint_msg c;
        return pbft_complaint_decode(body, &c);
    }
    default:
        return PBFT_E_TYPE;
    }
}

/* ---- iterators over validated regions ----------------------------------------------- */

/* list_skip reads one list (count, entries) at r's position into l. On validated input it
 * always succeeds; it still refuses to step outside the region. */
static bool list_skip(rd *r, pbft_list *l)
{
    uint16_t count;
    if (rd_u16(r, &count) != PBFT_OK)
        return false;
    size_t start = r->off;
    for (uint16_t i = 0; i < count; i++) {
        uint32_t len;
        pbft_span m;
        if (rd_u32(r, &len) != PBFT_OK || rd_span(r, len, &m) != PBFT_OK)
            return false;
    }
    l->count = count;
    l->region.p = r->p + start;
    l->region.n = r->off - start;
    return true;
}

bool pbft_list_next(const pbft_list *l, size_t *off, pbft_span *msg)
{
    if (*off > l->region.n)
        return false;
    rd r = {l->region.p, l->region.n, *off};
    uint32_t len;
    if (rd_u32(&r, &len) != PBFT_OK || rd_span(&r, len, msg) != PBFT_OK)
        return false;
    *off = r.off;
    return true;
}

bool pbft_commit_cert_verify(const pbft_list *cert, uint16_t n, const uint8_t chain[32],
                             const uint8_t (*pubkeys)[32], uint64_t seq, const pbft_digest *d,
                             uint64_t *view)
{
    if (n == 0 || n > PBFT_MAX_N)
        return false;
    uint16_t q = (uint16_t)(n - (n - 1) / 3);
    if (cert->count < q || cert->count > n)
        return false;
    size_t off = 0;
    pbft_span m;
    uint16_t seen = 0;
    uint64_t v0 = 0;
    int prev = -1;
    while (seen < cert->count && pbft_list_next(cert, &off, &m)) {
        pbft_env e;
        pbft_vote v;
        if (pbft_signed_decode(m.p, m.n, PBFT_MSG_COMMIT, &e) != PBFT_OK || e.sender >= n ||
            (int)e.sender <= prev || pbft_vote_decode(e.body, &v) != PBFT_OK)
            return false;
        if (v.seq != seq || memcmp(v.d.b, d->b, 32) != 0 || (seen > 0 && v.view != v0))
            return false;
        if (!pbft_env_verify(&e, chain, pubkeys[e.sender]))
            return false;
        v0 = v.view;
        prev = e.sender;
        seen++;
    }
    if (seen != cert->count || off != cert->region.n)
        return false;
    *view = v0;
    return true;
}

bool pbft_vc_next_pcert(const pbft_viewchange *vc, size_t *off, pbft_span *pp, pbft_list *prepares)
{
    if (*off > vc->pcerts.n)
        return false;
    rd r = {vc->pcerts.p, vc->pcerts.n, *off};
    uint32_t len;
    if (rd_u32(&r, &len) != PBFT_OK || rd_span(&r, len, pp) != PBFT_OK || !list_skip(&r, prepares))
        return false;
    *off = r.off;
    return true;
}

bool pbft_state_rep_next(const pbft_state_rep *sr, size_t *off, pbft_span *block,
                         pbft_list *commits)
{
    if (*off > sr->entries.n)
        return false;
    rd r = {sr->entries.p, sr->entries.n, *off};
    uint32_t len;
    if (rd_u32(&r, &len) != PBFT_OK || rd_span(&r, len, block) != PBFT_OK ||
        !list_skip(&r, commits))
        return false;
    *off = r.off;
    return true;
}

/* ---- the bounded output buffer ------------------------------------------------------ */

void pbft_wbuf_init(pbft_wbuf *w, size_t limit)
{
    w->p = NULL;
    w->len = 0;
    w->cap = 0;
    w->limit = limit;
    w->err = PBFT_OK;
}

void pbft_wbuf_free(pbft_wbuf *w)
{
    free(w->p);
    w->p = NULL;
    w->len = 0;
    w->cap = 0;
    w->err = PBFT_OK;
}

void pbft_wbuf_reset(pbft_wbuf *w)
{
    w->len = 0;
    w->err = PBFT_OK;
}

/* wbuf_reserve makes room for k more bytes, growing geometrically up to the limit. Returns
 * false (and sets err) if that would pass the limit or memory runs out. */
static bool wbuf_reserve(pbft_wbuf *w, size_t k)
{
    if (w->err != PBFT_OK)
        return false;
    if (w->len > w->limit || k > w->limit - w->len) {
        w->err = PBFT_E_NOMEM;
        return false;
    }
    size_t need = w->len + k; /* <= limit */
    if (need <= w->cap)
        return true;
    size_t ncap = w->cap < 64 ? 64 : w->cap;
    while (ncap < need)
        ncap = ncap > w->limit / 2 ? w->limit : ncap * 2;
    if (ncap > w->limit)
        ncap = w->limit;
    uint8_t *np = realloc(w->p, ncap);
    if (np == NULL) {
        w->err = PBFT_E_OOM;
        return false;
    }
    w->p = np;
    w->cap = ncap;
    return true;
}

void pbft_put_bytes(pbft_wbuf *w, const void *p, size_t n)
{
    if (!wbuf_reserve(w, n))
        return;
    if (n > 0)
        memcpy(w->p + w->len, p, n);
    w->len += n;
}

void pbft_put_u8(pbft_wbuf *w, uint8_t v)
{
    pbft_put_bytes(w, &v, 1);
}

void pbft_put_u16(pbft_wbuf *w, uint16_t v)
{
    uint8_t b[2];
    be16(b, v);
    pbft_put_bytes(w, b, sizeof b);
}

void pbft_put_u32(pbft_wbuf *w, uint32_t v)
{
    uint8_t b[4];
    be32(b, v);
    pbft_put_bytes(w, b, sizeof b);
}

void pbft_put_u64(pbft_wbuf *w, uint64_t v)
{
    uint8_t b[8];
    be64(b, v);
    pbft_put_bytes(w, b, sizeof b);
}

void pbft_put_elem(pbft_wbuf *w, const uint8_t *p, size_t n)
{
    /* Reserve length and bytes together so a failed element leaves no dangling prefix; the
     * second test keeps 4 + n from wrapping where size_t is 32 bits. */
    if (n > UINT32_MAX || n > SIZE_MAX - 4) {
        if (w->err == PBFT_OK)
            w->err = PBFT_E_NOMEM;
        return;
    }
    if (!wbuf_reserve(w, 4 + n))
        return;
    pbft_put_u32(w, (uint32_t)n);
    pbft_put_bytes(w, p, n);
}

size_t pbft_msg_begin(pbft_wbuf *w, uint8_t type, uint16_t sender)
{
    size_t start = w->len;
    pbft_put_u8(w, PBFT_WIRE_VERSION);
    pbft_put_u8(w, type);
    pbft_put_u16(w, sender);
    pbft_put_u32(w, 0); /* body_len, patched by pbft_msg_end */
    return start;
}

void pbft_msg_end(pbft_wbuf *w, size_t start, const uint8_t chain[32], const uint8_t sk[64])
{
    if (w->err != PBFT_OK)
        return;
    /* A start that does not point at a header written by pbft_msg_begin is a caller bug; it
     * is reported through err rather than by writing out of place. */
    if (start > w->len || w->len - start < 8 || w->len - start - 8 > UINT32_MAX) {
        w->err = PBFT_E_NOMEM;
        return;
    }
    if (!wbuf_reserve(w, KEYS_SIG_BYTES))
        return;
    be32(w->p + start + 4, (uint32_t)(w->len - start - 8));
    uint8_t in[SIGN_INPUT];
    sign_input(tag_msg, chain, w->p + start, w->len - start, in);
    keys_sign(sk, in, sizeof in, w->p + w->len);
    w->len += KEYS_SIG_BYTES;
}

void pbft_put_attach(pbft_wbuf *w, const uint8_t *attach, size_t n)
{
    pbft_put_elem(w, attach, n);
}

void pbft_put_vote_msg(pbft_wbuf *w, uint8_t type, uint16_t sender, const pbft_vote *v,
                       const uint8_t chain[32], const uint8_t sk[64])
{
    size_t start = pbft_msg_begin(w, type, sender);
    pbft_put_u64(w, v->view);
    pbft_put_u64(w, v->seq);
    pbft_put_bytes(w, v->d.b, 32);
    pbft_msg_end(w, start, chain, sk);
}

void pbft_put_ckpt_msg(pbft_wbuf *w, uint16_t sender, const pbft_ckpt *c, const uint8_t chain[32],
                       const uint8_t sk[64])
{
    size_t start = pbft_msg_begin(w, PBFT_MSG_CHECKPOINT, sender);
    pbft_put_u64(w, c->seq);
    pbft_put_bytes(w, c->d.b, 32);
    pbft_msg_end(w, start, chain, sk);
}
