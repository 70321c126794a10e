/*
 * test_crypto.c - unit tests for crypto/keys.c: Ed25519 (RFC 8032 section 7.1), SHA-256
 * (FIPS 180-2 known answers), the RFC 6962 Merkle root, hex helpers and key files.
 *
 * Expected values are external (the RFCs, FIPS 180-2, and Python's hashlib for the Merkle
 * roots) or come from an independent reference implementation written here, never from the
 * code under test.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <ctype.h>
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crypto/keys.h"

/* ---- helpers ---------------------------------------------------------------------------- */

/* unhex decodes a hex literal of known length, failing the test on malformed input. */
static void unhex(const char *s, uint8_t *out, size_t outlen)
{
    assert_int_equal(strlen(s), 2 * outlen);
    assert_int_equal(keys_hex_decode(s, out, outlen), KEYS_OK);
}

/* assert_hash_hex compares a 32-byte hash with its expected lower-case hex. */
static void assert_hash_hex(const uint8_t h[KEYS_HASH_BYTES], const char *want)
{
    char got[2 * KEYS_HASH_BYTES + 1];
    keys_hex_encode(h, KEYS_HASH_BYTES, got);
    assert_string_equal(got, want);
}

/* ---- Ed25519: RFC 8032 section 7.1 ------------------------------------------------------ */

typedef struct {
    const char *seed, *pk, *msg, *sig;
} rfc8032_hex;

static const rfc8032_hex RFC8032[] = {
    /* TEST 1: empty message */
    {"9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
     "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
     "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
     "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"},
    /* TEST 2: one byte */
    {"4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
     "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
     "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
     "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"},
    /* TEST 3: two bytes */
    {"c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
     "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025", "af82",
     "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac"
     "18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a"},
};
#define N_RFC8032 (sizeof RFC8032 / sizeof RFC8032[0])

typedef struct {
    uint8_t seed[KEYS_SEED_BYTES];
    uint8_t pk[KEYS_PK_BYTES];
    uint8_t msg[8];
    size_t msg_len;
    uint8_t sig[KEYS_SIG_BYTES];
} rfc8032_vec;

static void load_vec(size_t i, rfc8032_vec *v)
{
    unhex(RFC8032[i].seed, v->seed, sizeof v->seed);
    unhex(RFC8032[i].pk, v->pk, sizeof v->pk);
    v->msg_len = strlen(RFC8032[i].msg) / 2;
    assert_true(v->msg_len <= sizeof v->msg);
    unhex(RFC8032[i].msg, v->msg, v->msg_len);
    unhex(RFC8032[i].sig, v->sig, sizeof v->sig);
}

/* keys_init may be called repeatedly and succeeds each time. */
static void test_keys_init_repeated_succeeds(void **state)
{
    (void)state;
    assert_int_equal(keys_init(), KEYS_OK);
    assert_int_equal(keys_init(), KEYS_OK);
}

/* keys_from_seed yields the RFC public key, and sk is seed || pk as libsodium lays it out. */
static void test_ed25519_rfc8032_seed_derives_public_key(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_RFC8032; i++) {
        rfc8032_vec v;
        uint8_t pk[KEYS_PK_BYTES], sk[KEYS_SK_BYTES];
        load_vec(i, &v);
        assert_int_equal(keys_from_seed(v.seed, pk, sk), KEYS_OK);
        assert_memory_equal(pk, v.pk, KEYS_PK_BYTES);
        assert_memory_equal(sk, v.seed, KEYS_SEED_BYTES);
        assert_memory_equal(sk + KEYS_SEED_BYTES, v.pk, KEYS_PK_BYTES);
    }
}

/* keys_sign produces exactly the RFC signature (Ed25519 is deterministic). */
static void test_ed25519_rfc8032_sign_matches_signature(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_RFC8032; i++) {
        rfc8032_vec v;
        uint8_t pk[KEYS_PK_BYTES], sk[KEYS_SK_BYTES], sig[KEYS_SIG_BYTES];
        load_vec(i, &v);
        assert_int_equal(keys_from_seed(v.seed, pk, sk), KEYS_OK);
        keys_sign(sk, v.msg, v.msg_len, sig);
        assert_memory_equal(sig, v.sig, KEYS_SIG_BYTES);
    }
}

/* keys_verify accepts the RFC signature under the RFC public key. */
static void test_ed25519_rfc8032_verify_accepts(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_RFC8032; i++) {
        rfc8032_vec v;
        load_vec(i, &v);
        assert_true(keys_verify(v.pk, v.msg, v.msg_len, v.sig));
    }
}

/* Flipping any single bit of the message makes verification fail; for the empty message of
 * TEST 1, appending any byte does. */
static void test_ed25519_flipped_message_bit_rejects(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_RFC8032; i++) {
        rfc8032_vec v;
        load_vec(i, &v);
        for (size_t bit = 0; bit < 8 * v.msg_len; bit++) {
            v.msg[bit / 8] ^= (uint8_t)(1u << (bit % 8));
            assert_false(keys_verify(v.pk, v.msg, v.msg_len, v.sig));
            v.msg[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        }
        if (v.msg_len == 0) {
            uint8_t extra = 0;
            assert_false(keys_verify(v.pk, &extra, 1, v.sig));
        }
        assert_true(keys_verify(v.pk, v.msg, v.msg_len, v.sig)); /* restored copy still good */
    }
}

