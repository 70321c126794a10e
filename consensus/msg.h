/*
 * msg.h - canonical, versioned binary encoding of every PBFT message, the block and the
 * client transaction; signing and verification over the canonical bytes.
 *
 * All integers are unsigned big-endian of fixed width; there are no varints, no optional
 * padding and no implicit defaults, so every value has exactly one encoding. Every length is
 * explicit and checked against the bytes that remain before anything is read. Decoders
 * return views (pointer + length) into the caller's buffer: they never copy, never allocate
 * and never read outside [p, p+n). The byte-by-byte description for implementers in other
 * languages is docs/protocol.md; the layouts are repeated next to each type below.
 *
 * Domain separation. Every signature and hash is over a distinct 8-byte ASCII tag:
 *   "PBFT-MSG" replica message signature    "PBFT-TX1" transaction signature
 *   "PBFT-BLK" block digest                 "PBFT-CHN" chain hash
 *   "PBFT-CKP" checkpoint state digest (replica.c)
 * and signatures also bind the chain: chain = SHA-256(chain id string). So a message or a
 * transaction signed for one network is useless on another.
 */
#ifndef PBFT_CONSENSUS_MSG_H
#define PBFT_CONSENSUS_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "crypto/keys.h"

#define PBFT_WIRE_VERSION 1

/* Hard limits of the wire format. A configuration may choose smaller ones, never larger. */
#define PBFT_MAX_N 64                    /* replicas in a network */
#define PBFT_MAX_TX_BYTES 8192           /* one encoded transaction */
#define PBFT_MAX_KEY_BYTES 256           /* put: key length, 1..256 */
#define PBFT_MAX_VALUE_BYTES 4096        /* put: value length, 0..4096 */
#define PBFT_MAX_BLOCK_TXS 16384         /* transactions in one block */
#define PBFT_MAX_BLOCK_BYTES (16u << 20) /* one encoded block */
#define PBFT_MAX_WINDOW 1024             /* watermark window L, in sequence numbers */
#define PBFT_MAX_STATE_BLOCKS 256        /* blocks in one state-transfer reply */
#define PBFT_MAX_MSG_BYTES (64u << 20)   /* one framed message, attachment included */

typedef struct {
    uint8_t b[32];
} pbft_digest;

typedef struct {
    const uint8_t *p;
    size_t n;
} pbft_span;

/* Codec error codes (0 is success). */
enum {
    PBFT_OK = 0,
    PBFT_E_TRUNCATED = 1,    /* input ends before a field or a declared length */
    PBFT_E_TRAILING = 2,     /* bytes left over after the last field */
    PBFT_E_VERSION = 3,      /* unknown wire version */
    PBFT_E_TYPE = 4,         /* unknown message or transaction type, or wrong embedded type */
    PBFT_E_TOO_LARGE = 5,    /* a length or count above the limits */
    PBFT_E_NONCANONICAL = 6, /* a value with another legal encoding, or out of its range */
    PBFT_E_NOMEM = 7,        /* encoder: output buffer limit reached */
    PBFT_E_SIG = 8,          /* a signature does not verify */
    PBFT_E_DIGEST = 9,       /* a block does not match its digest or transaction root */
    PBFT_E_OOM = 10,         /* encoder: out of memory (PBFT_E_NOMEM is the buffer's limit) */
};

/* pbft_strerror returns a static string for a PBFT_E_* code. */
const char *pbft_strerror(int rc);

/* ---------------------------------------------------------------------------------------
 * Transactions.
 *
 *   off  size  field
 *   0    1     version            = 1
 *   1    1     type               1 = transfer, 2 = put
 *   2    32    sender             Ed25519 public key
 *   34   8     nonce              the sender's next nonce (u64 BE)
 *   42   ...   payload
 *                transfer:  to (32 bytes, public key), amount (u64 BE)
 *                put:       key_len (u16 BE, 1..256), key, value_len (u32 BE, 0..4096), value
 *   end  64    signature          Ed25519(sender, "PBFT-TX1" || chain || SHA-256(bytes 0..end))
 *
 * tx hash = SHA-256(all bytes, signature included). libsodium rejects non-canonical
 * signatures, so the hash of a valid transaction is unique.
 * -------------------------------------------------------------------------------------*/
