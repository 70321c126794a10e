/*
 * test_config.c - unit tests for node/config.c: the config.toml subset parser and its typed
 * decoding, config_write round trips, genesis.json loading, writing and genesis_to_pbft, and
 * the chain id of the genesis that pbftd testnet writes.
 *
 * Every error test checks that the message names the file, the line (config.toml) or the
 * JSON path (genesis.json), and says what is wrong: operators fix configs from these alone.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crypto/keys.h"
#include "node/config.h"

/* ---- helpers ---------------------------------------------------------------------------- */

static char tmpdir[PATH_MAX];

/* Group setup: a fresh directory under $PBFT_TEST_TMPDIR (or /tmp). */
static int dir_setup(void **state)
{
    (void)state;
    const char *base = getenv("PBFT_TEST_TMPDIR");
    if (base == NULL || base[0] == '\0') {
        base = "/tmp";
    }
    int n = snprintf(tmpdir, sizeof tmpdir, "%s/test_config.XXXXXX", base);
    if (n < 0 || (size_t)n >= sizeof tmpdir || mkdtemp(tmpdir) == NULL) {
        perror("test_config: mkdtemp");
        return -1;
    }
    return 0;
}

/* Group teardown: remove every file the tests left, then the directory itself. */
static int dir_teardown(void **state)
{
    (void)state;
    DIR *d = opendir(tmpdir);
    if (d == NULL) {
        return -1;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) {
            continue;
        }
        char p[PATH_MAX + 256];
        (void)snprintf(p, sizeof p, "%s/%s", tmpdir, e->d_name);
        (void)unlink(p);
    }
    (void)closedir(d);
    return rmdir(tmpdir) == 0 ? 0 : -1;
}

/* tmp_path builds tmpdir/name into out. */
static void tmp_path(char *out, size_t cap, const char *name)
{
    int n = snprintf(out, cap, "%s/%s", tmpdir, name);
    assert_true(n > 0 && (size_t)n < cap);
}

