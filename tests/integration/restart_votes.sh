#!/usr/bin/env bash
# A backup killed for 12 s under load and restarted votes again (issue 12, part 3), instead
# of chasing the head by state transfer alone:
#   1. it signs and sends COMMITs again (consensus_state's votes_sent) with its window past
#      the height it came back to, within a generous deadline, and then executes within
#      max_inflight of the head; the times it took are printed (docs/performance.md has the figures at the
#      load of scripts/bench.sh's latency phase);
#   2. then a second backup is killed, and a block proposed after that kill still commits
#      in the same view, with the restarted replica's COMMIT in its certificate: had it only
#      followed, no block could commit there until a view change.
# (A commit certificate holds the first 2f+1 COMMITs to arrive, so while the restarted
# replica is busy catching up, its COMMITs, sent, come in after the others'.)
# The backup stays down 12 s, and at least until the others are more than a window past it
# (the case that needs the rule: every message they send is then beyond its watermarks). So
# that a modest load gets there on any machine, the network runs with checkpoint_interval 16
# and window 64 (4 checkpoints, as by default).
#   RESTART_VOTES_RATE   transfers per second (default 300)
#   RESTART_VOTES_WINDOW window (default 64; "genesis" keeps pbftd's defaults, 256 and 64)
. "$(dirname "$0")/netlib.sh"
net_create 4
rate=${RESTART_VOTES_RATE:-1000}
down_s=${RESTART_VOTES_DOWN_S:-12}
window=${RESTART_VOTES_WINDOW:-64}
if [ "$window" = genesis ]; then
    window=256
    inflight=64
else
    inflight=$((window / 2))
    for g in "$NET"/node*/config/genesis.json; do
        sed -i -e "s/\"checkpoint_interval\": [0-9]*/\"checkpoint_interval\": $((window / 4))/" \
            -e "s/\"window\": [0-9]*/\"window\": $window/" \
            -e "s/\"max_inflight\": [0-9]*/\"max_inflight\": $inflight/" "$g"
    done
fi
start_all

# signed_since NODE VALIDATOR FROM: the first height >= FROM whose commit certificate at
# NODE carries VALIDATOR's COMMIT (printed; fails if none up to the node's head).
signed_since() {
    /usr/bin/python3 - "$(rpc "$1")" "$2" "$3" <<'PY'
import json, sys, urllib.request
url, who, lo = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def call(body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())
top = int(call({"jsonrpc": "2.0", "id": 0, "method": "status"})["result"]["latest_height"])
for h in range(lo, top + 1, 50):
    batch = [{"jsonrpc": "2.0", "id": k, "method": "commit", "params": {"height": str(k)}}
             for k in range(h, min(top, h + 49) + 1)]
    for r in sorted(call(batch), key=lambda r: r["id"]):
        c = r.get("result")
        if c and any(e["validator"] == who for e in c["certificate"]):
            print(r["id"])
            sys.exit(0)
sys.exit(1)
PY
}

# commit_view NODE HEIGHT: the view of the block's commit certificate.
commit_view() {
    cli "$1" --json block "$2" 2>/dev/null | sed -n 's/.*"commit_view": "\([0-9]*\)".*/\1/p'
}
in_view_at() { # NODE HEIGHT VIEW: the block at HEIGHT is committed, in VIEW
    [ "$(commit_view "$1" "$2")" = "$3" ]
}

"$BIN/pbft-load" --net "$NET" --rpc "$(rpc 0),$(rpc 1)" --txs $((rate * 120)) --threads 4 --accounts 8 \
    --batch 20 --rate "$rate" --n 4 >"$DIR/load.json" 2>"$DIR/load.err" &
load=$!
stop_load() { kill "$load" 2>/dev/null || true; wait "$load" 2>/dev/null || true; }
wait_for "load to commit something" 30 at_least 0 10

node_kill9 3
h_kill=$(height 0)
log "killed backup node3 at height $h_kill; down ${down_s}s under load"
t=$SECONDS
wait_for "the others a window and two checkpoints past node3" 120 at_least 0 \
    $((h_kill + window + window / 2))
# The outage's length is the fault itself, not a wait for a condition.
sleep $((down_s - (SECONDS - t) > 0 ? down_s - (SECONDS - t) : 0))
h_up=$(height 0)
node_start 3
t_up=$SECONDS
log "restarted node3, $((h_up - h_kill)) blocks behind (height $h_up)"

# 1. It votes on the slots in flight: its window moved past the height it came back to (a
# stable checkpoint above h_up), and it signs and sends COMMITs. COMMITs alone are not
# enough: beside CPU hogs a replica sent 48 for old slots in its recovered window while
# still 400 blocks behind, and the second kill then cost a view change.
cstate() { # NODE FIELD: a string field of consensus_state
    curl -s --max-time 10 -d '{"jsonrpc":"2.0","method":"consensus_state","id":1}' "$(rpc "$1")" |
        sed -n "s/.*\"$2\":\"\([0-9]*\)\".*/\1/p"
}
commits_sent() {
    curl -s --max-time 10 -d '{"jsonrpc":"2.0","method":"consensus_state","id":1}' "$(rpc "$1")" |
        sed -n 's/.*"votes_sent":{[^}]*"commit":"\([0-9]*\)".*/\1/p'
}
votes_again() {
    local c s
    c=$(commits_sent 3)
    s=$(cstate 3 stable_checkpoint)
    [ -n "$c" ] && [ "$c" -ge 10 ] && [ -n "$s" ] && [ "$s" -gt "$h_up" ]
}
wait_for "node3 to send COMMITs again, its window past height $h_up" 120 votes_again
rejoin_s=$((SECONDS - t_up))
log "node3 votes again ($(commits_sent 3) COMMITs sent, stable checkpoint $(cstate 3 stable_checkpoint)) ${rejoin_s}s after the restart"
if first=$(signed_since 0 3 $((h_up + 1))); then
    log "its first COMMIT in node0's certificates since the restart: height $first of $(height 0)"
fi
# Caught up: it executes within max_inflight of the head, so that the slots the primary has
# in flight are in its window (else a second fault stalls the others, rightly).
caught_up() {
    local e
    e=$(cstate 3 last_executed)
    [ -n "$e" ] && [ "$e" -ge $(($(height 0) - inflight)) ]
}
wait_for "node3 to execute within $inflight blocks of node0" 120 caught_up
caught_s=$((SECONDS - t_up))
log "node3 caught up ${caught_s}s after the restart"

# 2. A second backup down: blocks proposed after the kill commit in the view of before.
v=$(view 0)
node_kill9 2
h2=$(height 0)
# At most max_inflight blocks were proposed and not committed when node2 died; a block
# beyond that was proposed after, so its 2f+1 COMMITs are 0's, 1's and 3's.
target=$((h2 + inflight + 16))
log "killed backup node2 at height $h2, view $v"
wait_for "height $target at node0" 120 at_least 0 "$target"
in_view_at 0 "$target" "$v" || fail "block $target committed in view $(commit_view 0 "$target"), not $v: the second backup's loss cost a view change"
signed_since 0 3 "$target" >/dev/null || fail "node3's COMMIT is not in block $target's certificate"
stop_load
log "ok: block $target committed in view $v with node2 down; node3 voted again ${rejoin_s}s after its restart"
printf '{"test":"restart_votes","rate_tx_per_s":%s,"window":%s,"down_s":%s,"behind_blocks":%s,"rejoin_s":%s,"caught_up_s":%s}\n' \
    "$rate" "$window" "$((t_up - t))" "$((h_up - h_kill))" "$rejoin_s" "$caught_s"
