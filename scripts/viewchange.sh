#!/usr/bin/env bash
# The view-change scenario runner: a fault under steady load, measured (issue 5).
#
#   scripts/viewchange.sh --fault KIND [--n N] [--duration S] [--at S] [--rate TX_PER_S]
#                         [--target primary|backup|next-primary] [--out DIR] [--base-port P]
#                         [--bin DIR]
#                         [--kill-primary] [--wipe-backup] [--msg-log]
#
# Starts an N-replica network (4 by default; 7 and 10 work) from a Release build (or the
# binaries in --bin DIR, as the tests do), on ports P.. and P+100.. (P = 27000), drives
# it with pre-signed transfers at a steady rate through JSON-RPC on the honest replicas,
# and AT seconds after the load flows injects a fault into the target: by default the
# current primary (replica 0 in view 0), with --target backup replica N-1, with
# --target next-primary replica 1 (the primary of view 1). KIND:
#   none          no fault: the baseline
#   kill          kill -9 of the target
#   silent, slow, equivocate, flood, wrong-digest, bad-signature, replay, conflict-vc,
#   mutate, censor, selective, bogus-state, crash, newview-omit, newview-digest,
#   newview-invent, newview-few, newview-dup, newview-wrong-view
#                 the target runs that pbftd --byzantine mode (docs/operations.md), armed
#                 from the start and turned on by SIGUSR1 at the fault (slow = slow-primary,
#                 holding each pre-prepare 1900 ms, just under the 2000 ms view timeout)
#   twins         a second pbftd with the target's key and identity starts at the fault;
#                 the honest replicas dial both (p2p.twin_dial), so each of their messages
#                 reaches one twin or the other
# --kill-primary (with --target backup or next-primary, n >= 7 so that two faults stay
# within f): the primary is also killed at the fault, so modes that act in view changes
# (replay, conflict-vc; the newview-* forgeries of the next primary) have one to act in.
# --wipe-backup (with --target backup, n >= 7): honest replica 1 is also killed at the
# fault, its data deleted, and restarted, so it catches up by state transfer while the
# target answers (bogus-state has requests to corrupt). It stays counted as honest.
# --msg-log: every replica keeps the audit log of the signed messages it received
# (log.msg_log = data/msgs.jsonl), for tests/integration/crash_consistency.py equivocations.
# Every honest replica's committed transactions and latency are recorded per second.
# Writes into DIR (default ./viewchange-KIND-nN): commits.csv (every transaction's commit
# time at every honest node, from pbft-load), series.csv (per second and node, seconds
# aligned on the fault),
# viewchange.csv (per second, honest median), viewchange.png (throughput and latency, the
# fault and each view change marked), digests.csv, the nodes' event logs and logs, and
# summary.json. The last line on stdout is the summary (scripts/viewchange_report.py
# documents each key: detect_s, view_change_s, first_commit_after_timeout_s, dip_depth,
# dip_width_s, recover_90_s, throughput_ratio, safety, ...; this script adds submitted,
# committed_min (the fewest any honest replica committed), latency_max_s,
# honest_rss_max_mb, the largest resident memory of an honest replica, sampled each second,
# and receipts_ok / receipts_failed, the committed transactions' receipts at the first
# followed node, from pbft-load).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

fault=""
n=4
duration=30
at=10
rate=""
target=primary
out=""
bin=""
base=27000
kill_primary=0
wipe_backup=0
msg_log=0
while [ $# -gt 0 ]; do
    case "$1" in
    --fault) fault="$2"; shift 2 ;;
    --n) n="$2"; shift 2 ;;
    --duration) duration="$2"; shift 2 ;;
    --at) at="$2"; shift 2 ;;
    --rate) rate="$2"; shift 2 ;;
    --target) target="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --bin) bin="$2"; shift 2 ;;
    --base-port) base="$2"; shift 2 ;;
    --kill-primary) kill_primary=1; shift ;;
    --wipe-backup) wipe_backup=1; shift ;;
    --msg-log) msg_log=1; shift ;;
    -h | --help) sed -n '2,39p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "viewchange.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
    esac
done
die() { echo "viewchange.sh: $*" >&2; exit 2; }
[ -n "$fault" ] || die "--fault KIND is required (try --help)"
case "$n" in 4 | 7 | 10 | 13) ;; *) die "--n must be 4, 7, 10 or 13" ;; esac
case "$target" in primary | backup | next-primary) ;; *) die "--target must be primary, backup or next-primary" ;; esac
[ "$duration" -gt "$at" ] 2>/dev/null || die "--duration must be more than --at"
if [ $((kill_primary + wipe_backup)) -gt 0 ] && { [ "$target" = primary ] || [ "$n" -lt 7 ]; }; then
    die "--kill-primary and --wipe-backup need --target backup or next-primary and --n 7 or more (two faults)"
