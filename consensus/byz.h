/*
 * byz.h - Byzantine behaviours. A Byzantine replica is an honest core whose outgoing messages
 * pass through an adversary before they are signed, so its lies carry valid signatures
 * (design section 6). The same adversary runs in the simulator and in pbftd.
 *
 * The adversary is deterministic: its only randomness is a PRNG seeded from its config.
 */
#ifndef PBFT_CONSENSUS_BYZ_H
#define PBFT_CONSENSUS_BYZ_H

#include <stdbool.h>
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
    PBFT_BYZ_MUTATE,        /* view or sequence number +-1 on a share of its votes
                               (also named "off-by-one") */
    PBFT_BYZ_CRASH,         /* stops dead at a chosen point: the Nth message of a type */
    PBFT_BYZ_SELECTIVE,     /* sends only to a subset of the replicas */
    PBFT_BYZ_FLOOD,         /* every message also goes `factor` more times, plus junk */
    PBFT_BYZ_CENSOR,        /* as primary: never proposes one client's (or half the clients')
                               transactions */
    PBFT_BYZ_BOGUS_STATE,   /* state-transfer replies carry corrupted blocks, and its
                               checkpoint claims run one interval ahead to attract requests */
    /* NEW-VIEW forgeries by a Byzantine new primary [OSDI §4.4]. It builds its NEW-VIEW from
     * the 2f+1 VIEW-CHANGEs it holds, forges it as below, installs the forgery itself (so it
     * votes for what it claims) and sends it. Honest backups recompute O and refuse it. */
    PBFT_BYZ_NEWVIEW_OMIT,   /* drops the prepared certificate of the lowest prepared
                                sequence number: the null request stands in its place */
    PBFT_BYZ_NEWVIEW_DIGEST, /* alters the digest at the lowest prepared sequence number */
    PBFT_BYZ_NEWVIEW_INVENT, /* a request at a null slot of O (the first one; if O has none,
                                one past max-s) */
    PBFT_BYZ_NEWVIEW_FEW,    /* carries only 2f VIEW-CHANGEs */
    PBFT_BYZ_NEWVIEW_DUP,    /* repeats one VIEW-CHANGE in place of another */
    PBFT_BYZ_NEWVIEW_VIEW,   /* claims the next view it is primary of (v + n) */
    PBFT_BYZ__COUNT
};

typedef struct {
    int mode;             /* PBFT_BYZ_* */
    uint64_t seed;        /* PRNG seed */
    uint32_t delay_ms;    /* SLOW_PRIMARY: delay applied to each pre-prepare */
    uint32_t percent;     /* MUTATE/REPLAY: share of messages affected, 0..100 (default 50) */
    bool armed;           /* start inactive (honest) until pbft_byz_set_active: lets a scenario
                             runner choose the moment of the fault */
    uint8_t crash_type;   /* CRASH: at the crash_after-th message of this PBFT_MSG_* type
                             (0: of any type) it stops sending, and the driver stops it */
    uint32_t crash_after; /* CRASH: default 1 */
    uint64_t peers;       /* SELECTIVE: bit j = send to replica j; 0: ids below n/2 only */
    uint32_t factor;      /* FLOOD: extra copies of each message (default 8) */
    bool censor_set;      /* CENSOR: censor censor_pk only; otherwise every sender whose
                             key's first byte is even */
    uint8_t censor_pk[32];
} pbft_byz_config;

/* pbft_byz_new returns 0 and an adversary, or -1 on a bad config or no memory. */
int pbft_byz_new(const pbft_byz_config *c, pbft_byz **out);
void pbft_byz_free(pbft_byz *b);

/* Names: "honest", "silent", "equivocate", "wrong-digest", "bad-signature", "replay",
 * "conflict-vc", "slow-primary", "mutate" (or "off-by-one"), "crash", "selective", "flood",
 * "censor", "bogus-state", "newview-omit", "newview-digest", "newview-invent", "newview-few",
 * "newview-dup", "newview-wrong-view". pbft_byz_mode_parse returns -1 if unknown. */
const char *pbft_byz_mode_name(int mode);
int pbft_byz_mode_parse(const char *name);

int pbft_byz_mode(const pbft_byz *b);

/* An inactive adversary passes every message through unchanged. */
void pbft_byz_set_active(pbft_byz *b, bool on);
bool pbft_byz_active(const pbft_byz *b);

/* CRASH: true once the adversary reached its crash point (the driver should stop the
 * replica: pbftd exits, the simulator leaves it silent). */
bool pbft_byz_crashed(const pbft_byz *b);

/* CENSOR: true if an active adversary censors transactions from this sender. */
bool pbft_byz_censors(pbft_byz *b, const uint8_t sender[32]);

/* BOGUS_STATE: drivers pass each block they put in a state-transfer reply; an active
 * adversary flips one byte (counted as an action) and returns true. */
bool pbft_byz_corrupt_state(pbft_byz *b, uint8_t *block, size_t n);

/* True for the NEW-VIEW forgery modes. */
bool pbft_byz_forges_newview(int mode);

/* Count of Byzantine actions taken (messages mutated, dropped, delayed or invented). */
uint64_t pbft_byz_actions(const pbft_byz *b);

#endif
