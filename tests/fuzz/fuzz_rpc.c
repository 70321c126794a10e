/*
 * fuzz_rpc.c - libFuzzer target: JSON-RPC 2.0 request handling (rpc_handle: parsing, single
 * requests, batches, every method's parameters) against a real node opened once, node0 of
 * a testnet whose home PBFT_FUZZ_HOME names (scripts/fuzz.sh makes it). Its three peers are
 * absent, so nothing commits; submissions go to its pool.
 *
 * Checked for each input: the answer is one valid JSON-RPC 2.0 response (or batch of them)
 * with a consistent HTTP status; and a request that parses as JSON is a fixpoint of
 * decoding and encoding again (the bytes jansson writes parse back to the same bytes).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "node/node.h"
#include "rpc/rpc.h"
#include "tests/fuzz/reencode.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static node *g_node;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    const char *home = getenv("PBFT_FUZZ_HOME");
    if (home == NULL) {
        fprintf(stderr, "fuzz_rpc: set PBFT_FUZZ_HOME to a node home (scripts/fuzz.sh does)\n");
        exit(2);
    }
    char err[512];
    node_options o = {.home = home, .log_level = "error"};
    if (node_open(&o, &g_node, err, sizeof err) != 0) {
        fprintf(stderr, "fuzz_rpc: node_open: %s\n", err);
        exit(2);
    }
    return 0;
}

static void check_response(const json_t *r)
{
    fz_check(json_is_object(r));
    const json_t *v = json_object_get(r, "jsonrpc");
    fz_check(json_is_string(v) && strcmp(json_string_value(v), "2.0") == 0);
    fz_check(json_object_get(r, "id") != NULL);
    const json_t *res = json_object_get(r, "result");
    const json_t *err = json_object_get(r, "error");
    fz_check((res != NULL) != (err != NULL));
    if (err != NULL) {
        fz_check(json_is_integer(json_object_get(err, "code")));
        fz_check(json_is_string(json_object_get(err, "message")));
    }
}

static void fixpoint(const uint8_t *data, size_t size)
{
    json_t *j = json_loadb((const char *)data, size, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    if (j == NULL)
        return;
    size_t flags = JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY;
    char *s1 = json_dumps(j, flags);
    json_decref(j);
    if (s1 == NULL)
        return; /* out of memory, or a value jansson cannot write (not the node's concern) */
    json_t *j2 = json_loads(s1, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    fz_check(j2 != NULL);
    char *s2 = json_dumps(j2, flags);
    json_decref(j2);
    fz_check(s2 != NULL && strcmp(s1, s2) == 0);
    free(s1);
    free(s2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int status = 0;
    char *out = rpc_handle(g_node, (const char *)data, size, &status);
    /* 200 with a body, or 204 without one (a batch of notifications only). */
    fz_check((status == 200 && out != NULL) || (status == 204 && out == NULL));
    if (out != NULL) {
        json_error_t e;
        json_t *r = json_loads(out, 0, &e);
        fz_check(r != NULL);
        if (json_is_array(r)) {
            fz_check(json_array_size(r) > 0);
            size_t i;
            json_t *x;
            json_array_foreach(r, i, x) check_response(x);
        } else {
            check_response(r);
        }
        json_decref(r);
        free(out);
    }
    fixpoint(data, size);
    return 0;
}
