#!/usr/bin/env python3
"""Client abuse against one node's JSON-RPC server (driven by rpc_abuse.sh).

Python standard library only. While the network commits under load (the shell script runs
pbft-load), this process attacks one node's JSON-RPC port and checks that it copes:

  1. slow bodies alone: a few requests whose body trickles in get HTTP 408 (and the
     connection closed) once rpc.body_timeout_ms has passed, not before;
  2. a flood: thousands of connections opened and held at once (the node must accept them
     all), some trickling headers byte by byte, more than rpc.max_connections trickling
     bodies (each one answered 408 is replaced), some stalled one byte short of
     rpc.max_body_bytes (the node buffers them), the rest idle; meanwhile, from other
     threads, the largest allowed batch again and again, and round after round on fresh
     connections: deeply nested JSON, bodies at exactly and just above rpc.max_body_bytes,
     invalid UTF-8 in strings and method names, invalid requests, wrong content types, wrong
     HTTP methods and paths, chunked transfer-encoding, a missing or bad Content-Length,
     HTTP/2, garbage and pipelining. Every abusive request that gets an answer must get the
     right one: the JSON-RPC error (code and message of docs/rpc.md) or HTTP status;
  3. release: the node closes what was held (its descriptor count falls back) and is alive.

Throughout, a well-behaved client asks `status` every 50 ms on a fresh connection: every call
must be answered (a result, HTTP 200) within --good-timeout-s, with p99 latency under
--p99-ms; the heights it reads must advance during the flood (the network keeps
committing); the node's resident memory (/proc/PID/status: VmRSS sampled, VmHWM at the end)
must stay under --rss-mib. Waits poll a condition until a deadline.

Every client socket here connects from 127.0.0.2 (when it can), with the port chosen at
connect: thousands of ephemeral ports held or in TIME_WAIT on 127.0.0.1 could otherwise
take a port that another test is about to listen on.

The last line on stdout is a JSON summary; the exit status is 1 with "FAIL ..." lines on
stderr if any check failed.
"""
import argparse
import http.client
import json
import os
import selectors
import socket
import sys
import threading
import time

failures = []
flock = threading.Lock()


def fail(msg):
    with flock:
        failures.append(msg)
        if len(failures) > 50:
            return  # counted, not printed
    print("FAIL rpc_abuse.py: " + msg, file=sys.stderr, flush=True)


def log(msg):
    print("[rpc_abuse.py %s] %s" % (time.strftime("%H:%M:%S"), msg), flush=True)


def wait_until(desc, secs, cond, step=0.05):
    """Poll cond() until it is true or secs pass; returns whether it became true."""
    end = time.monotonic() + secs
    while not cond():
        if time.monotonic() >= end:
            fail("timed out after %.0f s waiting for %s" % (secs, desc))
            return False
        time.sleep(step)
    return True


# --- raw HTTP ------------------------------------------------------------------------------

SRC = None  # the source address of every client socket (main sets it)
BIND_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)  # Linux: port picked at connect


def connect(port, timeout):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        if SRC is not None:
            s.setsockopt(socket.IPPROTO_IP, BIND_NO_PORT, 1)
            s.bind((SRC, 0))
        s.connect(("127.0.0.1", port))
        return s
    except OSError:
        s.close()
        raise


class Answer:
    """One HTTP response read from a raw socket (status None: closed without an answer)."""

    def __init__(self, status=None, headers=None, body=b"", error=None):
        self.status = status
        self.headers = headers or {}
        self.body = body
        self.error = error

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def __repr__(self):
        return "HTTP %s %s %r%s" % (self.status, self.headers.get("content-type", ""),
                                    self.body[:160], " (%s)" % self.error if self.error else "")


def parse_head(head):
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    status = int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else -1
    headers = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(b":")
        headers[k.strip().lower().decode("latin-1")] = v.strip().decode("latin-1")
    return status, headers


def read_answer(s, deadline, carry=None):
    """Reads one response (headers and a Content-Length body) from socket s. With carry (a
    one-element list), bytes read past this response are kept there for the next call."""
    buf = carry[0] if carry else b""
    closed = False
    while True:
        if b"\r\n\r\n" in buf:
            head, _, body = buf.partition(b"\r\n\r\n")
            status, headers = parse_head(head)
            want = int(headers.get("content-length", "0") or 0)
            if len(body) >= want or closed:
                if carry is not None:
                    carry[0] = body[want:]
                return Answer(status, headers, body[:want])
        elif closed:
            return Answer(error="closed without an answer")
        left = deadline - time.monotonic()
        if left <= 0:
            return Answer(error="no answer before the deadline")
        s.settimeout(left)
        try:
            d = s.recv(65536)
        except socket.timeout:
            return Answer(error="no answer before the deadline")
        except OSError as e:
            if b"\r\n\r\n" not in buf:
                return Answer(error="connection reset (%s)" % e.strerror)
            d = b""
        closed = not d
        buf += d


