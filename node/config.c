/*
 * config.c - config.toml (a TOML subset, parsed here) and genesis.json (jansson).
 *
 * See config.h for the contract. Two rules shape everything below:
 *   - every error names the file, and the line and key (config.toml) or the JSON path
 *     (genesis.json), because an operator fixing a cluster needs to find the mistake fast;
 *   - nothing is silently truncated, clamped or defaulted: a value that does not fit is an
 *     error, so the node never runs with a setting other than the one written down.
 * The writers validate with the same rules as the readers, so whatever they write reads back.
 *
 * Ranges of config.toml (also written as comments by config_write):
 *   key                      default                  range
 *   node.moniker             "node"                   1..63 bytes
 *   node.key_file            "config/node_key.json"   1..511 bytes
 *   node.data_dir            "data"                   1..511 bytes
 *   node.min_free_mb         512                      0..1048576 (0: no check)
 *   p2p.listen               "tcp://127.0.0.1:26600"  tcp://host:port, port 1..65535
 *   p2p.max_msg_bytes        33554432 (32 MiB)        1024..67108864 (PBFT_MAX_MSG_BYTES)
 *   p2p.send_queue           1024                     1..1048576
 *   p2p.verify_workers       2                        1..64
 *   p2p.twin_dial            "none"                   none | ID=tcp://host:port[,...] (testing)
 *   p2p.peer_override        "none"                   none | ID=tcp://host:port[,...] (testing)
 *   rpc.listen               "http://127.0.0.1:26700" http://host:port, port 1..65535
 *   rpc.max_body_bytes       1048576 (1 MiB)          1024..67108864
 *   rpc.max_batch            100                      1..10000
 *   rpc.max_connections      256                      1..65536
 *   rpc.commit_timeout_ms    10000                    1..3600000
 *   rpc.body_timeout_ms      10000                    100..3600000
 *   mempool.max_txs          20000                    1..16777216 (pbft max_pending_txs cap)
 *   mempool.max_bytes        67108864 (64 MiB)        8192 (PBFT_MAX_TX_BYTES)..4294967295
 *   log.level                "info"                   debug | info | warn | error
 *   log.event_log            "data/events.jsonl"      1..511 bytes
 *   log.event_log_max_bytes  67108864 (64 MiB)        4096..4294967295
 *   log.msg_log              "none"                   none | 1..511 bytes (audits, tests)
 *   byzantine.mode           "honest"                 1..31 bytes (the node checks the name)
 *   byzantine.delay_ms       1500                     0..3600000
 *   byzantine.percent        50                       0..100
 *   byzantine.options        "none"                   1..199 bytes (the node checks them)
 */
#include "node/config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "crypto/keys.h"

#if defined(__GNUC__)
#define CONFIG_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define CONFIG_PRINTF(f, a)
#endif

/* Bounds on the input: a real config.toml is a few KiB; these stop a wrong path (a log, a
 * device) from making us read or buffer without limit. */
#define TOML_MAX_LINE 4096
#define TOML_MAX_FILE (1u << 20)

/* Room for one "why" message (the part after "<path>:<line>: <key>: "). */
#define WHY_MAX 512

/* Longest piece of offending input quoted back in a message. */
#define QUOTE_MAX 64

/* ---- small helpers ---------------------------------------------------------------------- */

static void set_err(char *err, size_t errlen, const char *fmt, ...) CONFIG_PRINTF(3, 4);

/* set_err formats a message into err when the caller asked for one; always truncates safely. */
static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (err == NULL || errlen == 0) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* ASCII classes, locale-independent on purpose: the file format must not change meaning
 * with LC_CTYPE. */
static bool is_digit(char ch)
{
    return ch >= '0' && ch <= '9';
}

static bool is_alpha(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z');
}

static bool is_ident(char ch)
{
    return is_alpha(ch) || is_digit(ch) || ch == '_';
}

static bool is_hex(char ch)
{
    return is_digit(ch) || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F');
}

/* quote_len caps how much of an offending token goes into a message. */
static int quote_len(size_t n)
{
    return (int)(n > QUOTE_MAX ? QUOTE_MAX : n);
}

/* read_all reads up to n bytes, retrying short reads and EINTR. Returns the count or -1. */
static ssize_t read_all(int fd, char *p, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, p + got, n - got);
        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -1;
        }
        if (r == 0) {
            break;
        }
        got += (size_t)r;
    }
    return (ssize_t)got;
}

/* read_file reads all of path into a fresh NUL-terminated heap buffer. It refuses anything
 * but a regular file and anything over max bytes, checked with fstat before allocating so a
 * huge file costs nothing, and again while reading in case the file grew meanwhile. */
static int read_file(const char *path, size_t max, char **out, size_t *outlen, char *err,
                     size_t errlen)
{
    *out = NULL;
    *outlen = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        set_err(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    /* fstat on the open descriptor, not stat on the path, so the file checked is the file read. */
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        (void)close(fd);
        set_err(err, errlen, "%s: cannot stat: %s", path, strerror(e));
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        (void)close(fd);
        set_err(err, errlen, "%s: not a regular file", path);
        return -1;
    }
    if (st.st_size < 0 || (uintmax_t)st.st_size > max) {
        (void)close(fd);
        set_err(err, errlen, "%s: file is too large: %jd bytes (at most %zu)", path,
                (intmax_t)st.st_size, max);
        return -1;
    }
    size_t size = (size_t)st.st_size;
    char *buf = malloc(size + 1);
    if (buf == NULL) {
        (void)close(fd);
        set_err(err, errlen, "%s: out of memory", path);
        return -1;
    }
    ssize_t got = read_all(fd, buf, size);
    char probe;
    ssize_t more = got < 0 ? -1 : read_all(fd, &probe, 1);
    int e = errno;
    (void)close(fd);
    if (got < 0 || more < 0) {
        free(buf);
        set_err(err, errlen, "%s: cannot read: %s", path, strerror(e));
        return -1;
    }
    if (more > 0) {
        free(buf);
        set_err(err, errlen, "%s: file changed while being read", path);
        return -1;
    }
    buf[(size_t)got] = '\0';
    *out = buf;
    *outlen = (size_t)got;
    return 0;
}

/* write_all writes n bytes, retrying short writes and EINTR. Returns 0 or -1 with errno set. */
static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -1;
        }
        p += w;
        n -= (size_t)w; /* 0 <= w <= n */
    }
    return 0;
}

/* write_file_atomic replaces path with buf: written to path.tmp, fsynced, renamed over path,
 * then the directory fsynced. A crash at any point leaves either the old file or the new
 * one, never a torn config that would stop the node from starting. */