/* write_bytes creates (or truncates) path with exactly n bytes of p. */
static void write_bytes(const char *path, const char *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

static void write_text(const char *path, const char *text)
{
    write_bytes(path, text, strlen(text));
}

/* read_text reads a whole file into a fresh NUL-terminated buffer. */
static char *read_text(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    long n = ftell(f);
    assert_true(n >= 0);
    assert_int_equal(fseek(f, 0, SEEK_SET), 0);
    char *buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    assert_int_equal(fclose(f), 0);
    buf[n] = '\0';
    *len = (size_t)n;
    return buf;
}

/* assert_contains fails with both strings shown when needle is not in hay. */
static void assert_contains(const char *hay, const char *needle)
{
    if (strstr(hay, needle) == NULL) {
        fail_msg("expected \"%s\" in \"%s\"", needle, hay);
    }
}

/* assert_prefix fails with both strings shown when hay does not start with prefix. */
static void assert_prefix(const char *hay, const char *prefix)
{
    if (strncmp(hay, prefix, strlen(prefix)) != 0) {
        fail_msg("expected \"%s\" to start with \"%s\"", hay, prefix);
    }
}

/* ---- config.toml ------------------------------------------------------------------------ */

/* expect_config_error loads text and checks the error names the file and line, contains key
 * and contains what; and that the caller's config was left untouched. */
static void expect_config_error(const char *text, unsigned line, const char *key, const char *what)
{
    char path[PATH_MAX];
    tmp_path(path, sizeof path, "bad.toml");
    write_text(path, text);
    node_config c, def;
    config_defaults(&c);
    config_defaults(&def);
    char err[1024] = "";
    assert_int_equal(config_load(path, &c, err, sizeof err), -1);
    char prefix[PATH_MAX + 32];
    (void)snprintf(prefix, sizeof prefix, "%s:%u: ", path, line);
    assert_prefix(err, prefix);
    if (key != NULL) {
        assert_contains(err, key);
    }
    assert_contains(err, what);
    assert_memory_equal(&c, &def, sizeof c);
}

/* load_text loads text over defaults into *c and requires success. */
static void load_text(const char *text, node_config *c)
{
    char path[PATH_MAX];
    tmp_path(path, sizeof path, "good.toml");
    write_text(path, text);
    config_defaults(c);
    char err[1024] = "";
    if (config_load(path, c, err, sizeof err) != 0) {
        fail_msg("config_load: %s", err);
    }
}

/* assert_config_equal compares every field (strings as strings: bytes after the NUL do not
 * matter). */
static void assert_config_equal(const node_config *a, const node_config *b)
{
    assert_string_equal(a->moniker, b->moniker);
    assert_string_equal(a->key_file, b->key_file);
    assert_string_equal(a->data_dir, b->data_dir);
    assert_string_equal(a->p2p_listen, b->p2p_listen);
    assert_int_equal(a->p2p_max_msg_bytes, b->p2p_max_msg_bytes);
    assert_int_equal(a->p2p_send_queue, b->p2p_send_queue);
    assert_int_equal(a->p2p_verify_workers, b->p2p_verify_workers);
    assert_string_equal(a->p2p_twin_dial, b->p2p_twin_dial);
    assert_string_equal(a->p2p_peer_override, b->p2p_peer_override);
    assert_string_equal(a->rpc_listen, b->rpc_listen);
    assert_int_equal(a->rpc_max_body_bytes, b->rpc_max_body_bytes);
    assert_int_equal(a->rpc_max_batch, b->rpc_max_batch);
    assert_int_equal(a->rpc_max_connections, b->rpc_max_connections);
    assert_int_equal(a->rpc_commit_timeout_ms, b->rpc_commit_timeout_ms);
    assert_int_equal(a->rpc_body_timeout_ms, b->rpc_body_timeout_ms);
    assert_int_equal(a->mempool_max_txs, b->mempool_max_txs);
    assert_int_equal(a->mempool_max_bytes, b->mempool_max_bytes);
    assert_string_equal(a->log_level, b->log_level);
    assert_string_equal(a->event_log, b->event_log);
    assert_int_equal(a->event_log_max_bytes, b->event_log_max_bytes);
    assert_string_equal(a->byz_mode, b->byz_mode);
    assert_int_equal(a->byz_delay_ms, b->byz_delay_ms);
    assert_int_equal(a->byz_percent, b->byz_percent);
    assert_string_equal(a->byz_options, b->byz_options);
}

static const char FULL_TOML[] =
    "# a complete configuration, every key set away from its default\n"
    "\n"
    "[node]\n"
    "moniker = \"alpha \\\"one\\\"\\t\\\\ # not a comment\"   # trailing comment\n"
    "key_file = \"keys/k.json\"\n"
    "data_dir=\"/var/lib/pbft\"\n"
    "\n"
    "  [p2p]  # indented header\n"
    "listen = \"tcp://0.0.0.0:1\"\n"
    "max_msg_bytes = 1_048_576\n"
    "send_queue = +4096\n"
    "verify_workers = 8\n"
    "twin_dial = \"2=tcp://127.0.0.1:9\"\n"
    "[rpc]\r\n"
    "listen = \"http://[::1]:65535\"\r\n"
    "max_body_bytes = 2048\n"
    "max_batch = 10000\n"
    "max_connections = 1\n"
    "commit_timeout_ms = 3_600_000\n"
    "body_timeout_ms = 100\n"
    "[mempool]\n"
    "max_txs = 16777216\n"
    "max_bytes = 4294967295\n"
    "[log]\n"
    "level = \"debug\"\n"
    "event_log = \"ev.jsonl\"\n"
    "event_log_max_bytes = 4096\n"
    "[byzantine]\n"
    "mode = \"slow-primary\"\n"
    "delay_ms = 0\n"
    "percent = 100";

/* A file setting every key parses to exactly those values (comments, CRLF, escapes, _). */
static void test_config_full_file_parses_expected_values(void **state)
{
    (void)state;
    node_config c;
    load_text(FULL_TOML, &c);
    assert_string_equal(c.moniker, "alpha \"one\"\t\\ # not a comment");
    assert_string_equal(c.key_file, "keys/k.json");
    assert_string_equal(c.data_dir, "/var/lib/pbft");
    assert_string_equal(c.p2p_listen, "tcp://0.0.0.0:1");
    assert_int_equal(c.p2p_max_msg_bytes, 1048576);
    assert_int_equal(c.p2p_send_queue, 4096);
    assert_int_equal(c.p2p_verify_workers, 8);
    assert_string_equal(c.p2p_twin_dial, "2=tcp://127.0.0.1:9");
    assert_string_equal(c.rpc_listen, "http://[::1]:65535");
    assert_int_equal(c.rpc_max_body_bytes, 2048);
    assert_int_equal(c.rpc_max_batch, 10000);
    assert_int_equal(c.rpc_max_connections, 1);
    assert_int_equal(c.rpc_commit_timeout_ms, 3600000);
    assert_int_equal(c.rpc_body_timeout_ms, 100);
    assert_int_equal(c.mempool_max_txs, 16777216);
    assert_int_equal(c.mempool_max_bytes, 4294967295u);
    assert_string_equal(c.log_level, "debug");
    assert_string_equal(c.event_log, "ev.jsonl");
    assert_int_equal(c.event_log_max_bytes, 4096);
    assert_string_equal(c.byz_mode, "slow-primary");
    assert_int_equal(c.byz_delay_ms, 0);
    assert_int_equal(c.byz_percent, 100);
}

/* Absent keys keep the defaults, and an empty file yields exactly config_defaults. */
static void test_config_absent_keys_keep_defaults(void **state)
{
    (void)state;
    node_config c, def;
    config_defaults(&def);
    assert_string_equal(def.moniker, "node");
    assert_string_equal(def.key_file, "config/node_key.json");
    assert_string_equal(def.data_dir, "data");
    assert_string_equal(def.p2p_listen, "tcp://127.0.0.1:26600");
    assert_int_equal(def.p2p_max_msg_bytes, 32u << 20);
    assert_int_equal(def.p2p_send_queue, 1024);
    assert_int_equal(def.p2p_verify_workers, 2);
    assert_string_equal(def.p2p_twin_dial, "none");
    assert_string_equal(def.rpc_listen, "http://127.0.0.1:26700");
    assert_int_equal(def.rpc_max_body_bytes, 1u << 20);
    assert_int_equal(def.rpc_max_batch, 100);
    assert_int_equal(def.rpc_max_connections, 256);
    assert_int_equal(def.rpc_commit_timeout_ms, 10000);
    assert_int_equal(def.rpc_body_timeout_ms, 10000);
    assert_int_equal(def.mempool_max_txs, 20000);
    assert_int_equal(def.mempool_max_bytes, 64u << 20);
    assert_string_equal(def.log_level, "info");
    assert_string_equal(def.event_log, "data/events.jsonl");
    assert_string_equal(def.byz_mode, "honest");

    load_text("", &c);
    assert_memory_equal(&c, &def, sizeof c);
    load_text("# only comments\n\n[rpc]\n\n[log]\n", &c);
    assert_memory_equal(&c, &def, sizeof c);

    load_text("[rpc]\nmax_batch = 5\n", &c);
    assert_int_equal(c.rpc_max_batch, 5);
    def.rpc_max_batch = 5;
    assert_config_equal(&c, &def);
}

/* config_load starts from the values already in *c, not from the defaults. */
static void test_config_load_over_existing_values_keeps_them(void **state)
{
    (void)state;
    char path[PATH_MAX];
    tmp_path(path, sizeof path, "over.toml");
    write_text(path, "[p2p]\nsend_queue = 7\n");
    node_config c;
    config_defaults(&c);
    c.rpc_max_batch = 42;
    char err[512];
    assert_int_equal(config_load(path, &c, err, sizeof err), 0);
    assert_int_equal(c.p2p_send_queue, 7);
    assert_int_equal(c.rpc_max_batch, 42);
}

/* config_write then config_load gives back every field, for defaults and for odd values. */
static void test_config_write_round_trip_equal(void **state)
{
    (void)state;
    char path[PATH_MAX];
    tmp_path(path, sizeof path, "written.toml");
    char err[1024] = "";

    node_config a, b;
    config_defaults(&a);
    assert_int_equal(config_write(path, &a, err, sizeof err), 0);
    config_defaults(&b);
    b.rpc_max_batch = 1; /* must be overwritten by the file */
    assert_int_equal(config_load(path, &b, err, sizeof err), 0);
    assert_config_equal(&a, &b);

    load_text(FULL_TOML, &a);
    (void)snprintf(a.event_log, sizeof a.event_log, "%s", "line1\nline2 \"q\" \\ # x");
    assert_int_equal(config_write(path, &a, err, sizeof err), 0);
    config_defaults(&b);
    if (config_load(path, &b, err, sizeof err) != 0) {
        fail_msg("%s", err);
    }
    assert_config_equal(&a, &b);

    /* Every key is listed, each after a comment giving its default and range. */
    size_t len;
    char *text = read_text(path, &len);
    static const char *const keys[] = {"moniker",
                                       "key_file",
                                       "data_dir",
                                       "listen",
                                       "max_msg_bytes",
                                       "send_queue",
                                       "verify_workers",
                                       "max_body_bytes",
                                       "max_batch",
                                       "max_connections",
                                       "commit_timeout_ms",
                                       "body_timeout_ms",
                                       "max_txs",
                                       "max_bytes",
                                       "level",
                                       "event_log",
                                       "mode",
                                       "delay_ms",
                                       "percent",
                                       "event_log_max_bytes",
                                       "twin_dial",
                                       "options"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        char needle[64];
        (void)snprintf(needle, sizeof needle, "\n%s = ", keys[i]);
        assert_contains(text, needle);
    }
    assert_contains(text, "# Largest peer frame sent or accepted, in bytes. Default 33554432; "
                          "range 1024..67108864.\nmax_msg_bytes = 1048576\n");
    assert_contains(text, "[byzantine]\n");
    free(text);
}

/* config_write refuses a value config_load would reject, and leaves no file behind. */
static void test_config_write_invalid_value_fails(void **state)
{
    (void)state;
    char path[PATH_MAX];
    tmp_path(path, sizeof path, "never.toml");
    char err[512] = "";
    node_config c;
    config_defaults(&c);
    c.p2p_max_msg_bytes = 0;
    assert_int_equal(config_write(path, &c, err, sizeof err), -1);
    assert_contains(err, "p2p.max_msg_bytes: 0 is out of range (must be 1024..67108864)");
    config_defaults(&c);
    c.moniker[0] = '\x01';
    assert_int_equal(config_write(path, &c, err, sizeof err), -1);
    assert_contains(err, "node.moniker");
    assert_int_equal(access(path, F_OK), -1);
}

/* A misspelt key is an error naming section.key, never a silent default. */
static void test_config_unknown_key_fails(void **state)
{
    (void)state;
    expect_config_error("[rpc]\nmax_batch = 3\nlisen = \"http://a:1\"\n", 3, NULL,
                        "unknown key \"rpc.lisen\"");
    expect_config_error("moniker = \"x\"\n", 1, NULL, "unknown key \"moniker\"");
    expect_config_error("[node]\nmoniker.x = \"x\"\n", 2, "node.moniker", "dotted keys");
}

/* An unknown or malformed section header is an error on its line. */
static void test_config_unknown_section_fails(void **state)
{
    (void)state;
    expect_config_error("[node]\nmoniker = \"a\"\n[rcp]\n", 3, NULL, "unknown section \"[rcp]\"");
    expect_config_error("\n[p2p.x]\n", 2, NULL, "nested sections");
    expect_config_error("[[p2p]]\n", 1, NULL, "arrays of tables");
    expect_config_error("[p2p\n", 1, NULL, "section header");
    expect_config_error("[log]\n[p2p]\n[log]\n", 3, "[log]", "appears twice");
}

/* The same key twice is an error on the second line, even with the same value. */
static void test_config_duplicate_key_fails(void **state)
{
    (void)state;
    expect_config_error("[p2p]\nsend_queue = 5\n\nsend_queue = 5\n", 4, "p2p.send_queue",
                        "duplicate key (first set on line 2)");
}

/* A value of the wrong type names the key and the expected type. */
static void test_config_wrong_type_fails(void **state)
{
    (void)state;
    expect_config_error("[p2p]\nlisten = 26600\n", 2, NULL, "p2p.listen: expected a string");
    expect_config_error("[rpc]\nmax_batch = \"100\"\n", 2, "rpc.max_batch", "expected an integer");
    expect_config_error("[rpc]\nmax_batch = true\n", 2, "rpc.max_batch", "expected an integer");
    expect_config_error("[log]\nlevel = [\"info\", \"warn\",]\n", 2, "log.level",
                        "expected a string");
    expect_config_error("[rpc]\nmax_batch = [1, 2]\n", 2, "rpc.max_batch", "expected an integer");
}

/* Malformed values (arrays, floats, bare words, trailing text) are errors naming the key. */
static void test_config_malformed_value_fails(void **state)
{
    (void)state;
    expect_config_error("[log]\nlevel = [\"a\", 1]\n", 2, "log.level", "mixes");
    expect_config_error("[log]\nlevel = [\"a\"\n", 2, "log.level", "unterminated array");
    expect_config_error("[log]\nlevel = [[1]]\n", 2, "log.level", "nested arrays");
    expect_config_error("[log]\nlevel = [1,,2]\n", 2, "log.level", "empty array element");
    expect_config_error("[log]\nlevel = [true]\n", 2, "log.level", "only strings or integers");
    expect_config_error("[rpc]\nmax_batch = 1.5\n", 2, "rpc.max_batch", "floating-point");
    expect_config_error("[rpc]\nmax_batch = 0x10\n", 2, "rpc.max_batch", "not a decimal integer");
    expect_config_error("[log]\nlevel = info\n", 2, "log.level", "invalid value \"info\"");
    expect_config_error("[log]\nlevel = 'info'\n", 2, "log.level", "literal strings");
    expect_config_error("[log]\nlevel =\n", 2, "log.level", "missing value");
    expect_config_error("[log]\nlevel = \"info\" \"warn\"\n", 2, "log.level",
                        "unexpected text after the value");
    expect_config_error("[log]\nlevel \"info\"\n", 2, "log.level", "expected '='");
    expect_config_error("[log]\n= \"info\"\n", 2, NULL, "syntax");
    expect_config_error("[rpc]\nmax_batch = 1__0\n", 2, "rpc.max_batch", "'_'");
    expect_config_error("[rpc]\nmax_batch = _10\n", 2, "rpc.max_batch", "invalid value");
    expect_config_error("[rpc]\nmax_batch = 10_\n", 2, "rpc.max_batch", "'_'");
    expect_config_error("[log]\nlevel = \"\"\"info\"\"\"\n", 2, "log.level", "multi-line");
}

/* Out-of-range integers (several keys, both ends, negatives) name the key and the range. */
static void test_config_out_of_range_fails(void **state)
{
    (void)state;
    expect_config_error("# c\n\n[p2p]\n\n\n\n\n\n\n\n\nmax_msg_bytes = 0\n", 12, NULL,
                        "p2p.max_msg_bytes: 0 is out of range (must be 1024..67108864)");
    expect_config_error("[p2p]\nmax_msg_bytes = 67108865\n", 2, "p2p.max_msg_bytes",
                        "out of range");
    expect_config_error("[rpc]\nmax_batch = 0\n", 2, "rpc.max_batch", "must be 1..10000");
    expect_config_error("[rpc]\nbody_timeout_ms = 99\n", 2, "rpc.body_timeout_ms",
                        "99 is out of range (must be 100..3600000)");
    expect_config_error("[byzantine]\npercent = 101\n", 2, "byzantine.percent", "must be 0..100");
    expect_config_error("[mempool]\nmax_bytes = 100\n", 2, "mempool.max_bytes",
                        "must be 8192..4294967295");
    expect_config_error("[mempool]\nmax_bytes = 4294967296\n", 2, "mempool.max_bytes",
                        "out of range");
    expect_config_error("[p2p]\nverify_workers = -1\n", 2, "p2p.verify_workers",
                        "-1 is out of range");
    expect_config_error("[node]\nmoniker = \"" /* 64 bytes: one too many */
                        "0123456789012345678901234567890123456789012345678901234567890123\"\n",
                        2, "node.moniker", "64 bytes is too long (at most 63)");
    expect_config_error("[byzantine]\nmode = \"\"\n", 2, "byzantine.mode", "must not be empty");
}

/* Escapes other than \" \\ \n \t, raw control characters and bad UTF-8 are errors. */
static void test_config_bad_escape_fails(void **state)
{
    (void)state;
    expect_config_error("[node]\nmoniker = \"a\\x41\"\n", 2, "node.moniker", "bad escape \"\\x\"");
    expect_config_error("[node]\nmoniker = \"a\\u0041\"\n", 2, "node.moniker", "bad escape");
    expect_config_error("[node]\nmoniker = \"a\x01\"\n", 2, "node.moniker", "control character");
    expect_config_error("[node]\nmoniker = \"a\xc3\"\n", 2, "node.moniker", "UTF-8");
    expect_config_error("[node]\nmoniker = \"\xed\xa0\x80\"\n", 2, "node.moniker", "UTF-8");
    node_config c;
    load_text("[node]\nmoniker = \"n\xc5\x93ud \xf0\x9f\x8c\xb3\"\n", &c);
    assert_string_equal(c.moniker, "n\xc5\x93ud \xf0\x9f\x8c\xb3");
}

/* A string must close on its own line: a raw newline inside it is an error. */
static void test_config_unterminated_string_fails(void **state)
{
    (void)state;
    expect_config_error("[node]\n\nmoniker = \"abc\n\"\n", 3, "node.moniker",
                        "unterminated string");
    expect_config_error("[node]\nmoniker = \"abc\\\"\n", 2, "node.moniker", "unterminated string");
}

/* Lines over 4096 bytes, and files over 1 MiB, are refused. */
static void test_config_overlong_line_fails(void **state)
{
    (void)state;
    size_t n = 5000;
    char *text = malloc(n + 64);
    assert_non_null(text);
    int h = snprintf(text, n + 64, "[node]\n# x\nmoniker = \"");
    memset(text + h, 'a', n);
    (void)snprintf(text + (size_t)h + n, 64, "\"\n");
    expect_config_error(text, 3, "node.moniker", "longer than 4096 bytes");
    free(text);

    char path[PATH_MAX];
    tmp_path(path, sizeof path, "huge.toml");
    size_t big = (1u << 20) + 1;
    char *blank = malloc(big);
    assert_non_null(blank);
    memset(blank, '\n', big);
    write_bytes(path, blank, big);
    free(blank);
    node_config c;
    config_defaults(&c);
    char err[512] = "";
    assert_int_equal(config_load(path, &c, err, sizeof err), -1);
    assert_prefix(err, path);
    assert_contains(err, "too large");
}

/* Integers beyond 64 bits are detected, not wrapped. */
static void test_config_integer_overflow_fails(void **state)
{
    (void)state;
    expect_config_error("[rpc]\nmax_batch = 9223372036854775808\n", 2, "rpc.max_batch",
                        "overflows");
    expect_config_error("[rpc]\nmax_batch = -9_223_372_036_854_775_809\n", 2, "rpc.max_batch",
                        "overflows");
    expect_config_error("[rpc]\nmax_batch = 99999999999999999999999\n", 2, "rpc.max_batch",
                        "overflows");
    /* Just inside int64 is a range error, not an overflow. */
    expect_config_error("[rpc]\nmax_batch = 9223372036854775807\n", 2, "rpc.max_batch",
                        "out of range");
}

/* Leading zeros are refused (TOML); a lone 0 (signed or not) is fine. */
static void test_config_leading_zero_fails(void **state)
{
    (void)state;
    expect_config_error("[rpc]\nmax_batch = 010\n", 2, "rpc.max_batch", "leading zeros");
    expect_config_error("[rpc]\nmax_batch = -0_1\n", 2, "rpc.max_batch", "leading zeros");
    node_config c;
    load_text("[byzantine]\ndelay_ms = -0\npercent = +0\n", &c);
    assert_int_equal(c.byz_delay_ms, 0);
    assert_int_equal(c.byz_percent, 0);
}

/* Listen addresses need the right scheme, a host and a port in 1..65535. */
static void test_config_bad_address_fails(void **state)
{
    (void)state;
    expect_config_error("[p2p]\nlisten = \"127.0.0.1:26600\"\n", 2, "p2p.listen", "scheme");
    expect_config_error("[p2p]\nlisten = \"http://127.0.0.1:26600\"\n", 2, "p2p.listen",
                        "tcp://host:port");
    expect_config_error("[p2p]\nlisten = \"tcp://127.0.0.1\"\n", 2, "p2p.listen", "missing :port");
    expect_config_error("[p2p]\nlisten = \"tcp://127.0.0.1:0\"\n", 2, "p2p.listen", "1..65535");
    expect_config_error("[p2p]\nlisten = \"tcp://127.0.0.1:65536\"\n", 2, "p2p.listen", "1..65535");
    expect_config_error("[p2p]\nlisten = \"tcp://:26600\"\n", 2, "p2p.listen", "empty host");
    expect_config_error("[p2p]\nlisten = \"tcp://::1:26600\"\n", 2, "p2p.listen", "brackets");
    expect_config_error("[rpc]\nlisten = \"tcp://127.0.0.1:26700\"\n", 2, "rpc.listen",
                        "http://host:port");
    expect_config_error("[rpc]\nlisten = \"http://a/b:1\"\n", 2, "rpc.listen", "bad character");
    expect_config_error("[p2p]\ntwin_dial = \"tcp://127.0.0.1:9\"\n", 2, "p2p.twin_dial",
                        "neither none nor ID=tcp://host:port");
    expect_config_error("[p2p]\ntwin_dial = \"1=http://127.0.0.1:9\"\n", 2, "p2p.twin_dial",
                        "tcp://host:port");
    expect_config_error("[p2p]\npeer_override = \"1=tcp://127.0.0.1:9,x\"\n", 2,
                        "p2p.peer_override", "neither none nor");
    node_config c2;
    load_text("[p2p]\npeer_override = \"1=tcp://127.0.0.1:9,12=tcp://h:1\"\n", &c2);
    assert_string_equal(c2.p2p_peer_override, "1=tcp://127.0.0.1:9,12=tcp://h:1");
}

/* log.level accepts exactly debug, info, warn, error. */
static void test_config_bad_log_level_fails(void **state)
{
    (void)state;
    expect_config_error("[log]\nlevel = \"verbose\"\n", 2, "log.level",
                        "\"verbose\" is not a log level");
    expect_config_error("[log]\nlevel = \"INFO\"\n", 2, "log.level", "not a log level");
    node_config c;
    load_text("[log]\nlevel = \"warn\"\n", &c);
    assert_string_equal(c.log_level, "warn");
}

/* A missing file is an error naming it. */
static void test_config_missing_file_fails(void **state)
{
    (void)state;
    char path[PATH_MAX];
    tmp_path(path, sizeof path, "absent.toml");
    node_config c;
    config_defaults(&c);
    char err[512] = "";
    assert_int_equal(config_load(path, &c, err, sizeof err), -1);
    assert_prefix(err, path);
}

/* ---- genesis.json ----------------------------------------------------------------------- */

/* key_hex writes the hex of a key whose 32 bytes all equal b. */
static void key_hex(uint8_t b, char out[65])
{
    uint8_t k[32];
    memset(k, b, sizeof k);
    keys_hex_encode(k, sizeof k, out);
}

/* genesis_text writes a hand-made genesis with n validators (keys 0x10+i, ports 26600+i) and
 * two accounts (keys 0xa0, 0xa1). Independent of genesis_write on purpose. */
static void genesis_text(char *out, size_t cap, int n)
{
    size_t pos = 0;
    int w = snprintf(out, cap,
                     "{\n  \"chain_id\": \"test-chain\",\n  \"genesis_time_ms\": 1700000000000,\n"
                     "  \"consensus\": {\"checkpoint_interval\": 64, \"window\": 256, "
                     "\"max_inflight\": 64, \"max_block_txs\": 1000, \"max_block_bytes\": "
                     "1048576, \"block_interval_ms\": 10, \"view_timeout_ms\": 2000, "
                     "\"view_timeout_max_ms\": 60000, \"resend_ms\": 500, \"state_retry_ms\": "
                     "2000, \"max_state_blocks\": 64},\n  \"validators\": [\n");
    assert_true(w > 0 && (size_t)w < cap);
    pos += (size_t)w;
    for (int i = 0; i < n; i++) {
        char k[65];
        key_hex((uint8_t)(0x10 + i), k);
        w = snprintf(out + pos, cap - pos,
                     "    {\"id\": %d, \"public_key\": \"%s\", \"p2p_address\": "
                     "\"tcp://127.0.0.1:%d\", \"rpc_address\": \"http://127.0.0.1:%d\", "
                     "\"name\": \"node%d\"}%s\n",
                     i, k, 26600 + i, 26700 + i, i, i + 1 < n ? "," : "");
        assert_true(w > 0 && (size_t)w < cap - pos);
        pos += (size_t)w;
    }
    char a0[65], a1[65];
    key_hex(0xa0, a0);
    key_hex(0xa1, a1);
    w = snprintf(out + pos, cap - pos,
                 "  ],\n  \"accounts\": [\n    {\"public_key\": \"%s\", \"balance\": \"1000\"},\n"
                 "    {\"public_key\": \"%s\", \"balance\": \"18446744073709551615\"}\n  ]\n}\n",
                 a0, a1);
    assert_true(w > 0 && (size_t)w < cap - pos);
}

/* replace_once returns text with the first occurrence of old (which must exist) replaced. */
static char *replace_once(const char *text, const char *old, const char *new_text)
{
    const char *at = strstr(text, old);
    if (at == NULL) {
        fail_msg("\"%s\" not in the template", old);
    }
    size_t n = strlen(text) - strlen(old) + strlen(new_text);
    char *out = malloc(n + 1);
    assert_non_null(out);
    size_t pre = (size_t)(at - text);
    memcpy(out, text, pre);
    memcpy(out + pre, new_text, strlen(new_text));
    strcpy(out + pre + strlen(new_text), at + strlen(old));
    return out;
}

#define GENESIS_TEXT_CAP 32768

/* expect_genesis_error loads text and checks "<path>: <jpath>" starts the message and what
 * is in it; a failed load leaves no allocation behind. */
static void expect_genesis_error(const char *text, const char *jpath, const char *what)
{
    char path[PATH_MAX];
    tmp_path(path, sizeof path, "bad_genesis.json");
    write_text(path, text);
    genesis g;
    char err[1024] = "";
    assert_int_equal(genesis_load(path, &g, err, sizeof err), -1);
    char prefix[PATH_MAX + 128];
    /* Parse errors carry "<path>:<line>:<col>:" instead of a JSON path. */
    (void)snprintf(prefix, sizeof prefix, "%s%s%s", path, jpath[0] != '\0' ? ": " : "", jpath);
    assert_prefix(err, prefix);
    assert_contains(err, what);
    assert_null(g.accounts);
    assert_int_equal(g.n_accounts, 0);
}

/* expect_edit_error applies one replacement to the 4-validator template and expects an error. */
static void expect_edit_error(const char *old, const char *new_text, const char *jpath,
                              const char *what)
{
    char *base = malloc(GENESIS_TEXT_CAP);
    assert_non_null(base);
    genesis_text(base, GENESIS_TEXT_CAP, 4);
    char *text = replace_once(base, old, new_text);
    expect_genesis_error(text, jpath, what);
    free(text);
    free(base);
}

/* load_genesis_text loads text, requiring success. */
static void load_genesis_text(const char *text, genesis *g)
{
    char path[PATH_MAX];
    tmp_path(path, sizeof path, "good_genesis.json");
    write_text(path, text);
    char err[1024] = "";
    if (genesis_load(path, g, err, sizeof err) != 0) {
        fail_msg("genesis_load: %s", err);
    }
}

static void assert_genesis_equal(const genesis *a, const genesis *b)
{
    assert_string_equal(a->chain_id, b->chain_id);
    assert_int_equal(a->genesis_time_ms, b->genesis_time_ms);
    assert_int_equal(a->checkpoint_interval, b->checkpoint_interval);
    assert_int_equal(a->window, b->window);
    assert_int_equal(a->max_inflight, b->max_inflight);
    assert_int_equal(a->max_block_txs, b->max_block_txs);
    assert_int_equal(a->max_block_bytes, b->max_block_bytes);
    assert_int_equal(a->block_interval_ms, b->block_interval_ms);
    assert_int_equal(a->view_timeout_ms, b->view_timeout_ms);
    assert_int_equal(a->view_timeout_max_ms, b->view_timeout_max_ms);
    assert_int_equal(a->resend_ms, b->resend_ms);
    assert_int_equal(a->state_retry_ms, b->state_retry_ms);
    assert_int_equal(a->max_state_blocks, b->max_state_blocks);
    assert_int_equal(a->n, b->n);
    for (size_t i = 0; i < a->n; i++) {
        assert_memory_equal(a->validators[i].public_key, b->validators[i].public_key, 32);
        assert_string_equal(a->validators[i].p2p_address, b->validators[i].p2p_address);
        assert_string_equal(a->validators[i].rpc_address, b->validators[i].rpc_address);
        assert_string_equal(a->validators[i].name, b->validators[i].name);
    }
    assert_int_equal(a->n_accounts, b->n_accounts);
    for (size_t i = 0; i < a->n_accounts; i++) {
        assert_memory_equal(a->accounts[i].public_key, b->accounts[i].public_key, 32);
        assert_int_equal(a->accounts[i].balance, b->accounts[i].balance);
    }
}

/* The hand-written template loads with the expected values, and its hash is over the bytes. */
static void test_genesis_handwritten_loads_expected_values(void **state)
{
    (void)state;
    char *text = malloc(GENESIS_TEXT_CAP);
    assert_non_null(text);
    genesis_text(text, GENESIS_TEXT_CAP, 4);
    genesis g;
    load_genesis_text(text, &g);
    assert_string_equal(g.chain_id, "test-chain");
    assert_int_equal(g.genesis_time_ms, 1700000000000ull);
    assert_int_equal(g.checkpoint_interval, 64);
    assert_int_equal(g.window, 256);
    assert_int_equal(g.max_block_bytes, 1048576);
    assert_int_equal(g.max_state_blocks, 64);
    assert_int_equal(g.n, 4);
    uint8_t k[32];
    memset(k, 0x12, sizeof k);
    assert_memory_equal(g.validators[2].public_key, k, 32);
    assert_string_equal(g.validators[2].p2p_address, "tcp://127.0.0.1:26602");
    assert_string_equal(g.validators[2].rpc_address, "http://127.0.0.1:26702");
    assert_string_equal(g.validators[2].name, "node2");
    assert_int_equal(g.n_accounts, 2);
    assert_int_equal(g.accounts[0].balance, 1000);
    assert_int_equal(g.accounts[1].balance, UINT64_MAX);
    uint8_t h[32];
    keys_sha256((const uint8_t *)text, strlen(text), h);
    assert_memory_equal(g.hash, h, 32);
    genesis_free(&g);
    genesis_free(&g); /* safe twice */
    free(text);
}

/* Optional fields (name, rpc_address) may be left out; they read back empty. */
static void test_genesis_optional_fields_absent_load_empty(void **state)
{
    (void)state;
    char *base = malloc(GENESIS_TEXT_CAP);
    assert_non_null(base);
    genesis_text(base, GENESIS_TEXT_CAP, 4);
    char *text = replace_once(base,
                              ", \"rpc_address\": \"http://127.0.0.1:26701\", \"name\": "
                              "\"node1\"",
                              "");
    genesis g;
    load_genesis_text(text, &g);
    assert_string_equal(g.validators[1].rpc_address, "");
    assert_string_equal(g.validators[1].name, "");
    assert_string_equal(g.validators[2].name, "node2");
    genesis_free(&g);
    free(text);
    free(base);
}

/* make_genesis fills a genesis by hand: n validators, some without optional fields. */
static void make_genesis(genesis *g, uint16_t n, size_t n_accounts)
{
    memset(g, 0, sizeof *g);
    (void)snprintf(g->chain_id, sizeof g->chain_id, "%s", "round.trip_chain-1");
    g->genesis_time_ms = 1712345678901ull;
    g->checkpoint_interval = 32;
    g->window = 128;
    g->max_inflight = 100;
    g->max_block_txs = 500;
    g->max_block_bytes = 2u << 20;
    g->block_interval_ms = 5;
    g->view_timeout_ms = 1000;
    g->view_timeout_max_ms = 30000;
    g->resend_ms = 250;
    g->state_retry_ms = 1000;
    g->max_state_blocks = 32;
    g->n = n;
    for (uint16_t i = 0; i < n; i++) {
        uint8_t seed[32];
        memset(seed, (int)(i + 1), sizeof seed);
        uint8_t sk[64];
        assert_int_equal(keys_from_seed(seed, g->validators[i].public_key, sk), KEYS_OK);
        (void)snprintf(g->validators[i].p2p_address, CONFIG_ADDR_MAX, "tcp://10.0.0.%u:26600",
                       (unsigned)i + 1);
        if (i % 2 == 0) {
            (void)snprintf(g->validators[i].rpc_address, CONFIG_ADDR_MAX, "http://[fd00::%u]:26700",
                           (unsigned)i + 1);
        }
        if (i % 3 != 2) {
            (void)snprintf(g->validators[i].name, sizeof g->validators[i].name, "v\u00e9lid \"%u\"",
                           (unsigned)i);
        }
    }
    g->n_accounts = n_accounts;
    g->accounts = calloc(n_accounts > 0 ? n_accounts : 1, sizeof *g->accounts);
    assert_non_null(g->accounts);
    for (size_t i = 0; i < n_accounts; i++) {
        memset(g->accounts[i].public_key, 0, 32);
        memcpy(g->accounts[i].public_key, &i, sizeof i);
        g->accounts[i].balance = i == 0 ? 0 : i == 1 ? UINT64_MAX : (uint64_t)i * 1000003u;
    }
}

/* genesis_write then genesis_load gives equal fields; the hash is SHA-256 of the file bytes;
 * writing is deterministic and in the documented key order. */
static void test_genesis_write_round_trip_equal(void **state)
{
    (void)state;
    char p1[PATH_MAX], p2[PATH_MAX];
    tmp_path(p1, sizeof p1, "g1.json");
    tmp_path(p2, sizeof p2, "g2.json");
    genesis a, b;
    make_genesis(&a, 7, 50);
    char err[1024] = "";
    if (genesis_write(p1, &a, err, sizeof err) != 0) {
        fail_msg("genesis_write: %s", err);
    }
    assert_int_equal(genesis_write(p2, &a, err, sizeof err), 0);
    if (genesis_load(p1, &b, err, sizeof err) != 0) {
        fail_msg("genesis_load: %s", err);
    }
    assert_genesis_equal(&a, &b);

    size_t n1, n2;
    char *t1 = read_text(p1, &n1);
    char *t2 = read_text(p2, &n2);
    assert_int_equal(n1, n2);
    assert_memory_equal(t1, t2, n1);
    uint8_t h[32];
    keys_sha256((const uint8_t *)t1, n1, h);
    assert_memory_equal(b.hash, h, 32);

    assert_prefix(t1, "{\n  \"chain_id\": \"round.trip_chain-1\",\n  \"genesis_time_ms\": "
                      "1712345678901,\n  \"consensus\": {\n    \"checkpoint_interval\": 32,\n");
    const char *order[] = {"\"genesis_time_ms\"",  "\"consensus\"",  "\"window\"",
                           "\"max_state_blocks\"", "\"validators\"", "\"accounts\""};
    const char *prev = strstr(t1, "\"chain_id\"");
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++) {
        const char *at = strstr(t1, order[i]);
        assert_non_null(at);
        assert_true(at > prev);
        prev = at;
    }
    assert_contains(t1, "\"balance\": \"18446744073709551615\"");
    assert_true(n1 >= 2 && t1[n1 - 2] == '}' && t1[n1 - 1] == '\n');

    /* And the written file loads again to the same hash. */
    genesis c;
    assert_int_equal(genesis_load(p1, &c, err, sizeof err), 0);
    assert_memory_equal(c.hash, b.hash, 32);
    genesis_free(&c);

    free(t1);
    free(t2);
    genesis_free(&a);
    genesis_free(&b);
}

