/*
 * keys.c - Ed25519, SHA-256, the RFC 6962 Merkle root and key files, over libsodium and jansson.
 *
 * See keys.h for the contract. Secret material (seeds, secret keys, their hex) is wiped with
 * sodium_memzero from every buffer this file owns before the buffer goes out of scope.
 */
#include "crypto/keys.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <sodium.h>

/* The header cannot include sodium.h (callers should not depend on it), so it reserves opaque
 * storage instead; these checks make the cast in ctx_state() sound on every build. */
_Static_assert(sizeof(crypto_hash_sha256_state) <= sizeof(((keys_sha256_ctx *)0)->opaque),
               "keys_sha256_ctx.opaque is too small for crypto_hash_sha256_state");
_Static_assert(_Alignof(crypto_hash_sha256_state) <= _Alignof(keys_sha256_ctx),
               "keys_sha256_ctx is not aligned enough for crypto_hash_sha256_state");

/* A key file is three short fields; anything this large is not one, and the cap bounds the
 * memory an attacker-supplied path can make us allocate. */
#define KEY_FILE_MAX (64 * 1024)

/* Hex lengths of the two keys as they appear in a key file. */
#define PK_HEX_LEN (2 * KEYS_PK_BYTES)
#define SEED_HEX_LEN (2 * KEYS_SEED_BYTES)

#if defined(__GNUC__)
#define KEYS_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define KEYS_PRINTF(f, a)
#endif

/* set_err formats a message into err when the caller asked for one; always truncates safely. */
static void set_err(char *err, size_t errlen, const char *fmt, ...) KEYS_PRINTF(3, 4);

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (err == NULL || errlen == 0) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

const char *keys_strerror(int rc)
{
    switch (rc) {
    case KEYS_OK:
        return "success";
    case KEYS_E_INIT:
        return "libsodium failed to initialise";
    case KEYS_E_IO:
        return "key file could not be opened, read or written";
    case KEYS_E_FORMAT:
        return "key file or hex string is malformed";
    case KEYS_E_MISMATCH:
        return "public key does not belong to the private key";
    case KEYS_E_EXISTS:
        return "key file already exists";
    case KEYS_E_PERM:
        return "key file is accessible by group or others";
    default:
        return "unknown keys error";
    }
}

int keys_init(void)
{
    /* sodium_init returns 1 when already initialised, which is not an error for us. */
    return sodium_init() < 0 ? KEYS_E_INIT : KEYS_OK;
}

int keys_generate(uint8_t pk[KEYS_PK_BYTES], uint8_t sk[KEYS_SK_BYTES])
{
    /* randombytes needs libsodium initialised; doing it here means no caller can forget. */
    int rc = keys_init();
    if (rc != KEYS_OK) {
        return rc;
    }
    return crypto_sign_keypair(pk, sk) == 0 ? KEYS_OK : KEYS_E_INIT;
}

int keys_random(uint8_t *out, size_t n)
{
    int rc = keys_init(); /* as keys_generate: randombytes needs libsodium initialised */
    if (rc != KEYS_OK)
        return rc;
    randombytes_buf(out, n);
    return KEYS_OK;
}

int keys_from_seed(const uint8_t seed[KEYS_SEED_BYTES], uint8_t pk[KEYS_PK_BYTES],
                   uint8_t sk[KEYS_SK_BYTES])
{
    int rc = keys_init();
    if (rc != KEYS_OK) {
        return rc;
    }
    return crypto_sign_seed_keypair(pk, sk, seed) == 0 ? KEYS_OK : KEYS_E_INIT;
}

void keys_sign(const uint8_t sk[KEYS_SK_BYTES], const uint8_t *msg, size_t len,
               uint8_t sig[KEYS_SIG_BYTES])
{
    /* crypto_sign_detached cannot fail for a well-formed sk; siglen is always 64. */
    (void)crypto_sign_detached(sig, NULL, msg, (unsigned long long)len, sk);
}

bool keys_verify(const uint8_t pk[KEYS_PK_BYTES], const uint8_t *msg, size_t len,
                 const uint8_t sig[KEYS_SIG_BYTES])
{
    return crypto_sign_verify_detached(sig, msg, (unsigned long long)len, pk) == 0;
}

