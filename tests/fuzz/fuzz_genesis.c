/*
 * fuzz_genesis.c - libFuzzer target: the genesis.json parser (node/config.c), the file that
 * names the validator set every signature is checked against. Whatever it accepts must
 * write back (genesis_write) to a file it accepts again, and writing that gives the same
 * bytes.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "node/config.h"
#include "tests/fuzz/reencode.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char in[256], a[256], b[256], err[512];
    fz_tmp_path(in, sizeof in, "genesis", "in.json");
    fz_tmp_path(a, sizeof a, "genesis", "a.json");
    fz_tmp_path(b, sizeof b, "genesis", "b.json");
    FILE *f = fopen(in, "wb");
    fz_check(f != NULL && fwrite(data, 1, size, f) == size);
    fclose(f);
    genesis g;
    memset(&g, 0, sizeof g);
    if (genesis_load(in, &g, err, sizeof err) == 0) {
        fz_check(g.n >= 4 && g.n <= PBFT_MAX_N);
        fz_check(genesis_write(a, &g, err, sizeof err) == 0);
        genesis g2;
        memset(&g2, 0, sizeof g2);
        if (genesis_load(a, &g2, err, sizeof err) != 0) {
            fprintf(stderr, "written genesis does not load: %s\n", err);
            abort();
        }
        fz_check(g2.n == g.n && g2.n_accounts == g.n_accounts);
        fz_check(genesis_write(b, &g2, err, sizeof err) == 0);
        size_t na, nb;
        char *ba = fz_slurp(a, &na), *bb = fz_slurp(b, &nb);
        fz_check(na == nb && memcmp(ba, bb, na) == 0);
        free(ba);
        free(bb);
        genesis_free(&g2);
    } else {
        fz_check(err[0] != '\0');
    }
    genesis_free(&g);
    unlink(in);
    unlink(a);
    unlink(b);
    return 0;
}
