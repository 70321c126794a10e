/*
 * order.c - per-connection in-order hand-off of verified peer frames (see order.h).
 *
 * A fixed table of connection slots, found by probing from a hash of the connection id. A
 * slot is free for another connection when nothing of its own is out or parked, so the
 * table holds only connections with frames in flight and needs no deletion. Parked items
 * hang off their slot in a list sorted by ticket: they are few (about as many as there are
 * verify workers) unless a connection's early frame waits in the untrusted queue.
 */
#include "node/order.h"

#include <assert.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

struct parked {
    struct parked *next;
    uint64_t ticket;
    bool has_item; /* false: the frame was dropped; only its ticket is kept */
    _Alignas(max_align_t) unsigned char item[]; /* item_size bytes */
};

struct oslot {
    uint32_t conn;     /* 0: never used */
    uint32_t inflight; /* tickets given and not yet reported */
    uint64_t next_in;  /* the next ticket to give */
    uint64_t next_out; /* the next ticket to pass on */
    struct parked *head;
    uint32_t nparked;
};

struct order {
    struct oslot *s;
    uint32_t mask;
    uint32_t max_parked, parked;
    size_t item_size;
    uint64_t overflows;
};

order *order_new(uint32_t slots, uint32_t max_parked, size_t item_size)
{
    assert(slots > 0 && (slots & (slots - 1)) == 0);
    order *o = calloc(1, sizeof *o);
    if (o == NULL)
        return NULL;
    o->s = calloc(slots, sizeof *o->s);
    if (o->s == NULL) {
        free(o);
        return NULL;
    }
    o->mask = slots - 1;
    o->max_parked = max_parked;
    o->item_size = item_size;
    return o;
}

void order_free(order *o, void (*release)(void *item))
{
    if (o == NULL)
        return;
    for (uint32_t i = 0; i <= o->mask; i++) {
        struct parked *p = o->s[i].head;
        while (p != NULL) {
            struct parked *next = p->next;
            if (p->has_item && release != NULL)
                release(p->item);
            free(p);
            p = next;
        }
    }
    free(o->s);
    free(o);
}

static bool idle(const struct oslot *s)
{
    return s->inflight == 0 && s->nparked == 0;
}

order_tag order_arrive(order *o, uint32_t conn)
{
    order_tag t = {ORDER_NONE, 0};
    if (conn == 0)
        return t;
    uint32_t home = (uint32_t)(conn * 2654435761u) & o->mask;
    uint32_t probe = o->mask + 1 < ORDER_PROBE ? o->mask + 1 : ORDER_PROBE;
    struct oslot *s = NULL;
    for (uint32_t k = 0; k < probe; k++) {
        struct oslot *c = &o->s[(home + k) & o->mask];
        if (c->conn == conn) {
            s = c;
            break;
        }
        if (s == NULL && idle(c))
            s = c;
    }
    if (s == NULL)
        return t; /* every slot near home is busy with another connection */
    if (s->conn != conn) {
        assert(idle(s));
        s->conn = conn;
        s->next_in = s->next_out = 0;
    }
    t.slot = (uint32_t)(s - o->s);
    t.ticket = s->next_in++;
    s->inflight++;
    return t;
}

/* pop_head passes the slot's first parked item on and frees it. */
static void pop_head(order *o, struct oslot *s, order_emit emit, void *ctx)
{
    struct parked *p = s->head;
    s->head = p->next;
    s->nparked--;
    o->parked--;
    if (p->has_item)
        emit(ctx, p->item);
    free(p);
}

static void drain(order *o, struct oslot *s, order_emit emit, void *ctx)
{
    while (s->head != NULL && s->head->ticket == s->next_out) {
        pop_head(o, s, emit, ctx);
        s->next_out++;
    }
}

void order_done(order *o, order_tag tag, void *item, order_emit emit, void *ctx)
{
    if (tag.slot == ORDER_NONE) {
        if (item != NULL)
            emit(ctx, item);
        return;
    }
    struct oslot *s = &o->s[tag.slot];
    assert(s->inflight > 0 && tag.ticket < s->next_in);
    s->inflight--;
    if (tag.ticket < s->next_out) { /* its place was given up (overflow): it goes on late */
        if (item != NULL)
            emit(ctx, item);
        return;
    }
    if (tag.ticket > s->next_out) {
        struct parked *p = NULL;
        if (o->parked < o->max_parked)
            p = malloc(sizeof *p + o->item_size);
        if (p != NULL) {
            p->ticket = tag.ticket;
            p->has_item = item != NULL;
            if (item != NULL)
                memcpy(p->item, item, o->item_size);
            struct parked **at = &s->head;
            while (*at != NULL && (*at)->ticket < tag.ticket)
                at = &(*at)->next;
            p->next = *at;
            *at = p;
            s->nparked++;
            o->parked++;
            return;
        }
        /* Too many parked (or no memory): give up this connection's order up to here
         * rather than hold its frames for a frame that may be long in coming. */
        o->overflows++;
        while (s->head != NULL && s->head->ticket < tag.ticket)
            pop_head(o, s, emit, ctx);
        s->next_out = tag.ticket;
    }
    if (item != NULL)
        emit(ctx, item);
    s->next_out++;
    drain(o, s, emit, ctx);
}

uint32_t order_parked(const order *o)
{
    return o->parked;
}

uint64_t order_overflows(const order *o)
{
    return o->overflows;
}
