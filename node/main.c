/*
 * main.c - the pbftd command: init, testnet, start, show-node-id, unsafe-reset-all, version.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "consensus/replica.h"
#include "crypto/keys.h"
#include "node/config.h"
#include "node/log.h"
#include "node/node.h"
#include "storage/store.h"

#define PBFTD_VERSION "0.1.0"

static const char *usage_text =
    "pbftd - a PBFT replica of a permissioned ledger\n"
    "\n"
    "usage: pbftd <command> [options]\n"
    "\n"
    "commands:\n"
    "  init              create a node home: config, key, data directory\n"
    "  testnet           create the homes of an N-replica network on this host\n"
    "  start             run the replica\n"
    "  show-node-id      print this node's public key and validator id\n"
    "  unsafe-reset-all  delete this node's blocks and consensus state (keeps config and key)\n"
    "  version           print the version\n"
    "\n"
    "Run 'pbftd <command> --help' for the options of a command.\n";

static void usage(FILE *f)
{
    fputs(usage_text, f);
}

/* opt_value: "--name VALUE" or "--name=VALUE". */
static const char *opt_value(int argc, char **argv, int *i, const char *name)
{
    size_t nl = strlen(name);
    if (strncmp(argv[*i], name, nl) != 0)
        return NULL;
    if (argv[*i][nl] == '=')
        return argv[*i] + nl + 1;
    if (argv[*i][nl] == 0) {
        if (*i + 1 >= argc) {
            fprintf(stderr, "pbftd: %s needs a value\n", name);
            exit(2);
        }
        return argv[++*i];
    }
    return NULL;
}

static int mkdir_p(const char *path)
{
    char buf[CONFIG_PATH_MAX + 64];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p == '/') {
            *p = 0;
            if (mkdir(buf, 0755) != 0 && errno != EEXIST)
                return -1;
            *p = '/';
        }
    }
    if (mkdir(buf, 0755) != 0 && errno != EEXIST)
        return -1;
    return 0;
}

static bool file_exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0;
}

/* make_home writes config.toml and a fresh key into home; returns 0 or -1 (message printed). */
static int make_home(const char *home, const node_config *c, uint8_t pk[32], uint8_t sk[64])
{
    char path[CONFIG_PATH_MAX + 64], err[512];
    snprintf(path, sizeof path, "%s/config", home);
    if (mkdir_p(path) != 0) {
        fprintf(stderr, "pbftd: cannot create %s: %s\n", path, strerror(errno));
        return -1;
    }
    snprintf(path, sizeof path, "%s/data", home);
    if (mkdir_p(path) != 0) {
        fprintf(stderr, "pbftd: cannot create %s: %s\n", path, strerror(errno));
        return -1;
    }
    snprintf(path, sizeof path, "%s/config/config.toml", home);
    if (file_exists(path)) {
        fprintf(stderr, "pbftd: %s already exists; refusing to overwrite a node home\n", path);
        return -1;
    }
    if (config_write(path, c, err, sizeof err) != 0) {
        fprintf(stderr, "pbftd: %s\n", err);
        return -1;
    }
    keys_generate(pk, sk);
    snprintf(path, sizeof path, "%s/config/node_key.json", home);
    if (keys_file_write(path, pk, sk, err, sizeof err) != KEYS_OK) {
        fprintf(stderr, "pbftd: %s\n", err);
        return -1;
    }
    return 0;
}

