#!/usr/bin/env bash
# Replicas on separate hosts: 4 pbftd replicas, each in its own network namespace with its own
# address, joined by a bridge; a partition and a heal under load (issue 6, part 5).
#
#   scripts/netns-test.sh [--bin DIR] [--out DIR] [--keep] [--subnet A.B.C] [--port P]
#                         [--rpc-port R] [--delay MS] [--jitter MS] [--loss PCT] [--no-netem]
#                         [--rate TX_PER_S] [--phase-s S] [--backup-cut-s S]
#
# Needs root (CAP_NET_ADMIN): without it, or without network namespaces or veth in the
# kernel, it says so and exits 77 (skipped). Installs iproute2 and python3 when missing.
# Host I (0..3) is namespace pbftnsPID-hI with eth0 = A.B.C.(I+1)/24 (A.B.C = 10.77.0); its
# replica listens for peers on tcp://A.B.C.(I+1):P and for JSON-RPC on http://A.B.C.(I+1):R
# (P = 26600, R = 26700: every host uses the same ports, as real hosts would). The bridge
# lives in namespace pbftnsPID-br, a client host (A.B.C.100, pbft-load) in pbftnsPID-cl;
# nothing is added to the root namespace. Each host's link gets netem latency and loss
# (DELAY ms +- JITTER ms and PCT % each way on both ends: 10, 2, 0.5 by default) when the
# kernel has sch_netem; otherwise that is reported and skipped.
# Phases: baseline load on all four; host cut off (its bridge port down: the current
# primary), load on the other three, which must commit (f = 1); a second host cut off (no
# quorum): transfers are submitted, nothing may commit and no replica's chain may diverge;
# both healed: the outage's transfers and new load commit on all four, which reach the same
# height with identical chain and app hashes at every height, and both cut replicas' COMMITs
# are in the certificates after the heal; then a backup cut off for --backup-cut-s S
# (default $NETNS_BACKUP_CUT_S, else 6: three view timeouts) under load: nobody changes
# view, and after its heal its COMMITs are in a certificate again within 30 s (the time is
# reported: the goal is 10 s). Cuts of 15 s and more fail that today, for the transport:
# TCP without keepalive retransmits into the lost connections with exponential backoff,
# so frames wait for the next retransmission long after the heal (docs/protocol.md §11).
# --bin DIR: the pbftd, pbft-cli and pbft-load to use (default build/; nothing is built).
# --out DIR: the work directory (default a new /tmp/pbft-netns.XXXXXX); --keep keeps it
# after a pass (after a failure it is always kept). Namespaces, links and processes are
# removed on exit whatever happens. The last line on stdout is a JSON summary.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=build
out=""
keep=0
subnet=10.77.0
port=26600
rpc_port=26700
delay=10
jitter=2
loss=0.5
netem=1
rate=100
phase_s=5
backup_cut_s=${NETNS_BACKUP_CUT_S:-6}
while [ $# -gt 0 ]; do
    case "$1" in
    --bin) bin="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --keep) keep=1; shift ;;
    --subnet) subnet="$2"; shift 2 ;;
    --port) port="$2"; shift 2 ;;
    --rpc-port) rpc_port="$2"; shift 2 ;;
    --delay) delay="$2"; shift 2 ;;
    --jitter) jitter="$2"; shift 2 ;;
    --loss) loss="$2"; shift 2 ;;
    --no-netem) netem=0; shift ;;
    --rate) rate="$2"; shift 2 ;;
    --phase-s) phase_s="$2"; shift 2 ;;
    --backup-cut-s) backup_cut_s="$2"; shift 2 ;;
    -h | --help) sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "netns-test.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
    esac
