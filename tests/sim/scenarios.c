/*
 * scenarios.c - the random fault-run generator and the named scenarios of pbft-sim.
 *
 * Every scenario states its assertions in C and returns 0 only if all of them held.
 */
#ifdef NDEBUG
#error "the simulator refuses to run without assertions"
#endif

#include "tests/sim/scenarios.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "consensus/byz.h"
#include "consensus/msg.h"

/* ---------------------------------------------------------------------------------------
 * Random fault runs.
 * -------------------------------------------------------------------------------------*/
void sim_random_options(uint16_t n, uint64_t seed, sim_options *o, sim_random_plan *p)
{
    memset(p, 0, sizeof *p);
    sim_options_defaults(o, n, seed);
    sim_rng g;
    sim_rng_seed(&g, sim_mix64(seed ^ 0x52414e444f4d0000ull)); /* the plan's own stream */
    int f = (n - 1) / 3;

    /* Small limits so checkpoints, garbage collection and the window are exercised. */
    o->core.checkpoint_interval = 4;
    o->core.window = sim_rng_below(&g, 2) ? 16 : 8;
    o->core.max_inflight = (uint32_t)sim_rng_range(&g, 2, o->core.window);
    o->core.max_block_txs = (uint32_t)sim_rng_range(&g, 1, 8);
    o->core.block_interval_ms = 5;
    o->core.view_timeout_ms = (uint32_t)sim_rng_range(&g, 500, 1000);
    o->core.view_timeout_max_ms = o->core.view_timeout_ms * 8;
    o->core.monitor_ms = o->core.view_timeout_ms / 2;
    o->core.resend_ms = 200;
    o->core.state_retry_ms = (uint32_t)sim_rng_range(&g, 300, 800);
    o->core.max_state_blocks = (uint32_t)sim_rng_range(&g, 2, 8);

    /* Faults (loss, duplicates, partitions, crashes) last 4..8 s of virtual time, then heal.
     * Long enough for several view changes and a crashed replica missing checkpoints; short
     * enough for the ctest budget (thousands of seeds on two cores). */
    uint64_t heal = sim_rng_range(&g, 4000, 8000);
    bool clean_net = sim_rng_below(&g, 100) < 15;
    if (!clean_net) {
        o->drop_ppm = (uint32_t)sim_rng_range(&g, 0, 100000); /* 0..10% */
        o->dup_ppm = (uint32_t)sim_rng_range(&g, 0, 50000);   /* 0..5% */
    }
    o->delay_min_ms = (uint32_t)sim_rng_range(&g, 1, 5);
    o->delay_max_ms = (uint32_t)sim_rng_range(&g, o->delay_min_ms, 50);

    o->n_clients = (uint32_t)sim_rng_range(&g, 1, 4);
    o->txs_total = (uint32_t)sim_rng_range(&g, 16, 32);
    o->submit_start_ms = 0;
    o->submit_end_ms = heal * 7 / 10;
    o->submit_burst_max = (uint32_t)sim_rng_range(&g, 1, 6);
    uint64_t mean_gap =
        o->submit_end_ms * o->n_clients * (1 + o->submit_burst_max) / 2 / o->txs_total;
    o->submit_gap_min_ms = (uint32_t)(mean_gap / 2);
    o->submit_gap_max_ms = (uint32_t)(mean_gap * 3 / 2);
    o->client_retry_ms = (uint32_t)sim_rng_range(&g, 1000, 3000);
    o->heal_ms = heal;
    o->liveness_bound_ms = SIM_LIVENESS_BOUND_MS;

    /* The faulty set: b Byzantine and c crash-restart replicas, b + c <= f. */
    int nfault =
        (f == 0 || sim_rng_below(&g, 100) < 20) ? 0 : (int)sim_rng_range(&g, 1, (uint64_t)f);
    int b = nfault ? (int)sim_rng_range(&g, 0, (uint64_t)nfault) : 0;
    int c = nfault - b;
    int ids[PBFT_MAX_N];
    for (int i = 0; i < n; i++)
        ids[i] = i;
    for (int i = n - 1; i > 0; i--) {
        int j = (int)sim_rng_below(&g, (uint64_t)i + 1);
        int t = ids[i];
        ids[i] = ids[j];
        ids[j] = t;
    }
    p->byz_delay_ms = o->core.view_timeout_ms * 3 / 4;
    p->byz_percent = (uint32_t)sim_rng_range(&g, 20, 80);
    for (int i = 0; i < b; i++) {
        p->byz_node[p->n_byz] = ids[i];
        /* Drawn from the modes before the NEW-VIEW forgers, so that every seed replays the
         * plan it had when its bug was found; the forgers have their own seed ranges
         * (newview-forgers-random). */
        p->byz_mode[p->n_byz] = (int)sim_rng_range(&g, 1, PBFT_BYZ_BOGUS_STATE);
        p->n_byz++;
    }
    for (int i = 0; i < c; i++) {
        int k = p->n_crash++;
        p->crash_node[k] = ids[b + i];
        int times = (int)sim_rng_range(&g, 1, 2);
        p->crash_times[k] = times;
        uint64_t lo = 300, hi = heal - 300;
        uint64_t slot = (hi - lo) / (uint64_t)times;
        for (int t = 0; t < times; t++) {
            uint64_t a = lo + slot * (uint64_t)t, e = a + slot;
            uint64_t at = sim_rng_range(&g, a, a + slot / 2);
            uint64_t up = sim_rng_range(&g, at + 100, e);
            p->crash_at[k][t] = at;
            p->restart_at[k][t] = up;
        }
    }

    /* Partitions: anything may be cut, since it heals. */
    p->n_parts = clean_net ? 0 : (int)sim_rng_range(&g, 0, 3);
    for (int i = 0; i < p->n_parts; i++) {
        uint64_t start = sim_rng_range(&g, 0, heal - 600);
        uint64_t end = start + sim_rng_range(&g, 200, 3000);
        if (end >= heal)
            end = heal - 1;
        p->part_start[i] = start;
        p->part_end[i] = end;
        int type = (int)sim_rng_below(&g, 4);
        p->part_type[i] = type;
        uint8_t *cut = p->part_cut[i];
        int x = (int)sim_rng_below(&g, n);
        int out_only = (int)sim_rng_below(&g, 2);
        uint8_t side[PBFT_MAX_N];
        for (int a = 0; a < n; a++)
            side[a] = (uint8_t)sim_rng_below(&g, 2);
        for (int a = 0; a < n; a++) {
            for (int bb = 0; bb < n; bb++) {
                if (a == bb)
                    continue;
                bool k = false;
                switch (type) {
                case 0: /* isolate x, both directions */
                    k = a == x || bb == x;
                    break;
                case 1: /* isolate x one way: it cannot send, or cannot hear */
                    k = out_only ? a == x : bb == x;
                    break;
                case 2: /* split in two sides */
                    k = side[a] != side[bb];
                    break;
                default: /* random one-way cuts */
                    k = sim_rng_below(&g, 100) < 30;
                    break;
                }
                cut[a * n + bb] = k;
            }
        }
    }
}

int sim_random_apply(sim *s, const sim_random_plan *p)
{
    for (int i = 0; i < p->n_byz; i++)
        if (sim_set_byz(s, p->byz_node[i], p->byz_mode[i], p->byz_delay_ms, p->byz_percent) != 0)
            return -1;
    for (int i = 0; i < p->n_crash; i++) {
        for (int t = 0; t < p->crash_times[i]; t++) {
            uint64_t at = p->crash_at[i][t];
            int node = p->crash_node[i];
            /* The allocation that fails: the k-th from `at`, k in 1..400, derived from the
             * plan so that a seed replays it. */
            uint32_t k = (uint32_t)(1 + sim_mix64(at * 31 + (uint64_t)node) % 400);
            int rc = p->power_cuts     ? sim_at_power_cut(s, at, node, 0)
                     : p->alloc_faults ? sim_at_alloc_fault(s, at, node, k)
                                       : sim_at_crash(s, at, node);
            if (rc != 0 || sim_at_restart(s, p->restart_at[i][t], p->crash_node[i]) != 0)
                return -1;
        }
    }
    for (int i = 0; i < p->n_parts; i++)
        if (sim_add_partition(s, p->part_start[i], p->part_end[i], p->part_cut[i]) != 0)
            return -1;
    return 0;
}