static int write_file_atomic(const char *path, const char *buf, size_t len, char *err,
                             size_t errlen)
{
    size_t pl = strlen(path);
    char *tmp = malloc(pl + sizeof ".tmp");
    char *dir_copy = malloc(pl + 1);
    if (tmp == NULL || dir_copy == NULL) {
        free(tmp);
        free(dir_copy);
        set_err(err, errlen, "%s: out of memory", path);
        return -1;
    }
    memcpy(tmp, path, pl);
    memcpy(tmp + pl, ".tmp", sizeof ".tmp");
    memcpy(dir_copy, path, pl + 1);

    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        set_err(err, errlen, "%s: cannot create: %s", tmp, strerror(errno));
        free(tmp);
        free(dir_copy);
        return -1;
    }
    const char *what = NULL;
    if (write_all(fd, buf, len) != 0) {
        what = "write";
    } else if (fsync(fd) != 0) {
        what = "fsync";
    }
    int e = errno;
    if (close(fd) != 0 && what == NULL) {
        what = "close";
        e = errno;
    }
    if (what == NULL && rename(tmp, path) != 0) {
        what = "rename";
        e = errno;
    }
    if (what != NULL) {
        (void)unlink(tmp); /* we created it; a leftover would only confuse the next attempt */
        free(tmp);
        free(dir_copy);
        set_err(err, errlen, "%s: %s failed: %s", path, what, strerror(e));
        return -1;
    }
    free(tmp);

    /* The rename is durable only once the directory entry is. */
    int dfd = open(dirname(dir_copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc = 0;
    if (dfd < 0 || fsync(dfd) != 0) {
        set_err(err, errlen, "%s: cannot sync its directory: %s", path, strerror(errno));
        rc = -1;
    }
    if (dfd >= 0) {
        (void)close(dfd);
    }
    free(dir_copy);
    return rc;
}

/* addr_problem checks "<scheme>host:port" (host a name, an IPv4 address or a bracketed IPv6
 * address; port 1..65535 in plain decimal). Returns NULL if fine, else what is wrong. */
static const char *addr_problem(const char *s, const char *scheme)
{
    size_t sl = strlen(scheme);
    if (strncmp(s, scheme, sl) != 0) {
        return "wrong or missing scheme";
    }
    const char *h = s + sl;
    const char *colon;
    if (*h == '[') {
        const char *rb = strchr(h, ']');
        if (rb == NULL) {
            return "unclosed [ in the host";
        }
        if (rb == h + 1) {
            return "empty host";
        }
        for (const char *q = h + 1; q < rb; q++) {
            if (!is_hex(*q) && *q != ':' && *q != '.') {
                return "bad character in the IPv6 host";
            }
        }
        if (rb[1] != ':') {
            return "missing :port";
        }
        colon = rb + 1;
    } else {
        colon = strrchr(h, ':');
        if (colon == NULL) {
            return "missing :port";
        }
        if (colon == h) {
            return "empty host";
        }
        for (const char *q = h; q < colon; q++) {
            if (*q == ':') {
                return "an IPv6 host needs brackets, e.g. [::1]:26600";
            }
            if (!is_alpha(*q) && !is_digit(*q) && *q != '.' && *q != '-' && *q != '_') {
                return "bad character in the host";
            }
        }
    }
    const char *port = colon + 1;
    size_t n = strlen(port);
    if (n == 0) {
        return "missing port";
    }
    unsigned long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!is_digit(port[i])) {
            return "the port is not a decimal number";
        }
        if (i < 6) {
            v = v * 10 + (unsigned long)(port[i] - '0');
        }
    }
    if (port[0] == '0' || n > 5 || v > 65535) {
        return "the port must be 1..65535 (no leading zeros)";
    }
    return NULL;
}

/* ---- config.toml: the keys ---------------------------------------------------------------- */

enum { T_STR, T_U32 };
enum { S_PLAIN, S_ADDR_TCP, S_ADDR_HTTP, S_LOG_LEVEL, S_TWIN };

typedef struct {
    const char *name; /* "section.key" */
    int type;         /* T_* */
    size_t off;       /* offset in node_config */
    size_t cap;       /* T_STR: buffer size (so at most cap - 1 bytes) */
    uint32_t lo, hi;  /* T_U32: inclusive range */
    int check;        /* T_STR: S_* */
    const char *doc;  /* one-line description for config_write */
} key_desc;

#define FIELD_CAP(f) sizeof(((node_config *)0)->f)
// clang-format off
#define KEY_STR(name, f, check, doc) \
    {name, T_STR, offsetof(node_config, f), FIELD_CAP(f), 0, 0, check, doc}
#define KEY_U32(name, f, lo, hi, doc) \
    {name, T_U32, offsetof(node_config, f), 0, lo, hi, S_PLAIN, doc}
// clang-format on

/* The table drives parsing, validation and writing, so a key cannot be added to one and
 * forgotten in another. Grouped by section, in the order config_write emits them. */
static const key_desc KEYS[] = {
    KEY_STR("node.moniker", moniker, S_PLAIN, "Human-readable name of this node in logs and RPC"),
    KEY_STR("node.key_file", key_file, S_PLAIN, "Ed25519 key file, relative to the home directory"),
    KEY_STR("node.data_dir", data_dir, S_PLAIN,
            "Directory for the block store and consensus records"),
    KEY_U32("node.min_free_mb", min_free_mb, 0, 1u << 20,
            "MiB that must be free on the data directory's filesystem to start (RocksDB may "
            "write up to its 256 MiB log again when it opens); below half of it a running node "
            "stops, exit status 4. 0: no check"),
    KEY_STR("p2p.listen", p2p_listen, S_ADDR_TCP, "Peer listen address, tcp://host:port"),
    KEY_U32("p2p.max_msg_bytes", p2p_max_msg_bytes, 1024, PBFT_MAX_MSG_BYTES,
            "Largest peer frame sent or accepted, in bytes"),
    KEY_U32("p2p.send_queue", p2p_send_queue, 1, 1u << 20, "Frames queued for sending, per peer"),
    KEY_U32("p2p.verify_workers", p2p_verify_workers, 1, 64, "Signature verification threads"),
    KEY_STR("p2p.twin_dial", p2p_twin_dial, S_TWIN,
            "TESTING ONLY: \"ID=tcp://host:port[,...]\" also dials a twin of validator ID "
            "(frames to ID then alternate between the two); \"none\" is normal"),
    KEY_STR("p2p.peer_override", p2p_peer_override, S_TWIN,
            "TESTING ONLY: \"ID=tcp://host:port[,...]\" reaches validator ID there instead of "
            "at its genesis address; \"none\" is normal"),
    KEY_STR("rpc.listen", rpc_listen, S_ADDR_HTTP, "JSON-RPC listen address, http://host:port"),
    KEY_U32("rpc.max_body_bytes", rpc_max_body_bytes, 1024, 64u << 20,
            "Largest HTTP request body, in bytes"),
    KEY_U32("rpc.max_batch", rpc_max_batch, 1, 10000, "Most calls in one JSON-RPC batch"),
    KEY_U32("rpc.max_connections", rpc_max_connections, 1, 65536,
            "Most RPC request bodies read at once (then the oldest gets HTTP 408), and most "
            "broadcast_tx_commit waits"),
    KEY_U32("rpc.commit_timeout_ms", rpc_commit_timeout_ms, 1, 3600000,
            "Longest an RPC call waits for its transaction to commit, in ms"),
    KEY_U32("rpc.body_timeout_ms", rpc_body_timeout_ms, 100, 3600000,
            "Longest a client may take to send a request body, in ms (then HTTP 408)"),
    KEY_U32("mempool.max_txs", mempool_max_txs, 1, 1u << 24,
            "Transactions held before new ones are refused"),
    KEY_U32("mempool.max_bytes", mempool_max_bytes, 8192, UINT32_MAX,
            "Total encoded bytes of held transactions"),
    KEY_STR("log.level", log_level, S_LOG_LEVEL, "Log level: debug, info, warn or error"),
    KEY_STR("log.event_log", event_log, S_PLAIN,
            "JSON-lines event log file, relative to the home directory"),
    KEY_U32("log.event_log_max_bytes", event_log_max_bytes, 4096, UINT32_MAX,
            "Event log size before it is rotated to FILE.1, in bytes"),
    KEY_STR("log.msg_log", msg_log, S_PLAIN,
            "Audit log of every signed consensus message received (sender, type, view, seq, "
            "hash), relative to the home directory; \"none\" is normal (rotated like the "
            "event log)"),
    KEY_STR("byzantine.mode", byz_mode, S_PLAIN,
            "Adversary mode, TESTING ONLY (needs --unsafe-byzantine); honest is normal"),
    KEY_U32("byzantine.delay_ms", byz_delay_ms, 0, 3600000,
            "slow-primary: delay added to each pre-prepare, in ms"),
    KEY_U32("byzantine.percent", byz_percent, 0, 100,
            "mutate/replay: share of messages affected, in percent"),
    KEY_STR("byzantine.options", byz_options, S_PLAIN,
            "More options as for --byzantine MODE:OPTIONS (at=, after=, peers=, factor=, "
            "client=), or none"),
};
#define N_KEYS (sizeof KEYS / sizeof KEYS[0])

static const char *const SECTIONS[] = {"node", "p2p", "rpc", "mempool", "log", "byzantine"};
#define N_SECTIONS (sizeof SECTIONS / sizeof SECTIONS[0])

static const char *const LOG_LEVELS[] = {"debug", "info", "warn", "error"};

