/*
 * test_codec.c - the wire codec (consensus/msg.c): round trips for every type, every
 * truncation and extension, single-byte corruption against signatures, oversized lengths,
 * non-canonical inputs, the bounded output buffer, and the worked example of
 * docs/protocol.md (so the document cannot drift from the code).
 *
 * Every probe that feeds altered bytes to a decoder copies them into a heap block of exactly
 * that size, so AddressSanitizer reports any read past the end.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "consensus/msg.h"
#include "crypto/keys.h"

#define NKEYS 4

/* Test keys from fixed seeds (seed i = 32 bytes of 0x10 + i) and chain = SHA-256("pbft-test").
 * Written once by the group setup, read-only afterwards. */
static struct {
    uint8_t chain[32];
    uint8_t pk[NKEYS][32];
    uint8_t sk[NKEYS][64];
} F;

static int group_setup(void **state)
{
    (void)state;
    if (keys_init() != KEYS_OK)
        return -1;
    keys_sha256((const uint8_t *)"pbft-test", 9, F.chain);
    for (int i = 0; i < NKEYS; i++) {
        uint8_t seed[32];
        memset(seed, 0x10 + i, sizeof seed);
        if (keys_from_seed(seed, F.pk[i], F.sk[i]) != KEYS_OK)
            return -1;
    }
    return 0;
}

/* ---- helpers ------------------------------------------------------------------------ */

static pbft_digest dig(uint8_t fill)
{
    pbft_digest d;
    memset(d.b, fill, sizeof d.b);
    return d;
}

/* heap_copy copies n bytes into a heap block of exactly n bytes (1 if n == 0). */
static uint8_t *heap_copy(const uint8_t *p, size_t n)
{
    uint8_t *q = malloc(n > 0 ? n : 1);
    assert_non_null(q);
    if (n > 0)
        memcpy(q, p, n);
    return q;
}

static size_t make_transfer(uint16_t who, uint64_t nonce, uint64_t amount, uint8_t *out, size_t cap)
{
    uint8_t to[32];
    size_t len = 0;
    memset(to, 0xA0, sizeof to);
    assert_int_equal(pbft_tx_encode_transfer(F.chain, F.sk[who], nonce, to, amount, out, cap, &len),
                     PBFT_OK);
    return len;
}

static size_t make_put(uint16_t who, uint64_t nonce, size_t key_len, size_t value_len, uint8_t *out,
                       size_t cap)
{
    uint8_t key[PBFT_MAX_KEY_BYTES], value[PBFT_MAX_VALUE_BYTES];
    size_t len = 0;
    for (size_t i = 0; i < key_len; i++)
        key[i] = (uint8_t)('a' + i % 26);
    for (size_t i = 0; i < value_len; i++)
        value[i] = (uint8_t)(i * 7);
    assert_int_equal(pbft_tx_encode_put(F.chain, F.sk[who], nonce, key, key_len, value, value_len,
                                        out, cap, &len),
                     PBFT_OK);
    return len;
}

/* make_block encodes a block of ntx (<= 8) transactions, alternately transfers and puts,
 * into a heap buffer (caller frees). */
static uint8_t *make_block(uint64_t height, uint32_t ntx, size_t *len)
{
    static const size_t tx_cap = 512;
    uint8_t txbuf[8][512];
    pbft_span txs[8];
    assert_true(ntx <= 8);
    for (uint32_t i = 0; i < ntx; i++) {
        uint16_t who = (uint16_t)(i % NKEYS);
        txs[i].p = txbuf[i];
        txs[i].n = i % 2 == 0 ? make_transfer(who, height * 10 + i, 100 + i, txbuf[i], tx_cap)
                              : make_put(who, height * 10 + i, 5, 20 + i, txbuf[i], tx_cap);
    }
    size_t cap = 4096;
    uint8_t *out = malloc(cap);
    assert_non_null(out);
    assert_int_equal(
        pbft_block_encode(height, 2, 1, 1700000000000u + height, txs, ntx, out, cap, len), PBFT_OK);
    return out;
}

static pbft_digest block_digest_of(const uint8_t *p, size_t n)
{
    pbft_block b;
    pbft_digest d;
    assert_int_equal(pbft_block_decode(p, n, &b), PBFT_OK);
    pbft_block_digest(&b, &d);
    return d;
}

/* embed_vote appends one list element: a signed vote (no attachment). */
static void embed_vote(pbft_wbuf *w, uint8_t type, uint16_t sender, uint64_t view, uint64_t seq,
                       pbft_digest d)
{
    pbft_wbuf t;
    pbft_vote v = {view, seq, d};
    pbft_wbuf_init(&t, PBFT_MAX_MSG_BYTES);
    pbft_put_vote_msg(&t, type, sender, &v, F.chain, F.sk[sender]);
    assert_int_equal(t.err, PBFT_OK);
    pbft_put_elem(w, t.p, t.len);
    pbft_wbuf_free(&t);
}

static void embed_ckpt(pbft_wbuf *w, uint16_t sender, uint64_t seq, pbft_digest d)
{
    pbft_wbuf t;
    pbft_ckpt c = {seq, d};
    pbft_wbuf_init(&t, PBFT_MAX_MSG_BYTES);
    pbft_put_ckpt_msg(&t, sender, &c, F.chain, F.sk[sender]);
    assert_int_equal(t.err, PBFT_OK);
    pbft_put_elem(w, t.p, t.len);
    pbft_wbuf_free(&t);
}

/* put_vc_body: VIEW-CHANGE to new_view; stable checkpoint 4 proven by CHECKPOINTs from 0, 1
 * and 2; prepared certificates for seq 5 and 6 of view 0 (pre-prepare by replica 0, prepares
 * by 1 and 2). */
static void put_vc_body(pbft_wbuf *w, uint64_t new_view)
{
    pbft_put_u64(w, new_view);
    pbft_put_u64(w, 4);
    pbft_put_bytes(w, dig(0x44).b, 32);
    pbft_put_u16(w, 3);
    for (uint16_t s = 0; s < 3; s++)
        embed_ckpt(w, s, 4, dig(0x44));
    pbft_put_u16(w, 2);
    for (uint64_t seq = 5; seq <= 6; seq++) {
        pbft_digest d = dig((uint8_t)seq);
        embed_vote(w, PBFT_MSG_PREPREPARE, 0, 0, seq, d);
        pbft_put_u16(w, 2);
        embed_vote(w, PBFT_MSG_PREPARE, 1, 0, seq, d);
        embed_vote(w, PBFT_MSG_PREPARE, 2, 0, seq, d);
    }
}

/* put_vc_msg appends a signed VIEW-CHANGE (no attachment field). */
static void put_vc_msg(pbft_wbuf *w, uint16_t sender, uint64_t new_view)
{
    size_t start = pbft_msg_begin(w, PBFT_MSG_VIEWCHANGE, sender);
    put_vc_body(w, new_view);
    pbft_msg_end(w, start, F.chain, F.sk[sender]);
}

/* put_nv_body: NEW-VIEW for view 1 with VIEW-CHANGEs from 1, 2, 3 and pre-prepares by the new
 * primary (1) for seq 5 and 6. */
static void put_nv_body(pbft_wbuf *w)
{
    pbft_put_u64(w, 1);
    pbft_put_u16(w, 3);
    for (uint16_t s = 1; s <= 3; s++) {
        pbft_wbuf t;
        pbft_wbuf_init(&t, PBFT_MAX_MSG_BYTES);
        put_vc_msg(&t, s, 1);
        assert_int_equal(t.err, PBFT_OK);
        pbft_put_elem(w, t.p, t.len);
        pbft_wbuf_free(&t);
    }
    pbft_put_u16(w, 2);
    embed_vote(w, PBFT_MSG_PREPREPARE, 1, 1, 5, dig(5));
    embed_vote(w, PBFT_MSG_PREPREPARE, 1, 1, 6, dig(6));
}

/* put_srep_body: STATE-REPLY with blocks 7 and 8 (2 transactions each), each with COMMITs
 * from 0, 1 and 2. */
static void put_srep_body(pbft_wbuf *w)
{
    pbft_put_u16(w, 2);
    for (uint64_t h = 7; h <= 8; h++) {
        size_t bl;
        uint8_t *blk = make_block(h, 2, &bl);
        pbft_digest d = block_digest_of(blk, bl);
        pbft_put_elem(w, blk, bl);
        pbft_put_u16(w, 3);
        for (uint16_t s = 0; s < 3; s++)
            embed_vote(w, PBFT_MSG_COMMIT, s, 0, h, d);
        free(blk);
    }
}

/* The catalogue: one valid frame of every type (two forms for PRE-PREPARE and STATE-REQ). */
enum {
    CAT_PP_BLOCK,
    CAT_PP_BARE,
    CAT_PREPARE,
    CAT_COMMIT,
    CAT_CHECKPOINT,
    CAT_VIEWCHANGE,
    CAT_NEWVIEW,
    CAT_SREQ_RANGE,
    CAT_SREQ_DIGEST,
    CAT_SREP,
    CAT_REQUEST,
    CAT_COMPLAINT,
    CAT__COUNT
};

/* build_frame writes catalogue frame `which` into w and returns its sender. */
static uint16_t build_frame(int which, pbft_wbuf *w)
{
    pbft_wbuf_init(w, PBFT_MAX_MSG_BYTES);
    uint16_t sender = 0;
    size_t start;
    switch (which) {
    case CAT_PP_BLOCK: {
        size_t bl;
        uint8_t *blk = make_block(9, 3, &bl);
        pbft_vote v = {2, 9, block_digest_of(blk, bl)};
        sender = 2;
        pbft_put_vote_msg(w, PBFT_MSG_PREPREPARE, sender, &v, F.chain, F.sk[sender]);
        pbft_put_attach(w, blk, bl);
        free(blk);
        return sender;
    }
    case CAT_PP_BARE: {
        pbft_vote v = {2, 10, dig(0x10)};
        sender = 2;
        pbft_put_vote_msg(w, PBFT_MSG_PREPREPARE, sender, &v, F.chain, F.sk[sender]);
        break;
    }
    case CAT_PREPARE:
    case CAT_COMMIT: {
        pbft_vote v = {3, 11, dig(0x11)};
        sender = 1;
        pbft_put_vote_msg(w, which == CAT_PREPARE ? PBFT_MSG_PREPARE : PBFT_MSG_COMMIT, sender, &v,
                          F.chain, F.sk[sender]);
        break;
    }
    case CAT_CHECKPOINT: {
        pbft_ckpt c = {128, dig(0xC4)};
        sender = 3;
        pbft_put_ckpt_msg(w, sender, &c, F.chain, F.sk[sender]);
        break;
    }
    case CAT_VIEWCHANGE:
        sender = 1;
        put_vc_msg(w, sender, 1);
        break;
    case CAT_NEWVIEW:
        sender = 1;
        start = pbft_msg_begin(w, PBFT_MSG_NEWVIEW, sender);
        put_nv_body(w);
        pbft_msg_end(w, start, F.chain, F.sk[sender]);
        break;
    case CAT_SREQ_RANGE:
    case CAT_SREQ_DIGEST:
        sender = 2;
        start = pbft_msg_begin(w, PBFT_MSG_STATE_REQ, sender);
        if (which == CAT_SREQ_RANGE) {
            pbft_put_u64(w, 3);
            pbft_put_u64(w, 9);
            pbft_put_bytes(w, dig(0).b, 32);
        } else {
            pbft_put_u64(w, 12);
            pbft_put_u64(w, 12);
            pbft_put_bytes(w, dig(0x5D).b, 32);
        }
        pbft_msg_end(w, start, F.chain, F.sk[sender]);
        break;
    case CAT_SREP:
        sender = 3;
        start = pbft_msg_begin(w, PBFT_MSG_STATE_REP, sender);
        put_srep_body(w);
        pbft_msg_end(w, start, F.chain, F.sk[sender]);
        break;
    case CAT_REQUEST: {
        uint8_t tx[512];
        size_t n = make_put(0, 77, 3, 9, tx, sizeof tx);
        sender = 2;
        start = pbft_msg_begin(w, PBFT_MSG_REQUEST, sender);
        pbft_put_elem(w, tx, n);
        pbft_msg_end(w, start, F.chain, F.sk[sender]);
        break;
    }
    case CAT_COMPLAINT:
        sender = 3;
        start = pbft_msg_begin(w, PBFT_MSG_COMPLAINT, sender);
        pbft_put_u64(w, 12);
        pbft_put_u8(w, 1);
        pbft_msg_end(w, start, F.chain, F.sk[sender]);
        break;
    default:
        fail();
    }
    pbft_put_attach(w, NULL, 0);
    assert_int_equal(w->err, PBFT_OK);
    return sender;
}