void sim_random_describe(const sim_options *o, const sim_random_plan *p, char *out, size_t cap)
{
    static const char *ptype[] = {"isolate", "isolate-oneway", "split", "oneway-cuts"};
    size_t w = 0;
#define APPEND(...)                                                                                \
    do {                                                                                           \
        if (w < cap) {                                                                             \
            int r_ = snprintf(out + w, cap - w, __VA_ARGS__);                                      \
            if (r_ > 0)                                                                            \
                w += (size_t)r_;                                                                   \
        }                                                                                          \
    } while (0)
    APPEND("n=%u f=%u byz=[", o->n, (o->n - 1) / 3);
    for (int i = 0; i < p->n_byz; i++)
        APPEND("%s%d:%s", i ? " " : "", p->byz_node[i], pbft_byz_mode_name(p->byz_mode[i]));
    APPEND("] crash=[");
    for (int i = 0; i < p->n_crash; i++) {
        APPEND("%s%d", i ? " " : "", p->crash_node[i]);
        for (int t = 0; t < p->crash_times[i]; t++)
            APPEND("@%" PRIu64 "-%" PRIu64, p->crash_at[i][t], p->restart_at[i][t]);
    }
    APPEND("] parts=[");
    for (int i = 0; i < p->n_parts; i++)
        APPEND("%s%s@%" PRIu64 "-%" PRIu64, i ? " " : "", ptype[p->part_type[i]], p->part_start[i],
               p->part_end[i]);
    APPEND("] drop=%.1f%% dup=%.1f%% delay=%u..%ums heal=%" PRIu64 "ms txs=%u clients=%u "
           "burst=%u window=%u inflight=%u block_txs=%u view_timeout=%ums retry=%ums",
           o->drop_ppm / 10000.0, o->dup_ppm / 10000.0, o->delay_min_ms, o->delay_max_ms,
           o->heal_ms, o->txs_total, o->n_clients, o->submit_burst_max, o->core.window,
           o->core.max_inflight, o->core.max_block_txs, o->core.view_timeout_ms,
           o->client_retry_ms);
#undef APPEND
}

/* ---------------------------------------------------------------------------------------
 * Scenario helpers.
 * -------------------------------------------------------------------------------------*/
static int check(bool cond, const char *scenario, const char *what)
{
    if (!cond) {
        printf("FAIL scenario %s: %s\n", scenario, what);
        return 1;
    }
    return 0;
}

static sim *make_sim(const sim_options *o, const char *name)
{
    sim *s = NULL;
    char err[256];
    if (sim_new(o, &s, err, sizeof err) != 0) {
        printf("FAIL scenario %s: sim_new: %s\n", name, err);
        return NULL;
    }
    return s;
}

/* A run must end live (every tx committed everywhere); otherwise print the checker. */
static int expect_live(sim *s, int st, const char *name)
{
    if (st == SIM_LIVE)
        return 0;
    printf("FAIL scenario %s: %s\n", name,
           st == SIM_VIOLATION ? sim_violation(s) : "run stopped before it was live");
    return 1;
}

static void honest_stats_sum(sim *s, pbft_stats *sum)
{
    memset(sum, 0, sizeof *sum);
    for (int i = 0; i < sim_node_count(s); i++) {
        if (!sim_node_honest(s, i))
            continue;
        pbft_stats st;
        sim_node_stats(s, i, &st);
        for (int k = 0; k < PBFT_DROP__COUNT; k++)
            sum->drops[k] += st.drops[k];
        for (int k = 0; k < PBFT_VC__COUNT; k++)
            sum->view_changes[k] += st.view_changes[k];
        for (int k = 0; k < PBFT_COMPLAINT__COUNT; k++)
            sum->complaints[k] += st.complaints[k];
        sum->state_transfers += st.state_transfers;
        sum->blocks_committed += st.blocks_committed;
        sum->txs_committed += st.txs_committed;
        sum->sig_verifies += st.sig_verifies;
    }
}

static uint64_t vc_total(const pbft_stats *st)
{
    uint64_t t = 0;
    for (int k = 0; k < PBFT_VC__COUNT; k++)
        t += st->view_changes[k];
    return t;
}

/* ---------------------------------------------------------------------------------------
 * silent-primary: replica 0 (primary of view 0) never sends anything.
 * -------------------------------------------------------------------------------------*/
static int sc_silent_primary(uint64_t seed, bool verbose)
{
    const char *name = "silent-primary";
    sim_options o;
    sim_options_defaults(&o, 4, seed);
    o.verbose = verbose;
    o.txs_total = 12;
    o.submit_end_ms = 2000;
    o.heal_ms = 2000;
    sim *s = make_sim(&o, name);
    if (!s)
        return 1;
    int rc = check(sim_set_byz(s, 0, PBFT_BYZ_SILENT, 0, 0) == 0, name, "sim_set_byz");
    int st = sim_run(s);
    rc |= expect_live(s, st, name);
    pbft_stats sum;
    honest_stats_sum(s, &sum);
    for (int i = 1; i < 4 && rc == 0; i++) {
        const pbft_replica *r = sim_node_replica(s, i);
        rc |= check(r && pbft_replica_view(r) >= 1, name, "an honest replica did not leave view 0");
    }
    rc |= check(vc_total(&sum) > 0, name, "honest replicas counted no view change");
    if (rc == 0)
        printf("ok scenario %s: %u txs committed, views %" PRIu64 "/%" PRIu64 "/%" PRIu64
               ", %" PRIu64 " honest view changes\n",
               name, sim_txs_submitted(s), pbft_replica_view(sim_node_replica(s, 1)),
               pbft_replica_view(sim_node_replica(s, 2)), pbft_replica_view(sim_node_replica(s, 3)),
               vc_total(&sum));
    sim_free(s);
    return rc;
}

/* ---------------------------------------------------------------------------------------
 * slow-primary-replaced: replica 0 holds every pre-prepare 95% of the view timeout, which
 * the request timer alone never catches (every block commits in time). Primary monitoring
 * must replace it: the honest replicas change view on complaints and commit everything.
 * -------------------------------------------------------------------------------------*/
static int sc_slow_primary_replaced(uint64_t seed, bool verbose)
{
    const char *name = "slow-primary-replaced";
    sim_options o;
    sim_options_defaults(&o, 4, seed);
    o.verbose = verbose;
    o.txs_total = 40;
    o.submit_end_ms = 4000;
    o.submit_to_backups = true; /* monitoring watches what reaches backups */
    sim *s = make_sim(&o, name);
    if (!s)
        return 1;
    int rc =
        check(sim_set_byz(s, 0, PBFT_BYZ_SLOW_PRIMARY, o.core.view_timeout_ms * 95 / 100, 0) == 0,
              name, "sim_set_byz");
    int st = sim_run(s);
    rc |= expect_live(s, st, name);
    pbft_stats sum;
    honest_stats_sum(s, &sum);
    rc |= check(sum.view_changes[PBFT_VC_COMPLAINTS] > 0, name,
                "no honest replica changed view on complaints");
    rc |= check(sum.complaints[PBFT_COMPLAINT_SLOW] > 0, name, "no slow complaint was sent");
    for (int i = 1; i < 4 && rc == 0; i++) {
        const pbft_replica *r = sim_node_replica(s, i);
        rc |= check(r && pbft_replica_primary(r) != 0, name, "replica 0 is still the primary");
        /* One view change: the correct primary of view 1 must not draw complaints too. */
        rc |= check(r && pbft_replica_view(r) == 1, name, "not exactly one view change");
    }
    if (rc == 0)
        printf("ok scenario %s: %u txs committed; %" PRIu64 " slow complaints, %" PRIu64
               " view changes on complaints, view %" PRIu64 "\n",
               name, sim_txs_submitted(s), sum.complaints[PBFT_COMPLAINT_SLOW],
               sum.view_changes[PBFT_VC_COMPLAINTS], pbft_replica_view(sim_node_replica(s, 1)));
    sim_free(s);
    return rc;
}

/* ---------------------------------------------------------------------------------------
 * correct-primary-kept: the negative side of monitoring. All replicas are correct; message
 * delays up to 40 ms and bursts of requests that fill blocks. No complaint may be sent and
 * no view may change (n=4 and n=7).
 * -------------------------------------------------------------------------------------*/
