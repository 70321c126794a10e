/*
 * reencode.h - re-encoders for the fuzz targets' round-trip checks, and their small file
 * helpers (reencode.c).
 */
#ifndef PBFT_TESTS_FUZZ_REENCODE_H
#define PBFT_TESTS_FUZZ_REENCODE_H

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include "consensus/msg.h"

/* Each appends to w the encoding of a decoded value; they return 0, or -1 when a value the
 * decoder accepted turns out not to decode in its parts (itself a decoder bug). */
void fz_tx(pbft_wbuf *w, const pbft_tx *tx);
int fz_block(pbft_wbuf *w, const pbft_block *b);
int fz_signed(pbft_wbuf *w, const pbft_env *e); /* an embedded signed message */
int fz_frame(pbft_wbuf *w, const pbft_env *e);  /* a signed message and its attachment */

/* fz_tmp_path names a scratch file for this process (in /dev/shm when it is writable);
 * fz_slurp reads a whole file (malloc'd; aborts on failure). For the targets whose parser
 * takes a path. */
void fz_tmp_path(char *out, size_t cap, const char *target, const char *what);
char *fz_slurp(const char *path, size_t *n);

/* fz_check aborts (a crash libFuzzer reports, with the input) when cond is false. */
#define fz_check(cond)                                                                             \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz check failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__);         \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#endif