enum { PBFT_TX_TRANSFER = 1, PBFT_TX_PUT = 2 };

typedef struct {
    uint8_t type;
    const uint8_t *sender; /* 32 bytes */
    uint64_t nonce;
    const uint8_t *to;       /* transfer: 32 bytes */
    uint64_t amount;         /* transfer */
    pbft_span key;           /* put */
    pbft_span value;         /* put */
    const uint8_t *sig;      /* 64 bytes */
    pbft_span unsigned_part; /* bytes 0..end, what the signature's hash covers */
} pbft_tx;

/* pbft_tx_decode parses exactly n bytes as one transaction (structure only, no signature
 * check). Returns PBFT_OK or an error code; out is valid only on success. */
int pbft_tx_decode(const uint8_t *p, size_t n, pbft_tx *out);

/* pbft_tx_verify checks the signature of a decoded transaction for this chain. */
bool pbft_tx_verify(const pbft_tx *tx, const uint8_t chain[32]);

/* pbft_tx_hash: SHA-256 of the whole encoded transaction. */
void pbft_tx_hash(const uint8_t *p, size_t n, pbft_digest *out);

/* pbft_tx_encode_transfer / _put build and sign a transaction into out (cap bytes) and set
 * *len. sk is the sender's libsodium secret key (its public half is the sender field).
 * Return PBFT_OK, PBFT_E_NOMEM if cap is too small, PBFT_E_TOO_LARGE for a long key/value. */
int pbft_tx_encode_transfer(const uint8_t chain[32], const uint8_t sk[64], uint64_t nonce,
                            const uint8_t to[32], uint64_t amount, uint8_t *out, size_t cap,
                            size_t *len);
int pbft_tx_encode_put(const uint8_t chain[32], const uint8_t sk[64], uint64_t nonce,
                       const uint8_t *key, size_t key_len, const uint8_t *value, size_t value_len,
                       uint8_t *out, size_t cap, size_t *len);

/* ---------------------------------------------------------------------------------------
 * Blocks (a batch of transactions, ordered by PBFT at sequence number = height).
 *
 *   off  size  field
 *   0    1     version       = 1
 *   1    8     height        the PBFT sequence number (>= 1)
 *   9    8     view          the view in which it was first proposed
 *   17   2     proposer      replica id of that view's primary
 *   19   8     timestamp_ms  the proposer's clock (informational; 0 in a null block)
 *   27   32    tx_root       keys_merkle_root of the transaction hashes, in block order
 *   59   4     ntx           number of transactions (0..PBFT_MAX_BLOCK_TXS)
 *   63   ...   ntx times: tx_len (u32 BE, 1..PBFT_MAX_TX_BYTES), tx bytes
 *
 * digest = SHA-256("PBFT-BLK" || bytes 0..63). The header commits to the transactions through
 * tx_root; PBFT orders digests. The chain of blocks is formed at commit time, not proposal
 * time (so pipelined and re-proposed blocks never reference an uncommitted parent):
 *   chain_hash(0) = genesis hash;  chain_hash(h) = SHA-256("PBFT-CHN" || chain_hash(h-1) ||
 *   digest(h)).
 * A null block (PBFT's null request, TOCS 2002 section 4.4) has ntx = 0, timestamp_ms = 0,
 * tx_root = MTH({}) and the new view's primary as proposer.
 * -------------------------------------------------------------------------------------*/
#define PBFT_BLOCK_HEADER_BYTES 63

typedef struct {
    uint64_t height;
    uint64_t view;
    uint16_t proposer;
    uint64_t timestamp_ms;
    pbft_digest tx_root;
    uint32_t ntx;
    pbft_span header; /* bytes 0..63 */
    pbft_span txs;    /* the ntx (len, tx) entries, structure already checked */
} pbft_block;

/* pbft_block_decode parses exactly n bytes as one block: every length is checked and every
 * transaction must decode (pbft_tx_decode). It does not hash or verify signatures. */
