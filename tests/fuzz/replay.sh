#!/usr/bin/env bash
# replay.sh TARGET_BINARY DIR...: run a fuzz target (built with replay_main.c) once on every
# input in the directories that exist. fuzz_rpc gets a node home first: node0 of a fresh
# testnet made with $PBFT_BIN/pbftd on ports from $PBFT_BASE_PORT, with docs/rpc.md's chain
# id (its signed transaction, in the docs-*.json inputs, then verifies, as in scripts/fuzz.sh).
set -euo pipefail
bin=${1:?usage: replay.sh TARGET_BINARY DIR...}
shift
dirs=()
for d in "$@"; do [ -d "$d" ] && dirs+=("$d"); done
[ ${#dirs[@]} -gt 0 ] || { echo "replay.sh: no input directory exists: $*" >&2; exit 1; }
if [ "$(basename "$bin")" = fuzz_rpc ]; then
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/pbft-fuzz-rpc.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    "${PBFT_BIN:?}/pbftd" testnet --n 4 --out "$tmp" --base-port "${PBFT_BASE_PORT:?}" \
        --accounts 2 --chain-id pbft-local >/dev/null
    export PBFT_FUZZ_HOME="$tmp/node0"
fi
"$bin" "${dirs[@]}"
