#!/usr/bin/env bash
# Benchmark the consensus core in the simulator: 4 honest replicas, no faults, pre-signed
# transactions, every replica verifying every signature. Builds an optimised pbft-sim in
# build-bench/ (installing missing Debian packages first) and prints one JSON line per block
# size (B = 100 and B = 1000): committed transactions per CPU second, the raw Ed25519
# verifications per second measured in the same run, and their ratio
# (efficiency = committed_tx_per_cpu_s * n / verify_per_s; 1.0 = nothing but one signature
# check per transaction per replica).
#
#   scripts/bench-core.sh             both block sizes, default block counts
#   scripts/bench-core.sh --blocks M  M blocks per run
#   scripts/bench-core.sh --help
# JOBS=N limits the build's parallelism (default: nproc).
set -euo pipefail
cd "$(dirname "$0")/.."

blocks=()
while [ $# -gt 0 ]; do
    case "$1" in
    --blocks)
        [ $# -ge 2 ] || {
            echo "bench-core.sh: --blocks needs a number" >&2
            exit 2
        }
        blocks=(--blocks "$2")
        shift 2
        ;;
    -h | --help)
        sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "bench-core.sh: unknown option '$1' (try --help)" >&2
        exit 2
        ;;
    esac
done

# shellcheck source=scripts/deps.sh
. scripts/deps.sh
pbft_ensure_deps

cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DPBFT_SANITIZE=OFF >/dev/null
cmake --build build-bench --target pbft-sim -j"${JOBS:-$(nproc 2>/dev/null || echo 2)}" >/dev/null

for b in 100 1000; do
    build-bench/tests/sim/pbft-sim --bench --block-txs "$b" "${blocks[@]}"
done
