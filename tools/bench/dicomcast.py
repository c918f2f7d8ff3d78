#!/usr/bin/python3
"""dicomcast benchmark (tools/bench/run.sh step `dicomcast`): prints one JSON object.

  sync    the dataset's small set (2,000 instances by default; --limit to cut it) ingested
          into a fresh archive, `dicomfs serve` on it, the FHIR R4 server of tests/fhir
          (@medplum/fhir-router in memory, validating every resource), then `dicomcast
          --once` from sequence 0: entries/s over the whole run (process start to exit).
  lag     a fresh archive and FHIR server, dicomcast polling every 50 ms, and --lag-count
          instances STOWed one per request at --lag-rate per second (default: half the
          sync rate, so that the lag measures the path, not a backlog): for each, the time
          from the STOW's 200 to dicomcast's checkpoint passing its sequence (written right
          after the transaction holding the instance committed: the ImagingStudy is
          visible then). p50 / p95 / max in ms.

    dicomcast.py --dicomfs BIN --dicomcast BIN --dataset DS --work DIR [--limit N]
"""
import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests"))
sys.path.insert(0, os.path.join(REPO, "tests", "fhir"))
os.environ.setdefault("DICOMFS", "dicomfs")


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dicomfs", required=True)
    ap.add_argument("--dicomcast", required=True)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--limit", type=int, default=0, help="at most N instances for the sync rate (0: all)")
    ap.add_argument("--lag-count", type=int, default=100)
    ap.add_argument("--lag-rate", type=float, default=0)
    a = ap.parse_args()
    os.environ["DICOMFS"] = a.dicomfs
    os.environ["DICOMCAST"] = a.dicomcast
    import testutil as tu  # noqa: E402  (after DICOMFS is set)
    import webutil as wu  # noqa: E402
    import fhirutil as fu  # noqa: E402

    files = sorted(glob.glob(os.path.join(a.dataset, "small", "*", "*", "*.dcm")))
    if a.limit:
        files = files[:a.limit]
    out = {"instances": len(files)}
    os.makedirs(a.work, exist_ok=True)

    # Sync rate.
    sync_dir = os.path.join(a.work, "sync")
    subprocess.run(["rm", "-rf", sync_dir], check=True)
    os.makedirs(sync_dir)
    arch = os.path.join(sync_dir, "archive")
    listing = os.path.join(sync_dir, "files.txt")
    p = subprocess.run([a.dicomfs, "ingest", arch, *files], capture_output=True, text=True)
    if p.returncode != 0:
        print(json.dumps({"error": "ingest failed: " + p.stderr[-500:]}))
        return 1
    with wu.Server(sync_dir, "archive") as srv, fu.FhirServer(sync_dir, test="bench") as fhir:
        cast = fu.Cast(srv.url, fhir.url, os.path.join(sync_dir, "state.json"))
        t0 = time.monotonic()
        p = cast.once(timeout=3600)
        secs = time.monotonic() - t0
        studies = len(fhir.search("ImagingStudy"))
        out["sync"] = {"entries": cast.synced(), "seconds": round(secs, 3),
                       "entries_per_s": round(cast.synced() / secs, 1) if secs else None,
                       "rc": p.returncode, "studies": studies, "errors": len(cast.error_lines()),
                       "summary": (p.stderr.strip().splitlines() or [""])[-1]}
    del listing

    # Lag from STOW to visible, while STOW runs.
    rate = a.lag_rate or max(1.0, (out["sync"]["entries_per_s"] or 2) / 2)
    lag_dir = os.path.join(a.work, "lag")
    subprocess.run(["rm", "-rf", lag_dir], check=True)
    os.makedirs(lag_dir)
    lag_files = files[:a.lag_count]
    with wu.Server(lag_dir, "archive") as srv, fu.FhirServer(lag_dir, test="bench") as fhir:
        cast = fu.Cast(srv.url, fhir.url, os.path.join(lag_dir, "state.json"), "--poll", "0.05")
        proc = cast.start(stderr_path=os.path.join(lag_dir, "dicomcast.stderr"))
        time.sleep(0.5)
        done_at, seen_at = {}, {}
        boundary = "bench-dicomcast"
        t_next = time.monotonic()
        pending = []
        for i, f in enumerate(lag_files):
            with open(f, "rb") as fh:
                body = wu.multipart([("application/dicom", fh.read())], boundary)
            while time.monotonic() < t_next:
                synced = cast.synced()
                for s in pending[:]:
                    if synced >= s:
                        seen_at[s] = time.monotonic()
                        pending.remove(s)
                time.sleep(0.002)
            t_next += 1.0 / rate
            r = srv.stow("/v2/studies", body, f'multipart/related; type="application/dicom"; boundary={boundary}')
            t = time.monotonic()
            if r.status != 200:
                continue
            seq = i + 1  # one instance per STOW into a fresh archive
            done_at[seq] = t
            pending.append(seq)
        deadline = time.monotonic() + 120
        while pending and time.monotonic() < deadline:
            synced = cast.synced()
            for s in pending[:]:
                if synced >= s:
                    seen_at[s] = time.monotonic()
                    pending.remove(s)
            time.sleep(0.002)
        proc.terminate()
        proc.wait(timeout=30)
        lags = [(seen_at[s] - done_at[s]) * 1000 for s in seen_at]
        out["lag"] = {"count": len(lags), "stow_rate_per_s": round(rate, 1), "missing": len(pending),
                      "p50_ms": round(pct(lags, 50), 1) if lags else None,
                      "p95_ms": round(pct(lags, 95), 1) if lags else None,
                      "max_ms": round(max(lags), 1) if lags else None,
                      "mean_ms": round(statistics.mean(lags), 1) if lags else None}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
