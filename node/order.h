/*
 * order.h - per-connection in-order hand-off of verified peer frames.
 *
 * The verify workers check frames in parallel and finish them in any order; frames from one
 * connection must still reach the core in the order they arrived on it. PBFT's protocol
 * messages do not care (the core takes them in any order), but a backup forwards a client's
 * transactions to the primary as REQUESTs on one connection, and the primary proposes them
 * in the order the core admits them: transfers k and k+1 of one account swapped fail k+1
 * with bad_nonce, and every later one with it (docs/security.md, finding 16).
 *
 * The arriving side takes a ticket per frame (order_arrive); the finishing side reports
 * each ticket once, with the item to pass on or NULL for a frame it dropped (order_done).
 * An item goes on once every earlier ticket of its connection is reported; until then it is
 * parked. Ordering is best effort, bounded in memory and never blocks for good:
 *   - a connection without a slot (0, or no free slot within the probe window) is
 *     unordered: its items go on as they finish;
 *   - when max_parked items are parked, the finishing connection's parked items and the new
 *     one go on at once, and its earlier tickets still out go on as they finish.
 * Not thread-safe: the caller serialises every call (node.c holds its queue mutex).
 */
#ifndef PBFT_NODE_ORDER_H
#define PBFT_NODE_ORDER_H

#include <stddef.h>
#include <stdint.h>

#define ORDER_NONE UINT32_MAX /* order_tag.slot of an unordered frame */
#define ORDER_PROBE 16        /* slots looked at from a connection's home slot */

typedef struct order order;

typedef struct {
    uint32_t slot;   /* ORDER_NONE: unordered */
    uint64_t ticket; /* position on its connection */
} order_tag;

/* order_emit receives an item that may go on now, in order; ctx is order_done's. */
typedef void (*order_emit)(void *ctx, void *item);

/* order_new: `slots` connections tracked at once (a power of two), at most `max_parked`
 * items parked, each `item_size` bytes (copied when parked). NULL when out of memory. */
order *order_new(uint32_t slots, uint32_t max_parked, size_t item_size);
/* order_free frees o; each item still parked is passed to release first (if not NULL). */
void order_free(order *o, void (*release)(void *item));

/* order_arrive gives a frame from conn its tag. Every tag must be reported to order_done
 * exactly once. */
order_tag order_arrive(order *o, uint32_t conn);

/* order_done reports tag's frame finished: item is what goes on (NULL: the frame was
 * dropped). Calls emit for every item that may go on now, this one included, in order. */
void order_done(order *o, order_tag tag, void *item, order_emit emit, void *ctx);

/* Statistics: items parked now, and the times ordering was given up (cap reached). */
uint32_t order_parked(const order *o);
uint64_t order_overflows(const order *o);

#endif