static const uint8_t cat_type[CAT__COUNT] = {
    PBFT_MSG_PREPREPARE, PBFT_MSG_PREPREPARE, PBFT_MSG_PREPARE, PBFT_MSG_COMMIT,
    PBFT_MSG_CHECKPOINT, PBFT_MSG_VIEWCHANGE, PBFT_MSG_NEWVIEW, PBFT_MSG_STATE_REQ,
    PBFT_MSG_STATE_REQ,  PBFT_MSG_STATE_REP,  PBFT_MSG_REQUEST, PBFT_MSG_COMPLAINT,
};

/* What a byte string is decoded as. */
enum { AS_TX, AS_BLOCK, AS_FRAME, AS_SIGNED };

static int decode_as(int as, uint8_t want, const uint8_t *p, size_t n)
{
    pbft_tx t;
    pbft_block b;
    pbft_env e;
    switch (as) {
    case AS_TX:
        return pbft_tx_decode(p, n, &t);
    case AS_BLOCK:
        return pbft_block_decode(p, n, &b);
    case AS_FRAME:
        return pbft_frame_decode(p, n, &e);
    default:
        return pbft_signed_decode(p, n, want, &e);
    }
}

/* check_cuts: the whole input decodes; every proper prefix is TRUNCATED; one extra byte
 * (0x00 or 0xFF) is TRAILING. */
static void check_cuts(int as, uint8_t want, const uint8_t *p, size_t n)
{
    uint8_t *q = heap_copy(p, n);
    assert_int_equal(decode_as(as, want, q, n), PBFT_OK);
    free(q);
    for (size_t len = 0; len < n; len++) {
        q = heap_copy(p, len);
        int rc = decode_as(as, want, q, len);
        if (rc != PBFT_E_TRUNCATED)
            fail_msg("prefix %zu of %zu: rc %d, want %d", len, n, rc, PBFT_E_TRUNCATED);
        free(q);
    }
    for (int x = 0; x < 2; x++) {
        q = malloc(n + 1);
        assert_non_null(q);
        memcpy(q, p, n);
        q[n] = x == 0 ? 0x00 : 0xFF;
        assert_int_equal(decode_as(as, want, q, n + 1), PBFT_E_TRAILING);
        free(q);
    }
}

/* flip_positions: every byte of inputs up to 2 KiB; for larger ones every byte of the first
 * 256 and the last 128, and a stride of 3 in between. */
static size_t flip_next(size_t i, size_t n)
{
    if (n <= 2048 || i < 256 || i + 128 >= n)
        return i + 1;
    return i + 3;
}

/* attach_rejected: the block in a PRE-PREPARE's attachment fails to decode, or no longer
 * matches the digest in the signed body (header digest or transaction root). */
static bool attach_rejected(const pbft_env *e)
{
    pbft_vote v;
    pbft_block b;
    pbft_digest d;
    assert_int_equal(pbft_vote_decode(e->body, &v), PBFT_OK);
    if (pbft_block_decode(e->attach.p, e->attach.n, &b) != PBFT_OK)
        return true;
    pbft_block_digest(&b, &d);
    if (memcmp(d.b, v.d.b, 32) != 0)
        return true;
    return pbft_block_check_root(&b, NULL) != PBFT_OK;
}

/* check_flips_frame: after flipping any one byte (xor 0x01 and xor 0xFF) the frame fails to
 * decode, or its signature fails, or (in the attachment) the block is rejected. */
static void check_flips_frame(const uint8_t *p, size_t n, const uint8_t pk[32])
{
    for (size_t i = 0; i < n; i = flip_next(i, n)) {
        for (int x = 0; x < 2; x++) {
            uint8_t *q = heap_copy(p, n);
            pbft_env e;
            q[i] ^= x == 0 ? 0x01 : 0xFF;
            if (pbft_frame_decode(q, n, &e) == PBFT_OK) {
                if (e.attach.n > 0 && i >= n - e.attach.n) {
                    /* The attachment is unsigned: the signature still holds, the block not. */
                    assert_true(pbft_env_verify(&e, F.chain, pk));
                    if (!attach_rejected(&e))
                        fail_msg("attachment byte %zu of %zu accepted", i, n);
                } else if (pbft_env_verify(&e, F.chain, pk)) {
                    fail_msg("byte %zu of %zu flipped, signature still verifies", i, n);
                }
            }
            free(q);
        }
    }
}

/* ---- transactions ------------------------------------------------------------------- */

/* A transfer decodes to the encoded fields, verifies, and re-encodes to identical bytes. */
static void test_tx_transfer_roundtrip_identical(void **state)
{
    (void)state;
    uint8_t buf[512], again[512], to[32];
    size_t n = make_transfer(1, 42, 123456789, buf, sizeof buf), n2;
    pbft_tx t;
    memset(to, 0xA0, sizeof to);
    assert_int_equal(n, 146);
    assert_int_equal(pbft_tx_decode(buf, n, &t), PBFT_OK);
    assert_int_equal(t.type, PBFT_TX_TRANSFER);
    assert_memory_equal(t.sender, F.pk[1], 32);
    assert_int_equal(t.nonce, 42);
    assert_memory_equal(t.to, to, 32);
    assert_int_equal(t.amount, 123456789);
    assert_ptr_equal(t.sig, buf + 82);
    assert_ptr_equal(t.unsigned_part.p, buf);
    assert_int_equal(t.unsigned_part.n, 82);
    assert_true(pbft_tx_verify(&t, F.chain));
    assert_int_equal(pbft_tx_encode_transfer(F.chain, F.sk[1], t.nonce, t.to, t.amount, again,
                                             sizeof again, &n2),
                     PBFT_OK);
    assert_int_equal(n2, n);
    assert_memory_equal(again, buf, n);
}

/* A put (and a put with an empty value and a maximal key/value) round-trips identically. */
static void test_tx_put_roundtrip_identical(void **state)
{
    (void)state;
    static const size_t shapes[3][2] = {
        {5, 11}, {1, 0}, {PBFT_MAX_KEY_BYTES, PBFT_MAX_VALUE_BYTES}};
    uint8_t *buf = malloc(PBFT_MAX_TX_BYTES), *again = malloc(PBFT_MAX_TX_BYTES);
    assert_non_null(buf);
    assert_non_null(again);
    for (int s = 0; s < 3; s++) {
        size_t kl = shapes[s][0], vl = shapes[s][1], n2;
        size_t n = make_put(2, 7, kl, vl, buf, PBFT_MAX_TX_BYTES);
        pbft_tx t;
        assert_int_equal(n, 42 + 2 + kl + 4 + vl + 64);
        assert_int_equal(pbft_tx_decode(buf, n, &t), PBFT_OK);
        assert_int_equal(t.type, PBFT_TX_PUT);
        assert_memory_equal(t.sender, F.pk[2], 32);
        assert_int_equal(t.nonce, 7);
        assert_int_equal(t.key.n, kl);
        assert_ptr_equal(t.key.p, buf + 44);
        assert_int_equal(t.value.n, vl);
        assert_ptr_equal(t.value.p, buf + 48 + kl);
        assert_int_equal(t.unsigned_part.n, n - 64);
        assert_ptr_equal(t.sig, buf + n - 64);
        assert_true(pbft_tx_verify(&t, F.chain));
        assert_int_equal(pbft_tx_encode_put(F.chain, F.sk[2], t.nonce, t.key.p, t.key.n, t.value.p,
                                            t.value.n, again, PBFT_MAX_TX_BYTES, &n2),
                         PBFT_OK);
        assert_int_equal(n2, n);
        assert_memory_equal(again, buf, n);
    }
    free(buf);
    free(again);
}

/* Every proper prefix of a transaction is TRUNCATED and one extra byte is TRAILING. */
static void test_tx_truncated_or_extended_rejected(void **state)
{
    (void)state;
    uint8_t buf[512];
    size_t n = make_transfer(0, 1, 2, buf, sizeof buf);
    check_cuts(AS_TX, 0, buf, n);
    n = make_put(3, 1, 17, 33, buf, sizeof buf);
    check_cuts(AS_TX, 0, buf, n);
    n = make_put(3, 1, 1, 0, buf, sizeof buf);
    check_cuts(AS_TX, 0, buf, n);
}

/* Flipping any byte of a transaction makes it fail to decode or fail its signature. */
static void test_tx_any_byte_flipped_rejected(void **state)
{
    (void)state;
    uint8_t buf[512];
    size_t ns[2];
    uint8_t bufs[2][512];
    ns[0] = make_transfer(0, 1, 2, bufs[0], sizeof bufs[0]);
    ns[1] = make_put(1, 3, 4, 5, bufs[1], sizeof bufs[1]);
    for (int k = 0; k < 2; k++) {
        for (size_t i = 0; i < ns[k]; i++) {
            for (int x = 0; x < 2; x++) {
                pbft_tx t;
                memcpy(buf, bufs[k], ns[k]);
                buf[i] ^= x == 0 ? 0x01 : 0xFF;
                uint8_t *q = heap_copy(buf, ns[k]);
                if (pbft_tx_decode(q, ns[k], &t) == PBFT_OK && pbft_tx_verify(&t, F.chain))
                    fail_msg("tx %d byte %zu flipped, still valid", k, i);
                free(q);
            }
        }
    }
}

/* A signature made for one chain does not verify on another (domain separation). */
static void test_tx_other_chain_rejected(void **state)
{
    (void)state;
    uint8_t buf[512], other[32];
    size_t n = make_transfer(0, 1, 2, buf, sizeof buf);
    pbft_tx t;
    memcpy(other, F.chain, 32);
    other[31] ^= 1;
    assert_int_equal(pbft_tx_decode(buf, n, &t), PBFT_OK);
    assert_true(pbft_tx_verify(&t, F.chain));
    assert_false(pbft_tx_verify(&t, other));
}

/* Version 2, an unknown type, key_len 0, key_len 257, value_len 4097 and an oversized input
 * each give their own code. */
static void test_tx_bad_fields_precise_codes(void **state)
{
    (void)state;
    uint8_t buf[512];
    pbft_tx t;
    size_t n = make_put(0, 1, 4, 4, buf, sizeof buf);

    buf[0] = 2;
    assert_int_equal(pbft_tx_decode(buf, n, &t), PBFT_E_VERSION);
    buf[0] = 1;
    buf[1] = 3;
    assert_int_equal(pbft_tx_decode(buf, n, &t), PBFT_E_TYPE);
    buf[1] = 0;
    assert_int_equal(pbft_tx_decode(buf, n, &t), PBFT_E_TYPE);
    buf[1] = PBFT_TX_PUT;
    buf[42] = 0;
    buf[43] = 0; /* key_len 0 */
    assert_int_equal(pbft_tx_decode(buf, n, &t), PBFT_E_NONCANONICAL);
    buf[42] = 0x01;
    buf[43] = 0x01; /* key_len 257 */
    assert_int_equal(pbft_tx_decode(buf, n, &t), PBFT_E_TOO_LARGE);
    buf[42] = 0xFF;
    buf[43] = 0xFF;
    assert_int_equal(pbft_tx_decode(buf, n, &t), PBFT_E_TOO_LARGE);
    buf[42] = 0;
    buf[43] = 4;
    buf[48] = 0;
    buf[49] = 0;
    buf[50] = 0x10;
    buf[51] = 0x01; /* value_len 4097 */
    assert_int_equal(pbft_tx_decode(buf, n, &t), PBFT_E_TOO_LARGE);
    buf[48] = buf[49] = buf[50] = buf[51] = 0xFF;
    assert_int_equal(pbft_tx_decode(buf, n, &t), PBFT_E_TOO_LARGE);

    uint8_t *big = calloc(1, PBFT_MAX_TX_BYTES + 1);
    assert_non_null(big);
    big[0] = 1;
    big[1] = 1;
    assert_int_equal(pbft_tx_decode(big, PBFT_MAX_TX_BYTES + 1, &t), PBFT_E_TOO_LARGE);
    free(big);
}

