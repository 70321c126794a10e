/*
 * transport.c - nng PUSH/PULL mesh between replicas (see transport.h).
 */
#include "node/transport.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nng/nng.h>
#include <nng/protocol/pipeline0/pull.h>
#include <nng/protocol/pipeline0/push.h>

struct peer {
    nng_socket sock;
    bool open;
    transport_peer_stats st;
};

struct transport {
    transport_config c;
    nng_socket pull;
    nng_listener listener;
    bool pull_open;
    nng_aio *aio;
    struct peer peers[PBFT_MAX_N];
    uint64_t received;
};

static void on_pipe(nng_pipe p, nng_pipe_ev ev, void *arg)
{
    (void)p;
    struct peer *pe = arg; /* counters are atomics: pipe callbacks run on nng threads */
    if (ev == NNG_PIPE_EV_ADD_POST)
        __atomic_add_fetch(&pe->st.connected, 1, __ATOMIC_RELAXED);
    else if (ev == NNG_PIPE_EV_REM_POST)
        __atomic_sub_fetch(&pe->st.connected, 1, __ATOMIC_RELAXED);
}

static void recv_cb(void *arg)
{
    transport *t = arg;
    int rv = nng_aio_result(t->aio);
    if (rv == NNG_ECLOSED || rv == NNG_ECANCELED)
        return;
    if (rv == 0) {
        nng_msg *m = nng_aio_get_msg(t->aio);
        __atomic_add_fetch(&t->received, 1, __ATOMIC_RELAXED);
        int conn = nng_pipe_id(nng_msg_get_pipe(m));
        t->c.on_recv(t->c.ctx, conn > 0 ? (uint32_t)conn : 0, nng_msg_body(m), nng_msg_len(m));
        nng_msg_free(m);
    }
    nng_recv_aio(t->pull, t->aio);
}

int transport_open(const transport_config *c, transport **out, char *err, size_t errlen)
{
    *out = NULL;
    transport *t = calloc(1, sizeof *t);
    if (t == NULL) {
        snprintf(err, errlen, "transport: out of memory");
        return -1;
    }
    t->c = *c;
    int rv;
    if ((rv = nng_pull0_open(&t->pull)) != 0) {
        snprintf(err, errlen, "transport: nng_pull0_open: %s", nng_strerror(rv));
        goto fail;
    }
    t->pull_open = true;
    nng_socket_set_size(t->pull, NNG_OPT_RECVMAXSZ, c->max_msg_bytes);
    nng_socket_set_int(t->pull, NNG_OPT_RECVBUF, 1024);
    if ((rv = nng_listen(t->pull, c->listen, &t->listener, 0)) != 0) {
        snprintf(err, errlen, "transport: cannot listen on %s: %s", c->listen, nng_strerror(rv));
        goto fail;
    }
    int q = c->send_queue > 8192 ? 8192 : (int)c->send_queue;
    for (uint16_t i = 0; i < c->n; i++) {
        if (i == c->self)
            continue;
        struct peer *pe = &t->peers[i];
        if ((rv = nng_push0_open(&pe->sock)) != 0) {
            snprintf(err, errlen, "transport: nng_push0_open: %s", nng_strerror(rv));
            goto fail;
        }
        pe->open = true;
        nng_socket_set_int(pe->sock, NNG_OPT_SENDBUF, q);
        nng_socket_set_ms(pe->sock, NNG_OPT_RECONNMINT, 100);
        nng_socket_set_ms(pe->sock, NNG_OPT_RECONNMAXT, 2000);
        nng_pipe_notify(pe->sock, NNG_PIPE_EV_ADD_POST, on_pipe, pe);
        nng_pipe_notify(pe->sock, NNG_PIPE_EV_REM_POST, on_pipe, pe);
        /* Non-blocking dial: the peer may not be up yet; nng keeps trying. */
        if ((rv = nng_dial(pe->sock, c->peers[i], NULL, NNG_FLAG_NONBLOCK)) != 0) {
            snprintf(err, errlen, "transport: cannot dial %s: %s", c->peers[i], nng_strerror(rv));
            goto fail;
        }
        if (c->twin[i] != NULL &&
            (rv = nng_dial(pe->sock, c->twin[i], NULL, NNG_FLAG_NONBLOCK)) != 0) {
            snprintf(err, errlen, "transport: cannot dial %s: %s", c->twin[i], nng_strerror(rv));
            goto fail;
        }
    }
    if ((rv = nng_aio_alloc(&t->aio, recv_cb, t)) != 0) {
        snprintf(err, errlen, "transport: nng_aio_alloc: %s", nng_strerror(rv));
        goto fail;
    }
    nng_recv_aio(t->pull, t->aio);
    *out = t;
    return 0;
fail:
    transport_close(t);
    return -1;
}

void transport_close(transport *t)
{
    if (t == NULL)
        return;
    if (t->aio != NULL)
        nng_aio_stop(t->aio); /* waits for a running callback to finish */
    if (t->pull_open)
        nng_close(t->pull);
    for (uint16_t i = 0; i < PBFT_MAX_N; i++)
        if (t->peers[i].open)
            nng_close(t->peers[i].sock);
    if (t->aio != NULL)
        nng_aio_free(t->aio);
    free(t);
}

int transport_send(transport *t, uint16_t to, const uint8_t *p, size_t n)
{
    if (to >= t->c.n || to == t->c.self || !t->peers[to].open)
        return -1;
    struct peer *pe = &t->peers[to];
    if (n > t->c.max_msg_bytes) {
        __atomic_add_fetch(&pe->st.dropped_large, 1, __ATOMIC_RELAXED);
        return -1;
    }
    nng_msg *m;
    if (nng_msg_alloc(&m, n) != 0) {
        __atomic_add_fetch(&pe->st.dropped_full, 1, __ATOMIC_RELAXED);
        return -1;
    }
    memcpy(nng_msg_body(m), p, n);
    if (nng_sendmsg(pe->sock, m, NNG_FLAG_NONBLOCK) != 0) {
        nng_msg_free(m);
        __atomic_add_fetch(&pe->st.dropped_full, 1, __ATOMIC_RELAXED);
        return -1;
    }
    __atomic_add_fetch(&pe->st.sent, 1, __ATOMIC_RELAXED);
    return 0;
}

void transport_peer_stats_get(transport *t, uint16_t peer, transport_peer_stats *out)
{
    memset(out, 0, sizeof *out);
    if (peer >= t->c.n)
        return;
    struct peer *pe = &t->peers[peer];
    out->sent = __atomic_load_n(&pe->st.sent, __ATOMIC_RELAXED);
    out->dropped_full = __atomic_load_n(&pe->st.dropped_full, __ATOMIC_RELAXED);
    out->dropped_large = __atomic_load_n(&pe->st.dropped_large, __ATOMIC_RELAXED);
    out->connected = __atomic_load_n(&pe->st.connected, __ATOMIC_RELAXED);
    out->received = __atomic_load_n(&t->received, __ATOMIC_RELAXED);
}

static uint64_t stat_u64(nng_stat *parent, const char *name)
{
    nng_stat *s = parent != NULL ? nng_stat_find(parent, name) : NULL;
    return s != NULL ? nng_stat_value(s) : 0;
}

void transport_listen_stats_get(transport *t, transport_listen_stats *out)
{
    memset(out, 0, sizeof *out);
    nng_stat *root;
    if (t == NULL || nng_stats_get(&root) != 0)
        return;
    nng_stat *l = nng_stat_find_listener(root, t->listener);
    out->accepted = stat_u64(l, "accept");
    out->rx_errors = stat_u64(l, "other");
    nng_stats_free(root);
}