fi
if [ "$wipe_backup" -eq 1 ] && [ "$target" = next-primary ]; then
    die "--wipe-backup wipes replica 1: use --target backup"
fi
mode=""
case "$fault" in
none | kill | twins) ;;
slow) mode="slow-primary:1900" ;;
silent | equivocate | flood | wrong-digest | bad-signature | replay | conflict-vc | mutate | \
    censor | selective | bogus-state | crash | newview-omit | newview-digest | newview-invent | \
    newview-few | newview-dup | newview-wrong-view) mode="$fault" ;;
*) die "unknown --fault '$fault' (try --help)" ;;
esac
if [ -z "$rate" ]; then
    case "$n" in 4) rate=1000 ;; 7) rate=500 ;; *) rate=300 ;; esac
fi
[ -n "$out" ] || out="$ROOT/viewchange-$fault-n$n"
mkdir -p "$out"
out=$(cd "$out" && pwd)

# shellcheck source=scripts/deps.sh
. scripts/deps.sh
pbft_ensure_deps python3-matplotlib
if [ -n "$bin" ]; then
    B=$(cd "$bin" && pwd)
else
    B="$ROOT/build-bench"
    echo "==> building (build-bench/, Release)" >&2
    cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release >/dev/null
    cmake --build build-bench -j"$(nproc)" --target pbftd pbft-cli pbft-load >/dev/null
fi

NET="$out/net"
rm -rf "$NET" "$out"/*.csv "$out"/*.png "$out"/*.jsonl "$out"/summary.json "$out"/rss_peak_mb
"$B/pbftd" testnet --n "$n" --out "$NET" --base-port "$base" --accounts 64 >/dev/null
rpc() { echo "http://127.0.0.1:$((base + 100 + $1))"; }
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

case "$target" in primary) t=0 ;; next-primary) t=1 ;; *) t=$((n - 1)) ;; esac
honest=()
for i in $(seq 0 $((n - 1))); do
    [ "$i" -eq "$t" ] || { [ "$kill_primary" -eq 1 ] && [ "$i" -eq 0 ]; } || honest+=("$i")
done

twin_home="$NET/twin$t"
if [ "$fault" = twins ]; then
    # The twin: the target's home (key, genesis) with its own ports and an empty store.
    cp -r "$NET/node$t/config" "$twin_home.config.tmp"
    mkdir -p "$twin_home"
    mv "$twin_home.config.tmp" "$twin_home/config"
    sed -i "s|^listen = \"tcp://127.0.0.1:[0-9]*\"|listen = \"tcp://127.0.0.1:$((base + 50))\"|; \
s|^listen = \"http://127.0.0.1:[0-9]*\"|listen = \"http://127.0.0.1:$((base + 150))\"|" \
        "$twin_home/config/config.toml"
    for i in "${honest[@]}"; do
        sed -i "s|^twin_dial = .*|twin_dial = \"$t=tcp://127.0.0.1:$((base + 50))\"|" \
            "$NET/node$i/config/config.toml"
    done
fi

if [ "$msg_log" -eq 1 ]; then
    for i in $(seq 0 $((n - 1))); do
        sed -i 's|^msg_log = .*|msg_log = "data/msgs.jsonl"|' "$NET/node$i/config/config.toml"
    done
fi
for i in $(seq 0 $((n - 1))); do
    extra=()
    if [ "$i" -eq "$t" ] && [ -n "$mode" ]; then
        extra=(--byzantine "$mode" --unsafe-byzantine --byzantine-armed)
    fi
    "$B/pbftd" start --home "$NET/node$i" "${extra[@]}" >"$NET/node$i/pbftd.log" 2>&1 &
    pids+=($!)
    echo $! >"$NET/node$i/pbftd.pid"
done
height() { "$B/pbft-cli" --rpc "$(rpc "$1")" --json status 2>/dev/null |
    sed -n 's/.*"latest_height": "\([0-9]*\)".*/\1/p'; }
wait_until() { # DESC SECONDS CMD...: poll until CMD succeeds
    local desc=$1 end=$((SECONDS + $2))
    shift 2
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$end" ] || die "timed out waiting for $desc"
        sleep 0.1
    done
}
for i in $(seq 0 $((n - 1))); do
    wait_until "node$i to answer" 30 "$B/pbft-cli" --rpc "$(rpc "$i")" status