static int sc_correct_primary_kept(uint64_t seed, bool verbose)
{
    const char *name = "correct-primary-kept";
    int rc = 0;
    for (uint16_t n = 4; n <= 7 && rc == 0; n += 3) {
        sim_options o;
        sim_options_defaults(&o, n, seed + n);
        o.verbose = verbose;
        o.delay_min_ms = 1;
        o.delay_max_ms = 40;
        o.n_clients = 4;
        o.txs_total = 200;
        o.submit_end_ms = 5000;
        o.submit_gap_min_ms = 5;
        o.submit_gap_max_ms = 150;
        o.submit_burst_max = 12;
        sim *s = make_sim(&o, name);
        if (!s)
            return 1;
        int st = sim_run(s);
        rc |= expect_live(s, st, name);
        pbft_stats sum;
        honest_stats_sum(s, &sum);
        uint64_t complaints =
            sum.complaints[PBFT_COMPLAINT_SLOW] + sum.complaints[PBFT_COMPLAINT_UNFAIR];
        rc |= check(complaints == 0, name, "a correct primary drew complaints");
        rc |= check(vc_total(&sum) == 0, name, "a view changed under a correct primary");
        if (rc == 0)
            printf("ok scenario %s: n=%u, %u txs committed, 0 complaints, view 0\n", name, n,
                   sim_txs_submitted(s));
        sim_free(s);
    }
    return rc;
}

/* ---------------------------------------------------------------------------------------
 * primary-crash-after-prepare: a backup prepares seq s in view 0 (we see its COMMIT), no
 * COMMIT of view 0 is ever delivered, the primary crashes. PBFT section 4.4 (view change):
 * the new view must carry the prepared certificate, so s commits in view >= 1 with the same
 * digest.
 * -------------------------------------------------------------------------------------*/
typedef struct {
    bool seen;
    uint64_t seq;
    pbft_digest d;
    int who;
    bool crashed;
} pcap_ctx;

static bool pcap_filter(void *ctx, sim *s, int from, int to, const uint8_t *p, size_t n)
{
    (void)to;
    pcap_ctx *c = ctx;
    pbft_env e;
    if (n < 2 || p[1] != PBFT_MSG_COMMIT || pbft_frame_decode(p, n, &e) != PBFT_OK)
        return true;
    pbft_vote v;
    if (pbft_vote_decode(e.body, &v) != PBFT_OK || v.view != 0)
        return true;
    if (!c->seen && sim_node_id(s, from) != 0 && e.sender == sim_node_id(s, from)) {
        c->seen = true;
        c->seq = v.seq;
        c->d = v.d;
        c->who = from;
    }
    return false; /* no COMMIT of view 0 ever arrives: no commit quorum in view 0 */
}

static void pcap_hook(void *ctx, sim *s)
{
    pcap_ctx *c = ctx;
    if (c->seen && !c->crashed) {
        c->crashed = true;
        sim_crash(s, 0);
        sim_heal(s);
    }
}

static int sc_primary_crash_after_prepare(uint64_t seed, bool verbose)
{
    const char *name = "primary-crash-after-prepare";
    pcap_ctx c = {0};
    sim_options o;
    sim_options_defaults(&o, 4, seed);
    o.verbose = verbose;
    o.txs_total = 10;
    o.submit_end_ms = 1500;
    o.heal_ms = UINT64_MAX; /* the hook heals when it crashes the primary */
    o.filter = pcap_filter;
    o.hook = pcap_hook;
    o.ctx = &c;
    sim *s = make_sim(&o, name);
    if (!s)
        return 1;
    /* Until the crash the run cannot be live; bound it. */
    int st = sim_run_until(s, 30000);
    int rc = check(c.crashed, name, "no backup ever sent a COMMIT in view 0");
    if (rc == 0 && st == SIM_RUNNING)
        st = sim_run(s);
    if (rc == 0)
        rc |= expect_live(s, st, name);
    for (int i = 1; i < 4 && rc == 0; i++) {
        pbft_digest d;
        uint64_t view;
        bool have = sim_node_block(s, i, c.seq, &d, &view, NULL);
        rc |= check(have, name, "an honest replica never committed the prepared sequence");
        if (have) {
            rc |= check(memcmp(d.b, c.d.b, 32) == 0, name,
                        "the prepared sequence committed with another digest (section 4.4)");
            rc |= check(view >= 1, name, "the prepared sequence committed in view 0");
        }
    }
    if (rc == 0)
        printf("ok scenario %s: seq %" PRIu64 " prepared by node %d in view 0, committed with "
               "the same digest in a later view at every honest replica\n",
               name, c.seq, c.who);
    sim_free(s);
    return rc;
}

/* ---------------------------------------------------------------------------------------
 * new-primary-fails: n = 7; replica 0 crashes, and replica 1 (primary of view 1) crashes as
 * soon as anybody starts a view change. View 2 must take over.
 * -------------------------------------------------------------------------------------*/
typedef struct {
    bool crashed1;
} npf_ctx;

static void npf_hook(void *ctx, sim *s)
{
    npf_ctx *c = ctx;
    if (c->crashed1 || sim_node_up(s, 0))
        return;
    for (int i = 2; i < sim_node_count(s); i++) {
        const pbft_replica *r = sim_node_replica(s, i);
        if (r && (pbft_replica_in_view_change(r) || pbft_replica_view(r) >= 1)) {
            c->crashed1 = true;
            sim_crash(s, 1);
            return;
        }
    }
}

static int sc_new_primary_fails(uint64_t seed, bool verbose)
{
    const char *name = "new-primary-fails";
    npf_ctx c = {0};
    sim_options o;
    sim_options_defaults(&o, 7, seed);
    o.verbose = verbose;
    o.txs_total = 16;
    o.submit_end_ms = 3000;
    o.heal_ms = 3000;
    o.hook = npf_hook;
    o.ctx = &c;
    sim *s = make_sim(&o, name);
    if (!s)
        return 1;
    sim_at_crash(s, 400, 0);
    int st = sim_run(s);
    int rc = expect_live(s, st, name);
    rc |= check(c.crashed1, name, "nobody started a view change");
    for (int i = 2; i < 7 && rc == 0; i++) {
        const pbft_replica *r = sim_node_replica(s, i);
        rc |= check(r && pbft_replica_view(r) >= 2, name, "an honest replica is below view 2");
    }
    if (rc == 0)
        printf("ok scenario %s: view %" PRIu64 " took over, %u txs committed\n", name,
               pbft_replica_view(sim_node_replica(s, 2)), sim_txs_submitted(s));
    sim_free(s);
    return rc;
}

/* ---------------------------------------------------------------------------------------
 * restart-catches-up: backup 3 is down while the others commit several checkpoint intervals
 * and garbage-collect; once back it must catch up by state transfer.
 * -------------------------------------------------------------------------------------*/
typedef struct {
    bool restarted;
    uint64_t stable_at_restart;
    uint64_t need;
} rcu_ctx;

static void rcu_hook(void *ctx, sim *s)
{
    rcu_ctx *c = ctx;
    if (c->restarted || sim_node_up(s, 3))
        return;
    uint64_t lo = UINT64_MAX;
    for (int i = 0; i < 3; i++) {
        const pbft_replica *r = sim_node_replica(s, i);
        uint64_t st = r ? pbft_replica_stable(r) : 0;
        if (st < lo)
            lo = st;
    }
    if (lo >= c->need) {
        c->restarted = true;
        c->stable_at_restart = lo;
        sim_restart(s, 3);
        sim_heal(s);
    }
}

