#!/usr/bin/python3
"""Load and checks of the crash-consistency test (tests/integration/crash_consistency.sh).

  crash_consistency.py load  --net DIR --workers K --acked FILE --stop FILE URL...
      K workers, each with its own genesis account, submit transfers with
      broadcast_tx_commit to random replicas (some of which are being killed). A worker
      appends a transaction's hash to FILE only when broadcast_tx_commit returned success
      (a receipt with code 0). When a call fails (connection refused or reset, timeout), the
      outcome is unknown: the worker asks `tx` until the transaction shows up, resubmitting
      the same bytes now and then, before it moves to the next nonce. Runs until FILE --stop
      exists; prints one JSON line.
  crash_consistency.py check --net DIR --acked FILE URL...
      Every acknowledged transaction is in the chain of every replica (`tx` answers a
      receipt at each); every replica has the same chain hash at every height; and no
      replica signed two different messages for the same (type, view, seq), judged from the
      messages its peers received and logged (log.msg_log). Prints one JSON line; exits 1
      with the reasons on any failure.
  crash_consistency.py equivocations --net DIR [--expect ID]
      Only the last check, on a network's logs: prints the replicas that signed two
      different messages for one (type, view, seq). With --expect, exits 1 unless replica
      ID is among them (tests/integration/byzantine.sh, equivocate: the check catches it).

Python 3 standard library plus python3-nacl (Debian), which signs the transfers.
"""
import glob
import hashlib
import json
import os
import random
import struct
import sys
import threading
import time
import urllib.error
import urllib.request

import nacl.signing


def call(url, method, params, timeout=15):
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def transfer(sk, chain, nonce, to, amount):
    """docs/protocol.md section 2."""
    pk = bytes(sk.verify_key)
    unsigned = bytes([1, 1]) + pk + struct.pack(">Q", nonce) + to + struct.pack(">Q", amount)
    msg = b"PBFT-TX1" + chain + hashlib.sha256(unsigned).digest()
    tx = unsigned + sk.sign(msg).signature
    return tx.hex(), hashlib.sha256(tx).hexdigest()


def args(argv):
    opts, urls, i = {}, [], 0
    while i < len(argv):
        if argv[i].startswith("--"):
            opts[argv[i][2:]] = argv[i + 1]
            i += 2
        else:
            urls.append(argv[i])
            i += 1
    return opts, urls


def load(opts, urls):
    net = opts["net"]
    genesis = json.load(open(os.path.join(net, "node0/config/genesis.json")))
    chain = hashlib.sha256(genesis["chain_id"].encode()).digest()
    stop_file = opts["stop"]
    acked_path = opts["acked"]
    lock = threading.Lock()
    stats = {"acked": 0, "found_after_failure": 0, "failed_calls": 0, "resubmits": 0}
    errors = []
    to = bytes(nacl.signing.SigningKey(b"\x42" * 32).verify_key)

    def stopped():
        return os.path.exists(stop_file)

    def worker(k):
        acct = json.load(open(os.path.join(net, f"accounts/account{k}.json")))
        sk = nacl.signing.SigningKey(bytes.fromhex(acct["private_key"]))
        nonce = None
        while nonce is None and not stopped():
            try:
                r = call(random.choice(urls), "account", {"public_key": acct["public_key"]})
                nonce = int(r["result"]["nonce"])
            except (OSError, KeyError, ValueError):
                time.sleep(0.1)
        while not stopped():
            tx, h = transfer(sk, chain, nonce, to, 1)
            try:
                r = call(random.choice(urls), "broadcast_tx_commit", {"tx": tx}, timeout=15)
            except (OSError, ValueError):
                r = None
            res = r.get("result") if r else None
            if res is not None and res.get("code") == 0 and res.get("hash") == h:
                with lock:
                    stats["acked"] += 1
                    with open(acked_path, "a") as f:
                        f.write(h + "\n")
                nonce += 1
                continue
            if res is not None:
                with lock:
                    errors.append(f"worker {k}: unexpected receipt {res} for nonce {nonce}")
                return
            # Unknown outcome: find it, resubmitting the same bytes now and then.
            with lock:
                stats["failed_calls"] += 1
            last = time.time()
            while not stopped():
                try:
                    q = call(random.choice(urls), "tx", {"hash": h}, timeout=5)
                    if "result" in q:
                        with lock:
                            stats["found_after_failure"] += 1
                        nonce += 1
                        break
                except (OSError, ValueError):
                    pass
                if time.time() - last > 3:
                    last = time.time()
                    with lock:
                        stats["resubmits"] += 1
                    try:
                        call(random.choice(urls), "broadcast_tx_sync", {"tx": tx}, timeout=5)
                    except (OSError, ValueError):
                        pass
                time.sleep(0.05)

    workers = int(opts.get("workers", "4"))
    ts = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(workers)]
    t0 = time.time()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    stats["seconds"] = round(time.time() - t0, 1)
    stats["errors"] = errors
    print(json.dumps(stats))
    return 1 if errors else 0