/* genesis_write refuses what genesis_load would refuse to read. */
static void test_genesis_write_invalid_fails(void **state)
{
    (void)state;
    char path[PATH_MAX];
    tmp_path(path, sizeof path, "never.json");
    char err[1024] = "";
    genesis g;
    make_genesis(&g, 3, 1);
    assert_int_equal(genesis_write(path, &g, err, sizeof err), -1);
    assert_contains(err, "validators");
    genesis_free(&g);

    make_genesis(&g, 4, 0);
    g.window = 100;
    assert_int_equal(genesis_write(path, &g, err, sizeof err), -1);
    assert_contains(err, "consensus.window");
    g.window = 128;
    g.n_accounts = GENESIS_MAX_ACCOUNTS + 1; /* refused before the array is touched */
    assert_int_equal(genesis_write(path, &g, err, sizeof err), -1);
    assert_contains(err, "accounts");
    g.n_accounts = 0;
    assert_int_equal(access(path, F_OK), -1);
    assert_int_equal(genesis_write(path, &g, err, sizeof err), 0); /* empty accounts is fine */
    genesis_free(&g);
}

/* A missing required field names its JSON path. */
static void test_genesis_missing_field_fails(void **state)
{
    (void)state;
    expect_edit_error("\"genesis_time_ms\": 1700000000000,\n  ", "", "genesis_time_ms", "missing");
    expect_edit_error("\"p2p_address\": \"tcp://127.0.0.1:26601\", ", "",
                      "validators[1].p2p_address", "missing");
    expect_edit_error("\"window\": 256, ", "", "consensus.window", "missing");
    expect_edit_error("\"balance\": \"1000\"", "\"balance_\": \"1000\"", "accounts[0].balance_",
                      "unknown field");
}