static int sc_restart_catches_up(uint64_t seed, bool verbose)
{
    const char *name = "restart-catches-up";
    rcu_ctx c = {0};
    sim_options o;
    sim_options_defaults(&o, 4, seed);
    o.verbose = verbose;
    o.core.checkpoint_interval = 4;
    o.core.window = 8;
    o.core.max_inflight = 4;
    o.core.max_block_txs = 2;
    o.n_clients = 2;
    o.txs_total = 60;
    o.submit_end_ms = 8000;
    o.submit_gap_min_ms = 60;
    o.submit_gap_max_ms = 200;
    o.heal_ms = UINT64_MAX; /* the hook heals when it restarts replica 3 */
    o.hook = rcu_hook;
    o.ctx = &c;
    c.need = 3 * o.core.checkpoint_interval;
    sim *s = make_sim(&o, name);
    if (!s)
        return 1;
    sim_at_crash(s, 100, 3);
    int st = sim_run_until(s, 30000);
    int rc = check(c.restarted, name, "the others never reached 3 stable checkpoints");
    if (rc == 0 && st == SIM_RUNNING)
        st = sim_run(s);
    if (rc == 0)
        rc |= expect_live(s, st, name);
    if (rc == 0) {
        /* Let the cluster settle, then compare. */
        st = sim_run_until(s, sim_now(s) + 3000);
        rc |= check(st == SIM_LIVE, name, sim_violation(s) ? sim_violation(s) : "stopped");
    }
    if (rc == 0) {
        const pbft_replica *r3 = sim_node_replica(s, 3);
        uint64_t h3 = sim_node_height(s, 3);
        for (int i = 0; i < 3; i++) {
            uint64_t hi = sim_node_height(s, i);
            rc |= check(r3 && pbft_replica_executed(r3) >= hi, name,
                        "replica 3's executed height did not reach the others'");
            uint64_t top = hi < h3 ? hi : h3;
            for (uint64_t h = 1; h <= top; h++) {
                pbft_digest a, b;
                sim_node_block(s, i, h, NULL, NULL, &a);
                sim_node_block(s, 3, h, NULL, NULL, &b);
                if (memcmp(a.b, b.b, 32) != 0) {
                    rc |= check(false, name, "replica 3's chain hash differs");
                    break;
                }
            }
        }
        pbft_stats st3;
        sim_node_stats(s, 3, &st3);
        rc |= check(st3.state_transfers > 0, name, "replica 3 made no state transfer");
        if (rc == 0)
            printf("ok scenario %s: restarted when the others' stable checkpoint was %" PRIu64
                   ", caught up to height %" PRIu64 " with %" PRIu64 " blocks by state transfer\n",
                   name, c.stable_at_restart, h3, st3.state_transfers);
    }
    sim_free(s);
    return rc;
}

/* ---------------------------------------------------------------------------------------
 * restart-votes-again (issue 12, part 3): a backup down 12 s under sustained load must vote
 * again, not only follow by state transfer. The decisive check is the next fault: once it
 * votes, a second backup's crash leaves 2f+1 voters and costs no view change.
 * -------------------------------------------------------------------------------------*/
static uint64_t view_changes_of(sim *s, int node)
{
    pbft_stats st;
    sim_node_stats(s, node, &st);
    uint64_t n = 0;
    for (int i = 0; i < PBFT_VC__COUNT; i++)
        n += st.view_changes[i];
    return n;
}

/* rejoin_wait steps until `node` sends a PREPARE or COMMIT after `since` (returns the
 * delay from `since`) or until `since + bound` (returns UINT64_MAX). */
static uint64_t rejoin_wait(sim *s, int node, uint64_t since, uint64_t bound)
{
    uint64_t before = sim_node_votes(s, node, NULL);
    /* The target advances on its own: sim_run_until leaves the clock where the last event
     * was, so stepping to sim_now() + 20 spun for ever across a quiet 20 ms. */
    for (uint64_t t = sim_now(s); t < since + bound;) {
        t += 20;
        int st = sim_run_until(s, t);
        uint64_t last = 0;
        if (sim_node_votes(s, node, &last) > before && last >= since)
            return last - since;
        if (st == SIM_VIOLATION || st == SIM_STOPPED)
            break;
    }
    return UINT64_MAX;
}

static int sc_restart_votes_again(uint64_t seed, bool verbose)
{
    const char *name = "restart-votes-again";
    sim_options o;
    sim_options_defaults(&o, 4, seed);
    o.verbose = verbose;
    /* Sustained load, about 250 tx/s for 40 s: the others move hundreds of blocks, many
     * windows, past the crashed backup. */
    o.n_clients = 4;
    o.txs_total = 8000;
    o.submit_end_ms = 40000;
    o.submit_gap_min_ms = 20;
    o.submit_gap_max_ms = 60;
    o.submit_burst_max = 4;
    const uint64_t down = 2000, up = 14000, bound = 10000;
    sim *s = make_sim(&o, name);
    if (!s)
        return 1;
    sim_at_crash(s, down, 3);
    sim_at_restart(s, up, 3);
    int st = sim_run_until(s, up);
    int rc = check(st == SIM_RUNNING || st == SIM_LIVE, name,
                   sim_violation(s) ? sim_violation(s) : "stopped before the restart");
    uint64_t behind = sim_node_height(s, 0) - sim_node_height(s, 3);
    uint64_t rejoin = rc == 0 ? rejoin_wait(s, 3, up, bound) : UINT64_MAX;
    if (rc == 0)
        rc |= check(rejoin != UINT64_MAX, name,
                    "replica 3 sent no PREPARE or COMMIT within 10 s of its restart");
    uint64_t vc0 = 0, vc1 = 0, votes_at_cut = 0;
    if (rc == 0) {
        /* Give it the rest of the bound to settle in, then take a second backup away. */
        st = sim_run_until(s, up + bound);
        rc |= check(st == SIM_RUNNING || st == SIM_LIVE, name,
                    sim_violation(s) ? sim_violation(s) : "stopped");
        vc0 = view_changes_of(s, 0);
        vc1 = view_changes_of(s, 1);
        votes_at_cut = sim_node_votes(s, 3, NULL);
        sim_crash(s, 2);
    }
    if (rc == 0) {
        st = sim_run(s);
        rc |= expect_live(s, st, name);
    }
    if (rc == 0) {
        rc |= check(view_changes_of(s, 0) == vc0 && view_changes_of(s, 1) == vc1, name,
                    "the second backup's crash cost a view change");
        rc |= check(sim_node_votes(s, 3, NULL) > votes_at_cut, name,
                    "replica 3 stopped voting after the second crash");
        pbft_stats st3;
        sim_node_stats(s, 3, &st3);
        if (rc == 0)
            printf("ok scenario %s: restarted %" PRIu64 " blocks behind, voted again after %" PRIu64
                   " ms (%" PRIu64 " blocks by state transfer); the second crash cost no view "
                   "change; height %" PRIu64 "\n",
                   name, behind, rejoin, st3.state_transfers, sim_node_height(s, 0));
    }
    sim_free(s);
    return rc;
}

/* ---------------------------------------------------------------------------------------
 * partition-rejoin, partition-deaf-rejoin, partition-mute-rejoin (issue 12, part 2): backup
 * 3 is cut off under load, both ways, or only what reaches it (deaf), or only what it sends
 * (mute), for long enough that its timers expire many times. It must not leave the view
 * alone (its timeouts only complain: count_complaint), the others must not change view for
 * it, and after the heal it must vote again within 10 s and end with the same chain.
 * -------------------------------------------------------------------------------------*/
enum { CUT_BOTH, CUT_IN, CUT_OUT };

static uint64_t sim_node_view(const sim *s, int node)
{
    const pbft_replica *r = sim_node_replica(s, node);
    return r != NULL ? pbft_replica_view(r) : UINT64_MAX;
}

static int partition_rejoin(uint64_t seed, bool verbose, const char *name, int how, uint64_t length)
{
    sim_options o;
    sim_options_defaults(&o, 4, seed);
    o.verbose = verbose;
    const uint64_t start = 2000, heal = start + length, bound = 10000;
    o.n_clients = 2;
    o.txs_total = (uint32_t)((heal + 8000) / 50);
    o.submit_end_ms = heal + 8000;
    o.submit_gap_min_ms = 50;
    o.submit_gap_max_ms = 150;
    o.heal_ms = heal; /* the liveness bound counts from the heal */
    sim *s = make_sim(&o, name);
    if (!s)
        return 1;
    uint8_t cut[16] = {0};
    for (int j = 0; j < 3; j++) {
        if (how != CUT_OUT)
            cut[j * 4 + 3] = 1; /* nothing reaches 3 */
        if (how != CUT_IN)
            cut[3 * 4 + j] = 1; /* nothing from 3 arrives */
    }
    int rc = check(sim_add_partition(s, start, heal, cut) == 0, name, "sim_add_partition");
    int st = sim_run_until(s, heal);
    rc |= check(st == SIM_RUNNING || st == SIM_LIVE, name,
                sim_violation(s) ? sim_violation(s) : "stopped before the heal");
    pbft_stats st3;
    sim_node_stats(s, 3, &st3);
    uint64_t views_at_heal = sim_node_view(s, 3);
    if (rc == 0)
        rc |= check(view_changes_of(s, 3) == 0 && views_at_heal == sim_node_view(s, 0), name,
                    "replica 3 left the view alone while cut off");
    uint64_t rejoin = rc == 0 ? rejoin_wait(s, 3, heal, bound) : UINT64_MAX;
    if (rc == 0)
        rc |= check(rejoin != UINT64_MAX, name,
                    "replica 3 sent no PREPARE or COMMIT within 10 s of the heal");
    if (rc == 0) {
        st = sim_run(s);
        rc |= expect_live(s, st, name);
    }
    if (rc == 0) {
        for (int i = 0; i < 4; i++)
            rc |= check(view_changes_of(s, i) == 0, name,
                        "a replica changed view for a backup that was only cut off");
        rc |= check(sim_node_view(s, 3) == sim_node_view(s, 0), name,
                    "replica 3 ended in another view than replica 0");
    }
    if (rc == 0)
        printf("ok scenario %s: cut off %" PRIu64 " s (%" PRIu64 " timeout complaints, no view "
               "change), voted again %" PRIu64 " ms after the heal; height %" PRIu64 "\n",
               name, length / 1000, st3.complaints[PBFT_COMPLAINT_TIMEOUT], rejoin,
               sim_node_height(s, 0));
    sim_free(s);
    return rc;
}

