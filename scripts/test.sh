#!/usr/bin/env bash
# Build everything and run every test: once optimised, once under ASan + UBSan, then every
# fuzz target for 10 s (clang + libFuzzer).
# Installs missing Debian packages first. Exits non-zero on any failure.
#
#   scripts/test.sh            all three passes (about 13 minutes on 2 cores; CI runs this)
#   scripts/test.sh --fast     optimised pass only (for development)
#   scripts/test.sh --long     all three, longer: 10,000 random simulator seeds at n=4 and
#                              at n=7 (2,000 and 1,000 by default), 500 at n=13 (100), 1,000
#                              with power cuts and with allocation faults (200), 15 loaded
#                              stops (6), all six NEW-VIEW forgeries in real processes
#                              (2), fuzzing 120 s a target (10), and the sanitizer
#                              pass at full size (PBFT_IT_SMALL off: every Byzantine mode,
#                              the namespace hosts, 6 stops, 30 kills, 20,000 transfers)
#   scripts/test.sh --help
set -euo pipefail
cd "$(dirname "$0")/.."

fast=0
long=0
for a in "$@"; do
    case "$a" in
    --fast) fast=1 ;;
    --long) long=1 ;;
    -h | --help)
        sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "test.sh: unknown option '$a' (try --help)" >&2
        exit 2
        ;;
    esac
done

# shellcheck source=scripts/deps.sh
. scripts/deps.sh
# python3-nacl: only for the integration test of a client written from docs/ alone;
# prometheus: only for its promtool, which checks GET /metrics; python3-matplotlib: only for
# the plots of scripts/viewchange.sh (docs/architecture.md, "Dependencies"); curl: for the
# integration tests that read GET /metrics; gdb: prints the stacks of a replica that does not
# stop on SIGTERM (tests/integration/netlib.sh).
pbft_ensure_deps python3-nacl prometheus python3-matplotlib curl gdb

jobs=$(nproc 2>/dev/null || echo 2)
start=$(date +%s)
# The sizes of the long runs (the seed counts are set every time: CMake caches them).
seeds_small=2000
seeds_medium=1000
seeds_large=100
fuzz_s=10
it_small=ON
newview_modes="newview-omit;newview-wrong-view"
if [ "$long" -eq 1 ]; then
    seeds_small=10000
    seeds_medium=10000
    seeds_large=500
    fuzz_s=120
    it_small=OFF
    newview_modes="newview-omit;newview-digest;newview-invent;newview-few;newview-dup;newview-wrong-view"
    export STOP_ROUNDS=15
fi

echo "==> pass 1: optimised build (build/)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPBFT_SANITIZE=OFF \
    -DPBFT_SIM_SEEDS_SMALL=$seeds_small -DPBFT_SIM_SEEDS_MEDIUM=$seeds_medium \
    -DPBFT_SIM_SEEDS_LARGE=$seeds_large -DPBFT_IT_SMALL=OFF \
    "-DPBFT_NEWVIEW_IT_MODES=$newview_modes" >/dev/null
cmake --build build -j"$jobs"
ctest --test-dir build --output-on-failure -j"$jobs"

if [ "$fast" -eq 0 ]; then
    echo "==> pass 2: AddressSanitizer + UndefinedBehaviorSanitizer (build-asan/)"
    # Sanitizers slow the simulator ~5x: run a tenth of the random seeds (the named
    # scenarios and every unit test run in full), and the integration tests at their small
    # sizes (PBFT_IT_SMALL, tests/CMakeLists.txt) unless --long.
    cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DPBFT_SANITIZE=ON \
        -DPBFT_SIM_SEEDS_SMALL=200 -DPBFT_SIM_SEEDS_MEDIUM=100 -DPBFT_SIM_SEEDS_LARGE=10 \
        -DPBFT_IT_SMALL=$it_small >/dev/null
    cmake --build build-asan -j"$jobs"
    # tests/lsan.supp: one leak inside nng 1.5.2 at shutdown, explained there.
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
    LSAN_OPTIONS=suppressions=$PWD/tests/lsan.supp \
    ctest --test-dir build-asan --output-on-failure -j"$jobs"
fi

if [ "$fast" -eq 0 ]; then
    echo "==> pass 3: every libFuzzer target for $fuzz_s s (build-fuzz/; scripts/fuzz.sh)"
    scripts/fuzz.sh --time "$fuzz_s"
fi

echo "==> all tests passed in $(($(date +%s) - start)) s"
