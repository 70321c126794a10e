#!/usr/bin/env bash
# Throughput and latency of a real 4-replica network on this machine (a benchmark, not a
# test: figures vary with the machine's load).
#
#   scripts/bench.sh [--txs N] [--n REPLICAS]
#
# Builds a Release pbftd, starts N replicas on 127.0.0.1 (every block synced to RocksDB),
# and drives them with pbft-load: pre-signed transfers over JSON-RPC batches. Two runs:
# as fast as possible (peak), then at half the peak rate (latency). Prints one JSON line,
# last on stdout, with the ceiling measured in the same run:
#   ceiling_tx_per_s = verify_per_s_per_core * cores / n
# (every replica verifies every signature once, so n verifications bound each
# transaction), and efficiency = committed_tx_per_s / ceiling_tx_per_s.
set -euo pipefail
cd "$(dirname "$0")/.."

txs=20000
n=4
while [ $# -gt 0 ]; do
    case "$1" in
    --txs) txs="$2"; shift 2 ;;
    --n) n="$2"; shift 2 ;;
    -h | --help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
    esac
done

# shellcheck source=scripts/deps.sh
. scripts/deps.sh
pbft_ensure_deps
echo "==> building (build-bench/, Release)" >&2
cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build-bench -j"$(nproc)" --target pbftd pbft-cli pbft-load >/dev/null
B=build-bench

dir=$(mktemp -d "${TMPDIR:-/tmp}/pbft-bench.XXXXXX")
base=29600
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT

run_net() { # creates and starts a fresh network
    rm -rf "$dir/net"
    "$B/pbftd" testnet --n "$n" --out "$dir/net" --base-port "$base" --accounts 64 >/dev/null
    pids=()
    for i in $(seq 0 $((n - 1))); do
        "$B/pbftd" start --home "$dir/net/node$i" >"$dir/node$i.log" 2>&1 &
        pids+=($!)
    done
    for i in $(seq 0 $((n - 1))); do
        for _ in $(seq 100); do
            "$B/pbft-cli" --rpc "http://127.0.0.1:$((base + 100 + i))" status >/dev/null 2>&1 && break
            sleep 0.1
        done
    done
}

stop_net() {
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    pids=()
}

echo "==> peak: $txs transfers as fast as possible" >&2
run_net
peak=$("$B/pbft-load" --net "$dir/net" --rpc "http://127.0.0.1:$((base + 100))" --txs "$txs" \
    --threads 4 --batch 100 --n "$n" | tail -1 || true) # it exits 1 if some did not commit
stop_net
echo "$peak" >&2
rate=$(echo "$peak" | sed -n 's/.*"committed_tx_per_s":\([0-9.]*\).*/\1/p')
half=$(awk -v r="$rate" 'BEGIN { printf "%d", r / 2 }')
[ "$half" -ge 50 ] || half=50

echo "==> latency at half the peak: $half tx/s" >&2
run_net
lat=$("$B/pbft-load" --net "$dir/net" --rpc "http://127.0.0.1:$((base + 100))" \
    --txs $((half * 10)) --threads 4 --batch 20 --rate "$half" --n "$n" | tail -1 || true)
stop_net
echo "$lat" >&2

field() { echo "$1" | sed -n "s/.*\"$2\":\([0-9.]*\).*/\1/p"; }
[ -n "$peak" ] && [ -n "$lat" ] || { echo "bench.sh: pbft-load printed nothing" >&2; exit 1; }
printf '{"bench":"pbftd","n":%s,"committed_tx_per_s":%s,"p50_ms":%s,"p99_ms":%s,' \
    "$n" "$(field "$peak" committed_tx_per_s)" "$(field "$lat" p50_ms)" "$(field "$lat" p99_ms)"
printf '"submitted":%s,"committed":%s,' "$(field "$peak" submitted)" "$(field "$peak" committed)"
printf '"half_load_tx_per_s":%s,"peak_p50_ms":%s,"block_txs":%s,' \
    "$half" "$(field "$peak" p50_ms)" "$(field "$peak" block_txs)"
printf '"verify_per_s_per_core":%s,"cores":%s,"ceiling_tx_per_s":%s,"efficiency":%s}\n' \
    "$(field "$peak" verify_per_s_per_core)" "$(field "$peak" cores)" \
    "$(field "$peak" ceiling_tx_per_s)" "$(field "$peak" efficiency)"
