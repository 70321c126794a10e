#!/usr/bin/env bash
# Crash consistency (issue 6): under load through JSON-RPC, kill -9 random replicas at random
# moments, never more than f at once, and restart them; then check that
#   - every transaction whose broadcast_tx_commit returned success is in the final chain of
#     every replica;
#   - every replica has the same block (chain hash and app hash) at every height;
#   - no replica signed two different messages for one (type, view, seq), judged from what
#     its peers received and logged (log.msg_log).
#
#   crash_consistency.sh                  the CI size: 4 replicas, 30 kills
#   CRASH_KILLS=300 CRASH_N=7 crash_consistency.sh   a larger run (scripts/crash-test.sh)
# PBFT_BIN and PBFT_BASE_PORT as for every integration test. The random choices come from
# CRASH_SEED (default: the time), printed so that a failing run can be repeated.
. "$(dirname "$0")/netlib.sh"
kills=${CRASH_KILLS:-30}
n=${CRASH_N:-4}
seed=${CRASH_SEED:-$(date +%s)}
f=$(((n - 1) / 3))
RANDOM=$seed
log "seed $seed: $n replicas (f=$f), $kills kills"
here=$(cd "$(dirname "$0")" && pwd)
net_create "$n"
for i in $(seq 0 $((n - 1))); do
    sed -i 's|^msg_log = .*|msg_log = "data/msgs.jsonl"|' "$NET/node$i/config/config.toml"
    grep -q '^msg_log = "data/msgs.jsonl"' "$NET/node$i/config/config.toml" ||
        fail "could not set log.msg_log in node$i's config"
done
start_all
urls=()
for i in $(seq 0 $((n - 1))); do urls+=("$(rpc "$i")"); done

/usr/bin/python3 "$here/crash_consistency.py" load --net "$NET" --workers 6 \
    --acked "$DIR/acked.txt" --stop "$DIR/stop" "${urls[@]}" >"$DIR/load.json" 2>"$DIR/load.err" &
loader=$!
touch "$DIR/acked.txt"
wait_for "the first acknowledged transaction" 60 test -s "$DIR/acked.txt"

# Kill f replicas at a time (f=1: one), chosen at random, at random moments; restart each
# after a random pause. The pauses are the fault schedule, not synchronisation: every
# restart is followed by a wait for the replica to answer.
down_ms() { echo "0.$((RANDOM % 8 + 1))"; }
t0=$SECONDS
done_kills=0
next_report=10
while [ "$done_kills" -lt "$kills" ]; do
    victims=()
    while [ ${#victims[@]} -lt "$f" ]; do
        v=$((RANDOM % n))
        [[ " ${victims[*]} " == *" $v "* ]] || victims+=("$v")
    done
    sleep "0.$((RANDOM % 9 + 1))" # run a while: the kill lands at a random moment
    for v in "${victims[@]}"; do node_kill9 "$v"; done
    done_kills=$((done_kills + ${#victims[@]}))
    sleep "$(down_ms)"
    for v in "${victims[@]}"; do node_start "$v"; done
    for v in "${victims[@]}"; do wait_for "node$v to answer after its restart" 60 answers "$v"; done
    if [ "$done_kills" -ge "$next_report" ]; then
        log "$done_kills of $kills kills; $(wc -l <"$DIR/acked.txt") transactions acknowledged"
        next_report=$((next_report + 10))
    fi
done
log "$done_kills kills in $((SECONDS - t0)) s; $(wc -l <"$DIR/acked.txt") transactions acknowledged so far"
touch "$DIR/stop"
wait "$loader" || { cat "$DIR/load.err" "$DIR/load.json" >&2; fail "the load generator failed"; }
log "load: $(cat "$DIR/load.json")"

# Every replica reaches the same height (nothing is being submitted any more).
same_height() {
    local h0 h i
    h0=$(height 0)
    [ -n "$h0" ] || return 1
    for i in $(seq 1 $((n - 1))); do
        h=$(height "$i")
        [ "$h" = "$h0" ] || return 1
    done
}
wait_for "every replica at the same height" 90 same_height
/usr/bin/python3 "$here/crash_consistency.py" check --net "$NET" --acked "$DIR/acked.txt" \
    "${urls[@]}" >"$DIR/check.json" 2>"$DIR/check.err" ||
    { cat "$DIR/check.err" >&2; fail "$(cat "$DIR/check.json")"; }
log "check: $(cat "$DIR/check.json")"
echo "{\"kills\":$done_kills,\"n\":$n,\"seed\":$seed,\"load\":$(cat "$DIR/load.json"),\"check\":$(cat "$DIR/check.json")}"
log "ok"
