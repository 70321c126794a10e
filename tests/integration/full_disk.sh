#!/usr/bin/env bash
# A full disk is an error, not an abort (issue 12). node3's data directory is a 64 MiB tmpfs
# and its node.min_free_mb is 16:
#   1. filled to 7 MiB free under load (below half of the margin): node3 stops, status 4,
#      "fatal: disk nearly full", while the other three go on committing;
#   2. restarted on the still-full disk: status 4 at once, naming the free space and
#      node.min_free_mb (before, RocksDB died on its own assertion here: a crash loop under
#      systemd);
#   3. with the margin off (node.min_free_mb = 0) and not one byte free: RocksDB stops on
#      its assertion inside the open, and pbftd still ends with status 4 and a message that
#      says so, not a bare SIGABRT;
#   4. with the space freed and the margin back: node3 starts, catches up, and every
#      replica has the same chain.
# Mounting needs root: without it the test exits 77 (ctest reports it skipped).
. "$(dirname "$0")/netlib.sh"
if [ "$(id -u)" -ne 0 ]; then
    echo "full_disk: needs root to mount a tmpfs: skipped"
    exit 77
fi
net_create 4
data="$NET/node3/data"
mkdir -p "$data"
mount -t tmpfs -o size=64m tmpfs "$data" 2>/dev/null || {
    echo "full_disk: cannot mount a tmpfs: skipped"
    exit 77
}
trap 'rc=$?; for p in "$NET"/*/pbftd.pid; do [ -f "$p" ] && kill -9 "$(cat "$p")" 2>/dev/null; done;
      sleep 0.2; umount -l "$data" 2>/dev/null || true; (exit $rc); cleanup' EXIT
margin() { sed -i "s/^min_free_mb = .*/min_free_mb = $1/" "$NET/node3/config/config.toml"; }
free_kib() { df --output=avail -k "$data" | tail -1 | tr -d ' '; }
margin 16
start_all
nonce=0
load_some() { # $1 transfers from account 0, each committed at node0
    local k h
    for k in $(seq 1 "$1"); do
        h=$(transfer 0 0 "$nonce")
        nonce=$((nonce + 1))
        wait_for "transfer $nonce to commit" 30 committed 0 "$h"
    done
}
load_some 3
wait_for "node3 at height 3" 30 at_least 3 3

# 1. Below half of the margin while running: a clean stop with status 4.
fallocate -l $(($(free_kib) - 7 * 1024))K "$data/filler"
log "node3's filesystem: $(($(free_kib) / 1024)) MiB free"
pid3=$(cat "$NET/node3/pbftd.pid")
# Transfers until node3 writes and stops (it checks at its next write, at most a second
# after the previous check). kill -0 succeeds on a zombie: wait for node3's last word,
# then reap it for its status.
stopped3() { grep -q 'fatal: disk nearly full' "$NET/node3/pbftd.log"; }
end=$((SECONDS + 60))
until stopped3; do
    [ "$SECONDS" -lt "$end" ] || fail "node3 did not stop within 60 s on a nearly full disk"
    load_some 1
done
wait "$pid3" && st=0 || st=$?
[ "$st" -eq 4 ] || fail "node3 exited $st on a nearly full disk, want 4"
grep -q 'fatal: disk nearly full: .* MiB free on its filesystem, below half of node.min_free_mb (16 MiB)' \
    "$NET/node3/pbftd.log" || fail "node3's log does not say the disk is nearly full"
rm -f "$NET/node3/pbftd.pid"
log "1: node3 stopped with status 4: $(grep -o 'disk nearly full: .*' "$NET/node3/pbftd.log" | head -c 120)"
load_some 2 # the other three go on

# 2. A restart on the still-full disk: status 4 at once, with the remedy.
"$BIN/pbftd" start --home "$NET/node3" >"$DIR/start2.log" 2>&1 && st=0 || st=$?
[ "$st" -eq 4 ] || { cat "$DIR/start2.log" >&2; fail "a start on a nearly full disk exited $st, want 4"; }
grep -q 'MiB free on its filesystem, below node.min_free_mb (16 MiB).*free space, then start again' \
    "$DIR/start2.log" || { cat "$DIR/start2.log" >&2; fail "the refusal does not name the margin"; }
log "2: refused at start with status 4"

# 3. No margin and no byte free: RocksDB's assertion, turned into a message and status 4.
margin 0
fallocate -l "$(free_kib)"K "$data/filler2" 2>/dev/null || true
dd if=/dev/zero of="$data/filler3" bs=4k 2>/dev/null || true
"$BIN/pbftd" start --home "$NET/node3" >"$DIR/start3.log" 2>&1 && st=0 || st=$?
case "$st" in
4) grep -qE 'RocksDB stopped on an assertion|No space left on device|disk nearly full' \
    "$DIR/start3.log" || { cat "$DIR/start3.log" >&2; fail "status 4 without a reason"; } ;;
*) cat "$DIR/start3.log" >&2; fail "a start with no space left exited $st, want 4" ;;
esac
log "3: with no margin and no space: status 4 ($(grep -oE 'RocksDB stopped on an assertion|No space left on device|disk nearly full' "$DIR/start3.log" | head -1))"

# 4. Space freed: node3 starts, catches up, and the chains agree.
rm -f "$data"/filler*
margin 16
node_start 3
wait_for "node3 to answer" 30 answers 3
load_some 2
target=$(height 0)
wait_for "node3 to catch up to $target" 60 at_least 3 "$target"
same_chain 0 1 2 3
stop_all_clean
log "ok: 4 replicas at height $target with one chain"
