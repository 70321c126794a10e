/*
 * make_seeds.c - writes the binary seed corpora of fuzz_msg and fuzz_tx: one valid frame of
 * every consensus message type (with real Ed25519 signatures from fixed keys, so the files
 * are the same on every run), and transactions and blocks. The committed files in
 * tests/fuzz/corpus/ came from it; `scripts/fuzz.sh --seed` writes them again.
 *
 *   make_seeds DIR   writes DIR/fuzz_msg/<name> and DIR/fuzz_tx/<name>
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "consensus/msg.h"
#include "crypto/keys.h"

#define N 4

static uint8_t g_chain[32], g_pk[N][32], g_sk[N][64], g_cpk[32], g_csk[64];
static const char *g_dir;

static void put_file(const char *target, const char *name, const uint8_t *prefix, size_t pn,
                     const uint8_t *p, size_t n)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s/%s", g_dir, target, name);
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(prefix, 1, pn, f) != pn || fwrite(p, 1, n, f) != n) {
        fprintf(stderr, "make_seeds: cannot write %s\n", path);
        exit(1);
    }
    fclose(f);
}

static void check(const pbft_wbuf *w)
{
    if (w->err != PBFT_OK) {
        fprintf(stderr, "make_seeds: encoding failed: %s\n", pbft_strerror(w->err));
        exit(1);
    }
}

/* A signed message of `type` from `sender` whose body is `body` (no attachment field). */
static void signed_msg(pbft_wbuf *w, uint8_t type, uint16_t sender, const pbft_wbuf *body)
{
    size_t start = pbft_msg_begin(w, type, sender);
    pbft_put_bytes(w, body->p, body->len);
    pbft_msg_end(w, start, g_chain, g_sk[sender]);
}

static void vote_body(pbft_wbuf *b, uint64_t view, uint64_t seq, const pbft_digest *d)
{
    pbft_put_u64(b, view);
    pbft_put_u64(b, seq);
    pbft_put_bytes(b, d->b, 32);
}

/* A list of signed votes of `type` from senders 0..k-1 (ascending: canonical). */
static void vote_list(pbft_wbuf *w, uint8_t type, uint16_t k, uint64_t view, uint64_t seq,
                      const pbft_digest *d)
{
    pbft_put_u16(w, k);
    for (uint16_t j = 0; j < k; j++) {
        pbft_wbuf b = {0}, m = {0};
        pbft_wbuf_init(&b, 1u << 20);
        pbft_wbuf_init(&m, 1u << 20);
        if (type == PBFT_MSG_CHECKPOINT) {
            pbft_put_u64(&b, seq);
            pbft_put_bytes(&b, d->b, 32);
        } else {
            vote_body(&b, view, seq, d);
        }
        signed_msg(&m, type, j, &b);
        check(&m);
        pbft_put_elem(w, m.p, m.len);
        pbft_wbuf_free(&b);
        pbft_wbuf_free(&m);
    }
}

/* A frame: the signed message with the body in b, and an attachment. */
static void frame(const char *name, uint8_t type, uint16_t sender, const pbft_wbuf *b,
                  const uint8_t *attach, size_t attach_n)
{
    pbft_wbuf w = {0};
    pbft_wbuf_init(&w, 1u << 24);
    signed_msg(&w, type, sender, b);
    pbft_put_attach(&w, attach, attach_n);
    check(&w);
    pbft_env e; /* a seed that does not decode would only exercise the first check */
    int rc = pbft_frame_decode(w.p, w.len, &e);
    if (rc != PBFT_OK) {
        fprintf(stderr, "make_seeds: %s does not decode: %s\n", name, pbft_strerror(rc));
        exit(1);
    }
    put_file("fuzz_msg", name, NULL, 0, w.p, w.len);
    pbft_wbuf_free(&w);
}

