/*
 * sim_main.c - pbft-sim: random fault runs, named scenarios and the core benchmark.
 */
#ifdef NDEBUG
#error "the simulator refuses to run without assertions"
#endif

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "crypto/keys.h"
#include "tests/sim/scenarios.h"
#include "tests/sim/sim.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage:\n"
            "  pbft-sim --n N --seed S [--seeds COUNT] [--power-cuts | --alloc-faults]\n"
            "           [--verbose]\n"
            "      random fault runs (Byzantine and crashing replicas, loss, duplicates,\n"
            "      delay, partitions) for seeds S..S+COUNT-1; N is 4, 7 or 13. With\n"
            "      --power-cuts every crash is a power cut that loses the unsynced batch of\n"
            "      the step it lands in; with --alloc-faults every crash is an allocation\n"
            "      that fails in the core (the k-th from then on, k drawn from the seed),\n"
            "      after which the replica emits nothing of that step and fail-stops.\n"
            "  pbft-sim --scenario NAME [--seed S] [--verbose]\n"
            "      a named scenario; --scenario list shows them, --scenario all runs all.\n"
            "  pbft-sim --bench --block-txs B [--blocks M]\n"
            "      core benchmark: 4 honest replicas, one JSON line on stdout.\n"
            "options:\n"
            "  --no-preverify-cache   every receiver verifies every frame itself\n"
            "  --verbose              one trace line per event on stderr\n"
            "  --help                 this text\n"
            "Random runs heal their faults at 4..8 s of virtual time; from then on every\n"
            "transaction must commit at every honest replica within %u s (the liveness\n"
            "bound). A failing seed prints 'FAIL seed=S n=N: <reason>' and a replay command.\n"
            "PBFT_SIM_COSTS=1 in the environment adds cost counters to a seed range's summary\n"
            "(frames, signature checks, slowest recovery, wall time per passing/failing run).\n",
            SIM_LIVENESS_BOUND_MS / 1000);
}

