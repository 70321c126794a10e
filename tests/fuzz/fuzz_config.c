/*
 * fuzz_config.c - libFuzzer target: the config.toml parser (node/config.c), which reads
 * what an operator wrote. Whatever it accepts must write back (config_write) to a file it
 * accepts again, and writing that gives the same bytes: load and write are a fixpoint, so
 * `pbftd init`'s files and an operator's edits mean the same thing.
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
    fz_tmp_path(in, sizeof in, "config", "in.toml");
    fz_tmp_path(a, sizeof a, "config", "a.toml");
    fz_tmp_path(b, sizeof b, "config", "b.toml");
    FILE *f = fopen(in, "wb");
    fz_check(f != NULL && fwrite(data, 1, size, f) == size);
    fclose(f);
    node_config c;
    config_defaults(&c);
    if (config_load(in, &c, err, sizeof err) == 0) {
        fz_check(config_write(a, &c, err, sizeof err) == 0);
        node_config c2;
        config_defaults(&c2);
        if (config_load(a, &c2, err, sizeof err) != 0) {
            fprintf(stderr, "written config does not load: %s\n", err);
            abort();
        }
        fz_check(config_write(b, &c2, err, sizeof err) == 0);
        size_t na, nb;
        char *ba = fz_slurp(a, &na), *bb = fz_slurp(b, &nb);
        fz_check(na == nb && memcmp(ba, bb, na) == 0);
        free(ba);
        free(bb);
    } else {
        fz_check(err[0] != '\0'); /* every refusal says why */
    }
    unlink(in);
    unlink(a);
    unlink(b);
    return 0;
}