static int cmd_init(int argc, char **argv)
{
    const char *home = NULL, *p2p = NULL, *rpc = NULL, *moniker = NULL, *gen = NULL;
    for (int i = 2; i < argc; i++) {
        const char *v;
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            puts("usage: pbftd init --home DIR [--moniker NAME] [--p2p tcp://HOST:PORT]\n"
                 "                  [--rpc http://HOST:PORT] [--genesis FILE]\n"
                 "\n"
                 "Creates DIR/config/config.toml, DIR/config/node_key.json (mode 0600) and\n"
                 "DIR/data. With --genesis, copies the network's genesis.json into the home;\n"
                 "without it, give this node's public key (printed) to whoever assembles the\n"
                 "genesis file, then place it at DIR/config/genesis.json.");
            return 0;
        } else if ((v = opt_value(argc, argv, &i, "--home")))
            home = v;
        else if ((v = opt_value(argc, argv, &i, "--p2p")))
            p2p = v;
        else if ((v = opt_value(argc, argv, &i, "--rpc")))
            rpc = v;
        else if ((v = opt_value(argc, argv, &i, "--moniker")))
            moniker = v;
        else if ((v = opt_value(argc, argv, &i, "--genesis")))
            gen = v;
        else {
            fprintf(stderr, "pbftd init: unknown option '%s' (try --help)\n", argv[i]);
            return 2;
        }
    }
    if (home == NULL) {
        fprintf(stderr, "pbftd init: --home DIR is required\n");
        return 2;
    }
    node_config c;
    config_defaults(&c);
    if (p2p)
        snprintf(c.p2p_listen, sizeof c.p2p_listen, "%s", p2p);
    if (rpc)
        snprintf(c.rpc_listen, sizeof c.rpc_listen, "%s", rpc);
    if (moniker)
        snprintf(c.moniker, sizeof c.moniker, "%s", moniker);
    uint8_t pk[32], sk[64];
    if (make_home(home, &c, pk, sk) != 0)
        return 1;
    if (gen != NULL) {
        genesis g;
        char err[512], path[CONFIG_PATH_MAX + 64];
        memset(&g, 0, sizeof g);
        if (genesis_load(gen, &g, err, sizeof err) != 0) {
            fprintf(stderr, "pbftd init: %s\n", err);
            return 1;
        }
        snprintf(path, sizeof path, "%s/config/genesis.json", home);
        int rc = genesis_write(path, &g, err, sizeof err);
        genesis_free(&g);
        if (rc != 0) {
            fprintf(stderr, "pbftd init: %s\n", err);
            return 1;
        }
    }
    char hex[65];
    keys_hex_encode(pk, 32, hex);
    printf("initialised %s\npublic key %s\n", home, hex);
    return 0;
}

