/*
 * fuzz_msg.c - libFuzzer target: the frame decoder and the body decoder of every consensus
 * message type (consensus/msg.c), as a replica meets them from a peer. A frame that decodes
 * must encode back to the same bytes (tests/fuzz/reencode.c), and so must the block a
 * PRE-PREPARE carries if it decodes as one.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "consensus/msg.h"
#include "tests/fuzz/reencode.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pbft_env e;
    if (pbft_frame_decode(data, size, &e) != PBFT_OK)
        return 0;
    fz_check(e.type >= 1 && e.type <= PBFT_MSG__MAX);
    fz_check(pbft_body_check(e.type, e.body) == PBFT_OK);
    pbft_wbuf w = {0};
    pbft_wbuf_init(&w, 1u << 28);
    fz_check(fz_frame(&w, &e) == 0);
    fz_check(w.err == PBFT_OK);
    fz_check(w.len == size && memcmp(w.p, data, size) == 0);
    pbft_wbuf_free(&w);
    /* The signed part alone decodes as an embedded message of its type. */
    pbft_env inner;
    fz_check(pbft_signed_decode(e.whole.p, e.whole.n, e.type, &inner) == PBFT_OK);
    fz_check(inner.body.n == e.body.n && inner.attach.n == 0);
    if (e.attach.n > 0) {
        pbft_block b;
        if (pbft_block_decode(e.attach.p, e.attach.n, &b) == PBFT_OK) {
            pbft_wbuf bw = {0};
            pbft_wbuf_init(&bw, 1u << 28);
            fz_check(fz_block(&bw, &b) == 0 && bw.err == PBFT_OK);
            fz_check(bw.len == e.attach.n && memcmp(bw.p, e.attach.p, bw.len) == 0);
            pbft_wbuf_free(&bw);
            (void)pbft_block_check_root(&b, NULL);
        }
    }
    return 0;
}