/* Flipping any single bit of the signature (all 512 positions) makes verification fail. */
static void test_ed25519_flipped_signature_bit_rejects(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_RFC8032; i++) {
        rfc8032_vec v;
        load_vec(i, &v);
        for (size_t bit = 0; bit < 8 * KEYS_SIG_BYTES; bit++) {
            v.sig[bit / 8] ^= (uint8_t)(1u << (bit % 8));
            assert_false(keys_verify(v.pk, v.msg, v.msg_len, v.sig));
            v.sig[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        }
    }
}

/* Flipping any single bit of the public key (all 256 positions) makes verification fail. */
static void test_ed25519_flipped_public_key_bit_rejects(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_RFC8032; i++) {
        rfc8032_vec v;
        load_vec(i, &v);
        for (size_t bit = 0; bit < 8 * KEYS_PK_BYTES; bit++) {
            v.pk[bit / 8] ^= (uint8_t)(1u << (bit % 8));
            assert_false(keys_verify(v.pk, v.msg, v.msg_len, v.sig));
            v.pk[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        }
    }
}

/* A generated key pair signs and verifies, and two generations give different keys. */
static void test_ed25519_generated_keys_sign_verify_and_differ(void **state)
{
    (void)state;
    uint8_t pk1[KEYS_PK_BYTES], sk1[KEYS_SK_BYTES], pk2[KEYS_PK_BYTES], sk2[KEYS_SK_BYTES];
    uint8_t sig[KEYS_SIG_BYTES];
    static const uint8_t msg[] = "pre-prepare v=0 n=1";
    assert_int_equal(keys_generate(pk1, sk1), KEYS_OK);
    assert_int_equal(keys_generate(pk2, sk2), KEYS_OK);
    assert_memory_not_equal(pk1, pk2, KEYS_PK_BYTES);
    keys_sign(sk1, msg, sizeof msg, sig);
    assert_true(keys_verify(pk1, msg, sizeof msg, sig));
    assert_false(keys_verify(pk2, msg, sizeof msg, sig));
}

/* ---- SHA-256: FIPS 180-2 known answers -------------------------------------------------- */

