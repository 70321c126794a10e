#!/usr/bin/python3
"""Analyse one view-change scenario run: throughput dip and recovery, view-change timings, safety.

Inputs: the load generator's per-second series, one JSON-lines event log per node and the block
digests of the honest nodes (only the nodes in --honest count). Writes a per-second CSV, a PNG
(unless --no-plot; needs python3-matplotlib) and prints ONE compact JSON summary as the last line
of stdout; notes go to stderr. Bad input: one line on stderr, exit 2.
"""
import argparse
import collections
import csv
import importlib.util
import json
import math
import statistics
import sys

SERIES_HEADER = ["second", "unix_ms", "node", "txs", "lat_mean_ms", "lat_p99_ms"]
VIEW_ENTERED = ("new_view_sent", "new_view_accepted")
DETECTED = ("view_change_start", "complaint_sent")


class InputError(Exception):
    """A bad or missing input: one line on stderr, exit status 2."""


def note(msg):
    print(f"viewchange_report: {msg}", file=sys.stderr)


def r3(x):
    return None if x is None else round(float(x), 3)


def num(text, where):
    """A finite CSV number, or None when the field is empty."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise InputError(f"{where}: not a number: {text!r}")
    return value


def read_csv(path, header):
    """[(row dict, line number)] of a CSV file whose header holds the expected columns."""
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            if not set(header) <= {c.strip() for c in reader.fieldnames or []}:
                raise InputError(f"{path}: expected header {','.join(header)}")
            return [({k.strip(): v for k, v in row.items() if k}, reader.line_num)
                    for row in reader]
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror}") from None
    except (UnicodeDecodeError, csv.Error) as e:
        raise InputError(f"{path}: not a readable CSV file ({e})") from None


def load_series(path, honest):
    """Per-second buckets sorted by second, with the honest medians (thr, lat_mean, lat_p99)."""
    by_second = {}
    for row, line in read_csv(path, SERIES_HEADER):
        where = f"{path}:{line}"
        second, unix_ms, node, txs, mean, p99 = (num(row.get(k), where) for k in SERIES_HEADER)
        if None in (second, unix_ms, node):
            raise InputError(f"{where}: second, unix_ms and node are required")
        if int(node) in honest:
            b = by_second.setdefault(int(second), {"second": int(second), "unix_ms": int(unix_ms),
                                                   "nodes": {}})
            b["unix_ms"] = min(b["unix_ms"], int(unix_ms))
            b["nodes"][int(node)] = (txs or 0.0, mean, p99)
    if not by_second:
        raise InputError(f"{path}: no rows for the honest nodes {sorted(honest)}")
    rows = [by_second[s] for s in sorted(by_second)]
    missing = sum(1 for b in rows for n in honest if n not in b["nodes"])
    if missing:
        note(f"{path}: {missing} (second, honest node) rows missing, counted as 0 txs")
    for b in rows:
        b["txs"] = {n: b["nodes"].get(n, (0.0,))[0] for n in honest}
        b["thr"] = statistics.median(b["txs"].values())
        for i, key in ((1, "lat_mean"), (2, "lat_p99")):
            vals = [v[i] for v in b["nodes"].values() if v[i] is not None]
            b[key] = statistics.median(vals) if vals else None
    return rows


def load_events(paths, honest):
    """Honest events of the JSON-lines logs, sorted by time; missing files, bad lines skipped."""
    events = []
    for path in paths:
        try:
            with open(path, errors="replace") as f:  # undecodable bytes fail as bad lines
                lines = [t for t in f if t.strip()]
        except OSError as e:
            note(f"skipping event log {path}: {e.strerror}")
            continue
        bad = 0
        for text in lines:
            try:
                e = json.loads(text)
                e["ts_ms"], e["node"] = float(e["ts_ms"]), int(e["node"])
                if not isinstance(e["event"], str) or not math.isfinite(e["ts_ms"]):
                    raise ValueError
            except (ValueError, TypeError, KeyError, OverflowError):
                bad += 1
                continue
            if e["node"] in honest:
                events.append(e)
        if bad:
            note(f"{path}: skipped {bad} unparsable line(s)")
    return sorted(events, key=lambda e: e["ts_ms"])


def load_digests(path, honest):
    """{height: {node: digest}} for the honest nodes."""
    out = {}
    for row, line in read_csv(path, ["node", "height", "digest"]):
        where = f"{path}:{line}"
        node, height = num(row.get("node"), where), num(row.get("height"), where)
        digest = (row.get("digest") or "").strip().lower()
        if node is None or height is None or not digest:
            raise InputError(f"{where}: node, height and digest are required")
        if int(node) in honest:
            if out.setdefault(int(height), {}).setdefault(int(node), digest) != digest:
                note(f"{where}: node {int(node)} has two digests at one height; kept the first")
    return out


def view_of(e):
    v = e.get("view")
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def worst_p99(window, honest):
    """Median over honest nodes of each node's worst p99 latency in the window."""
    peaks = []
    for n in honest:
        vals = [b["nodes"][n][2] for b in window if b["nodes"].get(n, (0, 0, None))[2] is not None]
        if vals:
            peaks.append(max(vals))
    return statistics.median(peaks) if peaks else None