done

urls=""
sendto=""
for i in "${honest[@]}"; do
    urls="$urls${urls:+,}$(rpc "$i")"
    # The wiped replica loses what it accepted and had not forwarded: load goes elsewhere.
    [ "$wipe_backup" -eq 1 ] && [ "$i" -eq 1 ] && continue
    sendto="$sendto${sendto:+,}$(rpc "$i")"
done
txs=$((rate * duration))
echo "==> n=$n fault=$fault target=node$t: $txs transfers at $rate tx/s, fault at +${at}s" >&2
# (In a sanitizer build, the load generator's allocations that live until exit are not
# leaks worth failing a scenario for: the product's leak checks are in the tests.)
ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0 \
    "$B/pbft-load" --net "$NET" --rpc "$sendto" --follow "$urls" --txs "$txs" --rate "$rate" \
    --threads 4 --batch 10 --n "$n" --commits "$out/commits.csv" >"$out/load.json" \
    2>"$out/load.err" &
load=$!
pids+=("$load")
h0=$(height "${honest[0]}" || true)
h0=${h0:-0}
progress() { local h; h=$(height "${honest[0]}" || true); [ -n "$h" ] && [ "$h" -ge $((h0 + 3)) ]; }
wait_until "the load to commit blocks" 60 progress
# Resident memory of every honest replica, sampled every second while the load runs: a
# flood must not grow it without bound (the peak goes into the summary).
(
    peak=0
    while kill -0 "$load" 2>/dev/null; do
        for i in "${honest[@]}"; do
            r=$(curl -sf -m 2 "$(rpc "$i")/metrics" 2>/dev/null |
                awk '$1 == "process_resident_memory_bytes" { printf "%.0f", $2 / 1048576 }')
            [ -n "$r" ] && [ "$r" -gt "$peak" ] && peak=$r && echo "$peak" >"$out/rss_peak_mb"
        done
        sleep 1
    done
) &
pids+=($!)
sleep "$at" # the scenario's pre-fault period, not a synchronisation

F=$(date +%s%3N)
case "$fault" in
none) ;;
kill) kill -9 "$(cat "$NET/node$t/pbftd.pid")" ;;
twins)
    "$B/pbftd" start --home "$twin_home" >"$twin_home/pbftd.log" 2>&1 &
    pids+=($!)
    ;;
*) kill -USR1 "$(cat "$NET/node$t/pbftd.pid")" ;;
esac
[ "$kill_primary" -eq 0 ] || kill -9 "$(cat "$NET/node0/pbftd.pid")"
if [ "$wipe_backup" -eq 1 ]; then
    kill -9 "$(cat "$NET/node1/pbftd.pid")"
    wait "$(cat "$NET/node1/pbftd.pid")" 2>/dev/null || true
    cp "$NET/node1/data/events.jsonl" "$out/events-node1-before-wipe.jsonl" 2>/dev/null || true
    rm -rf "$NET/node1/data"
    "$B/pbftd" start --home "$NET/node1" >>"$NET/node1/pbftd.log" 2>&1 &
    pids+=($!)
    echo $! >"$NET/node1/pbftd.pid"
fi
echo "==> fault injected at $F ($fault into node$t)" >&2
wait "$load" || true # it exits 1 when some transfers did not commit
echo "==> load done: $(tail -1 "$out/load.json")" >&2

# Every honest replica's /metrics at the end, kept with the run.
for i in "${honest[@]}"; do
    curl -sf "$(rpc "$i")/metrics" >"$out/metrics-node$i.txt" || true
done
rss_max=$(cat "$out/rss_peak_mb" 2>/dev/null || echo 0)

# Block digests of every honest replica at every height, for the safety check.
hurls=()
for i in "${honest[@]}"; do hurls+=("$(rpc "$i")"); done
/usr/bin/python3 - "$out/digests.csv" "${hurls[@]}" <<'PY' ||
import json, sys, urllib.request
out, nodes = sys.argv[1], sys.argv[2:]
def call(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())
with open(out, "w") as f:
    f.write("node,height,digest\n")
    for url in nodes:
        try:
            st = call(url, {"jsonrpc": "2.0", "method": "status", "id": 0})["result"]
        except OSError:
            continue
        node, top = st["node_id"], int(st["latest_height"])
        for lo in range(1, top + 1, 100):
            batch = [{"jsonrpc": "2.0", "method": "commit", "params": {"height": str(h)}, "id": h}
                     for h in range(lo, min(top, lo + 99) + 1)]
            for r in call(url, batch):
                if "result" in r:
                    f.write("%d,%s,%s\n" % (node, r["result"]["height"], r["result"]["digest"]))