/* The encoders refuse a short buffer (NOMEM), long key/value (TOO_LARGE), key_len 0. */
static void test_tx_encode_limits_rejected(void **state)
{
    (void)state;
    uint8_t buf[512], to[32] = {0}, key[PBFT_MAX_KEY_BYTES + 1] = {0};
    size_t len = 99;
    assert_int_equal(pbft_tx_encode_transfer(F.chain, F.sk[0], 0, to, 1, buf, 145, &len),
                     PBFT_E_NOMEM);
    assert_int_equal(len, 0);
    assert_int_equal(pbft_tx_encode_put(F.chain, F.sk[0], 0, key, 3, key, 3, buf, 117, &len),
                     PBFT_E_NOMEM);
    assert_int_equal(pbft_tx_encode_put(F.chain, F.sk[0], 0, key, 3, key, 3, buf, 118, &len),
                     PBFT_OK);
    assert_int_equal(len, 118);
    assert_int_equal(pbft_tx_encode_put(F.chain, F.sk[0], 0, key, PBFT_MAX_KEY_BYTES + 1, key, 0,
                                        buf, sizeof buf, &len),
                     PBFT_E_TOO_LARGE);
    assert_int_equal(pbft_tx_encode_put(F.chain, F.sk[0], 0, key, 1, key, PBFT_MAX_VALUE_BYTES + 1,
                                        buf, sizeof buf, &len),
                     PBFT_E_TOO_LARGE);
    assert_int_equal(pbft_tx_encode_put(F.chain, F.sk[0], 0, key, 0, key, 1, buf, sizeof buf, &len),
                     PBFT_E_NONCANONICAL);
}

/* The worked example of docs/protocol.md: exact bytes, signature input and hash. */
static void test_tx_worked_example_matches_document(void **state)
{
    (void)state;
    static const char want_pk[] =
        "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c";
    static const char want_chain[] =
        "ca0fcdcdfeff65849eb9e620a0a9980abc41b21defb21ce7954d4ec99d343207";
    static const char want_tx[] =
        "0101"
        "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c"
        "0000000000000000"
        "0202020202020202020202020202020202020202020202020202020202020202"
        "00000000000003e8"
        "b4c8b18a248744f359db938bbc1ef8f07ab6954a4d5fe099c4f8adec2a959a0d"
        "c6c7fe3280bf8663c719832c7bff5f620fe79e26d9643894840d7f68c27f9e04";
    static const char want_input[] =
        "504246542d545831"
        "ca0fcdcdfeff65849eb9e620a0a9980abc41b21defb21ce7954d4ec99d343207"
        "6e5eeb1243e72b7f12b480a73bd7929c28e8eb9a51bd0519e118e2cb36abfb2b";
    static const char want_hash[] =
        "a50ef2b529313c44a830961317101b326efd224875b63f1d921c29be88d7979e";
    static const char want_block_digest[] =
        "533f48f8dcb56d87ff420eed412063ab651258eb3869c8b603b0b39ca356bdd6";
    static const char want_chain1[] =
        "ac007b0dcf399e274b097310628d0e727a9cc876315634bd668c9a017a4ad360";
    uint8_t seed[32], pk[32], sk[64], chain[32], to[32], tx[256], in[72], blk[512];
    char hex[1024];
    size_t n, bn;
    pbft_digest h, bd, genesis, c1;
    pbft_block b;

    memset(seed, 0x01, sizeof seed);
    memset(to, 0x02, sizeof to);
    assert_int_equal(keys_from_seed(seed, pk, sk), KEYS_OK);
    keys_sha256((const uint8_t *)"pbft-test", 9, chain);
    keys_hex_encode(pk, 32, hex);
    assert_string_equal(hex, want_pk);
    keys_hex_encode(chain, 32, hex);
    assert_string_equal(hex, want_chain);

    assert_int_equal(pbft_tx_encode_transfer(chain, sk, 0, to, 1000, tx, sizeof tx, &n), PBFT_OK);
    keys_hex_encode(tx, n, hex);
    assert_string_equal(hex, want_tx);

    memcpy(in, "PBFT-TX1", 8);
    memcpy(in + 8, chain, 32);
    keys_sha256(tx, 82, in + 40);
    keys_hex_encode(in, sizeof in, hex);
    assert_string_equal(hex, want_input);
    assert_true(keys_verify(pk, in, sizeof in, tx + 82));

    pbft_tx_hash(tx, n, &h);
    keys_hex_encode(h.b, 32, hex);
    assert_string_equal(hex, want_hash);

    /* The document's block example: this transaction alone at height 1. */
    pbft_span s = {tx, n};
    assert_int_equal(pbft_block_encode(1, 0, 0, 1700000000000u, &s, 1, blk, sizeof blk, &bn),
                     PBFT_OK);
    assert_int_equal(bn, 63 + 4 + 146);
    assert_int_equal(pbft_block_decode(blk, bn, &b), PBFT_OK);
    pbft_block_digest(&b, &bd);
    keys_hex_encode(bd.b, 32, hex);
    assert_string_equal(hex, want_block_digest);
    memset(genesis.b, 0, 32);
    pbft_chain_next(&genesis, &bd, &c1);
    keys_hex_encode(c1.b, 32, hex);
    assert_string_equal(hex, want_chain1);
}

/* ---- blocks ------------------------------------------------------------------------- */

/* Blocks of 0, 1 and 5 transactions decode to their fields, iterate their transactions,
 * check their root, and re-encode to identical bytes. */
static void test_block_roundtrip_identical(void **state)
{
    (void)state;
    static const uint32_t counts[3] = {0, 1, 5};
    for (int k = 0; k < 3; k++) {
        size_t n, n2;
        uint8_t *p = make_block(20 + (uint64_t)k, counts[k], &n);
        pbft_block b;
        pbft_span txs[8], tx;
        pbft_digest hashes[8], d, want;
        size_t off = 0;
        uint32_t i = 0;

        assert_int_equal(pbft_block_decode(p, n, &b), PBFT_OK);
        assert_int_equal(b.height, 20 + (uint64_t)k);
        assert_int_equal(b.view, 2);
        assert_int_equal(b.proposer, 1);
        assert_int_equal(b.timestamp_ms, 1700000000000u + 20 + (uint64_t)k);
        assert_int_equal(b.ntx, counts[k]);
        assert_ptr_equal(b.header.p, p);
        assert_int_equal(b.header.n, PBFT_BLOCK_HEADER_BYTES);
        assert_ptr_equal(b.txs.p, p + 63);
        assert_int_equal(b.txs.n, n - 63);
        while (pbft_block_next_tx(&b, &off, &tx)) {
            pbft_tx t;
            assert_true(i < counts[k]);
            assert_int_equal(pbft_tx_decode(tx.p, tx.n, &t), PBFT_OK);
            assert_true(pbft_tx_verify(&t, F.chain));
            txs[i++] = tx;
        }
        assert_int_equal(i, counts[k]);
        assert_int_equal(pbft_block_check_root(&b, hashes), PBFT_OK);
        for (i = 0; i < counts[k]; i++) {
            pbft_tx_hash(txs[i].p, txs[i].n, &d);
            assert_memory_equal(d.b, hashes[i].b, 32);
        }
        /* digest = SHA-256("PBFT-BLK" || header), computed here the plain way. */
        uint8_t pre[8 + 63];
        memcpy(pre, "PBFT-BLK", 8);
        memcpy(pre + 8, p, 63);
        keys_sha256(pre, sizeof pre, want.b);
        pbft_block_digest(&b, &d);
        assert_memory_equal(d.b, want.b, 32);

        uint8_t *again = malloc(n);
        assert_non_null(again);
        assert_int_equal(pbft_block_encode(b.height, b.view, b.proposer, b.timestamp_ms, txs, b.ntx,
                                           again, n, &n2),
                         PBFT_OK);
        assert_int_equal(n2, n);
        assert_memory_equal(again, p, n);
        free(again);
        check_cuts(AS_BLOCK, 0, p, n);
        free(p);
    }
}

/* An empty block's root is MTH({}) = SHA-256(""), as for a null request. */
static void test_block_empty_root_is_sha256_empty(void **state)
{
    (void)state;
    size_t n;
    uint8_t *p = make_block(1, 0, &n);
    uint8_t want[32];
    keys_sha256(NULL, 0, want);
    assert_int_equal(n, 63);
    assert_memory_equal(p + 27, want, 32);
    free(p);
}

/* Flipping any byte of a block makes it fail to decode, change its digest, or fail its
 * transaction root. */
static void test_block_any_byte_flipped_detected(void **state)
{
    (void)state;
    size_t n;
    uint8_t *p = make_block(3, 3, &n);
    pbft_digest orig = block_digest_of(p, n);
    for (size_t i = 0; i < n; i++) {
        uint8_t *q = heap_copy(p, n);
        pbft_block b;
        pbft_digest d;
        q[i] ^= 0x01;
        if (pbft_block_decode(q, n, &b) == PBFT_OK) {
            pbft_block_digest(&b, &d);
            if (memcmp(d.b, orig.b, 32) == 0 && pbft_block_check_root(&b, NULL) == PBFT_OK)
                fail_msg("block byte %zu flipped, undetected", i);
        }
        free(q);
    }
    free(p);
}

/* Height 0, version 2, ntx above the limit, tx_len 0 or above the limit, an invalid
 * transaction inside, a tx_root that does not match: each has its own code. */
static void test_block_bad_fields_precise_codes(void **state)
{
    (void)state;
    size_t n;
    uint8_t *p = make_block(5, 1, &n);
    pbft_block b;

    p[8] = 0; /* height 5 -> 0 */
    assert_int_equal(pbft_block_decode(p, n, &b), PBFT_E_NONCANONICAL);
    p[8] = 5;
    p[0] = 2;
    assert_int_equal(pbft_block_decode(p, n, &b), PBFT_E_VERSION);
    p[0] = 1;
    memcpy(p + 59, "\x00\x00\x40\x01", 4); /* ntx 16385 */
    assert_int_equal(pbft_block_decode(p, n, &b), PBFT_E_TOO_LARGE);
    memcpy(p + 59, "\xFF\xFF\xFF\xFF", 4);
    assert_int_equal(pbft_block_decode(p, n, &b), PBFT_E_TOO_LARGE);
    memcpy(p + 59, "\x00\x00\x00\x02", 4); /* ntx 2 but one transaction */
    assert_int_equal(pbft_block_decode(p, n, &b), PBFT_E_TRUNCATED);
    memcpy(p + 59, "\x00\x00\x00\x00", 4); /* ntx 0 but one transaction */
    assert_int_equal(pbft_block_decode(p, n, &b), PBFT_E_TRAILING);
    memcpy(p + 59, "\x00\x00\x00\x01", 4);
    memcpy(p + 63, "\x00\x00\x00\x00", 4); /* tx_len 0 */
    assert_int_equal(pbft_block_decode(p, n, &b), PBFT_E_NONCANONICAL);
    memcpy(p + 63, "\x00\x00\x20\x01", 4); /* tx_len 8193 */
    assert_int_equal(pbft_block_decode(p, n, &b), PBFT_E_TOO_LARGE);
    memcpy(p + 63, "\xFF\xFF\xFF\xFF", 4);
    assert_int_equal(pbft_block_decode(p, n, &b), PBFT_E_TOO_LARGE);
    memcpy(p + 63, "\x00\x00\x00\x92", 4); /* restore 146 */
    assert_int_equal(pbft_block_decode(p, n, &b), PBFT_OK);
    p[67 + 1] = 9; /* the transaction's type */
    assert_int_equal(pbft_block_decode(p, n, &b), PBFT_E_TYPE);
    p[67 + 1] = PBFT_TX_TRANSFER;
    p[27] ^= 1; /* tx_root */
    assert_int_equal(pbft_block_decode(p, n, &b), PBFT_OK);
    assert_int_equal(pbft_block_check_root(&b, NULL), PBFT_E_DIGEST);
    free(p);

    uint8_t *big = calloc(1, (size_t)PBFT_MAX_BLOCK_BYTES + 1);
    assert_non_null(big);
    assert_int_equal(pbft_block_decode(big, (size_t)PBFT_MAX_BLOCK_BYTES + 1, &b),
                     PBFT_E_TOO_LARGE);
    free(big);
}