def check_safety(digests):
    """(heights held by two or more honest nodes, None or where they first disagree)."""
    shared = [h for h in sorted(digests) if len(digests[h]) >= 2]
    for h in shared:
        groups = collections.defaultdict(list)  # digest -> the nodes that committed it
        for node, d in sorted(digests[h].items()):
            groups[d].append(str(node))
        if len(groups) > 1:
            return len(shared), f"height {h}: " + " vs ".join(
                f"node(s) {','.join(ns)}={d[:12]}" for d, ns in groups.items())
    return len(shared), None


def summarise(args, rows, events, digests):
    """The summary dict, keys in the documented order; None where a figure is undefined."""
    F = args.fault_ms

    def secs(a, b):
        return None if a is None or b is None else (b - a) / 1000

    # Pre-fault level P: buckets entirely before F, less 2 warm-up seconds if 2 or more remain.
    pre = [b for b in rows if b["unix_ms"] + 1000 <= F]
    base = pre[2:] if len(pre) >= 4 else pre
    P = statistics.fmean(b["thr"] for b in base) if base else None
    post = [b for b in rows if b["unix_ms"] >= F]
    fault_mean = statistics.fmean(b["thr"] for b in post) if post else None
    usable = bool(P) and bool(post)  # P == 0 would make every ratio meaningless

    dip_depth = dip_width = recover = None
    if usable:
        thr = [b["thr"] for b in post]
        i_min = thr.index(min(thr))
        dip_depth = min(1.0, max(0.0, 1 - thr[i_min] / P))
        dip_width = sum(1 for t in thr if t < 0.9 * P)
        hit = next((b for b in post[i_min:] if b["thr"] >= 0.9 * P), None)
        if dip_width == 0:
            recover = 0.0  # never below 0.9 P
        elif hit is not None:  # else it never recovered: None
            recover = secs(F, hit["unix_ms"])

    # View change: honest events at or after the fault.
    after = [e for e in events if e["ts_ms"] >= F]
    t_detect = min((e["ts_ms"] for e in after if e["event"] in DETECTED), default=None)
    t_vc = min((e["ts_ms"] for e in after if e["event"] == "view_change_start"), default=None)
    entered = collections.defaultdict(dict)  # view -> node -> when it first entered that view
    for e in after:
        if e["event"] in VIEW_ENTERED and view_of(e) is not None:
            entered[view_of(e)].setdefault(e["node"], e["ts_ms"])
    final = max(entered) if entered else None
    t_done = max(entered[final].values()) if entered else None  # the last honest node is in
    t_commit = min((e["ts_ms"] for e in after if e["event"] == "first_commit_in_view"
                    and entered and view_of(e) == final), default=None)
    recover_nv = secs(t_done, None if recover is None else F + 1000 * recover)

    checked, detail = check_safety(digests)
    return {
        "fault": args.fault, "n": args.n, "honest": args.honest,
        "detect_s": r3(secs(F, t_detect)), "view_change_s": r3(secs(t_vc, t_done)),
        "views_changed": len(entered), "final_view": final,
        "first_commit_after_timeout_s": r3(secs(t_vc, t_commit)),
        "pre_fault_tx_per_s": r3(P), "dip_depth": r3(dip_depth), "dip_width_s": dip_width,
        "recover_90_s": r3(recover), "recover_after_new_view_s": r3(recover_nv),
        "throughput_ratio": r3(fault_mean / P if usable else None),
        "fault_tx_per_s": r3(fault_mean),
        "latency_p99_ms_pre": r3(worst_p99(base, args.honest)),
        "latency_p99_ms_fault": r3(worst_p99(post, args.honest)),
        "safety": "ok" if detail is None else "violated", "heights_checked": checked,
        "safety_detail": detail,
        "events": dict(sorted(collections.Counter(e["event"] for e in after).items())),
    }