void keys_sha256(const uint8_t *p, size_t n, uint8_t out[KEYS_HASH_BYTES])
{
    (void)crypto_hash_sha256(out, p, (unsigned long long)n);
}

/* ctx_state views the opaque storage as libsodium's state (size and alignment asserted above).
 * The state is only ever touched through libsodium, so no other type accesses it. */
static crypto_hash_sha256_state *ctx_state(keys_sha256_ctx *c)
{
    return (crypto_hash_sha256_state *)(void *)c->opaque;
}

void keys_sha256_init(keys_sha256_ctx *c)
{
    (void)crypto_hash_sha256_init(ctx_state(c));
}

void keys_sha256_update(keys_sha256_ctx *c, const uint8_t *p, size_t n)
{
    (void)crypto_hash_sha256_update(ctx_state(c), p, (unsigned long long)n);
}

void keys_sha256_final(keys_sha256_ctx *c, uint8_t out[KEYS_HASH_BYTES])
{
    (void)crypto_hash_sha256_final(ctx_state(c), out);
}

/* merkle_leaf computes SHA-256(0x00 || d): the prefix separates leaves from inner nodes. */
static void merkle_leaf(const uint8_t d[KEYS_HASH_BYTES], uint8_t out[KEYS_HASH_BYTES])
{
    static const uint8_t prefix = 0x00;
    crypto_hash_sha256_state st;
    (void)crypto_hash_sha256_init(&st);
    (void)crypto_hash_sha256_update(&st, &prefix, 1);
    (void)crypto_hash_sha256_update(&st, d, KEYS_HASH_BYTES);
    (void)crypto_hash_sha256_final(&st, out);
}

/* merkle_node computes SHA-256(0x01 || l || r). out may alias l or r: both are read first. */
static void merkle_node(const uint8_t l[KEYS_HASH_BYTES], const uint8_t r[KEYS_HASH_BYTES],
                        uint8_t out[KEYS_HASH_BYTES])
{
    static const uint8_t prefix = 0x01;
    crypto_hash_sha256_state st;
    (void)crypto_hash_sha256_init(&st);
    (void)crypto_hash_sha256_update(&st, &prefix, 1);
    (void)crypto_hash_sha256_update(&st, l, KEYS_HASH_BYTES);
    (void)crypto_hash_sha256_update(&st, r, KEYS_HASH_BYTES);
    (void)crypto_hash_sha256_final(&st, out);
}

/*
 * Iterative form of the RFC 6962 recursion. Leaves are folded left to right into a stack of
 * perfect subtrees, like a binary counter: after leaf i (0-based) is pushed, the top two
 * entries are merged once per trailing zero bit of i+1. When all n leaves are in, the stack
 * holds perfect subtrees whose sizes are the set bits of n, largest at the bottom. The RFC's
 * split point k (largest power of two < n) is exactly the bottom subtree when n is not a power
 * of two, and the recursion repeats on the rest, so folding the stack from the top down
 * (right to left) reproduces MTH. When n is a power of two the stack holds one tree, which is
 * the balanced tree the RFC also builds.
 *
 * Stack depth: before merging, the stack holds popcount(i) + 1 <= 64 entries for any i that
 * fits a size_t of at most 64 bits; one spare slot keeps that bound obviously safe.
 */
void keys_merkle_root(const uint8_t (*leaves)[KEYS_HASH_BYTES], size_t n,
                      uint8_t out[KEYS_HASH_BYTES])
{
    _Static_assert(sizeof(size_t) * 8 <= 64, "merkle stack sized for at most 64-bit size_t");
    uint8_t stack[65][KEYS_HASH_BYTES];
    size_t top = 0; /* number of entries on the stack */

    if (n == 0) {
        keys_sha256(NULL, 0, out);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        merkle_leaf(leaves[i], stack[top]);
        top++;
        for (size_t j = i + 1; (j & 1) == 0; j >>= 1) {
            merkle_node(stack[top - 2], stack[top - 1], stack[top - 2]);
            top--;
        }
    }
    while (top > 1) {
        merkle_node(stack[top - 2], stack[top - 1], stack[top - 2]);
        top--;
    }
    memcpy(out, stack[0], KEYS_HASH_BYTES);
}

