# shellcheck shell=bash
# Helpers for integration tests: real pbftd processes on 127.0.0.1, driven with pbft-cli.
# A test sources this, then calls net_create N. Everything it starts is killed on exit.
# Waits poll a condition until a deadline; nothing sleeps to synchronise.
set -euo pipefail

BIN=${PBFT_BIN:?set PBFT_BIN to the build directory}
BASE=${PBFT_BASE_PORT:?set PBFT_BASE_PORT}
TEST=$(basename "$0" .sh)
DIR=$(mktemp -d "${TMPDIR:-/tmp}/pbft-$TEST.XXXXXX")
NET="$DIR/net"
N=0

cleanup() {
    local rc=$?
    for p in "$NET"/*/pbftd.pid; do # replicas, and any twins
        [ -f "$p" ] && kill -9 "$(cat "$p")" 2>/dev/null || true
    done
    if [ "$rc" -ne 0 ]; then
        echo "--- $TEST failed (rc=$rc); last log lines:" >&2
        for l in "$NET"/node*/pbftd.log; do
            [ -f "$l" ] && { echo "== $l" >&2; tail -n 15 "$l" >&2; }
        done
        [ -n "${KEEP:-}" ] && echo "kept $DIR" >&2
        # KEEP_FAILED=DIR (scripts/stress-tests.sh): a failed test's directory moves there.
        if [ -z "${KEEP:-}" ] && [ -n "${KEEP_FAILED:-}" ] && [ -d "$KEEP_FAILED" ]; then
            mv "$DIR" "$KEEP_FAILED/" 2>/dev/null && echo "kept $KEEP_FAILED/$(basename "$DIR")" >&2
        fi
    fi
    [ -n "${KEEP:-}" ] || rm -rf "$DIR"
    exit "$rc"
}
trap cleanup EXIT

fail() { echo "FAIL $TEST: $*" >&2; exit 1; }
log() { echo "[$TEST $(date +%T)] $*"; }

rpc() { echo "http://127.0.0.1:$((BASE + 100 + $1))"; }
cli() { local i=$1; shift; "$BIN/pbft-cli" --rpc "$(rpc "$i")" "$@"; }

# net_create N [TESTNET OPTIONS...]: N homes under $NET (each network its own random chain
# id, unless the options give one: --chain-id ID).
net_create() {
    N=$1
    shift
    "$BIN/pbftd" testnet --n "$N" --out "$NET" --base-port "$BASE" --accounts 8 "$@" >/dev/null
    RECV=$("$BIN/pbft-cli" keygen --out "$DIR/recv.json")
}

node_start() {
    local d="$NET/node$1"
    shift
    "$BIN/pbftd" start --home "$d" "$@" >>"$d/pbftd.log" 2>&1 &
    echo $! >"$d/pbftd.pid"
}

node_kill9() {
    local p="$NET/node$1/pbftd.pid"
    kill -9 "$(cat "$p")" 2>/dev/null || true
    wait "$(cat "$p")" 2>/dev/null || true
    rm -f "$p"
}

# wait_for DESC SECONDS CMD...: poll CMD until it succeeds or the deadline passes.
wait_for() {
    local desc=$1 secs=$2
    shift 2
    local end=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$end" ] || fail "timed out after ${secs}s waiting for: $desc"
        sleep 0.1
    done
}

height() { cli "$1" --json status 2>/dev/null | sed -n 's/.*"latest_height": "\([0-9]*\)".*/\1/p'; }
view() { cli "$1" --json status 2>/dev/null | sed -n 's/.*"view": "\([0-9]*\)".*/\1/p'; }
answers() { cli "$1" status; }
at_least() { local h; h=$(height "$1"); [ -n "$h" ] && [ "$h" -ge "$2" ]; }
caught_up() { cli "$1" --json status 2>/dev/null | grep -q '"catching_up": false'; }
view_at_least() { local v; v=$(view "$1"); [ -n "$v" ] && [ "$v" -ge "$2" ]; }

# meshed NODE: its connections to all N-1 other replicas are up.
meshed() { cli "$1" --json status 2>/dev/null | grep -q "\"peers_connected\": $((N - 1))\b"; }

# start_all [ARGS...]: start every replica and wait until each answers and has its
# connections to all the others up. Before the mesh, a test's first transactions raced the
# dials (nng retries a refused dial after its reconnect interval), and a first block could
# wait out the 2 s request timer on a slow machine.
start_all() {
    start_answering "$@"
    for i in $(seq 0 $((N - 1))); do wait_for "node$i connected to all peers" 30 meshed "$i"; done
}

# start_answering [ARGS...]: start_all without the wait for the mesh, for a network split
# on purpose (twins_negative).
start_answering() {
    for i in $(seq 0 $((N - 1))); do node_start "$i" "$@"; done
    for i in $(seq 0 $((N - 1))); do wait_for "node$i to answer" 30 answers "$i"; done
}