static int sc_partition_rejoin(uint64_t seed, bool verbose)
{
    return partition_rejoin(seed, verbose, "partition-rejoin", CUT_BOTH, 60000);
}

static int sc_partition_deaf_rejoin(uint64_t seed, bool verbose)
{
    return partition_rejoin(seed, verbose, "partition-deaf-rejoin", CUT_IN, 30000);
}

static int sc_partition_mute_rejoin(uint64_t seed, bool verbose)
{
    return partition_rejoin(seed, verbose, "partition-mute-rejoin", CUT_OUT, 30000);
}

/* ---------------------------------------------------------------------------------------
 * replay-and-bad-signature.
 * -------------------------------------------------------------------------------------*/
static int run_byz_backup(uint64_t seed, bool verbose, int mode, const char *name, pbft_stats *sum)
{
    sim_options o;
    sim_options_defaults(&o, 4, seed);
    o.verbose = verbose;
    o.preverify_cache = false; /* every receiver verifies, and counts what fails */
    /* Load goes on well after the partition (24 txs over ~7 s), so no replica is left
     * behind in an idle cluster: this scenario is about drop counting. */
    o.txs_total = 24;
    o.submit_gap_min_ms = 400;
    o.submit_gap_max_ms = 800;
    o.submit_end_ms = 9000;
    o.heal_ms = 3500;
    sim *s = make_sim(&o, name);
    if (!s)
        return 1;
    int rc = check(sim_set_byz(s, 3, mode, 0, 100) == 0, name, "sim_set_byz");
    /* Cut the primary off for a while so the cluster changes view: the replayer then has
     * old-view messages to replay. */
    uint8_t cut[16] = {0};
    for (int j = 1; j < 4; j++)
        cut[0 * 4 + j] = cut[j * 4 + 0] = 1;
    rc |= check(sim_add_partition(s, 1000, 3500, cut) == 0, name, "sim_add_partition");
    int st = sim_run(s);
    rc |= expect_live(s, st, name);
    honest_stats_sum(s, sum);
    sim_free(s);
    return rc;
}

static int sc_replay_and_bad_signature(uint64_t seed, bool verbose)
{
    const char *name = "replay-and-bad-signature";
    pbft_stats a, b;
    int rc = run_byz_backup(seed, verbose, PBFT_BYZ_REPLAY, name, &a);
    rc |= check(a.drops[PBFT_DROP_WRONG_VIEW] + a.drops[PBFT_DROP_STALE] > 0, name,
                "no replayed message was dropped as wrong-view or stale");
    rc |= run_byz_backup(seed, verbose, PBFT_BYZ_BAD_SIGNATURE, name, &b);
    rc |= check(b.drops[PBFT_DROP_BAD_SIGNATURE] > 0, name,
                "no bad signature was counted by the honest replicas");
    if (rc == 0)
        printf("ok scenario %s: replay run: %" PRIu64 " wrong-view + %" PRIu64
               " stale drops; bad-signature run: %" PRIu64 " bad-signature drops\n",
               name, a.drops[PBFT_DROP_WRONG_VIEW], a.drops[PBFT_DROP_STALE],
               b.drops[PBFT_DROP_BAD_SIGNATURE]);
    return rc;
}

/* ---------------------------------------------------------------------------------------
 * negative-control-twins: f + 1 = 2 replica ids twinned, the twins split between two groups
 * that each hold a quorum of identities. Safety cannot hold; the checker must say so.
 * -------------------------------------------------------------------------------------*/
static int sc_negative_control_twins(uint64_t seed, bool verbose)
{
    const char *name = "negative-control-twins";
    sim_options o;
    sim_options_defaults(&o, 4, seed);
    o.verbose = verbose;
    o.n_clients = 2;
    o.txs_total = 8;
    o.submit_end_ms = 2000;
    o.heal_ms = 2000;
    sim *s = make_sim(&o, name);
    if (!s)
        return 1;
    int t0 = sim_add_twin(s, 0), t1 = sim_add_twin(s, 1);
    int rc = check(t0 >= 0 && t1 >= 0, name, "sim_add_twin");
    if (rc) {
        sim_free(s);
        return rc;
    }
    /* A = {0a, 1a, 2}, B = {0b, 1b, 3} */
    uint8_t group[SIM_MAX_NODES] = {0};
    group[0] = group[1] = group[2] = 1;
    group[t0] = group[t1] = group[3] = 2;
    sim_set_twin_groups(s, group);
    sim_set_client_group(s, 0, 1);
    sim_set_client_group(s, 1, 2);
    int st = sim_run(s);
    rc |= check(st == SIM_VIOLATION && sim_violation_class(s) == SIM_V_AGREEMENT, name,
                "the checker did not report an agreement violation");
    if (rc == 0)
        printf("ok scenario %s: the checker caught it: %s\n", name, sim_violation(s));
    else if (sim_violation(s))
        printf("  (the checker said: %s)\n", sim_violation(s));
    sim_free(s);
    return rc;
}

/* ---------------------------------------------------------------------------------------
 * power-loss: power cuts at random moments, in steps that send each kind of vote, on every
 * replica in turn (the primary too), one down at a time; each loses the unsynced batch of
 * the step it lands in. With pbftd's order (fsync, then send) nothing that was sent is
 * lost, so the run stays safe and live and no replica signs two different votes for one
 * (view, seq). power-loss-unsafe-detected is its negative control: a driver that sends
 * before it syncs lets a primary's PRE-PREPARE escape, forgets it, and proposes another
 * block at the same (view, seq) after the restart: the checker must catch that.
 * -------------------------------------------------------------------------------------*/
/* run_verdict runs s to its end, frees it and returns 0 if live, the violation's class
 * (SIM_V_*) if one was found, or -1 if it stopped; why gets the reason, tot the totals. */
static int run_verdict(sim *s, sim_totals *tot, char *why, size_t cap)
{
    int st = sim_run(s);
    sim_get_totals(s, tot);
    snprintf(why, cap, "%s",
             st == SIM_VIOLATION ? sim_violation(s)
             : st == SIM_LIVE    ? "live"
                                 : "stopped");
    int cls = sim_violation_class(s);
    sim_free(s);
    return st == SIM_LIVE ? 0 : st == SIM_VIOLATION ? cls : -1;
}

static int power_loss_run(uint64_t seed, bool verbose, bool unsafe, int *cuts, char *why,
                          size_t cap)
{
    sim_options o;
    sim_options_defaults(&o, 4, seed);
    o.verbose = verbose;
    o.unsafe_send_before_sync = unsafe;
    o.txs_total = 400;
    o.n_clients = 8;
    o.submit_gap_min_ms = 20;
    o.submit_gap_max_ms = 120;
    o.submit_end_ms = 9000;
    o.heal_ms = 10000;
    sim *s = make_sim(&o, "power-loss");
    if (!s)
        return -1;
    sim_rng g;
    sim_rng_seed(&g, sim_mix64(seed ^ 0x706f776572ull));
    static const uint8_t kinds[] = {0, PBFT_MSG_PREPREPARE, PBFT_MSG_PREPARE, PBFT_MSG_COMMIT,
                                    PBFT_MSG_CHECKPOINT};
    int k = 0;
    for (uint64_t t = 300; t + 400 < 9000; t += 250 + sim_rng_below(&g, 250), k++) {
        /* The unsafe control aims at the primary's pre-prepares, where it must bite. */
        int node = unsafe ? 0 : (int)sim_rng_below(&g, 4);
        uint8_t kind = unsafe ? PBFT_MSG_PREPREPARE : kinds[k % 5];
        sim_at_power_cut(s, t, node, kind);
        sim_at_restart(s, t + 100 + sim_rng_below(&g, 150), node);
    }
    sim_totals tot;
    int rc = run_verdict(s, &tot, why, cap);
    *cuts = (int)tot.power_cuts;
    return rc;
}