PY
    die "could not read the block digests"
evs=()
for i in $(seq 0 $((n - 1))); do
    cp "$NET/node$i/data/events.jsonl" "$out/events-node$i.jsonl" 2>/dev/null || true
    evs+=(--events "$out/events-node$i.jsonl")
done
hl=$(
    IFS=,
    echo "${honest[*]}"
)
# Per-second series, with seconds aligned on the fault: second k covers F+k..F+k+1 s.
/usr/bin/python3 - "$out/commits.csv" "$out/series.csv" "$F" <<'PY' || die "no commits recorded (see $out/load.err)"
import collections, csv, sys
src, dst, F = sys.argv[1], sys.argv[2], int(sys.argv[3])
b = collections.defaultdict(list)
nodes = set()
with open(src) as f:
    for r in csv.DictReader(f):
        node, t, lat = int(r["node"]), float(r["commit_unix_ms"]), float(r["latency_ms"])
        nodes.add(node)
        b[(int((t - F) // 1000), node)].append(lat)
if not b:
    sys.exit(1)
lo = min(k for k, _ in b)
hi = max(k for k, _ in b)
with open(dst, "w") as o:
    o.write("second,unix_ms,node,txs,lat_mean_ms,lat_p99_ms\n")
    for k in range(lo, hi + 1):
        for node in sorted(nodes):
            l = sorted(b.get((k, node), []))
            m = "%.1f,%.1f" % (sum(l) / len(l), l[(len(l) * 99) // 100]) if l else ","
            o.write("%d,%d,%d,%d,%s\n" % (k - lo, F + k * 1000, node, len(l), m))
PY
# The load's end: when it started (the first commit's time minus its latency is close
# enough: the first batch commits within a block interval) plus how long it sent.
send_s=$(sed -n 's/.*"send_s":\([0-9.]*\).*/\1/p' "$out/load.json")
t0=$(awk -F, 'NR > 1 { t = $2 - $3; if (m == "" || t < m) m = t } END { printf "%.0f", m }' \
    "$out/commits.csv")
[ -n "$t0" ] && [ -n "$send_s" ] || die "pbft-load wrote no summary (see $out/load.err)"
end_ms=$(awk -v a="$t0" -v b="$send_s" 'BEGIN { printf "%.0f", a + b * 1000 }')
/usr/bin/python3 scripts/viewchange_report.py --fault "$fault" --n "$n" --fault-ms "$F" \
    --end-ms "$end_ms" \
    --series "$out/series.csv" "${evs[@]}" --honest "$hl" --digests "$out/digests.csv" \
    --out-csv "$out/viewchange.csv" --out-png "$out/viewchange.png" >"$out/summary.json.tmp"
# Two more keys: the load's own verdict and the honest replicas' largest resident memory.
sub=$(sed -n 's/.*"submitted":\([0-9]*\).*/\1/p' "$out/load.json")
/usr/bin/python3 - "$out/summary.json.tmp" "$out/commits.csv" "${sub:-0}" "$rss_max" \
    "$out/load.json" "${honest[@]}" >"$out/summary.json" <<'PY'
import collections, csv, json, sys
summ = json.loads(open(sys.argv[1]).read().strip().split("\n")[-1])
sub, rss, honest = int(sys.argv[3]), int(sys.argv[4]), [int(x) for x in sys.argv[6:]]
load = json.loads(open(sys.argv[5]).read().strip().split("\n")[-1])
per = collections.Counter()
worst = 0.0
with open(sys.argv[2]) as f:
    for r in csv.DictReader(f):
        per[int(r["node"])] += 1
        worst = max(worst, float(r["latency_ms"]))
summ["submitted"] = sub
summ["committed_min"] = min(per[h] for h in honest) if honest else 0
summ["latency_max_s"] = round(worst / 1000, 3)
summ["honest_rss_max_mb"] = rss
# Receipts at the first followed node: a commit is not a success (bad_nonce, for one).
summ["receipts_ok"] = load.get("receipts_ok")
summ["receipts_failed"] = load.get("receipts_failed")
print(json.dumps(summ, separators=(",", ":")))
PY
rm -f "$out/summary.json.tmp"
cat "$out/summary.json"
echo "==> wrote $out/viewchange.png, viewchange.csv, summary.json" >&2
