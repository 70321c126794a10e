#!/usr/bin/env bash
# Transactions sent in bursts through backups execute in nonce order: every receipt is ok,
# and every account's nonce on every replica ends at the number of transfers it sent.
# A backup forwards each transaction to the primary as a REQUEST; the primary's verify
# workers check them in parallel, and node/order.c hands each connection's frames to the
# core in arrival order. Without it nonces k and k+1 arrived swapped and k+1 and every later
# one failed bad_nonce (docs/security.md, finding 16; found by the peer abuse test).
# ORDER_RPC=URL[,URL...] sends elsewhere.
. "$(dirname "$0")/netlib.sh"
net_create 4
start_all
accounts=4
per=250
# (pbft-load's allocations that live until exit are not leaks to fail a test for.)
ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0 \
    "$BIN/pbft-load" --net "$NET" --rpc "${ORDER_RPC:-$(rpc 1),$(rpc 2),$(rpc 3)}" \
        --txs $((accounts * per)) --accounts "$accounts" --threads 2 --batch 50 \
        --follow "$(rpc 0)" >"$DIR/load.json" 2>"$DIR/load.err" ||
    true # it exits 1 when some did not commit; the receipts and nonces say why
log "load: $(tail -1 "$DIR/load.json")"
all=$((accounts * per))
grep -q "\"committed\":$all,\"receipts_ok\":$all,\"receipts_failed\":0," "$DIR/load.json" ||
    fail "not every transfer committed with an ok receipt (see the load line above)"
nonce_of() { # NODE ACCOUNT
    local pk
    pk=$(sed -n 's/.*"public_key": *"\([0-9a-f]*\)".*/\1/p' "$NET/accounts/account$2.json")
    cli "$1" --json account "$pk" 2>/dev/null | sed -n 's/.*"nonce": *"\([0-9]*\)".*/\1/p'
}
all_nonces() {
    local i a
    for i in 0 1 2 3; do
        for a in $(seq 0 $((accounts - 1))); do
            [ "$(nonce_of "$i" "$a")" = "$per" ] || return 1
        done
    done
}
end=$((SECONDS + 60))
until all_nonces; do
    if [ "$SECONDS" -ge "$end" ]; then
        for a in $(seq 0 $((accounts - 1))); do
            log "account$a: nonce $(nonce_of 0 "$a") of $per at node0"
        done
        fail "some transfers sent through backups did not execute in order (bad_nonce)"
    fi
    sleep 0.2
done
log "every account executed all $per transfers in order on all 4 replicas"
# The order was kept, not given up: no replica overflowed its parking (node/order.h), even
# though every connection's first frames waited in the untrusted queue (node.c:promote).
for i in 0 1 2 3; do
    m=$(curl -sf -m 5 "$(rpc "$i")/metrics" | sed -n 's/^pbft_p2p_order_overflows_total \([0-9]*\)$/\1/p')
    [ "$m" = 0 ] || fail "node$i gave up the arrival order ${m:-?} times"
done
log "ok"
