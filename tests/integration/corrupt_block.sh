#!/usr/bin/env bash
# Corruption at rest (issue 12; docs/operations.md, "Durability and recovery"). A stopped
# replica's stored blocks are rewritten (a transaction byte, a certificate signature byte,
# the chain hash, the digest), or bytes of its SST files are flipped. Every case must end in
# a refusal (JSON-RPC -32012, a start that stops naming the height and the remedy) or a
# repair from peers; a wrong block is never served, and no case ends in a library abort.
. "$(dirname "$0")/netlib.sh"

DB="$NET/node3/data/db"
GEN="$NET/node3/config/genesis.json"
tamper() { "$BIN/pbft-tamper" --db "$DB" --genesis "$GEN" "$@"; }

# call NODE METHOD PARAMS: the raw JSON-RPC answer (result or error), on one line.
call() {
    curl -s --max-time 10 -H 'Content-Type: application/json' \
        -d "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"$2\",\"params\":$3}" "$(rpc "$1")"
}
code_of() { /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin).get("error",{}).get("code",0))'; }
field() { /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["result"].get(sys.argv[1],""))' "$1"; }
metric() { curl -s --max-time 10 "$(rpc "$1")/metrics" | sed -n "s/^$2 \([0-9.e+]*\)$/\1/p"; }
# refused NODE HEIGHT: block HEIGHT is answered with -32012 (never with a block).
refused() {
    local c
    c=$(call "$1" block "{\"height\":\"$2\"}" | code_of)
    [ "$c" = "-32012" ] || fail "node$1 block $2: want error -32012, got code $c"
}
healthy() { [ "$(call "$1" health '{}' | field storage)" = ok ]; }
# exits_refusing SECS: node3 exits within SECS with a non-zero status that is not a signal.
exits_refusing() {
    local p rc=0 end=$((SECONDS + $1))
    p=$(cat "$NET/node3/pbftd.pid")
    while kill -0 "$p" 2>/dev/null; do
        [ "$SECONDS" -lt "$end" ] || fail "node3 still runs on a corrupt head"
        sleep 0.1
    done
    wait "$p" || rc=$?
    rm -f "$NET/node3/pbftd.pid"
    [ "$rc" -ne 0 ] && [ "$rc" -lt 128 ] || fail "node3 ended with status $rc, want a clean refusal"
}

net_create 4
start_all
txs=()
for k in $(seq 0 23); do
    h=$(transfer $((k % 4)) $((k % 8)) $((k / 8)))
    wait_for "tx $k committed" 30 committed 0 "$h"
    txs+=("$h")
