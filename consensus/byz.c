/*
 * byz.c - adversary state and decisions. The mutations themselves are applied inside
 * replica.c's outbound path (send_msg), before signing, so lies carry valid signatures.
 */
#include "consensus/byz_internal.h"

#include <stdlib.h>
#include <string.h>

static const char *const mode_names[PBFT_BYZ__COUNT] = {
    "honest",         "silent",         "equivocate",   "wrong-digest", "bad-signature",
    "replay",         "conflict-vc",    "slow-primary", "mutate",       "crash",
    "selective",      "flood",          "censor",       "bogus-state",  "newview-omit",
    "newview-digest", "newview-invent", "newview-few",  "newview-dup",  "newview-wrong-view",
};

const char *pbft_byz_mode_name(int mode)
{
    if (mode < 0 || mode >= PBFT_BYZ__COUNT)
        return "unknown";
    return mode_names[mode];
}

int pbft_byz_mode_parse(const char *name)
{
    if (strcmp(name, "off-by-one") == 0)
        return PBFT_BYZ_MUTATE;
    for (int i = 0; i < PBFT_BYZ__COUNT; i++)
        if (strcmp(name, mode_names[i]) == 0)
            return i;
    return -1;
}

int pbft_byz_new(const pbft_byz_config *c, pbft_byz **out)
{
    *out = NULL;
    if (c->mode < 0 || c->mode >= PBFT_BYZ__COUNT || c->percent > 100)
        return -1;
    pbft_byz *b = calloc(1, sizeof *b);
    if (b == NULL)
        return -1;
    b->c = *c;
    if (b->c.percent == 0)
        b->c.percent = 50;
    b->rng = c->seed ^ 0x9e3779b97f4a7c15ull;
    b->active = !c->armed;
    *out = b;
    return 0;
}

void pbft_byz_free(pbft_byz *b)
{
    if (b == NULL)
        return;
    for (unsigned i = 0; i < PBFT_BYZ_REPLAY_RING; i++)
        free(b->ring[i].p);
    free(b);
}

int pbft_byz_mode(const pbft_byz *b)
{
    return b == NULL ? PBFT_BYZ_HONEST : b->c.mode;
}

void pbft_byz_set_active(pbft_byz *b, bool on)
{
    if (b != NULL)
        b->active = on;
}

bool pbft_byz_active(const pbft_byz *b)
{
    return b != NULL && b->active;
}

bool pbft_byz_crashed(const pbft_byz *b)
{
    return b != NULL && b->crashed;
}

bool pbft_byz_censors(pbft_byz *b, const uint8_t sender[32])
{
    if (b == NULL || !b->active || b->c.mode != PBFT_BYZ_CENSOR)
        return false;
    bool hit = b->c.censor_set ? memcmp(sender, b->c.censor_pk, 32) == 0 : (sender[0] & 1) == 0;
    if (hit)
        b->actions++;
    return hit;
}

bool pbft_byz_corrupt_state(pbft_byz *b, uint8_t *block, size_t n)
{
    if (b == NULL || !b->active || b->c.mode != PBFT_BYZ_BOGUS_STATE || n == 0)
        return false;
    block[n - 1 - pbft__byz_next(b) % (n < 64 ? n : 64)] ^= 0x20; /* in the last transaction */
    b->actions++;
    return true;
}

bool pbft_byz_forges_newview(int mode)
{
    return mode >= PBFT_BYZ_NEWVIEW_OMIT && mode <= PBFT_BYZ_NEWVIEW_VIEW;
}

uint64_t pbft_byz_actions(const pbft_byz *b)
{
    return b == NULL ? 0 : b->actions;
}

uint64_t pbft__byz_next(pbft_byz *b)
{
    uint64_t z = (b->rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

bool pbft__byz_chance(pbft_byz *b, uint32_t percent)
{
    return pbft__byz_next(b) % 100 < percent;
}

void pbft__byz_remember(pbft_byz *b, const uint8_t *p, size_t n, uint64_t view)
{
    uint8_t *copy = malloc(n);
    if (copy == NULL)
        return;
    memcpy(copy, p, n);
    unsigned i = b->ring_next++ % PBFT_BYZ_REPLAY_RING;
    free(b->ring[i].p);
    b->ring[i].p = copy;
    b->ring[i].n = n;
    b->ring[i].view = view;
}