void config_defaults(node_config *c)
{
    /* Zero first so unused bytes after each string are deterministic (memcmp-able). */
    memset(c, 0, sizeof *c);
    (void)snprintf(c->moniker, sizeof c->moniker, "%s", "node");
    (void)snprintf(c->key_file, sizeof c->key_file, "%s", "config/node_key.json");
    (void)snprintf(c->data_dir, sizeof c->data_dir, "%s", "data");
    c->min_free_mb = 512;
    (void)snprintf(c->p2p_listen, sizeof c->p2p_listen, "%s", "tcp://127.0.0.1:26600");
    c->p2p_max_msg_bytes = 32u << 20;
    c->p2p_send_queue = 1024;
    c->p2p_verify_workers = 2;
    (void)snprintf(c->p2p_twin_dial, sizeof c->p2p_twin_dial, "%s", "none");
    (void)snprintf(c->p2p_peer_override, sizeof c->p2p_peer_override, "%s", "none");
    (void)snprintf(c->rpc_listen, sizeof c->rpc_listen, "%s", "http://127.0.0.1:26700");
    c->rpc_max_body_bytes = 1u << 20;
    c->rpc_max_batch = 100;
    c->rpc_max_connections = 256;
    c->rpc_commit_timeout_ms = 10000;
    c->rpc_body_timeout_ms = 10000;
    c->mempool_max_txs = 20000;
    c->mempool_max_bytes = 64u << 20;
    (void)snprintf(c->log_level, sizeof c->log_level, "%s", "info");
    (void)snprintf(c->event_log, sizeof c->event_log, "%s", "data/events.jsonl");
    c->event_log_max_bytes = 64u << 20;
    (void)snprintf(c->msg_log, sizeof c->msg_log, "%s", "none");
    (void)snprintf(c->byz_mode, sizeof c->byz_mode, "%s", "honest");
    /* Just under the default 2000 ms view timeout, like the simulator's slow-primary runs:
     * slow enough to hurt, not slow enough to be voted out. */
    c->byz_delay_ms = 1500;
    c->byz_percent = 50; /* pbft_byz_config's documented default */
    (void)snprintf(c->byz_options, sizeof c->byz_options, "%s", "none");
}

/* utf8_valid checks s is well-formed UTF-8 (no overlongs, surrogates or code points above
 * U+10FFFF). TOML requires it, and these strings end up in JSON (RPC, event log), which
 * jansson would refuse to encode otherwise - better to fail at startup than mid-run. */
static bool utf8_valid(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p != 0) {
        unsigned char b = *p;
        size_t n;
        uint32_t cp;
        if (b < 0x80) {
            p++;
            continue;
        } else if (b >= 0xc2 && b <= 0xdf) {
            n = 1;
            cp = b & 0x1fu;
        } else if (b >= 0xe0 && b <= 0xef) {
            n = 2;
            cp = b & 0x0fu;
        } else if (b >= 0xf0 && b <= 0xf4) {
            n = 3;
            cp = b & 0x07u;
        } else {
            return false;
        }
        for (size_t i = 1; i <= n; i++) {
            if ((p[i] & 0xc0) != 0x80) {
                return false; /* also stops at the NUL */
            }
            cp = (cp << 6) | (p[i] & 0x3fu);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff)) {
            return false;
        }
        p += n + 1;
    }
    return true;
}

/* check_string validates a decoded string value of key d. */
static int check_string(const key_desc *d, const char *s, char *why, size_t whylen)
{
    if (s[0] == '\0') {
        set_err(why, whylen, "must not be empty");
        return -1;
    }
    if (!utf8_valid(s)) {
        set_err(why, whylen, "not valid UTF-8");
        return -1;
    }
    const char *problem = NULL;
    const char *scheme = NULL;
    switch (d->check) {
    case S_ADDR_TCP:
        scheme = "tcp://";
        problem = addr_problem(s, scheme);
        break;
    case S_ADDR_HTTP:
        scheme = "http://";
        problem = addr_problem(s, scheme);
        break;
    case S_TWIN: {
        /* "none", or ID=tcp://host:port[,ID=tcp://host:port...] */
        if (strcmp(s, "none") == 0)
            return 0;
        char item[CONFIG_ADDR_MAX + 8];
        for (const char *p = s; *p != 0;) {
            size_t len = strcspn(p, ",");
            size_t digits = strspn(p, "0123456789");
            if (len >= sizeof item || digits == 0 || digits > 2 || p[digits] != '=') {
                set_err(why, whylen, "\"%s\" is neither none nor ID=tcp://host:port[,...]", s);
                return -1;
            }
            memcpy(item, p + digits + 1, len - digits - 1);
            item[len - digits - 1] = 0;
            const char *bad = addr_problem(item, "tcp://");
            if (bad != NULL) {
                set_err(why, whylen, "\"%s\" is not a valid tcp://host:port address: %s", item,
                        bad);
                return -1;
            }
            p += len + (p[len] == ',');
        }
        return 0;
    }
    case S_LOG_LEVEL:
        for (size_t i = 0; i < sizeof LOG_LEVELS / sizeof LOG_LEVELS[0]; i++) {
            if (strcmp(s, LOG_LEVELS[i]) == 0) {
                return 0;
            }
        }
        set_err(why, whylen, "\"%s\" is not a log level (debug, info, warn or error)", s);
        return -1;
    default:
        break;
    }
    if (problem != NULL) {
        set_err(why, whylen, "\"%s\" is not a valid %shost:port address: %s", s, scheme, problem);
        return -1;
    }
    return 0;
}

/* check_field validates the value of key d held in c (for config_write, whose input did not
 * come from the parser). */
static int check_field(const key_desc *d, const node_config *c, char *why, size_t whylen)
{
    const char *base = (const char *)c + d->off;
    if (d->type == T_U32) {
        uint32_t v;
        memcpy(&v, base, sizeof v);
        if (v < d->lo || v > d->hi) {
            set_err(why, whylen, "%" PRIu32 " is out of range (must be %" PRIu32 "..%" PRIu32 ")",
                    v, d->lo, d->hi);
            return -1;
        }
        return 0;
    }
    if (memchr(base, '\0', d->cap) == NULL) {
        set_err(why, whylen, "not NUL-terminated within its %zu bytes", d->cap);
        return -1;
    }
    /* The writer can express only \n and \t among control characters (the TOML subset has
     * no \u escapes), and a value it cannot write must not be written wrong. */
    for (const char *q = base; *q != '\0'; q++) {
        unsigned char u = (unsigned char)*q;
        if ((u < 0x20 && u != '\n' && u != '\t') || u == 0x7f) {
            set_err(why, whylen, "control character 0x%02x cannot be written", u);
            return -1;
        }
    }
    return check_string(d, base, why, whylen);
}

/* ---- config.toml: the parser ---------------------------------------------------------------- */

typedef struct {
    const char *p;   /* next unread byte */
    const char *end; /* end of the line (exclusive, newline removed) */
} cursor;

enum { V_STRING, V_INTEGER, V_BOOL, V_ARRAY };

typedef struct {
    int type;                  /* V_* */
    char s[TOML_MAX_LINE + 1]; /* V_STRING: decoded bytes (never longer than the line) */
    size_t slen;               /* V_STRING: length */
    int64_t i;                 /* V_INTEGER */
    bool b;                    /* V_BOOL */
} tvalue;

static void skip_ws(cursor *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t')) {
        c->p++;
    }
}

/* at_value_end: nothing but an optional comment remains (after skip_ws). */
static bool at_value_end(const cursor *c)
{
    return c->p == c->end || *c->p == '#';
}

/* token_len measures a bare token (integer, true/false, or garbage) up to a delimiter. */
static size_t token_len(const cursor *c)
{
    const char *q = c->p;
    while (q < c->end && *q != ' ' && *q != '\t' && *q != ',' && *q != ']' && *q != '#') {
        q++;
    }
    return (size_t)(q - c->p);
}

/* parse_string decodes a basic string at c->p (which is '"') into out (cap >= line length).
 * Only \" \\ \n \t escape; a string must end on its own line. */
static int parse_string(cursor *c, char *out, size_t *len, char *why, size_t whylen)
{
    if (c->end - c->p >= 3 && memcmp(c->p, "\"\"\"", 3) == 0) {
        set_err(why, whylen, "multi-line strings (\"\"\") are not supported");
        return -1;
    }
    c->p++;
    size_t n = 0;
    for (;;) {
        if (c->p == c->end) {
            set_err(why, whylen, "unterminated string (a string must end on its line)");
            return -1;
        }
        char ch = *c->p++;
        if (ch == '"') {
            break;
        }
        if (ch == '\\') {
            if (c->p == c->end) {
                set_err(why, whylen, "unterminated string (a string must end on its line)");
                return -1;
            }
            char e = *c->p++;
            switch (e) {
            case '"':
            case '\\':
                ch = e;
                break;
            case 'n':
                ch = '\n';
                break;
            case 't':
                ch = '\t';
                break;
            default:
                if ((unsigned char)e >= 0x21 && (unsigned char)e < 0x7f) {
                    set_err(why, whylen,
                            "bad escape \"\\%c\" in string (only \\\" \\\\ \\n \\t are supported)",
                            e);
                } else {
                    set_err(why, whylen,
                            "bad escape (backslash then byte 0x%02x) in string (only \\\" \\\\ "
                            "\\n \\t are supported)",
                            (unsigned)(unsigned char)e);
                }
                return -1;
            }
        } else if (((unsigned char)ch < 0x20 && ch != '\t') || ch == 0x7f) {
            set_err(why, whylen, "control character 0x%02x in string (use \\n or \\t)",
                    (unsigned)(unsigned char)ch);
            return -1;
        }
        out[n++] = ch;
    }
    out[n] = '\0';
    *len = n;
    return 0;
}