def equivocations(net):
    """Reads every replica's log.msg_log (data/msgs.jsonl and its rotated .1) and returns
    ({(from, type, view, seq): {hash}}, lines read, the keys with more than one hash)."""
    seen = {}
    lines = 0
    for path in sorted(glob.glob(os.path.join(net, "node*/data/msgs.jsonl*"))):
        with open(path) as f:
            for line in f:
                try:
                    m = json.loads(line)
                except ValueError:
                    continue  # the last line of a log cut by kill -9
                if m.get("event") != "msg":
                    continue
                lines += 1
                key = (m["from"], m["type"], m["view"], m["seq"])
                seen.setdefault(key, set()).add(m["hash"])
    twice = {k: v for k, v in seen.items() if len(v) > 1}
    return seen, lines, twice


def equivocators(opts):
    """The `equivocations` command: print {"lines":..,"equivocators":[ids]}; with --expect ID
    exit 1 unless ID is among them (the check must catch a real equivocating primary)."""
    seen, lines, twice = equivocations(opts["net"])
    who = sorted({k[0] for k in twice})
    print(json.dumps({"lines": lines, "statements": len(seen), "equivocations": len(twice),
                      "equivocators": who}))
    if "expect" in opts:
        return 0 if lines > 0 and int(opts["expect"]) in who else 1
    return 0 if not twice else 1


def check(opts, urls):
    problems = []
    acked = [l.strip() for l in open(opts["acked"]) if l.strip()]
    # 1. Every acknowledged transaction is in every replica's chain.
    missing = 0
    for h in acked:
        for u in urls:
            r = call(u, "tx", {"hash": h})
            if "result" not in r:
                missing += 1
                if missing <= 5:
                    problems.append(f"{u}: acknowledged tx {h} is not in its chain: {r.get('error')}")
    # 2. The same chain hash at every height.
    heights = [int(call(u, "status", {})["result"]["latest_height"]) for u in urls]
    top = min(heights)
    for height in range(1, top + 1):
        hs = set()
        for u in urls:
            b = call(u, "block", {"height": str(height)})["result"]
            hs.add((b["chain_hash"], b["app_hash"]))
        if len(hs) != 1:
            problems.append(f"replicas disagree at height {height}: {sorted(hs)}")
            break
    # 3. No replica signed two different messages for one (type, view, seq).
    seen, lines, twice = equivocations(opts["net"])
    for k in sorted(twice)[:10]:
        problems.append(f"replica {k[0]} signed {len(twice[k])} different {k[1]} for view "
                        f"{k[2]} seq {k[3]}")
    if lines == 0:
        problems.append("no received message was logged (log.msg_log)")
    summary = {"acked": len(acked), "heights": heights, "heights_compared": top,
               "messages_logged": lines, "distinct_statements": len(seen),
               "equivocations": len(twice), "missing": missing, "ok": not problems}
    print(json.dumps(summary))
    for p in problems:
        print("FAIL: " + p, file=sys.stderr)
    return 0 if not problems else 1


def main():
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        return 0 if len(sys.argv) >= 2 else 2
    opts, urls = args(sys.argv[2:])
    if sys.argv[1] == "load":
        return load(opts, urls)
    if sys.argv[1] == "check":
        return check(opts, urls)
    if sys.argv[1] == "equivocations":
        return equivocators(opts)
    print(f"unknown command {sys.argv[1]}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