def exchange(port, data, timeout=10.0):
    """Sends raw bytes on a fresh connection and reads one answer."""
    try:
        s = connect(port, timeout)
    except OSError as e:
        return Answer(error="cannot connect: %s" % e)
    try:
        try:
            s.sendall(data)
        except OSError:
            pass  # the server may answer (413) and close before reading everything
        return read_answer(s, time.monotonic() + timeout)
    finally:
        s.close()


def post(port, body, ctype=b"application/json", extra=b"", path=b"/", method=b"POST"):
    head = method + b" " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    if ctype is not None:
        head += b"Content-Type: " + ctype + b"\r\n"
    head += extra + b"Content-Length: %d\r\n\r\n" % len(body)
    return exchange(port, head + body)


# --- checks --------------------------------------------------------------------------------


def expect_status(what, a, status, close=False):
    if a.status != status:
        fail("%s: want HTTP %d, got %r" % (what, status, a))
        return False
    if close and a.headers.get("connection", "").lower() != "close":
        fail("%s: HTTP %d without Connection: close (%r)" % (what, status, a.headers))
        return False
    return True


def expect_error(what, a, code, message, rid=None):
    if not expect_status(what, a, 200):
        return
    j = a.json()
    want = {"jsonrpc": "2.0", "error": {"code": code, "message": message}, "id": rid}
    if j != want:
        fail("%s: want %s, got %r" % (what, json.dumps(want), a))


def expect_result(what, a, rid):
    if not expect_status(what, a, 200):
        return None
    j = a.json()
    if not isinstance(j, dict) or "result" not in j or j.get("id") != rid:
        fail("%s: want a result with id %r, got %r" % (what, rid, a))
        return None
    return j["result"]


PARSE = (-32700, "Parse error")


def req(method, rid=1, params=None):
    r = {"jsonrpc": "2.0", "method": method, "id": rid}
    if params is not None:
        r["params"] = params
    return json.dumps(r, separators=(",", ":")).encode()


