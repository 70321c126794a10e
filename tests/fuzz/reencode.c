/*
 * reencode.c - build the wire bytes of a decoded value again, field by field, from what the
 * decoders of consensus/msg.h return (and nothing else). A fuzz target compares the result
 * with its input: equal bytes mean the decoders accept exactly one encoding of each value
 * (no ignored trailing bytes, no second spelling of a length or a list), which is what
 * signatures over encodings and the duplicate checks by digest rely on.
 */
#include "tests/fuzz/reencode.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { EL_TX, EL_BLOCK, EL_SIGNED };

/* put_elem_of encodes a decoded part into its own buffer and appends it to w as a
 * length-prefixed list element (u32 length, bytes), as the wire format nests them. */
static int put_elem_of(pbft_wbuf *w, int kind, const void *v)
{
    pbft_wbuf inner = {0};
    pbft_wbuf_init(&inner, 1u << 26);
    int rc = 0;
    if (kind == EL_TX)
        fz_tx(&inner, v);
    else if (kind == EL_BLOCK)
        rc = fz_block(&inner, v);
    else
        rc = fz_signed(&inner, v);
    if (rc == 0)
        pbft_put_elem(w, inner.p, inner.len);
    pbft_wbuf_free(&inner);
    return rc;
}

void fz_tx(pbft_wbuf *w, const pbft_tx *tx)
{
    pbft_put_u8(w, 1);
    pbft_put_u8(w, tx->type);
    pbft_put_bytes(w, tx->sender, 32);
    pbft_put_u64(w, tx->nonce);
    if (tx->type == PBFT_TX_TRANSFER) {
        pbft_put_bytes(w, tx->to, 32);
        pbft_put_u64(w, tx->amount);
    } else {
        pbft_put_u16(w, (uint16_t)tx->key.n);
        pbft_put_bytes(w, tx->key.p, tx->key.n);
        pbft_put_u32(w, (uint32_t)tx->value.n);
        pbft_put_bytes(w, tx->value.p, tx->value.n);
    }
    pbft_put_bytes(w, tx->sig, 64);
}

int fz_block(pbft_wbuf *w, const pbft_block *b)
{
    pbft_put_u8(w, 1);
    pbft_put_u64(w, b->height);
    pbft_put_u64(w, b->view);
    pbft_put_u16(w, b->proposer);
    pbft_put_u64(w, b->timestamp_ms);
    pbft_put_bytes(w, b->tx_root.b, 32);
    pbft_put_u32(w, b->ntx);
    size_t off = 0;
    pbft_span t;
    uint32_t k = 0;
    while (pbft_block_next_tx(b, &off, &t)) {
        pbft_tx tx;
        if (pbft_tx_decode(t.p, t.n, &tx) != PBFT_OK)
            return -1; /* the block decoder promised every transaction decodes */
        (void)put_elem_of(w, EL_TX, &tx);
        k++;
    }
    return k == b->ntx ? 0 : -1;
}

static int list(pbft_wbuf *w, const pbft_list *l, uint8_t type)
{
    pbft_put_u16(w, l->count);
    size_t off = 0;
    pbft_span m;
    uint16_t k = 0;
    while (pbft_list_next(l, &off, &m)) {
        pbft_env e;
        if (pbft_signed_decode(m.p, m.n, type, &e) != PBFT_OK)
            return -1; /* the decoder promised every embedded message is well formed */
        if (put_elem_of(w, EL_SIGNED, &e) != 0)
            return -1;
        k++;
    }
    return k == l->count ? 0 : -1;
}