static int sc_power_loss(uint64_t seed, bool verbose)
{
    const char *name = "power-loss";
    int rc = 0, total = 0;
    for (uint64_t k = 0; k < 4 && rc == 0; k++) {
        int cuts = 0;
        char why[SIM_REASON_BYTES];
        int r = power_loss_run(seed + k, verbose, false, &cuts, why, sizeof why);
        rc |= check(r == 0, name, why);
        rc |= check(cuts >= 5, name, "fewer than 5 power cuts landed");
        total += cuts;
    }
    if (rc == 0)
        printf("ok scenario %s: 4 runs, %d power cuts (every replica, each kind of vote), safe "
               "and live\n",
               name, total);
    return rc;
}

static int sc_power_loss_unsafe_detected(uint64_t seed, bool verbose)
{
    const char *name = "power-loss-unsafe-detected";
    for (uint64_t k = 0; k < 8; k++) {
        int cuts = 0;
        char why[SIM_REASON_BYTES];
        int r = power_loss_run(seed + k, verbose, true, &cuts, why, sizeof why);
        if (r == SIM_V_INTEGRITY || r == SIM_V_AGREEMENT) {
            printf("ok scenario %s: the checker caught it (seed %" PRIu64 ", %d cuts): %s\n", name,
                   seed + k, cuts, why);
            return 0;
        }
    }
    return check(false, name, "8 runs of a driver that sends before it syncs went unnoticed");
}

/* ---------------------------------------------------------------------------------------
 * replay-determinism: the same seed twice gives the identical run.
 * -------------------------------------------------------------------------------------*/
static int run_once(uint16_t n, uint64_t seed, sim_totals *t, int *st, char *reason, size_t cap)
{
    sim_options o;
    sim_random_plan plan;
    sim_random_options(n, seed, &o, &plan);
    sim *s = NULL;
    char err[256];
    if (sim_new(&o, &s, err, sizeof err) != 0 || sim_random_apply(s, &plan) != 0) {
        printf("FAIL scenario replay-determinism: setup: %s\n", err);
        sim_free(s);
        return 1;
    }
    *st = sim_run(s);
    sim_get_totals(s, t);
    snprintf(reason, cap, "%s", sim_violation(s) ? sim_violation(s) : "live");
    sim_free(s);
    return 0;
}

static int sc_replay_determinism(uint64_t seed, bool verbose)
{
    (void)verbose;
    const char *name = "replay-determinism";
    int rc = 0;
    const uint16_t ns[] = {4, 7};
    for (size_t k = 0; k < 2 * sizeof ns / sizeof ns[0]; k++) {
        uint16_t n = ns[k % 2];
        uint64_t sd = seed + k;
        sim_totals a, b;
        int sa, sb;
        char ra[SIM_REASON_BYTES], rb[SIM_REASON_BYTES];
        if (run_once(n, sd, &a, &sa, ra, sizeof ra) || run_once(n, sd, &b, &sb, rb, sizeof rb))
            return 1;
        bool same = sa == sb && a.events == b.events && a.trace_hash == b.trace_hash &&
                    a.commit_hash == b.commit_hash && a.height == b.height &&
                    a.sim_ms == b.sim_ms && strcmp(ra, rb) == 0;
        printf("%s scenario %s: n=%u seed=%" PRIu64 ": events %" PRIu64 "/%" PRIu64
               " trace %016" PRIx64 "/%016" PRIx64 " commits %016" PRIx64 "/%016" PRIx64
               " height %" PRIu64 " (%s)\n",
               same ? "ok" : "FAIL", name, n, sd, a.events, b.events, a.trace_hash, b.trace_hash,
               a.commit_hash, b.commit_hash, a.height, ra);
        if (!same)
            rc = 1;
    }
    return rc;
}

/* ---------------------------------------------------------------------------------------
 * alloc-faults: the k-th allocation of a replica's core fails, for k = 1, 2, 3, ... in turn
 * (a sweep over the allocation sites a busy replica reaches), on every replica in turn, one
 * down at a time, under load. The core fails that step and emits nothing (replica.h: sticky
 * failure); the node fail-stops and restarts from its records. The checker asserts that
 * every vote leaves with its record and that no replica signs two different votes for one
 * (view, seq); the run must stay safe and live. lost-records-unsafe-detected is the negative
 * control of the record check: a driver that loses the records (as a persist that failed
 * silently did) yet sends the votes must be caught.
 * -------------------------------------------------------------------------------------*/
static int alloc_faults_run(uint64_t seed, bool verbose, bool unsafe, int *faults, char *why,
                            size_t cap)
{
    sim_options o;
    sim_options_defaults(&o, 4, seed);
    o.verbose = verbose;
    o.unsafe_lose_records = unsafe;
    o.txs_total = 400;
    o.n_clients = 8;
    o.submit_gap_min_ms = 20;
    o.submit_gap_max_ms = 120;
    o.submit_end_ms = 9000;
    o.heal_ms = 10000;
    sim *s = make_sim(&o, "alloc-faults");
    if (!s)
        return -1;
    sim_rng g;
    sim_rng_seed(&g, sim_mix64(seed ^ 0x616c6c6f63ull));
    uint32_t k = 1;
    for (uint64_t t = 300; t + 400 < 9000; t += 200 + sim_rng_below(&g, 200), k++) {
        int node = (int)sim_rng_below(&g, 4);
        sim_at_alloc_fault(s, t, node, k);
        sim_at_restart(s, t + 100 + sim_rng_below(&g, 150), node);
    }
    sim_totals tot;
    int rc = run_verdict(s, &tot, why, cap);
    *faults = (int)tot.alloc_faults;
    return rc;
}

static int sc_alloc_faults(uint64_t seed, bool verbose)
{
    const char *name = "alloc-faults";
    int rc = 0, total = 0;
    for (uint64_t k = 0; k < 4 && rc == 0; k++) {
        int faults = 0;
        char why[SIM_REASON_BYTES];
        int r = alloc_faults_run(seed + k, verbose, false, &faults, why, sizeof why);
        rc |= check(r == 0, name, why);
        rc |= check(faults >= 10, name, "fewer than 10 allocation faults landed");
        total += faults;
    }
    if (rc == 0)
        printf("ok scenario %s: 4 runs, %d fail-stops on a failed allocation (k = 1, 2, ... on "
               "every replica), safe and live, every vote sent with its record\n",
               name, total);
    return rc;
}

static int sc_lost_records_unsafe_detected(uint64_t seed, bool verbose)
{
    const char *name = "lost-records-unsafe-detected";
    int faults = 0;
    char why[SIM_REASON_BYTES];
    int r = alloc_faults_run(seed, verbose, true, &faults, why, sizeof why);
    int rc = check(r == SIM_V_INTEGRITY && strstr(why, "without its record") != NULL, name,
                   "a driver that loses records yet sends the votes went unnoticed");
    if (rc == 0)
        printf("ok scenario %s: the checker caught it: %s\n", name, why);
    else
        printf("  (the run ended: %s)\n", why);
    return rc;
}

/* ---------------------------------------------------------------------------------------
 * newview-*: a Byzantine new primary forges its NEW-VIEW (consensus/byz.h, the
 * PBFT_BYZ_NEWVIEW_* modes) [OSDI §4.4]. n = 4; replica 1, primary of view 1, is the forger
 * (honest until it builds the NEW-VIEW). View 0 is made to leave prepared certificates and
 * a hole behind: no PREPARE of view 0 for seq 2 is delivered (so O has a null slot there),
 * and view 0's COMMITs reach replica 2 only (it commits and executes seq 1; the others
 * stall). Their request timers move everyone to view 1. Every honest replica must refuse
 * the forgery (counted by its reason), view 2's honest primary takes over, seq 1 commits
 * everywhere with its view-0 digest, and the run is safe and live, over 4 seeds.
 *
 * newview-unchecked-omit-detected is the negative control: the backups' check is off, so
 * they take the forged O as sent; seq 1, executed by replica 2 in view 0, is nulled in view
 * 1 at the others, and the checker must report the agreement violation.
 * -------------------------------------------------------------------------------------*/
typedef struct {
    bool have1;
    pbft_digest d1; /* seq 1's digest in view 0 */
    bool isolate2;  /* negative control: cut replica 2 off once it executed seq 1 */
    bool cut;
} nvf_ctx;