static int cmd_testnet(int argc, char **argv)
{
    const char *out = NULL, *chain = NULL; /* NULL: a fresh random one (below) */
    long n = 4, base = 26600, accounts = 4;
    for (int i = 2; i < argc; i++) {
        const char *v;
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            puts("usage: pbftd testnet --out DIR [--n N] [--base-port P] [--chain-id ID]\n"
                 "                     [--accounts K]\n"
                 "\n"
                 "Creates DIR/node0 .. DIR/node{N-1}, each a node home on 127.0.0.1 sharing one\n"
                 "genesis. Node i listens on p2p port P+i and RPC port P+100+i (default P =\n"
                 "26600, N = 4). K funded client accounts (default 4) get their keys in\n"
                 "DIR/accounts/accountJ.json.\n"
                 "\n"
                 "Without --chain-id every network gets its own chain id, pbft-testnet- and 16\n"
                 "random hex digits, so a transaction signed for another network (such as an\n"
                 "example of docs/rpc.md) does not verify on this one. Give --chain-id ID\n"
                 "(1..64 characters [A-Za-z0-9._-]) only to reproduce a known network.");
            return 0;
        } else if ((v = opt_value(argc, argv, &i, "--out")))
            out = v;
        else if ((v = opt_value(argc, argv, &i, "--n")))
            n = strtol(v, NULL, 10);
        else if ((v = opt_value(argc, argv, &i, "--base-port")))
            base = strtol(v, NULL, 10);
        else if ((v = opt_value(argc, argv, &i, "--chain-id")))
            chain = v;
        else if ((v = opt_value(argc, argv, &i, "--accounts")))
            accounts = strtol(v, NULL, 10);
        else {
            fprintf(stderr, "pbftd testnet: unknown option '%s' (try --help)\n", argv[i]);
            return 2;
        }
    }
    if (out == NULL) {
        fprintf(stderr, "pbftd testnet: --out DIR is required\n");
        return 2;
    }
    if (n < 4 || n > PBFT_MAX_N) {
        fprintf(stderr, "pbftd testnet: --n %ld: must be 4..%d\n", n, PBFT_MAX_N);
        return 2;
    }
    if (base < 1024 || base + 100 + n > 65535) {
        fprintf(stderr, "pbftd testnet: --base-port %ld: ports P..P+100+N must be 1024..65535\n",
                base);
        return 2;
    }
    if (accounts < 0 || accounts > 10000) {
        fprintf(stderr, "pbftd testnet: --accounts %ld: must be 0..10000\n", accounts);
        return 2;
    }
    if (chain != NULL && (chain[0] == 0 || strlen(chain) > 64 ||
                          strspn(chain, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                        "0123456789._-") != strlen(chain))) {
        fprintf(stderr, "pbftd testnet: --chain-id: 1..64 characters A-Z a-z 0-9 . _ -\n");
        return 2;
    }
    if (keys_init() != KEYS_OK)
        return 1;
    genesis g;
    memset(&g, 0, sizeof g);
    if (chain != NULL) {
        snprintf(g.chain_id, sizeof g.chain_id, "%s", chain);
    } else {
        /* Two networks that share a chain id accept each other's signed transactions
         * (docs/security.md, finding 9): a fixed default made every testnet one chain. */
        uint8_t r[8];
        char hex[2 * sizeof r + 1];
        if (keys_random(r, sizeof r) != KEYS_OK)
            return 1;
        keys_hex_encode(r, sizeof r, hex);
        snprintf(g.chain_id, sizeof g.chain_id, "pbft-testnet-%s", hex);
    }
    struct timespec wall;
    clock_gettime(CLOCK_REALTIME, &wall);
    g.genesis_time_ms = (uint64_t)wall.tv_sec * 1000 + (uint64_t)wall.tv_nsec / 1000000;
    pbft_config d;
    memset(&d, 0, sizeof d);
    pbft_config_defaults(&d);
    g.checkpoint_interval = d.checkpoint_interval;
    g.window = d.window;
    g.max_inflight = d.max_inflight;
    g.max_block_txs = d.max_block_txs;
    g.max_block_bytes = d.max_block_bytes;
    g.block_interval_ms = d.block_interval_ms;
    g.view_timeout_ms = d.view_timeout_ms;
    g.view_timeout_max_ms = d.view_timeout_max_ms;
    g.resend_ms = d.resend_ms;
    g.state_retry_ms = d.state_retry_ms;
    g.max_state_blocks = d.max_state_blocks;
    g.n = (uint16_t)n;
    char path[CONFIG_PATH_MAX + 64], err[512];
    for (long i = 0; i < n; i++) {
        node_config c;
        config_defaults(&c);
        snprintf(c.moniker, sizeof c.moniker, "node%ld", i);
        snprintf(c.p2p_listen, sizeof c.p2p_listen, "tcp://127.0.0.1:%ld", base + i);
        snprintf(c.rpc_listen, sizeof c.rpc_listen, "http://127.0.0.1:%ld", base + 100 + i);
        snprintf(path, sizeof path, "%s/node%ld", out, i);
        uint8_t sk[64];
        if (make_home(path, &c, g.validators[i].public_key, sk) != 0)
            return 1;
        snprintf(g.validators[i].p2p_address, sizeof g.validators[i].p2p_address, "%s",
                 c.p2p_listen);
        snprintf(g.validators[i].rpc_address, sizeof g.validators[i].rpc_address, "%s",
                 c.rpc_listen);
        snprintf(g.validators[i].name, sizeof g.validators[i].name, "node%ld", i);
    }
    g.n_accounts = (size_t)accounts;
    g.accounts = calloc((size_t)accounts + 1, sizeof *g.accounts);
    if (g.accounts == NULL)
        return 1;
    snprintf(path, sizeof path, "%s/accounts", out);
    if (mkdir_p(path) != 0) {
        fprintf(stderr, "pbftd: cannot create %s: %s\n", path, strerror(errno));
        return 1;
    }
    for (long j = 0; j < accounts; j++) {
        uint8_t sk[64];
        keys_generate(g.accounts[j].public_key, sk);
        g.accounts[j].balance = 1000000000000ull;
        snprintf(path, sizeof path, "%s/accounts/account%ld.json", out, j);
        if (keys_file_write(path, g.accounts[j].public_key, sk, err, sizeof err) != KEYS_OK) {
            fprintf(stderr, "pbftd: %s\n", err);
            return 1;
        }
    }
    for (long i = 0; i < n; i++) {
        snprintf(path, sizeof path, "%s/node%ld/config/genesis.json", out, i);
        if (genesis_write(path, &g, err, sizeof err) != 0) {
            fprintf(stderr, "pbftd: %s\n", err);
            return 1;
        }
    }
    free(g.accounts);
    printf("created a %ld-replica network in %s (chain id %s, p2p ports %ld..%ld, rpc ports "
           "%ld..%ld)\n",
           n, out, g.chain_id, base, base + n - 1, base + 100, base + 100 + n - 1);
    return 0;
}

