#!/usr/bin/env bash
# A local PBFT network on this host.
#
#   scripts/localnet.sh start [--n N] [--base-port P]   install, build, create, start, commit
#   scripts/localnet.sh stop                            stop every replica
#   scripts/localnet.sh status                          pids, heights, views
#   scripts/localnet.sh --help
#
# The network lives in ./localnet/: nodeI/ is replica I's home (config, key, data), with its
# log in nodeI/pbftd.log and its process id in nodeI/pbftd.pid. Node I listens on p2p port
# P+I and JSON-RPC port P+100+I (P = 26600 by default). accounts/ holds funded client keys.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
NET="$ROOT/localnet"
BIN="$ROOT/build"

n=4
base=26600
cmd="${1:-}"
[ $# -gt 0 ] && shift
while [ $# -gt 0 ]; do
    case "$1" in
    --n) n="$2"; shift 2 ;;
    --base-port) base="$2"; shift 2 ;;
    -h | --help) cmd=help; shift ;;
    *) echo "localnet.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
    esac
done

usage() { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; }

rpc_of() { echo "http://127.0.0.1:$((base + 100 + $1))"; }

# nodes lists the node homes present.
nodes() { ls -d "$NET"/node* 2>/dev/null | sort -V; }

alive() { [ -f "$1/pbftd.pid" ] && kill -0 "$(cat "$1/pbftd.pid")" 2>/dev/null; }

height_of() { # prints the height of node home $1 (index $2), or "-" if it does not answer
    "$BIN/pbft-cli" --rpc "$(rpc_of "$2")" --json status 2>/dev/null |
        sed -n 's/.*"latest_height": "\([0-9]*\)".*/\1/p' | head -1 || true
}

status() {
    local i=0 any=0
    for d in $(nodes); do
        any=1
        if alive "$d"; then
            local h
            h=$(height_of "$d" "$i")
            printf "node%-3s pid %-7s rpc %s  %s\n" "$i" "$(cat "$d/pbftd.pid")" \
                "$(rpc_of "$i")" "$("$BIN/pbft-cli" --rpc "$(rpc_of "$i")" status 2>/dev/null || echo "not answering")"
        else
            printf "node%-3s stopped (log %s)\n" "$i" "$d/pbftd.log"
        fi
        i=$((i + 1))
    done
    [ "$any" -eq 1 ] || echo "no localnet in $NET (run: scripts/localnet.sh start)"
}

stop() {
    local d pids=()
    for d in $(nodes); do
        if alive "$d"; then
            pids+=("$(cat "$d/pbftd.pid")")
            kill -TERM "$(cat "$d/pbftd.pid")" 2>/dev/null || true
        fi
    done
    # Wait up to 10 s for a clean stop, then kill what is left.
    for _ in $(seq 100); do
        local left=0 p
        for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && left=1; done
        [ "$left" -eq 0 ] && break
        sleep 0.1
    done
    for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    for d in $(nodes); do rm -f "$d/pbftd.pid"; done
    echo "localnet stopped (${#pids[@]} replicas)"
}

start() {
    # shellcheck source=scripts/deps.sh
    . scripts/deps.sh
    pbft_ensure_deps
    echo "==> building (build/)"
    cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    cmake --build build -j"$(nproc)" --target pbftd pbft-cli >/dev/null
    for d in $(nodes); do
        if alive "$d"; then
            echo "localnet is already running:"
            status
            exit 0
        fi
    done
    if [ -z "$(nodes)" ]; then
        echo "==> creating a $n-replica network in $NET"
        "$BIN/pbftd" testnet --n "$n" --out "$NET" --base-port "$base"
    else
        n=$(nodes | wc -l)
        echo "==> restarting the existing $n-replica network in $NET"
    fi
    local i=0
    for d in $(nodes); do
        nohup "$BIN/pbftd" start --home "$d" >>"$d/pbftd.log" 2>&1 &
        echo $! >"$d/pbftd.pid"
        i=$((i + 1))
    done
    echo "==> waiting for every replica to answer"
    i=0
    for d in $(nodes); do
        local ok=0
        for _ in $(seq 100); do
            if "$BIN/pbft-cli" --rpc "$(rpc_of "$i")" status >/dev/null 2>&1; then ok=1; break; fi
            alive "$d" || break
            sleep 0.1
        done
        if [ "$ok" -ne 1 ]; then
            echo "node$i did not start; its log ($d/pbftd.log) ends with:" >&2
            tail -5 "$d/pbftd.log" >&2
            exit 1
        fi
        i=$((i + 1))
    done
    echo "==> submitting sample transactions through JSON-RPC"
    local to
    to=$("$BIN/pbft-cli" keygen --out "$NET/accounts/recipient-$$.json")
    local k=0
    for key in "$NET"/accounts/account*.json; do
        [ -f "$key" ] || continue
        "$BIN/pbft-cli" --rpc "$(rpc_of $((k % n)))" transfer --key "$key" --to "$to" \
            --amount $((k + 1)) --wait
        k=$((k + 1))
        [ "$k" -ge 3 ] && break
    done
    "$BIN/pbft-cli" --rpc "$(rpc_of 0)" put --key "$NET/accounts/account0.json" \
        --k greeting --v "hello, pbft" --wait
    echo "==> the network is committing"
    status
    cat <<EOF

Logs:     $NET/nodeI/pbftd.log
RPC:      $(rpc_of 0) .. $(rpc_of $((n - 1)))   (try: build/pbft-cli --rpc $(rpc_of 0) status)
Accounts: $NET/accounts/account*.json (funded keys for pbft-cli --key)
Stop:     scripts/localnet.sh stop
EOF
}

case "$cmd" in
start) start ;;
stop) stop ;;
status) status ;;
help) usage ;;
*) usage >&2; exit 2 ;;
esac