/* nvf_hook: replica 2 would serve its certified block 1 to the others by state transfer,
 * which repairs the forgery's damage before the checker sees it; the negative control cuts
 * replica 2 off so that the forged view is all the others hear. */
static void nvf_hook(void *ctx, sim *s)
{
    nvf_ctx *c = ctx;
    if (!c->isolate2 || c->cut || sim_node_height(s, 2) < 1)
        return;
    c->cut = true;
    for (int j = 0; j < 4; j++)
        if (j != 2) {
            sim_set_link(s, 2, j, false);
            sim_set_link(s, j, 2, false);
        }
}

static bool nvf_filter(void *ctx, sim *s, int from, int to, const uint8_t *p, size_t n)
{
    (void)from;
    nvf_ctx *c = ctx;
    if (n < 2 || (p[1] != PBFT_MSG_PREPARE && p[1] != PBFT_MSG_COMMIT))
        return true;
    pbft_env e;
    pbft_vote v;
    if (pbft_frame_decode(p, n, &e) != PBFT_OK || pbft_vote_decode(e.body, &v) != PBFT_OK ||
        v.view != 0)
        return true;
    if (v.seq == 1 && !c->have1) {
        c->have1 = true;
        c->d1 = v.d;
    }
    if (p[1] == PBFT_MSG_PREPARE)
        return v.seq != 2;
    return sim_node_id(s, to) == 2;
}

/* newview_run runs one forgery; returns 0 if live (or the violation's class, or -1 if it
 * stopped); refused gets the honest replicas' drops for `reason`, actions the forger's. */
static int newview_run(uint64_t seed, bool verbose, int mode, bool unchecked, bool isolate,
                       int reason, uint64_t *refused, uint64_t *actions, nvf_ctx *c, char *why,
                       size_t cap)
{
    sim_options o;
    sim_options_defaults(&o, 4, seed);
    o.verbose = verbose;
    o.txs_total = 16;
    o.submit_end_ms = 1500;
    o.heal_ms = 1500;
    o.unsafe_skip_newview_check = unchecked;
    o.filter = nvf_filter;
    o.hook = nvf_hook;
    o.ctx = c;
    c->isolate2 = isolate;
    if (isolate)
        o.heal_ms = 20000; /* the cut stays while the checker watches */
    sim *s = make_sim(&o, "newview");
    if (!s)
        return -1;
    if (sim_set_byz(s, 1, mode, 0, 0) != 0) {
        sim_free(s);
        return -1;
    }
    int st = sim_run(s);
    *refused = UINT64_MAX; /* the fewest refusals of any honest replica */
    for (int i = 0; i < 4; i++) {
        pbft_stats ns;
        sim_node_stats(s, i, &ns);
        if (i != 1 && ns.drops[reason] < *refused)
            *refused = ns.drops[reason];
    }
    sim_totals tot;
    sim_get_totals(s, &tot);
    *actions = tot.byz_actions;
    int rc = st == SIM_LIVE ? 0 : st == SIM_VIOLATION ? sim_violation_class(s) : -1;
    snprintf(why, cap, "%s",
             st == SIM_VIOLATION ? sim_violation(s)
             : st == SIM_LIVE    ? "live"
                                 : "stopped");
    /* Every honest replica holds seq 1 with its view-0 digest (it was prepared there). */
    for (int i = 0; rc == 0 && i < 4; i++) {
        pbft_digest d;
        uint64_t view;
        if (i == 1)
            continue;
        if (!c->have1 || !sim_node_block(s, i, 1, &d, &view, NULL) ||
            memcmp(d.b, c->d1.b, 32) != 0) {
            snprintf(why, cap, "replica %d does not hold seq 1 with its view-0 digest", i);
            rc = -1;
        }
        const pbft_replica *r = sim_node_replica(s, i);
        if (rc == 0 && !(isolate && i == 2) && (r == NULL || pbft_replica_view(r) < 2)) {
            snprintf(why, cap, "replica %d is below view 2: it took the forged view 1", i);
            rc = -1;
        }
    }
    sim_free(s);
    return rc;
}

static int newview_scenario(const char *name, int mode, int reason, uint64_t seed, bool verbose)
{
    int rc = 0;
    uint64_t refused = 0, actions = 0;
    for (uint64_t k = 0; k < 4 && rc == 0; k++) {
        nvf_ctx c = {0};
        uint64_t ref = 0, act = 0;
        char why[SIM_REASON_BYTES];
        int r = newview_run(seed + k, verbose, mode, false, false, reason, &ref, &act, &c, why,
                            sizeof why);
        rc |= check(r == 0, name, why);
        rc |= check(act > 0, name, "the new primary never forged its NEW-VIEW");
        rc |= check(ref >= 1, name, "an honest replica never refused the forged NEW-VIEW");
        refused += ref;
        actions += act;
    }
    if (rc == 0)
        printf("ok scenario %s: 4 runs, %" PRIu64 " forgeries, %" PRIu64
               " refusals (%s) at the replica that refused least, view 2 took over, seq 1 kept "
               "its prepared digest\n",
               name, actions, refused, pbft_drop_name(reason));
    return rc;
}

static int sc_newview_omit(uint64_t seed, bool verbose)
{
    return newview_scenario("newview-omit-refused", PBFT_BYZ_NEWVIEW_OMIT, PBFT_DROP_BAD_NEWVIEW,
                            seed, verbose);
}
static int sc_newview_digest(uint64_t seed, bool verbose)
{
    return newview_scenario("newview-digest-refused", PBFT_BYZ_NEWVIEW_DIGEST,
                            PBFT_DROP_BAD_NEWVIEW, seed, verbose);
}
static int sc_newview_invent(uint64_t seed, bool verbose)
{
    return newview_scenario("newview-invent-refused", PBFT_BYZ_NEWVIEW_INVENT,
                            PBFT_DROP_BAD_NEWVIEW, seed, verbose);
}
static int sc_newview_few(uint64_t seed, bool verbose)
{
    return newview_scenario("newview-few-vcs-refused", PBFT_BYZ_NEWVIEW_FEW, PBFT_DROP_BAD_NEWVIEW,
                            seed, verbose);
}
static int sc_newview_dup(uint64_t seed, bool verbose)
{
    /* A repeated VIEW-CHANGE breaks the list's strictly ascending senders: the codec. */
    return newview_scenario("newview-dup-vcs-refused", PBFT_BYZ_NEWVIEW_DUP, PBFT_DROP_MALFORMED,
                            seed, verbose);
}
static int sc_newview_wrong_view(uint64_t seed, bool verbose)
{
    return newview_scenario("newview-wrong-view-refused", PBFT_BYZ_NEWVIEW_VIEW,
                            PBFT_DROP_BAD_NEWVIEW, seed, verbose);
}

static int sc_newview_unchecked_detected(uint64_t seed, bool verbose)
{
    const char *name = "newview-unchecked-omit-detected";
    nvf_ctx c = {0};
    uint64_t ref = 0, act = 0;
    char why[SIM_REASON_BYTES];
    /* The same run with the check on is safe and live (replica 2 rejoins after the heal). */
    int r = newview_run(seed, verbose, PBFT_BYZ_NEWVIEW_OMIT, false, true, PBFT_DROP_BAD_NEWVIEW,
                        &ref, &act, &c, why, sizeof why);
    int rc = check(r == 0, name, why);
    memset(&c, 0, sizeof c);
    r = newview_run(seed, verbose, PBFT_BYZ_NEWVIEW_OMIT, true, true, PBFT_DROP_BAD_NEWVIEW, &ref,
                    &act, &c, why, sizeof why);
    rc |= check(r == SIM_V_AGREEMENT, name,
                "backups that skip the NEW-VIEW check took an omitted certificate unnoticed");
    if (rc == 0)
        printf("ok scenario %s: the checker caught it: %s\n", name, why);
    else
        printf("  (the run ended: %s)\n", why);
    return rc;
}

/* ---------------------------------------------------------------------------------------
 * newview-forgers-random: the random fault runs (sim_random_options) with every Byzantine
 * replica a NEW-VIEW forger, cycling through the six forgeries, and one forger added where
 * the plan had none: 100 seeds at n = 4 and 50 at n = 7 must all be safe and live.
 * -------------------------------------------------------------------------------------*/