/* The block encoder refuses a short buffer, too many transactions, height 0 and a malformed
 * transaction. */
static void test_block_encode_limits_rejected(void **state)
{
    (void)state;
    uint8_t tx[512], out[1024];
    size_t len;
    size_t n = make_transfer(0, 0, 1, tx, sizeof tx);
    pbft_span s = {tx, n};
    assert_int_equal(pbft_block_encode(1, 0, 0, 0, &s, 1, out, 63 + 4 + n - 1, &len), PBFT_E_NOMEM);
    assert_int_equal(pbft_block_encode(1, 0, 0, 0, &s, 1, out, 63 + 4 + n, &len), PBFT_OK);
    assert_int_equal(
        pbft_block_encode(1, 0, 0, 0, &s, PBFT_MAX_BLOCK_TXS + 1, out, sizeof out, &len),
        PBFT_E_TOO_LARGE);
    assert_int_equal(pbft_block_encode(0, 0, 0, 0, &s, 1, out, sizeof out, &len),
                     PBFT_E_NONCANONICAL);
    s.n = n - 1;
    assert_int_equal(pbft_block_encode(1, 0, 0, 0, &s, 1, out, sizeof out, &len), PBFT_E_TRUNCATED);
}

/* chain_next is SHA-256("PBFT-CHN" || prev || d). */
static void test_chain_next_matches_definition(void **state)
{
    (void)state;
    pbft_digest prev = dig(0x33), d = dig(0x77), got;
    uint8_t pre[72], want[32];
    memcpy(pre, "PBFT-CHN", 8);
    memcpy(pre + 8, prev.b, 32);
    memcpy(pre + 40, d.b, 32);
    keys_sha256(pre, sizeof pre, want);
    pbft_chain_next(&prev, &d, &got);
    assert_memory_equal(got.b, want, 32);
}

/* ---- frames: round trips ------------------------------------------------------------ */

/* reframe: re-encode a decoded frame from its fields with body bytes supplied by the caller;
 * signing is deterministic, so the result must equal the original. */
static void assert_reframes(const pbft_env *e, const pbft_wbuf *body, const uint8_t *orig, size_t n)
{
    pbft_wbuf w;
    pbft_wbuf_init(&w, PBFT_MAX_MSG_BYTES);
    size_t start = pbft_msg_begin(&w, e->type, e->sender);
    pbft_put_bytes(&w, body->p, body->len);
    pbft_msg_end(&w, start, F.chain, F.sk[e->sender]);
    pbft_put_attach(&w, e->attach.p, e->attach.n);
    assert_int_equal(w.err, PBFT_OK);
    assert_int_equal(w.len, n);
    assert_memory_equal(w.p, orig, n);
    pbft_wbuf_free(&w);
}

/* decode_frame: decode, check the envelope fields and the signature (and that another key or
 * another chain fails it). */
static void decode_frame(const pbft_wbuf *w, uint8_t type, uint16_t sender, pbft_env *e)
{
    uint8_t other[32];
    assert_int_equal(pbft_frame_decode(w->p, w->len, e), PBFT_OK);
    assert_int_equal(e->type, type);
    assert_int_equal(e->sender, sender);
    assert_ptr_equal(e->body.p, w->p + 8);
    assert_int_equal(e->body.n, pbft_get_u32(w->p + 4));
    assert_ptr_equal(e->signed_part.p, w->p);
    assert_int_equal(e->signed_part.n, 8 + e->body.n);
    assert_ptr_equal(e->sig, w->p + 8 + e->body.n);
    assert_int_equal(e->whole.n, 8 + e->body.n + 64);
    assert_int_equal(w->len, e->whole.n + 4 + e->attach.n);
    assert_true(pbft_env_verify(e, F.chain, F.pk[sender]));
    assert_false(pbft_env_verify(e, F.chain, F.pk[(sender + 1) % NKEYS]));
    memcpy(other, F.chain, 32);
    other[0] ^= 0x80;
    assert_false(pbft_env_verify(e, other, F.pk[sender]));
}

/* A PRE-PREPARE frame carries its block as the attachment; the block's digest is the signed
 * digest and everything re-encodes identically. */
static void test_frame_preprepare_roundtrip_identical(void **state)
{
    (void)state;
    pbft_wbuf w, body;
    pbft_env e;
    pbft_vote v;
    pbft_block b;
    pbft_digest d;
    uint16_t sender = build_frame(CAT_PP_BLOCK, &w);

    decode_frame(&w, PBFT_MSG_PREPREPARE, sender, &e);
    assert_int_equal(pbft_vote_decode(e.body, &v), PBFT_OK);
    assert_int_equal(v.view, 2);
    assert_int_equal(v.seq, 9);
    assert_true(e.attach.n > 63);
    assert_ptr_equal(e.attach.p, w.p + e.whole.n + 4);
    assert_int_equal(pbft_block_decode(e.attach.p, e.attach.n, &b), PBFT_OK);
    assert_int_equal(b.height, 9);
    assert_int_equal(b.ntx, 3);
    pbft_block_digest(&b, &d);
    assert_memory_equal(d.b, v.d.b, 32);
    assert_int_equal(pbft_block_check_root(&b, NULL), PBFT_OK);

    pbft_wbuf_init(&body, 1024);
    pbft_put_u64(&body, v.view);
    pbft_put_u64(&body, v.seq);
    pbft_put_bytes(&body, v.d.b, 32);
    assert_reframes(&e, &body, w.p, w.len);
    pbft_wbuf_free(&body);
    pbft_wbuf_free(&w);
}

/* PRE-PREPARE without attachment, PREPARE and COMMIT: 48-byte bodies, empty attachment. */
static void test_frame_votes_roundtrip_identical(void **state)
{
    (void)state;
    static const int which[3] = {CAT_PP_BARE, CAT_PREPARE, CAT_COMMIT};
    for (int k = 0; k < 3; k++) {
        pbft_wbuf w, body;
        pbft_env e;
        pbft_vote v;
        uint16_t sender = build_frame(which[k], &w);
        decode_frame(&w, cat_type[which[k]], sender, &e);
        assert_int_equal(w.len, 8 + 48 + 64 + 4);
        assert_int_equal(e.attach.n, 0);
        assert_int_equal(pbft_vote_decode(e.body, &v), PBFT_OK);
        pbft_digest want = which[k] == CAT_PP_BARE ? dig(0x10) : dig(0x11);
        assert_int_equal(v.view, which[k] == CAT_PP_BARE ? 2 : 3);
        assert_int_equal(v.seq, which[k] == CAT_PP_BARE ? 10 : 11);
        assert_memory_equal(v.d.b, want.b, 32);
        pbft_wbuf_init(&body, 1024);
        pbft_put_u64(&body, v.view);
        pbft_put_u64(&body, v.seq);
        pbft_put_bytes(&body, v.d.b, 32);
        assert_reframes(&e, &body, w.p, w.len);
        pbft_wbuf_free(&body);
        pbft_wbuf_free(&w);
    }
}

/* CHECKPOINT: 40-byte body. */
static void test_frame_checkpoint_roundtrip_identical(void **state)
{
    (void)state;
    pbft_wbuf w, body;
    pbft_env e;
    pbft_ckpt c;
    uint16_t sender = build_frame(CAT_CHECKPOINT, &w);
    decode_frame(&w, PBFT_MSG_CHECKPOINT, sender, &e);
    assert_int_equal(w.len, 8 + 40 + 64 + 4);
    assert_int_equal(pbft_ckpt_decode(e.body, &c), PBFT_OK);
    assert_int_equal(c.seq, 128);
    assert_memory_equal(c.d.b, dig(0xC4).b, 32);
    pbft_wbuf_init(&body, 1024);
    pbft_put_u64(&body, c.seq);
    pbft_put_bytes(&body, c.d.b, 32);
    assert_reframes(&e, &body, w.p, w.len);
    pbft_wbuf_free(&body);
    pbft_wbuf_free(&w);
}

/* reput_list re-encodes a decoded list: count, then each element; each element decodes as
 * `type`, verifies under its sender's key, and senders come in `senders` order. */
static void reput_list(pbft_wbuf *w, const pbft_list *l, uint8_t type, const uint16_t *senders)
{
    size_t off = 0;
    pbft_span m;
    uint16_t i = 0;
    pbft_put_u16(w, l->count);
    while (pbft_list_next(l, &off, &m)) {
        pbft_env e;
        assert_int_equal(pbft_signed_decode(m.p, m.n, type, &e), PBFT_OK);
        assert_int_equal(e.attach.n, 0);
        assert_int_equal(e.whole.n, m.n);
        if (senders != NULL)
            assert_int_equal(e.sender, senders[i]);
        assert_true(pbft_env_verify(&e, F.chain, F.pk[e.sender]));
        pbft_put_elem(w, m.p, m.n);
        i++;
    }
    assert_int_equal(i, l->count);
    assert_int_equal(off, l->region.n);
}

/* reput_vc_body re-encodes a decoded VIEW-CHANGE body from its fields. */
static void reput_vc_body(pbft_wbuf *w, const pbft_viewchange *vc)
{
    static const uint16_t ckpt_senders[3] = {0, 1, 2}, prep_senders[2] = {1, 2};
    size_t off = 0;
    pbft_span pp;
    pbft_list prepares;
    uint16_t i = 0;
    pbft_put_u64(w, vc->new_view);
    pbft_put_u64(w, vc->stable_seq);
    pbft_put_bytes(w, vc->stable_d.b, 32);
    reput_list(w, &vc->ckpts, PBFT_MSG_CHECKPOINT, ckpt_senders);
    pbft_put_u16(w, vc->n_pcert);
    while (pbft_vc_next_pcert(vc, &off, &pp, &prepares)) {
        pbft_env e;
        pbft_vote v;
        assert_int_equal(pbft_signed_decode(pp.p, pp.n, PBFT_MSG_PREPREPARE, &e), PBFT_OK);
        assert_int_equal(pbft_vote_decode(e.body, &v), PBFT_OK);
        assert_int_equal(v.seq, 5 + i);
        assert_int_equal(prepares.count, 2);
        pbft_put_elem(w, pp.p, pp.n);
        reput_list(w, &prepares, PBFT_MSG_PREPARE, prep_senders);
        i++;
    }
    assert_int_equal(i, vc->n_pcert);
    assert_int_equal(off, vc->pcerts.n);
}

/* VIEW-CHANGE with a 3-checkpoint proof and two prepared certificates of 2 prepares each. */
static void test_frame_viewchange_roundtrip_identical(void **state)
{
    (void)state;
    pbft_wbuf w, body;
    pbft_env e;
    pbft_viewchange vc;
    uint16_t sender = build_frame(CAT_VIEWCHANGE, &w);
    decode_frame(&w, PBFT_MSG_VIEWCHANGE, sender, &e);
    assert_int_equal(pbft_viewchange_decode(e.body, &vc), PBFT_OK);
    assert_int_equal(vc.new_view, 1);
    assert_int_equal(vc.stable_seq, 4);
    assert_memory_equal(vc.stable_d.b, dig(0x44).b, 32);
    assert_int_equal(vc.ckpts.count, 3);
    assert_int_equal(vc.n_pcert, 2);
    pbft_wbuf_init(&body, PBFT_MAX_MSG_BYTES);
    reput_vc_body(&body, &vc);
    assert_reframes(&e, &body, w.p, w.len);
    pbft_wbuf_free(&body);
    pbft_wbuf_free(&w);
}

