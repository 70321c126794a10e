#!/usr/bin/python3
"""Checks scripts/viewchange_report.py on synthetic runs (standard library only).

Each case writes a series CSV, per-node event logs and a digests CSV into a temp dir, runs the
script with --no-plot and compares the summary JSON (last stdout line) with values worked out by
hand. Prints one FAIL line per mismatch; exits 0 when everything matches, 1 otherwise.
"""
import csv
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "..", "..", "scripts", "viewchange_report.py")
T0 = 1_700_000_000_000  # load start (unix ms)
F = T0 + 8000           # the fault: second 8 starts exactly at F, seconds 0..7 lie before it
failures = []


def check(case, key, got, want):
    if isinstance(want, float) and isinstance(got, (int, float)):
        ok = abs(got - want) < 1e-6
    else:
        ok = got == want
    if not ok:
        failures.append(f"FAIL {case}: {key} = {got!r}, expected {want!r}")


def write_series(path, per_node):
    """per_node: {node: [(txs, lat_mean, lat_p99), ...]}, one entry per second from 0."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["second", "unix_ms", "node", "txs", "lat_mean_ms", "lat_p99_ms"])
        for node, secs in sorted(per_node.items()):
            for s, (txs, mean, p99) in enumerate(secs):
                w.writerow([s, T0 + 1000 * s, node, txs, "" if mean is None else mean,
                            "" if p99 is None else p99])


def steady(pattern, lat):
    """Seconds with the given tx counts; latency (mean, p99) only where txs > 0."""
    return [(t, *lat) if t else (0, None, None) for t in pattern]


def write_events(path, events, extra_lines=()):
    with open(path, "w") as f:
        for e in events:
            f.write(json.dumps(e) + "\n")
        for line in extra_lines:
            f.write(line + "\n")


def ev(dt, node, event, **kw):
    """An event dt ms after the fault."""
    return dict(ts_ms=F + dt, node=node, event=event, **kw)


def write_digests(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["node", "height", "digest"])
        w.writerows(rows)


def run(tmp, fault, n, honest, event_files):
    cmd = [sys.executable, SCRIPT, "--fault", fault, "--n", str(n), "--fault-ms", str(F),
           "--series", os.path.join(tmp, "series.csv"), "--honest", ",".join(map(str, honest)),
           "--digests", os.path.join(tmp, "digests.csv"),
           "--out-csv", os.path.join(tmp, "out.csv"), "--out-png", os.path.join(tmp, "out.png"),
           "--no-plot"]
    for name in event_files:
        cmd += ["--events", os.path.join(tmp, name)]
    return subprocess.run(cmd, capture_output=True, text=True)


def summary_of(case, proc):
    if proc.returncode != 0:
        failures.append(f"FAIL {case}: exit {proc.returncode}: {proc.stderr.strip()}")
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def case_crash(tmp):
    """Primary 0 crashes at F: 3 s with no commits, one at half rate, then back to 100 tx/s."""
    case = "crash"
    pre = [10, 10] + [100] * 6         # 2 warm-up seconds (excluded), then P = 100
    post = [0, 0, 0, 50] + [100] * 8   # seconds 8..19
    lagging = [t - 10 if t else 0 for t in pre + post]  # node 3: the median ignores it
    write_series(os.path.join(tmp, "series.csv"), {
        0: steady([100] * 8 + [0] * 12, (20, 40)),  # the crashed primary: not honest, ignored
        1: steady(pre, (20, 40)) + steady(post, (200, 500)),
        2: steady(pre, (20, 50)) + steady(post, (200, 700)),
        3: steady(lagging, (20, 60)),
    })
    # Worst p99 per node: before 40, 50, 60 -> median 50; after 500, 700, 60 -> median 500.
    start = [dict(ts_ms=T0 + 50, node=i, event="node_start", view=0, height=0) for i in range(4)]
    write_events(os.path.join(tmp, "node1.jsonl"), [
        start[1],
        dict(ts_ms=T0 + 100, node=1, event="view_change_start", view=0, reason="joined"),  # < F
        ev(2000, 1, "view_change_start", view=1, reason="request_timeout"),
        ev(2300, 1, "new_view_sent", view=1),
        ev(2950, 1, "first_commit_in_view", view=1, height=41),
    ], extra_lines=["{not json", '{"ts_ms": 1}', ""])
    write_events(os.path.join(tmp, "node2.jsonl"), [
        start[2],
        ev(2100, 2, "view_change_start", view=1, reason="request_timeout"),
        ev(2400, 2, "new_view_accepted", view=1),
        ev(2900, 2, "first_commit_in_view", view=1, height=41),
        ev(500, 0, "view_change_start", view=1, reason="bogus"),  # a faulty node's: ignored
    ])
    write_events(os.path.join(tmp, "node3.jsonl"), [
        start[3],
        ev(1500, 3, "complaint_sent", view=0, reason="slow_primary"),
        ev(2600, 3, "new_view_accepted", view=1),
    ])
    digests = [(n, h, f"{h:02x}" * 32) for n in (1, 2, 3) for h in range(1, 6)]
    digests.remove((3, 5, "05" * 32))  # height 5 only at nodes 1 and 2: still compared
    digests.append((0, 3, "ff" * 32))  # the crashed node differs: not honest, ignored
    write_digests(os.path.join(tmp, "digests.csv"), digests)
    logs = ["node0.jsonl", "node1.jsonl", "node2.jsonl", "node3.jsonl"]  # node0.jsonl missing
    proc = run(tmp, "crash", 4, [1, 2, 3], logs)
    s = summary_of(case, proc)
    if s is None:
        return
    if "node0.jsonl" not in proc.stderr:
        failures.append(f"FAIL {case}: no note on stderr about the missing node0.jsonl")
    want = {
        "fault": "crash", "n": 4, "honest": [1, 2, 3],
        "detect_s": 1.5,                      # node 3's complaint
        "view_change_s": 0.6,                 # first view_change_start +2.0 .. node 3 in at +2.6
        "views_changed": 1, "final_view": 1,
        "first_commit_after_timeout_s": 0.9,  # +2.0 .. node 2's first commit at +2.9
        "pre_fault_tx_per_s": 100.0,
        "dip_depth": 1.0, "dip_width_s": 4,   # seconds 8, 9, 10 (0 tx/s) and 11 (50 tx/s)
        "recover_90_s": 4.0,                  # second 12
        "recover_after_new_view_s": 1.4,      # 4.0 - 2.6
        "throughput_ratio": 0.708, "fault_tx_per_s": 70.833,  # (50 + 8 * 100) / 12
        "latency_p99_ms_pre": 50.0, "latency_p99_ms_fault": 500.0,
        "safety": "ok", "heights_checked": 5, "safety_detail": None,
        "events": {"complaint_sent": 1, "first_commit_in_view": 2, "new_view_accepted": 2,
                   "new_view_sent": 1, "view_change_start": 2},
    }
    check(case, "key order", list(s), list(want))
    for k, v in want.items():
        check(case, k, s.get(k), v)
    with open(os.path.join(tmp, "out.csv")) as f:
        rows = list(csv.reader(f))
    check(case, "csv header", rows[0], ["second", "unix_ms", "t_rel_s", "throughput_tx_per_s",
                                        "lat_mean_ms", "lat_p99_ms",
                                        "node1_txs", "node2_txs", "node3_txs"])
    check(case, "csv rows", len(rows), 21)
    check(case, "csv second 0", rows[1], ["0", str(T0), "-8", "10", "20", "45", "10", "10", "0"])
    check(case, "csv second 8", rows[9], ["8", str(F), "0", "0", "", "", "0", "0", "0"])


def case_backup(tmp, case, digests):
    """Backup 3 fails: throughput sags to 95 % (never below 0.9 P), no view change."""
    write_series(os.path.join(tmp, "series.csv"), {
        n: steady([100] * 8 + [95] * 6 + [100] * 6, (20, 30 + n)) for n in range(4)})
    write_events(os.path.join(tmp, "node0.jsonl"), [ev(300, 0, "peer_disconnected", peer=3)])
    write_events(os.path.join(tmp, "node1.jsonl"), [])
    write_events(os.path.join(tmp, "node3.jsonl"),
                 [ev(100, 3, "byzantine_action", mode="equivocate", actions=5)])  # ignored
    write_digests(os.path.join(tmp, "digests.csv"), digests)
    proc = run(tmp, "backup", 4, [0, 1, 2], ["node0.jsonl", "node1.jsonl", "node3.jsonl"])
    s = summary_of(case, proc)
    if s is None:
        return None
    want = {"detect_s": None, "view_change_s": None, "views_changed": 0, "final_view": None,
            "first_commit_after_timeout_s": None, "pre_fault_tx_per_s": 100.0,
            "dip_depth": 0.05, "dip_width_s": 0, "recover_90_s": 0.0,
            "recover_after_new_view_s": None, "throughput_ratio": 0.975, "fault_tx_per_s": 97.5,
            "latency_p99_ms_pre": 31.0, "latency_p99_ms_fault": 31.0,
            "events": {"peer_disconnected": 1}}
    for k, v in want.items():
        check(case, k, s.get(k), v)
    return s


def case_errors(tmp):
    """A missing series file and a bad --honest list: one-line error, exit 2, empty stdout."""
    write_digests(os.path.join(tmp, "digests.csv"), [])
    for case, honest in (("missing series", [0, 1, 2]), ("bad --honest", [0, 1, 7])):
        proc = run(tmp, "crash", 4, honest, ["node0.jsonl"])
        check(case, "exit", proc.returncode, 2)
        check(case, "stderr lines", len(proc.stderr.strip().splitlines()), 1)
        check(case, "stdout", proc.stdout, "")


def main():
    digest = {h: f"{h:02x}" * 32 for h in range(1, 5)}
    with tempfile.TemporaryDirectory() as tmp:
        case_crash(tmp)
    with tempfile.TemporaryDirectory() as tmp:
        s = case_backup(tmp, "backup", [(n, h, digest[h]) for n in range(4) for h in range(1, 5)])
        if s:
            check("backup", "safety", s["safety"], "ok")
            check("backup", "heights_checked", s["heights_checked"], 4)
            check("backup", "safety_detail", s["safety_detail"], None)
    with tempfile.TemporaryDirectory() as tmp:
        # Node 2 committed another block at height 3; faulty node 3 differs at 2 (ignored).
        forks = {(2, 3), (3, 2)}
        s = case_backup(tmp, "safety", [(n, h, "ee" * 32 if (n, h) in forks else digest[h])
                                        for n in range(4) for h in range(1, 5)])
        if s:
            check("safety", "safety", s["safety"], "violated")
            check("safety", "heights_checked", s["heights_checked"], 4)
            detail = s["safety_detail"] or ""
            if not (detail.startswith("height 3:") and "0,1=" in detail and "2=" in detail):
                failures.append(f"FAIL safety: safety_detail {detail!r} should name height 3 "
                                "and nodes 0,1 against node 2")
    with tempfile.TemporaryDirectory() as tmp:
        case_errors(tmp)
    for line in failures:
        print(line)
    print("viewchange_report_test: " + (f"{len(failures)} failure(s)" if failures else "ok"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