/* Fields nobody defined are errors naming them, at every level. */
static void test_genesis_unknown_field_fails(void **state)
{
    (void)state;
    expect_edit_error("\"chain_id\"", "\"extra\": true, \"chain_id\"", "extra", "unknown field");
    expect_edit_error("\"name\": \"node1\"", "\"name\": \"node1\", \"port\": 1",
                      "validators[1].port", "unknown field");
    expect_edit_error("\"max_state_blocks\": 64",
                      "\"max_state_blocks\": 64, \"max_pending_txs\": 5",
                      "consensus.max_pending_txs", "unknown field");
}

/* Public keys must be exactly 64 hex characters. */
static void test_genesis_bad_hex_fails(void **state)
{
    (void)state;
    char k[65];
    key_hex(0x12, k);
    expect_edit_error(k, "1212", "validators[2].public_key", "expected 64 hex characters");
    expect_edit_error(k, "g212121212121212121212121212121212121212121212121212121212121212",
                      "validators[2].public_key", "expected 64 hex characters");
    key_hex(0xa1, k);
    expect_edit_error(k, "", "accounts[1].public_key", "expected 64 hex characters");
}

/* Two validators, or two accounts, with one key are refused, naming both. */
static void test_genesis_duplicate_key_fails(void **state)
{
    (void)state;
    char k1[65], k3[65];
    key_hex(0x11, k1);
    key_hex(0x13, k3);
    expect_edit_error(k3, k1, "validators[3].public_key", "duplicates validators[1].public_key");
    char a0[65], a1[65];
    key_hex(0xa0, a0);
    key_hex(0xa1, a1);
    expect_edit_error(a1, a0, "accounts[1].public_key", "duplicates accounts[0].public_key");
    /* A repeated JSON object key is refused by the parser, with its position. */
    expect_edit_error("\"chain_id\"", "\"chain_id\": \"x\", \"chain_id\"", "", "duplicate");
}

