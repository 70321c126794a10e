#!/usr/bin/env bash
# JSON-RPC ingest on one node (a benchmark, not a test): how fast node 0 of a running
# 4-replica network accepts pre-signed transfers with broadcast_tx_async, as single
# requests and as batches of 100. The node verifies every signature on its RPC threads and
# queues the transaction for consensus, which keeps committing in the background.
#
#   scripts/bench-rpc.sh [--txs N]
#
# Prints one JSON line per mode. Compare tx_per_s with scripts/bench.sh's
# committed_tx_per_s: the goal is an RPC path at least 3x faster than the cluster commits.
set -euo pipefail
cd "$(dirname "$0")/.."
txs=12000
while [ $# -gt 0 ]; do
    case "$1" in
    --txs) txs="$2"; shift 2 ;;
    -h | --help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench-rpc.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
    esac
done
# shellcheck source=scripts/deps.sh
. scripts/deps.sh
pbft_ensure_deps
cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build-bench -j"$(nproc)" --target pbftd pbft-cli pbft-load >/dev/null
B=build-bench
dir=$(mktemp -d "${TMPDIR:-/tmp}/pbft-bench-rpc.XXXXXX")
base=29800
pids=()
stop_net() {
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    pids=()
}
trap 'stop_net; rm -rf "$dir"' EXIT
run() { # batch size, transactions, client threads
    rm -rf "$dir/net"
    "$B/pbftd" testnet --n 4 --out "$dir/net" --base-port "$base" --accounts 64 >/dev/null
    for i in 0 1 2 3; do
        "$B/pbftd" start --home "$dir/net/node$i" >"$dir/node$i.log" 2>&1 &
        pids+=($!)
    done
    for _ in $(seq 100); do
        "$B/pbft-cli" --rpc "http://127.0.0.1:$((base + 100))" status >/dev/null 2>&1 && break
        sleep 0.1
    done
    "$B/pbft-load" --net "$dir/net" --rpc "http://127.0.0.1:$((base + 100))" --txs "$2" \
        --batch "$1" --threads "$3" --ingest 1 | tail -1 || true
    stop_net
}
run 1 $((txs / 4)) 4
run 100 "$txs" 8
