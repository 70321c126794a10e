/*
 * byz_internal.h - the adversary's state, shared by byz.c and replica.c only.
 */
#ifndef PBFT_CONSENSUS_BYZ_INTERNAL_H
#define PBFT_CONSENSUS_BYZ_INTERNAL_H

#include "consensus/byz.h"

#define PBFT_BYZ_REPLAY_RING 32

struct pbft_byz {
    pbft_byz_config c;
    uint64_t rng;
    uint64_t actions;
    bool active;
    bool crashed;         /* CRASH: reached its point */
    uint32_t crash_count; /* CRASH: messages of crash_type seen */
    /* REPLAY: frames this replica sent earlier, with the view they were sent in. */
    struct {
        uint8_t *p;
        size_t n;
        uint64_t view;
    } ring[PBFT_BYZ_REPLAY_RING];
    unsigned ring_next;
};

/* pbft__byz_next returns the next value of the adversary's PRNG (splitmix64). */
uint64_t pbft__byz_next(pbft_byz *b);
/* pbft__byz_chance is true with probability percent/100. */
bool pbft__byz_chance(pbft_byz *b, uint32_t percent);
/* pbft__byz_remember keeps a copy of a sent frame for REPLAY (bounded ring). */
void pbft__byz_remember(pbft_byz *b, const uint8_t *p, size_t n, uint64_t view);

#endif