# transfer NODE ACCOUNT NONCE: submit without waiting; prints the tx hash.
transfer() {
    cli "$1" --json transfer --key "$NET/accounts/account$2.json" --to "$RECV" --amount 1 \
        --nonce "$3" | sed -n 's/.*"hash": "\([0-9a-f]*\)".*/\1/p'
}

committed() { cli "$1" tx "$2"; }

# same_chain NODES...: identical chain and app hashes at every height all of them have.
same_chain() {
    local i urls=() out
    for i in "$@"; do urls+=("$(rpc "$i")"); done
    # The blocks are read 100 to a JSON-RPC batch: one pbft-cli per height and node took
    # minutes for the ~900 heights of 15 loaded stops (and longer under ASan).
    out=$(/usr/bin/python3 - "${urls[@]}" <<'PY'
import json, sys, urllib.request
def call(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())
urls = sys.argv[1:]
try:
    top = min(int(call(u, {"jsonrpc": "2.0", "id": 0, "method": "status"})["result"]
                  ["latest_height"]) for u in urls)
except OSError as e:
    sys.exit("a node does not answer: %s" % e)
if top < 1:
    sys.exit("no blocks to compare")
ref = {}
app = {}
unknown = 0
for u in urls:
    for lo in range(1, top + 1, 100):
        batch = [{"jsonrpc": "2.0", "id": h, "method": "block", "params": {"height": str(h)}}
                 for h in range(lo, min(top, lo + 99) + 1)]
        for r in call(u, batch):
            b = r.get("result")
            if b is None:
                sys.exit("%s has no block %s" % (u, r.get("id")))
            h = int(b["height"])
            if ref.setdefault(h, b["chain_hash"]) != b["chain_hash"]:
                sys.exit("nodes disagree at height %s (%s)" % (h, u))
            # null: an app hash lost with an unreadable record and not made up by the
            # repair (docs/operations.md, "Durability and recovery")
            if b["app_hash"] is None:
                unknown += 1
            elif app.setdefault(h, b["app_hash"]) != b["app_hash"]:
                sys.exit("nodes disagree on the app hash at height %s (%s)" % (h, u))
print(top if unknown == 0 else "%d (%d app hashes unknown after a repair)" % (top, unknown))
PY
    ) || fail "same_chain: $out"
    log "identical chain and app hashes at heights 1..$out on nodes $*"
}

# dump_stacks PID FILE: every thread's stack of a hung process, into FILE and the test's
# output (scripts/test.sh installs gdb for this; without it, the log says so).
dump_stacks() {
    if ! command -v gdb >/dev/null 2>&1; then
        log "gdb is not installed: no stacks of pid $1"
        return 0
    fi
    timeout 60 gdb -p "$1" -batch -nx -iex "set debuginfod enabled off" \
        -ex "set pagination off" -ex "thread apply all bt" >"$2" 2>&1 || true
    log "stacks of pid $1 (whole in $2, which KEEP=1 keeps):"
    grep -E '^(Thread|#)' "$2" | head -300 >&2 || true
}

# stop_clean SECS I...: SIGTERM replicas I... at once and require each to exit with status 0
# within SECS of the signal (10 s: docs/operations.md, "Stopping"). A crash during shutdown (a
# use after close) shows up here as 139 or a timeout, a hang with every thread's stack. Sets
# STOP_MS to the time the whole stop took. stop_all_clean [SECS]: all of them.
stop_clean() {
    local secs=$1 i p t0 end pids=()
    shift
    t0=$(date +%s%N)
    end=$((t0 + secs * 1000000000)) # one deadline for them all, from the signal
    for i in "$@"; do
        p="$NET/node$i/pbftd.pid"
        [ -f "$p" ] || continue
        pids+=("$i:$(cat "$p")")
        kill -TERM "$(cat "$p")"
    done
    for e in "${pids[@]}"; do
        i=${e%%:*}
        p=${e#*:}
        while kill -0 "$p" 2>/dev/null; do
            if [ "$(date +%s%N)" -ge "$end" ]; then
                dump_stacks "$p" "$NET/node$i/stacks.txt"
                fail "node$i did not stop within $secs s of SIGTERM"
            fi
            sleep 0.05
        done
        local rc=0
        wait "$p" || rc=$?
        [ "$rc" -eq 0 ] || fail "node$i exited with status $rc on SIGTERM"
        rm -f "$NET/node$i/pbftd.pid"
    done
    STOP_MS=$((($(date +%s%N) - t0) / 1000000))
    log "node(s) $* stopped cleanly in $STOP_MS ms"
}
stop_all_clean() { stop_clean "${1:-10}" $(seq 0 $((N - 1))); }
