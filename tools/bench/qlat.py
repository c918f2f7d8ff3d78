#!/usr/bin/python3
"""qlat.py — latency of study-level `dicomfs find` queries on one archive.

    qlat.py --bin DICOMFS --archive A --queries Q.json --baseline-archive E [--runs N]
            [--mode auto|process|repeat] [--label L]

Q.json is a list of {"name", "params": ["Key=Value", ...], "expected": studies}.
Prints one JSON object: for each query the median and p95 over N runs, raw and "net", the
number of studies returned (checked against "expected"), and the baseline.

Two ways to time a query:

  process  Each run is a whole `dicomfs find` process, timed from here. That includes
           process start-up, opening the archive and writing the JSON. The baseline is the
           same measurement for a trivial query (`find E StudyInstanceUID=1.2.3` on an empty
           archive); net = raw - median(baseline). Runs of all queries and the baseline are
           interleaved round-robin (after 2 warm-up runs each) so drift hits all alike.

  repeat   `dicomfs find --repeat N --timing ARCHIVE KEY=VALUE...` (does not exist yet).
           Expected contract, to be agreed with whoever adds it: run the query N times in
           one process and print one line per run on stderr, `timing: <seconds>` (a unit
           suffix ms/us/s is accepted), stdout as for one run. Then no baseline is needed
           (net = raw). `--mode auto` (the default) uses it as soon as `find --help`
           mentions --repeat and --timing, and falls back to process mode for a query
           whose stderr has no timing lines.
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
    return "--repeat" in text and "--timing" in text


def repeat_times(binary, archive, params, runs):
    r = subprocess.run([binary, "find", "--repeat", str(runs), "--timing", archive] + params,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    times = []
    for line in r.stderr.decode("utf-8", "replace").splitlines():
        m = TIMING.match(line.strip())
        if m:
            v = float(m.group(1))
            unit = m.group(2) or "s"
            times.append(v * {"s": 1e3, "ms": 1.0, "us": 1e-3, "µs": 1e-3}[unit])
    return times, r


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

    pending = []  # queries timed as whole processes
    if mode == "repeat":
        for q in queries:
            times, r = repeat_times(a.bin, a.archive, q["params"], a.runs)
            res = results[q["name"]]
            res["exit"] = r.returncode
            res["count"] = count_of(r)
            if times:
                res["raw_ms"] = times
                res["timed_by"] = "repeat"
            else:
                pending.append(q)
    else:
        pending = list(queries)

    base = []
    if pending:
        argvs = [(q["name"], [a.bin, "find", a.archive] + q["params"]) for q in pending]
        for _ in range(2):  # warm-up: page cache, dynamic loader
            run_once(base_argv)
            for _, argv in argvs:
                run_once(argv)
        raw = {name: [] for name, _ in argvs}
        for _ in range(a.runs):
            ms, r = run_once(base_argv)
            if r.returncode != 0:
                out["baseline_error"] = r.stderr.decode("utf-8", "replace")[-500:]
            base.append(ms)
            for name, argv in argvs:
                ms, r = run_once(argv)
                raw[name].append(ms)
                res = results[name]
                res["exit"] = r.returncode
                res["count"] = count_of(r)
                if r.returncode != 0:
                    res["stderr"] = r.stderr.decode("utf-8", "replace")[-500:]
        for name in raw:
            results[name]["raw_ms"] = raw[name]
            results[name]["timed_by"] = "process"
        out["baseline"] = {"median_ms": statistics.median(base), "p95_ms": p95(base),
                           "argv": base_argv[1:]}

    b = statistics.median(base) if base else 0.0
    for q in queries:
        res = results[q["name"]]
        xs = res.pop("raw_ms", [])
        if xs:
            sub = b if res["timed_by"] == "process" else 0.0
            res["raw_median_ms"] = statistics.median(xs)
            res["raw_p95_ms"] = p95(xs)
            res["median_ms"] = max(0.0, res["raw_median_ms"] - sub)
            res["p95_ms"] = max(0.0, res["raw_p95_ms"] - sub)
            res["min_ms"] = min(xs) - sub
        res["count_ok"] = res.get("count") == res.get("expected")
        out["queries"].append(res)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