static node *running;

static void on_signal(int sig)
{
    if (running == NULL)
        return;
    if (sig == SIGUSR1)
        node_request_byzantine(running);
    else
        node_request_stop(running);
}

static int cmd_start(int argc, char **argv)
{
    node_options o;
    memset(&o, 0, sizeof o);
    for (int i = 2; i < argc; i++) {
        const char *v;
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            puts(
                "usage: pbftd start --home DIR [--log-level LEVEL]\n"
                "                   [--byzantine MODE[:OPTION...] --unsafe-byzantine\n"
                "                    [--byzantine-armed]]\n"
                "\n"
                "Runs the replica until SIGINT or SIGTERM. Logs go to stderr.\n"
                "--byzantine makes this replica faulty on purpose (testing only). Modes and\n"
                "their options (OPTION is key=value; docs/operations.md has details):\n"
                "  silent          sends nothing\n"
                "  crash           at=any|preprepare|prepare|commit|checkpoint|viewchange|newview\n"
                "                  after=N: the process exits at the Nth such message (default 1)\n"
                "  equivocate      as primary, a different block to each half of the backups\n"
                "  wrong-digest    votes for a digest that matches no block\n"
                "  bad-signature   corrupts every signature\n"
                "  replay          percent=P: re-sends old-view messages alongside its own\n"
                "  slow-primary    delay_ms=D: holds each pre-prepare D ms (default 1500)\n"
                "  selective       peers=1+2: sends only to these replicas (default: ids < n/2)\n"
                "  conflict-vc     a different VIEW-CHANGE to half the replicas\n"
                "  flood           factor=K: every message K more times, plus junk (default 8)\n"
                "  censor          client=HEX: as primary, never proposes that client's\n"
                "                  transactions (default: senders whose key's first byte is even)\n"
                "  bogus-state     corrupts the blocks of its state-transfer replies\n"
                "  mutate (off-by-one)  percent=P: view or sequence number +-1 on P% of votes\n"
                "  newview-omit, newview-digest, newview-invent, newview-few, newview-dup,\n"
                "  newview-wrong-view\n"
                "                  as a new primary, a forged NEW-VIEW: an omitted prepared\n"
                "                  certificate, an altered digest, a request at a null slot, 2f\n"
                "                  VIEW-CHANGEs, a repeated one, or the wrong view\n"
                "A bare number as the first option is delay_ms, as the second percent.\n"
                "The node refuses a Byzantine mode unless --unsafe-byzantine is also given.\n"
                "--byzantine-armed: behave honestly until SIGUSR1, then turn Byzantine (lets a\n"
                "scenario runner choose the moment; the event log says when: byzantine_active).");
            return 0;
        } else if ((v = opt_value(argc, argv, &i, "--home")))
            o.home = v;
        else if ((v = opt_value(argc, argv, &i, "--byzantine")))
            o.byzantine = v;
        else if ((v = opt_value(argc, argv, &i, "--log-level")))
            o.log_level = v;
        else if (strcmp(argv[i], "--unsafe-byzantine") == 0)
            o.unsafe_byzantine = true;
        else if (strcmp(argv[i], "--byzantine-armed") == 0)
            o.byzantine_armed = true;
        else {
            fprintf(stderr, "pbftd start: unknown option '%s' (try --help)\n", argv[i]);
            return 2;
        }
    }
    if (o.home == NULL) {
        fprintf(stderr, "pbftd start: --home DIR is required\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    char err[1024];
    node *n;
    int orc = node_open(&o, &n, err, sizeof err);
    if (orc != 0) {
        fprintf(stderr, "pbftd: %s\n", err);
        if (orc == -2) { /* threads still inside nng must not see exit()'s teardown */
            fflush(NULL);
            _exit(1);
        }
        return orc == NODE_OPEN_DISK_FULL ? NODE_EXIT_DISK_FULL : 1;
    }
    running = n;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    node_run(n);
    log_msg(LOG_INFO, "stopping");
    if (node_close(n) == NODE_CLOSE_ABANDONED || !node_library_fini()) {
        /* An nng close hung past its deadline (node.h). Everything durable is on disk; the
         * threads still inside nng must not see exit()'s teardown, so end here. */
        log_msg(LOG_WARN, "stopped (an nng close was abandoned)");
        _exit(0);
    }
    log_msg(LOG_INFO, "stopped");
    return 0;
}

static int need_home(int argc, char **argv, const char **home, const char *help)
{
    for (int i = 2; i < argc; i++) {
        const char *v;
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            puts(help);
            return 1;
        } else if ((v = opt_value(argc, argv, &i, "--home")))
            *home = v;
        else {
            fprintf(stderr, "pbftd %s: unknown option '%s' (try --help)\n", argv[1], argv[i]);
            return 2;
        }
    }
    if (*home == NULL) {
        fprintf(stderr, "pbftd %s: --home DIR is required\n", argv[1]);
        return 2;
    }
    return 0;
}

