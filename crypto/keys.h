/*
 * keys.h - Ed25519 keys and signatures, SHA-256, the Merkle root, key files.
 *
 * Everything here is a thin, checked layer over libsodium. Nothing keeps global state except
 * libsodium's own one-time initialisation, which keys_init() performs (idempotent).
 *
 * Prefix: keys_ (crypto_ belongs to libsodium).
 */
#ifndef PBFT_CRYPTO_KEYS_H
#define PBFT_CRYPTO_KEYS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KEYS_PK_BYTES 32   /* Ed25519 public key */
#define KEYS_SK_BYTES 64   /* libsodium secret key: seed (32) || public key (32) */
#define KEYS_SEED_BYTES 32 /* RFC 8032 private key */
#define KEYS_SIG_BYTES 64
#define KEYS_HASH_BYTES 32 /* SHA-256 */

/* Error codes (0 is success). */
enum {
    KEYS_OK = 0,
    KEYS_E_INIT = 1,     /* libsodium failed to initialise */
    KEYS_E_IO = 2,       /* file could not be opened, read or written */
    KEYS_E_FORMAT = 3,   /* key file is not the documented JSON, or hex is malformed */
    KEYS_E_MISMATCH = 4, /* public key in the file does not belong to the private key */
    KEYS_E_EXISTS = 5,   /* refusing to overwrite an existing key file */
    KEYS_E_PERM = 6,     /* key file is readable by group or others */
};

/* keys_strerror returns a static string describing a KEYS_E_* code. */
const char *keys_strerror(int rc);

/* keys_init initialises libsodium. Safe to call more than once. Returns KEYS_OK or KEYS_E_INIT. */
int keys_init(void);

/* keys_generate makes a fresh key pair from the OS random source. */
int keys_generate(uint8_t pk[KEYS_PK_BYTES], uint8_t sk[KEYS_SK_BYTES]);

/* keys_random fills out with n bytes from the OS random source (libsodium's randombytes).
 * Returns KEYS_OK or KEYS_E_INIT. */
int keys_random(uint8_t *out, size_t n);

/* keys_from_seed derives the key pair for an RFC 8032 private key (32-byte seed).
 * Deterministic: used by tests and by the simulator, which derives keys from its seed. */
int keys_from_seed(const uint8_t seed[KEYS_SEED_BYTES], uint8_t pk[KEYS_PK_BYTES],
                   uint8_t sk[KEYS_SK_BYTES]);

/* keys_sign signs msg (len bytes) with sk into sig. Ed25519 signing is deterministic. */
void keys_sign(const uint8_t sk[KEYS_SK_BYTES], const uint8_t *msg, size_t len,
               uint8_t sig[KEYS_SIG_BYTES]);

/* keys_verify returns true iff sig is a valid Ed25519 signature of msg under pk. libsodium
 * rejects non-canonical S and small-order keys, so a signature is not malleable. */
bool keys_verify(const uint8_t pk[KEYS_PK_BYTES], const uint8_t *msg, size_t len,
                 const uint8_t sig[KEYS_SIG_BYTES]);

/* SHA-256, one shot and streaming. */
void keys_sha256(const uint8_t *p, size_t n, uint8_t out[KEYS_HASH_BYTES]);

typedef struct {
    /* Opaque storage for crypto_hash_sha256_state (104 bytes in libsodium 1.0.18). */
    _Alignas(8) uint8_t opaque[128];
} keys_sha256_ctx;

void keys_sha256_init(keys_sha256_ctx *c);
void keys_sha256_update(keys_sha256_ctx *c, const uint8_t *p, size_t n);
void keys_sha256_final(keys_sha256_ctx *c, uint8_t out[KEYS_HASH_BYTES]);

/*
 * keys_merkle_root computes the Merkle tree hash of n leaves (each a 32-byte hash), following
 * RFC 6962 section 2.1 exactly:
 *   MTH({})     = SHA-256()                          (the hash of the empty string)
 *   MTH({d0})   = SHA-256(0x00 || d0)                (leaf prefix 0x00)
 *   MTH(D[0:n]) = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n]))   (inner prefix 0x01)
 *                 where k is the largest power of two strictly less than n.
 * An odd count is handled by that split: no leaf is ever duplicated, so the CVE-2012-2459
 * ambiguity of Bitcoin's tree (where [a,b,c] and [a,b,c,c] share a root) cannot arise.
 * Distinct leaf and inner prefixes stop a leaf being passed off as an inner node.
 * Iterative, O(n) time and O(log n) stack.
 */
void keys_merkle_root(const uint8_t (*leaves)[KEYS_HASH_BYTES], size_t n,
                      uint8_t out[KEYS_HASH_BYTES]);

/* Hex helpers (lower case). keys_hex_encode writes 2n chars plus NUL into out (cap >= 2n+1).
 * keys_hex_decode decodes exactly 2*outlen hex characters of s (upper or lower case) and
 * returns KEYS_OK, or KEYS_E_FORMAT on a wrong length or a non-hex character. */
void keys_hex_encode(const uint8_t *p, size_t n, char *out);
int keys_hex_decode(const char *s, uint8_t *out, size_t outlen);

/*
 * Key files. JSON, one object:
 *   {"type": "ed25519", "public_key": "<64 hex>", "private_key": "<64 hex: the 32-byte seed>"}
 * keys_file_write creates the file with mode 0600 (O_CREAT|O_EXCL: never overwrites; returns
 * KEYS_E_EXISTS) and fsyncs it. keys_file_read checks the JSON shape, that the public key
 * matches the seed (KEYS_E_MISMATCH), and that the file is not group/other readable
 * (KEYS_E_PERM). On error, err (if not NULL) receives a message naming the path and the field.
 */
int keys_file_write(const char *path, const uint8_t pk[KEYS_PK_BYTES],
                    const uint8_t sk[KEYS_SK_BYTES], char *err, size_t errlen);
int keys_file_read(const char *path, uint8_t pk[KEYS_PK_BYTES], uint8_t sk[KEYS_SK_BYTES],
                   char *err, size_t errlen);

#endif