/* NEW-VIEW with 3 VIEW-CHANGEs and 2 PRE-PREPAREs. */
static void test_frame_newview_roundtrip_identical(void **state)
{
    (void)state;
    static const uint16_t vc_senders[3] = {1, 2, 3}, pp_senders[2] = {1, 1};
    pbft_wbuf w, body, vcbody;
    pbft_env e;
    pbft_newview nv;
    size_t off = 0;
    pbft_span m;
    uint16_t sender = build_frame(CAT_NEWVIEW, &w);
    decode_frame(&w, PBFT_MSG_NEWVIEW, sender, &e);
    assert_int_equal(pbft_newview_decode(e.body, &nv), PBFT_OK);
    assert_int_equal(nv.view, 1);
    assert_int_equal(nv.vcs.count, 3);
    assert_int_equal(nv.pps.count, 2);
    /* Each embedded VIEW-CHANGE itself re-encodes from its decoded fields. */
    while (pbft_list_next(&nv.vcs, &off, &m)) {
        pbft_env ve;
        pbft_viewchange vc;
        assert_int_equal(pbft_signed_decode(m.p, m.n, PBFT_MSG_VIEWCHANGE, &ve), PBFT_OK);
        assert_int_equal(pbft_viewchange_decode(ve.body, &vc), PBFT_OK);
        pbft_wbuf_init(&vcbody, PBFT_MAX_MSG_BYTES);
        reput_vc_body(&vcbody, &vc);
        assert_int_equal(vcbody.len, ve.body.n);
        assert_memory_equal(vcbody.p, ve.body.p, ve.body.n);
        pbft_wbuf_free(&vcbody);
    }
    pbft_wbuf_init(&body, PBFT_MAX_MSG_BYTES);
    pbft_put_u64(&body, nv.view);
    reput_list(&body, &nv.vcs, PBFT_MSG_VIEWCHANGE, vc_senders);
    reput_list(&body, &nv.pps, PBFT_MSG_PREPREPARE, pp_senders);
    assert_reframes(&e, &body, w.p, w.len);
    pbft_wbuf_free(&body);
    pbft_wbuf_free(&w);
}

/* STATE-REQ in both forms: a range with a zero digest, and one height with a digest. */
static void test_frame_state_req_roundtrip_identical(void **state)
{
    (void)state;
    for (int k = 0; k < 2; k++) {
        int which = k == 0 ? CAT_SREQ_RANGE : CAT_SREQ_DIGEST;
        pbft_wbuf w, body;
        pbft_env e;
        pbft_state_req q;
        uint16_t sender = build_frame(which, &w);
        decode_frame(&w, PBFT_MSG_STATE_REQ, sender, &e);
        /* msg.h's "(56)" is a miscount: its fields are 8 + 8 + 32 = 48 bytes. */
        assert_int_equal(e.body.n, 48);
        assert_int_equal(pbft_state_req_decode(e.body, &q), PBFT_OK);
        assert_int_equal(q.from_seq, k == 0 ? 3 : 12);
        assert_int_equal(q.to_seq, k == 0 ? 9 : 12);
        assert_memory_equal(q.d.b, dig(k == 0 ? 0 : 0x5D).b, 32);
        pbft_wbuf_init(&body, 1024);
        pbft_put_u64(&body, q.from_seq);
        pbft_put_u64(&body, q.to_seq);
        pbft_put_bytes(&body, q.d.b, 32);
        assert_reframes(&e, &body, w.p, w.len);
        pbft_wbuf_free(&body);
        pbft_wbuf_free(&w);
    }
}

/* STATE-REPLY with 2 blocks, each with a 3-COMMIT certificate for its digest. */
static void test_frame_state_rep_roundtrip_identical(void **state)
{
    (void)state;
    static const uint16_t senders[3] = {0, 1, 2};
    pbft_wbuf w, body;
    pbft_env e;
    pbft_state_rep r;
    size_t off = 0;
    pbft_span blk;
    pbft_list commits;
    uint64_t h = 7;
    uint16_t sender = build_frame(CAT_SREP, &w);
    decode_frame(&w, PBFT_MSG_STATE_REP, sender, &e);
    assert_int_equal(pbft_state_rep_decode(e.body, &r), PBFT_OK);
    assert_int_equal(r.n, 2);
    pbft_wbuf_init(&body, PBFT_MAX_MSG_BYTES);
    pbft_put_u16(&body, r.n);
    while (pbft_state_rep_next(&r, &off, &blk, &commits)) {
        pbft_block b;
        pbft_digest d;
        size_t coff = 0;
        pbft_span m;
        assert_int_equal(pbft_block_decode(blk.p, blk.n, &b), PBFT_OK);
        assert_int_equal(b.height, h);
        pbft_block_digest(&b, &d);
        assert_int_equal(commits.count, 3);
        while (pbft_list_next(&commits, &coff, &m)) {
            pbft_env ce;
            pbft_vote v;
            assert_int_equal(pbft_signed_decode(m.p, m.n, PBFT_MSG_COMMIT, &ce), PBFT_OK);
            assert_int_equal(pbft_vote_decode(ce.body, &v), PBFT_OK);
            assert_int_equal(v.seq, h);
            assert_memory_equal(v.d.b, d.b, 32);
        }
        pbft_put_elem(&body, blk.p, blk.n);
        reput_list(&body, &commits, PBFT_MSG_COMMIT, senders);
        h++;
    }
    assert_int_equal(h, 9);
    assert_int_equal(off, r.entries.n);
    assert_reframes(&e, &body, w.p, w.len);
    pbft_wbuf_free(&body);
    pbft_wbuf_free(&w);
}

/* REQUEST carries one client transaction. */
static void test_frame_request_roundtrip_identical(void **state)
{
    (void)state;
    pbft_wbuf w, body;
    pbft_env e;
    pbft_span tx;
    pbft_tx t;
    uint16_t sender = build_frame(CAT_REQUEST, &w);
    decode_frame(&w, PBFT_MSG_REQUEST, sender, &e);
    assert_int_equal(pbft_request_decode(e.body, &tx), PBFT_OK);
    assert_ptr_equal(tx.p, e.body.p + 4);
    assert_int_equal(tx.n, e.body.n - 4);
    assert_int_equal(pbft_tx_decode(tx.p, tx.n, &t), PBFT_OK);
    assert_int_equal(t.nonce, 77);
    assert_true(pbft_tx_verify(&t, F.chain));
    pbft_wbuf_init(&body, 1024);
    pbft_put_elem(&body, tx.p, tx.n);
    assert_reframes(&e, &body, w.p, w.len);
    pbft_wbuf_free(&body);
    pbft_wbuf_free(&w);
}

/* COMPLAINT: view and reason; a reason the protocol does not define is refused. */
static void test_frame_complaint_roundtrip_and_unknown_reason(void **state)
{
    (void)state;
    pbft_wbuf w;
    pbft_env e;
    pbft_complaint_msg c;
    uint16_t sender = build_frame(CAT_COMPLAINT, &w);
    decode_frame(&w, PBFT_MSG_COMPLAINT, sender, &e);
    assert_int_equal(pbft_complaint_decode(e.body, &c), PBFT_OK);
    assert_int_equal(c.view, 12);
    assert_int_equal(c.reason, 1);
    uint8_t body[9];
    memcpy(body, e.body.p, 9);
    body[8] = PBFT_COMPLAINT_REASONS;
    assert_int_equal(pbft_complaint_decode((pbft_span){body, 9}, &c), PBFT_E_NONCANONICAL);
    assert_int_equal(pbft_body_check(PBFT_MSG_COMPLAINT, (pbft_span){body, 8}), PBFT_E_TRUNCATED);
    pbft_wbuf_free(&w);
}

/* ---- frames: truncation, extension, corruption -------------------------------------- */

/* Every proper prefix of every frame, and of its embedded (attachment-less) form, is
 * TRUNCATED; one extra byte is TRAILING. */
static void test_frame_truncated_or_extended_rejected(void **state)
{
    (void)state;
    for (int k = 0; k < CAT__COUNT; k++) {
        pbft_wbuf w;
        pbft_env e;
        build_frame(k, &w);
        check_cuts(AS_FRAME, 0, w.p, w.len);
        assert_int_equal(pbft_frame_decode(w.p, w.len, &e), PBFT_OK);
        check_cuts(AS_SIGNED, cat_type[k], e.whole.p, e.whole.n);
        pbft_wbuf_free(&w);
    }
}

/* Flipping any byte of any frame breaks decoding or the signature; in a PRE-PREPARE's
 * attachment it leaves the signature valid but the block no longer matches the digest. */
static void test_frame_any_byte_flipped_rejected(void **state)
{
    (void)state;
    for (int k = 0; k < CAT__COUNT; k++) {
        pbft_wbuf w;
        uint16_t sender = build_frame(k, &w);
        check_flips_frame(w.p, w.len, F.pk[sender]);
        pbft_wbuf_free(&w);
    }
}

/* Random multi-byte corruption and truncation of every frame never reads out of
 * bounds (AddressSanitizer) and never crashes the decoder or the verifier. */
static void test_frame_random_mutations_never_crash(void **state)
{
    (void)state;
    pbft_wbuf frames[CAT__COUNT];
    uint64_t x = 0x9E3779B97F4A7C15u;
    for (int k = 0; k < CAT__COUNT; k++)
        build_frame(k, &frames[k]);
    for (int it = 0; it < 3000; it++) {
        x = x * 6364136223846793005u + 1442695040888963407u;
        const pbft_wbuf *f = &frames[(x >> 33) % CAT__COUNT];
        size_t n = f->len;
        uint32_t r = (uint32_t)(x >> 40);
        if (r % 4 == 0)
            n = (size_t)(r >> 2) % (n + 1);
        uint8_t *q = heap_copy(f->p, n);
        for (int m = 0; m < 1 + (int)(r % 3); m++) {
            x = x * 6364136223846793005u + 1442695040888963407u;
            if (n > 0)
                q[(x >> 20) % n] ^= (uint8_t)(1u << ((x >> 60) % 8));
        }
        pbft_env e;
        if (pbft_frame_decode(q, n, &e) == PBFT_OK)
            (void)pbft_env_verify(&e, F.chain, F.pk[e.sender % NKEYS]);
        free(q);
    }
    for (int k = 0; k < CAT__COUNT; k++)
        pbft_wbuf_free(&frames[k]);
}

/* ---- frames: oversized lengths ------------------------------------------------------ */

/* patch32 writes a u32 at off. */
static void patch32(uint8_t *p, size_t off, uint32_t v)
{
    p[off] = (uint8_t)(v >> 24);
    p[off + 1] = (uint8_t)(v >> 16);
    p[off + 2] = (uint8_t)(v >> 8);
    p[off + 3] = (uint8_t)v;
}

/* body_len 0xFFFFFFFF (or one past the real body) is TRUNCATED; attach_len 0xFFFFFFFF is
 * TOO_LARGE on a PRE-PREPARE; a frame above PBFT_MAX_MSG_BYTES is TOO_LARGE. */
static void test_frame_oversized_lengths_rejected(void **state)
{
    (void)state;
    pbft_wbuf w;
    pbft_env e;
    build_frame(CAT_PREPARE, &w);
    uint8_t *q = heap_copy(w.p, w.len);
    patch32(q, 4, 0xFFFFFFFFu);
    assert_int_equal(pbft_frame_decode(q, w.len, &e), PBFT_E_TRUNCATED);
    patch32(q, 4, 48 + 64 + 4 + 1);
    assert_int_equal(pbft_frame_decode(q, w.len, &e), PBFT_E_TRUNCATED);
    patch32(q, 4, 47); /* one byte short: as an embedded message, one byte is left over */
    assert_int_equal(pbft_signed_decode(q, w.len - 4, PBFT_MSG_PREPARE, &e), PBFT_E_TRAILING);
    free(q);
    pbft_wbuf_free(&w);

    build_frame(CAT_PP_BARE, &w);
    q = heap_copy(w.p, w.len);
    patch32(q, w.len - 4, 0xFFFFFFFFu);
    assert_int_equal(pbft_frame_decode(q, w.len, &e), PBFT_E_TOO_LARGE);
    patch32(q, w.len - 4, PBFT_MAX_BLOCK_BYTES + 1);
    assert_int_equal(pbft_frame_decode(q, w.len, &e), PBFT_E_TOO_LARGE);
    patch32(q, w.len - 4, 1);
    assert_int_equal(pbft_frame_decode(q, w.len, &e), PBFT_E_TRUNCATED);
    free(q);
    pbft_wbuf_free(&w);

    uint8_t *big = calloc(1, (size_t)PBFT_MAX_MSG_BYTES + 1);
    assert_non_null(big);
    big[0] = 1;
    big[1] = PBFT_MSG_PREPARE;
    assert_int_equal(pbft_frame_decode(big, (size_t)PBFT_MAX_MSG_BYTES + 1, &e), PBFT_E_TOO_LARGE);
    free(big);
}

