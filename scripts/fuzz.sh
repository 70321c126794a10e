#!/usr/bin/env bash
# Run the libFuzzer targets (clang, ASan + UBSan) for a given time each.
#
#   scripts/fuzz.sh [--time SECONDS] [--targets LIST] [--build DIR] [--out DIR]
#   scripts/fuzz.sh --seed        rewrite the binary seed corpora (tests/fuzz/corpus/)
#   scripts/fuzz.sh --help
#
# Targets (tests/fuzz/): fuzz_msg (every consensus message type), fuzz_tx (transactions and
# blocks), fuzz_rpc (JSON-RPC requests and batches against a real node), fuzz_config
# (config.toml), fuzz_genesis (genesis.json). Each also checks that what decodes encodes
# back to the same bytes. Defaults: --time 30, every target, --build build-fuzz,
# --out build-fuzz/fuzz-out. Each target starts from the seed corpus in the repo plus what
# earlier runs found (kept in --out), and prints one JSON line: executions, rate, corpus
# size, new coverage. A crash stops the script with the input's path: copy the file into
# tests/fuzz/regressions/<target>/ with the fix, so ctest replays it from then on.
# Installs clang and libFuzzer's runtime (Debian: clang, libclang-rt-14-dev) if missing.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=30
targets="fuzz_msg fuzz_tx fuzz_rpc fuzz_config fuzz_genesis"
build=build-fuzz
out=
seed=0
while [ $# -gt 0 ]; do
    case "$1" in
    --time) secs=${2:?--time needs seconds}; shift 2 ;;
    --targets) targets=${2:?--targets needs a list}; targets=${targets//,/ }; shift 2 ;;
    --build) build=${2:?--build needs a directory}; shift 2 ;;
    --out) out=${2:?--out needs a directory}; shift 2 ;;
    --seed) seed=1; shift ;;
    -h | --help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "fuzz.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
    esac
done
case "$secs" in '' | *[!0-9]*) echo "fuzz.sh: --time must be whole seconds" >&2; exit 2 ;; esac
out=${out:-$build/fuzz-out}

# shellcheck source=scripts/deps.sh
. scripts/deps.sh
pbft_ensure_deps clang libclang-rt-14-dev

echo "==> building the fuzz targets with clang (ASan + UBSan + libFuzzer) in $build/"
CC=clang cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPBFT_FUZZ=ON >/dev/null
jobs=$(nproc 2>/dev/null || echo 2)
# shellcheck disable=SC2086
cmake --build "$build" -j"$jobs" --target pbftd make_seeds $targets >/dev/null

if [ "$seed" -eq 1 ]; then
    "$build/tests/fuzz/make_seeds" tests/fuzz/corpus
    echo "==> seed corpora written to tests/fuzz/corpus/fuzz_msg and fuzz_tx"
    exit 0
fi

mkdir -p "$out"
home=
cleanup() { [ -z "$home" ] || rm -rf "$home"; rm -f /dev/shm/pbft-fuzz-* /tmp/pbft-fuzz-*.toml; }
trap cleanup EXIT
total_execs=0
for t in $targets; do
    [ -x "$build/$t" ] || { echo "fuzz.sh: no target $t" >&2; exit 2; }
    work="$out/$t/corpus"
    arts="$out/$t/crashes"
    mkdir -p "$work" "$arts"
    if [ "$t" = fuzz_rpc ]; then
        # A real node (node0 of a testnet whose peers are absent), opened once by the target.
        # The chain id of docs/rpc.md, so the signed transaction of the docs-*.json seeds
        # verifies and the fuzzer starts from the accepting path too.
        home=$(mktemp -d "${TMPDIR:-/tmp}/pbft-fuzz-home.XXXXXX")
        "$build/pbftd" testnet --n 4 --out "$home" --base-port 24300 --accounts 2 \
            --chain-id pbft-local >/dev/null
        export PBFT_FUZZ_HOME="$home/node0"
    fi
    seeds=(tests/fuzz/corpus/$t)
    [ -d "tests/fuzz/regressions/$t" ] && seeds+=("tests/fuzz/regressions/$t")
    echo "==> $t for ${secs} s (corpus $work)"
    log="$out/$t/last.log"
    # -max_len: the largest seed is a few KiB; 64 KiB leaves room for lists and batches.
    # -timeout: one input taking 10 s is a bug (a hang), reported like a crash.
    rc=0
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
        "$build/$t" -max_total_time="$secs" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$arts/" "$work" "${seeds[@]}" >"$log" 2>&1 ||
        rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
    files=$(find "$work" -type f | wc -l)
    execs=${execs:-0}
    total_execs=$((total_execs + execs))
    printf '{"target":"%s","seconds":%s,"execs":%s,"execs_per_s":%s,"coverage":%s,"corpus_files":%s,"ok":%s}\n' \
        "$t" "$secs" "$execs" "$((execs / (secs > 0 ? secs : 1)))" "${cov:-0}" "$files" \
        "$([ "$rc" -eq 0 ] && echo true || echo false)"
    if [ "$rc" -ne 0 ]; then
        echo "==> $t FAILED (exit $rc); the input and the report:" >&2
        ls -1 "$arts" >&2 || true
        grep -E -m 30 'ERROR|SUMMARY|fuzz check failed|#[0-9] ' "$log" >&2 || tail -30 "$log" >&2
        echo "Fix it, then copy the input into tests/fuzz/regressions/$t/ (ctest replays it)." >&2
        exit 1
    fi
    if [ "$t" = fuzz_rpc ]; then rm -rf "$home"; home=; fi
done
echo "==> every target ran clean: $total_execs executions in all"