static double now_s(clockid_t clk)
{
    struct timespec ts;
    clock_gettime(clk, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int parse_u64(const char *s, uint64_t *out)
{
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-')
        return -1;
    *out = v;
    return 0;
}

static void self_path(const char *argv0, char *out, size_t cap)
{
    char buf[PATH_MAX];
    ssize_t n = -1;
    n = readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n > 0) {
        buf[n] = 0;
        snprintf(out, cap, "%s", buf);
    } else {
        snprintf(out, cap, "%s", argv0);
    }
}

/* ---------------------------------------------------------------------------------------
 * Random runs.
 * -------------------------------------------------------------------------------------*/
static int random_runs(uint16_t n, uint64_t seed, uint64_t count, bool verbose, bool cache,
                       int crash_kind, const char *self)
{
    static const char *const kind_flag[] = {"", " --power-cuts", " --alloc-faults"};
    const char *flag = kind_flag[crash_kind];
    uint64_t passed = 0, failed = 0;
    sim_totals sum = {0};
    uint64_t worst_seed = 0;
    double pass_s = 0, fail_s = 0;
    double w0 = now_s(CLOCK_MONOTONIC);
    for (uint64_t k = 0; k < count; k++) {
        uint64_t sd = seed + k;
        sim_options o;
        sim_random_plan plan;
        sim_random_options(n, sd, &o, &plan);
        plan.power_cuts = crash_kind == SIM_CRASH_POWER_CUT;
        plan.alloc_faults = crash_kind == SIM_CRASH_ALLOC_FAULT;
        o.verbose = verbose;
        o.preverify_cache = cache;
        if (verbose) {
            char desc[1024];
            sim_random_describe(&o, &plan, desc, sizeof desc);
            fprintf(stderr, "seed=%" PRIu64 " %s liveness_bound=%us\n", sd, desc,
                    SIM_LIVENESS_BOUND_MS / 1000);
        }
        sim *s = NULL;
        char err[256];
        if (sim_new(&o, &s, err, sizeof err) != 0) {
            printf("FAIL seed=%" PRIu64 " n=%u: setup: %s\n", sd, n, err);
            printf("replay: %s --n %u --seed %" PRIu64 "%s --verbose\n", self, n, sd, flag);
            failed++;
            continue;
        }
        if (sim_random_apply(s, &plan) != 0) {
            printf("FAIL seed=%" PRIu64 " n=%u: setup: could not apply the fault plan\n", sd, n);
            printf("replay: %s --n %u --seed %" PRIu64 "%s --verbose\n", self, n, sd, flag);
            failed++;
            sim_free(s);
            continue;
        }
        double r0 = now_s(CLOCK_MONOTONIC);
        int st = sim_run(s);
        double r1 = now_s(CLOCK_MONOTONIC);
        if (st == SIM_LIVE)
            pass_s += r1 - r0;
        else
            fail_s += r1 - r0;
        sim_totals t;
        sim_get_totals(s, &t);
        sum.commits += t.commits;
        sum.view_changes += t.view_changes;
        sum.vc_complaints += t.vc_complaints;
        sum.crashes += t.crashes;
        sum.power_cuts += t.power_cuts;
        sum.alloc_faults += t.alloc_faults;
        sum.byz_actions += t.byz_actions;
        sum.sim_ms += t.sim_ms;
        sum.events += t.events;
        sum.txs_committed += t.txs_committed;
        sum.dup_tx_commits += t.dup_tx_commits;
        sum.frames_sent += t.frames_sent;
        sum.sig_verifies += t.sig_verifies;
        sum.preverify_calls += t.preverify_calls;
        sum.preverify_hits += t.preverify_hits;
        sum.deliveries += t.deliveries;
        sum.requests += t.requests;
        if (st == SIM_LIVE) {
            passed++;
            if (t.heal_to_live_ms > sum.heal_to_live_ms) {
                sum.heal_to_live_ms = t.heal_to_live_ms;
                worst_seed = sd;
            }
        } else {
            failed++;
            printf("FAIL seed=%" PRIu64 " n=%u: %s\n", sd, n,
                   st == SIM_VIOLATION ? sim_violation(s) : "stopped");
            printf("replay: %s --n %u --seed %" PRIu64 "%s --verbose\n", self, n, sd, flag);
            fflush(stdout);
            if (verbose)
                sim_dump(s, stderr);
        }
        sim_free(s);
    }
    double wall = now_s(CLOCK_MONOTONIC) - w0;
    printf("%" PRIu64 " passed, %" PRIu64 " failed\n", passed, failed);
    if (getenv("PBFT_SIM_COSTS"))
        printf("costs: frames_sent=%" PRIu64 " deliveries=%" PRIu64 " core_sig_verifies=%" PRIu64
               " preverify_calls=%" PRIu64 " preverify_hits=%" PRIu64 " requests=%" PRIu64 "\n",
               sum.frames_sent, sum.deliveries, sum.sig_verifies, sum.preverify_calls,
               sum.preverify_hits, sum.requests);
    if (getenv("PBFT_SIM_COSTS"))
        printf("slowest recovery among passing runs: %" PRIu64 " ms after the heal (seed %" PRIu64
               ")\n",
               sum.heal_to_live_ms, worst_seed);
    if (getenv("PBFT_SIM_COSTS"))
        printf("wall per run: passing %.3f s, failing %.3f s\n",
               passed ? pass_s / (double)passed : 0.0, failed ? fail_s / (double)failed : 0.0);
    printf("totals: n=%u seeds=%" PRIu64 "..%" PRIu64 " commits=%" PRIu64 " view_changes=%" PRIu64
           " (on_complaints=%" PRIu64 ") crashes=%" PRIu64 " (power_cuts=%" PRIu64
           " alloc_faults=%" PRIu64 ") byzantine_actions=%" PRIu64 " duplicate_tx_commits=%" PRIu64
           " events=%" PRIu64 " simulated_s=%.1f wall_s=%.2f seeds_per_s=%.2f "
           "liveness_bound_s=%u\n",
           n, seed, seed + count - 1, sum.commits, sum.view_changes, sum.vc_complaints, sum.crashes,
           sum.power_cuts, sum.alloc_faults, sum.byz_actions, sum.dup_tx_commits, sum.events,
           (double)sum.sim_ms / 1000.0, wall, wall > 0 ? (double)count / wall : 0.0,
           SIM_LIVENESS_BOUND_MS / 1000);
    return failed ? 1 : 0;
}

/* ---------------------------------------------------------------------------------------
 * Benchmark.
 * -------------------------------------------------------------------------------------*/
static double measure_verify_per_s(void)
{
    uint8_t seed[32] = {1}, pk[32], sk[64], sig[64], msg[128];
    memset(msg, 0x5a, sizeof msg);
    keys_from_seed(seed, pk, sk);
    keys_sign(sk, msg, sizeof msg, sig);
    double t0 = now_s(CLOCK_PROCESS_CPUTIME_ID), t1;
    uint64_t k = 0;
    do {
        for (int i = 0; i < 64; i++) {
            if (!keys_verify(pk, msg, sizeof msg, sig)) {
                fprintf(stderr, "pbft-sim: keys_verify rejected a valid signature\n");
                exit(1);
            }
        }
        k += 64;
        t1 = now_s(CLOCK_PROCESS_CPUTIME_ID);
    } while (t1 - t0 < 1.0);
    return (double)k / (t1 - t0);
}

static int bench(uint32_t block_txs, uint32_t blocks)
{
    const uint16_t n = 4;
    sim_options o;
    sim_options_defaults(&o, n, 1);
    o.n_clients = 16; /* keys only: the transactions are pre-signed */
    o.txs_total = 0;
    o.delay_min_ms = o.delay_max_ms = 1;
    o.preverify_cache = false; /* every replica verifies, as in reality */
    o.core.max_block_txs = block_txs;
    o.core.max_block_bytes = PBFT_MAX_BLOCK_BYTES;
    o.core.checkpoint_interval = 16;
    o.core.window = 64;
    o.core.max_inflight = 32;
    o.core.view_timeout_ms = 60000;
    o.core.view_timeout_max_ms = 120000;
    o.core.resend_ms = 30000;
    uint64_t total = (uint64_t)block_txs * blocks;
    if (o.core.max_pending_txs < total)
        o.core.max_pending_txs = (uint32_t)(total < 1000000 ? total : 1000000);
    o.heal_ms = 0;
    o.liveness_bound_ms = 1000000000;
    sim *s = NULL;
    char err[256];
    if (sim_new(&o, &s, err, sizeof err) != 0) {
        fprintf(stderr, "pbft-sim: bench setup: %s\n", err);
        return 1;
    }
    if (sim_bench_presign(s, (uint32_t)total) != 0) {
        fprintf(stderr, "pbft-sim: bench: pre-signing failed\n");
        sim_free(s);
        return 1;
    }
    uint32_t inflight = o.core.max_pending_txs;
    if (inflight > total)
        inflight = (uint32_t)total;
    sim_bench_feed(s, 0, inflight);

    double c0 = now_s(CLOCK_PROCESS_CPUTIME_ID);
    int st = sim_run(s);
    double c1 = now_s(CLOCK_PROCESS_CPUTIME_ID);
    if (st != SIM_LIVE) {
        fprintf(stderr, "pbft-sim: bench run did not complete: %s\n",
                sim_violation(s) ? sim_violation(s) : "stopped");
        sim_free(s);
        return 1;
    }
    sim_totals t;
    sim_get_totals(s, &t);
    /* Count the blocks that carried exactly B transactions (at replica 0). */
    uint64_t full = 0, height = sim_node_height(s, 0);
    for (uint64_t h = 1; h <= height; h++)
        if (sim_node_block_txs(s, 0, h) == block_txs)
            full++;
    double verify = measure_verify_per_s();
    double cpu = c1 - c0;
    double tps = cpu > 0 ? (double)total / cpu : 0.0;
    printf("{\"bench\":\"core\",\"block_txs\":%u,\"n\":%u,\"blocks\":%" PRIu64
           ",\"committed_txs\":%" PRIu64 ",\"cpu_s\":%.3f,\"committed_tx_per_cpu_s\":%.1f,"
           "\"verify_per_s\":%.1f,\"efficiency\":%.4f,\"full_blocks\":%" PRIu64
           ",\"preverify_cache\":false}\n",
           block_txs, n, height, total, cpu, tps, verify, verify > 0 ? tps * n / verify : 0.0,
           full);
    sim_free(s);
    return 0;
}

/* ---------------------------------------------------------------------------------------
 * main.
 * -------------------------------------------------------------------------------------*/
int main(int argc, char **argv)
{
    uint64_t n = 0, seed = 1, seeds = 1, block_txs = 0, blocks = 0;
    bool have_seed = false, verbose = false, do_bench = false, cache = true;
    int crash_kind = SIM_CRASH_PLAIN;
    const char *scenario = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--verbose") || !strcmp(a, "-v")) {
            verbose = true;
        } else if (!strcmp(a, "--bench")) {
            do_bench = true;
        } else if (!strcmp(a, "--no-preverify-cache")) {
            cache = false;
        } else if (!strcmp(a, "--power-cuts") || !strcmp(a, "--alloc-faults")) {
            int k = !strcmp(a, "--power-cuts") ? SIM_CRASH_POWER_CUT : SIM_CRASH_ALLOC_FAULT;
            if (crash_kind != SIM_CRASH_PLAIN && crash_kind != k) {
                fprintf(stderr, "pbft-sim: --power-cuts and --alloc-faults exclude each other\n");
                return 2;
            }
            crash_kind = k;
        } else if (v && !strcmp(a, "--scenario")) {
            scenario = v;
            i++;
        } else if (v && (!strcmp(a, "--n") || !strcmp(a, "--seed") || !strcmp(a, "--seeds") ||
                         !strcmp(a, "--block-txs") || !strcmp(a, "--blocks"))) {
            uint64_t x;
            if (parse_u64(v, &x) != 0) {
                fprintf(stderr, "pbft-sim: %s wants a number, got '%s'\n", a, v);
                return 2;
            }
            if (!strcmp(a, "--n"))
                n = x;
            else if (!strcmp(a, "--seed")) {
                seed = x;
                have_seed = true;
            } else if (!strcmp(a, "--seeds"))
                seeds = x;
            else if (!strcmp(a, "--block-txs"))
                block_txs = x;
            else
                blocks = x;
            i++;
        } else {
            fprintf(stderr, "pbft-sim: unknown or incomplete option '%s' (try --help)\n", a);
            return 2;
        }
    }
    char self[PATH_MAX + 1];
    self_path(argv[0], self, sizeof self);

    if (do_bench) {
        if (block_txs == 0 || block_txs > PBFT_MAX_BLOCK_TXS) {
            fprintf(stderr, "pbft-sim: --bench needs --block-txs 1..%d\n", PBFT_MAX_BLOCK_TXS);
            return 2;
        }
        if (blocks == 0)
            blocks = block_txs >= 10000 ? 2 : 10000 / block_txs;
        if (blocks > 100000 || block_txs * blocks > 1000000) {
            fprintf(stderr, "pbft-sim: --blocks too large (at most 10^6 transactions)\n");
            return 2;
        }
        return bench((uint32_t)block_txs, (uint32_t)blocks);
    }
    if (scenario) {
        size_t count;
        const sim_scenario *sc = sim_scenarios(&count);
        if (!strcmp(scenario, "list")) {
            for (size_t k = 0; k < count; k++)
                printf("%-28s %s\n", sc[k].name, sc[k].what);
            return 0;
        }
        int rc = 0;
        bool found = false;
        for (size_t k = 0; k < count; k++) {
            if (!strcmp(scenario, "all") || !strcmp(scenario, sc[k].name)) {
                found = true;
                rc |= sc[k].run(have_seed ? seed : 1, verbose);
            }
        }
        if (!found) {
            fprintf(stderr, "pbft-sim: no scenario '%s' (try --scenario list)\n", scenario);
            return 2;
        }
        return rc;
    }
    if (n != 4 && n != 7 && n != 13) {
        fprintf(stderr, "pbft-sim: --n must be 4, 7 or 13 (try --help)\n");
        return 2;
    }
    if (!have_seed || seeds == 0) {
        fprintf(stderr, "pbft-sim: random runs need --seed S (and --seeds >= 1)\n");
        return 2;
    }
    return random_runs((uint16_t)n, seed, seeds, verbose, cache, crash_kind, self);
}