static int body(pbft_wbuf *w, uint8_t type, pbft_span b)
{
    switch (type) {
    case PBFT_MSG_PREPREPARE:
    case PBFT_MSG_PREPARE:
    case PBFT_MSG_COMMIT: {
        pbft_vote v;
        if (pbft_vote_decode(b, &v) != PBFT_OK)
            return -1;
        pbft_put_u64(w, v.view);
        pbft_put_u64(w, v.seq);
        pbft_put_bytes(w, v.d.b, 32);
        return 0;
    }
    case PBFT_MSG_CHECKPOINT: {
        pbft_ckpt c;
        if (pbft_ckpt_decode(b, &c) != PBFT_OK)
            return -1;
        pbft_put_u64(w, c.seq);
        pbft_put_bytes(w, c.d.b, 32);
        return 0;
    }
    case PBFT_MSG_VIEWCHANGE: {
        pbft_viewchange vc;
        if (pbft_viewchange_decode(b, &vc) != PBFT_OK)
            return -1;
        pbft_put_u64(w, vc.new_view);
        pbft_put_u64(w, vc.stable_seq);
        pbft_put_bytes(w, vc.stable_d.b, 32);
        if (list(w, &vc.ckpts, PBFT_MSG_CHECKPOINT) != 0)
            return -1;
        pbft_put_u16(w, vc.n_pcert);
        size_t off = 0;
        pbft_span pp;
        pbft_list prepares;
        uint16_t k = 0;
        while (pbft_vc_next_pcert(&vc, &off, &pp, &prepares)) {
            pbft_env e;
            if (pbft_signed_decode(pp.p, pp.n, PBFT_MSG_PREPREPARE, &e) != PBFT_OK)
                return -1;
            if (put_elem_of(w, EL_SIGNED, &e) != 0 || list(w, &prepares, PBFT_MSG_PREPARE) != 0)
                return -1;
            k++;
        }
        return k == vc.n_pcert ? 0 : -1;
    }
    case PBFT_MSG_NEWVIEW: {
        pbft_newview nv;
        if (pbft_newview_decode(b, &nv) != PBFT_OK)
            return -1;
        pbft_put_u64(w, nv.view);
        if (list(w, &nv.vcs, PBFT_MSG_VIEWCHANGE) != 0 ||
            list(w, &nv.pps, PBFT_MSG_PREPREPARE) != 0)
            return -1;
        return 0;
    }
    case PBFT_MSG_STATE_REQ: {
        pbft_state_req q;
        if (pbft_state_req_decode(b, &q) != PBFT_OK)
            return -1;
        pbft_put_u64(w, q.from_seq);
        pbft_put_u64(w, q.to_seq);
        pbft_put_bytes(w, q.d.b, 32);
        return 0;
    }
    case PBFT_MSG_STATE_REP: {
        pbft_state_rep r;
        if (pbft_state_rep_decode(b, &r) != PBFT_OK)
            return -1;
        pbft_put_u16(w, r.n);
        size_t off = 0;
        pbft_span blk;
        pbft_list cert;
        uint16_t k = 0;
        while (pbft_state_rep_next(&r, &off, &blk, &cert)) {
            pbft_block bl;
            if (pbft_block_decode(blk.p, blk.n, &bl) != PBFT_OK)
                return -1; /* the state reply decoder checks its blocks */
            if (put_elem_of(w, EL_BLOCK, &bl) != 0 || list(w, &cert, PBFT_MSG_COMMIT) != 0)
                return -1;
            k++;
        }
        return k == r.n ? 0 : -1;
    }
    case PBFT_MSG_REQUEST: {
        pbft_span t;
        pbft_tx tx;
        if (pbft_request_decode(b, &t) != PBFT_OK || pbft_tx_decode(t.p, t.n, &tx) != PBFT_OK)
            return -1;
        return put_elem_of(w, EL_TX, &tx);
    }
    case PBFT_MSG_COMPLAINT: {
        pbft_complaint_msg c;
        if (pbft_complaint_decode(b, &c) != PBFT_OK)
            return -1;
        pbft_put_u64(w, c.view);
        pbft_put_u8(w, c.reason);
        return 0;
    }
    default:
        return -1;
    }
}

int fz_signed(pbft_wbuf *w, const pbft_env *e)
{
    pbft_wbuf b = {0};
    pbft_wbuf_init(&b, 1u << 27);
    int rc = body(&b, e->type, e->body);
    if (rc == 0 && b.err == PBFT_OK) {
        pbft_put_u8(w, 1);
        pbft_put_u8(w, e->type);
        pbft_put_u16(w, e->sender);
        pbft_put_u32(w, (uint32_t)b.len);
        pbft_put_bytes(w, b.p, b.len);
        pbft_put_bytes(w, e->sig, 64);
    }
    if (b.err != PBFT_OK)
        rc = -1;
    pbft_wbuf_free(&b);
    return rc;
}

int fz_frame(pbft_wbuf *w, const pbft_env *e)
{
    if (fz_signed(w, e) != 0)
        return -1;
    pbft_put_attach(w, e->attach.p, e->attach.n);
    return 0;
}

void fz_tmp_path(char *out, size_t cap, const char *target, const char *what)
{
    const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(out, cap, "%s/pbft-fuzz-%s-%ld-%s", dir, target, (long)getpid(), what);
}

char *fz_slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    fz_check(f != NULL);
    fz_check(fseek(f, 0, SEEK_END) == 0);
    long len = ftell(f);
    fz_check(len >= 0);
    rewind(f);
    char *b = malloc((size_t)len + 1);
    fz_check(b != NULL && fread(b, 1, (size_t)len, f) == (size_t)len);
    fclose(f);
    *n = (size_t)len;
    return b;
}