void keys_hex_encode(const uint8_t *p, size_t n, char *out)
{
    /* sodium_bin2hex is constant-time, which matters when p is a seed. It aborts if 2n+1
     * overflows, which is a caller bug that must not pass silently. */
    (void)sodium_bin2hex(out, 2 * n + 1, p, n);
}

int keys_hex_decode(const char *s, uint8_t *out, size_t outlen)
{
    if (s == NULL || outlen > (SIZE_MAX - 1) / 2) { /* 2*outlen + 1 must not overflow */
        return KEYS_E_FORMAT;
    }
    /* Bounded scan: s need not be terminated beyond one character past the expected length. */
    size_t want = 2 * outlen;
    if (strnlen(s, want + 1) != want) {
        return KEYS_E_FORMAT;
    }
    size_t got = 0;
    /* With hex_end == NULL, sodium_hex2bin fails unless every character was hex. It is
     * constant-time in the hex content, which matters when s holds a seed. */
    if (sodium_hex2bin(out, outlen, s, want, NULL, &got, NULL) != 0 || got != outlen) {
        sodium_memzero(out, outlen); /* do not leave half a secret behind */
        return KEYS_E_FORMAT;
    }
    return KEYS_OK;
}

/* write_all writes n bytes, retrying short writes and EINTR. Returns 0 or -1 with errno set. */
static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -1;
        }
        p += w;
        n -= (size_t)w; /* 0 <= w <= n */
    }
    return 0;
}

int keys_file_write(const char *path, const uint8_t pk[KEYS_PK_BYTES],
                    const uint8_t sk[KEYS_SK_BYTES], char *err, size_t errlen)
{
    /* Refuse to write a file that keys_file_read would reject: pk must belong to sk's seed. */
    uint8_t derived_pk[KEYS_PK_BYTES];
    uint8_t derived_sk[KEYS_SK_BYTES];
    int rc = keys_from_seed(sk, derived_pk, derived_sk); /* sk begins with the seed */
    sodium_memzero(derived_sk, sizeof derived_sk);
    if (rc != KEYS_OK) {
        set_err(err, errlen, "%s: %s", path, keys_strerror(rc));
        return rc;
    }
    if (memcmp(derived_pk, pk, KEYS_PK_BYTES) != 0) {
        set_err(err, errlen, "%s: public key does not belong to the private key", path);
        return KEYS_E_MISMATCH;
    }

    char pk_hex[PK_HEX_LEN + 1];
    char seed_hex[SEED_HEX_LEN + 1];
    /* Written by hand rather than with json_dumps so the seed's hex never reaches a heap
     * buffer we cannot wipe. Hex needs no JSON escaping. */
    char doc[256];

    keys_hex_encode(pk, KEYS_PK_BYTES, pk_hex);
    keys_hex_encode(sk, KEYS_SEED_BYTES, seed_hex); /* libsodium sk = seed || pk */
    int len = snprintf(doc, sizeof doc,
                       "{\n  \"type\": \"ed25519\",\n  \"public_key\": \"%s\",\n"
                       "  \"private_key\": \"%s\"\n}\n",
                       pk_hex, seed_hex);
    sodium_memzero(seed_hex, sizeof seed_hex);
    if (len < 0 || (size_t)len >= sizeof doc) {
        /* Cannot happen with fixed-length hex; checked so a future edit fails loudly. */
        sodium_memzero(doc, sizeof doc);
        set_err(err, errlen, "%s: internal error formatting key file", path);
        return KEYS_E_FORMAT;
    }

    /* O_EXCL: an existing key is an identity; never replace it. 0600: only the owner reads. */
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        int e = errno;
        sodium_memzero(doc, sizeof doc);
        if (e == EEXIST) {
            set_err(err, errlen, "%s: already exists; refusing to overwrite a key file", path);
            return KEYS_E_EXISTS;
        }
        set_err(err, errlen, "%s: cannot create: %s", path, strerror(e));
        return KEYS_E_IO;
    }

    const char *what = NULL;
    if (write_all(fd, doc, (size_t)len) != 0) {
        what = "write";
    } else if (fsync(fd) != 0) {
        what = "fsync";
    }
    int e = errno;
    sodium_memzero(doc, sizeof doc);
    if (close(fd) != 0 && what == NULL) {
        what = "close";
        e = errno;
    }
    if (what != NULL) {
        /* We created the file, so removing the partial one is safe and lets a retry succeed. */
        (void)unlink(path);
        set_err(err, errlen, "%s: %s failed: %s", path, what, strerror(e));
        return KEYS_E_IO;
    }
    return KEYS_OK;
}

