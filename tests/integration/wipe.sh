#!/usr/bin/env bash
# A wiped replica (unsafe-reset-all) fetches every block it lost, verifies each commit
# certificate, and ends with the same chain.
. "$(dirname "$0")/netlib.sh"
net_create 4
start_all
for k in $(seq 0 5); do
    h=$(transfer $((k % 4)) "$k" 0)
    wait_for "tx $k committed" 30 committed 0 "$h"
done
target=$(height 0)
node_kill9 2
"$BIN/pbftd" unsafe-reset-all --home "$NET/node2" >/dev/null
[ ! -d "$NET/node2/data/db" ] || fail "unsafe-reset-all left the database"
node_start 2
wait_for "wiped node2 to catch up to height $target" 60 at_least 2 "$target"
wait_for "node2's state transfer to end (status catching_up false)" 30 caught_up 2
h=$(transfer 2 6 0)
wait_for "a new tx committed" 30 committed 2 "$h"
wait_for "node2 at node0's height" 30 at_least 2 "$(height 0)"
same_chain 0 1 2 3
log "ok"
