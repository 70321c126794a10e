#!/usr/bin/env bash
# pbft-cli end to end: transfer and put commit, get reads the value back, and verify-block
# accepts a block's commit certificate against this network's genesis and rejects it
# against another network's validator keys.
. "$(dirname "$0")/netlib.sh"
net_create 4
start_all
cli 1 transfer --key "$NET/accounts/account0.json" --to "$RECV" --amount 42 --wait >/dev/null
cli 2 put --key "$NET/accounts/account1.json" --k colour --v blue --wait >/dev/null
# keys and values of any bytes: put --hex writes them, get --hex reads them (kv_get key_hex)
cli 2 put --key "$NET/accounts/account2.json" --k 00ff --v c328 --hex --wait >/dev/null
cli 2 put --key "$NET/accounts/account3.json" --k 62696e --v ff00 --hex --wait >/dev/null
wait_for "node3 at node2's height" 30 at_least 3 "$(height 2)"
wait_for "node0 at node2's height" 30 at_least 0 "$(height 2)"
out=$(cli 3 get colour)
echo "$out" | grep -q "colour = blue" || fail "get: $out"
out=$(cli 3 get --hex 00FF)
echo "$out" | grep -q "^00FF = c328 " || fail "get --hex: $out"
out=$(cli 3 get bin) # a text key whose value is not UTF-8
echo "$out" | grep -q "^bin = hex:ff00 " || fail "get of a binary value: $out"
out=$(cli 0 account "$RECV")
echo "$out" | grep -q "balance 42 " || fail "account: $out"
# account0 used nonce 0 above: submitting it again is refused at once (-32003)
if out=$(cli 0 transfer --key "$NET/accounts/account0.json" --to "$RECV" --amount 1 --nonce 0 2>&1); then
    fail "a used nonce was accepted: $out"
fi
echo "$out" | grep -q -- "-32003" || fail "unclear refusal of a used nonce: $out"
log "used nonce refused: $out"
# the committed transfer itself, sent again (Ed25519 signs deterministically: the same
# bytes): a duplicate (-32004), not a used nonce, on the sync and the commit path
for w in "" --wait; do
    if out=$(cli 0 transfer --key "$NET/accounts/account0.json" --to "$RECV" --amount 42 \
        --nonce 0 $w 2>&1); then
        fail "a committed transaction was accepted again: $out"
    fi
    echo "$out" | grep -q -- "-32004" || fail "resubmitted committed transaction ($w): $out"
done
log "committed transaction resubmitted: $out"
h=$(height 0)
out=$(cli 0 verify-block --genesis "$NET/node2/config/genesis.json" "$h") ||
    fail "verify-block refused a genuine block: $out"
echo "$out" | grep -q "verified" || fail "verify-block: $out"
log "$out"
"$BIN/pbftd" testnet --n 4 --out "$DIR/other" --base-port $((BASE + 50)) >/dev/null
if out=$(cli 0 verify-block --genesis "$DIR/other/node0/config/genesis.json" "$h"); then
    fail "verify-block accepted a certificate against foreign validator keys: $out"
fi
echo "$out" | grep -q "NOT verified" || fail "verify-block foreign genesis: $out"
log "foreign genesis: $out"
log "ok"