/* read_capped reads the whole of fd into a fresh heap buffer, refusing more than KEY_FILE_MAX
 * bytes. Returns KEYS_OK with *buf and *len set (caller wipes and frees), or an error code. */
static int read_capped(int fd, const char *path, char **buf, size_t *len, char *err, size_t errlen)
{
    /* One spare byte tells "exactly the cap" from "larger", even if the file grows under us. */
    char *b = malloc(KEY_FILE_MAX + 1);
    if (b == NULL) {
        set_err(err, errlen, "%s: out of memory", path);
        return KEYS_E_IO;
    }
    size_t n = 0;
    while (n < KEY_FILE_MAX + 1) {
        ssize_t r = read(fd, b + n, KEY_FILE_MAX + 1 - n);
        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }
            int e = errno;
            sodium_memzero(b, n);
            free(b);
            set_err(err, errlen, "%s: read failed: %s", path, strerror(e));
            return KEYS_E_IO;
        }
        if (r == 0) {
            break;
        }
        n += (size_t)r; /* 0 < r <= remaining */
    }
    if (n > KEY_FILE_MAX) {
        sodium_memzero(b, n);
        free(b);
        set_err(err, errlen, "%s: larger than %d bytes; not a key file", path, KEY_FILE_MAX);
        return KEYS_E_FORMAT;
    }
    *buf = b;
    *len = n;
    return KEYS_OK;
}

/* get_string fetches a required string field of obj, naming the field on error. */
static int get_string(json_t *obj, const char *field, const char *path, json_t **val, char *err,
                      size_t errlen)
{
    json_t *v = json_object_get(obj, field);
    if (v == NULL) {
        set_err(err, errlen, "%s: field \"%s\": missing", path, field);
        return KEYS_E_FORMAT;
    }
    if (!json_is_string(v)) {
        set_err(err, errlen, "%s: field \"%s\": expected a string", path, field);
        return KEYS_E_FORMAT;
    }
    *val = v;
    return KEYS_OK;
}

/* get_hex decodes a required hex string field of exactly 2*outlen characters into out. */
static int get_hex(json_t *obj, const char *field, const char *path, uint8_t *out, size_t outlen,
                   char *err, size_t errlen)
{
    json_t *v = NULL;
    int rc = get_string(obj, field, path, &v, err, errlen);
    if (rc != KEYS_OK) {
        return rc;
    }
    /* Length is checked against json_string_length so an embedded NUL cannot shorten it. */
    if (json_string_length(v) != 2 * outlen ||
        keys_hex_decode(json_string_value(v), out, outlen) != KEYS_OK) {
        set_err(err, errlen, "%s: field \"%s\": expected %zu hex characters", path, field,
                2 * outlen);
        return KEYS_E_FORMAT;
    }
    return KEYS_OK;
}

