#!/usr/bin/env bash
# JSON-RPC ingest on one node (a benchmark, not a test): how fast a node accepts distinct
# pre-signed transfers with broadcast_tx_async, against how fast the cluster commits them,
# all measured in the same run on this machine:
#   1. commit: a 4-replica network driven as fast as possible (as scripts/bench.sh's peak);
#   2. ingest alone: node 0 started by itself, so its RPC path has the machine (what a node
#      has in a deployment, where replicas do not share cores); single requests and
#      batches of 100, over kept-alive HTTP/1.1 connections;
#   3. ingest shared: the same, with all 4 replicas on these 2 cores committing meanwhile.
# The node parses the JSON, decodes the hex, verifies every signature on its RPC threads
# and queues the transaction.
#
#   scripts/bench-rpc.sh [--txs N]
#
# Prints one JSON line per step on stderr, then one summary JSON line, last on stdout, with
# ingest_ratio = ingest alone (batches) / committed_tx_per_s (goal >= 3) and
# ingest_vs_verify_ceiling = ingest alone / (verify_per_s_per_core * cores).
set -euo pipefail
cd "$(dirname "$0")/.."
txs=12000
while [ $# -gt 0 ]; do
    case "$1" in
    --txs) txs="$2"; shift 2 ;;
    -h | --help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
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
start_net() { # how many replicas to start (a fresh 4-replica network either way)
    rm -rf "$dir/net"
    "$B/pbftd" testnet --n 4 --out "$dir/net" --base-port "$base" --accounts 64 >/dev/null
    for i in $(seq 0 $(($1 - 1))); do
        "$B/pbftd" start --home "$dir/net/node$i" >"$dir/node$i.log" 2>&1 &
        pids+=($!)
    done
    for _ in $(seq 100); do
        "$B/pbft-cli" --rpc "http://127.0.0.1:$((base + 100))" status >/dev/null 2>&1 && return
        sleep 0.1
    done
    echo "bench-rpc.sh: node 0 did not answer" >&2
    exit 1
}
load() { # extra pbft-load arguments; prints its last line
    "$B/pbft-load" --net "$dir/net" --rpc "http://127.0.0.1:$((base + 100))" "$@" | tail -1 || true
}
field() { echo "$1" | sed -n "s/.*\"$2\":\([0-9.]*\).*/\1/p"; }

step() { # DESCRIPTION REPLICAS LOAD-ARGS...: one measurement on a fresh network
    echo "==> $1" >&2
    start_net "$2"
    shift 2
    local r
    r=$(load "$@")
    stop_net
    echo "$r" >&2
    echo "$r"
}
commit=$(step "1/5 commit: 4 replicas, $txs transfers as fast as possible" 4 \
    --txs "$txs" --threads 4 --batch 100)
single=$(step "2/5 ingest alone, single requests" 1 \
    --txs $((txs / 3)) --batch 1 --threads 4 --ingest 1)
batch=$(step "3/5 ingest alone, batches of 100" 1 --txs "$txs" --batch 100 --threads 8 --ingest 1)
sh_single=$(step "4/5 ingest shared with 4 committing replicas, single requests" 4 \
    --txs $((txs / 3)) --batch 1 --threads 4 --ingest 1)
sh_batch=$(step "5/5 ingest shared with 4 committing replicas, batches of 100" 4 \
    --txs "$txs" --batch 100 --threads 8 --ingest 1)

c=$(field "$commit" committed_tx_per_s)
a=$(field "$batch" tx_per_s)
vps=$(field "$batch" verify_per_s_per_core)
cores=$(field "$batch" cores)
[ -n "$c" ] && [ -n "$a" ] || { echo "bench-rpc.sh: pbft-load printed nothing" >&2; exit 1; }
printf '{"bench":"rpc-ingest","committed_tx_per_s":%s,' "$c"
printf '"ingest_single_tx_per_s":%s,"ingest_batch_tx_per_s":%s,' "$(field "$single" tx_per_s)" "$a"
printf '"shared_single_tx_per_s":%s,"shared_batch_tx_per_s":%s,' \
    "$(field "$sh_single" tx_per_s)" "$(field "$sh_batch" tx_per_s)"
printf '"verify_per_s_per_core":%s,"cores":%s,' "$vps" "$cores"
awk -v a="$a" -v c="$c" -v v="$vps" -v k="$cores" -v s="$(field "$sh_batch" tx_per_s)" \
    'BEGIN { printf "\"ingest_ratio\":%.2f,\"shared_ratio\":%.2f,\"ingest_vs_verify_ceiling\":%.3f}\n", a / c, s / c, a / (v * k) }'