/* sign_body wraps body bytes into a signed message of `type` plus an empty attachment. */
static void sign_body(pbft_wbuf *out, uint8_t type, const pbft_wbuf *body)
{
    pbft_wbuf_init(out, PBFT_MAX_MSG_BYTES);
    size_t start = pbft_msg_begin(out, type, 0);
    pbft_put_bytes(out, body->p, body->len);
    pbft_msg_end(out, start, F.chain, F.sk[0]);
    pbft_put_attach(out, NULL, 0);
    assert_int_equal(out->err, PBFT_OK);
}

/* frame_rc decodes body bytes as the body of a frame of `type` and returns the code. */
static int frame_rc(uint8_t type, const pbft_wbuf *body)
{
    pbft_wbuf f;
    pbft_env e;
    sign_body(&f, type, body);
    uint8_t *q = heap_copy(f.p, f.len);
    int rc = pbft_frame_decode(q, f.len, &e);
    free(q);
    pbft_wbuf_free(&f);
    return rc;
}

/* List counts above their limits are TOO_LARGE (checked before any element is read); an
 * element length of 0xFFFFFFFF is TRUNCATED. */
static void test_body_counts_over_limit_rejected(void **state)
{
    (void)state;
    pbft_wbuf b;
    pbft_wbuf_init(&b, PBFT_MAX_MSG_BYTES);

    /* VIEW-CHANGE: 65 checkpoints, 0xFFFF checkpoints, 1025 prepared certificates. */
    static const uint16_t ck[2] = {PBFT_MAX_N + 1, 0xFFFF};
    for (int k = 0; k < 2; k++) {
        pbft_wbuf_reset(&b);
        pbft_put_u64(&b, 1);
        pbft_put_u64(&b, 0);
        pbft_put_bytes(&b, dig(0).b, 32);
        pbft_put_u16(&b, ck[k]);
        assert_int_equal(frame_rc(PBFT_MSG_VIEWCHANGE, &b), PBFT_E_TOO_LARGE);
    }
    pbft_wbuf_reset(&b);
    pbft_put_u64(&b, 1);
    pbft_put_u64(&b, 0);
    pbft_put_bytes(&b, dig(0).b, 32);
    pbft_put_u16(&b, 0);
    pbft_put_u16(&b, PBFT_MAX_WINDOW + 1);
    assert_int_equal(frame_rc(PBFT_MSG_VIEWCHANGE, &b), PBFT_E_TOO_LARGE);
    /* A prepared certificate with 65 prepares. */
    pbft_wbuf_reset(&b);
    pbft_put_u64(&b, 1);
    pbft_put_u64(&b, 0);
    pbft_put_bytes(&b, dig(0).b, 32);
    pbft_put_u16(&b, 0);
    pbft_put_u16(&b, 1);
    embed_vote(&b, PBFT_MSG_PREPREPARE, 0, 0, 1, dig(1));
    pbft_put_u16(&b, PBFT_MAX_N + 1);
    assert_int_equal(frame_rc(PBFT_MSG_VIEWCHANGE, &b), PBFT_E_TOO_LARGE);

    /* NEW-VIEW: 65 view changes; 1025 pre-prepares. */
    pbft_wbuf_reset(&b);
    pbft_put_u64(&b, 1);
    pbft_put_u16(&b, PBFT_MAX_N + 1);
    assert_int_equal(frame_rc(PBFT_MSG_NEWVIEW, &b), PBFT_E_TOO_LARGE);
    pbft_wbuf_reset(&b);
    pbft_put_u64(&b, 1);
    pbft_put_u16(&b, 0);
    pbft_put_u16(&b, PBFT_MAX_WINDOW + 1);
    assert_int_equal(frame_rc(PBFT_MSG_NEWVIEW, &b), PBFT_E_TOO_LARGE);
    /* ... but 1024 (the limit) pre-prepares is only a count: here it is cut short. */
    pbft_wbuf_reset(&b);
    pbft_put_u64(&b, 1);
    pbft_put_u16(&b, 0);
    pbft_put_u16(&b, PBFT_MAX_WINDOW);
    assert_int_equal(frame_rc(PBFT_MSG_NEWVIEW, &b), PBFT_E_TRUNCATED);

    /* STATE-REPLY: 257 blocks; a block_len above the block limit; 65 commits. */
    pbft_wbuf_reset(&b);
    pbft_put_u16(&b, PBFT_MAX_STATE_BLOCKS + 1);
    assert_int_equal(frame_rc(PBFT_MSG_STATE_REP, &b), PBFT_E_TOO_LARGE);
    pbft_wbuf_reset(&b);
    pbft_put_u16(&b, 1);
    pbft_put_u32(&b, PBFT_MAX_BLOCK_BYTES + 1);
    assert_int_equal(frame_rc(PBFT_MSG_STATE_REP, &b), PBFT_E_TOO_LARGE);
    pbft_wbuf_reset(&b);
    pbft_put_u16(&b, 1);
    pbft_put_u32(&b, 0xFFFFFFFFu);
    assert_int_equal(frame_rc(PBFT_MSG_STATE_REP, &b), PBFT_E_TOO_LARGE);
    pbft_wbuf_reset(&b);
    pbft_put_u16(&b, 1);
    pbft_put_u32(&b, 1000); /* fits the limit, not the input */
    assert_int_equal(frame_rc(PBFT_MSG_STATE_REP, &b), PBFT_E_TRUNCATED);
    {
        size_t bl;
        uint8_t *blk = make_block(1, 0, &bl);
        pbft_wbuf_reset(&b);
        pbft_put_u16(&b, 1);
        pbft_put_elem(&b, blk, bl);
        pbft_put_u16(&b, PBFT_MAX_N + 1);
        assert_int_equal(frame_rc(PBFT_MSG_STATE_REP, &b), PBFT_E_TOO_LARGE);
        free(blk);
    }

    /* A list element whose length runs past the input. */
    pbft_wbuf_reset(&b);
    pbft_put_u64(&b, 1);
    pbft_put_u16(&b, 1);
    pbft_put_u32(&b, 0xFFFFFFFFu);
    assert_int_equal(frame_rc(PBFT_MSG_NEWVIEW, &b), PBFT_E_TRUNCATED);

    /* REQUEST: tx_len above the transaction limit, 0xFFFFFFFF, past the input, and 0. */
    static const uint32_t lens[2] = {PBFT_MAX_TX_BYTES + 1, 0xFFFFFFFFu};
    for (int k = 0; k < 2; k++) {
        pbft_wbuf_reset(&b);
        pbft_put_u32(&b, lens[k]);
        assert_int_equal(frame_rc(PBFT_MSG_REQUEST, &b), PBFT_E_TOO_LARGE);
    }
    pbft_wbuf_reset(&b);
    pbft_put_u32(&b, 200);
    pbft_put_bytes(&b, dig(1).b, 32);
    assert_int_equal(frame_rc(PBFT_MSG_REQUEST, &b), PBFT_E_TRUNCATED);
    pbft_wbuf_reset(&b);
    pbft_put_u32(&b, 0);
    assert_int_equal(frame_rc(PBFT_MSG_REQUEST, &b), PBFT_E_NONCANONICAL);

    pbft_wbuf_free(&b);
}

/* ---- frames: non-canonical and wrong types ------------------------------------------ */

/* Version 2 is VERSION; type 0, 10 and 255 are TYPE; an embedded message asked for as
 * another type is TYPE. */
static void test_frame_version_and_type_rejected(void **state)
{
    (void)state;
    pbft_wbuf w;
    pbft_env e;
    build_frame(CAT_COMMIT, &w);
    uint8_t *q = heap_copy(w.p, w.len);
    q[0] = 2;
    assert_int_equal(pbft_frame_decode(q, w.len, &e), PBFT_E_VERSION);
    q[0] = 0;
    assert_int_equal(pbft_frame_decode(q, w.len, &e), PBFT_E_VERSION);
    q[0] = 1;
    static const uint8_t bad[3] = {0, PBFT_MSG__MAX + 1, 0xFF};
    for (int k = 0; k < 3; k++) {
        q[1] = bad[k];
        assert_int_equal(pbft_frame_decode(q, w.len, &e), PBFT_E_TYPE);
    }
    q[1] = PBFT_MSG_COMMIT;
    assert_int_equal(pbft_frame_decode(q, w.len, &e), PBFT_OK);
    size_t sn = w.len - 4;
    assert_int_equal(pbft_signed_decode(q, sn, PBFT_MSG_COMMIT, &e), PBFT_OK);
    assert_int_equal(e.attach.n, 0);
    assert_int_equal(pbft_signed_decode(q, sn, PBFT_MSG_PREPARE, &e), PBFT_E_TYPE);
    assert_int_equal(pbft_signed_decode(q, sn, 0, &e), PBFT_E_TYPE);
    assert_int_equal(pbft_signed_decode(q, sn, 0xFF, &e), PBFT_E_TYPE);
    /* A COMMIT's 48-byte body under the CHECKPOINT type leaves 8 bytes over. */
    q[1] = PBFT_MSG_CHECKPOINT;
    assert_int_equal(pbft_frame_decode(q, w.len, &e), PBFT_E_TRAILING);
    free(q);
    pbft_wbuf_free(&w);
    assert_int_equal(pbft_body_check(0, (pbft_span){NULL, 0}), PBFT_E_TYPE);
    assert_int_equal(pbft_body_check(PBFT_MSG__MAX + 1, (pbft_span){NULL, 0}), PBFT_E_TYPE);
}

/* An attachment on anything but a PRE-PREPARE is NONCANONICAL; a PRE-PREPARE may have one or
 * not (the core decides). */
static void test_frame_attach_on_non_preprepare_noncanonical(void **state)
{
    (void)state;
    for (int k = 0; k < CAT__COUNT; k++) {
        pbft_wbuf w;
        pbft_env e;
        build_frame(k, &w);
        if (k == CAT_PP_BLOCK) {
            pbft_wbuf_free(&w);
            continue;
        }
        /* Replace attach_len 0 with 1 and add one byte. */
        uint8_t *q = malloc(w.len + 1);
        assert_non_null(q);
        memcpy(q, w.p, w.len);
        patch32(q, w.len - 4, 1);
        q[w.len] = 0xAB;
        int rc = pbft_frame_decode(q, w.len + 1, &e);
        if (cat_type[k] == PBFT_MSG_PREPREPARE) {
            assert_int_equal(rc, PBFT_OK);
            assert_int_equal(e.attach.n, 1);
            assert_int_equal(e.attach.p[0], 0xAB);
        } else {
            assert_int_equal(rc, PBFT_E_NONCANONICAL);
        }
        free(q);
        pbft_wbuf_free(&w);
    }
}

/* Vote lists out of order or with a duplicate sender are NONCANONICAL: checkpoint proofs,
 * prepares, view changes and commit certificates; NEW-VIEW pre-prepares must ascend by seq. */