done
die() { echo "netns-test.sh: $*" >&2; exit 2; }
[[ "$subnet" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "--subnet must look like 10.77.0"
for v in "$port" "$rpc_port" "$rate" "$phase_s" "$backup_cut_s"; do
    { [[ "$v" =~ ^[0-9]+$ ]] && [ "$v" -gt 0 ]; } || die "ports, --rate, --phase-s and --backup-cut-s must be positive integers"
done
[ "$port" != "$rpc_port" ] || die "--port and --rpc-port must differ"

skip() { echo "SKIP netns-test: $*"; exit 77; }
[ "$(id -u)" -eq 0 ] || skip "needs root (CAP_NET_ADMIN) to create network namespaces; run it as root"

# shellcheck source=scripts/deps.sh
. scripts/deps.sh
pbft_ensure_deps iproute2 python3
{ command -v ip && command -v tc; } >/dev/null || skip "ip and tc (iproute2) are not available"
PY=/usr/bin/python3
[ -x "$PY" ] || PY=$(command -v python3)

B=$(cd "$bin" 2>/dev/null && pwd) || die "--bin $bin: no such directory"
for b in pbftd pbft-cli pbft-load; do
    [ -x "$B/$b" ] || die "$B/$b is missing: build first (cmake --build build)"
done
if [ -n "$out" ]; then
    mkdir -p "$out"
    W=$(cd "$out" && pwd)
else
    W=$(mktemp -d "${TMPDIR:-/tmp}/pbft-netns.XXXXXX")
fi
NET="$W/net"
rm -rf "$NET" "$W"/load-* "$W"/chain-*.txt "$W"/summary.json

N=4
T0=$(date +%s%3N)
now_ms() { date +%s%3N; }
secs_since() { awk -v a="$1" -v b="$(now_ms)" 'BEGIN { printf "%.1f", (b - a) / 1000 }'; }
say() { echo "[netns $(secs_since "$T0")s] $*"; }

TAG="pbftns$$"
BR="$TAG-br" # the switch: bridge br0 and one port pI per host (pc for the client)
CL="$TAG-cl" # the client host: pbft-load runs here
hostns() { echo "$TAG-h$1"; }
ip_of() { echo "$subnet.$(($1 + 1))"; }
CLIENT_IP="$subnet.100"
rpc_url() { echo "http://$(ip_of "$1"):$rpc_port"; }
made_ns=()
pids=()
load_pid=""
passed=0

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    [ -z "$load_pid" ] || kill -TERM "$load_pid" 2>/dev/null || true # timeout passes it on
    local p
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for _ in $(seq 50); do # up to 5 s for a clean stop, then SIGKILL
        local left=0
        for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && left=1; done
        [ "$left" -eq 0 ] && break
        sleep 0.1
    done
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    local ns
    for ns in "${made_ns[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
    if [ "$rc" -ne 0 ] && [ "$rc" -ne 77 ]; then
        echo "--- netns-test failed (rc=$rc); last log lines:" >&2
        local l
        for l in "$NET"/node*/pbftd.log; do
            [ -f "$l" ] && { echo "== $l" >&2; tail -n 15 "$l" >&2; }
        done
        echo "kept $W (configs, logs, data)" >&2
    elif { [ "$passed" -eq 1 ] || [ "$rc" -eq 77 ]; } && [ "$keep" -eq 0 ] && [ -z "$out" ]; then
        rm -rf "$W"
    elif [ -d "$W" ]; then
        echo "kept $W" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fail() { echo "FAIL netns-test: $*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------
# Phase: network. Everything lives in namespaces made here; the root namespace is untouched.
say "phase setup: namespaces $TAG-{br,cl,h0..h3} on $subnet.0/24"
netcmd() { # runs a setup command; a failure here means no namespace support: skip
    local e
    if ! e=$("$@" 2>&1); then
        skip "cannot set up network namespaces ('$*': ${e:-failed}); needs CAP_NET_ADMIN and veth/bridge support"
    fi
}
mkns() { netcmd ip netns add "$1"; made_ns+=("$1"); netcmd ip -n "$1" link set lo up; }
mkns "$BR"
netcmd ip -n "$BR" link add br0 type bridge
netcmd ip -n "$BR" link set br0 type bridge forward_delay 0 stp_state 0
netcmd ip -n "$BR" link set br0 up
attach() { # NS PORT ADDR: a host namespace with eth0 = ADDR, wired to bridge port PORT
    mkns "$1"
    netcmd ip -n "$BR" link add "$2" type veth peer name eth0 netns "$1"
    netcmd ip -n "$BR" link set "$2" master br0
    netcmd ip -n "$BR" link set "$2" up
    netcmd ip -n "$1" addr add "$3/24" dev eth0
    netcmd ip -n "$1" link set eth0 up
}
for i in $(seq 0 $((N - 1))); do attach "$(hostns "$i")" "p$i" "$(ip_of "$i")"; done
attach "$CL" pc "$CLIENT_IP"

netem_state="off (--no-netem)"
if [ "$netem" -eq 1 ]; then
    # Both ends of each host's link: egress from the host (eth0) and towards it (pI), so
    # host-to-host traffic sees the delay and loss twice each way.
    spec=(delay "${delay}ms" "${jitter}ms" loss "${loss}%")
    if command -v modprobe >/dev/null; then modprobe -q sch_netem 2>/dev/null || true; fi
    if e=$(tc -n "$(hostns 0)" qdisc add dev eth0 root netem "${spec[@]}" 2>&1); then
        for i in $(seq 0 $((N - 1))); do
            [ "$i" -eq 0 ] || tc -n "$(hostns "$i")" qdisc add dev eth0 root netem "${spec[@]}"
            tc -n "$BR" qdisc add dev "p$i" root netem "${spec[@]}"
        done
        netem_state="delay ${delay}ms +-${jitter}ms loss ${loss}% per link end"
        say "netem: $netem_state (host to host: about $((4 * delay)) ms round trip)"
    else
        netem_state="unavailable: $(echo "$e" | tr '\n' ' ' | tr -cd '[:alnum:] .,:;()_=+-' | sed 's/ *$//')"
        say "netem: tc qdisc netem failed here (${e}); continuing without latency and loss"
    fi
fi

# The client host reaches every host through the bridge before a replica starts (bash
# /dev/tcp to a closed port: "connection refused" comes back only from a reachable host).
reach() {
    { timeout 2 ip netns exec "$1" bash -c "exec 3<>/dev/tcp/$2/9" 2>&1 || true; } | grep -q refused
}
for i in $(seq 0 $((N - 1))); do
    end=$((SECONDS + 10))
    until reach "$CL" "$(ip_of "$i")"; do
        [ "$SECONDS" -lt "$end" ] || fail "the client host cannot reach host $i ($(ip_of "$i"))"
        sleep 0.1
    done
done
setup_s=$(secs_since "$T0")

# ---------------------------------------------------------------------------------------
# Phase: configuration. pbftd testnet writes homes on 127.0.0.1 with ports P+i; each host
# gets its own address and the same ports, in its config.toml (p2p.listen, rpc.listen) and
# in the genesis validators' p2p_address/rpc_address (identical bytes on every host).
say "phase config: pbftd testnet, then each host's address in config.toml and genesis.json"
"$B/pbftd" testnet --n "$N" --out "$NET" --base-port "$port" --accounts 32 >/dev/null
gsed=()
for j in $(seq 0 $((N - 1))); do
    gsed+=(-e "s|\"tcp://127\\.0\\.0\\.1:$((port + j))\"|\"tcp://$(ip_of "$j"):$port\"|")
    gsed+=(-e "s|\"http://127\\.0\\.0\\.1:$((port + 100 + j))\"|\"http://$(ip_of "$j"):$rpc_port\"|")
done
for i in $(seq 0 $((N - 1))); do
    home="$NET/node$i"
    sed -i "${gsed[@]}" "$home/config/genesis.json"
    sed -i -e "s|^listen = \"tcp://[^\"]*\"|listen = \"tcp://$(ip_of "$i"):$port\"|" \
        -e "s|^listen = \"http://[^\"]*\"|listen = \"http://$(ip_of "$i"):$rpc_port\"|" \
        "$home/config/config.toml"
    ! grep -v '^ *#' "$home/config/config.toml" "$home/config/genesis.json" | grep -q '127\.0\.0\.1' ||
        fail "node$i: a 127.0.0.1 address is left in its config"
done
[ "$(sha256sum "$NET"/node*/config/genesis.json | awk '{ print $1 }' | sort -u | wc -l)" -eq 1 ] ||
    fail "the rewritten genesis files differ"
RECV=$("$B/pbft-cli" keygen --out "$W/recv.json")

# ---------------------------------------------------------------------------------------
# Helpers. A replica is always asked from its own host (as an operator would over ssh), so
# a host that is cut off still answers.
cli() { local i=$1; shift; ip netns exec "$(hostns "$i")" "$B/pbft-cli" --rpc "$(rpc_url "$i")" "$@"; }
status_field() { # NODE KEY: a number from the node's status ("" if it does not answer)
    { cli "$1" --json status 2>/dev/null || true; } |
        sed -n "s/.*\"$2\": \"\\{0,1\\}\\([0-9]*\\).*/\\1/p" | head -1
}
height() { status_field "$1" latest_height; }
view() { status_field "$1" view; }
primary() { status_field "$1" primary; }
peers() { status_field "$1" peers_connected; }
heights() { local i s=""; for i in "$@"; do s="$s${s:+,}$(height "$i")"; done; echo "$s"; }
alive_all() {
    local i
    for i in $(seq 0 $((N - 1))); do
        kill -0 "${pids[$i]}" 2>/dev/null || fail "node$i (pid ${pids[$i]}) exited; see $NET/node$i/pbftd.log"
    done
}
# wait_for DESC SECONDS CMD...: poll CMD until it succeeds; fail at the deadline.
wait_for() {
    local desc=$1 secs=$2 end=$((SECONDS + $2))
    shift 2
    until "$@" >/dev/null 2>&1; do
        alive_all
        [ "$SECONDS" -lt "$end" ] || fail "timed out after ${secs}s waiting for: $desc"
        sleep 0.2
    done
}
all_at_least() { # H NODES...: every one of NODES is at height H or more
    local want=$1 i h
    shift
    for i in "$@"; do h=$(height "$i"); [ -n "$h" ] && [ "$h" -ge "$want" ] || return 1; done
}
same_height() { # NODES...: all at one height (and answering)
    local i h ref=""
    for i in "$@"; do
        h=$(height "$i")
        [ -n "$h" ] || return 1
        if [ -z "$ref" ]; then ref=$h; elif [ "$h" != "$ref" ]; then return 1; fi
    done
}
all_peers() { local i; for i in "$@"; do [ "$(peers "$i")" = "$((N - 1))" ] || return 1; done; }
committed_on() { # HASH NODES...: the transaction is committed on each of NODES
    local h=$1 i
    shift
    for i in "$@"; do cli "$i" tx "$h" >/dev/null 2>&1 || return 1; done
}
link_is() { # HOST up|down: the carrier of the host's eth0, as the host sees it
    local want="state UP"
    [ "$2" = up ] || want=NO-CARRIER
    ip -n "$(hostns "$1")" link show eth0 | grep -q "$want"
}
cut() { # HOST: its switch port down, like a pulled cable (its process keeps running)
    ip -n "$BR" link set "p$1" down
    wait_for "host $1's link to go down" 10 link_is "$1" down
}
heal() {
    ip -n "$BR" link set "p$1" up
    wait_for "host $1's link to come up" 10 link_is "$1" up
}

# The chain of each replica, read from its own host: "height chain_hash app_hash digest"
# per line, heights 1..latest, fetched in JSON-RPC batches of the block method.
cat >"$W/chain.py" <<'PY'
import json, sys, urllib.request
url, out = sys.argv[1], sys.argv[2]
op = urllib.request.build_opener(urllib.request.ProxyHandler({}))
def call(body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with op.open(req, timeout=30) as r:
        return json.loads(r.read())
top = int(call({"jsonrpc": "2.0", "method": "status", "id": 0})["result"]["latest_height"])
with open(out, "w") as f:
    for lo in range(1, top + 1, 50):
        hs = range(lo, min(top, lo + 49) + 1)
        rs = {r["id"]: r for r in call([{"jsonrpc": "2.0", "method": "block",
                                          "params": {"height": str(h)}, "id": h} for h in hs])}
        for h in hs:
            b = rs[h]["result"]
            assert int(b["height"]) == h, (h, b["height"])
            f.write("%d %s %s %s\n" % (h, b["chain_hash"], b["app_hash"], b["digest"]))
PY
# chains_agree TAG NODES...: at every height all of NODES have, identical hashes (a replica
# behind the others holds a prefix of their chain). Prints the common height.
# The validators whose COMMITs are in the stored certificates of heights FROM..TO, one id per
# line, read from one replica's host (the commit method, in JSON-RPC batches).
cat >"$W/signers.py" <<'PY'
import json, sys, urllib.request
url, lo, hi = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
op = urllib.request.build_opener(urllib.request.ProxyHandler({}))
def call(body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with op.open(req, timeout=30) as r:
        return json.loads(r.read())
for a in range(lo, hi + 1, 100):
    batch = [{"jsonrpc": "2.0", "id": h, "method": "commit", "params": {"height": str(h)}}
             for h in range(a, min(hi, a + 99) + 1)]
    for r in call(batch):
        for c in (r.get("result") or {}).get("certificate", []):
            print(c["validator"])
PY
# signed_after HOST FROM TO NODES...: HOST's COMMITs are in a certificate of a block in
# FROM..TO as one of NODES stores it: it voted again, it did not only follow.
signed_after() {
    local c=$1 lo=$2 hi=$3 i
    shift 3
    for i in "$@"; do
        ip netns exec "$(hostns "$i")" "$PY" "$W/signers.py" "$(rpc_url "$i")" "$lo" "$hi" |
            grep -qx "$c" && return 0
    done
    return 1
}
out_of_view() { cli "$1" --json status 2>/dev/null | grep -q '"out_of_view": true'; }

chains_agree() {
    local tag=$1 i min=-1 n
    shift
    for i in "$@"; do
        ip netns exec "$(hostns "$i")" "$PY" "$W/chain.py" "$(rpc_url "$i")" "$W/chain-$tag-$i.txt" ||
            fail "could not read node$i's blocks"
        n=$(wc -l <"$W/chain-$tag-$i.txt")
        if [ "$min" -lt 0 ] || [ "$n" -lt "$min" ]; then min=$n; fi
    done
    for i in "$@"; do
        cmp -s <(head -n "$min" "$W/chain-$tag-$1.txt") <(head -n "$min" "$W/chain-$tag-$i.txt") ||
            fail "$tag: node$1 and node$i hold different blocks at some height in 1..$min: $(
                diff <(head -n "$min" "$W/chain-$tag-$1.txt") <(head -n "$min" "$W/chain-$tag-$i.txt") | head -2 | tr '\n' ' ')"
    done
    echo "$min"
}

# load NAME FIRST_ACCOUNT NODES...: pbft-load from the client host, RATE tx/s for PHASE_S
# seconds over 8 accounts of their own (FIRST_ACCOUNT..+7, so a phase never reuses a nonce
# another phase left in a mempool), sent to and followed on NODES. Runs in the background.
load_start() {
    local name=$1 first=$2 d="$W/load-$1" k urls=""
    shift 2
    mkdir -p "$d/accounts"
    for k in $(seq 0 7); do ln -sf "$NET/accounts/account$((first + k)).json" "$d/accounts/account$k.json"; done
    for k in "$@"; do urls="$urls${urls:+,}$(rpc_url "$k")"; done
    # (Under a sanitizer build, the load generator's exit-time allocations are not leaks
    # worth failing for.)
    ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0 \
        timeout 90 ip netns exec "$CL" "$B/pbft-load" --net "$d" --rpc "$urls" --follow "$urls" \
        --accounts 8 --threads 4 --batch 10 --n "$N" --txs $((rate * phase_s)) --rate "$rate" \
        >"$d/load.json" 2>"$d/load.err" &
    load_pid=$!
    LOAD_NAME=$name
}
load_wait() { # the load must commit every transfer on the followed replicas
    local rc=0
    wait "$load_pid" || rc=$?
    load_pid=""
    local d="$W/load-$LOAD_NAME"
    [ "$rc" -eq 0 ] || fail "$LOAD_NAME: pbft-load exited $rc: $(tail -1 "$d/load.json" 2>/dev/null) $(tail -3 "$d/load.err" 2>/dev/null)"
    LOAD_COMMITTED=$(sed -n 's/.*"committed":\([0-9]*\).*/\1/p' "$d/load.json" | tail -1)
    LOAD_TPS=$(sed -n 's/.*"committed_tx_per_s":\([0-9.]*\).*/\1/p' "$d/load.json" | tail -1)
    LOAD_P50=$(sed -n 's/.*"p50_ms":\([0-9.]*\).*/\1/p' "$d/load.json" | tail -1)
    LOAD_COMMITTED=${LOAD_COMMITTED:-0} LOAD_TPS=${LOAD_TPS:-0} LOAD_P50=${LOAD_P50:-0}
}

# ---------------------------------------------------------------------------------------
# Phase: start. One pbftd per host namespace (ip netns exec execs it: the pid is pbftd's).
ALL=(0 1 2 3)
say "phase start: pbftd on $(ip_of 0)..$(ip_of 3), p2p port $port, rpc port $rpc_port"
for i in "${ALL[@]}"; do
    ip netns exec "$(hostns "$i")" "$B/pbftd" start --home "$NET/node$i" >"$NET/node$i/pbftd.log" 2>&1 &
    pids+=($!)
    echo $! >"$NET/node$i/pbftd.pid"
done
for i in "${ALL[@]}"; do wait_for "node$i to answer" 30 cli "$i" status; done
wait_for "every replica connected to the 3 others" 30 all_peers "${ALL[@]}"
grep -q "p2p tcp://$(ip_of 1):$port" "$NET/node1/pbftd.log" || fail "node1 does not listen on its own address"
start_s=$(secs_since "$T0")

# ---------------------------------------------------------------------------------------
say "phase baseline: $((rate * phase_s)) transfers at $rate tx/s to all four hosts"
t=$(now_ms)
load_start baseline 0 "${ALL[@]}"
load_wait
wait_for "all four at one height" 20 same_height "${ALL[@]}"
base_h=$(height 0)
base_s=$(secs_since "$t")
base_tps=$LOAD_TPS
base_p50=$LOAD_P50
say "baseline: $LOAD_COMMITTED committed ($LOAD_TPS tx/s, p50 $LOAD_P50 ms), height $base_h on all four"

# ---------------------------------------------------------------------------------------
# Phase: one host cut off (f = 1): the current primary, while load flows to the others.
c1=$(primary 0)
[[ "$c1" =~ ^[0-3]$ ]] || fail "no primary reported"
view0=$(view 0)
live1=()
for i in "${ALL[@]}"; do [ "$i" -eq "$c1" ] || live1+=("$i"); done
say "phase cut1: host $c1 (the primary, view $view0) cut off; load to hosts ${live1[*]}"
t=$(now_ms)
load_start cut1 8 "${live1[@]}"
h=$(height "${live1[0]}")
wait_for "the load to reach the replicas" 20 all_at_least $((h + 1)) "${live1[0]}"
cut "$c1"
load_wait
wait_for "hosts ${live1[*]} at one height" 20 same_height "${live1[@]}"
cut1_h=$(height "${live1[0]}")
cut1_view=$(view "${live1[0]}")
[ "$cut1_h" -gt "$base_h" ] || fail "cut1: no block committed with host $c1 cut off"
[ "$cut1_view" -gt "$view0" ] || fail "cut1: the primary was cut off but view is still $view0"
c1_h=$(height "$c1")
{ [ -n "$c1_h" ] && [ "$c1_h" -le "$cut1_h" ]; } || fail "cut1: host $c1 reports height '${c1_h}' while cut off"
cut1_s=$(secs_since "$t")
say "cut1: $LOAD_COMMITTED committed by hosts ${live1[*]} ($LOAD_TPS tx/s), height $cut1_h, view $cut1_view; host $c1 stuck at $c1_h"

# ---------------------------------------------------------------------------------------
# Phase: a second host cut off: 2 of 4 left, no quorum (2f+1 = 3). Transfers submitted to
# the two left must not commit, no height may grow, and every chain is a prefix of the others.
c2=$(primary "${live1[0]}")
[[ "$c2" =~ ^[0-3]$ ]] && [ "$c2" -ne "$c1" ] || c2=${live1[0]}
live2=()
for i in "${live1[@]}"; do [ "$i" -eq "$c2" ] || live2+=("$i"); done
say "phase no-quorum: host $c2 (the primary of view $cut1_view) cut off too; hosts ${live2[*]} left"
t=$(now_ms)
cut "$c2"
hmax_before=$(heights "${ALL[@]}" | tr ',' '\n' | sort -n | tail -1)
hashes=()
for k in $(seq 0 3); do
    to=${live2[$((k % 2))]}
    hx=$({ cli "$to" --json transfer --key "$NET/accounts/account$((24 + k)).json" --to "$RECV" \
        --amount 1 --nonce 0 || true; } | sed -n 's/.*"hash": "\([0-9a-f]*\)".*/\1/p')
    [ -n "$hx" ] || fail "no-quorum: host $to did not accept a transfer"
    hashes+=("$hx")
done
sleep "$phase_s" # the minority runs without quorum for a while (view changes that cannot finish)
alive_all
nq_heights=$(heights "${ALL[@]}")
hmax_after=$(echo "$nq_heights" | tr ',' '\n' | sort -n | tail -1)
[ "$hmax_after" -eq "$hmax_before" ] ||
    fail "no-quorum: a block was committed without a quorum (highest height $hmax_before -> $hmax_after)"
for hx in "${hashes[@]}"; do
    for i in "${ALL[@]}"; do
        ! cli "$i" tx "$hx" >/dev/null 2>&1 || fail "no-quorum: transfer $hx committed on node$i"
    done
done
nq_common=$(chains_agree noquorum "${ALL[@]}")
nq_views=""
nq_peers=""
for i in "${ALL[@]}"; do
    nq_views="$nq_views${nq_views:+,}$(view "$i")"
    # What each replica believes: peer TCP connections have no keepalive, so a cut that
    # sends no reset leaves them "connected" (informational, not checked).
    nq_peers="$nq_peers${nq_peers:+,}$(peers "$i")"
done
nq_s=$(secs_since "$t")
say "no-quorum: heights [$nq_heights] unchanged after ${phase_s}s, the 4 submitted transfers uncommitted, chains agree on 1..$nq_common (views [$nq_views])"

# ---------------------------------------------------------------------------------------
# Phase: heal both. The outage's transfers, then new load, commit on all four, which end at
# one height with identical hashes at every height.
say "phase heal: hosts $c1 and $c2 reconnected"
t=$(now_ms)
heal "$c1"
heal "$c2"
wait_for "every replica connected to the 3 others again" 30 all_peers "${ALL[@]}"
wait_for "a block committed after the heal" 60 all_at_least $((hmax_after + 1)) "${live2[0]}"
recover_s=$(secs_since "$t")
for hx in "${hashes[@]}"; do
    wait_for "the outage's transfer $hx to commit on all four" 60 committed_on "$hx" "${ALL[@]}"
done
outage_commit_s=$(secs_since "$t")
say "heal: first commit ${recover_s}s after the heal, the outage's transfers committed on all four after ${outage_commit_s}s"
load_start heal 16 "${ALL[@]}"
load_wait
wait_for "all four at one height" 30 same_height "${ALL[@]}"
final_h=$(height 0)
[ "$final_h" -gt "$hmax_after" ] || fail "heal: no progress (height $final_h)"
common=$(chains_agree final "${ALL[@]}")
[ "$common" -ge "$final_h" ] || fail "heal: only heights 1..$common are on every replica (expected $final_h)"
views=""
for i in "${ALL[@]}"; do views="$views${views:+,}$(view "$i")"; done
heal_s=$(secs_since "$t")
heal_tps=$LOAD_TPS
say "heal: $LOAD_COMMITTED committed on all four ($LOAD_TPS tx/s), height $final_h everywhere, identical chain and app hashes at heights 1..$final_h (views [$views])"
# Both cut replicas vote again (issue 12, part 2): their COMMITs are in certificates of the
# blocks the heal's load committed, and neither is left out of the view the others use.
for c in "$c1" "$c2"; do
    signed_after "$c" $((hmax_after + 1)) "$final_h" "${ALL[@]}" ||
        fail "heal: host $c's COMMITs are in no certificate of heights $((hmax_after + 1))..$final_h: it only follows"
    ! out_of_view "$c" || fail "heal: host $c reports itself out of the view the others use"
done
say "heal: hosts $c1 and $c2 signed COMMITs in the certificates of heights $((hmax_after + 1))..$final_h"

# ---------------------------------------------------------------------------------------
# Phase: a backup cut off for backup_cut_s under load to the other three (issue 12, part
# 2). Its timers expire many times; it must not leave the view alone, the others must not
# change view for it, and after the heal it must vote again: its COMMITs in a certificate.
pv=$(primary 0)
c3=$(((pv + 1) % N))
live3=()
for i in "${ALL[@]}"; do [ "$i" -eq "$c3" ] || live3+=("$i"); done
bview=$(view "$pv")
say "phase backup-cut: host $c3 (a backup, view $bview) cut off ${backup_cut_s}s; load to hosts ${live3[*]}"
t=$(now_ms)
saved_phase=$phase_s
phase_s=$backup_cut_s
load_start backup-cut 24 "${live3[@]}"
phase_s=$saved_phase
cut "$c3"
load_wait
bcut_h=$(height "${live3[0]}")
for i in "${ALL[@]}"; do
    [ "$(view "$i")" = "$bview" ] || fail "backup-cut: host $i is in view $(view "$i"), not $bview: a backup's cut changed views"
done
bcut_tps=$LOAD_TPS
say "backup-cut: $LOAD_COMMITTED committed by hosts ${live3[*]} ($LOAD_TPS tx/s) in $(secs_since "$t")s, height $bcut_h; host $c3 still in view $bview"
heal "$c3"
t=$(now_ms)
load_start backup-heal 0 "${ALL[@]}"
rejoined() { signed_after "$c3" $((bcut_h + 1)) "$(height "${live3[0]}")" "${ALL[@]}"; }
wait_for "host $c3's COMMITs in a certificate after its heal" 30 rejoined
rejoin_s=$(secs_since "$t")
load_wait
wait_for "all four at one height" 30 same_height "${ALL[@]}"
bfinal_h=$(height 0)
common=$(chains_agree backup "${ALL[@]}")
[ "$common" -ge "$bfinal_h" ] || fail "backup-cut: only heights 1..$common are on every replica (expected $bfinal_h)"
! out_of_view "$c3" || fail "backup-cut: host $c3 reports itself out of the view the others use"
say "backup-cut: host $c3 signed COMMITs again ${rejoin_s}s after its heal (goal 10 s); height $bfinal_h everywhere, identical at 1..$bfinal_h"

alive_all
total_s=$(secs_since "$T0")
passed=1
summary=$(printf '{"test":"netns","result":"pass","n":%d,"hosts":["%s","%s","%s","%s"],"netem":"%s","phases":{"setup":{"s":%s},"start":{"at_s":%s},"baseline":{"s":%s,"height":%s,"tx_per_s":%s,"p50_ms":%s},"cut1":{"host":%s,"s":%s,"height":%s,"view":%s,"cut_host_height":%s},"no_quorum":{"hosts_cut":[%s,%s],"s":%s,"heights":[%s],"views":[%s],"peers_connected":[%s],"uncommitted_txs":%d},"heal":{"s":%s,"first_commit_s":%s,"outage_txs_committed_s":%s,"tx_per_s":%s,"height":%s,"views":[%s]},"backup_cut":{"host":%s,"cut_s":%s,"tx_per_s":%s,"view":%s,"votes_again_s":%s}},"final_height":%s,"identical_heights":%s,"total_s":%s}' \
    "$N" "$(ip_of 0)" "$(ip_of 1)" "$(ip_of 2)" "$(ip_of 3)" "$netem_state" "$setup_s" "$start_s" \
    "$base_s" "$base_h" "$base_tps" "$base_p50" "$c1" "$cut1_s" "$cut1_h" "$cut1_view" "$c1_h" \
    "$c1" "$c2" "$nq_s" "$nq_heights" "$nq_views" "$nq_peers" "${#hashes[@]}" \
    "$heal_s" "$recover_s" "$outage_commit_s" "$heal_tps" "$final_h" "$views" \
    "$c3" "$backup_cut_s" "$bcut_tps" "$bview" "$rejoin_s" \
    "$bfinal_h" "$common" "$total_s")
echo "$summary" >"$W/summary.json"
say "pass in ${total_s}s"
echo "$summary"