/* SHA-256 of the empty string is e3b0c442...b855. */
static void test_sha256_empty_matches_fips(void **state)
{
    (void)state;
    uint8_t h[KEYS_HASH_BYTES];
    keys_sha256(NULL, 0, h);
    assert_hash_hex(h, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

/* SHA-256("abc") is the FIPS 180-2 one-block example. */
static void test_sha256_abc_matches_fips(void **state)
{
    (void)state;
    uint8_t h[KEYS_HASH_BYTES];
    keys_sha256((const uint8_t *)"abc", 3, h);
    assert_hash_hex(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

/* SHA-256 of the 448-bit message is the FIPS 180-2 two-block example. */
static void test_sha256_448bit_matches_fips(void **state)
{
    (void)state;
    static const char m[] = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    uint8_t h[KEYS_HASH_BYTES];
    assert_int_equal(strlen(m), 56);
    keys_sha256((const uint8_t *)m, strlen(m), h);
    assert_hash_hex(h, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

/* Streaming one million 'a' in uneven chunks gives the FIPS 180-2 long-message digest. */
static void test_sha256_million_a_streaming_matches_fips(void **state)
{
    (void)state;
    uint8_t chunk[997]; /* prime, so chunks straddle 64-byte block boundaries */
    memset(chunk, 'a', sizeof chunk);
    keys_sha256_ctx c;
    keys_sha256_init(&c);
    size_t left = 1000000;
    while (left > 0) {
        size_t n = left < sizeof chunk ? left : sizeof chunk;
        keys_sha256_update(&c, chunk, n);
        left -= n;
    }
    uint8_t h[KEYS_HASH_BYTES];
    keys_sha256_final(&c, h);
    assert_hash_hex(h, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

/* Every split of a message into two streamed parts gives the one-shot digest. */
static void test_sha256_streaming_any_split_matches_one_shot(void **state)
{
    (void)state;
    uint8_t m[200];
    for (size_t i = 0; i < sizeof m; i++) {
        m[i] = (uint8_t)(i * 7 + 3);
    }
    uint8_t want[KEYS_HASH_BYTES], got[KEYS_HASH_BYTES];
    keys_sha256(m, sizeof m, want);
    for (size_t cut = 0; cut <= sizeof m; cut++) {
        keys_sha256_ctx c;
        keys_sha256_init(&c);
        keys_sha256_update(&c, m, cut);
        keys_sha256_update(&c, m + cut, sizeof m - cut);
        keys_sha256_final(&c, got);
        assert_memory_equal(got, want, KEYS_HASH_BYTES);
    }
}

/* ---- Merkle root: RFC 6962 section 2.1 -------------------------------------------------- */

/* ref_mth is the RFC 6962 definition transcribed literally, with explicit prefix buffers. */
static void ref_mth(const uint8_t (*d)[KEYS_HASH_BYTES], size_t n, uint8_t out[KEYS_HASH_BYTES])
{
    if (n == 0) {
        keys_sha256(NULL, 0, out);
        return;
    }
    if (n == 1) {
        uint8_t buf[1 + KEYS_HASH_BYTES];
        buf[0] = 0x00;
        memcpy(buf + 1, d[0], KEYS_HASH_BYTES);
        keys_sha256(buf, sizeof buf, out);
        return;
    }
    size_t k = 1;
    while (2 * k < n) {
        k *= 2;
    }
    uint8_t buf[1 + 2 * KEYS_HASH_BYTES];
    buf[0] = 0x01;
    ref_mth(d, k, buf + 1);
    ref_mth(d + k, n - k, buf + 1 + KEYS_HASH_BYTES);
    keys_sha256(buf, sizeof buf, out);
}

/* make_byte_leaves fills leaf i with SHA-256 of the single byte i (n <= 256). */
static void make_byte_leaves(uint8_t (*leaves)[KEYS_HASH_BYTES], size_t n)
{
    assert_true(n <= 256);
    for (size_t i = 0; i < n; i++) {
        uint8_t b = (uint8_t)i;
        keys_sha256(&b, 1, leaves[i]);
    }
}

/* make_wide_leaves fills leaf i with SHA-256 of i as two big-endian bytes (n <= 65536), so
 * large trees have distinct leaves. */
static void make_wide_leaves(uint8_t (*leaves)[KEYS_HASH_BYTES], size_t n)
{
    assert_true(n <= 65536);
    for (size_t i = 0; i < n; i++) {
        uint8_t b[2] = {(uint8_t)(i >> 8), (uint8_t)i};
        keys_sha256(b, 2, leaves[i]);
    }
}

/* check_root asserts keys_merkle_root equals the reference and, if given, the hashlib hex. */
static void check_root(const uint8_t (*leaves)[KEYS_HASH_BYTES], size_t n, const char *want_hex)
{
    uint8_t got[KEYS_HASH_BYTES], ref[KEYS_HASH_BYTES];
    keys_merkle_root(leaves, n, got);
    ref_mth(leaves, n, ref);
    assert_memory_equal(got, ref, KEYS_HASH_BYTES);
    if (want_hex != NULL) {
        assert_hash_hex(got, want_hex);
    }
}

/* The root of no leaves is SHA-256 of the empty string. */
static void test_merkle_root_zero_leaves_is_empty_hash(void **state)
{
    (void)state;
    check_root(NULL, 0, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

/* The root of one leaf is SHA-256(0x00 || leaf). */
static void test_merkle_root_one_leaf_matches_reference(void **state)
{
    (void)state;
    uint8_t leaves[1][KEYS_HASH_BYTES];
    make_byte_leaves(leaves, 1);
    check_root((const uint8_t(*)[KEYS_HASH_BYTES])leaves, 1,
               "d9de27625445003d8a9739a851e3ff8d41c0683630b4d63a88327a6aaa37c409");
}

/* The root of two leaves is SHA-256(0x01 || leaf(a) || leaf(b)). */
static void test_merkle_root_two_leaves_matches_reference(void **state)
{
    (void)state;
    uint8_t leaves[2][KEYS_HASH_BYTES];
    make_byte_leaves(leaves, 2);
    check_root((const uint8_t(*)[KEYS_HASH_BYTES])leaves, 2,
               "604d540f09268b91672ab011394d5266ccd7d4484d0d109411a55848126a1b2c");
}

/* The root of three leaves splits at k = 2, promoting the third leaf without duplication. */
static void test_merkle_root_three_leaves_matches_reference(void **state)
{
    (void)state;
    uint8_t leaves[3][KEYS_HASH_BYTES];
    make_byte_leaves(leaves, 3);
    check_root((const uint8_t(*)[KEYS_HASH_BYTES])leaves, 3,
               "d1f13800048f5909d4043fc0c152f6643280cba608b672715e56ce159a20629f");
}

/* The root of 1000 distinct leaves matches the reference and the hashlib value. */
static void test_merkle_root_1000_leaves_matches_reference(void **state)
{
    (void)state;
    static uint8_t leaves[1000][KEYS_HASH_BYTES];
    make_wide_leaves(leaves, 1000);
    check_root((const uint8_t(*)[KEYS_HASH_BYTES])leaves, 1000,
               "52d97367ee9b34bad77bef83c2d13d976f3302bfd6f1db62fe31e8d3552e75ae");
}

/* Every count from 0 to 300 (crossing several powers of two) matches the reference. */
static void test_merkle_root_every_count_to_300_matches_reference(void **state)
{
    (void)state;
    static uint8_t leaves[300][KEYS_HASH_BYTES];
    make_wide_leaves(leaves, 300);
    for (size_t n = 0; n <= 300; n++) {
        check_root((const uint8_t(*)[KEYS_HASH_BYTES])leaves, n, NULL);
    }
}

/* [a,b,c] and [a,b,c,c] have different roots (no CVE-2012-2459 duplication ambiguity). */
static void test_merkle_root_odd_count_differs_from_duplicated_last(void **state)
{
    (void)state;
    uint8_t leaves[4][KEYS_HASH_BYTES];
    uint8_t r3[KEYS_HASH_BYTES], r4[KEYS_HASH_BYTES];
    make_byte_leaves(leaves, 3);
    memcpy(leaves[3], leaves[2], KEYS_HASH_BYTES);
    keys_merkle_root((const uint8_t(*)[KEYS_HASH_BYTES])leaves, 3, r3);
    keys_merkle_root((const uint8_t(*)[KEYS_HASH_BYTES])leaves, 4, r4);
    assert_memory_not_equal(r3, r4, KEYS_HASH_BYTES);
    assert_hash_hex(r4, "bd1176fdb3a24eed1bfd6a843e3607292fd2cc7407416428e0e46b0d5c721798");
}

/* ---- hex -------------------------------------------------------------------------------- */

/* Encoding all 256 byte values gives lower-case hex that decodes back to the same bytes. */
static void test_hex_all_bytes_roundtrip_matches(void **state)
{
    (void)state;
    uint8_t in[256], back[256];
    char hex[2 * sizeof in + 1];
    for (size_t i = 0; i < sizeof in; i++) {
        in[i] = (uint8_t)i;
    }
    keys_hex_encode(in, sizeof in, hex);
    assert_int_equal(strlen(hex), 2 * sizeof in);
    assert_memory_equal(hex, "000102", 6);
    assert_string_equal(hex + 2 * 250, "fafbfcfdfeff");
    assert_int_equal(keys_hex_decode(hex, back, sizeof back), KEYS_OK);
    assert_memory_equal(back, in, sizeof in);
}

/* Upper-case and mixed-case hex decode like lower case. */
static void test_hex_decode_upper_case_accepts(void **state)
{
    (void)state;
    uint8_t out[4];
    assert_int_equal(keys_hex_decode("DEADbeef", out, sizeof out), KEYS_OK);
    assert_memory_equal(out, "\xde\xad\xbe\xef", 4);
}

/* An odd number of hex characters is rejected with KEYS_E_FORMAT. */
static void test_hex_decode_odd_length_rejects(void **state)
{
    (void)state;
    uint8_t out[2];
    assert_int_equal(keys_hex_decode("abc", out, 2), KEYS_E_FORMAT);
    assert_int_equal(keys_hex_decode("abc", out, 1), KEYS_E_FORMAT);
    assert_int_equal(keys_hex_decode("a", out, 1), KEYS_E_FORMAT);
}

/* A string shorter or longer than 2*outlen is rejected with KEYS_E_FORMAT. */
static void test_hex_decode_wrong_length_rejects(void **state)
{
    (void)state;
    uint8_t out[2];
    assert_int_equal(keys_hex_decode("ab", out, 2), KEYS_E_FORMAT);
    assert_int_equal(keys_hex_decode("abcdef", out, 2), KEYS_E_FORMAT);
    assert_int_equal(keys_hex_decode("", out, 2), KEYS_E_FORMAT);
    assert_int_equal(keys_hex_decode("", out, 0), KEYS_OK);
}

/* Any non-hex character, in any position, is rejected with KEYS_E_FORMAT. */
static void test_hex_decode_non_hex_rejects(void **state)
{
    (void)state;
    static const char *const bad[] = {"0g", "g0", "0x", " 0", "0 ", "+1", "-1", "zz", "0:", "@A"};
    uint8_t out[1];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(keys_hex_decode(bad[i], out, 1), KEYS_E_FORMAT);
    }
    uint8_t out4[4];
    assert_int_equal(keys_hex_decode("00112g33", out4, 4), KEYS_E_FORMAT);
}

/* ---- key files -------------------------------------------------------------------------- */

static char tmpdir[PATH_MAX];

/* Group setup: a fresh directory under $PBFT_TEST_TMPDIR (or /tmp) for the key file tests. */
static int keyfile_setup(void **state)
{
    (void)state;
    const char *base = getenv("PBFT_TEST_TMPDIR");
    if (base == NULL || base[0] == '\0') {
        base = "/tmp";
    }
    int n = snprintf(tmpdir, sizeof tmpdir, "%s/test_crypto.XXXXXX", base);
    if (n < 0 || (size_t)n >= sizeof tmpdir || mkdtemp(tmpdir) == NULL) {
        perror("test_crypto: mkdtemp");
        return -1;
    }
    return 0;
}

/* Group teardown: remove every file the tests left, then the directory itself. */
static int keyfile_teardown(void **state)
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

/* write_raw creates (or truncates) path with exactly content and then sets mode, so the
 * result does not depend on the umask. */
static void write_raw(const char *path, const char *content, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    size_t len = strlen(content);
    assert_int_equal(write(fd, content, len), (ssize_t)len);
    assert_int_equal(fchmod(fd, mode), 0);
    assert_int_equal(close(fd), 0);
}

/* rfc_keys derives the RFC 8032 TEST 1 key pair, a fixed and well-known identity. */
static void rfc_keys(uint8_t pk[KEYS_PK_BYTES], uint8_t sk[KEYS_SK_BYTES])
{
    rfc8032_vec v;
    load_vec(0, &v);
    assert_int_equal(keys_from_seed(v.seed, pk, sk), KEYS_OK);
}

/* A key file made from the RFC 8032 TEST 1 hex, with one field value optionally replaced. */
static void write_key_json(const char *path, const char *type, const char *pk_hex,
                           const char *seed_hex)
{
    char doc[512];
    int n = snprintf(doc, sizeof doc,
                     "{\"type\": \"%s\", \"public_key\": \"%s\", \"private_key\": \"%s\"}",
                     type != NULL ? type : "ed25519", pk_hex != NULL ? pk_hex : RFC8032[0].pk,
                     seed_hex != NULL ? seed_hex : RFC8032[0].seed);
    assert_true(n > 0 && (size_t)n < sizeof doc);
    write_raw(path, doc, 0600);
}

/* expect_read_error asserts keys_file_read fails with rc and a message naming path and
 * (if not NULL) the given field in quotes. */
static void expect_read_error(const char *path, int rc, const char *field)
{
    uint8_t pk[KEYS_PK_BYTES], sk[KEYS_SK_BYTES];
    char err[512] = "";
    assert_int_equal(keys_file_read(path, pk, sk, err, sizeof err), rc);
    assert_non_null(strstr(err, path));
    if (field != NULL) {
        char quoted[64];
        (void)snprintf(quoted, sizeof quoted, "\"%s\"", field);
        if (strstr(err, quoted) == NULL) {
            fail_msg("error \"%s\" does not name field %s", err, quoted);
        }
    }
}

/* A written key file reads back as the same key pair. */
static void test_key_file_write_then_read_roundtrips(void **state)
{
    (void)state;
    char path[PATH_MAX];
    uint8_t pk[KEYS_PK_BYTES], sk[KEYS_SK_BYTES], pk2[KEYS_PK_BYTES], sk2[KEYS_SK_BYTES];
    char err[256] = "";
    tmp_path(path, sizeof path, "roundtrip.json");
    assert_int_equal(keys_generate(pk, sk), KEYS_OK);
    assert_int_equal(keys_file_write(path, pk, sk, err, sizeof err), KEYS_OK);
    assert_int_equal(keys_file_read(path, pk2, sk2, err, sizeof err), KEYS_OK);
    assert_memory_equal(pk2, pk, KEYS_PK_BYTES);
    assert_memory_equal(sk2, sk, KEYS_SK_BYTES);
}

/* The written file holds the documented JSON with the RFC hex, so other tools can read it. */
static void test_key_file_write_rfc_key_contains_documented_fields(void **state)
{
    (void)state;
    char path[PATH_MAX];
    uint8_t pk[KEYS_PK_BYTES], sk[KEYS_SK_BYTES];
    char buf[1024];
    tmp_path(path, sizeof path, "documented.json");
    rfc_keys(pk, sk);
    assert_int_equal(keys_file_write(path, pk, sk, NULL, 0), KEYS_OK);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    assert_int_equal(fclose(f), 0);
    assert_non_null(strstr(buf, "\"type\": \"ed25519\""));
    char want[128];
    (void)snprintf(want, sizeof want, "\"public_key\": \"%s\"", RFC8032[0].pk);
    assert_non_null(strstr(buf, want));
    (void)snprintf(want, sizeof want, "\"private_key\": \"%s\"", RFC8032[0].seed);
    assert_non_null(strstr(buf, want));
}

/* A written key file has mode 0600. */
static void test_key_file_write_creates_mode_0600(void **state)
{
    (void)state;
    char path[PATH_MAX];
    uint8_t pk[KEYS_PK_BYTES], sk[KEYS_SK_BYTES];
    struct stat st;
    tmp_path(path, sizeof path, "mode.json");
    rfc_keys(pk, sk);
    assert_int_equal(keys_file_write(path, pk, sk, NULL, 0), KEYS_OK);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);
}

/* Writing to an existing path returns KEYS_E_EXISTS and leaves the old key intact. */
static void test_key_file_write_existing_path_returns_exists(void **state)
{
    (void)state;
    char path[PATH_MAX];
    uint8_t pk[KEYS_PK_BYTES], sk[KEYS_SK_BYTES], pk2[KEYS_PK_BYTES], sk2[KEYS_SK_BYTES];
    char err[256] = "";
    tmp_path(path, sizeof path, "exists.json");
    rfc_keys(pk, sk);
    assert_int_equal(keys_file_write(path, pk, sk, err, sizeof err), KEYS_OK);
    assert_int_equal(keys_generate(pk2, sk2), KEYS_OK);
    assert_int_equal(keys_file_write(path, pk2, sk2, err, sizeof err), KEYS_E_EXISTS);
    assert_non_null(strstr(err, path));
    assert_int_equal(keys_file_read(path, pk2, sk2, err, sizeof err), KEYS_OK);
    assert_memory_equal(pk2, pk, KEYS_PK_BYTES);
}

/* Writing a pk that does not belong to sk returns KEYS_E_MISMATCH and creates no file. */
static void test_key_file_write_mismatched_pair_returns_mismatch(void **state)
{
    (void)state;
    char path[PATH_MAX];
    uint8_t pk[KEYS_PK_BYTES], sk[KEYS_SK_BYTES];
    struct stat st;
    tmp_path(path, sizeof path, "write_mismatch.json");
    rfc_keys(pk, sk);
    pk[0] ^= 1;
    assert_int_equal(keys_file_write(path, pk, sk, NULL, 0), KEYS_E_MISMATCH);
    assert_int_equal(stat(path, &st), -1);
}

/* A file whose mode grants group or other any access is refused with KEYS_E_PERM. */
static void test_key_file_read_group_readable_returns_perm(void **state)
{
    (void)state;
    static const mode_t modes[] = {0644, 0640, 0604, 0620, 0601};
    char path[PATH_MAX];
    uint8_t pk[KEYS_PK_BYTES], sk[KEYS_SK_BYTES];
    tmp_path(path, sizeof path, "perm.json");
    rfc_keys(pk, sk);
    assert_int_equal(keys_file_write(path, pk, sk, NULL, 0), KEYS_OK);
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
        assert_int_equal(chmod(path, modes[i]), 0);
        expect_read_error(path, KEYS_E_PERM, NULL);
    }
    assert_int_equal(chmod(path, 0400), 0); /* owner-only read-only is fine */
    assert_int_equal(keys_file_read(path, pk, sk, NULL, 0), KEYS_OK);
}

/* A public key that does not belong to the seed gives KEYS_E_MISMATCH naming public_key. */
static void test_key_file_read_mismatched_public_key_returns_mismatch(void **state)
{
    (void)state;
    char path[PATH_MAX];
    tmp_path(path, sizeof path, "mismatch.json");
    write_key_json(path, NULL, RFC8032[1].pk, NULL); /* TEST 2's pk with TEST 1's seed */
    expect_read_error(path, KEYS_E_MISMATCH, "public_key");
}

/* A hand-written file with the RFC 8032 TEST 1 hex reads as keys_from_seed of that seed. */
static void test_key_file_read_rfc_hex_matches_from_seed(void **state)
{
    (void)state;
    char path[PATH_MAX];
    uint8_t pk[KEYS_PK_BYTES], sk[KEYS_SK_BYTES], want_pk[KEYS_PK_BYTES], want_sk[KEYS_SK_BYTES];
    char err[256] = "";
    tmp_path(path, sizeof path, "rfc.json");
    write_key_json(path, NULL, NULL, NULL);
    rfc_keys(want_pk, want_sk);
    assert_int_equal(keys_file_read(path, pk, sk, err, sizeof err), KEYS_OK);
    assert_memory_equal(pk, want_pk, KEYS_PK_BYTES);
    assert_memory_equal(sk, want_sk, KEYS_SK_BYTES);
}

/* Upper-case hex in a key file is accepted, as keys_hex_decode documents. */
static void test_key_file_read_upper_case_hex_accepts(void **state)
{
    (void)state;
    char path[PATH_MAX];
    char pk_hex[65], seed_hex[65];
    uint8_t pk[KEYS_PK_BYTES], sk[KEYS_SK_BYTES];
    for (size_t i = 0; i < 65; i++) {
        pk_hex[i] = (char)toupper((unsigned char)RFC8032[0].pk[i]);
        seed_hex[i] = (char)toupper((unsigned char)RFC8032[0].seed[i]);
    }
    tmp_path(path, sizeof path, "upper.json");
    write_key_json(path, NULL, pk_hex, seed_hex);
    assert_int_equal(keys_file_read(path, pk, sk, NULL, 0), KEYS_OK);
}

/* Text that is not JSON, or JSON that is not an object, gives KEYS_E_FORMAT naming the path. */
static void test_key_file_read_malformed_json_returns_format(void **state)
{
    (void)state;
    static const char *const docs[] = {
        "", "{", "{\"type\": \"ed25519\",}", "not json", "[]", "\"ed25519\"", "{} {}"};
    char path[PATH_MAX];
    tmp_path(path, sizeof path, "malformed.json");
    for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++) {
        write_raw(path, docs[i], 0600);
        expect_read_error(path, KEYS_E_FORMAT, NULL);
    }
}

/* Each missing field gives KEYS_E_FORMAT with a message naming that field. */
static void test_key_file_read_missing_field_returns_format_naming_field(void **state)
{
    (void)state;
    char path[PATH_MAX];
    char doc[512];
    tmp_path(path, sizeof path, "missing.json");

    (void)snprintf(doc, sizeof doc, "{\"public_key\": \"%s\", \"private_key\": \"%s\"}",
                   RFC8032[0].pk, RFC8032[0].seed);
    write_raw(path, doc, 0600);
    expect_read_error(path, KEYS_E_FORMAT, "type");

    (void)snprintf(doc, sizeof doc, "{\"type\": \"ed25519\", \"private_key\": \"%s\"}",
                   RFC8032[0].seed);
    write_raw(path, doc, 0600);
    expect_read_error(path, KEYS_E_FORMAT, "public_key");

    (void)snprintf(doc, sizeof doc, "{\"type\": \"ed25519\", \"public_key\": \"%s\"}",
                   RFC8032[0].pk);
    write_raw(path, doc, 0600);
    expect_read_error(path, KEYS_E_FORMAT, "private_key");
}

/* Hex that is short, long or has a non-hex character gives KEYS_E_FORMAT naming the field. */
static void test_key_file_read_bad_hex_returns_format_naming_field(void **state)
{
    (void)state;
    char path[PATH_MAX];
    char bad[70];
    tmp_path(path, sizeof path, "badhex.json");

    (void)snprintf(bad, sizeof bad, "%.62s", RFC8032[0].pk); /* 62 characters */
    write_key_json(path, NULL, bad, NULL);
    expect_read_error(path, KEYS_E_FORMAT, "public_key");

    (void)snprintf(bad, sizeof bad, "%s00", RFC8032[0].seed); /* 66 characters */
    write_key_json(path, NULL, NULL, bad);
    expect_read_error(path, KEYS_E_FORMAT, "private_key");

    (void)snprintf(bad, sizeof bad, "%s", RFC8032[0].seed);
    bad[17] = 'x';
    write_key_json(path, NULL, NULL, bad);
    expect_read_error(path, KEYS_E_FORMAT, "private_key");

    (void)snprintf(bad, sizeof bad, "%s", RFC8032[0].pk);
    bad[63] = 'G';
    write_key_json(path, NULL, bad, NULL);
    expect_read_error(path, KEYS_E_FORMAT, "public_key");

    /* An escaped NUL must not let 63 hex characters pass as 64 (jansson rejects it first). */
    (void)snprintf(bad, sizeof bad, "%.63s\\u0000", RFC8032[0].seed);
    write_key_json(path, NULL, NULL, bad);
    expect_read_error(path, KEYS_E_FORMAT, NULL);
}

/* A type other than "ed25519" gives KEYS_E_FORMAT naming the type field. */
static void test_key_file_read_wrong_type_returns_format_naming_field(void **state)
{
    (void)state;
    char path[PATH_MAX];
    tmp_path(path, sizeof path, "type.json");
    write_key_json(path, "ed448", NULL, NULL);
    expect_read_error(path, KEYS_E_FORMAT, "type");
    write_key_json(path, "ED25519", NULL, NULL);
    expect_read_error(path, KEYS_E_FORMAT, "type");
    write_key_json(path, "ed25519\\u0000x", NULL, NULL); /* a NUL must not truncate it */
    expect_read_error(path, KEYS_E_FORMAT, NULL);
}

/* A field that is not a string gives KEYS_E_FORMAT naming that field. */
static void test_key_file_read_non_string_field_returns_format_naming_field(void **state)
{
    (void)state;
    char path[PATH_MAX];
    char doc[512];
    tmp_path(path, sizeof path, "nonstring.json");
    (void)snprintf(doc, sizeof doc,
                   "{\"type\": \"ed25519\", \"public_key\": 42, \"private_key\": \"%s\"}",
                   RFC8032[0].seed);
    write_raw(path, doc, 0600);
    expect_read_error(path, KEYS_E_FORMAT, "public_key");
}

/* An unexpected extra field gives KEYS_E_FORMAT naming it. */
static void test_key_file_read_unknown_field_returns_format_naming_field(void **state)
{
    (void)state;
    char path[PATH_MAX];
    char doc[512];
    tmp_path(path, sizeof path, "unknown.json");
    (void)snprintf(doc, sizeof doc,
                   "{\"type\": \"ed25519\", \"public_key\": \"%s\", \"private_key\": \"%s\", "
                   "\"comment\": \"x\"}",
                   RFC8032[0].pk, RFC8032[0].seed);
    write_raw(path, doc, 0600);
    expect_read_error(path, KEYS_E_FORMAT, "comment");
}

/* A duplicated field is ambiguous and gives KEYS_E_FORMAT. */
static void test_key_file_read_duplicate_field_returns_format(void **state)
{
    (void)state;
    char path[PATH_MAX];
    char doc[512];
    tmp_path(path, sizeof path, "duplicate.json");
    (void)snprintf(doc, sizeof doc,
                   "{\"type\": \"ed25519\", \"public_key\": \"%s\", \"private_key\": \"%s\", "
                   "\"private_key\": \"%s\"}",
                   RFC8032[0].pk, RFC8032[0].seed, RFC8032[1].seed);
    write_raw(path, doc, 0600);
    expect_read_error(path, KEYS_E_FORMAT, NULL);
}

/* A file over 64 KiB is refused with KEYS_E_FORMAT even if its JSON is valid. */
static void test_key_file_read_oversize_returns_format(void **state)
{
    (void)state;
    char path[PATH_MAX];
    size_t pad = 64 * 1024;
    char *doc = malloc(pad + 512);
    assert_non_null(doc);
    memset(doc, ' ', pad);
    (void)snprintf(doc + pad, 512,
                   "{\"type\": \"ed25519\", \"public_key\": \"%s\", \"private_key\": \"%s\"}",
                   RFC8032[0].pk, RFC8032[0].seed);
    tmp_path(path, sizeof path, "oversize.json");
    write_raw(path, doc, 0600);
    free(doc);
    expect_read_error(path, KEYS_E_FORMAT, NULL);
}

/* A path that does not exist gives KEYS_E_IO naming the path. */
static void test_key_file_read_missing_file_returns_io(void **state)
{
    (void)state;
    char path[PATH_MAX];
    tmp_path(path, sizeof path, "does-not-exist.json");
    expect_read_error(path, KEYS_E_IO, NULL);
}

/* Every error code has its own description, and unknown codes still get a string. */
static void test_keys_strerror_all_codes_distinct(void **state)
{
    (void)state;
    for (int a = KEYS_OK; a <= KEYS_E_PERM; a++) {
        assert_non_null(keys_strerror(a));
        for (int b = a + 1; b <= KEYS_E_PERM; b++) {
            assert_string_not_equal(keys_strerror(a), keys_strerror(b));
        }
    }
    assert_non_null(keys_strerror(-1));
    assert_non_null(keys_strerror(1000));
}

int main(void)
{
    const struct CMUnitTest pure[] = {
        cmocka_unit_test(test_keys_init_repeated_succeeds),
        cmocka_unit_test(test_keys_strerror_all_codes_distinct),
        cmocka_unit_test(test_ed25519_rfc8032_seed_derives_public_key),
        cmocka_unit_test(test_ed25519_rfc8032_sign_matches_signature),
        cmocka_unit_test(test_ed25519_rfc8032_verify_accepts),
        cmocka_unit_test(test_ed25519_flipped_message_bit_rejects),
        cmocka_unit_test(test_ed25519_flipped_signature_bit_rejects),
        cmocka_unit_test(test_ed25519_flipped_public_key_bit_rejects),
        cmocka_unit_test(test_ed25519_generated_keys_sign_verify_and_differ),
        cmocka_unit_test(test_sha256_empty_matches_fips),
        cmocka_unit_test(test_sha256_abc_matches_fips),
        cmocka_unit_test(test_sha256_448bit_matches_fips),
        cmocka_unit_test(test_sha256_million_a_streaming_matches_fips),
        cmocka_unit_test(test_sha256_streaming_any_split_matches_one_shot),
        cmocka_unit_test(test_merkle_root_zero_leaves_is_empty_hash),
        cmocka_unit_test(test_merkle_root_one_leaf_matches_reference),
        cmocka_unit_test(test_merkle_root_two_leaves_matches_reference),
        cmocka_unit_test(test_merkle_root_three_leaves_matches_reference),
        cmocka_unit_test(test_merkle_root_1000_leaves_matches_reference),
        cmocka_unit_test(test_merkle_root_every_count_to_300_matches_reference),
        cmocka_unit_test(test_merkle_root_odd_count_differs_from_duplicated_last),
        cmocka_unit_test(test_hex_all_bytes_roundtrip_matches),
        cmocka_unit_test(test_hex_decode_upper_case_accepts),
        cmocka_unit_test(test_hex_decode_odd_length_rejects),
        cmocka_unit_test(test_hex_decode_wrong_length_rejects),
        cmocka_unit_test(test_hex_decode_non_hex_rejects),
    };
    const struct CMUnitTest files[] = {
        cmocka_unit_test(test_key_file_write_then_read_roundtrips),
        cmocka_unit_test(test_key_file_write_rfc_key_contains_documented_fields),
        cmocka_unit_test(test_key_file_write_creates_mode_0600),
        cmocka_unit_test(test_key_file_write_existing_path_returns_exists),
        cmocka_unit_test(test_key_file_write_mismatched_pair_returns_mismatch),
        cmocka_unit_test(test_key_file_read_group_readable_returns_perm),
        cmocka_unit_test(test_key_file_read_mismatched_public_key_returns_mismatch),
        cmocka_unit_test(test_key_file_read_rfc_hex_matches_from_seed),
        cmocka_unit_test(test_key_file_read_upper_case_hex_accepts),
        cmocka_unit_test(test_key_file_read_malformed_json_returns_format),
        cmocka_unit_test(test_key_file_read_missing_field_returns_format_naming_field),
        cmocka_unit_test(test_key_file_read_bad_hex_returns_format_naming_field),
        cmocka_unit_test(test_key_file_read_wrong_type_returns_format_naming_field),
        cmocka_unit_test(test_key_file_read_non_string_field_returns_format_naming_field),
        cmocka_unit_test(test_key_file_read_unknown_field_returns_format_naming_field),
        cmocka_unit_test(test_key_file_read_duplicate_field_returns_format),
        cmocka_unit_test(test_key_file_read_oversize_returns_format),
        cmocka_unit_test(test_key_file_read_missing_file_returns_io),
    };
    int failed = cmocka_run_group_tests_name("crypto", pure, NULL, NULL);
    failed += cmocka_run_group_tests_name("key files", files, keyfile_setup, keyfile_teardown);
    return failed;
}