static int sc_newview_forgers_random(uint64_t seed, bool verbose)
{
    const char *name = "newview-forgers-random";
    int rc = 0;
    uint64_t actions = 0, runs = 0;
    for (uint16_t n = 4; n <= 7 && rc == 0; n += 3) {
        uint64_t count = n == 4 ? 100 : 50;
        for (uint64_t k = 0; k < count && rc == 0; k++) {
            uint64_t sd = seed * 1000 + n * 100000 + k;
            sim_options o;
            sim_random_plan p;
            sim_random_options(n, sd, &o, &p);
            o.verbose = verbose;
            if (p.n_byz == 0 && p.n_crash < (n - 1) / 3) {
                /* a replica the plan neither crashes nor already made Byzantine */
                int node = (int)(sd % n);
                for (int i = 0; i < p.n_crash; i++)
                    if (p.crash_node[i] == node)
                        node = (node + 1) % n;
                for (int i = 0; i < p.n_crash; i++)
                    if (p.crash_node[i] == node)
                        node = -1;
                if (node >= 0)
                    p.byz_node[p.n_byz++] = node;
            }
            for (int i = 0; i < p.n_byz; i++)
                p.byz_mode[i] = PBFT_BYZ_NEWVIEW_OMIT + (int)((sd + (uint64_t)i) % 6);
            sim *s = make_sim(&o, name);
            if (!s)
                return 1;
            if (sim_random_apply(s, &p) != 0) {
                sim_free(s);
                return check(false, name, "sim_random_apply");
            }
            sim_totals tot;
            char why[SIM_REASON_BYTES];
            int r = run_verdict(s, &tot, why, sizeof why);
            if (r != 0) {
                char desc[1024];
                sim_random_describe(&o, &p, desc, sizeof desc);
                printf("FAIL scenario %s: n=%u seed=%" PRIu64 ": %s\n  plan: %s\n", name, n, sd,
                       why, desc);
                rc = 1;
            }
            actions += tot.byz_actions;
            runs++;
        }
    }
    rc |= check(actions > 0, name, "no forger ever forged a NEW-VIEW");
    if (rc == 0)
        printf("ok scenario %s: %" PRIu64 " random runs (n = 4 and 7), %" PRIu64
               " forgeries, all safe and live\n",
               name, runs, actions);
    return rc;
}

/* ---------------------------------------------------------------------------------------
 * cluster-restart-one-block: every replica crashes at once, 6 times under load, and comes
 * back from its records; clients re-send what has not committed. The blocks in flight at a
 * crash are restored from the records and committed again, so a re-sent transaction is in
 * one of them: an honest primary must not propose it again (issue 12, "one transaction,
 * one block"; without the in-flight entries of consensus/replica.c the first run fails).
 * The checker's validity rule fails the run on such a repeat; the run must also be live.
 * -------------------------------------------------------------------------------------*/
static int sc_cluster_restart_one_block(uint64_t seed, bool verbose)
{
    const char *name = "cluster-restart-one-block";
    int rc = 0;
    uint64_t crashes = 0, dups = 0;
    for (uint64_t k = 0; k < 4 && rc == 0; k++) {
        sim_options o;
        sim_options_defaults(&o, 4, seed + k);
        o.verbose = verbose;
        o.txs_total = 300;
        o.n_clients = 6;
        o.submit_gap_min_ms = 20;
        o.submit_gap_max_ms = 120;
        o.submit_burst_max = 4;
        o.client_retry_ms = 200; /* re-sends land while the restored blocks are in flight */
        o.core.window = 32;
        o.core.max_inflight = 32; /* the primary may propose while restored blocks wait */
        o.core.max_block_txs = 2;
        o.submit_end_ms = 8000;
        o.heal_ms = 9000;
        sim *s = make_sim(&o, name);
        if (!s)
            return 1;
        sim_rng g;
        sim_rng_seed(&g, sim_mix64(seed + k) ^ 0x636c75737465ull);
        for (uint64_t t = 700; t + 600 < 8000; t += 900 + sim_rng_below(&g, 400)) {
            for (int i = 0; i < 4; i++) {
                sim_at_crash(s, t, i);
                sim_at_restart(s, t + 50 + sim_rng_below(&g, 100), i);
            }
        }
        sim_totals tot;
        char why[SIM_REASON_BYTES];
        int r = run_verdict(s, &tot, why, sizeof why);
        rc |= check(r == 0, name, why);
        rc |= check(tot.crashes >= 20, name, "fewer than 5 whole-cluster crashes landed");
        crashes += tot.crashes;
        dups += tot.dup_tx_commits;
    }
    if (rc == 0)
        printf("ok scenario %s: 4 runs, %" PRIu64 " crashes (all four replicas at once), live, "
               "no transaction proposed twice by an honest primary (%" PRIu64
               " repeats in all, each a copy revived from an earlier view)\n",
               name, crashes, dups);
    return rc;
}

static const sim_scenario scenarios[] = {
    {"silent-primary", "replica 0 is silent: the others change view and commit everything",
     sc_silent_primary},
    {"slow-primary-replaced",
     "replica 0 holds pre-prepares just under the timeout: complaints replace it",
     sc_slow_primary_replaced},
    {"correct-primary-kept", "all correct, delays and bursts: no complaint, no view change",
     sc_correct_primary_kept},
    {"primary-crash-after-prepare",
     "a block prepared in view 0 survives the primary's crash with the same digest",
     sc_primary_crash_after_prepare},
    {"new-primary-fails", "n=7: primaries of views 0 and 1 crash, view 2 takes over",
     sc_new_primary_fails},
    {"restart-catches-up", "a replica down for 3+ checkpoints catches up by state transfer",
     sc_restart_catches_up},
    {"restart-votes-again",
     "a backup down 12 s under load votes again within 10 s; a second crash costs no view "
     "change",
     sc_restart_votes_again},
    {"partition-rejoin",
     "a backup cut off 60 s under load never leaves the view alone and votes again within "
     "10 s of the heal",
     sc_partition_rejoin},
    {"partition-deaf-rejoin",
     "a backup that hears nothing for 30 s (it still sends) votes again within 10 s",
     sc_partition_deaf_rejoin},
    {"partition-mute-rejoin",
     "a backup whose messages are lost for 30 s (it still hears) votes again within 10 s",
     sc_partition_mute_rejoin},
    {"replay-and-bad-signature",
     "replayed old-view messages and bad signatures are dropped and counted",
     sc_replay_and_bad_signature},
    {"negative-control-twins",
     "f+1 twinned ids in two groups: the checker must report an agreement violation",
     sc_negative_control_twins},
    {"power-loss", "power cuts lose each step's unsynced batch: safe, live, no equivocation",
     sc_power_loss},
    {"power-loss-unsafe-detected",
     "a driver that sends before it syncs equivocates after a power cut: the checker must catch it",
     sc_power_loss_unsafe_detected},
    {"alloc-faults",
     "the k-th allocation fails (k = 1, 2, ...): the step emits nothing, the replica "
     "fail-stops; safe, live, every vote sent with its record",
     sc_alloc_faults},
    {"lost-records-unsafe-detected",
     "a driver that loses records yet sends the votes: the checker must catch it",
     sc_lost_records_unsafe_detected},
    {"newview-omit-refused",
     "a new primary omits a prepared certificate from its NEW-VIEW: refused, view 2 takes over",
     sc_newview_omit},
    {"newview-digest-refused", "a new primary alters a prepared digest in its NEW-VIEW: refused",
     sc_newview_digest},
    {"newview-invent-refused", "a new primary invents a request at a null slot: refused",
     sc_newview_invent},
    {"newview-few-vcs-refused", "a NEW-VIEW with only 2f VIEW-CHANGEs: refused", sc_newview_few},
    {"newview-dup-vcs-refused", "a NEW-VIEW that repeats a VIEW-CHANGE: refused", sc_newview_dup},
    {"newview-wrong-view-refused", "a NEW-VIEW for a view its VIEW-CHANGEs do not name: refused",
     sc_newview_wrong_view},
    {"newview-unchecked-omit-detected",
     "backups that skip the NEW-VIEW check take an omitted certificate: the checker must catch it",
     sc_newview_unchecked_detected},
    {"newview-forgers-random",
     "random fault runs with NEW-VIEW forgers as the Byzantine replicas: safe and live",
     sc_newview_forgers_random},
    {"cluster-restart-one-block",
     "every replica crashes at once under load, clients re-send: no transaction in two blocks",
     sc_cluster_restart_one_block},
    {"replay-determinism", "the same seed twice gives identical traces", sc_replay_determinism},
};

const sim_scenario *sim_scenarios(size_t *count)
{
    *count = sizeof scenarios / sizeof scenarios[0];
    return scenarios;
}