static void test_body_unsorted_lists_noncanonical(void **state)
{
    (void)state;
    static const uint16_t orders[3][3] = {{0, 2, 1}, {0, 1, 1}, {2, 1, 0}};
    pbft_wbuf b;
    pbft_wbuf_init(&b, PBFT_MAX_MSG_BYTES);
    for (int o = 0; o < 3; o++) {
        const uint16_t *s = orders[o];
        /* checkpoint proof */
        pbft_wbuf_reset(&b);
        pbft_put_u64(&b, 1);
        pbft_put_u64(&b, 4);
        pbft_put_bytes(&b, dig(4).b, 32);
        pbft_put_u16(&b, 3);
        for (int i = 0; i < 3; i++)
            embed_ckpt(&b, s[i], 4, dig(4));
        pbft_put_u16(&b, 0);
        assert_int_equal(frame_rc(PBFT_MSG_VIEWCHANGE, &b), PBFT_E_NONCANONICAL);
        /* prepares of a prepared certificate */
        pbft_wbuf_reset(&b);
        pbft_put_u64(&b, 1);
        pbft_put_u64(&b, 0);
        pbft_put_bytes(&b, dig(0).b, 32);
        pbft_put_u16(&b, 0);
        pbft_put_u16(&b, 1);
        embed_vote(&b, PBFT_MSG_PREPREPARE, 0, 0, 5, dig(5));
        pbft_put_u16(&b, 3);
        for (int i = 0; i < 3; i++)
            embed_vote(&b, PBFT_MSG_PREPARE, (uint16_t)(s[i] + 1), 0, 5, dig(5));
        assert_int_equal(frame_rc(PBFT_MSG_VIEWCHANGE, &b), PBFT_E_NONCANONICAL);
        /* view changes of a NEW-VIEW */
        pbft_wbuf_reset(&b);
        pbft_put_u64(&b, 1);
        pbft_put_u16(&b, 3);
        for (int i = 0; i < 3; i++) {
            pbft_wbuf t;
            pbft_wbuf_init(&t, PBFT_MAX_MSG_BYTES);
            put_vc_msg(&t, s[i], 1);
            pbft_put_elem(&b, t.p, t.len);
            pbft_wbuf_free(&t);
        }
        pbft_put_u16(&b, 0);
        assert_int_equal(frame_rc(PBFT_MSG_NEWVIEW, &b), PBFT_E_NONCANONICAL);
        /* commit certificate of a STATE-REPLY */
        size_t bl;
        uint8_t *blk = make_block(1, 0, &bl);
        pbft_wbuf_reset(&b);
        pbft_put_u16(&b, 1);
        pbft_put_elem(&b, blk, bl);
        pbft_put_u16(&b, 3);
        for (int i = 0; i < 3; i++)
            embed_vote(&b, PBFT_MSG_COMMIT, s[i], 0, 1, block_digest_of(blk, bl));
        assert_int_equal(frame_rc(PBFT_MSG_STATE_REP, &b), PBFT_E_NONCANONICAL);
        free(blk);
        /* pre-prepares of a NEW-VIEW, by seq */
        pbft_wbuf_reset(&b);
        pbft_put_u64(&b, 1);
        pbft_put_u16(&b, 0);
        pbft_put_u16(&b, 3);
        for (int i = 0; i < 3; i++)
            embed_vote(&b, PBFT_MSG_PREPREPARE, 1, 1, 10 + s[i], dig(1));
        assert_int_equal(frame_rc(PBFT_MSG_NEWVIEW, &b), PBFT_E_NONCANONICAL);
    }
    /* The same lists in ascending order are accepted. */
    pbft_wbuf_reset(&b);
    pbft_put_u64(&b, 1);
    pbft_put_u16(&b, 0);
    pbft_put_u16(&b, 3);
    for (uint64_t i = 0; i < 3; i++)
        embed_vote(&b, PBFT_MSG_PREPREPARE, 1, 1, 10 + i * 5, dig(1));
    assert_int_equal(frame_rc(PBFT_MSG_NEWVIEW, &b), PBFT_OK);
    pbft_wbuf_free(&b);
}

/* A list element of the wrong type (a PREPARE in a checkpoint proof, a CHECKPOINT as a
 * certificate's pre-prepare, a COMMIT among view changes, a PREPARE in a commit certificate)
 * is TYPE; an element with version 2 is VERSION; an element with an attachment field is
 * TRAILING. */
static void test_body_wrong_embedded_type_rejected(void **state)
{
    (void)state;
    pbft_wbuf b;
    pbft_wbuf_init(&b, PBFT_MAX_MSG_BYTES);

    pbft_wbuf_reset(&b);
    pbft_put_u64(&b, 1);
    pbft_put_u64(&b, 4);
    pbft_put_bytes(&b, dig(4).b, 32);
    pbft_put_u16(&b, 1);
    embed_vote(&b, PBFT_MSG_PREPARE, 0, 0, 4, dig(4));
    pbft_put_u16(&b, 0);
    assert_int_equal(frame_rc(PBFT_MSG_VIEWCHANGE, &b), PBFT_E_TYPE);

    pbft_wbuf_reset(&b);
    pbft_put_u64(&b, 1);
    pbft_put_u64(&b, 0);
    pbft_put_bytes(&b, dig(0).b, 32);
    pbft_put_u16(&b, 0);
    pbft_put_u16(&b, 1);
    embed_ckpt(&b, 0, 5, dig(5));
    pbft_put_u16(&b, 0);
    assert_int_equal(frame_rc(PBFT_MSG_VIEWCHANGE, &b), PBFT_E_TYPE);

    pbft_wbuf_reset(&b);
    pbft_put_u64(&b, 1);
    pbft_put_u16(&b, 1);
    embed_vote(&b, PBFT_MSG_COMMIT, 0, 0, 1, dig(1));
    pbft_put_u16(&b, 0);
    assert_int_equal(frame_rc(PBFT_MSG_NEWVIEW, &b), PBFT_E_TYPE);

    size_t bl;
    uint8_t *blk = make_block(1, 0, &bl);
    pbft_wbuf_reset(&b);
    pbft_put_u16(&b, 1);
    pbft_put_elem(&b, blk, bl);
    pbft_put_u16(&b, 1);
    embed_vote(&b, PBFT_MSG_PREPARE, 0, 0, 1, dig(1));
    assert_int_equal(frame_rc(PBFT_MSG_STATE_REP, &b), PBFT_E_TYPE);
    free(blk);

    /* version 2 inside a NEW-VIEW's pre-prepare list */
    pbft_wbuf_reset(&b);
    pbft_put_u64(&b, 1);
    pbft_put_u16(&b, 0);
    pbft_put_u16(&b, 1);
    embed_vote(&b, PBFT_MSG_PREPREPARE, 1, 1, 5, dig(5));
    b.p[8 + 2 + 2 + 4] = 2;
    assert_int_equal(frame_rc(PBFT_MSG_NEWVIEW, &b), PBFT_E_VERSION);

    /* an embedded message that carries a frame's attach_len */
    pbft_wbuf t;
    pbft_vote v = {1, 5, dig(5)};
    pbft_wbuf_init(&t, 1024);
    pbft_put_vote_msg(&t, PBFT_MSG_PREPREPARE, 1, &v, F.chain, F.sk[1]);
    pbft_put_attach(&t, NULL, 0);
    pbft_wbuf_reset(&b);
    pbft_put_u64(&b, 1);
    pbft_put_u16(&b, 0);
    pbft_put_u16(&b, 1);
    pbft_put_elem(&b, t.p, t.len);
    assert_int_equal(frame_rc(PBFT_MSG_NEWVIEW, &b), PBFT_E_TRAILING);
    pbft_wbuf_free(&t);
    pbft_wbuf_free(&b);
}

/* A STATE-REPLY block and a REQUEST transaction are decoded in full: a block with height 0
 * or version 2, or a transaction with version 2, is rejected with that code. */
static void test_body_embedded_block_and_tx_checked(void **state)
{
    (void)state;
    pbft_wbuf b;
    size_t bl;
    uint8_t *blk = make_block(4, 1, &bl);
    pbft_wbuf_init(&b, PBFT_MAX_MSG_BYTES);
    static const struct {
        size_t off;
        uint8_t v;
        int rc;
    } cases[] = {{8, 0, PBFT_E_NONCANONICAL}, {0, 2, PBFT_E_VERSION}, {68, 7, PBFT_E_TYPE}};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        uint8_t *q = heap_copy(blk, bl);
        q[cases[k].off] = cases[k].v;
        pbft_wbuf_reset(&b);
        pbft_put_u16(&b, 1);
        pbft_put_elem(&b, q, bl);
        pbft_put_u16(&b, 0);
        assert_int_equal(frame_rc(PBFT_MSG_STATE_REP, &b), cases[k].rc);
        free(q);
    }
    pbft_wbuf_reset(&b);
    pbft_put_u16(&b, 1);
    pbft_put_elem(&b, blk, bl);
    pbft_put_u16(&b, 0);
    assert_int_equal(frame_rc(PBFT_MSG_STATE_REP, &b), PBFT_OK);
    free(blk);

    uint8_t tx[512];
    size_t n = make_transfer(1, 0, 5, tx, sizeof tx);
    tx[0] = 2;
    pbft_wbuf_reset(&b);
    pbft_put_elem(&b, tx, n);
    assert_int_equal(frame_rc(PBFT_MSG_REQUEST, &b), PBFT_E_VERSION);
    tx[0] = 1;
    pbft_wbuf_reset(&b);
    pbft_put_elem(&b, tx, n - 1);
    assert_int_equal(frame_rc(PBFT_MSG_REQUEST, &b), PBFT_E_TRUNCATED);
    pbft_wbuf_free(&b);
}

/* STATE-REQ: from > to, and a digest with from != to, are NONCANONICAL; a zero digest with a
 * range and a digest with from == to are fine. */
static void test_body_state_req_forms_checked(void **state)
{
    (void)state;
    static const struct {
        uint64_t from, to;
        uint8_t fill;
        int rc;
    } cases[] = {
        {5, 4, 0, PBFT_E_NONCANONICAL}, {5, 6, 0x11, PBFT_E_NONCANONICAL},
        {5, 5, 0x11, PBFT_OK},          {5, 5, 0, PBFT_OK},
        {1, 1000, 0, PBFT_OK},          {UINT64_MAX, 0, 0, PBFT_E_NONCANONICAL},
    };
    pbft_wbuf b;
    pbft_wbuf_init(&b, 1024);
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        pbft_wbuf_reset(&b);
        pbft_put_u64(&b, cases[k].from);
        pbft_put_u64(&b, cases[k].to);
        pbft_put_bytes(&b, dig(cases[k].fill).b, 32);
        assert_int_equal(frame_rc(PBFT_MSG_STATE_REQ, &b), cases[k].rc);
    }
    /* A digest with only its last byte set still counts as non-zero. */
    pbft_wbuf_reset(&b);
    pbft_put_u64(&b, 1);
    pbft_put_u64(&b, 2);
    pbft_put_bytes(&b, dig(0).b, 31);
    pbft_put_u8(&b, 1);
    assert_int_equal(frame_rc(PBFT_MSG_STATE_REQ, &b), PBFT_E_NONCANONICAL);
    pbft_wbuf_free(&b);
}

/* ---- the output buffer -------------------------------------------------------------- */

/* Puts past the limit set NOMEM and are ignored from then on; reset clears; free is safe on
 * a zeroed struct and twice. */
/* pbft_commit_cert_verify takes a certificate from storage or a peer, which no decoder has
 * seen: n - f signed COMMITs for (v, seq, d) of one view, from distinct validators in
 * ascending order, with valid signatures, and nothing else in the region (issue 12). */
static void cert_of(pbft_wbuf *w, const uint16_t *senders, int k, const uint64_t *views,
                    uint64_t seq, pbft_digest d)
{
    pbft_wbuf_reset(w);
    for (int i = 0; i < k; i++)
        embed_vote(w, PBFT_MSG_COMMIT, senders[i], views[i], seq, d);
}

static bool cert_ok(const pbft_wbuf *w, uint16_t count, uint64_t seq, pbft_digest d, uint64_t *view)
{
    pbft_list l = {count, {w->p, w->len}};
    return pbft_commit_cert_verify(&l, 4, F.chain, (const uint8_t(*)[32])F.pk, seq, &d, view);
}