/* load_home_config reads DIR/config/config.toml over the defaults; prints the error. */
static int load_home_config(const char *home, node_config *c)
{
    char path[CONFIG_PATH_MAX + 64], err[512];
    config_defaults(c);
    snprintf(path, sizeof path, "%s/config/config.toml", home);
    if (config_load(path, c, err, sizeof err) != 0) {
        fprintf(stderr, "pbftd: %s\n", err);
        return -1;
    }
    return 0;
}

static int cmd_show_node_id(int argc, char **argv)
{
    const char *home = NULL;
    int rc = need_home(argc, argv, &home,
                       "usage: pbftd show-node-id --home DIR\n\nPrints the node's public key "
                       "and, if genesis lists it, its validator id.");
    if (rc != 0)
        return rc == 1 ? 0 : rc;
    char path[CONFIG_PATH_MAX + 64], err[512];
    node_config c;
    if (load_home_config(home, &c) != 0)
        return 1;
    config_resolve(home, c.key_file, "", path, sizeof path);
    uint8_t pk[32], sk[64];
    if (keys_file_read(path, pk, sk, err, sizeof err) != KEYS_OK) {
        fprintf(stderr, "pbftd: %s\n", err);
        return 1;
    }
    char hex[65];
    keys_hex_encode(pk, 32, hex);
    genesis g;
    memset(&g, 0, sizeof g);
    snprintf(path, sizeof path, "%s/config/genesis.json", home);
    int id = -1;
    if (genesis_load(path, &g, err, sizeof err) == 0) {
        for (uint16_t i = 0; i < g.n; i++)
            if (memcmp(g.validators[i].public_key, pk, 32) == 0)
                id = i;
        genesis_free(&g);
    }
    if (id >= 0)
        printf("%s validator %d\n", hex, id);
    else
        printf("%s\n", hex);
    return 0;
}

static int cmd_reset(int argc, char **argv)
{
    const char *home = NULL;
    int rc = need_home(argc, argv, &home,
                       "usage: pbftd unsafe-reset-all --home DIR\n\nDeletes DIR's blocks, state "
                       "and consensus records (the data directory's database).\nKeeps the "
                       "config and the key. On restart the node catches up from its peers.");
    if (rc != 0)
        return rc == 1 ? 0 : rc;
    char path[CONFIG_PATH_MAX + 64], err[512];
    node_config c;
    if (load_home_config(home, &c) != 0)
        return 1;
    config_resolve(home, c.data_dir, "/db", path, sizeof path);
    if (store_destroy(path, err, sizeof err) != STORE_OK) {
        fprintf(stderr, "pbftd: %s\n", err);
        return 1;
    }
    printf("removed %s\n", path);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        printf("pbftd %s (wire version %d)\n", PBFTD_VERSION, PBFT_WIRE_VERSION);
        return 0;
    }
    if (strcmp(cmd, "init") == 0)
        return cmd_init(argc, argv);
    if (strcmp(cmd, "testnet") == 0)
        return cmd_testnet(argc, argv);
    if (strcmp(cmd, "start") == 0)
        return cmd_start(argc, argv);
    if (strcmp(cmd, "show-node-id") == 0)
        return cmd_show_node_id(argc, argv);
    if (strcmp(cmd, "unsafe-reset-all") == 0)
        return cmd_reset(argc, argv);
    fprintf(stderr, "pbftd: unknown command '%s'\n\n", cmd);
    usage(stderr);
    return 2;
}