/* parse_key_doc checks the JSON shape and decodes both keys. seed is secret: caller wipes it. */
static int parse_key_doc(json_t *root, const char *path, uint8_t file_pk[KEYS_PK_BYTES],
                         uint8_t seed[KEYS_SEED_BYTES], char *err, size_t errlen)
{
    static const char *const fields[] = {"type", "public_key", "private_key"};

    if (!json_is_object(root)) {
        set_err(err, errlen, "%s: expected a JSON object", path);
        return KEYS_E_FORMAT;
    }
    /* Exactly the documented fields: an unknown one is more likely a typo than an extension. */
    const char *key;
    json_t *unused;
    json_object_foreach(root, key, unused)
    {
        (void)unused;
        bool known = false;
        for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
            known = known || strcmp(key, fields[i]) == 0;
        }
        if (!known) {
            set_err(err, errlen, "%s: field \"%s\": unexpected", path, key);
            return KEYS_E_FORMAT;
        }
    }

    json_t *type = NULL;
    int rc = get_string(root, "type", path, &type, err, errlen);
    if (rc != KEYS_OK) {
        return rc;
    }
    if (json_string_length(type) != strlen("ed25519") ||
        strcmp(json_string_value(type), "ed25519") != 0) {
        set_err(err, errlen, "%s: field \"type\": expected \"ed25519\"", path);
        return KEYS_E_FORMAT;
    }
    rc = get_hex(root, "public_key", path, file_pk, KEYS_PK_BYTES, err, errlen);
    if (rc != KEYS_OK) {
        return rc;
    }
    return get_hex(root, "private_key", path, seed, KEYS_SEED_BYTES, err, errlen);
}

int keys_file_read(const char *path, uint8_t pk[KEYS_PK_BYTES], uint8_t sk[KEYS_SK_BYTES],
                   char *err, size_t errlen)
{
    int rc = keys_init();
    if (rc != KEYS_OK) {
        set_err(err, errlen, "%s: %s", path, keys_strerror(rc));
        return rc;
    }

    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        set_err(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return KEYS_E_IO;
    }
    /* fstat on the open descriptor, not stat on the path, so the file checked is the file read. */
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        (void)close(fd);
        set_err(err, errlen, "%s: cannot stat: %s", path, strerror(e));
        return KEYS_E_IO;
    }
    if (!S_ISREG(st.st_mode)) {
        (void)close(fd);
        set_err(err, errlen, "%s: not a regular file", path);
        return KEYS_E_IO;
    }
    /* Any group/other bit means the key may already have leaked; refuse it like ssh does. */
    if ((st.st_mode & 077) != 0) {
        (void)close(fd);
        set_err(err, errlen, "%s: mode %04o is accessible by group or others; chmod 600 it", path,
                (unsigned)(st.st_mode & 07777));
        return KEYS_E_PERM;
    }

    char *buf = NULL;
    size_t len = 0;
    rc = read_capped(fd, path, &buf, &len, err, errlen);
    (void)close(fd);
    if (rc != KEYS_OK) {
        return rc;
    }

    /* JSON_REJECT_DUPLICATES: two "private_key" fields would make the file ambiguous. */
    json_error_t jerr;
    json_t *root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
    sodium_memzero(buf, len);
    free(buf);
    if (root == NULL) {
        set_err(err, errlen, "%s: malformed JSON at line %d column %d: %s", path, jerr.line,
                jerr.column, jerr.text);
        return KEYS_E_FORMAT;
    }

    uint8_t file_pk[KEYS_PK_BYTES];
    uint8_t seed[KEYS_SEED_BYTES];
    uint8_t derived_pk[KEYS_PK_BYTES];
    uint8_t derived_sk[KEYS_SK_BYTES];
    rc = parse_key_doc(root, path, file_pk, seed, err, errlen);
    /* jansson frees its strings without wiping them; nothing we can do short of replacing its
     * allocator process-wide. */
    json_decref(root);
    if (rc == KEYS_OK) {
        if (crypto_sign_seed_keypair(derived_pk, derived_sk, seed) != 0) {
            set_err(err, errlen, "%s: %s", path, keys_strerror(KEYS_E_INIT));
            rc = KEYS_E_INIT;
        } else if (memcmp(derived_pk, file_pk, KEYS_PK_BYTES) != 0) {
            set_err(err, errlen, "%s: field \"public_key\": does not match the private key", path);
            rc = KEYS_E_MISMATCH;
        } else {
            memcpy(pk, derived_pk, KEYS_PK_BYTES);
            memcpy(sk, derived_sk, KEYS_SK_BYTES);
        }
    }
    sodium_memzero(seed, sizeof seed);
    sodium_memzero(derived_sk, sizeof derived_sk);
    return rc;
}