static size_t make_tx(int put, uint64_t nonce, uint8_t *out, size_t cap)
{
    size_t n = 0;
    int rc = put ? pbft_tx_encode_put(g_chain, g_csk, nonce, (const uint8_t *)"color", 5,
                                      (const uint8_t *)"blue", 4, out, cap, &n)
                 : pbft_tx_encode_transfer(g_chain, g_csk, nonce, g_pk[1], 1000, out, cap, &n);
    if (rc != PBFT_OK) {
        fprintf(stderr, "make_seeds: tx: %s\n", pbft_strerror(rc));
        exit(1);
    }
    return n;
}

int main(int argc, char **argv)
{
    if (argc != 2 || strcmp(argv[1], "--help") == 0) {
        fprintf(stderr, "usage: make_seeds DIR  (writes DIR/fuzz_msg/* and DIR/fuzz_tx/*)\n");
        return argc == 2 ? 0 : 2;
    }
    g_dir = argv[1];
    if (keys_init() != KEYS_OK)
        return 1;
    keys_sha256((const uint8_t *)"fuzz", 4, g_chain);
    for (int i = 0; i < N; i++) {
        uint8_t seed[32] = {(uint8_t)(i + 1)};
        keys_from_seed(seed, g_pk[i], g_sk[i]);
    }
    uint8_t cseed[32] = {0xcc};
    keys_from_seed(cseed, g_cpk, g_csk);

    /* Transactions and a block. */
    uint8_t tx1[512], tx2[512];
    size_t n1 = make_tx(0, 0, tx1, sizeof tx1), n2 = make_tx(1, 1, tx2, sizeof tx2);
    pbft_span txs[2] = {{tx1, n1}, {tx2, n2}};
    uint8_t blk[2048], nullblk[128];
    size_t bn = 0, nbn = 0;
    if (pbft_block_encode(7, 1, 1, 1700000000000u, txs, 2, blk, sizeof blk, &bn) != PBFT_OK ||
        pbft_block_encode(8, 2, 2, 0, NULL, 0, nullblk, sizeof nullblk, &nbn) != PBFT_OK)
        return 1;
    const uint8_t even = 0, odd = 1;
    put_file("fuzz_tx", "transfer", &even, 1, tx1, n1);
    put_file("fuzz_tx", "put", &even, 1, tx2, n2);
    put_file("fuzz_tx", "block", &odd, 1, blk, bn);
    put_file("fuzz_tx", "null-block", &odd, 1, nullblk, nbn);

    pbft_block b, nb;
    pbft_tx t1, t2;
    pbft_digest d;
    if (pbft_block_decode(blk, bn, &b) != PBFT_OK ||
        pbft_block_decode(nullblk, nbn, &nb) != PBFT_OK ||
        pbft_tx_decode(tx1, n1, &t1) != PBFT_OK || pbft_tx_decode(tx2, n2, &t2) != PBFT_OK) {
        fprintf(stderr, "make_seeds: a transaction or block does not decode\n");
        return 1;
    }
    pbft_block_digest(&b, &d);

    pbft_wbuf body = {0};
    pbft_wbuf_init(&body, 1u << 24);
    /* PRE-PREPARE with its block, PREPARE, COMMIT. */
    vote_body(&body, 1, 7, &d);
    frame("preprepare", PBFT_MSG_PREPREPARE, 1, &body, blk, bn);
    frame("prepare", PBFT_MSG_PREPARE, 2, &body, NULL, 0);
    frame("commit", PBFT_MSG_COMMIT, 3, &body, NULL, 0);
    /* CHECKPOINT. */
    pbft_wbuf_reset(&body);
    pbft_put_u64(&body, 64);
    pbft_put_bytes(&body, d.b, 32);
    frame("checkpoint", PBFT_MSG_CHECKPOINT, 0, &body, NULL, 0);
    /* VIEW-CHANGE to view 2: a checkpoint proof of 3 and one prepared certificate. */
    pbft_wbuf vc = {0};
    pbft_wbuf_init(&vc, 1u << 24);
    pbft_put_u64(&vc, 2);
    pbft_put_u64(&vc, 64);
    pbft_put_bytes(&vc, d.b, 32);
    vote_list(&vc, PBFT_MSG_CHECKPOINT, 3, 0, 64, &d);
    pbft_put_u16(&vc, 1);
    {
        pbft_wbuf pb = {0}, pm = {0};
        pbft_wbuf_init(&pb, 1u << 20);
        pbft_wbuf_init(&pm, 1u << 20);
        vote_body(&pb, 1, 65, &d);
        signed_msg(&pm, PBFT_MSG_PREPREPARE, 1, &pb);
        check(&pm);
        pbft_put_elem(&vc, pm.p, pm.len);
        pbft_wbuf_free(&pb);
        pbft_wbuf_free(&pm);
    }
    vote_list(&vc, PBFT_MSG_PREPARE, 2, 1, 65, &d);
    check(&vc);
    frame("viewchange", PBFT_MSG_VIEWCHANGE, 3, &vc, NULL, 0);
    /* NEW-VIEW for view 2: three VIEW-CHANGEs and one PRE-PREPARE. */
    pbft_wbuf_reset(&body);
    pbft_put_u64(&body, 2);
    pbft_put_u16(&body, 3);
    for (uint16_t j = 0; j < 3; j++) {
        pbft_wbuf m = {0};
        pbft_wbuf_init(&m, 1u << 24);
        signed_msg(&m, PBFT_MSG_VIEWCHANGE, j, &vc);
        check(&m);
        pbft_put_elem(&body, m.p, m.len);
        pbft_wbuf_free(&m);
    }
    {
        /* the pre-prepare list: one, from the new primary (2) */
        pbft_put_u16(&body, 1);
        pbft_wbuf pb = {0}, pm = {0};
        pbft_wbuf_init(&pb, 1u << 20);
        pbft_wbuf_init(&pm, 1u << 20);
        vote_body(&pb, 2, 65, &d);
        signed_msg(&pm, PBFT_MSG_PREPREPARE, 2, &pb);
        check(&pm);
        pbft_put_elem(&body, pm.p, pm.len);
        pbft_wbuf_free(&pb);
        pbft_wbuf_free(&pm);
    }
    frame("newview", PBFT_MSG_NEWVIEW, 2, &body, NULL, 0);
    pbft_wbuf_free(&vc);
    /* STATE-REQ: a range, and one block by digest. */
    pbft_wbuf_reset(&body);
    pbft_put_u64(&body, 1);
    pbft_put_u64(&body, 64);
    pbft_put_bytes(&body, (const uint8_t[32]){0}, 32);
    frame("state-req-range", PBFT_MSG_STATE_REQ, 1, &body, NULL, 0);
    pbft_wbuf_reset(&body);
    pbft_put_u64(&body, 7);
    pbft_put_u64(&body, 7);
    pbft_put_bytes(&body, d.b, 32);
    frame("state-req-digest", PBFT_MSG_STATE_REQ, 1, &body, NULL, 0);
    /* STATE-REP: the block and its commit certificate. */
    pbft_wbuf_reset(&body);
    pbft_put_u16(&body, 1);
    pbft_put_elem(&body, blk, bn);
    vote_list(&body, PBFT_MSG_COMMIT, 3, 1, 7, &d);
    frame("state-rep", PBFT_MSG_STATE_REP, 0, &body, NULL, 0);
    /* REQUEST: a forwarded transaction. */
    pbft_wbuf_reset(&body);
    pbft_put_elem(&body, tx1, n1);
    frame("request", PBFT_MSG_REQUEST, 3, &body, NULL, 0);
    /* COMPLAINT. */
    pbft_wbuf_reset(&body);
    pbft_put_u64(&body, 1);
    pbft_put_u8(&body, 1);
    frame("complaint", PBFT_MSG_COMPLAINT, 3, &body, NULL, 0);
    check(&body);
    pbft_wbuf_free(&body);
    return 0;
}