done
# the transaction committed in block 5
tx5=
for h in "${txs[@]}"; do
    [ "$(call 0 tx "{\"hash\":\"$h\"}" | field height)" = 5 ] && tx5=$h
done
[ -n "$tx5" ] || fail "no transaction in block 5"
wait_for "node3 at height 24" 30 at_least 3 24
stop_all_clean

# 1. Rewritten values below the head: each refused while no peer can help, then repaired.
tamper --height 5 --what tx
tamper --height 8 --what cert
tamper --height 11 --what chain # block 12's link to it fails too, until 11 is repaired
tamper --height 14 --what digest
node_start 3
wait_for "node3 to answer alone" 30 answers 3
for h in 5 8 11 12 14; do refused 3 "$h"; done
c=$(call 3 tx "{\"hash\":\"$tx5\"}" | code_of)
[ "$c" = -32012 ] || fail "the receipt of a tx in refused block 5: want -32012, got $c"
[ "$(call 3 block '{"height":"6"}' | code_of)" = 0 ] || fail "block 6 is sound and must be served"
st=$(call 3 health '{}')
[ "$(echo "$st" | field status)" = degraded ] || fail "health does not report the damage: $st"
[ "$(echo "$st" | field repair_pending)" -ge 4 ] || fail "health: repair_pending: $st"
[ "$(curl -s -o /dev/null -w '%{http_code}' "$(rpc 3)/health")" = 503 ] || fail "GET /health not 503"
[ "$(metric 3 pbft_storage_corrupt_reads_total)" -ge 5 ] || fail "metric corrupt_reads"
[ "$(metric 3 pbft_storage_repair_pending)" -ge 4 ] || fail "metric repair_pending"
log "refused blocks 5, 8, 11, 12, 14 alone, and reported them"
t0=$(date +%s%N)
for i in 0 1 2; do node_start "$i"; done
wait_for "node3 to repair every block" 60 healthy 3
log "repaired in $((($(date +%s%N) - t0) / 1000000)) ms from the peers' start"
[ "$(metric 3 pbft_storage_repaired_total)" -ge 4 ] || fail "metric repaired_total"
same_chain 0 1 2 3
h=$(transfer 1 0 3)
wait_for "a new tx committed on node3" 30 committed 3 "$h"

# 2. A corrupt head block: the start stops, naming the height and the remedy.
top=$(($(height 0) + 2))
stop_clean 10 3
# node3's head is the highest height pbft-tamper finds a block at
for h in $(seq "$top" -1 25); do
    if tamper --height "$h" --what cert >/dev/null 2>&1; then break; fi
done
log "flipped the certificate of node3's head block $h"
node_start 3
exits_refusing 30
grep -q "the head block $h failed its check at start" "$NET/node3/pbftd.log" ||
    fail "the refusal does not name the head block $h"
grep -q "Remedy: move this node's data directory aside" "$NET/node3/pbftd.log" ||
    fail "the refusal does not name the remedy"
tamper --height "$h" --what cert >/dev/null # the same flip again restores the byte
node_start 3
wait_for "node3 to answer again" 30 answers 3
wait_for "node3 connected" 30 meshed 3

# 3. Flipped bytes in SST files: refused at start, or refused on read and repaired.
stop_clean 10 3
tamper --what flush >"$DIR/sst.txt"
cp -a "$DB" "$DIR/db.orig"
# flip CF: two bytes of the column family's largest SST file, in its data blocks (the index
# and the footer are at the end).
flip() {
    local f
    f=$(awk -v c="$1" '$2 == c { print $3 }' "$DIR/sst.txt" | while read -r x; do
        echo "$(stat -c %s "$DB$x") $DB$x"; done | sort -rn | head -n 1 | cut -d' ' -f2)
    [ -n "$f" ] || fail "no SST file of column family $1: $(cat "$DIR/sst.txt")"
    /usr/bin/python3 - "$f" <<'PY'
import os, sys
p = sys.argv[1]
n = os.path.getsize(p)
with open(p, "r+b") as f:
    for off in (n // 5, n // 3):
        f.seek(off)
        b = f.read(1)
        f.seek(off)
        f.write(bytes([b[0] ^ 0x10]))
PY
    log "flipped 2 bytes of $1's $(basename "$f") ($(stat -c %s "$f") bytes)"
}
# started_or_refused: node3 answers (0), or it exits cleanly refusing, naming a remedy (1).
started_or_refused() {
    local end=$((SECONDS + 30))
    until answers 3 >/dev/null 2>&1; do
        if ! kill -0 "$(cat "$NET/node3/pbftd.pid")" 2>/dev/null; then
            exits_refusing 1
            grep -q "Remedy" "$NET/node3/pbftd.log" || fail "node3 refused without a remedy"
            log "node3 refused to start: $(tail -n 1 "$NET/node3/pbftd.log")"
            return 1
        fi
        [ "$SECONDS" -lt "$end" ] || fail "node3 neither started nor refused"
        sleep 0.1
    done
}
: >"$NET/node3/pbftd.log" # so that a refusal's lines are this start's
flip blocks
flip certs
node_start 3
if started_or_refused; then
    # Every block is read: each one in a flipped data block fails RocksDB's checksum, is
    # refused and queued, then fetched again. None may come back different.
    for k in $(seq 1 "$(height 3)"); do call 3 block "{\"height\":\"$k\"}" >/dev/null; done
    log "SST flip: $(metric 3 pbft_storage_corrupt_reads_total) reads refused"
    wait_for "node3 to repair the SST's blocks" 60 healthy 3
    same_chain 0 1 2 3
    stop_clean 10 3
fi
rm -rf "$DB"
cp -a "$DIR/db.orig" "$DB"

# The indexes and the state: nothing proves them yet (issue 15), so an unreadable entry is an
# error (-32012, or -32603 for state), never an answer that differs from node0's. A block
# executed over an unreadable entry stops the replica (fatal, status 2): also a refusal.
: >"$NET/node3/pbftd.log"
flip hashes
flip txindex
node_start 3
if started_or_refused; then
    top3=$(height 3)
    bad=0
    for k in $(seq 1 "$top3"); do
        d=$(call 0 block "{\"height\":\"$k\"}" | field digest)
        a=$(call 3 block_by_hash "[\"$d\"]")
        if [ "$(echo "$a" | code_of)" = 0 ]; then
            [ "$(echo "$a" | field digest)" = "$d" ] || fail "block_by_hash $d: another block"
        else
            [ "$(echo "$a" | code_of)" = -32012 ] || fail "block_by_hash $d: $a"
            bad=$((bad + 1))
        fi
    done
    for h in "${txs[@]}"; do
        a=$(call 3 tx "{\"hash\":\"$h\"}")
        if [ "$(echo "$a" | code_of)" = 0 ]; then
            [ "$(echo "$a" | field height)" = "$(call 0 tx "{\"hash\":\"$h\"}" | field height)" ] ||
                fail "tx $h: another height"
        else
            [ "$(echo "$a" | code_of)" = -32012 ] || fail "tx $h: $a"
            bad=$((bad + 1))
        fi
    done
    for i in $(seq 0 7); do
        a3=$(cli 3 --json account --key "$NET/accounts/account$i.json" 2>/dev/null) || {
            bad=$((bad + 1))
            continue
        }
        [ "$a3" = "$(cli 0 --json account --key "$NET/accounts/account$i.json")" ] ||
            fail "account $i differs from node0's: $a3"
    done
    log "flipped indexes: $bad answers refused, none wrong"
    if kill -0 "$(cat "$NET/node3/pbftd.pid")" 2>/dev/null; then stop_clean 10 3; fi
fi
rm -f "$NET/node3/pbftd.pid"
rm -rf "$DB"
cp -a "$DIR/db.orig" "$DB"
: >"$NET/node3/pbftd.log"
flip state
node_start 3
if started_or_refused; then
    for i in $(seq 0 7); do
        a3=$(cli 3 --json account --key "$NET/accounts/account$i.json" 2>/dev/null) || continue
        [ "$a3" = "$(cli 0 --json account --key "$NET/accounts/account$i.json")" ] ||
            fail "account $i differs from node0's: $a3"
    done
    if kill -0 "$(cat "$NET/node3/pbftd.pid")" 2>/dev/null; then stop_clean 10 3; fi
fi
rm -f "$NET/node3/pbftd.pid"
rm -rf "$DB"
cp -a "$DIR/db.orig" "$DB"

# The meta column family (schema, chain, head record): the start refuses.
: >"$NET/node3/pbftd.log"
flip default
node_start 3
! started_or_refused || fail "node3 started on a flipped meta file"
rm -rf "$DB"
cp -a "$DIR/db.orig" "$DB"

# The consensus records: the replica's own votes, which it may not forget silently. A
# rewritten record refuses the start, whether the byte breaks its shape or its signature.
for w in record record-sig; do
    : >"$NET/node3/pbftd.log"
    tamper --what "$w"
    node_start 3
    ! started_or_refused || fail "node3 started on a consensus record rewritten ($w)"
    grep -q "consensus record [0-9]* is corrupt" "$NET/node3/pbftd.log" || fail "$w: no record named"
    rm -rf "$DB"
    cp -a "$DIR/db.orig" "$DB"
done
# Flipped SST bytes in them refuse the start too; the documented remedy (the data directory
# moved aside) works.
: >"$NET/node3/pbftd.log"
flip consensus
node_start 3
! started_or_refused || fail "node3 started on a flipped consensus record file"
mv "$NET/node3/data" "$DIR/data.aside"
node_start 3
wait_for "node3, data moved aside, to answer" 30 answers 3
h=$(transfer 2 1 3)
wait_for "a new tx committed" 30 committed 0 "$h"
wait_for "node3 to catch up by state transfer" 60 at_least 3 "$(height 0)"
same_chain 0 1 2 3
log "ok"
