#!/usr/bin/env bash
# A corrupt config file, or a key that is not in genesis, stops pbftd with a clear message.
. "$(dirname "$0")/netlib.sh"
net_create 4
d="$NET/node1"
cp "$d/config/config.toml" "$DIR/good.toml"
sed -i 's/^max_msg_bytes = .*/max_msg_bytes = 12/' "$d/config/config.toml"
if out=$("$BIN/pbftd" start --home "$d" 2>&1); then fail "started with a bad config"; fi
echo "$out" | grep -q "config.toml" || fail "message does not name the file: $out"
echo "$out" | grep -Eq "p2p|max_msg_bytes" || fail "message does not name the key: $out"
log "bad config refused: $out"

cp "$DIR/good.toml" "$d/config/config.toml"
sed -i '/^\[p2p\]/a lisen = "x"' "$d/config/config.toml"
if out=$("$BIN/pbftd" start --home "$d" 2>&1); then fail "started with an unknown key"; fi
echo "$out" | grep -q "lisen" || fail "message does not name the unknown key: $out"
log "unknown key refused: $out"

cp "$DIR/good.toml" "$d/config/config.toml"
rm "$d/config/node_key.json"
"$BIN/pbft-cli" keygen --out "$d/config/node_key.json" >/dev/null
if out=$("$BIN/pbftd" start --home "$d" 2>&1); then fail "started with a key not in genesis"; fi
echo "$out" | grep -q "not a validator" || fail "unclear message for a foreign key: $out"
log "foreign key refused: $out"

if out=$("$BIN/pbftd" start --home "$NET/node2" --byzantine silent 2>&1); then
    fail "started Byzantine without --unsafe-byzantine"
fi
echo "$out" | grep -q "unsafe-byzantine" || fail "unclear Byzantine refusal: $out"
log "ok"