/* parse_int decodes a decimal integer token: optional sign, digits, '_' only between digits,
 * no leading zeros, within int64_t. */
static int parse_int(const char *s, size_t n, int64_t *out, char *why, size_t whylen)
{
    size_t i = 0;
    bool neg = false;
    if (n > 0 && (s[0] == '+' || s[0] == '-')) {
        neg = s[0] == '-';
        i = 1;
    }
    if (i == n) {
        set_err(why, whylen, "\"%.*s\" is not an integer", quote_len(n), s);
        return -1;
    }
    const uint64_t limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    uint64_t mag = 0;
    bool overflow = false;
    bool prev_digit = false;
    size_t digits = 0;
    char first = s[i];
    for (; i < n; i++) {
        char ch = s[i];
        if (ch == '_') {
            if (!prev_digit || i + 1 >= n || !is_digit(s[i + 1])) {
                set_err(why, whylen, "\"%.*s\": '_' must sit between two digits", quote_len(n), s);
                return -1;
            }
            prev_digit = false;
            continue;
        }
        if (!is_digit(ch)) {
            if (ch == '.' || ch == 'e' || ch == 'E') {
                set_err(why, whylen, "\"%.*s\": floating-point numbers are not supported",
                        quote_len(n), s);
            } else {
                set_err(why, whylen, "\"%.*s\" is not a decimal integer", quote_len(n), s);
            }
            return -1;
        }
        if (digits == 1 && first == '0') {
            set_err(why, whylen, "\"%.*s\": leading zeros are not allowed", quote_len(n), s);
            return -1;
        }
        uint64_t d = (uint64_t)(ch - '0');
        if (!overflow && mag > (limit - d) / 10) {
            overflow = true;
        }
        if (!overflow) {
            mag = mag * 10 + d;
        }
        digits++;
        prev_digit = true;
    }
    if (overflow) {
        set_err(why, whylen, "\"%.*s\" overflows a 64-bit integer", quote_len(n), s);
        return -1;
    }
    if (neg) {
        *out = mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mag;
    } else {
        *out = (int64_t)mag;
    }
    return 0;
}

static int bad_value(const cursor *c, char *why, size_t whylen)
{
    size_t n = token_len(c);
    if (n == 0 && c->p < c->end && *c->p == ',') {
        set_err(why, whylen, "empty array element");
    } else if (n > 0 && *c->p == '\'') {
        set_err(why, whylen, "literal strings ('...') are not supported; use \"...\"");
    } else {
        set_err(why, whylen,
                "invalid value \"%.*s\" (expected a \"string\", an integer, true, false or a "
                "one-line [array])",
                quote_len(n), c->p);
    }
    return -1;
}

/* parse_array checks a one-line array of strings or of integers (trailing comma allowed).
 * No key takes an array yet, so only its shape is kept: the caller reports the type. */
static int parse_array(cursor *c, tvalue *v, char *why, size_t whylen)
{
    c->p++; /* '[' */
    int elem = -1;
    for (;;) {
        skip_ws(c);
        if (at_value_end(c)) {
            set_err(why, whylen, "unterminated array (an array must end on its line)");
            return -1;
        }
        if (*c->p == ']') {
            c->p++;
            break;
        }
        int t;
        char ch = *c->p;
        if (ch == '"') {
            t = V_STRING;
            if (parse_string(c, v->s, &v->slen, why, whylen) != 0) {
                return -1;
            }
        } else if (ch == '[') {
            set_err(why, whylen, "nested arrays are not supported");
            return -1;
        } else if (ch == '+' || ch == '-' || is_digit(ch)) {
            t = V_INTEGER;
            size_t n = token_len(c);
            if (parse_int(c->p, n, &v->i, why, whylen) != 0) {
                return -1;
            }
            c->p += n;
        } else {
            size_t n = token_len(c);
            if ((n == 4 && memcmp(c->p, "true", 4) == 0) ||
                (n == 5 && memcmp(c->p, "false", 5) == 0)) {
                set_err(why, whylen, "arrays may hold only strings or integers");
                return -1;
            }
            return bad_value(c, why, whylen);
        }
        if (elem >= 0 && t != elem) {
            set_err(why, whylen, "array mixes strings and integers");
            return -1;
        }
        elem = t;
        skip_ws(c);
        if (at_value_end(c)) {
            set_err(why, whylen, "unterminated array (an array must end on its line)");
            return -1;
        }
        if (c->p < c->end && *c->p == ',') {
            c->p++;
            continue;
        }
        if (c->p < c->end && *c->p == ']') {
            c->p++;
            break;
        }
        set_err(why, whylen, "expected ',' or ']' in the array");
        return -1;
    }
    v->type = V_ARRAY;
    return 0;
}

/* parse_value decodes the value at c->p (after "key = "). */
static int parse_value(cursor *c, tvalue *v, char *why, size_t whylen)
{
    if (at_value_end(c)) {
        set_err(why, whylen, "missing value");
        return -1;
    }
    char ch = *c->p;
    if (ch == '"') {
        v->type = V_STRING;
        return parse_string(c, v->s, &v->slen, why, whylen);
    }
    if (ch == '[') {
        return parse_array(c, v, why, whylen);
    }
    size_t n = token_len(c);
    if (ch == '+' || ch == '-' || is_digit(ch)) {
        v->type = V_INTEGER;
        if (parse_int(c->p, n, &v->i, why, whylen) != 0) {
            return -1;
        }
        c->p += n;
        return 0;
    }
    if ((n == 4 && memcmp(c->p, "true", 4) == 0) || (n == 5 && memcmp(c->p, "false", 5) == 0)) {
        v->type = V_BOOL;
        v->b = n == 4;
        c->p += n;
        return 0;
    }
    return bad_value(c, why, whylen);
}

/* apply_value stores v into key d of c after checking its type and range. */
static int apply_value(const key_desc *d, const tvalue *v, node_config *c, char *why, size_t whylen)
{
    char *base = (char *)c + d->off;
    if (d->type == T_STR) {
        if (v->type != V_STRING) {
            set_err(why, whylen, "expected a string");
            return -1;
        }
        if (v->slen >= d->cap) {
            set_err(why, whylen, "%zu bytes is too long (at most %zu)", v->slen, d->cap - 1);
            return -1;
        }
        memcpy(base, v->s, v->slen);
        memset(base + v->slen, 0, d->cap - v->slen); /* keep the tail deterministic */
        return check_string(d, base, why, whylen);
    }
    if (v->type != V_INTEGER) {
        set_err(why, whylen, "expected an integer");
        return -1;
    }
    if (v->i < (int64_t)d->lo || v->i > (int64_t)d->hi) {
        set_err(why, whylen, "%" PRId64 " is out of range (must be %" PRIu32 "..%" PRIu32 ")", v->i,
                d->lo, d->hi);
        return -1;
    }
    uint32_t u = (uint32_t)v->i;
    memcpy(base, &u, sizeof u);
    return 0;
}

/* Parser state for one file. */
typedef struct {
    const char *path;
    unsigned line;
    char *err;
    size_t errlen;
    int section; /* index into SECTIONS, or -1 before the first header */
    unsigned section_line[N_SECTIONS];
    unsigned key_line[N_KEYS];
    tvalue v; /* scratch; large, so it lives here rather than in each call */
} toml_parser;

static int perr(const toml_parser *t, const char *fmt, ...) CONFIG_PRINTF(2, 3);