/* Validator ids must be 0..n-1 in array order. */
static void test_genesis_ids_out_of_order_fails(void **state)
{
    (void)state;
    expect_edit_error("{\"id\": 1,", "{\"id\": 2,", "validators[1].id", "expected 1");
    expect_edit_error("{\"id\": 0,", "{\"id\": -1,", "validators[0].id", "out of range");
    expect_edit_error("{\"id\": 0,", "{\"id\": \"0\",", "validators[0].id", "expected an integer");
}

/* Fewer than 4 validators (or more than PBFT_MAX_N) is refused. */
static void test_genesis_too_few_validators_fails(void **state)
{
    (void)state;
    char *text = malloc(GENESIS_TEXT_CAP);
    assert_non_null(text);
    genesis_text(text, GENESIS_TEXT_CAP, 3);
    expect_genesis_error(text, "validators", "3 validators; must be 4..64");
    genesis_text(text, GENESIS_TEXT_CAP, 65);
    expect_genesis_error(text, "validators", "65 validators");
    free(text);
}

/* Balances are canonical decimal u64 strings: no leading zeros, sign, overflow or numbers. */
static void test_genesis_bad_balance_fails(void **state)
{
    (void)state;
    static const char *const bad[] = {"\"01\"", "\"-1\"",  "\"+1\"", "\"18446744073709551616\"",
                                      "\"\"",   "\"1e3\"", "\" 1\"", "\"99999999999999999999999\""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char repl[64];
        (void)snprintf(repl, sizeof repl, "\"balance\": %s", bad[i]);
        expect_edit_error("\"balance\": \"1000\"", repl, "accounts[0].balance",
                          "not a decimal u64");
    }
    expect_edit_error("\"balance\": \"1000\"", "\"balance\": 5", "accounts[0].balance",
                      "expected a decimal string");
    /* The smallest and largest u64 are fine. */
    char *base = malloc(GENESIS_TEXT_CAP);
    assert_non_null(base);
    genesis_text(base, GENESIS_TEXT_CAP, 4);
    char *text = replace_once(base, "\"balance\": \"1000\"", "\"balance\": \"0\"");
    genesis g;
    load_genesis_text(text, &g);
    assert_int_equal(g.accounts[0].balance, 0);
    assert_int_equal(g.accounts[1].balance, UINT64_MAX);
    genesis_free(&g);
    free(text);
    free(base);
}

