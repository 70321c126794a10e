/*
 * transport.h - replica-to-replica messaging over nng on TCP.
 *
 * Each replica listens with one PULL socket at its genesis p2p address and dials every peer
 * with its own PUSH socket. nng reconnects a dialer by itself (backing off from 100 ms to
 * 2 s), so a restarted peer is reached again without our help. Per-peer sends are queued in
 * the PUSH socket's buffer, bounded by send_queue frames; a send that finds it full is
 * dropped and counted (PBFT retransmits what matters). Frames larger than max_msg_bytes are
 * refused on both sides: the PULL socket closes a connection that announces a bigger one.
 *
 * The transport does not authenticate: every frame carries its sender's signature, which the
 * node verifies before the core sees it.
 *
 * Prefix: transport_.
 */
#ifndef PBFT_NODE_TRANSPORT_H
#define PBFT_NODE_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>

#include "consensus/msg.h"

typedef struct transport transport;

/* Called on an nng thread for every frame received; p/n are valid only during the call.
 * conn identifies the connection it came on (nonzero while it lasts; anyone can connect). */
typedef void (*transport_recv_fn)(void *ctx, uint32_t conn, const uint8_t *p, size_t n);

typedef struct {
    const char *listen;            /* tcp://host:port to listen on */
    const char *peers[PBFT_MAX_N]; /* tcp://host:port of every replica (self ignored) */
    const char *twin[PBFT_MAX_N];  /* testing only: a second address dialled for a replica
                                      (its twin); frames to it go to one or the other */
    uint16_t n;
    uint16_t self;
    uint32_t max_msg_bytes;
    uint32_t send_queue; /* frames buffered per peer (nng allows 0..8192) */
    transport_recv_fn on_recv;
    void *ctx;
} transport_config;

typedef struct {
    uint64_t sent;
    uint64_t dropped_full;  /* peer's queue was full */
    uint64_t dropped_large; /* over max_msg_bytes */
    uint64_t received;
    uint32_t connected; /* connections currently up to this peer (0 or 1 normally) */
} transport_peer_stats;

int transport_open(const transport_config *c, transport **out, char *err, size_t errlen);
/* transport_close stops receiving (no callback runs after it returns) and closes sockets. */
void transport_close(transport *t);

/* transport_send queues a copy of the frame for peer `to` without blocking. Returns 0, or -1
 * if it was dropped (queue full, too large, or `to` invalid); drops are counted. */
int transport_send(transport *t, uint16_t to, const uint8_t *p, size_t n);

/* transport_peer_stats copies a peer's counters (thread-safe). */
void transport_peer_stats_get(transport *t, uint16_t peer, transport_peer_stats *out);

/* What nng's statistics say about the listener (inbound connections, from anyone). A frame
 * over max_msg_bytes never reaches on_recv: nng reads its length prefix, closes the
 * connection and counts a receive error (its listener statistic "other", where it also
 * counts a frame cut short by its sender's close). Zeros if nng keeps no statistics. */
typedef struct {
    uint64_t accepted;  /* connections accepted */
    uint64_t rx_errors; /* connections closed on an oversized (or truncated) frame */
} transport_listen_stats;
void transport_listen_stats_get(transport *t, transport_listen_stats *out);

#endif
