#!/usr/bin/env bash
# A correct primary keeps its view under overload: 20,000 transfers sent to it as fast as
# pbft-load can (above what the replicas commit on these cores) all commit with ok
# receipts, and at least 2f+1 = 3 replicas end in view 0, out of any view change. Before
# votes had their own verification queue (node.c, NODE_HQUEUE), the backups' pre-prepare
# backlog held back the PREPAREs and COMMITs behind it, nothing executed for the 2 s request
# timer, and the backups replaced the primary in about one run in three (docs/security.md,
# finding 17). Then the fixed 2 s request timer still did it on a slow enough machine (once
# in CI): the timer now follows the measured commit latency (docs/protocol.md §8, "The
# adaptive request timer"), and this test fails again if the primary is replaced. One slow
# backup may still time out alone: PBFT lets it, and it cannot move the others. A pass says
# little about timing (scripts/bench.sh measures).
. "$(dirname "$0")/netlib.sh"
net_create 4
# Debug: every 5 s each replica logs its loop (time stepping, time in synced writes, queue
# lengths), the first thing to read when this test fails on a slow machine.
start_all --log-level debug
# Warm up first: one committed transfer, so the flood is what is measured, not the first
# block's costs (fresh database files, first synced writes, page faults of four processes).
# Then view 0 has executed a block, and the request timer has measured a commit latency.
h=$(transfer 0 7 0)
[ -n "$h" ] || fail "the warm-up transfer was not accepted"
wait_for "the warm-up transfer to commit" 60 committed 0 "$h"
txs=${OVERLOAD_TXS:-20000} # (the sanitizer pass: 8,000, tests/CMakeLists.txt)
ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0 \
    "$BIN/pbft-load" --net "$NET" --rpc "$(rpc 0)" --txs "$txs" --accounts 8 --threads 4 \
    --batch 100 >"$DIR/load.json" 2>"$DIR/load.err" || true
log "load: $(tail -1 "$DIR/load.json")"
grep -q "\"committed\":$txs," "$DIR/load.json" || fail "not every transfer committed"
kept=0
for i in 0 1 2 3; do
    m=$(curl -sf -m 5 "$(rpc "$i")/metrics") || fail "GET /metrics from node$i failed"
    v=$(echo "$m" | awk '$1 == "pbft_view" { print $2 }')
    in_vc=$(echo "$m" | awk '$1 == "pbft_view_change_in_progress" { print $2 }')
    vc=$(echo "$m" | awk '/^pbft_view_changes_total/ { s += $2 } END { print s + 0 }')
    rt=$(echo "$m" | awk '$1 == "pbft_request_timeout_seconds" { print $2 }')
    lat=$(echo "$m" | awk '$1 == "pbft_request_latency_seconds" { print $2 }')
    log "node$i: view $v, view change in progress $in_vc, view changes started $vc," \
        "request timer ${rt}s following latency ${lat}s"
    [ "$v" = 0 ] && [ "$in_vc" = 0 ] && kept=$((kept + 1))
done
[ "$kept" -ge 3 ] || fail "only $kept replicas kept view 0: the correct primary was replaced under overload"
grep -q "\"receipts_ok\":$txs,\"receipts_failed\":0," "$DIR/load.json" ||
    fail "the primary kept its view, yet not every receipt is ok"
h=$(height 0)
for i in 1 2 3; do wait_for "node$i at height $h" 60 at_least "$i" "$h"; done
same_chain 0 1 2 3
log "ok"
