#!/usr/bin/env bash
# A client written only from docs/ (tests/integration/docs_client.py, Python with
# python3-nacl) creates a key, builds and signs a transfer, submits it, sees it in every
# node's state, and verifies the commit certificate of its block (issue 4). Then every
# example of docs/rpc.md is run against node 0 and its answer checked against the document
# (tests/integration/docs_examples.py).
. "$(dirname "$0")/netlib.sh"
PY=/usr/bin/python3 # Debian's python3-nacl is installed for the system interpreter
"$PY" -c "import nacl.signing" 2>/dev/null || fail "python3-nacl is missing (scripts/test.sh installs it)"
# The chain id of docs/rpc.md's examples: their signed transaction verifies only on it.
net_create 4 --chain-id pbft-local
start_all
pk=$("$PY" "$(dirname "$0")/docs_client.py" keygen "$DIR/seed.hex")
cli 0 transfer --key "$NET/accounts/account0.json" --to "$pk" --amount 1000 --wait >/dev/null
urls=()
for i in 0 1 2 3; do urls+=("$(rpc "$i")"); done
"$PY" "$(dirname "$0")/docs_client.py" run "$DIR/seed.hex" "$NET/node0/config/genesis.json" \
    "${urls[@]}" || fail "the docs-only client failed"
"$PY" "$(dirname "$0")/docs_examples.py" "$(dirname "$0")/../../docs/rpc.md" "$(rpc 0)" ||
    fail "docs/rpc.md and the node disagree (above)"
log "ok"
