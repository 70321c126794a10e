#!/usr/bin/env bash
# Client abuse against JSON-RPC (issue 6, part 4). Four replicas commit under steady load
# (pbft-load, to every node) while tests/integration/rpc_abuse.py attacks node 0, the primary:
# slow bodies alone (408 after rpc.body_timeout_ms); then thousands of connections held at
# once (headers trickled byte by byte, more bodies trickled than rpc.max_connections, bodies
# stalled one byte short of rpc.max_body_bytes, idle ones), the largest allowed batch again
# and again, and every kind of malformed request, round after round (deep nesting, bodies at
# and over rpc.max_body_bytes, invalid UTF-8, invalid requests, wrong content types, methods
# and paths, chunked transfer-encoding, pipelining). It asserts the right JSON-RPC error or
# HTTP status for each answer, that heights advance during the flood, that a well-behaved
# client keeps getting answers (p99 latency bound), that node 0's VmHWM stays under a bound,
# that node 0 lets go of every connection and is alive at the end; then that the network
# still commits and every replica stops cleanly. The replicas start with a soft descriptor
# limit of 1024, so node 0 must raise its own. The limits are documented in docs/rpc.md
# ("Limits").
#
# Environment: RPC_ABUSE_HOLD (connections held, default 3000; fewer if ulimit -Hn is too
# low), RPC_ABUSE_RSS_MIB (VmHWM bound, default 512; 1536 in a sanitizer build),
# RPC_ABUSE_P99_MS (good-client p99 bound, default 2000; 5000 in a sanitizer build).
. "$(dirname "$0")/netlib.sh"
PY=$(command -v python3) || fail "python3 is missing"

# In an ASan + UBSan build memory and time grow several-fold: wider bounds there.
sanitized=0
grep -q '^PBFT_SANITIZE:BOOL=ON' "$BIN/CMakeCache.txt" 2>/dev/null && sanitized=1
if [ "$sanitized" -eq 1 ]; then
    RSS_MIB=${RPC_ABUSE_RSS_MIB:-1536}
    P99_MS=${RPC_ABUSE_P99_MS:-5000}
else
    RSS_MIB=${RPC_ABUSE_RSS_MIB:-512}
    P99_MS=${RPC_ABUSE_P99_MS:-2000}
fi

# Descriptors: node 0 and this test each need one per held connection, plus their own;
# the hard limit bounds both.
HOLD=${RPC_ABUSE_HOLD:-3000}
want=$((HOLD + 1024))
hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$hard" -lt "$want" ]; then
    HOLD=$((hard - 1024))
    want=$hard
    [ "$HOLD" -ge 500 ] || fail "ulimit -Hn is $hard: too few descriptors to hold 500 connections"
    log "ulimit -Hn is only $hard: holding $HOLD connections"
fi

net_create 4
CONF="$NET/node0/config/config.toml"
# A short body timeout keeps the test short (the default is 10000 ms).
sed -i 's/^body_timeout_ms = .*/body_timeout_ms = 2000/' "$CONF"
conf() { sed -n "s/^$1 = \([0-9]*\)$/\1/p" "$CONF"; }
MAX_BODY=$(conf max_body_bytes)
MAX_BATCH=$(conf max_batch)
MAX_CONNS=$(conf max_connections)
BODY_TMO=$(conf body_timeout_ms)
if [ -z "$MAX_BODY" ] || [ -z "$MAX_BATCH" ] || [ -z "$MAX_CONNS" ] || [ "$BODY_TMO" != 2000 ]; then
    fail "cannot read the [rpc] limits from $CONF"
fi
log "node0: rpc.max_connections=$MAX_CONNS rpc.max_body_bytes=$MAX_BODY rpc.max_batch=$MAX_BATCH" \
    "rpc.body_timeout_ms=$BODY_TMO; ulimit -Hn $hard; holding $HOLD connections"
# The replicas start with a soft descriptor limit of 1024, a common default (systemd's):
# node 0 must lift it to its hard limit itself (rpc_open) to hold the connections.
ulimit -Sn 1024
start_all
ulimit -Sn "$want"

# Steady load: 100 transfers/s spread over the four nodes, for longer than the test lasts
# (pbft-load is stopped at the end; its own figures are not asserted).
LOAD=""
stop_load_then_cleanup() {
    local rc=$?
    set +e
    [ -n "$LOAD" ] && kill "$LOAD" 2>/dev/null
    (exit "$rc") # netlib's cleanup takes the exit status from $?
    cleanup
}
trap stop_load_then_cleanup EXIT
urls="$(rpc 0),$(rpc 1),$(rpc 2),$(rpc 3)"
ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0 \
    "$BIN/pbft-load" --net "$NET" --rpc "$urls" --follow "$(rpc 1)" --accounts 8 \
    --txs 30000 --rate 100 --threads 4 --batch 5 >"$DIR/load.out" 2>&1 &
LOAD=$!
wait_for "the network to commit under load" 60 at_least 0 3

PID0=$(cat "$NET/node0/pbftd.pid")
"$PY" "$(dirname "$0")/rpc_abuse.py" --port $((BASE + 100)) --pid "$PID0" \
    --max-body "$MAX_BODY" --max-batch "$MAX_BATCH" --max-conns "$MAX_CONNS" \
    --body-timeout-ms "$BODY_TMO" --hold "$HOLD" --rss-mib "$RSS_MIB" --p99-ms "$P99_MS" |
    tee "$DIR/abuse.out" || fail "node0 did not withstand the abuse (above)"
kill -0 "$PID0" 2>/dev/null || fail "node0 is gone"

# Afterwards the network still commits, node 0 included, and every replica stops cleanly.
h=$(height 0)
[ -n "$h" ] || fail "node0 does not answer after the abuse"
wait_for "node0 to commit 2 more blocks after the abuse" 60 at_least 0 $((h + 2))
kill "$LOAD" 2>/dev/null || true
wait "$LOAD" 2>/dev/null || true
LOAD=""
stop_all_clean
log "ok: $(tail -n 1 "$DIR/abuse.out")"