/* perr writes "<path>:<line>: <message>" and returns -1. */
static int perr(const toml_parser *t, const char *fmt, ...)
{
    if (t->err == NULL || t->errlen == 0) {
        return -1;
    }
    int n = snprintf(t->err, t->errlen, "%s:%u: ", t->path, t->line);
    if (n >= 0 && (size_t)n < t->errlen) {
        va_list ap;
        va_start(ap, fmt);
        (void)vsnprintf(t->err + n, t->errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* qualify writes the key's full name ("section.key", or "key" before any section). */
static void qualify(const toml_parser *t, const char *key, size_t n, char *out, size_t cap)
{
    if (t->section < 0) {
        (void)snprintf(out, cap, "%.*s", quote_len(n), key);
    } else {
        (void)snprintf(out, cap, "%s.%.*s", SECTIONS[t->section], quote_len(n), key);
    }
}

static int parse_header(toml_parser *t, cursor *c)
{
    c->p++; /* '[' */
    if (c->p < c->end && *c->p == '[') {
        return perr(t, "section header: arrays of tables ([[...]]) are not supported");
    }
    skip_ws(c);
    const char *name = c->p;
    while (c->p < c->end && is_ident(*c->p)) {
        c->p++;
    }
    size_t n = (size_t)(c->p - name);
    if (c->p < c->end && *c->p == '.') {
        return perr(t, "section header: nested sections ([a.b]) are not supported");
    }
    skip_ws(c);
    if (n == 0 || c->p == c->end || *c->p != ']') {
        return perr(t, "section header: expected [name] with a name of A-Z a-z 0-9 _");
    }
    c->p++;
    skip_ws(c);
    if (!at_value_end(c)) {
        return perr(t, "[%.*s]: unexpected text after the section header", quote_len(n), name);
    }
    for (size_t i = 0; i < N_SECTIONS; i++) {
        if (strlen(SECTIONS[i]) == n && memcmp(SECTIONS[i], name, n) == 0) {
            if (t->section_line[i] != 0) {
                return perr(t, "[%s]: section appears twice (first on line %u)", SECTIONS[i],
                            t->section_line[i]);
            }
            t->section_line[i] = t->line;
            t->section = (int)i;
            return 0;
        }
    }
    return perr(t, "unknown section \"[%.*s]\"", quote_len(n), name);
}

static int parse_keyval(toml_parser *t, cursor *c, node_config *cfg)
{
    const char *key = c->p;
    while (c->p < c->end && is_ident(*c->p)) {
        c->p++;
    }
    size_t n = (size_t)(c->p - key);
    if (n == 0) {
        if (*c->p == '"' || *c->p == '\'') {
            return perr(t, "quoted keys are not supported");
        }
        return perr(t, "syntax: expected key = value, a [section] header or a # comment");
    }
    char qname[QUOTE_MAX + 32];
    qualify(t, key, n, qname, sizeof qname);
    if (c->p < c->end && *c->p == '.') {
        return perr(t, "%s: dotted keys are not supported (use a [section])", qname);
    }
    skip_ws(c);
    if (c->p == c->end || *c->p != '=') {
        return perr(t, "%s: expected '=' after the key", qname);
    }
    c->p++;
    skip_ws(c);

    size_t k = 0;
    while (k < N_KEYS && strcmp(KEYS[k].name, qname) != 0) {
        k++;
    }
    if (k == N_KEYS) {
        return perr(t, "unknown key \"%s\"", qname);
    }
    if (t->key_line[k] != 0) {
        return perr(t, "%s: duplicate key (first set on line %u)", qname, t->key_line[k]);
    }
    t->key_line[k] = t->line;

    char why[WHY_MAX];
    if (parse_value(c, &t->v, why, sizeof why) != 0) {
        return perr(t, "%s: %s", qname, why);
    }
    skip_ws(c);
    if (!at_value_end(c)) {
        return perr(t, "%s: unexpected text after the value: \"%.*s\"", qname,
                    quote_len((size_t)(c->end - c->p)), c->p);
    }
    if (apply_value(&KEYS[k], &t->v, cfg, why, sizeof why) != 0) {
        return perr(t, "%s: %s", qname, why);
    }
    return 0;
}

/* line_too_long reports an overlong line, naming its key when the line starts with one. */
static int line_too_long(toml_parser *t, const char *p, const char *end)
{
    cursor c = {p, end};
    skip_ws(&c);
    const char *key = c.p;
    while (c.p < c.end && is_ident(*c.p)) {
        c.p++;
    }
    size_t n = (size_t)(c.p - key);
    skip_ws(&c);
    if (n > 0 && c.p < c.end && *c.p == '=') {
        char qname[QUOTE_MAX + 32];
        qualify(t, key, n, qname, sizeof qname);
        return perr(t, "%s: line is longer than %d bytes", qname, TOML_MAX_LINE);
    }
    return perr(t, "line is longer than %d bytes", TOML_MAX_LINE);
}

static int parse_toml(toml_parser *t, const char *buf, size_t len, node_config *cfg)
{
    const char *p = buf;
    const char *fend = buf + len;
    while (p < fend) {
        t->line++;
        const char *nl = memchr(p, '\n', (size_t)(fend - p));
        const char *lend = nl != NULL ? nl : fend;
        const char *next = nl != NULL ? nl + 1 : fend;
        if (lend > p && lend[-1] == '\r') {
            lend--; /* CRLF line endings are valid TOML */
        }
        if ((size_t)(lend - p) > TOML_MAX_LINE) {
            return line_too_long(t, p, lend);
        }
        cursor c = {p, lend};
        skip_ws(&c);
        if (!at_value_end(&c)) {
            int rc = *c.p == '[' ? parse_header(t, &c) : parse_keyval(t, &c, cfg);
            if (rc != 0) {
                return -1;
            }
        }
        p = next;
    }
    return 0;
}

int config_load(const char *path, node_config *c, char *err, size_t errlen)
{
    char *buf;
    size_t len;
    if (read_file(path, TOML_MAX_FILE, &buf, &len, err, errlen) != 0) {
        return -1;
    }
    toml_parser *t = calloc(1, sizeof *t);
    if (t == NULL) {
        free(buf);
        set_err(err, errlen, "%s: out of memory", path);
        return -1;
    }
    t->path = path;
    t->err = err;
    t->errlen = errlen;
    t->section = -1;
    /* Parse into a copy: on error the caller's config is untouched, never half-applied. */
    node_config tmp = *c;
    int rc = parse_toml(t, buf, len, &tmp);
    free(buf);
    free(t);
    if (rc == 0) {
        *c = tmp;
    }
    return rc;
}

/* put_string writes s as a TOML basic string (check_field already refused what it cannot
 * represent). */
static void put_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s != '\0'; s++) {
        switch (*s) {
        case '"':
            fputs("\\\"", f);
            break;
        case '\\':
            fputs("\\\\", f);
            break;
        case '\n':
            fputs("\\n", f);
            break;
        case '\t':
            fputs("\\t", f);
            break;
        default:
            fputc(*s, f);
        }
    }
    fputc('"', f);
}

int config_write(const char *path, const node_config *c, char *err, size_t errlen)
{
    char why[WHY_MAX];
    for (size_t k = 0; k < N_KEYS; k++) {
        if (check_field(&KEYS[k], c, why, sizeof why) != 0) {
            set_err(err, errlen, "%s: %s: %s", path, KEYS[k].name, why);
            return -1;
        }
    }
    node_config def;
    config_defaults(&def);

    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (f == NULL) {
        set_err(err, errlen, "%s: out of memory", path);
        return -1;
    }
    fputs("# config.toml - pbftd node configuration.\n"
          "#\n"
          "# Syntax: a subset of TOML. [section] headers, key = value, # comments; values are\n"
          "# \"strings\" (escapes \\\" \\\\ \\n \\t), integers (optional _ between digits),\n"
          "# true/false and one-line [arrays]. Unknown keys are errors, never ignored.\n",
          f);
    size_t prev_sec_len = 0;
    const char *prev_sec = "";
    for (size_t k = 0; k < N_KEYS; k++) {
        const key_desc *d = &KEYS[k];
        const char *dot = strchr(d->name, '.');
        size_t sec_len = (size_t)(dot - d->name);
        if (sec_len != prev_sec_len || memcmp(d->name, prev_sec, sec_len) != 0) {
            fprintf(f, "\n[%.*s]\n", (int)sec_len, d->name);
            prev_sec = d->name;
            prev_sec_len = sec_len;
        }
        const char *cur = (const char *)c + d->off;
        const char *dflt = (const char *)&def + d->off;
        if (d->type == T_STR) {
            fprintf(f, "# %s. Default \"%s\"; 1..%zu bytes.\n", d->doc, dflt, d->cap - 1);
            fprintf(f, "%s = ", dot + 1);
            put_string(f, cur);
            fputc('\n', f);
        } else {
            uint32_t v, dv;
            memcpy(&v, cur, sizeof v);
            memcpy(&dv, dflt, sizeof dv);
            fprintf(f, "# %s. Default %" PRIu32 "; range %" PRIu32 "..%" PRIu32 ".\n", d->doc, dv,
                    d->lo, d->hi);
            fprintf(f, "%s = %" PRIu32 "\n", dot + 1, v);
        }
    }
    bool bad = ferror(f) != 0;
    if (fclose(f) != 0 || bad) {
        free(buf);
        set_err(err, errlen, "%s: out of memory formatting the file", path);
        return -1;
    }
    int rc = write_file_atomic(path, buf, len, err, errlen);
    free(buf);
    return rc;
}

/* ---- genesis.json ------------------------------------------------------------------------- */

/* Messages read "<file>: <json path>: <what>"; a JSON path is a prefix such as
 * "validators[2]" (or "") joined to a field name with a dot. */
typedef struct {
    const char *file;
    char *err;
    size_t errlen;
} gctx;

static int gerr(const gctx *x, const char *prefix, const char *key, const char *fmt, ...)
    CONFIG_PRINTF(4, 5);

static int gerr(const gctx *x, const char *prefix, const char *key, const char *fmt, ...)
{
    if (x->err == NULL || x->errlen == 0) {
        return -1;
    }
    int n = snprintf(x->err, x->errlen, "%s: %s%s%s: ", x->file, prefix,
                     prefix[0] != '\0' && key[0] != '\0' ? "." : "", key);
    if (n >= 0 && (size_t)n < x->errlen) {
        va_list ap;
        va_start(ap, fmt);
        (void)vsnprintf(x->err + n, x->errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static const char *const TOP_FIELDS[] = {"chain_id", "genesis_time_ms", "consensus", "validators",
                                         "accounts"};
static const char *const VALIDATOR_FIELDS[] = {"id", "public_key", "p2p_address", "rpc_address",
                                               "name"};
static const char *const ACCOUNT_FIELDS[] = {"public_key", "balance"};

/* The consensus object, in the documented order; offsets into genesis. */
static const struct {
    const char *name;
    size_t off;
} CONSENSUS_FIELDS[] = {
    {"checkpoint_interval", offsetof(genesis, checkpoint_interval)},
    {"window", offsetof(genesis, window)},
    {"max_inflight", offsetof(genesis, max_inflight)},
    {"max_block_txs", offsetof(genesis, max_block_txs)},
    {"max_block_bytes", offsetof(genesis, max_block_bytes)},
    {"block_interval_ms", offsetof(genesis, block_interval_ms)},
    {"view_timeout_ms", offsetof(genesis, view_timeout_ms)},
    {"view_timeout_max_ms", offsetof(genesis, view_timeout_max_ms)},
    {"resend_ms", offsetof(genesis, resend_ms)},
    {"state_retry_ms", offsetof(genesis, state_retry_ms)},
    {"max_state_blocks", offsetof(genesis, max_state_blocks)},
};
#define N_CONSENSUS_FIELDS (sizeof CONSENSUS_FIELDS / sizeof CONSENSUS_FIELDS[0])

/* reject_unknown refuses any field of obj not in names: a misspelt optional field would
 * otherwise vanish and the network would start with a setting nobody chose. */
static int reject_unknown(const gctx *x, json_t *obj, const char *prefix, const char *const *names,
                          size_t n)
{
    const char *key;
    json_t *val;
    json_object_foreach(obj, key, val)
    {
        (void)val;
        bool known = false;
        for (size_t i = 0; i < n && !known; i++) {
            known = strcmp(key, names[i]) == 0;
        }
        if (!known) {
            return gerr(x, prefix, key, "unknown field");
        }
    }
    return 0;
}

/* get_string fetches obj.key as a string of at most max bytes. An absent optional field
 * gives *out = NULL. */
static int get_string(const gctx *x, json_t *obj, const char *prefix, const char *key,
                      bool required, size_t max, const char **out)
{
    *out = NULL;
    json_t *v = json_object_get(obj, key);
    if (v == NULL) {
        return required ? gerr(x, prefix, key, "missing") : 0;
    }
    if (!json_is_string(v)) {
        return gerr(x, prefix, key, "expected a string");
    }
    size_t n = json_string_length(v);
    if (n > max) {
        return gerr(x, prefix, key, "%zu bytes is too long (at most %zu)", n, max);
    }
    *out = json_string_value(v);
    return 0;
}

/* get_uint fetches obj.key as a JSON integer in 0..max. */
static int get_uint(const gctx *x, json_t *obj, const char *prefix, const char *key, uint64_t max,
                    uint64_t *out)
{
    json_t *v = json_object_get(obj, key);
    if (v == NULL) {
        return gerr(x, prefix, key, "missing");
    }
    if (!json_is_integer(v)) {
        return gerr(x, prefix, key, "expected an integer");
    }
    json_int_t i = json_integer_value(v);
    if (i < 0 || (uint64_t)i > max) {
        return gerr(x, prefix, key, "%lld is out of range (must be 0..%" PRIu64 ")", (long long)i,
                    max);
    }
    *out = (uint64_t)i;
    return 0;
}

/* get_key fetches obj.key as 64 hex characters. */
static int get_key(const gctx *x, json_t *obj, const char *prefix, const char *key, uint8_t out[32])
{
    const char *s;
    if (get_string(x, obj, prefix, key, true, SIZE_MAX, &s) != 0) {
        return -1;
    }
    if (strlen(s) != 64 || keys_hex_decode(s, out, 32) != KEYS_OK) {
        return gerr(x, prefix, key, "expected 64 hex characters");
    }
    return 0;
}

/* get_addr fetches obj.key as "<scheme>host:port". */
static int get_addr(const gctx *x, json_t *obj, const char *prefix, const char *key, bool required,
                    const char *scheme, char out[CONFIG_ADDR_MAX])
{
    const char *s;
    if (get_string(x, obj, prefix, key, required, CONFIG_ADDR_MAX - 1, &s) != 0) {
        return -1;
    }
    out[0] = '\0';
    if (s == NULL) {
        return 0;
    }
    const char *problem = addr_problem(s, scheme);
    if (problem != NULL) {
        return gerr(x, prefix, key, "\"%s\" is not a valid %shost:port address: %s", s, scheme,
                    problem);
    }
    memcpy(out, s, strlen(s) + 1);
    return 0;
}

/* parse_balance accepts a canonical decimal u64: digits only, no sign, no leading zeros.
 * A string, not a JSON number, because JSON parsers disagree above 2^53. */
static bool parse_balance(const char *s, uint64_t *out)
{
    size_t n = strlen(s);
    if (n == 0 || n > 20 || (s[0] == '0' && n > 1)) {
        return false;
    }
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!is_digit(s[i])) {
            return false;
        }
        uint64_t d = (uint64_t)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10) {
            return false;
        }
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

static int decode_validator(const gctx *x, json_t *o, size_t i, genesis *g)
{
    char pre[32];
    (void)snprintf(pre, sizeof pre, "validators[%zu]", i);
    if (!json_is_object(o)) {
        return gerr(x, pre, "", "expected an object");
    }
    if (reject_unknown(x, o, pre, VALIDATOR_FIELDS,
                       sizeof VALIDATOR_FIELDS / sizeof VALIDATOR_FIELDS[0]) != 0) {
        return -1;
    }
    genesis_validator *v = &g->validators[i];
    uint64_t id;
    if (get_uint(x, o, pre, "id", UINT64_MAX, &id) != 0) {
        return -1;
    }
    if (id != i) {
        return gerr(x, pre, "id", "%" PRIu64 "; ids must be 0..n-1 in array order (expected %zu)",
                    id, i);
    }
    if (get_key(x, o, pre, "public_key", v->public_key) != 0) {
        return -1;
    }
    for (size_t j = 0; j < i; j++) {
        if (memcmp(g->validators[j].public_key, v->public_key, 32) == 0) {
            return gerr(x, pre, "public_key", "duplicates validators[%zu].public_key", j);
        }
    }
    if (get_addr(x, o, pre, "p2p_address", true, "tcp://", v->p2p_address) != 0 ||
        get_addr(x, o, pre, "rpc_address", false, "http://", v->rpc_address) != 0) {
        return -1;
    }
    const char *name;
    if (get_string(x, o, pre, "name", false, sizeof v->name - 1, &name) != 0) {
        return -1;
    }
    if (name != NULL) {
        for (const char *q = name; *q != '\0'; q++) {
            if ((unsigned char)*q < 0x20 || *q == 0x7f) {
                return gerr(x, pre, "name", "control characters are not allowed");
            }
        }
        memcpy(v->name, name, strlen(name) + 1);
    }
    return 0;
}

/* An account key and its array index, sorted to find duplicates in O(n log n): up to
 * GENESIS_MAX_ACCOUNTS entries make the pairwise check too slow. */
typedef struct {
    uint8_t key[32];
    size_t idx;
} key_ref;

static int key_ref_cmp(const void *a, const void *b)
{
    const key_ref *ka = a;
    const key_ref *kb = b;
    int c = memcmp(ka->key, kb->key, 32);
    if (c != 0) {
        return c;
    }
    return (ka->idx > kb->idx) - (ka->idx < kb->idx);
}

static int decode_accounts(const gctx *x, json_t *arr, genesis *g)
{
    size_t n = json_array_size(arr);
    if (n > GENESIS_MAX_ACCOUNTS) {
        return gerr(x, "", "accounts", "%zu accounts; at most %d", n, GENESIS_MAX_ACCOUNTS);
    }
    g->accounts = calloc(n > 0 ? n : 1, sizeof *g->accounts);
    if (g->accounts == NULL) {
        return gerr(x, "", "accounts", "out of memory");
    }
    g->n_accounts = n;
    for (size_t i = 0; i < n; i++) {
        char pre[32];
        (void)snprintf(pre, sizeof pre, "accounts[%zu]", i);
        json_t *o = json_array_get(arr, i);
        if (!json_is_object(o)) {
            return gerr(x, pre, "", "expected an object");
        }
        if (reject_unknown(x, o, pre, ACCOUNT_FIELDS,
                           sizeof ACCOUNT_FIELDS / sizeof ACCOUNT_FIELDS[0]) != 0 ||
            get_key(x, o, pre, "public_key", g->accounts[i].public_key) != 0) {
            return -1;
        }
        json_t *b = json_object_get(o, "balance");
        if (b == NULL) {
            return gerr(x, pre, "balance", "missing");
        }
        if (!json_is_string(b)) {
            return gerr(x, pre, "balance", "expected a decimal string such as \"1000\"");
        }
        if (!parse_balance(json_string_value(b), &g->accounts[i].balance)) {
            return gerr(x, pre, "balance",
                        "\"%.*s\" is not a decimal u64 (digits only, no sign, no leading zeros, "
                        "at most 18446744073709551615)",
                        quote_len(json_string_length(b)), json_string_value(b));
        }
    }
    if (n < 2) {
        return 0;
    }
    key_ref *refs = malloc(n * sizeof *refs);
    if (refs == NULL) {
        return gerr(x, "", "accounts", "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        memcpy(refs[i].key, g->accounts[i].public_key, 32);
        refs[i].idx = i;
    }
    qsort(refs, n, sizeof *refs, key_ref_cmp);
    /* Report the first repeat in array order: within a run of equal keys the first entry is
     * the original, the second the earliest repeat; take the smallest such repeat. */
    size_t dup = SIZE_MAX, orig = 0;
    for (size_t i = 1; i < n; i++) {
        if (memcmp(refs[i].key, refs[i - 1].key, 32) == 0 &&
            (i < 2 || memcmp(refs[i - 1].key, refs[i - 2].key, 32) != 0) && refs[i].idx < dup) {
            dup = refs[i].idx;
            orig = refs[i - 1].idx;
        }
    }
    free(refs);
    if (dup != SIZE_MAX) {
        char pre[32];
        (void)snprintf(pre, sizeof pre, "accounts[%zu]", dup);
        return gerr(x, pre, "public_key", "duplicates accounts[%zu].public_key", orig);
    }
    return 0;
}

/* genesis_decode validates root and fills g (except g->hash). On error g may hold accounts;
 * the caller frees them. */
static int genesis_decode(const gctx *x, json_t *root, genesis *g)
{
    if (!json_is_object(root)) {
        set_err(x->err, x->errlen, "%s: expected a JSON object at the top level", x->file);
        return -1;
    }
    if (reject_unknown(x, root, "", TOP_FIELDS, sizeof TOP_FIELDS / sizeof TOP_FIELDS[0]) != 0) {
        return -1;
    }

    const char *chain_id;
    if (get_string(x, root, "", "chain_id", true, sizeof g->chain_id - 1, &chain_id) != 0) {
        return -1;
    }
    if (chain_id[0] == '\0') {
        return gerr(x, "", "chain_id", "must not be empty");
    }
    for (const char *q = chain_id; *q != '\0'; q++) {
        if (!is_alpha(*q) && !is_digit(*q) && *q != '.' && *q != '_' && *q != '-') {
            return gerr(x, "", "chain_id", "\"%s\": only A-Z a-z 0-9 . _ - are allowed", chain_id);
        }
    }
    memcpy(g->chain_id, chain_id, strlen(chain_id) + 1);

    if (get_uint(x, root, "", "genesis_time_ms", INT64_MAX, &g->genesis_time_ms) != 0) {
        return -1;
    }

    json_t *cons = json_object_get(root, "consensus");
    if (cons == NULL) {
        return gerr(x, "", "consensus", "missing");
    }
    if (!json_is_object(cons)) {
        return gerr(x, "", "consensus", "expected an object");
    }
    const char *cnames[N_CONSENSUS_FIELDS];
    for (size_t i = 0; i < N_CONSENSUS_FIELDS; i++) {
        cnames[i] = CONSENSUS_FIELDS[i].name;
    }
    if (reject_unknown(x, cons, "consensus", cnames, N_CONSENSUS_FIELDS) != 0) {
        return -1;
    }
    for (size_t i = 0; i < N_CONSENSUS_FIELDS; i++) {
        uint64_t v;
        if (get_uint(x, cons, "consensus", CONSENSUS_FIELDS[i].name, UINT32_MAX, &v) != 0) {
            return -1;
        }
        uint32_t u = (uint32_t)v;
        memcpy((char *)g + CONSENSUS_FIELDS[i].off, &u, sizeof u);
    }

    json_t *vals = json_object_get(root, "validators");
    if (vals == NULL) {
        return gerr(x, "", "validators", "missing");
    }
    if (!json_is_array(vals)) {
        return gerr(x, "", "validators", "expected an array");
    }
    size_t n = json_array_size(vals);
    if (n < 4 || n > PBFT_MAX_N) {
        return gerr(x, "", "validators", "%zu validators; must be 4..%d", n, PBFT_MAX_N);
    }
    for (size_t i = 0; i < n; i++) {
        if (decode_validator(x, json_array_get(vals, i), i, g) != 0) {
            return -1;
        }
    }
    g->n = (uint16_t)n;

    /* The relations between consensus parameters (and n) are pbft_config_validate's to judge;
     * this one check comes first only to give the most common mistake a plainer message. */
    if (g->checkpoint_interval != 0 && g->window % g->checkpoint_interval != 0) {
        return gerr(x, "consensus", "window",
                    "%" PRIu32 " is not a multiple of checkpoint_interval (%" PRIu32 ")", g->window,
                    g->checkpoint_interval);
    }
    pbft_config *pc = calloc(1, sizeof *pc);
    if (pc == NULL) {
        return gerr(x, "", "consensus", "out of memory");
    }
    genesis_to_pbft(g, pc);
    pc->id = 0; /* any valid id: only the network-wide parameters are being judged */
    char why[WHY_MAX];
    int rc = pbft_config_validate(pc, why, sizeof why);
    free(pc);
    if (rc != 0) {
        return gerr(x, "", "consensus", "%s", why);
    }

    json_t *accs = json_object_get(root, "accounts");
    if (accs == NULL) {
        return gerr(x, "", "accounts", "missing");
    }
    if (!json_is_array(accs)) {
        return gerr(x, "", "accounts", "expected an array");
    }
    return decode_accounts(x, accs, g);
}

int genesis_load(const char *path, genesis *g, char *err, size_t errlen)
{
    memset(g, 0, sizeof *g);
    if (keys_init() != KEYS_OK) {
        set_err(err, errlen, "%s: %s", path, keys_strerror(KEYS_E_INIT));
        return -1;
    }
    /* Read the bytes ourselves: the genesis hash is over the exact file, not over whatever
     * jansson would re-serialise. */
    char *buf;
    size_t len;
    if (read_file(path, GENESIS_MAX_BYTES, &buf, &len, err, errlen) != 0) {
        return -1;
    }
    keys_sha256((const uint8_t *)buf, len, g->hash);
    json_error_t je;
    json_t *root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);
    free(buf);
    if (root == NULL) {
        set_err(err, errlen, "%s:%d:%d: %s", path, je.line, je.column, je.text);
        memset(g, 0, sizeof *g);
        return -1;
    }
    gctx x = {path, err, errlen};
    int rc = genesis_decode(&x, root, g);
    json_decref(root);
    if (rc != 0) {
        genesis_free(g);
        memset(g, 0, sizeof *g);
    }
    return rc;
}

/* put adds v under key; json_object_set_new takes v even on failure, and rejects NULL, so a
 * failed constructor just makes this fail. */
static bool put(json_t *obj, const char *key, json_t *v)
{
    return json_object_set_new(obj, key, v) == 0;
}

static json_t *str_field(const char *s, size_t cap)
{
    return json_stringn(s, strnlen(s, cap));
}

/* genesis_to_json builds the document in the documented key order, or returns NULL (out of
 * memory, or a string that is not UTF-8). */
static json_t *genesis_to_json(const genesis *g)
{
    json_t *root = json_object();
    json_t *cons = json_object();
    json_t *vals = json_array();
    json_t *accs = json_array();
    bool ok = root != NULL && cons != NULL && vals != NULL && accs != NULL;
    for (size_t i = 0; ok && i < N_CONSENSUS_FIELDS; i++) {
        uint32_t u;
        memcpy(&u, (const char *)g + CONSENSUS_FIELDS[i].off, sizeof u);
        ok = put(cons, CONSENSUS_FIELDS[i].name, json_integer((json_int_t)u));
    }
    for (size_t i = 0; ok && i < g->n; i++) {
        const genesis_validator *v = &g->validators[i];
        char hex[65];
        keys_hex_encode(v->public_key, 32, hex);
        json_t *o = json_object();
        ok = o != NULL && json_array_append_new(vals, o) == 0;
        ok = ok && put(o, "id", json_integer((json_int_t)i));
        ok = ok && put(o, "public_key", json_string(hex));
        ok = ok && put(o, "p2p_address", str_field(v->p2p_address, sizeof v->p2p_address));
        /* Optional fields are left out when empty, which is how genesis_load reads absence. */
        if (ok && v->rpc_address[0] != '\0') {
            ok = put(o, "rpc_address", str_field(v->rpc_address, sizeof v->rpc_address));
        }
        if (ok && v->name[0] != '\0') {
            ok = put(o, "name", str_field(v->name, sizeof v->name));
        }
    }
    for (size_t i = 0; ok && i < g->n_accounts; i++) {
        char hex[65];
        char bal[24];
        keys_hex_encode(g->accounts[i].public_key, 32, hex);
        (void)snprintf(bal, sizeof bal, "%" PRIu64, g->accounts[i].balance);
        json_t *o = json_object();
        ok = o != NULL && json_array_append_new(accs, o) == 0;
        ok = ok && put(o, "public_key", json_string(hex));
        ok = ok && put(o, "balance", json_string(bal));
    }
    if (!ok) {
        json_decref(root);
        json_decref(cons);
        json_decref(vals);
        json_decref(accs);
        return NULL;
    }
    ok = put(root, "chain_id", str_field(g->chain_id, sizeof g->chain_id));
    ok = ok && put(root, "genesis_time_ms", json_integer((json_int_t)g->genesis_time_ms));
    /* From here the containers belong to root (or were freed by a failed put). */
    if (!ok) {
        json_decref(root);
        json_decref(cons);
        json_decref(vals);
        json_decref(accs);
        return NULL;
    }
    ok = put(root, "consensus", cons);
    ok = put(root, "validators", vals) && ok;
    ok = put(root, "accounts", accs) && ok;
    if (!ok) {
        json_decref(root);
        return NULL;
    }
    return root;
}

int genesis_write(const char *path, const genesis *g, char *err, size_t errlen)
{
    gctx x = {path, err, errlen};
    /* Checks the JSON tree cannot express (it would silently hold less). */
    if (g->n > PBFT_MAX_N) {
        return gerr(&x, "", "validators", "%u validators; must be 4..%d", g->n, PBFT_MAX_N);
    }
    if (g->n_accounts > GENESIS_MAX_ACCOUNTS) {
        return gerr(&x, "", "accounts", "%zu accounts; at most %d", g->n_accounts,
                    GENESIS_MAX_ACCOUNTS);
    }
    if (g->n_accounts > 0 && g->accounts == NULL) {
        return gerr(&x, "", "accounts", "n_accounts is %zu but accounts is NULL", g->n_accounts);
    }
    if (g->genesis_time_ms > INT64_MAX) {
        return gerr(&x, "", "genesis_time_ms",
                    "%" PRIu64 " is out of range (must be 0..%" PRId64 ")", g->genesis_time_ms,
                    INT64_MAX);
    }
    json_t *root = genesis_to_json(g);
    if (root == NULL) {
        set_err(err, errlen, "%s: cannot encode: out of memory, or a string is not valid UTF-8",
                path);
        return -1;
    }
    /* Refuse to write what genesis_load would refuse to read: every replica must be able to
     * start from the file this produces. */
    genesis *check = calloc(1, sizeof *check);
    if (check == NULL) {
        json_decref(root);
        set_err(err, errlen, "%s: out of memory", path);
        return -1;
    }
    int rc = genesis_decode(&x, root, check);
    genesis_free(check);
    free(check);
    if (rc != 0) {
        json_decref(root);
        return -1;
    }
    char *s = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(root);
    if (s == NULL) {
        set_err(err, errlen, "%s: out of memory", path);
        return -1;
    }
    size_t n = strlen(s);
    if (n + 1 > GENESIS_MAX_BYTES) {
        free(s);
        set_err(err, errlen, "%s: document would be %zu bytes (at most %u)", path, n + 1,
                GENESIS_MAX_BYTES);
        return -1;
    }
    char *buf = malloc(n + 1);
    if (buf == NULL) {
        free(s);
        set_err(err, errlen, "%s: out of memory", path);
        return -1;
    }
    memcpy(buf, s, n);
    buf[n] = '\n'; /* POSIX text file; also what a hand-edited file would end with */
    free(s);
    rc = write_file_atomic(path, buf, n + 1, err, errlen);
    free(buf);
    return rc;
}

void genesis_free(genesis *g)
{
    free(g->accounts);
    g->accounts = NULL;
    g->n_accounts = 0;
}

void genesis_to_pbft(const genesis *g, pbft_config *c)
{
    /* Defaults first, for the parameters genesis does not carry (max_pending_*). */
    pbft_config_defaults(c);
    c->n = g->n;
    keys_sha256((const uint8_t *)g->chain_id, strnlen(g->chain_id, sizeof g->chain_id), c->chain);
    memcpy(c->genesis, g->hash, sizeof c->genesis);
    memset(c->pubkeys, 0, sizeof c->pubkeys);
    for (size_t i = 0; i < g->n && i < PBFT_MAX_N; i++) {
        memcpy(c->pubkeys[i], g->validators[i].public_key, sizeof c->pubkeys[i]);
    }
    c->checkpoint_interval = g->checkpoint_interval;
    c->window = g->window;
    c->max_inflight = g->max_inflight;
    c->max_block_txs = g->max_block_txs;
    c->max_block_bytes = g->max_block_bytes;
    c->block_interval_ms = g->block_interval_ms;
    c->view_timeout_ms = g->view_timeout_ms;
    c->view_timeout_max_ms = g->view_timeout_max_ms;
    c->resend_ms = g->resend_ms;
    c->state_retry_ms = g->state_retry_ms;
    /* Primary monitoring: half the view timeout (docs/protocol.md, section 8). */
    c->monitor_ms = g->view_timeout_ms / 2;
    c->max_state_blocks = g->max_state_blocks;
}

void config_resolve(const char *home, const char *p, const char *suffix, char *out, size_t outlen)
{
    if (p[0] == '/')
        snprintf(out, outlen, "%s%s", p, suffix);
    else
        snprintf(out, outlen, "%s/%s%s", home, p, suffix);
}
