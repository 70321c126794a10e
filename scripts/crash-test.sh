#!/usr/bin/env bash
# The crash-consistency test at a large size (issue 6; the CI size runs in scripts/test.sh):
# under JSON-RPC load, kill -9 random replicas at random moments (at most f at once),
# restart them, then check that every acknowledged transaction is in every replica's chain,
# that all chains are identical, and that no replica signed two different messages for one
# (type, view, seq). tests/integration/crash_consistency.sh does the work.
#
#   scripts/crash-test.sh [--kills K] [--n N] [--seed S] [--bin DIR] [--base-port P] [--keep]
#   scripts/crash-test.sh --help
# Defaults: 300 kills, 4 replicas, a seed from the clock (printed), the build/ binaries
# (built first if missing), ports from 25000. The last line on stdout is a JSON summary.
set -euo pipefail
cd "$(dirname "$0")/.."
kills=300
n=4
seed=
bin=build
base=25000
keep=
while [ $# -gt 0 ]; do
    case "$1" in
    --kills) kills=${2:?}; shift 2 ;;
    --n) n=${2:?}; shift 2 ;;
    --seed) seed=${2:?}; shift 2 ;;
    --bin) bin=${2:?}; shift 2 ;;
    --base-port) base=${2:?}; shift 2 ;;
    --keep) keep=1; shift ;;
    -h | --help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "crash-test.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
    esac
done
for v in "$kills" "$n" "$base"; do
    case "$v" in '' | *[!0-9]*) echo "crash-test.sh: numbers only (got '$v')" >&2; exit 2 ;; esac
done
# shellcheck source=scripts/deps.sh
. scripts/deps.sh
pbft_ensure_deps python3-nacl
if [ ! -x "$bin/pbftd" ]; then
    echo "==> building $bin/"
    cmake -S . -B "$bin" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    cmake --build "$bin" -j"$(nproc 2>/dev/null || echo 2)" --target pbftd pbft-cli >/dev/null
fi
bin=$(cd "$bin" && pwd)
echo "==> $kills kills on $n replicas (progress every kill batch in the log lines)"
CRASH_KILLS=$kills CRASH_N=$n CRASH_SEED=${seed:-$(date +%s)} KEEP=$keep PBFT_BIN=$bin \
    PBFT_BASE_PORT=$base tests/integration/crash_consistency.sh
