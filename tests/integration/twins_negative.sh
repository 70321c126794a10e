#!/usr/bin/env bash
# The negative control (issue 5): with f+1 twinned identities the safety check must fail.
# n=4 (f=1) with twins of replicas 0 and 1, split into two groups that cannot hear each
# other (p2p.peer_override, testing only):
#   group A: node0, node1, node2        group B: twin0, twin1, node3
# Each group has 2f+1 = 3 signers, so each commits its own block 1: correct replicas 2 and 3
# end up with different blocks at height 1. Both safety checks we publish must say so:
# netlib's same_chain (the integration tests') and scripts/viewchange_report.py's (the
# scenario runner's "safety" key).
. "$(dirname "$0")/netlib.sh"
net_create 4
dead="tcp://127.0.0.1:1" # nothing listens there: a peer cut off
set_key() { # HOME KEY VALUE: the first KEY = line of HOME's config.toml
    sed -i "0,/^$2 = .*/s||$2 = \"$3\"|" "$1/config/config.toml"
}
for t in 0 1; do
    tw="$NET/twin$t"
    mkdir -p "$tw"
    cp -r "$NET/node$t/config" "$tw/"
    set_key "$tw" listen "tcp://127.0.0.1:$((BASE + 50 + t))"
    sed -i "s|^listen = \"http://127.0.0.1:[0-9]*\"|listen = \"http://127.0.0.1:$((BASE + 150 + t))\"|" \
        "$tw/config/config.toml"
done
for i in 0 1 2; do set_key "$NET/node$i" peer_override "3=$dead"; done
set_key "$NET/node3" peer_override \
    "0=tcp://127.0.0.1:$((BASE + 50)),1=tcp://127.0.0.1:$((BASE + 51)),2=$dead"
set_key "$NET/twin0" peer_override "1=tcp://127.0.0.1:$((BASE + 51)),2=$dead"
set_key "$NET/twin1" peer_override "0=tcp://127.0.0.1:$((BASE + 50)),2=$dead"
start_answering # the groups cannot hear each other: no full mesh
for t in 0 1; do
    "$BIN/pbftd" start --home "$NET/twin$t" >>"$NET/twin$t/pbftd.log" 2>&1 &
    echo $! >"$NET/twin$t/pbftd.pid"
done

# A different transfer into each group.
transfer 2 0 0 >/dev/null
transfer 3 1 0 >/dev/null
wait_for "group A (node2) to commit" 30 at_least 2 1
wait_for "group B (node3) to commit" 30 at_least 3 1
d2=$(cli 2 --json block 1 | sed -n 's/.*"digest": "\([0-9a-f]*\)".*/\1/p')
d3=$(cli 3 --json block 1 | sed -n 's/.*"digest": "\([0-9a-f]*\)".*/\1/p')
[ -n "$d2" ] && [ -n "$d3" ] || fail "no block 1 digest"
[ "$d2" != "$d3" ] || fail "the split did not fork: both groups committed $d2"
log "forked as intended: node2 has $d2, node3 has $d3 at height 1"

# 1. netlib's check must fail, and for the fork (it exits its subshell with status 1).
if (same_chain 2 3) >"$DIR/same_chain.out" 2>&1; then fail "same_chain did not detect the fork"; fi
grep -q "nodes disagree at height 1" "$DIR/same_chain.out" ||
    fail "same_chain failed for another reason: $(cat "$DIR/same_chain.out")"
# 2. The scenario runner's safety key must say violated.
printf 'node,height,digest\n2,1,%s\n3,1,%s\n' "$d2" "$d3" >"$DIR/digests.csv"
now=$(date +%s%3N)
printf 'second,unix_ms,node,txs,lat_mean_ms,lat_p99_ms\n0,%s,2,1,1,1\n0,%s,3,1,1,1\n' \
    "$((now - 1000))" "$((now - 1000))" >"$DIR/series.csv"
s=$(/usr/bin/python3 "$(dirname "$0")/../../scripts/viewchange_report.py" --fault twins --n 4 \
    --fault-ms "$now" --series "$DIR/series.csv" --events "$DIR/none.jsonl" --honest 2,3 \
    --digests "$DIR/digests.csv" --out-csv "$DIR/out.csv" --out-png "$DIR/out.png" --no-plot \
    2>/dev/null | tail -1)
echo "$s" | grep -q '"safety":"violated"' || fail "viewchange_report.py did not report it: $s"
log "ok: both safety checks report the violation"