int pbft_block_decode(const uint8_t *p, size_t n, pbft_block *out);

/* pbft_block_next_tx iterates the transactions: start with *off = 0; returns true and sets
 * *tx while one remains. Only valid on a block that pbft_block_decode accepted. */
bool pbft_block_next_tx(const pbft_block *b, size_t *off, pbft_span *tx);

/* pbft_block_digest: SHA-256("PBFT-BLK" || header). */
void pbft_block_digest(const pbft_block *b, pbft_digest *out);

/* pbft_block_check_root recomputes tx_root from the transactions (hashing each one) and
 * returns PBFT_OK or PBFT_E_DIGEST. If tx_hashes is not NULL it receives the ntx hashes. */
int pbft_block_check_root(const pbft_block *b, pbft_digest *tx_hashes);

/* pbft_block_encode builds a block from ntx transactions (txs[i], each already encoded) and
 * computes tx_root. Writes at most cap bytes into out and sets *len. */
int pbft_block_encode(uint64_t height, uint64_t view, uint16_t proposer, uint64_t timestamp_ms,
                      const pbft_span *txs, uint32_t ntx, uint8_t *out, size_t cap, size_t *len);

/* pbft_chain_next: SHA-256("PBFT-CHN" || prev || d). */
void pbft_chain_next(const pbft_digest *prev, const pbft_digest *d, pbft_digest *out);

/* ---------------------------------------------------------------------------------------
 * Replica messages.
 *
 * A signed message:
 *   off  size      field
 *   0    1         version    = 1
 *   1    1         type       PBFT_MSG_*
 *   2    2         sender     replica id (index into the genesis validator list)
 *   4    4         body_len   (u32 BE)
 *   8    body_len  body       per type, below; must be consumed exactly
 *   ..   64        signature  Ed25519(sender, "PBFT-MSG" || chain || SHA-256(bytes 0..8+body_len))
 *
 * A frame (what travels on the network) is a signed message followed by
 *   u32 attach_len, attachment
 * The attachment is not signed: it is authenticated by a digest inside the signed body. Only
 * PRE-PREPARE has one (the block, checked against the digest); every other type must have
 * attach_len = 0. Signed messages embedded inside other messages (certificates) carry no
 * attachment field at all.
 *
 * Bodies:
 *   PREPREPARE, PREPARE, COMMIT (48 bytes): view u64, seq u64, digest[32]
 *   CHECKPOINT (40): seq u64, state_digest[32]
 *   VIEWCHANGE: new_view u64, stable_seq u64, stable_digest[32],
 *               checkpoint proof: list of signed CHECKPOINT,
 *               n_pcert u16, n_pcert times { signed PREPREPARE as a list element
 *                                            (u32 len, bytes), list of signed PREPARE }
 *   NEWVIEW:    view u64, list of signed VIEWCHANGE, list of signed PREPREPARE
 *   STATE_REQ (48): from_seq u64, to_seq u64, digest[32]
 *               digest all-zero: committed blocks from_seq..to_seq with certificates;
 *               otherwise from_seq == to_seq and the block with that digest is wanted.
 *   STATE_REP:  n u16 (<= PBFT_MAX_STATE_BLOCKS), n times { block_len u32, block,
 *               list of signed COMMIT (the certificate; may be empty for an uncommitted
 *               block asked for by digest) }
 *   REQUEST:    tx_len u32, tx (a client transaction forwarded by a replica)
 *   COMPLAINT (9): view u64, reason u8 (0 slow, 1 unfair, 2 timeout; others are refused):
 *               a replica's signed wish to leave `view`: its primary is not making the
 *               progress it should (primary monitoring), or a timer expired in it
 *               (replica.c, count_complaint; docs/protocol.md sections 8 and 11)
 * where "list of X" = count u16 (<= PBFT_MAX_N, except the NEWVIEW pre-prepare list which is
 * <= PBFT_MAX_WINDOW), then count times { len u32, signed message of type X }. Embedded
 * messages are fully structure-checked by the decoder, including their declared type.
 * Lists of votes are canonical: sorted by sender, strictly ascending (no duplicates).
 * -------------------------------------------------------------------------------------*/
