#!/usr/bin/python3
"""A ledger client written only from docs/protocol.md and docs/rpc.md (issue 4).

Uses python3-nacl (Debian) and the standard library. Phase "keygen" makes a key and prints
its public key; phase "run" builds and signs a transfer from it, submits it with
broadcast_tx_commit, checks the recipient's balance on every node, and verifies the commit
certificate of the block that holds it against the validator keys of genesis.json.
Exits non-zero (with a reason) on any failure.
"""
import hashlib
import json
import struct
import sys
import time
import urllib.request

import nacl.signing


def rpc(url, method, params):
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    resp = json.loads(urllib.request.urlopen(req, timeout=30).read())
    if "error" in resp:
        raise RuntimeError(f"{method}: {resp['error']}")
    return resp["result"]


def transfer(sk, chain, nonce, to, amount):
    """docs/protocol.md section 2: version, type, sender, nonce, to, amount, signature."""
    pk = bytes(sk.verify_key)
    unsigned = bytes([1, 1]) + pk + struct.pack(">Q", nonce) + to + struct.pack(">Q", amount)
    msg = b"PBFT-TX1" + chain + hashlib.sha256(unsigned).digest()
    tx = unsigned + sk.sign(msg).signature
    return tx, hashlib.sha256(tx).hexdigest()


def verify_certificate(block_hex, cert, chain, validators, height):
    """docs/rpc.md (commit) and docs/protocol.md sections 4 and 5."""
    raw = bytes.fromhex(block_hex)
    digest = hashlib.sha256(b"PBFT-BLK" + raw[:63]).digest()       # the block digest
    assert struct.unpack(">Q", raw[1:9])[0] == height, "block height"
    n = len(validators)
    f = (n - 1) // 3
    good = set()
    view = None
    for entry in cert:
        m = bytes.fromhex(entry["signed_message"])
        version, mtype, sender, body_len = struct.unpack(">BBHI", m[:8])
        body, sig = m[8:8 + body_len], m[8 + body_len:]
        if version != 1 or mtype != 3 or len(sig) != 64 or sender >= n:   # 3 = COMMIT
            continue
        v, seq, d = struct.unpack(">QQ32s", body)
        if seq != height or d != digest or (view is not None and v != view):
            continue
        signed = m[:8 + body_len]
        key = nacl.signing.VerifyKey(validators[sender])
        try:
            key.verify(b"PBFT-MSG" + chain + hashlib.sha256(signed).digest(), sig)
        except Exception:
            continue
        view = v
        good.add(sender)
    return len(good), n - f, digest.hex()


def main():
    if sys.argv[1] == "keygen":
        sk = nacl.signing.SigningKey.generate()
        open(sys.argv[2], "w").write(bytes(sk).hex())
        print(bytes(sk.verify_key).hex())
        return 0
    # run SEEDFILE GENESIS URL...
    sk = nacl.signing.SigningKey(bytes.fromhex(open(sys.argv[2]).read().strip()))
    genesis = json.load(open(sys.argv[3]))
    urls = sys.argv[4:]
    chain = hashlib.sha256(genesis["chain_id"].encode()).digest()
    validators = [bytes.fromhex(v["public_key"]) for v in genesis["validators"]]
    me = bytes(sk.verify_key).hex()
    account = rpc(urls[0], "account", {"public_key": me})
    recipient = bytes(nacl.signing.SigningKey.generate().verify_key)
    tx, txhash = transfer(sk, chain, int(account["nonce"]), recipient, 77)
    res = rpc(urls[1], "broadcast_tx_commit", {"tx": tx.hex()})
    assert res["hash"] == txhash, f"hash {res['hash']} != {txhash}"
    assert res["result"] == "ok", f"receipt {res}"
    height = int(res["height"])
    print(f"committed {txhash} at height {height}")
    for url in urls:                                 # every node's state shows it
        deadline = time.time() + 20
        while True:
            bal = rpc(url, "account", {"public_key": recipient.hex()})["balance"]
            if bal == "77":
                break
            if time.time() > deadline:
                raise RuntimeError(f"{url}: recipient balance {bal}, want 77")
            time.sleep(0.1)
    print(f"recipient balance 77 on all {len(urls)} nodes")
    block = rpc(urls[2], "block", {"height": str(height)})
    assert txhash in block["txs"], "the block does not list the transaction"
    commit = rpc(urls[3], "commit", {"height": str(height)})
    good, quorum, digest = verify_certificate(block["block"], commit["certificate"], chain,
                                              validators, height)
    assert digest == block["digest"], "the block digest does not match its bytes"
    if good < quorum:
        raise RuntimeError(f"certificate: {good} valid signatures, quorum {quorum}")
    print(f"certificate verified: {good} valid signatures, quorum {quorum}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
