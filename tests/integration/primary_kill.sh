#!/usr/bin/env bash
# kill -9 of the primary: the others change view and new transactions commit.
. "$(dirname "$0")/netlib.sh"
net_create 4
start_all
h=$(transfer 1 0 0)
wait_for "first tx committed" 30 committed 1 "$h"
node_kill9 0
log "killed the primary (node0)"
h=$(transfer 2 1 0)
wait_for "tx committed after the view change" 60 committed 2 "$h"
for i in 1 2 3; do wait_for "node$i in view >= 1" 30 view_at_least "$i" 1; done
same_chain 1 2 3
log "ok"