enum {
    PBFT_MSG_PREPREPARE = 1,
    PBFT_MSG_PREPARE = 2,
    PBFT_MSG_COMMIT = 3,
    PBFT_MSG_CHECKPOINT = 4,
    PBFT_MSG_VIEWCHANGE = 5,
    PBFT_MSG_NEWVIEW = 6,
    PBFT_MSG_STATE_REQ = 7,
    PBFT_MSG_STATE_REP = 8,
    PBFT_MSG_REQUEST = 9,
    PBFT_MSG_COMPLAINT = 10,
    PBFT_MSG__MAX = 10,
};

#define PBFT_SIGNED_OVERHEAD (8 + KEYS_SIG_BYTES) /* header + signature */

/* A signed message, decoded. */
typedef struct {
    uint8_t type;
    uint16_t sender;
    pbft_span body;
    const uint8_t *sig;    /* 64 bytes */
    pbft_span signed_part; /* bytes 0..8+body_len: what the signature's hash covers */
    pbft_span whole;       /* the signed message: signed_part plus signature */
    pbft_span attach;      /* frames only; n == 0 when absent */
} pbft_env;

/* pbft_env_decode parses exactly n bytes as a frame (signed message + attachment) and checks
 * the body of its type (pbft_body_check). */
int pbft_frame_decode(const uint8_t *p, size_t n, pbft_env *out);

/* pbft_signed_decode parses exactly n bytes as an embedded signed message (no attachment) and
 * checks that its type is want_type and its body is well formed. */
int pbft_signed_decode(const uint8_t *p, size_t n, uint8_t want_type, pbft_env *out);

/* pbft_env_verify checks the signature against pk for this chain. */
bool pbft_env_verify(const pbft_env *e, const uint8_t chain[32], const uint8_t pk[32]);

/* Decoded bodies. */
typedef struct {
    uint64_t view;
    uint64_t seq;
    pbft_digest d;
} pbft_vote; /* PREPREPARE, PREPARE, COMMIT */

typedef struct {
    uint64_t seq;
    pbft_digest d;
} pbft_ckpt;

/* A list of signed messages: count, and the region holding count (len, bytes) entries. */
typedef struct {
    uint16_t count;
    pbft_span region;
} pbft_list;

typedef struct {
    uint64_t new_view;
    uint64_t stable_seq;
    pbft_digest stable_d;
    pbft_list ckpts; /* signed CHECKPOINTs */
    uint16_t n_pcert;
    pbft_span pcerts; /* n_pcert entries: (u32 len, signed PREPREPARE), list of PREPAREs */
} pbft_viewchange;

typedef struct {
    uint64_t view;
    pbft_list vcs; /* signed VIEWCHANGEs */
    pbft_list pps; /* signed PREPREPAREs */
} pbft_newview;

typedef struct {
    uint64_t from_seq;
    uint64_t to_seq;
    pbft_digest d;
} pbft_state_req;

typedef struct {
    uint16_t n;
    pbft_span entries; /* n entries: (u32 len, block), list of signed COMMITs */
} pbft_state_rep;

#define PBFT_COMPLAINT_REASONS 3
typedef struct {
    uint64_t view;
    uint8_t reason; /* < PBFT_COMPLAINT_REASONS */
} pbft_complaint_msg;

/* Body decoders: parse exactly body.n bytes. They check every embedded message's structure
 * and type, but no signatures. */
int pbft_vote_decode(pbft_span body, pbft_vote *out);
int pbft_ckpt_decode(pbft_span body, pbft_ckpt *out);
int pbft_viewchange_decode(pbft_span body, pbft_viewchange *out);
int pbft_newview_decode(pbft_span body, pbft_newview *out);
int pbft_state_req_decode(pbft_span body, pbft_state_req *out);
int pbft_state_rep_decode(pbft_span body, pbft_state_rep *out);
int pbft_request_decode(pbft_span body, pbft_span *tx);
int pbft_complaint_decode(pbft_span body, pbft_complaint_msg *out);

