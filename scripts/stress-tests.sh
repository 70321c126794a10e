#!/usr/bin/env bash
# Run the integration and Byzantine tests (real pbftd processes) N times in a row, with K
# busy-loop CPU hogs beside them, and report every failure with its log. A test that fails
# one run in three on a busy machine fails here; CI's machines are shared and busy.
#
#   scripts/stress-tests.sh N [--hogs K] [--asan] [-R REGEX] [--jobs J]
#
#   N          rounds (each runs every test with the ctest label `integration`, which
#              includes the Byzantine ones)
#   --hogs K   K processes spinning `while :; do :; done` for the whole run (default 0)
#   --asan     use the AddressSanitizer + UBSan build (build-asan/) instead of build/
#   -R REGEX   only the tests whose ctest name matches (e.g. -R 'byzantine_|overload')
#   --jobs J   ctest -j J (default: the number of cores, as scripts/test.sh)
#
# Builds first (as scripts/test.sh does). Every round's whole ctest output is kept in
# stress-tests/roundR.log, and a failed test's directory (its replicas' logs and data) is
# kept under stress-tests/ too (KEEP_FAILED). The last line is one JSON summary:
# rounds, green rounds, failures by test. Exits 1 if any round failed.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=""
hogs=0
asan=0
regex=""
jobs=$(nproc 2>/dev/null || echo 2)
while [ $# -gt 0 ]; do
    case "$1" in
    --hogs) hogs="${2:?--hogs needs a number}"; shift 2 ;;
    --asan) asan=1; shift ;;
    -R) regex="${2:?-R needs a regular expression}"; shift 2 ;;
    --jobs) jobs="${2:?--jobs needs a number}"; shift 2 ;;
    -h | --help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "stress-tests.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
    *)
        [ -z "$rounds" ] || { echo "stress-tests.sh: one N only (try --help)" >&2; exit 2; }
        rounds=$1
        shift
        ;;
    esac
done
case "$rounds$hogs$jobs" in
*[!0-9]*) echo "stress-tests.sh: N, --hogs and --jobs take whole numbers (try --help)" >&2; exit 2 ;;
esac
[ -n "$rounds" ] && [ "$rounds" -ge 1 ] || { echo "stress-tests.sh: give N >= 1 (try --help)" >&2; exit 2; }

# shellcheck source=scripts/deps.sh
. scripts/deps.sh
pbft_ensure_deps python3-nacl prometheus python3-matplotlib curl gdb
if [ "$asan" -eq 1 ]; then
    B=build-asan
    cmake -S . -B "$B" -DCMAKE_BUILD_TYPE=Debug -DPBFT_SANITIZE=ON -DPBFT_IT_SMALL=OFF >/dev/null
    export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1
    export LSAN_OPTIONS=suppressions=$PWD/tests/lsan.supp # one nng 1.5.2 leak, explained there
else
    B=build
    cmake -S . -B "$B" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPBFT_SANITIZE=OFF -DPBFT_IT_SMALL=OFF >/dev/null
fi
echo "==> building ($B/)"
cmake --build "$B" -j"$jobs" >/dev/null

out=$PWD/stress-tests
mkdir -p "$out"
export KEEP_FAILED="$out"
hog_pids=()
stop_hogs() { for p in "${hog_pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap stop_hogs EXIT
for _ in $(seq 1 "$hogs"); do
    (while :; do :; done) &
    hog_pids+=($!)
done

declare -A fails=()
green=0
t0=$(date +%s)
args=(-L integration --output-on-failure -j"$jobs")
[ -z "$regex" ] || args+=(-R "$regex")
for r in $(seq 1 "$rounds"); do
    log="$out/round$r.log"
    r0=$(date +%s)
    if ctest --test-dir "$B" "${args[@]}" >"$log" 2>&1; then
        green=$((green + 1))
        echo "==> round $r/$rounds: green ($(($(date +%s) - r0)) s, $hogs hogs)"
    else
        failed=$(sed -En 's/^[[:space:]]*[0-9]+ - ([^ ]+) \(.*/\1/p' "$log")
        echo "==> round $r/$rounds: FAILED ($(($(date +%s) - r0)) s): $(echo "$failed" | tr '\n' ' ')"
        for t in $failed; do
            fails[$t]=$((${fails[$t]:-0} + 1))
            echo "---- $t, round $r (whole output: $log)"
            # The failing test's own output: ctest prints it after its verdict line, up to
            # the next test's line.
            awk -v t="$t" 'p && /^ *(Start +[0-9]+:|[0-9]+\/[0-9]+ Test +#)/ {exit}
                index($0, ": " t " ") && / Test +#/ {p=1} p {print}' "$log" | tail -n 80
        done
    fi
done
json="{\"stress\":\"integration\",\"build\":\"$B\",\"rounds\":$rounds,\"green\":$green,\"hogs\":$hogs,\"seconds\":$(($(date +%s) - t0)),\"failures\":{"
sep=""
for t in "${!fails[@]}"; do
    json="$json$sep\"$t\":${fails[$t]}"
    sep=","
done
json="$json}}"
echo "$json"
[ "$green" -eq "$rounds" ]