static void test_commit_cert_verify_checks_everything(void **state)
{
    (void)state;
    pbft_wbuf w;
    pbft_wbuf_init(&w, PBFT_MAX_MSG_BYTES);
    const uint16_t s012[] = {0, 1, 2}, s0123[] = {0, 1, 2, 3}, s01[] = {0, 1}, s011[] = {0, 1, 1},
                   s102[] = {1, 0, 2}, s013[] = {0, 1, 3};
    const uint64_t v2[] = {2, 2, 2, 2}, vmix[] = {2, 2, 3};
    uint64_t view = 0;
    cert_of(&w, s012, 3, v2, 9, dig(9));
    assert_true(cert_ok(&w, 3, 9, dig(9), &view));
    assert_int_equal(view, 2);
    cert_of(&w, s0123, 4, v2, 9, dig(9));
    assert_true(cert_ok(&w, 4, 9, dig(9), &view)); /* all n */
    cert_of(&w, s012, 3, v2, 9, dig(9));
    assert_false(cert_ok(&w, 3, 8, dig(9), &view)); /* another height */
    assert_false(cert_ok(&w, 3, 9, dig(8), &view)); /* another block */
    assert_false(cert_ok(&w, 2, 9, dig(9), &view)); /* count below the region */
    assert_false(cert_ok(&w, 4, 9, dig(9), &view)); /* count above it */
    cert_of(&w, s01, 2, v2, 9, dig(9));
    assert_false(cert_ok(&w, 2, 9, dig(9), &view)); /* f + 1 only */
    cert_of(&w, s011, 3, v2, 9, dig(9));
    assert_false(cert_ok(&w, 3, 9, dig(9), &view)); /* one signer twice */
    cert_of(&w, s102, 3, v2, 9, dig(9));
    assert_false(cert_ok(&w, 3, 9, dig(9), &view)); /* not ascending */
    cert_of(&w, s012, 3, vmix, 9, dig(9));
    assert_false(cert_ok(&w, 3, 9, dig(9), &view)); /* two views */
    /* A signer outside the validator set: replica 3 when n = 3 (q = 3). */
    cert_of(&w, s013, 3, v2, 9, dig(9));
    pbft_list l3 = {3, {w.p, w.len}};
    pbft_digest d9 = dig(9);
    assert_true(
        pbft_commit_cert_verify(&l3, 4, F.chain, (const uint8_t(*)[32])F.pk, 9, &d9, &view));
    assert_false(
        pbft_commit_cert_verify(&l3, 3, F.chain, (const uint8_t(*)[32])F.pk, 9, &d9, &view));
    /* Any flipped byte of a valid certificate fails it. */
    cert_of(&w, s012, 3, v2, 9, dig(9));
    for (size_t i = 0; i < w.len; i++) {
        w.p[i] ^= 0x01;
        assert_false(cert_ok(&w, 3, 9, dig(9), &view));
        w.p[i] ^= 0x01;
    }
    assert_true(cert_ok(&w, 3, 9, dig(9), &view));
    /* Trailing bytes after the last element. */
    pbft_put_u8(&w, 0);
    assert_false(cert_ok(&w, 3, 9, dig(9), &view));
    pbft_wbuf_free(&w);
}

static void test_wbuf_limit_sets_nomem(void **state)
{
    (void)state;
    pbft_wbuf w;
    pbft_wbuf_init(&w, 10);
    pbft_put_u64(&w, 1);
    pbft_put_u16(&w, 2);
    assert_int_equal(w.err, PBFT_OK);
    assert_int_equal(w.len, 10);
    assert_true(w.cap <= 10);
    pbft_put_u8(&w, 3);
    assert_int_equal(w.err, PBFT_E_NOMEM);
    assert_int_equal(w.len, 10);
    pbft_wbuf_reset(&w);
    assert_int_equal(w.err, PBFT_OK);
    pbft_put_u32(&w, 0x01020304);
    pbft_put_elem(&w, (const uint8_t *)"abcd", 4); /* 8 more: over */
    assert_int_equal(w.err, PBFT_E_NOMEM);
    assert_int_equal(w.len, 4);
    pbft_put_u8(&w, 1); /* would fit, but err is sticky */
    assert_int_equal(w.len, 4);
    assert_memory_equal(w.p, "\x01\x02\x03\x04", 4);
    pbft_wbuf_free(&w);
    pbft_wbuf_free(&w);
    pbft_wbuf z;
    memset(&z, 0, sizeof z);
    pbft_wbuf_free(&z);
    pbft_put_u8(&z, 1); /* limit 0 */
    assert_int_equal(z.err, PBFT_E_NOMEM);
    pbft_wbuf_free(&z);
}

/* The buffer grows geometrically to hold 1 MiB written a byte at a time; integers are
 * big-endian. */
static void test_wbuf_growth_keeps_bytes(void **state)
{
    (void)state;
    pbft_wbuf w;
    pbft_wbuf_init(&w, 1u << 20);
    size_t reallocs = 0, cap = 0;
    for (size_t i = 0; i < (1u << 20); i++) {
        pbft_put_u8(&w, (uint8_t)i);
        if (w.cap != cap) {
            reallocs++;
            cap = w.cap;
        }
    }
    assert_int_equal(w.err, PBFT_OK);
    assert_true(reallocs < 20);
    for (size_t i = 0; i < (1u << 20); i += 4099)
        assert_int_equal(w.p[i], (uint8_t)i);
    pbft_wbuf_reset(&w);
    pbft_put_u16(&w, 0x0102);
    pbft_put_u32(&w, 0x03040506);
    pbft_put_u64(&w, 0x0708090A0B0C0D0Eu);
    assert_memory_equal(w.p, "\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0A\x0B\x0C\x0D\x0E", 14);
    assert_int_equal(pbft_get_u16(w.p), 0x0102);
    assert_int_equal(pbft_get_u32(w.p + 2), 0x03040506);
    assert_int_equal(pbft_get_u64(w.p + 6), 0x0708090A0B0C0D0Eu);
    pbft_wbuf_free(&w);
}

/* pbft_msg_end patches body_len and appends a signature over [start, len); it does nothing
 * once err is set, and a limit that leaves no room for the signature sets NOMEM. */
static void test_wbuf_msg_end_signs_or_does_nothing(void **state)
{
    (void)state;
    pbft_wbuf w;
    pbft_env e;
    pbft_wbuf_init(&w, 4096);
    pbft_put_bytes(&w, "junk", 4); /* a message need not start at 0 */
    size_t start = pbft_msg_begin(&w, PBFT_MSG_CHECKPOINT, 3);
    assert_int_equal(start, 4);
    pbft_put_u64(&w, 9);
    pbft_put_bytes(&w, dig(9).b, 32);
    pbft_msg_end(&w, start, F.chain, F.sk[3]);
    assert_int_equal(w.len, 4 + 8 + 40 + 64);
    assert_int_equal(pbft_get_u32(w.p + 4 + 4), 40);
    assert_int_equal(pbft_signed_decode(w.p + 4, w.len - 4, PBFT_MSG_CHECKPOINT, &e), PBFT_OK);
    assert_true(pbft_env_verify(&e, F.chain, F.pk[3]));

    w.err = PBFT_E_NOMEM;
    size_t len = w.len;
    start = pbft_msg_begin(&w, PBFT_MSG_CHECKPOINT, 3);
    pbft_msg_end(&w, start, F.chain, F.sk[3]);
    assert_int_equal(w.len, len);
    pbft_wbuf_free(&w);

    pbft_wbuf_init(&w, 8 + 40 + 63);
    pbft_ckpt c = {1, dig(1)};
    pbft_put_ckpt_msg(&w, 0, &c, F.chain, F.sk[0]);
    assert_int_equal(w.err, PBFT_E_NOMEM);
    assert_int_equal(w.len, 8 + 40);
    pbft_wbuf_free(&w);
}

/* Every error code has its own message. */
static void test_strerror_distinct_messages(void **state)
{
    (void)state;
    for (int i = 0; i <= PBFT_E_DIGEST; i++) {
        assert_non_null(pbft_strerror(i));
        for (int j = 0; j < i; j++)
            assert_string_not_equal(pbft_strerror(i), pbft_strerror(j));
    }
    assert_non_null(pbft_strerror(-1));
}

/* A VIEW-CHANGE whose prepared certificates are not strictly ascending by sequence number
 * (descending, or the same seq twice) is non-canonical. */
static void test_body_viewchange_pcerts_unordered_noncanonical(void **state)
{
    (void)state;
    static const uint64_t orders[2][2] = {{6, 5}, {5, 5}};
    for (int k = 0; k < 2; k++) {
        pbft_wbuf w;
        pbft_wbuf_init(&w, PBFT_MAX_MSG_BYTES);
        pbft_put_u64(&w, 1);
        pbft_put_u64(&w, 4);
        pbft_put_bytes(&w, dig(0x44).b, 32);
        pbft_put_u16(&w, 3);
        for (uint16_t s = 0; s < 3; s++)
            embed_ckpt(&w, s, 4, dig(0x44));
        pbft_put_u16(&w, 2);
        for (int i = 0; i < 2; i++) {
            uint64_t seq = orders[k][i];
            pbft_digest d = dig((uint8_t)seq);
            embed_vote(&w, PBFT_MSG_PREPREPARE, 0, 0, seq, d);
            pbft_put_u16(&w, 2);
            embed_vote(&w, PBFT_MSG_PREPARE, 1, 0, seq, d);
            embed_vote(&w, PBFT_MSG_PREPARE, 2, 0, seq, d);
        }
        assert_int_equal(w.err, PBFT_OK);
        pbft_viewchange vc;
        assert_int_equal(pbft_viewchange_decode((pbft_span){w.p, w.len}, &vc), PBFT_E_NONCANONICAL);
        pbft_wbuf_free(&w);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tx_transfer_roundtrip_identical),
        cmocka_unit_test(test_tx_put_roundtrip_identical),
        cmocka_unit_test(test_tx_truncated_or_extended_rejected),
        cmocka_unit_test(test_tx_any_byte_flipped_rejected),
        cmocka_unit_test(test_tx_other_chain_rejected),
        cmocka_unit_test(test_tx_bad_fields_precise_codes),
        cmocka_unit_test(test_tx_encode_limits_rejected),
        cmocka_unit_test(test_tx_worked_example_matches_document),
        cmocka_unit_test(test_block_roundtrip_identical),
        cmocka_unit_test(test_block_empty_root_is_sha256_empty),
        cmocka_unit_test(test_block_any_byte_flipped_detected),
        cmocka_unit_test(test_block_bad_fields_precise_codes),
        cmocka_unit_test(test_block_encode_limits_rejected),
        cmocka_unit_test(test_chain_next_matches_definition),
        cmocka_unit_test(test_frame_preprepare_roundtrip_identical),
        cmocka_unit_test(test_frame_votes_roundtrip_identical),
        cmocka_unit_test(test_frame_checkpoint_roundtrip_identical),
        cmocka_unit_test(test_frame_viewchange_roundtrip_identical),
        cmocka_unit_test(test_frame_newview_roundtrip_identical),
        cmocka_unit_test(test_frame_state_req_roundtrip_identical),
        cmocka_unit_test(test_frame_state_rep_roundtrip_identical),
        cmocka_unit_test(test_frame_request_roundtrip_identical),
        cmocka_unit_test(test_frame_complaint_roundtrip_and_unknown_reason),
        cmocka_unit_test(test_frame_truncated_or_extended_rejected),
        cmocka_unit_test(test_frame_any_byte_flipped_rejected),
        cmocka_unit_test(test_frame_random_mutations_never_crash),
        cmocka_unit_test(test_frame_oversized_lengths_rejected),
        cmocka_unit_test(test_frame_version_and_type_rejected),
        cmocka_unit_test(test_frame_attach_on_non_preprepare_noncanonical),
        cmocka_unit_test(test_body_counts_over_limit_rejected),
        cmocka_unit_test(test_body_unsorted_lists_noncanonical),
        cmocka_unit_test(test_body_viewchange_pcerts_unordered_noncanonical),
        cmocka_unit_test(test_body_wrong_embedded_type_rejected),
        cmocka_unit_test(test_body_embedded_block_and_tx_checked),
        cmocka_unit_test(test_body_state_req_forms_checked),
        cmocka_unit_test(test_commit_cert_verify_checks_everything),
        cmocka_unit_test(test_wbuf_limit_sets_nomem),
        cmocka_unit_test(test_wbuf_growth_keeps_bytes),
        cmocka_unit_test(test_wbuf_msg_end_signs_or_does_nothing),
        cmocka_unit_test(test_strerror_distinct_messages),
    };
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
