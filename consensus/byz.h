/*
 * byz.h - Byzantine behaviours. A Byzantine replica is an honest core whose outgoing messages
 * pass through an adversary before they are signed, so its lies carry valid signatures
 * (design section 6). The same adversary runs in the simulator and in pbftd.
 *
 * The adversary is deterministic: its only randomness is a PRNG seeded from its config.
 */
#ifndef PBFT_CONSENSUS_BYZ_H
#define PBFT_CONSENSUS_BYZ_H

#include <stdint.h>

#include "consensus/replica.h"

enum {
    PBFT_BYZ_HONEST = 0,
    PBFT_BYZ_SILENT,        /* sends nothing at all */
    PBFT_BYZ_EQUIVOCATE,    /* as primary: a different block for each half of the backups */
    PBFT_BYZ_WRONG_DIGEST,  /* pre-prepares, prepares and commits carry a digest that matches
                               no block */
    PBFT_BYZ_BAD_SIGNATURE, /* every signature is corrupted after signing */
    PBFT_BYZ_REPLAY,        /* re-sends messages signed in earlier views, alongside its own */
    PBFT_BYZ_CONFLICT_VC,   /* VIEW-CHANGE: a different (stripped) one to half the replicas */
    PBFT_BYZ_SLOW_PRIMARY,  /* delays pre-prepares by delay_ms (just under the view timeout) */
    PBFT_BYZ_MUTATE,        /* view or sequence number +-1 on a share of its votes */
    PBFT_BYZ__COUNT
};

typedef struct {
    int mode;          /* PBFT_BYZ_* */
    uint64_t seed;     /* PRNG seed */
    uint32_t delay_ms; /* SLOW_PRIMARY: delay applied to each pre-prepare */
    uint32_t percent;  /* MUTATE/REPLAY: share of messages affected, 0..100 (default 50) */
} pbft_byz_config;

/* pbft_byz_new returns 0 and an adversary, or -1 on a bad config or no memory. */
int pbft_byz_new(const pbft_byz_config *c, pbft_byz **out);
void pbft_byz_free(pbft_byz *b);

/* Names: "honest", "silent", "equivocate", "wrong-digest", "bad-signature", "replay",
 * "conflict-vc", "slow-primary", "mutate". pbft_byz_mode_parse returns -1 if unknown. */
const char *pbft_byz_mode_name(int mode);
int pbft_byz_mode_parse(const char *name);

/* Count of Byzantine actions taken (messages mutated, dropped, delayed or invented). */
uint64_t pbft_byz_actions(const pbft_byz *b);

#endif
