#!/usr/bin/python3
"""qlat.py — latency of study-level `dicomfs find` queries on one archive.

    qlat.py --bin DICOMFS --archive A --queries Q.json --baseline-archive E [--runs N]
            [--mode auto|process|repeat] [--label L]

Q.json is a list of {"name", "params": ["Key=Value", ...], "expected": studies}.
Prints one JSON object: for each query its median and p95 (ms), how they were measured, the
number of studies returned (checked against "expected"), and the whole-process figures.

Two ways to time a query:

  repeat   `dicomfs find ARCHIVE --repeat N KEY=VALUE...` runs store_find() N times in one
           process and prints on stderr
               find: N runs, K results, median X us, p95 Y us
           (per-run lines `timing: <seconds>[ms|us|s]`, if a later version prints them, are
           used instead to compute median and p95 here). This is the query alone: no
           process start-up, the SQLite cache warm after the first run. Used as soon as
           `find --help` mentions --repeat (`--mode auto`, the default).

  process  Each run is a whole `dicomfs find` process, timed from here: start-up, opening
           the archive, a cold SQLite cache, the query and writing the JSON. The baseline
           is a trivial query (`find E StudyInstanceUID=1.2.3` on an empty archive);
           net = raw - median(baseline). Runs of all queries and the baseline are
           interleaved round-robin (after 2 warm-up runs each) so drift hits all alike.
           Always measured (what a user of the command sees); the primary figure only when
           --repeat is missing or --mode process.
"""
import argparse
import json
import math
import re
import statistics
import subprocess
import sys
import time

TIMING = re.compile(r"^(?:find:\s*)?timing[:=]\s*([0-9.]+(?:[eE][-+]?[0-9]+)?)\s*(ms|us|µs|s)?\s*$")


def p95(xs):
    s = sorted(xs)
    return s[max(0, math.ceil(0.95 * len(s)) - 1)]


def run_once(argv):
    t0 = time.perf_counter_ns()
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return (time.perf_counter_ns() - t0) / 1e6, r


def count_of(r):
    try:
        v = json.loads(r.stdout)
        return len(v) if isinstance(v, list) else None
    except ValueError:
        return None


def has_repeat(binary):
    r = subprocess.run([binary, "find", "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    text = r.stdout.decode("utf-8", "replace")
    return "--repeat" in text


SUMMARY = re.compile(r"(\d+) results, median ([0-9.]+) ?(us|µs|ms|s), p95 ([0-9.]+) ?(us|µs|ms|s)")
UNIT_MS = {"s": 1e3, "ms": 1.0, "us": 1e-3, "µs": 1e-3}


def repeat_times(binary, archive, params, runs):
    """(per-run ms list or None, (median, p95) or None, reported count, CompletedProcess)."""
    r = subprocess.run([binary, "find", archive, "--repeat", str(runs)] + params,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    times, summary, count = [], None, None
    for line in r.stderr.decode("utf-8", "replace").splitlines():
        m = TIMING.match(line.strip())
        if m:
            times.append(float(m.group(1)) * UNIT_MS[m.group(2) or "s"])
        m = SUMMARY.search(line)
        if m:
            count = int(m.group(1))
            summary = (float(m.group(2)) * UNIT_MS[m.group(3)], float(m.group(4)) * UNIT_MS[m.group(5)])
    return times or None, summary, count, r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--archive", required=True)
    ap.add_argument("--queries", required=True)
    ap.add_argument("--baseline-archive", required=True)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--mode", default="auto", choices=["auto", "process", "repeat"])
    ap.add_argument("--label", default="")
    a = ap.parse_args()
    queries = json.load(open(a.queries))

    mode = a.mode
    if mode == "auto":
        mode = "repeat" if has_repeat(a.bin) else "process"

    out = {"label": a.label, "archive": a.archive, "mode": mode, "runs": a.runs, "queries": []}
    results = {q["name"]: {"name": q["name"], "params": q["params"], "expected": q.get("expected")}
               for q in queries}
    base_argv = [a.bin, "find", a.baseline_archive, "StudyInstanceUID=1.2.3"]

    if mode == "repeat":
        for q in queries:
            times, summary, count, r = repeat_times(a.bin, a.archive, q["params"], a.runs)
            res = results[q["name"]]
            res["exit"] = r.returncode
            res["count"] = count_of(r)
            res["reported_count"] = count
            if r.returncode != 0:
                res["stderr"] = r.stderr.decode("utf-8", "replace")[-500:]
            if times:
                res.update(timed_by="repeat", median_ms=statistics.median(times), p95_ms=p95(times),
                           min_ms=min(times))
            elif summary:
                res.update(timed_by="repeat", median_ms=summary[0], p95_ms=summary[1])

    # Whole processes, always.
    argvs = [(q["name"], [a.bin, "find", a.archive] + q["params"]) for q in queries]
    for _ in range(2):  # warm-up: page cache, dynamic loader
        run_once(base_argv)
        for _, argv in argvs:
            run_once(argv)
    raw = {name: [] for name, _ in argvs}
    base = []
    for _ in range(a.runs):
        ms, r = run_once(base_argv)
        if r.returncode != 0:
            out["baseline_error"] = r.stderr.decode("utf-8", "replace")[-500:]
        base.append(ms)
        for name, argv in argvs:
            ms, r = run_once(argv)
            raw[name].append(ms)
            res = results[name]
            if res.get("timed_by") != "repeat":
                res["exit"] = r.returncode
                res["count"] = count_of(r)
                if r.returncode != 0:
                    res["stderr"] = r.stderr.decode("utf-8", "replace")[-500:]
    b = statistics.median(base)
    out["baseline"] = {"median_ms": b, "p95_ms": p95(base), "argv": base_argv[1:]}
    for q in queries:
        res = results[q["name"]]
        xs = raw[q["name"]]
        proc = {"raw_median_ms": statistics.median(xs), "raw_p95_ms": p95(xs), "raw_min_ms": min(xs)}
        proc["net_median_ms"] = max(0.0, proc["raw_median_ms"] - b)
        proc["net_p95_ms"] = max(0.0, proc["raw_p95_ms"] - b)
        res["process"] = proc
        if res.get("timed_by") != "repeat":
            res.update(timed_by="process", median_ms=proc["net_median_ms"], p95_ms=proc["net_p95_ms"])
        res["count_ok"] = res.get("count") == res.get("expected")
        out["queries"].append(res)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