def fmt(x):
    if x is None:
        return ""
    return str(int(x)) if float(x).is_integer() else str(round(x, 3))


def write_csv(path, rows, honest, F):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["second", "unix_ms", "t_rel_s", "throughput_tx_per_s", "lat_mean_ms",
                    "lat_p99_ms"] + [f"node{n}_txs" for n in honest])
        for b in rows:
            w.writerow([b["second"], b["unix_ms"], fmt((b["unix_ms"] - F) / 1000), fmt(b["thr"]),
                        fmt(b["lat_mean"]), fmt(b["lat_p99"])] + [fmt(b["txs"][n]) for n in honest])


def plot(path, args, rows, events, summary):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    F, P = args.fault_ms, summary["pre_fault_tx_per_s"]
    x = [(b["unix_ms"] - F) / 1000 for b in rows]
    end = x[-1] + 1

    def step(ax, ys, **kw):  # one flat segment per one-second bucket, the last one included
        ys = [math.nan if y is None else y for y in ys]
        ax.plot(x + [end], ys + ys[-1:], drawstyle="steps-post", **kw)

    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(10, 6))
    for n in args.honest:
        step(top, [b["txs"][n] for b in rows], lw=0.8, alpha=0.35, label=f"node {n}")
    step(top, [b["thr"] for b in rows], lw=2, color="black", label="median")
    if P:
        top.axhline(0.9 * P, ls="--", color="grey", lw=1, label="0.9 x pre-fault")
    top.set_ylabel("throughput (tx/s)")
    lat = {"mean": [b["lat_mean"] for b in rows], "p99": [b["lat_p99"] for b in rows]}
    for name, ys in lat.items():
        step(bottom, ys, label=f"latency {name}")
    positive = [y for ys in lat.values() for y in ys if y and y > 0]
    if positive and max(positive) / min(positive) > 50:
        bottom.set_yscale("log")
    bottom.set_ylabel("latency (ms)")
    bottom.set_xlabel("seconds relative to the fault")

    # Markers: the fault, the first view_change_start per view, the first entry into each view.
    starts, entered = {}, {}
    for e in events:
        t = (e["ts_ms"] - F) / 1000
        if x[0] <= t <= end and view_of(e) is not None:
            if e["event"] == "view_change_start":
                starts.setdefault(view_of(e), t)
            elif e["event"] in VIEW_ENTERED:
                entered.setdefault(view_of(e), t)
    for ax in (top, bottom):
        def label(text, i=0):  # each kind of marker enters the top legend once
            return text if ax is top and i == 0 else None
        ax.axvline(0, color="red", lw=1.5, label=label(f"fault: {args.fault}"))
        for i, t in enumerate(starts.values()):
            ax.axvline(t, color="orange", ls=":", label=label("view change start", i))
        for i, t in enumerate(entered.values()):
            ax.axvline(t, color="green", ls="--", label=label("view entered", i))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    labels = top.get_xaxis_transform()  # x in data, y in axes units
    top.text(0, 1.01, f"fault: {args.fault}", color="red", transform=labels, fontsize=8)
    for v, t in entered.items():
        top.text(t, 0.95, f" view {v}", color="green", transform=labels, fontsize=8, va="top")

    ratio, vc = summary["throughput_ratio"], summary["view_change_s"]
    fig.suptitle(f"PBFT n={args.n}, fault {args.fault}: throughput ratio "
                 f"{'n/a' if ratio is None else f'{ratio:.2f}'}, "
                 f"{'no view change' if vc is None else f'view change {vc:.2f} s'}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not argparse's usage block; still exit 2
        note(f"error: {message} (see --help)")
        sys.exit(2)


def parse_args(argv):
    p = Parser(description=__doc__.split("\n\n")[0])
    add = p.add_argument
    add("--fault", required=True, help="fault kind, a label (e.g. crash, backup)")
    add("--n", type=int, required=True, help="number of replicas")
    add("--fault-ms", type=int, required=True, help="unix time (ms) the fault was injected")
    add("--series", required=True, help="per-second CSV of the load generator")
    add("--events", action="append", required=True, help="a node's JSON-lines event log (repeat)")
    add("--honest", required=True, help="comma-separated honest replica ids, e.g. 0,1,2")
    add("--digests", required=True, help="CSV node,height,digest of the committed blocks")
    add("--out-csv", required=True, help="per-second output CSV")
    add("--out-png", required=True, help="output plot (not written with --no-plot)")
    add("--no-plot", action="store_true", help="skip the PNG; matplotlib is then not needed")
    add("--end-ms", type=int, default=None,
        help="unix time (ms) the load stopped sending: later (partial) seconds are left out "
             "of the figures, the CSV and the plot")
    add("--view-timeout-ms", type=int, default=2000,
        help="the nodes' view timeout (informational: no figure depends on it)")
    args = p.parse_args(argv)
    try:
        args.honest = sorted({int(s) for s in args.honest.split(",") if s.strip()})
    except ValueError:
        p.error(f"--honest: expected comma-separated integers, got {args.honest!r}")
    if args.n < 1 or not args.honest or not all(0 <= h < args.n for h in args.honest):
        p.error(f"--honest must list ids in 0..{args.n - 1}")
    return args


def main(argv):
    args = parse_args(argv)
    honest = set(args.honest)
    try:
        if not args.no_plot and importlib.util.find_spec("matplotlib") is None:  # fail early
            raise InputError("matplotlib missing: install python3-matplotlib or pass --no-plot")
        rows = load_series(args.series, honest)
        if args.end_ms is not None:
            # a second that ends after the offered load stopped is partial: it would look like
            # a dip that never recovers
            kept = [r for r in rows if r["unix_ms"] + 1000 <= args.end_ms]
            if not kept:
                raise InputError("--end-ms leaves no whole second of load")
            rows = kept
        events = load_events(args.events, honest)
        digests = load_digests(args.digests, honest)
        note(f"{len(rows)} seconds, {len(events)} honest events, {len(digests)} heights")
        summary = summarise(args, rows, events, digests)
        write_csv(args.out_csv, rows, args.honest, args.fault_ms)
        if not args.no_plot:
            plot(args.out_png, args, rows, events, summary)
    except InputError as e:
        note(f"error: {e}")
        return 2
    except OSError as e:
        note(f"error: cannot write {e.filename}: {e.strerror}")
        return 2
    print(json.dumps(summary, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