/* Consensus parameters are judged by pbft_config_validate, with the path in front. */
static void test_genesis_bad_consensus_fails(void **state)
{
    (void)state;
    expect_edit_error("\"window\": 256", "\"window\": 100", "consensus.window",
                      "100 is not a multiple of checkpoint_interval (64)");
    expect_edit_error("\"window\": 256", "\"window\": 64", "consensus: window", "at least twice");
    expect_edit_error("\"max_state_blocks\": 64", "\"max_state_blocks\": 1000",
                      "consensus: max_state_blocks", "1000");
    expect_edit_error("\"max_inflight\": 64", "\"max_inflight\": 257", "consensus: max_inflight",
                      "257");
    expect_edit_error("\"checkpoint_interval\": 64", "\"checkpoint_interval\": 0",
                      "consensus: checkpoint_interval", "at least 1");
    expect_edit_error("\"window\": 256", "\"window\": \"256\"", "consensus.window",
                      "expected an integer");
    expect_edit_error("\"window\": 256", "\"window\": 4294967296", "consensus.window",
                      "out of range");
    expect_edit_error("\"window\": 256", "\"window\": 256.0", "consensus.window",
                      "expected an integer");
}

/* Other malformed fields: chain id, addresses, names, time, whole-document shape, size. */
static void test_genesis_other_bad_fields_fail(void **state)
{
    (void)state;
    expect_edit_error("\"test-chain\"", "\"test chain\"", "chain_id", "only A-Z");
    expect_edit_error("\"test-chain\"", "\"\"", "chain_id", "must not be empty");
    expect_edit_error("\"test-chain\"",
                      "\"01234567890123456789012345678901234567890123456789012345678901234\"",
                      "chain_id", "too long");
    expect_edit_error("\"tcp://127.0.0.1:26602\"", "\"udp://127.0.0.1:26602\"",
                      "validators[2].p2p_address", "tcp://host:port");
    expect_edit_error("\"http://127.0.0.1:26703\"", "\"http://127.0.0.1\"",
                      "validators[3].rpc_address", "missing :port");
    expect_edit_error("\"node0\"", "\"a\\nb\"", "validators[0].name", "control characters");
    expect_edit_error("1700000000000", "-1", "genesis_time_ms", "out of range");
    expect_edit_error("\"test-chain\"", "5", "chain_id", "expected a string");
    expect_edit_error("\"accounts\": [", "\"accounts\": {}, \"x\": [", "x", "unknown field");
    expect_genesis_error("[]", "", "expected a JSON object");
    expect_genesis_error("{\"chain_id\": ", "", ":1:");

    char path[PATH_MAX];
    tmp_path(path, sizeof path, "huge.json");
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, (off_t)GENESIS_MAX_BYTES + 1), 0); /* sparse: no real I/O */
    assert_int_equal(close(fd), 0);
    genesis g;
    char err[512] = "";
    assert_int_equal(genesis_load(path, &g, err, sizeof err), -1);
    assert_prefix(err, path);
    assert_contains(err, "too large");
}

