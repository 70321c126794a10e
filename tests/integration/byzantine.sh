#!/usr/bin/env bash
# One Byzantine mode (or fault) in real pbftd processes, under load (issue 5):
#   byzantine.sh MODE [primary|backup]
# runs scripts/viewchange.sh --fault MODE on a 4-replica network with this build's binaries
# (replay and conflict-vc, which act in view changes: a Byzantine backup of 7 replicas while
# the primary is killed; bogus-state: one while an honest replica is wiped and catches up by
# state transfer; the newview-* forgeries: the next primary, replica 1 of 7, while the
# primary is killed, so that it builds the NEW-VIEW of view 1) and asserts
#   - safety: every honest replica has the same block digest at every height (the
#     scenario's digest check);
#   - liveness: every transaction commits at every honest replica, each within 15 s of its
#     submission, after the fault as before it, and its receipt is ok (except where the
#     Byzantine primary reorders: mutate, twins);
#   - the fault happened: the adversary acted (a byzantine_action or byzantine_crash
#     event), the killed node is gone, or the twin ran;
#   - flood: the honest replicas' resident memory stayed under 512 MiB, and they dropped
#     its copies before checking their signatures again.
. "$(dirname "$0")/netlib.sh"
mode=${1:?usage: byzantine.sh MODE [primary|backup]}
target=${2:-primary}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
out="$DIR/run"
n=4
extra=()
case "$mode" in
replay | conflict-vc)
    # They act in view changes: a Byzantine backup of n=7 while the primary is killed.
    n=7
    target=backup
    extra=(--kill-primary)
    ;;
equivocate)
    # The audit log of received messages must convict it (the check of crash_consistency.sh).
    extra=(--msg-log)
    ;;
newview-*)
    # A forger of NEW-VIEWs acts when it is the new primary: replica 1 of 7 while the
    # primary of view 0 is killed. Honest replicas refuse its NEW-VIEW, and view 2 takes over.
    n=7
    target=next-primary
    extra=(--kill-primary)
    ;;
bogus-state)
    # It acts in state transfer: a Byzantine backup of n=7 while an honest replica, wiped,
    # catches up from the others (and from it).
    n=7
    target=backup
    extra=(--wipe-backup)
    ;;
esac
"$ROOT/scripts/viewchange.sh" --fault "$mode" --target "$target" --n "$n" --duration 8 --at 2 \
    --rate 150 --bin "$BIN" --base-port "$BASE" --out "$out" "${extra[@]}" >"$DIR/vc.out" \
    2>"$DIR/vc.err" || { tail -20 "$DIR/vc.err" >&2; fail "viewchange.sh failed"; }
s=$(tail -1 "$DIR/vc.out")
log "summary: $s"
key() { echo "$s" | /usr/bin/python3 -c "import json,sys; v=json.load(sys.stdin)[sys.argv[1]]; print('' if v is None else v)" "$1"; }
[ "$(key safety)" = ok ] || fail "safety: $(key safety_detail)"
[ "$(key heights_checked)" -ge 5 ] || fail "only $(key heights_checked) heights compared"
sub=$(key submitted)
[ "$sub" -gt 0 ] && [ "$(key committed_min)" -eq "$sub" ] ||
    fail "liveness: an honest replica committed $(key committed_min) of $sub transactions"
# A commit is not a success: every receipt is ok (a failed one here has meant a bug of
# ours: docs/security.md, finding 16). Except where the Byzantine primary reorders: PBFT
# promises a client's requests in order only if it waits for each (OSDI section 4.1), and
# pbft-load sends bursts. mutate shifts a pre-prepare's sequence number, so the next view
# fills that one with a null block while the later ones it prepared commit: transfer k is
# lost from its place and k+1 fails bad_nonce. Twins propose different blocks in turn.
# replay and conflict-vc kill the primary under load and act in the view change: an honest
# NEW-VIEW too can null a slot that was not prepared while a later one was, and then the
# same happens (1 round in 10 of scripts/stress-tests.sh with 2 hogs: 44 of 1,216 failed
# bad_nonce after two view changes). The newview-* forgeries kill the primary the same way.
# Issue 14's nonce rules make these strict again.
case "$mode" in
mutate | twins | replay | conflict-vc | newview-*)
    log "receipts: $(key receipts_ok) ok, $(key receipts_failed) failed (reordered)"
    ;;
