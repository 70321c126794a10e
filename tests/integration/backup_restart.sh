#!/usr/bin/env bash
# kill -9 of a backup under load, then restart: it recovers from disk, catches up, and every
# replica has identical block hashes at every height.
. "$(dirname "$0")/netlib.sh"
net_create 4
start_all
load() { # account $1 submits transactions with increasing nonces until told to stop
    local nonce=0
    # (and when the test's directory is gone: a failure's cleanup removes it, and a load
    # left running would hold ctest until its timeout)
    while [ -d "$DIR" ] && [ ! -f "$DIR/stop" ]; do
        transfer $(((nonce + $1) % 3)) "$1" "$nonce" >/dev/null 2>&1 && nonce=$((nonce + 1))
    done
    echo "$nonce" >"$DIR/sent$1"
}
load 0 &
l0=$!
load 1 &
l1=$!
wait_for "load to commit something" 30 at_least 0 3
node_kill9 3
log "killed backup node3 at height $(height 0)"
wait_for "progress without node3" 30 at_least 0 $(($(height 0) + 3))
node_start 3
log "restarted node3"
touch "$DIR/stop"
wait "$l0" "$l1" # only the load: a bare wait would also wait for the replicas
target=$(height 0)
wait_for "node3 to catch up to height $target" 90 at_least 3 "$target"
for i in 0 1 2; do wait_for "node$i at $target" 30 at_least "$i" "$target"; done
same_chain 0 1 2 3
# Stop while still loaded, then require every replica to exit cleanly (a shutdown that used
# the transport after closing it crashed here once).
rm -f "$DIR/stop"
load 2 &
l2=$!
wait_for "more load" 30 at_least 0 $((target + 2))
stop_all_clean
touch "$DIR/stop"
wait "$l2" || true
log "ok: $(cat "$DIR/sent0") + $(cat "$DIR/sent1") transactions submitted"
