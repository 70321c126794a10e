#!/usr/bin/env bash
# Four replicas commit transactions submitted to every one of them, and agree on the chain.
. "$(dirname "$0")/netlib.sh"
net_create 4
start_all
hashes=()
for k in $(seq 0 7); do
    hashes+=("$(transfer $((k % 4)) "$k" 0)")
done
for h in "${hashes[@]}"; do
    [ -n "$h" ] || fail "a submission was refused"
    wait_for "tx $h committed" 30 committed 0 "$h"
done
for i in 0 1 2 3; do wait_for "node$i to reach node0's height" 30 at_least "$i" "$(height 0)"; done
bal=$(cli 2 --json account "$RECV" | sed -n 's/.*"balance": "\([0-9]*\)".*/\1/p')
[ "$bal" = 8 ] || fail "recipient balance is '$bal', want 8"
same_chain 0 1 2 3
log "ok"