*)
    [ "$(key receipts_ok)" -eq "$sub" ] && [ "$(key receipts_failed)" -eq 0 ] ||
        fail "receipts: $(key receipts_ok) ok and $(key receipts_failed) failed of $sub"
    ;;
esac
awk -v l="$(key latency_max_s)" 'BEGIN { exit !(l <= 15) }' ||
    fail "liveness: a transaction took $(key latency_max_s) s to commit (bound 15 s)"
case "$target" in primary) t=0 ;; next-primary) t=1 ;; *) t=$((n - 1)) ;; esac
ev="$out/events-node$t.jsonl"
case "$mode" in
none) [ "$(key views_changed)" -eq 0 ] || fail "a correct primary was replaced without a fault" ;;
kill) kill -0 "$(cat "$out/net/node$t/pbftd.pid")" 2>/dev/null && fail "node$t still runs" || true ;;
twins) grep -q '"event":"node_start"' "$out/net/twin$t/data/events.jsonl" || fail "the twin never ran" ;;
crash) grep -q '"event":"byzantine_crash"' "$ev" || fail "the crash mode never crashed" ;;
bogus-state)
    # It lures with inflated checkpoint claims (its actions) and corrupts what it serves;
    # whether the wiped replica asks it first depends on timing, so what is asserted is
    # that the replica caught up, safely and live, with such a peer among its sources.
    grep -q '"event":"byzantine_action"' "$ev" || fail "the adversary never acted"
    # The replica's own event log, not the copy taken when the load ended: the run goes on
    # through the report, and a silent liar may cost the transfer one state_retry_ms (2 s),
    # which under ASan on a busy machine reached past the copy (CI, fifth session).
    grep -q '"event":"state_transfer_done"' "$out/net/node1/data/events.jsonl" ||
        fail "the wiped replica never caught up"
    # (That the liar's inflated claims cannot keep it catching up is asserted in the unit
    # tests test_replica_state_transfer_*liar_cannot_keep_it_open: here, at the moment the
    # run ends, an honest lag may have a transfer legitimately in flight.)
    ;;
equivocate)
    grep -q '"event":"byzantine_action"' "$ev" || fail "the adversary never acted"
    if [ "$target" = primary ]; then
        /usr/bin/python3 "$ROOT/tests/integration/crash_consistency.py" equivocations \
            --net "$out/net" --expect "$t" >"$DIR/eq.json" ||
            fail "the received-message audit did not convict the primary: $(cat "$DIR/eq.json")"
        log "audit: $(cat "$DIR/eq.json")"
    fi
    ;;
newview-*)
    grep -q '"event":"byzantine_action"' "$ev" || fail "the forger never forged a NEW-VIEW"
    # Every honest replica refused it: a repeated VIEW-CHANGE fails the codec (malformed),
    # every other forgery the recomputation of O (bad_newview).
    reason=bad_newview
    [ "$mode" = newview-dup ] && reason=malformed
    for i in $(seq 2 $((n - 1))); do
        awk -v r="pbft_dropped_messages_total{reason=\"$reason\"}" '$1 == r && $2 > 0 { ok = 1 }
            END { exit !ok }' "$out/metrics-node$i.txt" ||
            fail "honest node$i did not refuse the forged NEW-VIEW ($reason)"
    done
    ;;
*) grep -q '"event":"byzantine_action"' "$ev" || fail "the adversary never acted" ;;
esac
# A faulty primary that stops proposing, or proposes badly, must be replaced.
case "$mode" in
kill | crash | silent | slow | selective | censor | wrong-digest | bad-signature | equivocate)
    if [ "$target" = primary ]; then
        [ "$(key views_changed)" -ge 1 ] || fail "the faulty primary was never replaced"
    fi
    ;;
esac
if [ "$mode" = flood ]; then
    rss=$(key honest_rss_max_mb)
    [ "$rss" -gt 0 ] || fail "no memory sample from the honest replicas"
    [ "$rss" -lt 512 ] || fail "an honest replica grew to $rss MiB under the flood"
    # Its copies are dropped before their signatures are checked again.
    awk '$1 == "pbft_duplicate_frames_dropped_total" && $2 > 0 { ok = 1 } END { exit !ok }' \
        "$out"/metrics-node*.txt || fail "no honest replica dropped a duplicate frame"
fi
log "ok"