/* genesis_to_pbft gives a config pbft_config_validate accepts once id is set. */
static void test_genesis_to_pbft_validates(void **state)
{
    (void)state;
    char *text = malloc(GENESIS_TEXT_CAP);
    assert_non_null(text);
    genesis_text(text, GENESIS_TEXT_CAP, 7);
    genesis g;
    load_genesis_text(text, &g);
    free(text);

    pbft_config c;
    memset(&c, 0xee, sizeof c); /* every field must be overwritten, or left to the caller */
    genesis_to_pbft(&g, &c);
    c.id = 6;
    char err[512] = "";
    if (pbft_config_validate(&c, err, sizeof err) != 0) {
        fail_msg("pbft_config_validate: %s", err);
    }
    assert_int_equal(c.n, 7);
    uint8_t chain[32];
    keys_sha256((const uint8_t *)"test-chain", strlen("test-chain"), chain);
    assert_memory_equal(c.chain, chain, 32);
    assert_memory_equal(c.genesis, g.hash, 32);
    for (uint16_t i = 0; i < 7; i++) {
        assert_memory_equal(c.pubkeys[i], g.validators[i].public_key, 32);
    }
    uint8_t zero[32] = {0};
    assert_memory_equal(c.pubkeys[7], zero, 32);
    assert_int_equal(c.checkpoint_interval, 64);
    assert_int_equal(c.window, 256);
    assert_int_equal(c.max_inflight, 64);
    assert_int_equal(c.max_block_txs, 1000);
    assert_int_equal(c.max_block_bytes, 1048576);
    assert_int_equal(c.block_interval_ms, 10);
    assert_int_equal(c.view_timeout_ms, 2000);
    assert_int_equal(c.view_timeout_max_ms, 60000);
    assert_int_equal(c.resend_ms, 500);
    assert_int_equal(c.state_retry_ms, 2000);
    assert_int_equal(c.max_state_blocks, 64);
    pbft_config d;
    pbft_config_defaults(&d);
    assert_int_equal(c.max_pending_txs, d.max_pending_txs);
    assert_int_equal(c.max_pending_bytes, d.max_pending_bytes);
    genesis_free(&g);
}