def abuse_payloads(port, a):
    """Every malformed request once, on fresh connections; returns how many were sent."""
    n = 0

    def check(f, *args):
        nonlocal n
        n += 1
        f(*args)

    # Deep nesting: jansson stops at 2048 levels, so the answer is a parse error.
    deep = 100000
    check(expect_error, "100000 x '['", post(port, b"[" * deep), *PARSE)
    check(expect_error, "100000 x '{\"a\":'", post(port, b'{"a":' * deep), *PARSE)
    check(expect_error, "params nested 100000 deep",
          post(port, b'{"jsonrpc":"2.0","id":1,"method":"status","params":' + b"[" * deep +
               b"]" * deep + b"}"), *PARSE)
    check(expect_error, "a batch nested 100000 deep", post(port, b"[" * deep + b"]" * deep),
          *PARSE)
    # Below the limit, nesting is fine (status ignores its params).
    check(expect_result, "params nested 1000 deep",
          post(port, b'{"jsonrpc":"2.0","id":2,"method":"status","params":' + b"[" * 1000 +
               b"]" * 1000 + b"}"), 2)

    # A body of exactly rpc.max_body_bytes is served; one byte more is refused with 413.
    base = b'{"jsonrpc":"2.0","id":"edge","method":"health"}'
    exact = base + b" " * (a.max_body - len(base))
    check(expect_result, "a body of exactly max_body_bytes", post(port, exact), "edge")
    check(expect_status, "a body of max_body_bytes + 1", post(port, exact + b" "), 413, True)
    check(expect_status, "Content-Length max_body_bytes + 1 and no body",
          exchange(port, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" %
                   (a.max_body + 1)), 413, True)
    check(expect_status, "Content-Length 10^19-1",
          exchange(port, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 9999999999999999999"
                   b"\r\n\r\n"), 413, True)
    check(expect_status, "Content-Length of 20 digits",
          exchange(port, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 18446744073709551617"
                   b"\r\n\r\n"), 400, True)
    check(expect_status, "Content-Length abc",
          exchange(port, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}"), 400,
          True)
    check(expect_status, "Content-Length -1",
          exchange(port, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n{}"), 400,
          True)

    # Invalid UTF-8 (bad bytes, overlong, encoded surrogate, truncated) is not JSON.
    for name, bad in [("0xff 0xfe", b"\xff\xfe"), ("overlong '/'", b"\xc0\xaf"),
                      ("encoded surrogate", b"\xed\xa0\x80"), ("truncated", b"\xe2\x82"),
                      ("bad continuation", b"\xc3\x28")]:
        check(expect_error, "invalid UTF-8 (%s) in a string param" % name,
              post(port, b'{"jsonrpc":"2.0","id":1,"method":"kv_get","params":{"key":"k' + bad +
                   b'"}}'), *PARSE)
        check(expect_error, "invalid UTF-8 (%s) in the method name" % name,
              post(port, b'{"jsonrpc":"2.0","id":1,"method":"sta' + bad + b'tus"}'), *PARSE)
    check(expect_error, "invalid UTF-8 in the id",
          post(port, b'{"jsonrpc":"2.0","id":"\xff","method":"status"}'), *PARSE)
    check(expect_error, "invalid UTF-8 in a batch member",
          post(port, b'[{"jsonrpc":"2.0","id":1,"method":"\xfe"}]'), *PARSE)
    check(expect_error, "a lone surrogate escape in the method name",
          post(port, b'{"jsonrpc":"2.0","id":1,"method":"\\ud800"}'), *PARSE)
    check(expect_error, "a NUL escape in the method name",
          post(port, b'{"jsonrpc":"2.0","id":1,"method":"status\\u0000"}'), *PARSE)
    # Valid UTF-8 that names no method.
    check(expect_error, "an unknown non-ASCII method",
          post(port, req("st\u00e4tus\U0001F600", 5)), -32601, "Method not found", 5)

    # Not requests, or requests with a bad member: -32600, with the id when it is valid.
    inv = (-32600, "Invalid Request")
    for body, rid in [(b'{"jsonrpc":"2.0","id":1,"method":123}', 1),
                      (b'{"jsonrpc":"1.0","id":1,"method":"status"}', 1),
                      (b'{"id":1,"method":"status"}', 1),
                      (b'{"jsonrpc":"2.0","id":[1],"method":"status"}', None),
                      (b'{"jsonrpc":"2.0","id":1.5,"method":"health"}', None),
                      (b'"just a string"', None), (b"null", None)]:
        check(expect_error, "not a request: %s" % body.decode(), post(port, body), *inv, rid)
    check(expect_error, "params a string",
          post(port, b'{"jsonrpc":"2.0","id":1,"method":"status","params":"x"}'), -32600,
          "Invalid Request: params must be an object or an array", 1)
    check(expect_error, "an empty batch", post(port, b"[]"), -32600,
          "Invalid Request: empty batch")
    n += 1
    r = post(port, b"[" + b",".join([b"1"] * a.max_batch) + b"]")
    want = [{"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"},
             "id": None}] * a.max_batch
    if expect_status("a batch of max_batch non-requests", r, 200) and r.json() != want:
        fail("a batch of max_batch non-requests: want %d x -32600, got %r" % (a.max_batch, r))
    # Not JSON after all: an empty body, duplicate keys.
    for name, body in [("an empty body", b""),
                       ("duplicate keys", b'{"jsonrpc":"2.0","id":1,"id":2,"method":"status"}')]:
        check(expect_error, name, post(port, body), *PARSE)
    # Numbers jansson cannot hold are JSON: -32600 as the id, -32602 in params.
    for name, body in [("id 1e400", b'{"jsonrpc":"2.0","id":1e400,"method":"status"}'),
                       ("id 10^20", b'{"jsonrpc":"2.0","id":100000000000000000000,'
                        b'"method":"status"}')]:
        check(expect_error, name, post(port, body), -32600, "Invalid Request")
    check(expect_error, "params [10^20]",
          post(port, b'{"jsonrpc":"2.0","id":13,"method":"block","params":[100000000000000000000]}'),
          -32602, "Invalid params: a number out of range (integers must be within -2^63..2^63-1; "
          "send 64-bit values as decimal strings)", 13)
    check(expect_error, "a method name of 500000 bytes",
          post(port, req("m" * 500000, 12)), -32601, "Method not found", 12)

    # Content-Type is not checked: the body is JSON-RPC whatever the header says.
    check(expect_result, "Content-Type text/plain", post(port, req("health", 6), b"text/plain"), 6)
    check(expect_result, "no Content-Type", post(port, req("health", 7), None), 7)
    mp = (b"--XyZ\r\nContent-Disposition: form-data; name=\"r\"\r\n\r\n" + req("health", 8) +
          b"\r\n--XyZ--\r\n")
    check(expect_error, "a multipart/form-data body",
          post(port, mp, b"multipart/form-data; boundary=XyZ"), *PARSE)
    check(expect_error, "a form-urlencoded body",
          post(port, b"method=status&id=1", b"application/x-www-form-urlencoded"), *PARSE)

    # Wrong HTTP methods and paths: nng answers 405 / 404.
    for m in [b"GET", b"PUT", b"DELETE", b"PATCH", b"OPTIONS", b"HEAD", b"BREW"]:
        check(expect_status, "%s /" % m.decode(),
              exchange(port, m + b" / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"), 405)
    check(expect_status, "POST /health", post(port, req("health"), path=b"/health"), 405)
    check(expect_status, "POST /nope", post(port, req("health"), path=b"/nope"), 404)
    check(expect_status, "GET /nope", exchange(port, b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"),
          404)
    check(expect_status, "HTTP/1.1 without Host",
          exchange(port, b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\n[]"), 400)
    check(expect_status, "HTTP/2 preface",
          exchange(port, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 505, True)

    # Chunked and other transfer-encodings, and no length at all: 411, connection closed.
    body = req("health", 9)
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    check(expect_status, "Transfer-Encoding: chunked",
          exchange(port, b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" +
                   chunked), 411, True)
    check(expect_status, "chunked and a Content-Length",
          exchange(port, b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                   b"Content-Length: %d\r\n\r\n" % len(chunked) + chunked), 411, True)
    check(expect_status, "Transfer-Encoding: gzip, chunked",
          exchange(port, b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n"
                   b"\r\n" + chunked), 411, True)
    check(expect_status, "no Content-Length",
          exchange(port, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\r\n" +
                   body), 411, True)

    # Garbage gets no answer (nng closes), and must not hurt anything.
    for g in [b"\x00\xff\xfe garbage\r\n\r\n", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
              b"POST / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 20000 + b"\r\n\r\n"]:
        n += 1
        r = exchange(port, g, timeout=10)
        if r.status is not None and r.status not in (400, 431):
            fail("garbage %r: want no answer or 400, got %r" % (g[:20], r))

    # Pipelined requests on one kept connection, one of them broken: answered in order.
    s = connect(port, 30)
    try:
        bodies = [req("health", 10), b"[", req("health", 11)]
        s.sendall(b"".join(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" %
                           (len(b), b) for b in bodies))
        dl = time.monotonic() + 30
        carry = [b""]
        n += 3
        expect_result("pipelined 1/3", read_answer(s, dl, carry), 10)
        expect_error("pipelined 2/3 (broken)", read_answer(s, dl, carry), *PARSE)
        expect_result("pipelined 3/3", read_answer(s, dl, carry), 11)
    finally:
        s.close()
    return n


def batch_loop(port, a, stop, counts):
    """The largest allowed batch again and again, and one over it."""
    methods = ["status", "genesis", "validators", "consensus_state", "net_info", "block",
               "num_unconfirmed_txs", "health"]
    big = ("[" + ",".join(
        '{"jsonrpc":"2.0","id":%d,"method":"%s"}' % (i, methods[i % len(methods)])
        for i in range(a.max_batch)) + "]").encode()
    over = ("[" + ",".join('{"jsonrpc":"2.0","id":%d,"method":"health"}' % i
                           for i in range(a.max_batch + 1)) + "]").encode()
    while not stop.is_set():
        r = post(port, big)
        if not expect_status("a batch of max_batch", r, 200):
            continue
        j = r.json()
        if (not isinstance(j, list) or len(j) != a.max_batch or
                any("result" not in e or e.get("id") != i for i, e in enumerate(j))):
            fail("a batch of max_batch=%d: want %d results in order, got %r" %
                 (a.max_batch, a.max_batch, r))
        with flock:
            counts["batches"] += 1
        expect_error("a batch of max_batch + 1", post(port, over), -32600,
                     "Invalid Request: batch too large")
        with flock:
            counts["batches_over"] += 1


# --- the well-behaved client and the monitor -------------------------------------------------


class Good(threading.Thread):
    """Asks status every 50 ms on a fresh connection (http.client), as an ordinary client
    would."""

    def __init__(self, port, timeout):
        super().__init__(daemon=True)
        self.port, self.timeout = port, timeout
        self.stop = threading.Event()
        self.lat = []  # (t_start, seconds)
        self.heights = []  # (t, height)
        self.errors = 0
        self.calls = 0

    def run(self):
        body = req("status", "good")
        while not self.stop.is_set():
            t = time.monotonic()
            err = None
            c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout,
                                           source_address=(SRC, 0) if SRC else None)
            try:
                c.request("POST", "/", body, {"Content-Type": "application/json"})
                r = c.getresponse()
                if r.status != 200:
                    raise ValueError("HTTP %d" % r.status)
                h = int(json.loads(r.read())["result"]["latest_height"])
            except (OSError, ValueError, KeyError, TypeError, http.client.HTTPException) as e:
                err = e
            finally:
                c.close()
            dt = time.monotonic() - t
            self.calls += 1
            if err is not None:
                self.errors += 1
                fail("the good client got no answer to status after %.2f s: %s" % (dt, err))
            else:
                self.lat.append((t, dt))
                self.heights.append((time.monotonic(), h))
            self.stop.wait(0.05)  # pacing, not synchronisation

    def height(self):
        return self.heights[-1][1] if self.heights else -1

    def window(self, t0, t1):
        return sorted(d for (t, d) in self.lat if t0 <= t < t1)


def pct(xs, p):
    if not xs:
        return 0.0
    return xs[min(len(xs) - 1, int(len(xs) * p))]


def proc_status(pid):
    out = {}
    try:
        with open("/proc/%d/status" % pid) as f:
            for ln in f:
                k, _, v = ln.partition(":")
                if k in ("VmRSS", "VmHWM"):
                    out[k] = int(v.split()[0]) // 1024  # MiB
    except OSError:
        return None
    return out


def nofile(pid):
    """The soft limit on open files of process pid (-1 if unknown)."""
    try:
        with open("/proc/%d/limits" % pid) as f:
            for ln in f:
                if ln.startswith("Max open files"):
                    v = ln.split()[3]
                    return -1 if v == "unlimited" else int(v)
    except (OSError, IndexError, ValueError):
        pass
    return -1


def nfds(pid):
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return -1


class Monitor(threading.Thread):
    """Samples the node's RSS and open file descriptors every 100 ms."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid = pid
        self.stop = threading.Event()
        self.rss_peak = 0
        self.fds_peak = 0
        self.dead = False

    def run(self):
        while not self.stop.is_set():
            st = proc_status(self.pid)
            if st is None:
                self.dead = True
                fail("the node (pid %d) is gone" % self.pid)
                return
            self.rss_peak = max(self.rss_peak, st.get("VmRSS", 0))
            self.fds_peak = max(self.fds_peak, nfds(self.pid))
            self.stop.wait(0.1)


# --- held connections ----------------------------------------------------------------------


class Crowd(threading.Thread):
    """Holds many connections: 'hdr' trickle headers, 'body' trickle a body, 'big' send all
    of a max_body_bytes body but its last byte (so the node buffers it) and stall, 'idle'
    send nothing. Every second each trickler sends one more byte. A 'body' or 'big' that is
    answered must get 408 with Connection: close; while refill is set, each 'body' answered
    is replaced (once a second)."""

    def __init__(self, port, max_body):
        super().__init__(daemon=True)
        self.port, self.max_body = port, max_body
        self.sel = selectors.DefaultSelector()
        self.lock = threading.Lock()
        self.socks = {}  # fd -> [sock, kind, opened_at, bytes_sent, rx]
        self.stop = threading.Event()
        self.refill = threading.Event()
        self.answered = {"hdr": 0, "body": 0, "big": 0, "idle": 0}
        self.unanswered_close = {"hdr": 0, "body": 0, "big": 0, "idle": 0}
        self.body_times = []  # seconds from headers sent to the 408
        self.connect_errors = 0

    def open(self, kind):
        try:
            s = connect(self.port, 5)
        except OSError as e:
            self.connect_errors += 1
            if self.connect_errors <= 3:
                fail("cannot open held connection: %s" % e)
            return False
        try:
            if kind in ("body", "big"):
                s.sendall(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
                          b"\r\nContent-Length: %d\r\n\r\n[" % self.max_body)
                if kind == "big":
                    s.sendall(b" " * (self.max_body - 2))
            elif kind == "hdr":
                s.sendall(b"POST / HTTP/1.1\r\nH")
        except OSError:
            s.close()
            return False
        s.setblocking(False)
        with self.lock:
            self.socks[s.fileno()] = [s, kind, time.monotonic(), 0, b""]
            self.sel.register(s, selectors.EVENT_READ)
        return True

    def count(self, kind=None):
        with self.lock:
            return sum(1 for v in self.socks.values() if kind is None or v[1] == kind)

    def drop(self, fd):
        v = self.socks.pop(fd, None)
        if v is not None:
            try:
                self.sel.unregister(v[0])
            except (KeyError, ValueError):
                pass
            v[0].close()
        return v

    def answered_with(self, v, closed):
        kind, rx = v[1], v[4]
        if b"\r\n\r\n" in rx or (closed and rx):
            self.answered[kind] += 1
            status, headers = parse_head(rx.partition(b"\r\n\r\n")[0])
            if kind in ("body", "big"):
                if status != 408 or headers.get("connection", "").lower() != "close":
                    fail("a slow body was answered %r, want 408 and Connection: close" % rx[:120])
                self.body_times.append(time.monotonic() - v[2])
            else:
                fail("a held %s connection was answered %r" % (kind, rx[:120]))
            return True
        if closed:
            self.unanswered_close[kind] += 1
            return True
        return False

    def run(self):
        next_tick = time.monotonic()
        hdr = b"X-Slow: " + b"a" * 4000  # stays below nng's 8 KiB header buffer
        refill = 0
        while not self.stop.is_set():
            ready = self.sel.select(timeout=0.05)
            with self.lock:
                for key, _ in ready:
                    v = self.socks.get(key.fd)
                    if v is None:
                        continue
                    try:
                        d = v[0].recv(4096)
                    except BlockingIOError:
                        continue
                    except OSError:
                        d = b""
                    v[4] += d
                    if self.answered_with(v, not d) or not d:
                        self.drop(key.fd)
                        refill += v[1] == "body" and self.refill.is_set()
            now = time.monotonic()
            if now < next_tick:
                continue
            next_tick = now + 1.0
            # Replacements are opened once a second: a client reconnecting at once would
            # evict another slow body, which would reconnect at once, and so on, flat out.
            for _ in range(refill if self.refill.is_set() else 0):
                self.open("body")
            refill = 0
            with self.lock:
                items = list(self.socks.items())
            for fd, v in items:
                if v[1] in ("idle", "big"):
                    continue
                b = hdr[v[3] % len(hdr):][:1] if v[1] == "hdr" else b" "
                try:
                    v[0].send(b)
                    v[3] += 1
                except BlockingIOError:
                    pass
                except OSError:
                    pass  # reset: the selector sees it

    def close_all(self):
        with self.lock:
            for fd in list(self.socks):
                self.drop(fd)


# --- main ----------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, required=True, help="the abused node's JSON-RPC port")
    ap.add_argument("--pid", type=int, required=True, help="the abused node's pid")
    ap.add_argument("--max-body", type=int, required=True, help="its rpc.max_body_bytes")
    ap.add_argument("--max-batch", type=int, required=True, help="its rpc.max_batch")
    ap.add_argument("--max-conns", type=int, required=True, help="its rpc.max_connections")
    ap.add_argument("--body-timeout-ms", type=int, required=True, help="its rpc.body_timeout_ms")
    ap.add_argument("--hold", type=int, default=3000, help="connections opened and held")
    ap.add_argument("--flood-s", type=float, default=15, help="least time the flood lasts")
    ap.add_argument("--min-blocks", type=int, default=3, help="blocks to commit during it")
    ap.add_argument("--rss-mib", type=int, default=512, help="bound on the node's VmHWM")
    ap.add_argument("--p99-ms", type=float, default=3000, help="bound on good-client p99")
    ap.add_argument("--good-timeout-s", type=float, default=10, help="good-client deadline")
    ap.add_argument("--deadline-s", type=float, default=240, help="give up after this long")
    a = ap.parse_args()
    port = a.port
    global SRC
    SRC = "127.0.0.2"
    try:
        connect(port, 10).close()
    except OSError as e:
        log("cannot connect from 127.0.0.2 (%s): using the default source address" % e)
        SRC = None
    summary = {"client_source": SRC, "max_connections": a.max_conns, "max_body_bytes": a.max_body,
               "max_batch": a.max_batch, "body_timeout_ms": a.body_timeout_ms}

    def give_up():
        fail("still running after %.0f s: giving up" % a.deadline_s)
        print(json.dumps(summary), flush=True)
        os._exit(1)

    watchdog = threading.Timer(a.deadline_s, give_up)
    watchdog.daemon = True
    watchdog.start()
    fds0 = nfds(a.pid)
    summary["node_nofile_limit"] = nofile(a.pid)
    mon = Monitor(a.pid)
    mon.start()
    good = Good(port, a.good_timeout_s)
    good.start()
    if not wait_until("the good client's first answer", 30, lambda: good.heights):
        return finish(summary, mon, good)
    t_start = time.monotonic()

    # 1. A few slow bodies alone (no competition for body slots): each is answered 408 once
    # rpc.body_timeout_ms has passed since its headers, not before.
    log("phase 1: 4 slow bodies alone (rpc.body_timeout_ms=%d)" % a.body_timeout_ms)
    crowd = Crowd(port, a.max_body)
    crowd.start()
    for _ in range(4):
        crowd.open("body")
    tmo = a.body_timeout_ms / 1000
    wait_until("4 slow bodies to be answered 408", tmo + 20,
               lambda: crowd.answered["body"] + crowd.unanswered_close["body"] >= 4)
    early = [t for t in crowd.body_times if t < tmo * 0.9]
    late = [t for t in crowd.body_times if t > tmo + 10]
    if crowd.answered["body"] != 4 or early or late:
        fail("slow bodies alone: want 4 answered 408 between %.1f and %.1f s, got %d answered "
             "after %s s, %d closed without an answer" %
             (tmo * 0.9, tmo + 10, crowd.answered["body"],
              ["%.2f" % t for t in crowd.body_times], crowd.unanswered_close["body"]))
    summary["slow_body_alone_s"] = [round(t, 2) for t in crowd.body_times]
    crowd.body_times.clear()
    crowd.answered["body"] = 0

    # 2. The flood.
    n_body = a.max_conns + max(64, a.max_conns // 4)
    n_big = a.max_conns // 2
    n_hdr = max(0, (a.hold - n_body - n_big) // 2)
    n_idle = max(0, a.hold - n_body - n_big - n_hdr)
    log("phase 2: holding %d connections (%d trickling bodies, %d stalled 1 byte short of "
        "max_body_bytes, %d trickling headers, %d idle; rpc.max_connections=%d), with batches "
        "and malformed requests" % (a.hold, n_body, n_big, n_hdr, n_idle, a.max_conns))
    h_flood0 = good.height()
    t_flood = time.monotonic()
    crowd.refill.set()
    for kind, k in (("body", n_body), ("big", n_big), ("hdr", n_hdr), ("idle", n_idle)):
        for _ in range(k):
            if crowd.connect_errors >= 3:
                break  # the node stopped accepting: failed already, do not wait 5 s each
            crowd.open(kind)
    t_opened = time.monotonic()
    summary["open_s"] = round(t_opened - t_flood, 2)
    summary["held_by_client"] = crowd.count()
    # The node accepted them all: its descriptor count covers the held connections.
    accepted = crowd.connect_errors < 3 and wait_until(
        "the node to accept the held connections", 30,
        lambda: nfds(a.pid) >= fds0 + crowd.count() * 9 // 10)
    summary["node_fds_during"] = nfds(a.pid)
    if not accepted:
        fail("the node stopped accepting at %d descriptors (limit %d), %d connections held" %
             (summary["node_fds_during"], nofile(a.pid), crowd.count()))
        crowd.stop.set()
        crowd.close_all()
        return finish(summary, mon, good)
    log("holding %d connections; node fds %d (before: %d), opened in %.1f s" %
        (crowd.count(), summary["node_fds_during"], fds0, summary["open_s"]))

    # From other threads, throughout the flood: the largest batch (two threads), and every
    # malformed request, round after round.
    stop_batches = threading.Event()
    counts = {"batches": 0, "batches_over": 0, "malformed": 0, "malformed_rounds": 0}

    def malformed_loop():
        while True:  # at least one round, then again until the flood ends
            k = abuse_payloads(port, a)
            with flock:
                counts["malformed"] += k
                counts["malformed_rounds"] += 1
            if stop_batches.is_set():
                return

    bth = [threading.Thread(target=batch_loop, args=(port, a, stop_batches, counts), daemon=True)
           for _ in range(2)] + [threading.Thread(target=malformed_loop, daemon=True)]
    for t in bth:
        t.start()
    t_batches = time.monotonic()

    def flood_done():
        # Keep the flood on until it has lasted --flood-s, the network committed --min-blocks,
        # and the batch threads had their own 5 s with the connections held: on a slow machine
        # opening the crowd can take all of --flood-s (issue 11: 2 batches in 0.2 s under ASan).
        now = time.monotonic()
        with flock:
            nb = counts["batches"]
        return (good.height() >= h_flood0 + a.min_blocks and now >= t_flood + a.flood_s and
                now >= t_batches + 5 and nb >= 5)

    wait_until("%d blocks and 5 max batches during the flood" % a.min_blocks, a.flood_s + 60,
               flood_done)
    stop_batches.set()
    for t in bth:
        t.join(60)
    crowd.refill.clear()
    t_flood_end = time.monotonic()
    h_flood1 = good.height()
    summary["flood_s"] = round(t_flood_end - t_flood, 1)
    summary["heights_during_flood"] = [h_flood0, h_flood1]
    summary["max_batches"] = counts["batches"]
    summary["malformed_requests"] = counts["malformed"]
    summary["malformed_rounds"] = counts["malformed_rounds"]
    summary["held_at_end"] = crowd.count()
    summary["slow_bodies_answered_408"] = crowd.answered["body"]
    summary["slow_bodies_closed_unanswered"] = crowd.unanswered_close["body"]
    summary["stalled_big_bodies_answered_408"] = crowd.answered["big"]
    summary["held_hdr_idle_closed_by_node"] = (crowd.unanswered_close["hdr"] +
                                               crowd.unanswered_close["idle"])
    if counts["batches"] < 5:
        fail("only %d max-size batches were answered during the flood" % counts["batches"])
    if crowd.answered["body"] < n_body - a.max_conns:
        fail("%d slow bodies over rpc.max_connections, but only %d were answered 408" %
             (n_body - a.max_conns, crowd.answered["body"]))
    if crowd.answered["big"] != n_big:
        fail("%d bodies stalled 1 byte short of max_body_bytes, %d answered 408 (%d closed "
             "without an answer)" % (n_big, crowd.answered["big"], crowd.unanswered_close["big"]))
    if crowd.connect_errors:
        fail("%d held connections could not be opened" % crowd.connect_errors)
    lat = good.window(t_flood, t_flood_end)
    summary["good_calls_during_flood"] = len(lat)
    summary["good_p50_ms"] = round(pct(lat, 0.5) * 1000, 1)
    summary["good_p99_ms"] = round(pct(lat, 0.99) * 1000, 1)
    summary["good_max_ms"] = round((lat[-1] if lat else 0) * 1000, 1)
    log("flood over after %.1f s: heights %d -> %d, good client p50 %.1f ms p99 %.1f ms max "
        "%.1f ms over %d calls, %d max batches, %d malformed requests, %d slow bodies "
        "answered 408" %
        (summary["flood_s"], h_flood0, h_flood1, summary["good_p50_ms"], summary["good_p99_ms"],
         summary["good_max_ms"], len(lat), counts["batches"], counts["malformed"],
         crowd.answered["body"]))
    if len(lat) < 20:
        fail("the good client got only %d answers during the flood" % len(lat))
    if summary["good_p99_ms"] > a.p99_ms:
        fail("good-client p99 latency %.0f ms during the flood, bound %.0f ms" %
             (summary["good_p99_ms"], a.p99_ms))

    # 3. Release everything; the node lets go of the connections and is still alive.
    crowd.stop.set()
    crowd.join(10)
    crowd.close_all()
    wait_until("the node to close the released connections", 30,
               lambda: 0 <= nfds(a.pid) <= fds0 + 20)
    summary["node_fds_after"] = nfds(a.pid)
    r = exchange(port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    expect_status("GET /health after the abuse", r, 200)
    expect_result("status after the abuse", post(port, req("status", "end")), "end")
    summary["total_s"] = round(time.monotonic() - t_start, 1)
    return finish(summary, mon, good, a.rss_mib)


def finish(summary, mon, good, rss_mib=None):
    good.stop.set()
    good.join(30)
    mon.stop.set()
    mon.join(5)
    st = proc_status(mon.pid)
    if st is None:
        fail("the node (pid %d) is not alive at the end" % mon.pid)
    else:
        summary["rss_peak_mib"] = max(mon.rss_peak, st.get("VmRSS", 0))
        summary["vmhwm_mib"] = st.get("VmHWM", 0)
        if rss_mib is not None and summary["vmhwm_mib"] > rss_mib:
            fail("the node's VmHWM is %d MiB, bound %d MiB" % (summary["vmhwm_mib"], rss_mib))
    summary["node_fds_peak"] = mon.fds_peak
    lat = sorted(d for (_, d) in good.lat)
    summary["good_calls"] = good.calls
    summary["good_errors"] = good.errors
    summary["good_p99_ms_all"] = round(pct(lat, 0.99) * 1000, 1)
    summary["failures"] = len(failures)
    print(json.dumps(summary), flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
