#!/usr/bin/python3
"""Runs every example of docs/rpc.md against a live node and checks the answers (issue 4).

    docs_examples.py DOCS_RPC_MD RPC_URL

Each fenced ```json block after a line starting with "Request" is POSTed as it stands.
The answer must match one of the fenced blocks after "Response" lines that follow it in the
same section (up to the next request or heading):
- the same JSON type at every level, and for objects the same keys;
- for errors, the same code and message;
- arrays inside an answer are compared by their first entry (lengths vary with the state);
  a batch answer (an array at the top) entry by entry;
- an empty object in the document stands for a map of counters: any object matches it.
A request with no response block must get HTTP 204 and an empty body.
Values (hashes, heights, times) are not compared: they differ from run to run.
Standard library only. Exit status 0 when every example matches.
"""
import json
import sys
import urllib.error
import urllib.request


def parse(path):
    """Returns [(line number, request text, [response texts])]."""
    examples = []
    lines = open(path, encoding="utf-8").read().split("\n")
    i = 0
    cur = None  # the example the next Response blocks belong to
    want = None  # "req" or "resp": what the next fenced block is
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            cur, want = None, None
        elif line.startswith("Request"):
            want = "req"
        elif line.startswith("Response"):
            want = "resp"
        elif line.startswith("```") and want is not None:
            start = i
            i += 1
            body = []
            while i < len(lines) and not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            text = "\n".join(body)
            if want == "req":
                cur = (start + 1, text, [])
                examples.append(cur)
            elif cur is not None:
                cur[2].append(text)
            want = None
        i += 1
    return examples


def shape_diff(doc, got, where, top):
    """None when got has doc's shape, else a description of the first difference."""
    if isinstance(doc, bool) or isinstance(got, bool):
        same = isinstance(doc, bool) and isinstance(got, bool)
    elif isinstance(doc, (int, float)) or isinstance(got, (int, float)):
        same = isinstance(doc, (int, float)) and isinstance(got, (int, float))
    else:
        same = type(doc) is type(got)
    if not same:
        return "%s: %s in the document, %s from the node" % (
            where, type(doc).__name__, type(got).__name__)
    if isinstance(doc, dict):
        if not doc:
            return None
        if set(doc) != set(got):
            return "%s: keys %s in the document, %s from the node" % (
                where, sorted(doc), sorted(got))
        if "error" in doc and isinstance(doc["error"], dict):
            for k in ("code", "message"):
                if doc["error"].get(k) != got["error"].get(k):
                    return "%s.error.%s: %r in the document, %r from the node" % (
                        where, k, doc["error"].get(k), got["error"].get(k))
        if "id" in doc and doc["id"] != got["id"]:
            return "%s.id: %r in the document, %r from the node" % (where, doc["id"], got["id"])
        for k in doc:
            d = shape_diff(doc[k], got[k], where + "." + k, False)
            if d:
                return d
    elif isinstance(doc, list):
        if top:
            if len(doc) != len(got):
                return "%s: %d answers in the document, %d from the node" % (
                    where, len(doc), len(got))
            pairs = zip(doc, got)
        else:
            pairs = [(doc[0], got[0])] if doc and got else []
        for j, (a, b) in enumerate(pairs):
            d = shape_diff(a, b, "%s[%d]" % (where, j), False)
            if d:
                return d
    return None


def post(url, body):
    req = urllib.request.Request(url, data=body.encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    examples = parse(sys.argv[1])
    failures = 0
    for line, req, resps in examples:
        status, body = post(sys.argv[2], req)
        label = "docs/rpc.md:%d %s" % (line, req[:60])
        if not resps:
            if status != 204 or body != "":
                print("FAIL %s: want HTTP 204 and no body, got %d %r" % (label, status, body[:200]))
                failures += 1
            continue
        try:
            got = json.loads(body)
        except ValueError:
            print("FAIL %s: HTTP %d, not JSON: %r" % (label, status, body[:200]))
            failures += 1
            continue
        diffs = []
        for text in resps:
            try:
                doc = json.loads(text)
            except ValueError as e:
                print("FAIL %s: a response block is not JSON (%s)" % (label, e))
                failures += 1
                break
            d = shape_diff(doc, got, "answer", True)
            if d is None:
                break
            diffs.append(d)
        else:
            print("FAIL %s: matches none of its %d documented responses:" % (label, len(resps)))
            for d in diffs:
                print("    " + d)
            print("    the node said: " + body[:300])
            failures += 1
    print("%d examples, %d failures" % (len(examples), failures))
    if len(examples) < 15:
        print("FAIL: fewer than 15 examples found: is the document's format changed?")
        return 1
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
