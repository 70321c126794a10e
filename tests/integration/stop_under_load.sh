#!/usr/bin/env bash
# SIGTERM under load ends every replica within 10 s with status 0, round after round, at a
# random moment of each round (docs/operations.md, "Stopping"). Then the four chains are
# identical: a stop loses and forks nothing.
#
#   STOP_ROUNDS=N   rounds (default 6; scripts/stress-tests.sh and --long run more)
#
# The moment of each stop is drawn from a seed printed at the start (STOP_SEED replays it).
# An nng close abandoned at its deadline is allowed (node.h) and counted; any other way of
# ending is a failure.
. "$(dirname "$0")/netlib.sh"
rounds=${STOP_ROUNDS:-6}
seed=${STOP_SEED:-$(od -An -N2 -tu2 /dev/urandom | tr -d ' ')}
RANDOM=$seed
log "rounds=$rounds seed=$seed (STOP_SEED=$seed replays the stop moments)"
net_create 4
urls=$(for i in 0 1 2 3; do printf '%s,' "$(rpc "$i")"; done)
urls=${urls%,}

# stop_round: stop all four within 10 s (netlib.sh) and keep the slowest round's time. Then
# each logged its steps, storage closing before the transport (durable first): a new
# "storage closed" line in this stop's part of its log, unless its RPC close was abandoned,
# which leaves storage open (node.c, node_close).
stop_round() {
    local i lines=()
    for i in 0 1 2 3; do lines[i]=$(wc -l <"$NET/node$i/pbftd.log"); done
    stop_all_clean 10
    for i in 0 1 2 3; do
        tail -n +$((lines[i] + 1)) "$NET/node$i/pbftd.log" >"$DIR/stop.log"
        grep -q 'stopping: storage closed' "$DIR/stop.log" ||
            grep -q 'RPC server close did not finish' "$DIR/stop.log" ||
            fail "round $r: node$i did not close its storage"
    done
    [ "$STOP_MS" -gt "$slowest" ] && slowest=$STOP_MS
    log "round $r: all four stopped in $STOP_MS ms"
}

slowest=0
# Round 0: the deadline path itself. nng's close deadlock cannot be had on demand, so a test
# hook hangs node1's transport close and node2's RPC close for good (node.c, fault_hang).
r=0
start_all
stop_clean 10 1 2
PBFTD_FAULT_HANG_CLOSE=transport node_start 1
PBFTD_FAULT_HANG_CLOSE=rpc node_start 2
for i in 1 2; do wait_for "node$i to answer" 30 answers "$i"; done
stop_round
grep -q 'peer transport close did not finish within' "$NET/node1/pbftd.log" ||
    fail "node1 did not take the transport deadline path"
grep -q 'RPC server close did not finish within' "$NET/node2/pbftd.log" ||
    fail "node2 did not take the RPC deadline path"
grep -q 'stopping: storage closed' "$NET/node1/pbftd.log" ||
    fail "node1 abandoned its transport before closing storage"
slowest=0
start_all
for r in $(seq 1 "$rounds"); do
    h=$(height 0)
    # (pbft-load's exit-time allocations are not leaks to fail the sanitizer pass for)
    ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0 "$BIN/pbft-load" --net "$NET" \
        --rpc "$urls" --accounts 8 --threads 4 --batch 20 --rate 600 --txs 20000 >"$DIR/load$r.out" 2>&1 &
    lp=$!
    wait_for "round $r: commits under load" 60 at_least 0 $((h + 3))
    # The random moment: 0 to 3 s into the load (a draw, not a wait for a condition).
    sleep "$((RANDOM % 3)).$((RANDOM % 10))"
    stop_round
    kill "$lp" 2>/dev/null || true
    wait "$lp" 2>/dev/null || true
    start_all
done
# A last short load commits through the restarted network; then all four agree.
h=$(height 0)
ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0 "$BIN/pbft-load" --net "$NET" \
    --rpc "$urls" --accounts 8 --threads 4 --batch 20 --rate 200 --txs 400 >"$DIR/load-final.out" 2>&1 || fail "the final load did not commit"
h=$(height 0)
for i in 1 2 3; do wait_for "node$i at $h" 60 at_least "$i" "$h"; done
same_chain 0 1 2 3
stop_all_clean
abandoned=$(cat "$NET"/node*/pbftd.log | grep -c 'an nng close was abandoned' || true)
abandoned=$((abandoned - 2)) # round 0's two
log "ok: $rounds loaded stops, slowest ${slowest} ms; $abandoned nng closes abandoned at their deadline"
