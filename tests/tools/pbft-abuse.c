/*
 * pbft-abuse.c - a hostile peer, for testing: connects to a replica's p2p address as another
 * replica does and sends what an honest replica never would. Used by
 * tests/integration/peer_abuse.sh; `pbft-abuse --help` describes the modes.
 *
 * A replica's PULL listener speaks nng's SP protocol over TCP: an 8-byte handshake
 * (0, 'S', 'P', 0, the protocol id, 0, 0; a PUSH peer says 0x50, the PULL listener 0x51),
 * then one frame per message, each after a 64-bit big-endian length. Every connection here
 * says it is a PUSH socket and then writes exactly what nng's PUSH socket would: the bytes
 * on the wire are a replica's. It is written out with plain sockets rather than nng's own
 * PUSH socket for two reasons: it can announce a length nng would not send in one piece,
 * and nng 1.5's PUSH side can crash when its peer closes a connection as it starts (nng
 * issue #1653), which the replica's nng does on every oversized frame.
 *
 * Every connection has its own thread (so --conns N gives N TCP connections, each
 * reconnected 10 ms after the replica closes it). Writes block until the kernel takes the
 * frame (so rate 0 is as fast as the replica reads), with a 200 ms timeout so the run ends
 * on time. Signed frames are built with consensus/msg.h and a key derived from --seed, which
 * no genesis lists; they are pre-built into pools before the clock starts, so the sending
 * rate is not limited by signing. The summary is one JSON line on stdout.
 */
#include <errno.h>
#include <netdb.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <pthread.h>

#include "consensus/msg.h"
#include "crypto/keys.h"

#define MAX_CONNS 256
#define SIGNED_POOL 2048        /* distinct signed frames per kind */
#define GARBAGE_POOL (4u << 20) /* random bytes that garbage frames are cut from */
#define GARBAGE_MAX_DEFAULT (1u << 20)

/* all rotates over the first M_ROTATE modes; partial is only ever asked for by name. */
enum { M_GARBAGE, M_OVERSIZED, M_UNKNOWN_KEY, M_FLOOD, M_PARTIAL, M__COUNT, M_ALL = M__COUNT };
#define M_ROTATE 4
static const char *const mode_names[] = {"garbage", "oversized", "unknown-key",
                                         "flood",   "partial",   "all"};

/* Options. */
static const char *target;
static int mode = M_ALL;
static double duration_s = 10;
static double rate; /* frames/s over all connections; 0 = as fast as the replica reads */
static unsigned conns = 1;
static const char *chain_id = "pbft-local"; /* the target's: pass --chain-id */
static uint64_t seed = 1;
static uint32_t max_msg = 33554432; /* the target's p2p.max_msg_bytes */
static unsigned nval = 4;           /* validators in the target's genesis */
static unsigned slice_ms = 1000;    /* mode all: how long each mode lasts */
static size_t garbage_max = GARBAGE_MAX_DEFAULT;

/* Shared, read-only once the threads start. */
static uint8_t chain[32];
static uint8_t pk[32], sk[64];
static uint8_t *garbage;
struct frame {
    uint8_t *p;
    size_t n;
};
/* unknown-key: PREPARE, COMMIT, CHECKPOINT, VIEW-CHANGE with in- and out-of-range sender
 * ids; flood: small in-range votes, the most expensive to refuse (a signature check each). */
static struct frame *pool_unknown, *pool_flood;
static size_t n_unknown, n_flood;
static size_t over_sizes[3];
static size_t n_over;

static struct timespec t0;
static atomic_int stop_flag;

/* Statistics. */
struct counts {
    atomic_ullong frames, bytes, hangups, timeouts, errors;
};
static struct counts by_mode[M__COUNT];
static atomic_ullong connected, connect_failed;
static struct addrinfo *target_ai;

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0.tv_sec) + (double)(t.tv_nsec - t0.tv_nsec) / 1e9;
}