/* pbft_body_check decodes the body of type `type` and discards the result. */
int pbft_body_check(uint8_t type, pbft_span body);

/* Iterators over validated regions. Start with *off = 0; each returns true while an element
 * remains. Only valid on what a decoder above accepted. */
bool pbft_list_next(const pbft_list *l, size_t *off, pbft_span *msg);
/* pbft_commit_cert_verify checks a commit certificate from an untrusted source (a peer's
 * reply, or storage read back), which no decoder has seen: exactly cert->count elements
 * filling the region, at least n - f (2f+1 when n = 3f+1) of them, each a COMMIT for
 * (v, seq, d) of one view v, from validators below n in strictly ascending order, each
 * signature valid against pubkeys for this chain [OSDI §4.2: committed-local]. On success
 * *view is v. Pure: no state, no I/O. */
bool pbft_commit_cert_verify(const pbft_list *cert, uint16_t n, const uint8_t chain[32],
                             const uint8_t (*pubkeys)[32], uint64_t seq, const pbft_digest *d,
                             uint64_t *view);
/* pbft_vc_next_pcert yields one prepared certificate: its signed PREPREPARE and the list of
 * its signed PREPAREs. */
bool pbft_vc_next_pcert(const pbft_viewchange *vc, size_t *off, pbft_span *pp, pbft_list *prepares);
/* pbft_state_rep_next yields one entry: the block bytes and its certificate. */
bool pbft_state_rep_next(const pbft_state_rep *r, size_t *off, pbft_span *block,
                         pbft_list *commits);

/* ---------------------------------------------------------------------------------------
 * Encoding. A bounded, growable output buffer; every put is checked against `limit` and
 * sets `err` (PBFT_E_NOMEM) instead of writing past it. Heap memory, freed by
 * pbft_wbuf_free (safe on a zeroed struct).
 * -------------------------------------------------------------------------------------*/
typedef struct {
    uint8_t *p;
    size_t len;
    size_t cap;
    size_t limit;
    int err;
} pbft_wbuf;

void pbft_wbuf_init(pbft_wbuf *w, size_t limit);
void pbft_wbuf_free(pbft_wbuf *w);
void pbft_wbuf_reset(pbft_wbuf *w); /* len = 0, err = 0; keeps the memory */
void pbft_put_u8(pbft_wbuf *w, uint8_t v);
void pbft_put_u16(pbft_wbuf *w, uint16_t v);
void pbft_put_u32(pbft_wbuf *w, uint32_t v);
void pbft_put_u64(pbft_wbuf *w, uint64_t v);
void pbft_put_bytes(pbft_wbuf *w, const void *p, size_t n);
/* pbft_put_elem writes one list element: u32 len, bytes. */
void pbft_put_elem(pbft_wbuf *w, const uint8_t *p, size_t n);

/* Building a signed message: pbft_msg_begin writes the header with a placeholder body_len and
 * returns the offset at which the message starts; the caller appends the body; pbft_msg_end
 * patches body_len and appends the signature. To make a frame, follow with
 * pbft_put_attach (attach may be NULL with n = 0). */
size_t pbft_msg_begin(pbft_wbuf *w, uint8_t type, uint16_t sender);
void pbft_msg_end(pbft_wbuf *w, size_t start, const uint8_t chain[32], const uint8_t sk[64]);
void pbft_put_attach(pbft_wbuf *w, const uint8_t *attach, size_t n);

/* Convenience encoders for the fixed-size bodies (begin + body + end). */
void pbft_put_vote_msg(pbft_wbuf *w, uint8_t type, uint16_t sender, const pbft_vote *v,
                       const uint8_t chain[32], const uint8_t sk[64]);
void pbft_put_ckpt_msg(pbft_wbuf *w, uint16_t sender, const pbft_ckpt *c, const uint8_t chain[32],
                       const uint8_t sk[64]);

/* Low-level big-endian readers (used by decoders and tests). */
uint16_t pbft_get_u16(const uint8_t *p);
uint32_t pbft_get_u32(const uint8_t *p);
uint64_t pbft_get_u64(const uint8_t *p);

#endif
