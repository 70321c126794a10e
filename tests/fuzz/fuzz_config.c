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

static char *slurp(const char *path, size_t *n)
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

static void path_for(char *out, size_t cap, const char *what)
{
    const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(out, cap, "%s/pbft-fuzz-config-%ld-%s", dir, (long)getpid(), what);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char in[256], a[256], b[256], err[512];
    path_for(in, sizeof in, "in.toml");
    path_for(a, sizeof a, "a.toml");
    path_for(b, sizeof b, "b.toml");
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
        char *ba = slurp(a, &na), *bb = slurp(b, &nb);
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