/* testnet_chain_id runs the built pbftd testnet into a fresh directory with extra options and
 * returns its exit status; on success *chain_id receives node0's genesis chain id. The
 * directory is removed. */
static int testnet_chain_id(const char *name, const char *opts, char *chain_id, size_t cap)
{
    const char *bin = getenv("PBFT_BIN");
    assert_non_null(bin);
    char dir[PATH_MAX], cmd[3 * PATH_MAX], path[PATH_MAX + 64], err[512];
    tmp_path(dir, sizeof dir, name);
    (void)snprintf(cmd, sizeof cmd,
                   "'%s/pbftd' testnet --n 4 --out '%s' --accounts 1 %s >/dev/null 2>&1", bin, dir,
                   opts);
    int rc = system(cmd);
    if (rc == 0) {
        genesis g;
        memset(&g, 0, sizeof g);
        (void)snprintf(path, sizeof path, "%s/node0/config/genesis.json", dir);
        if (genesis_load(path, &g, err, sizeof err) != 0) {
            fail_msg("%s", err);
        }
        (void)snprintf(chain_id, cap, "%s", g.chain_id);
        genesis_free(&g);
    }
    (void)snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
    return rc;
}

/* pbftd testnet without --chain-id gives every network its own random chain id
 * (pbft-testnet- and 16 hex digits); --chain-id ID is used as given, a bad one refused. */
static void test_testnet_no_chain_id_random_per_network(void **state)
{
    (void)state;
    if (getenv("PBFT_BIN") == NULL) {
        skip();
    }
    char a[65] = "", b[65] = "", c[65] = "";
    assert_int_equal(testnet_chain_id("net_a", "", a, sizeof a), 0);
    assert_int_equal(testnet_chain_id("net_b", "", b, sizeof b), 0);
    assert_int_equal(strlen(a), strlen("pbft-testnet-") + 16);
    assert_memory_equal(a, "pbft-testnet-", strlen("pbft-testnet-"));
    assert_int_equal(strspn(a + strlen("pbft-testnet-"), "0123456789abcdef"), 16);
    assert_memory_equal(b, "pbft-testnet-", strlen("pbft-testnet-"));
    assert_string_not_equal(a, b);
    assert_int_equal(testnet_chain_id("net_c", "--chain-id pbft-local", c, sizeof c), 0);
    assert_string_equal(c, "pbft-local");
    assert_int_not_equal(testnet_chain_id("net_d", "--chain-id 'a b'", c, sizeof c), 0);
    assert_int_not_equal(testnet_chain_id("net_e", "--chain-id=", c, sizeof c), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_full_file_parses_expected_values),
        cmocka_unit_test(test_config_absent_keys_keep_defaults),
        cmocka_unit_test(test_config_load_over_existing_values_keeps_them),
        cmocka_unit_test(test_config_write_round_trip_equal),
        cmocka_unit_test(test_config_write_invalid_value_fails),
        cmocka_unit_test(test_config_unknown_key_fails),
        cmocka_unit_test(test_config_unknown_section_fails),
        cmocka_unit_test(test_config_duplicate_key_fails),
        cmocka_unit_test(test_config_wrong_type_fails),
        cmocka_unit_test(test_config_malformed_value_fails),
        cmocka_unit_test(test_config_out_of_range_fails),
        cmocka_unit_test(test_config_bad_escape_fails),
        cmocka_unit_test(test_config_unterminated_string_fails),
        cmocka_unit_test(test_config_overlong_line_fails),
        cmocka_unit_test(test_config_integer_overflow_fails),
        cmocka_unit_test(test_config_leading_zero_fails),
        cmocka_unit_test(test_config_bad_address_fails),
        cmocka_unit_test(test_config_bad_log_level_fails),
        cmocka_unit_test(test_config_missing_file_fails),
        cmocka_unit_test(test_genesis_handwritten_loads_expected_values),
        cmocka_unit_test(test_genesis_optional_fields_absent_load_empty),
        cmocka_unit_test(test_genesis_write_round_trip_equal),
        cmocka_unit_test(test_genesis_write_invalid_fails),
        cmocka_unit_test(test_genesis_missing_field_fails),
        cmocka_unit_test(test_genesis_unknown_field_fails),
        cmocka_unit_test(test_genesis_bad_hex_fails),
        cmocka_unit_test(test_genesis_duplicate_key_fails),
        cmocka_unit_test(test_genesis_ids_out_of_order_fails),
        cmocka_unit_test(test_genesis_too_few_validators_fails),
        cmocka_unit_test(test_genesis_bad_balance_fails),
        cmocka_unit_test(test_genesis_bad_consensus_fails),
        cmocka_unit_test(test_genesis_other_bad_fields_fail),
        cmocka_unit_test(test_genesis_to_pbft_validates),
        cmocka_unit_test(test_testnet_no_chain_id_random_per_network),
    };
    return cmocka_run_group_tests(tests, dir_setup, dir_teardown);
}
