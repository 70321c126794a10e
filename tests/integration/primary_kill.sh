#!/usr/bin/env bash
# kill -9 of the primary: the others change view and new transactions commit. Then what an
# operator sees of it (design section 8): every survivor's event log records the view
# change, the new view and the first commit in it, in that order; GET /metrics passes
# `promtool check metrics` and reports the new view, the view change and its duration.
. "$(dirname "$0")/netlib.sh"
command -v promtool >/dev/null || fail "promtool is missing (scripts/test.sh installs prometheus)"
net_create 4
start_all
h=$(transfer 1 0 0)
wait_for "first tx committed" 30 committed 1 "$h"
for i in 1 2 3; do
    wait_for "node$i to log peer_connected for node0" 10 \
        grep -q '"event":"peer_connected","peer":0' "$NET/node$i/data/events.jsonl"
done
node_kill9 0
log "killed the primary (node0)"
h=$(transfer 2 1 0)
wait_for "tx committed after the view change" 60 committed 2 "$h"
for i in 1 2 3; do wait_for "node$i in view >= 1" 30 view_at_least "$i" 1; done
same_chain 1 2 3

# The event log: view_change_start, then entering view >= 1, then the first commit in it.
first_line() { grep -n "\"event\":\"$2\"" "$NET/node$1/data/events.jsonl" | head -1 | cut -d: -f1; }
for i in 1 2 3; do
    ev="$NET/node$i/data/events.jsonl"
    [ -s "$ev" ] || fail "node$i has no event log at $ev"
    python3 -c 'import json,sys; [json.loads(l) for l in open(sys.argv[1])]' "$ev" ||
        fail "node$i: the event log is not JSON lines"
    vc=$(first_line "$i" view_change_start)
    nv=$( (grep -n '"event":"new_view_\(sent\|accepted\)","view":[1-9]' "$ev" || true) | head -1 | cut -d: -f1)
    fc=$( (grep -n '"event":"first_commit_in_view","view":[1-9]' "$ev" || true) | head -1 | cut -d: -f1)
    [ -n "$nv" ] && [ -n "$fc" ] || fail "node$i: no new view entered or no first commit in it"
    [ "$vc" -lt "$nv" ] && [ "$nv" -lt "$fc" ] ||
        fail "node$i: events out of order (view change line $vc, new view $nv, first commit $fc)"
    wait_for "node$i to log peer_disconnected for node0" 10 \
        grep -q '"event":"peer_disconnected","peer":0' "$ev"
done
# Whoever detected it first says how: the request timer, or (usually, after monitor_ms +
# resend_ms = 1.5 s) f+1 complaints of primary monitoring; the others may have joined them.
grep -Eq '"event":"view_change_start".*"reason":"(request_timeout|complaints)"' \
    "$NET"/node[123]/data/events.jsonl ||
    fail "no survivor logged a view_change_start for a request timeout or complaints"

# GET /metrics on a survivor.
m="$DIR/metrics.txt"
curl -sf "$(rpc 1)/metrics" >"$m" || fail "GET /metrics failed"
promtool check metrics <"$m" || fail "promtool rejects GET /metrics"
val() { awk -v k="$1" '$1 == k { print $2 }' "$m"; }
for k in pbft_height pbft_view pbft_primary pbft_is_primary pbft_view_change_in_progress \
    pbft_committed_txs_total pbft_mempool_txs pbft_peers_connected \
    pbft_view_change_duration_seconds_count pbft_commit_latency_seconds_count \
    pbft_block_interval_seconds_count 'pbft_view_changes_total{reason="request_timeout"}' \
    'pbft_dropped_messages_total{reason="bad_signature"}'; do
    [ -n "$(val "$k")" ] || fail "GET /metrics has no $k"
done
[ "$(val pbft_view)" -ge 1 ] || fail "pbft_view is $(val pbft_view), want >= 1"
[ "$(val pbft_committed_txs_total)" -ge 2 ] || fail "pbft_committed_txs_total < 2"
[ $(($(val 'pbft_view_changes_total{reason="request_timeout"}') + \
    $(val 'pbft_view_changes_total{reason="complaints"}') + \
    $(val 'pbft_view_changes_total{reason="joined"}'))) -ge 1 ] || fail "no view change counted"
[ "$(val pbft_view_change_duration_seconds_count)" -ge 1 ] || fail "no view-change duration"
[ "$(val pbft_block_interval_seconds_count)" -ge 1 ] || fail "no block interval observed"
[ "$(val pbft_peers_connected)" -eq 2 ] || fail "pbft_peers_connected is not 2 with node0 dead"
[ "$(val pbft_view_change_in_progress)" -eq 0 ] || fail "still changing views"
# node1 took transfer 2 through RPC: its commit latency is measured; and the RPC counter.
[ "$(val pbft_commit_latency_seconds_count)" -ge 1 ] || fail "no commit latency observed"
grep -q '^pbft_rpc_requests_total{method="broadcast_tx_sync",code="0"} [1-9]' "$m" ||
    fail "the RPC request counter did not count broadcast_tx_sync"
log "ok"