static void sleep_s(double s)
{
    if (s <= 0)
        return;
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

static void die(const char *fmt, const char *arg)
{
    fprintf(stderr, "pbft-abuse: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n");
    exit(2);
}

/* xorshift64*: reproducible from --seed. */
static uint64_t rnd(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

static uint64_t rnd_below(uint64_t *s, uint64_t n)
{
    return n == 0 ? 0 : rnd(s) % n;
}

static void on_stop(int sig)
{
    (void)sig;
    atomic_store(&stop_flag, 1);
}

/* ---------------------------------------------------------------------------------------
 * nng's SP protocol over TCP, PUSH side.
 * -------------------------------------------------------------------------------------*/

/* sp_connect connects and handshakes as a PUSH peer; returns the socket or -1. */
static int sp_connect(void)
{
    int fd = socket(target_ai->ai_family, target_ai->ai_socktype, target_ai->ai_protocol);
    if (fd < 0)
        return -1;
    struct timeval tv = {0, 200000};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    static const uint8_t hello[8] = {0, 'S', 'P', 0, 0x00, 0x50, 0, 0};
    uint8_t peer[8];
    size_t got = 0;
    if (connect(fd, target_ai->ai_addr, target_ai->ai_addrlen) != 0 ||
        send(fd, hello, sizeof hello, MSG_NOSIGNAL) != (ssize_t)sizeof hello)
        goto fail;
    while (got < sizeof peer) {
        ssize_t k = recv(fd, peer + got, sizeof peer - got, 0);
        if (k <= 0)
            goto fail;
        got += (size_t)k;
    }
    if (peer[0] != 0 || peer[1] != 'S' || peer[2] != 'P' || peer[3] != 0 || peer[4] != 0x00 ||
        peer[5] != 0x51) /* a PULL socket */
        goto fail;
    atomic_fetch_add(&connected, 1);
    return fd;
fail:
    close(fd);
    atomic_fetch_add(&connect_failed, 1);
    return -1;
}

/* sp_send writes one frame: the length (which may differ from n: an oversized frame
 * announces more than it sends before the replica hangs up), then the bytes. Returns 0, or
 * an errno value (EAGAIN: the 200 ms write timeout). */
static int sp_send(int fd, uint64_t announce, const uint8_t *p, size_t n)
{
    uint8_t hdr[8];
    for (int i = 0; i < 8; i++)
        hdr[i] = (uint8_t)(announce >> (56 - 8 * i));
    struct iovec iov[2] = {{hdr, sizeof hdr}, {(void *)(uintptr_t)p, n}};
    struct msghdr mh;
    memset(&mh, 0, sizeof mh);
    mh.msg_iov = iov;
    mh.msg_iovlen = n > 0 ? 2 : 1;
    while (mh.msg_iovlen > 0) {
        ssize_t k = sendmsg(fd, &mh, MSG_NOSIGNAL);
        if (k < 0) {
            if (errno == EINTR && !atomic_load(&stop_flag))
                continue;
            return errno == EWOULDBLOCK ? EAGAIN : errno;
        }
        size_t left = (size_t)k;
        while (mh.msg_iovlen > 0 && left >= mh.msg_iov[0].iov_len) {
            left -= mh.msg_iov[0].iov_len;
            mh.msg_iov++;
            mh.msg_iovlen--;
        }
        if (mh.msg_iovlen > 0) {
            mh.msg_iov[0].iov_base = (uint8_t *)mh.msg_iov[0].iov_base + left;
            mh.msg_iov[0].iov_len -= left;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------
 * Frame pools.
 * -------------------------------------------------------------------------------------*/

static struct frame take(pbft_wbuf *w)
{
    if (w->err != PBFT_OK)
        die("encoding failed: %s", pbft_strerror(w->err));
    struct frame f = {malloc(w->len), w->len};
    if (f.p == NULL)
        die("%s", "out of memory");
    memcpy(f.p, w->p, w->len);
    pbft_wbuf_reset(w);
    return f;
}

static void rnd_digest(uint64_t *s, pbft_digest *d)
{
    for (int i = 0; i < 32; i += 8) {
        uint64_t x = rnd(s);
        memcpy(d->b + i, &x, 8);
    }
}

/* sender_id: half in range (a real validator's id, so the replica must check the
 * signature), half out of range (n..PBFT_MAX_N-1 and beyond, up to 65535). */
static uint16_t sender_id(uint64_t *s, bool in_range)
{
    if (in_range)
        return (uint16_t)rnd_below(s, nval);
    return (uint16_t)(rnd_below(s, 2) ? nval + rnd_below(s, PBFT_MAX_N - nval + 1)
                                      : nval + rnd_below(s, 65536u - nval));
}

static struct frame unknown_frame(pbft_wbuf *w, uint64_t *s, size_t i, uint16_t from)
{
    pbft_wbuf inner;
    pbft_wbuf_init(&inner, 1u << 20);
    uint64_t view = rnd_below(s, 4), seq = 1 + rnd_below(s, 512);
    switch (i % 4) {
    case 0:
    case 1: {
        pbft_vote v = {view, seq, {{0}}};
        rnd_digest(s, &v.d);
        pbft_put_vote_msg(w, i % 4 == 0 ? PBFT_MSG_PREPARE : PBFT_MSG_COMMIT, from, &v, chain, sk);
        break;
    }
    case 2: {
        pbft_ckpt c = {64 * (1 + rnd_below(s, 8)), {{0}}};
        rnd_digest(s, &c.d);
        pbft_put_ckpt_msg(w, from, &c, chain, sk);
        break;
    }
    default: {
        /* VIEW-CHANGE with a checkpoint proof of signed CHECKPOINTs "from" validators 0.. */
        size_t start = pbft_msg_begin(w, PBFT_MSG_VIEWCHANGE, from);
        pbft_ckpt c = {64, {{0}}};
        rnd_digest(s, &c.d);
        pbft_put_u64(w, view + 1);
        pbft_put_u64(w, c.seq);
        pbft_put_bytes(w, c.d.b, 32);
        uint16_t k = (uint16_t)(nval < 3 ? nval : 3);
        pbft_put_u16(w, k);
        for (uint16_t j = 0; j < k; j++) {
            pbft_wbuf_reset(&inner);
            pbft_put_ckpt_msg(&inner, j, &c, chain, sk);
            pbft_put_elem(w, inner.p, inner.len);
        }
        pbft_put_u16(w, 0); /* no prepared certificates */
        pbft_msg_end(w, start, chain, sk);
        break;
    }
    }
    pbft_put_attach(w, NULL, 0);
    pbft_wbuf_free(&inner);
    return take(w);
}

static void build_pools(void)
{
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 7;
    garbage = malloc(GARBAGE_POOL);
    if (garbage == NULL)
        die("%s", "out of memory");
    for (size_t i = 0; i < GARBAGE_POOL; i += 8) {
        uint64_t x = rnd(&s);
        memcpy(garbage + i, &x, 8);
    }
    pbft_wbuf w;
    pbft_wbuf_init(&w, 1u << 20);
    pool_unknown = calloc(SIGNED_POOL, sizeof *pool_unknown);
    pool_flood = calloc(SIGNED_POOL, sizeof *pool_flood);
    if (pool_unknown == NULL || pool_flood == NULL)
        die("%s", "out of memory");
    if (mode == M_UNKNOWN_KEY || mode == M_ALL)
        for (n_unknown = 0; n_unknown < SIGNED_POOL; n_unknown++)
            pool_unknown[n_unknown] =
                unknown_frame(&w, &s, n_unknown, sender_id(&s, (n_unknown / 4) % 2 == 0));
    if (mode == M_FLOOD || mode == M_ALL)
        for (n_flood = 0; n_flood < SIGNED_POOL; n_flood++)
            pool_flood[n_flood] = unknown_frame(&w, &s, n_flood % 2, sender_id(&s, true));
    pbft_wbuf_free(&w);
    /* Oversized: one byte over, twice the limit, and the wire format's 64 MiB ceiling. */
    over_sizes[n_over++] = (size_t)max_msg + 1;
    over_sizes[n_over++] = 2 * (size_t)max_msg;
    if ((size_t)PBFT_MAX_MSG_BYTES > (size_t)max_msg + 1 &&
        (size_t)PBFT_MAX_MSG_BYTES != 2 * (size_t)max_msg)
        over_sizes[n_over++] = PBFT_MAX_MSG_BYTES;
}

/* garbage_frame: random bytes of a random size (log-uniform, 1 .. garbage_max), cut from
 * the pool into scratch. A quarter start like a real message header (version 1, a known
 * type, a body length that fits) so they get past the first bytes of the decoder. */
static size_t garbage_frame(uint64_t *s, uint8_t *scratch)
{
    unsigned bits = 0;
    while (((size_t)1 << bits) < garbage_max)
        bits++;
    size_t n = ((size_t)1 << rnd_below(s, bits + 1)) + rnd_below(s, 1u << 12);
    if (n > garbage_max)
        n = garbage_max;
    if (n == 0)
        n = 1;
    memcpy(scratch, garbage + rnd_below(s, GARBAGE_POOL - n + 1), n);
    if (n >= 8 && rnd_below(s, 4) == 0) {
        scratch[0] = PBFT_WIRE_VERSION;
        scratch[1] = (uint8_t)(1 + rnd_below(s, PBFT_MSG__MAX));
        uint32_t body = (uint32_t)rnd_below(s, n - 7);
        scratch[4] = (uint8_t)(body >> 24);
        scratch[5] = (uint8_t)(body >> 16);
        scratch[6] = (uint8_t)(body >> 8);
        scratch[7] = (uint8_t)body;
    }
    return n;
}

/* send_oversized announces a frame over the replica's limit and writes its (zero) bytes
 * until they are all written or the replica hangs up, which it does at the length prefix.
 * *sent is set once the prefix went out. */
static int send_oversized(int fd, uint64_t n, bool *sent)
{
    static const uint8_t zero[1u << 16];
    int rv = sp_send(fd, n, zero, 0);
    *sent = rv == 0;
    for (uint64_t done = 0; rv == 0 && done < n && !atomic_load(&stop_flag);) {
        size_t k = n - done < sizeof zero ? (size_t)(n - done) : sizeof zero;
        ssize_t w = send(fd, zero, k, MSG_NOSIGNAL);
        if (w < 0)
            rv = errno == EWOULDBLOCK ? EAGAIN : errno;
        else
            done += (uint64_t)w;
    }
    return rv;
}

/* ---------------------------------------------------------------------------------------
 * Senders.
 * -------------------------------------------------------------------------------------*/

struct conn {
    unsigned id;
    uint8_t *scratch; /* garbage_max bytes */
};

static void *conn_main(void *arg)
{
    struct conn *c = arg;
    uint64_t s = (seed + 1) * 0xD1B54A32D192ED03ull ^ ((uint64_t)c->id + 1) * 0x94D049BB133111EBull;
    if (s == 0)
        s = 1;
    double per = rate > 0 ? (double)conns / rate : 0; /* seconds between this thread's frames */
    double next = now_s(), retry_at = 0;
    int fd = -1;
    while (!atomic_load(&stop_flag)) {
        double t = now_s();
        if (t >= duration_s)
            break;
        if (fd < 0) {
            if (t < retry_at) {
                sleep_s(0.001);
                continue;
            }
            if ((fd = sp_connect()) < 0) {
                retry_at = now_s() + 0.01;
                continue;
            }
        }
        int m = mode;
        if (m == M_ALL)
            m = (int)(((uint64_t)(t * 1000.0) / slice_ms + c->id) % M_ROTATE);
        if (per > 0) {
            if (next > t)
                sleep_s(next - t > 0.2 ? 0.2 : next - t);
            if (now_s() < next)
                continue;
            next += per;
            if (next < now_s() - 1)
                next = now_s(); /* fell far behind (a reconnect): do not burst */
        }
        const uint8_t *p = NULL;
        size_t len = 0;
        int rv;
        bool sent;
        if (m == M_PARTIAL) {
            /* The largest frame allowed, all but its last byte, then nothing: the replica's
             * nng holds the bytes received until the frame completes or the peer leaves. */
            static const uint8_t ones[1u << 16] = {1};
            len = max_msg - 1u;
            rv = sp_send(fd, max_msg, ones, 0);
            for (size_t done = 0; rv == 0 && done < len && !atomic_load(&stop_flag);) {
                size_t k = len - done < sizeof ones ? len - done : sizeof ones;
                ssize_t w = send(fd, ones, k, MSG_NOSIGNAL);
                if (w < 0)
                    rv = errno == EWOULDBLOCK ? EAGAIN : errno;
                else
                    done += (size_t)w;
            }
            if (rv == 0) {
                atomic_fetch_add(&by_mode[m].frames, 1);
                atomic_fetch_add(&by_mode[m].bytes, len);
                while (!atomic_load(&stop_flag) && now_s() < duration_s)
                    sleep_s(0.05);
                break;
            }
        } else if (m == M_OVERSIZED) {
            len = over_sizes[rnd_below(&s, n_over)];
            rv = send_oversized(fd, len, &sent);
        } else {
            if (m == M_GARBAGE) {
                len = garbage_frame(&s, c->scratch);
                p = c->scratch;
            } else {
                const struct frame *f = m == M_UNKNOWN_KEY ? &pool_unknown[rnd_below(&s, n_unknown)]
                                                           : &pool_flood[rnd_below(&s, n_flood)];
                p = f->p;
                len = f->n;
            }
            rv = sp_send(fd, len, p, len);
            sent = rv == 0;
        }
        if (m != M_PARTIAL && sent) {
            atomic_fetch_add(&by_mode[m].frames, 1);
            atomic_fetch_add(&by_mode[m].bytes, len);
        }
        if (rv == 0)
            continue;
        /* A frame may be half written: the connection is unusable either way. */
        close(fd);
        fd = -1;
        retry_at = now_s() + 0.01;
        if (rv == EAGAIN)
            atomic_fetch_add(&by_mode[m].timeouts, 1);
        else if (rv == EPIPE || rv == ECONNRESET)
            atomic_fetch_add(&by_mode[m].hangups, 1);
        else
            atomic_fetch_add(&by_mode[m].errors, 1);
    }
    if (fd >= 0)
        close(fd);
    return NULL;
}

static void usage(void)
{
    puts("usage: pbft-abuse --target tcp://HOST:PORT [--mode MODE] [--duration S] [--rate R]\n"
         "                  [--conns C] [--chain-id ID] [--seed N] [--n N]\n"
         "                  [--max-msg-bytes B] [--garbage-max B] [--slice-ms MS]\n"
         "\n"
         "A hostile peer, for testing. Connects to a replica's p2p address as a replica\n"
         "does (nng's SP protocol over TCP, as a PUSH socket: the replica cannot tell it\n"
         "from a peer until it reads a frame) and sends, by --mode:\n"
         "  garbage      random bytes of random sizes (log-uniform up to --garbage-max,\n"
         "               default 1 MiB); a quarter start with a plausible header\n"
         "  oversized    frames over the replica's limit: --max-msg-bytes + 1, twice it,\n"
         "               and 64 MiB (the replica's nng hangs up at the length prefix)\n"
         "  unknown-key  well-formed PREPARE, COMMIT, CHECKPOINT and VIEW-CHANGE frames\n"
         "               correctly signed for --chain-id by a key derived from --seed that\n"
         "               no genesis lists, with sender ids in range (0..N-1) and beyond\n"
         "  flood        small signed PREPARE/COMMIT frames from that key with in-range\n"
         "               sender ids (each costs the replica a signature check), as fast\n"
         "               as the connection takes them unless --rate limits them\n"
         "  all          rotating over the four above (the default): every --slice-ms\n"
         "               (default 1000) each connection moves to the next mode, the\n"
         "               connections staggered\n"
         "  partial      each connection announces a frame of --max-msg-bytes, sends all\n"
         "               but its last byte and holds on: the replica keeps what it read\n"
         "               until the end (a known gap: docs/operations.md, Hostile peers)\n"
         "A connection the replica closes is reopened 10 ms later.\n"
         "\n"
         "  --target URL        the replica's p2p listen address (required)\n"
         "  --duration S        seconds to run (default 10); SIGINT/SIGTERM stop early\n"
         "  --rate R            frames per second over all connections; 0 (default) = max\n"
         "  --conns C           TCP connections, one sending thread each (default 1, max 256)\n"
         "  --chain-id ID       the target network's chain id, to sign for (default\n"
         "                      pbft-local; pbftd testnet picks a random one: pbft-cli status)\n"
         "  --seed N            the key and every random choice (default 1)\n"
         "  --n N               validators in the target's genesis (default 4)\n"
         "  --max-msg-bytes B   the target's p2p.max_msg_bytes (default 33554432)\n"
         "\n"
         "Prints one JSON line: frames and bytes written (in all and by mode; an oversized\n"
         "frame counts once its length prefix is written), connections (handshakes done,\n"
         "reconnections included), connect_failures, hangups (the replica closed the\n"
         "connection under a write), timeouts (a write blocked 200 ms: the connection is\n"
         "then reopened) and errors (any other write failure). Exit status 0, 2 on bad\n"
         "usage or if the target address does not resolve.");
}

static unsigned long long opt_num(const char *name, const char *v, unsigned long long lo,
                                  unsigned long long hi)
{
    char *end = NULL;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno != 0 || end == v || *end != 0 || x < lo || x > hi)
        die("%s: bad value (try --help)", name);
    return x;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage();
            return 0;
        }
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (v == NULL)
            die("%s needs a value (try --help)", a);
        i++;
        if (strcmp(a, "--target") == 0) {
            target = v;
        } else if (strcmp(a, "--mode") == 0) {
            int k = 0;
            while (k <= M_ALL && strcmp(mode_names[k], v) != 0)
                k++;
            if (k > M_ALL)
                die("--mode: unknown mode \"%s\" (garbage, oversized, unknown-key, flood, all)", v);
            mode = k;
        } else if (strcmp(a, "--duration") == 0) {
            char *end = NULL;
            duration_s = strtod(v, &end);
            if (end == v || *end != 0 || !(duration_s > 0) || duration_s > 86400)
                die("%s: bad value (try --help)", a);
        } else if (strcmp(a, "--rate") == 0) {
            char *end = NULL;
            rate = strtod(v, &end);
            if (end == v || *end != 0 || !(rate >= 0) || rate > 1e9)
                die("%s: bad value (try --help)", a);
        } else if (strcmp(a, "--conns") == 0) {
            conns = (unsigned)opt_num(a, v, 1, MAX_CONNS);
        } else if (strcmp(a, "--chain-id") == 0) {
            chain_id = v;
        } else if (strcmp(a, "--seed") == 0) {
            seed = opt_num(a, v, 0, UINT64_MAX);
        } else if (strcmp(a, "--n") == 0) {
            nval = (unsigned)opt_num(a, v, 1, PBFT_MAX_N);
        } else if (strcmp(a, "--max-msg-bytes") == 0) {
            max_msg = (uint32_t)opt_num(a, v, 1, PBFT_MAX_MSG_BYTES);
        } else if (strcmp(a, "--garbage-max") == 0) {
            garbage_max = (size_t)opt_num(a, v, 1, GARBAGE_POOL);
        } else if (strcmp(a, "--slice-ms") == 0) {
            slice_ms = (unsigned)opt_num(a, v, 1, 3600000);
        } else {
            die("unknown option %s (try --help)", a);
        }
    }
    if (target == NULL)
        die("%s", "--target URL is required (try --help)");
    if (keys_init() != KEYS_OK)
        die("%s", "libsodium failed to initialise");
    keys_sha256((const uint8_t *)chain_id, strlen(chain_id), chain);
    uint8_t kseed[32];
    keys_sha256((const uint8_t *)&seed, sizeof seed, kseed);
    keys_from_seed(kseed, pk, sk);
    /* The handlers come before the pools: building them signs many frames, which at nice 19
     * on a busy machine took longer than a test phase, and a SIGTERM then killed the tool
     * (status 143) instead of stopping it. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    build_pools();

    char host[256], port[16];
    const char *hp = strncmp(target, "tcp://", 6) == 0 ? target + 6 : NULL;
    const char *colon = hp != NULL ? strrchr(hp, ':') : NULL;
    if (colon == NULL || colon == hp || (size_t)(colon - hp) >= sizeof host ||
        strlen(colon + 1) == 0 || strlen(colon + 1) >= sizeof port)
        die("--target: expected tcp://HOST:PORT, got \"%s\"", target);
    memcpy(host, hp, (size_t)(colon - hp));
    host[colon - hp] = 0;
    snprintf(port, sizeof port, "%s", colon + 1);
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, port, &hints, &target_ai) != 0)
        die("--target: cannot resolve \"%s\"", target);

    static struct conn cs[MAX_CONNS];
    pthread_t th[MAX_CONNS];
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (unsigned i = 0; i < conns; i++) {
        cs[i].id = i;
        if ((cs[i].scratch = malloc(garbage_max)) == NULL)
            die("%s", "out of memory");
        if (pthread_create(&th[i], NULL, conn_main, &cs[i]) != 0)
            die("%s", "cannot start a thread");
    }
    /* For tests: from here on it is sending (peer_abuse.sh waits for this line). */
    fprintf(stderr, "pbft-abuse: ready, %u connections to %s\n", conns, target);
    for (unsigned i = 0; i < conns; i++)
        pthread_join(th[i], NULL);
    double el = now_s();

    unsigned long long tf = 0, tb = 0, th_ = 0, tt = 0, te = 0;
    char per[1024];
    size_t off = 0;
    for (int m = 0; m < M__COUNT; m++) {
        unsigned long long f = atomic_load(&by_mode[m].frames), b = atomic_load(&by_mode[m].bytes),
                           h = atomic_load(&by_mode[m].hangups),
                           t = atomic_load(&by_mode[m].timeouts),
                           e = atomic_load(&by_mode[m].errors);
        tf += f;
        tb += b;
        th_ += h;
        tt += t;
        te += e;
        int k = snprintf(per + off, sizeof per - off,
                         "%s\"%s\":{\"frames\":%llu,\"bytes\":%llu,\"hangups\":%llu,"
                         "\"timeouts\":%llu,\"errors\":%llu}",
                         m ? "," : "", mode_names[m], f, b, h, t, e);
        if (k > 0 && (size_t)k < sizeof per - off)
            off += (size_t)k;
    }
    char pkh[65];
    keys_hex_encode(pk, 32, pkh);
    printf("{\"tool\":\"pbft-abuse\",\"target\":\"%s\",\"mode\":\"%s\",\"seconds\":%.2f,"
           "\"conns\":%u,\"rate_limit\":%.0f,\"frames\":%llu,\"bytes\":%llu,"
           "\"frames_per_s\":%.0f,\"connections\":%llu,\"connect_failures\":%llu,"
           "\"hangups\":%llu,\"timeouts\":%llu,\"errors\":%llu,\"key\":\"%s\","
           "\"by_mode\":{%s}}\n",
           target, mode_names[mode], el, conns, rate, tf, tb, el > 0 ? (double)tf / el : 0,
           atomic_load(&connected), atomic_load(&connect_failed), th_, tt, te, pkh, per);
    fflush(stdout);
    _exit(0);
}
