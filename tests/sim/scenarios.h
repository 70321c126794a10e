/*
 * scenarios.h - the simulator's named scenarios and its random-run generator (pbft-sim).
 */
#ifndef PBFT_TESTS_SIM_SCENARIOS_H
#define PBFT_TESTS_SIM_SCENARIOS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tests/sim/sim.h"

/* The liveness bound of random runs: after the faults heal, every submitted transaction must
 * commit at every honest running replica within 30 s of virtual time. The runs' view
 * timeouts are 500..1000 ms (doubling, capped at 8x), client retries come every 1..3 s and
 * state-transfer retries every <= 800 ms; passing runs recover within ~6.5 s at n = 4 and 7
 * and ~10 s at n = 13 (measured over hundreds of seeds), so 30 s leaves room for several
 * failed views (each at most 8 s), yet it is a real bound: a cluster that cannot finish in
 * 30 quiet seconds is stuck. */
#define SIM_LIVENESS_BOUND_MS 30000u

/* sim_random_options draws a random fault run for (n, seed) into o and applies the faulty
 * set, crashes and partitions to a sim built from it. Steps: sim_random_options, sim_new,
 * sim_random_apply, sim_run. `desc` receives a one-line description of the draw. */
typedef struct {
    int byz_node[PBFT_MAX_N];
    int byz_mode[PBFT_MAX_N];
    uint32_t byz_delay_ms;
    uint32_t byz_percent;
    int n_byz;
    int crash_node[PBFT_MAX_N];
    int n_crash;
    uint64_t crash_at[PBFT_MAX_N][2];
    uint64_t restart_at[PBFT_MAX_N][2];
    int crash_times[PBFT_MAX_N];
    bool power_cuts;   /* each crash is a power cut at the node's next step (pbft-sim
                          --power-cuts); set by the caller, not drawn */
    bool alloc_faults; /* each crash is an allocation fault: the node's k-th allocation from
                          then on fails (pbft-sim --alloc-faults); set by the caller */
    int n_parts;
    uint64_t part_start[8], part_end[8];
    int part_type[8];
    uint8_t part_cut[8][PBFT_MAX_N * PBFT_MAX_N];
} sim_random_plan;

/* How the plan's crashes happen (pbft-sim's flags). */
enum { SIM_CRASH_PLAIN = 0, SIM_CRASH_POWER_CUT = 1, SIM_CRASH_ALLOC_FAULT = 2 };

void sim_random_options(uint16_t n, uint64_t seed, sim_options *o, sim_random_plan *plan);
int sim_random_apply(sim *s, const sim_random_plan *plan);
void sim_random_describe(const sim_options *o, const sim_random_plan *plan, char *out, size_t cap);

/* A named scenario: returns 0 if every assertion held, 1 otherwise (printing why). */
typedef struct {
    const char *name;
    const char *what;
    int (*run)(uint64_t seed, bool verbose);
} sim_scenario;

const sim_scenario *sim_scenarios(size_t *count);

#endif
