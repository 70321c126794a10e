/*
 * fuzz_tx.c - libFuzzer target: the transaction decoder (what a client submits and every
 * block carries) and the block decoder. The first byte picks which: even, a transaction;
 * odd, a block. Whatever decodes must encode back to the same bytes.
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
    if (size < 1)
        return 0;
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    pbft_wbuf w = {0};
    pbft_wbuf_init(&w, 1u << 28);
    if ((data[0] & 1) == 0) {
        pbft_tx tx;
        if (pbft_tx_decode(p, n, &tx) == PBFT_OK) {
            fz_check(tx.type == PBFT_TX_TRANSFER || tx.type == PBFT_TX_PUT);
            fz_check(tx.unsigned_part.p == p && tx.unsigned_part.n + 64 == n);
            fz_tx(&w, &tx);
            fz_check(w.err == PBFT_OK && w.len == n && memcmp(w.p, p, n) == 0);
            pbft_digest h;
            pbft_tx_hash(p, n, &h);
        }
    } else {
        pbft_block b;
        if (pbft_block_decode(p, n, &b) == PBFT_OK) {
            fz_check(fz_block(&w, &b) == 0);
            fz_check(w.err == PBFT_OK && w.len == n && memcmp(w.p, p, n) == 0);
            fz_check(b.header.p == p && b.header.n == PBFT_BLOCK_HEADER_BYTES);
            pbft_digest d;
            pbft_block_digest(&b, &d);
            (void)pbft_block_check_root(&b, NULL);
        }
    }
    pbft_wbuf_free(&w);
    return 0;
}
