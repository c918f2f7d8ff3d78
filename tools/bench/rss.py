#!/usr/bin/python3
"""rss.py — the benchmark's `rss` step: peak resident memory while storing ~2 GB.

    rss.py --bin DICOMFS --src DIR --work DIR [--logs DIR] [--curl-cache DIR] [--per 50]

Two runs, each into a fresh archive (in a new directory; all deleted at the end):
  ingest  `dicomfs ingest ARCHIVE SRC`
  stow    `dicomfs serve ARCHIVE`, then STOW-RS of every file of SRC, PER/request, 2 curl
          clients (stowcurl.py)
The process's /proc/PID/status is read every 0.2 s: VmRSS and VmHWM (the peak). Reported:
the peak (VmHWM at the end), the RSS at start (first sample; STOW: before the first request)
and at 10% and 50% of the run's time, and the growth = peak - RSS at 10% (what grows while
storing, past start-up and the first requests' buffers and caches; goal < 64 MB) and peak -
start. Prints one JSON object.
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def status(pid):
    out = {}
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    out[line.split(":")[0]] = int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return out


class Sampler(threading.Thread):
    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.samples, self.stop_ = pid, [], threading.Event()
        self.t0 = time.monotonic()

    def run(self):
        while not self.stop_.is_set():
            s = status(self.pid)
            if not s:
                break
            self.samples.append((time.monotonic() - self.t0, s.get("VmRSS", 0), s.get("VmHWM", 0)))
            self.stop_.wait(0.2)

    def summary(self, start_rss=None):
        xs = self.samples
        if not xs:
            return {}
        dur = xs[-1][0]

        def at(frac):
            return min(xs, key=lambda x: abs(x[0] - frac * dur))[1]

        peak = max(x[2] for x in xs)
        start = start_rss if start_rss is not None else xs[0][1]
        r10 = at(0.1)
        return {"peak_rss_kb": peak, "start_rss_kb": start, "rss_10pct_kb": r10, "rss_50pct_kb": at(0.5),
                "end_rss_kb": xs[-1][1], "growth_kb": peak - r10, "growth_from_start_kb": peak - start,
                "samples": len(xs), "seconds": dur}


def files_of(src):
    return sorted(os.path.join(r, f) for r, _, fs in os.walk(src) for f in fs)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--src", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--logs")
    ap.add_argument("--curl-cache")
    ap.add_argument("--per", type=int, default=50)
    ap.add_argument("--what", default="ingest stow")
    a = ap.parse_args()
    a.logs = a.logs or a.work
    shutil.rmtree(a.work, ignore_errors=True)
    os.makedirs(a.work)
    cache = a.curl_cache or os.path.join(a.work, "cache")
    files = files_of(a.src)
    nbytes = sum(os.path.getsize(f) for f in files)
    out = {"files": len(files), "bytes": nbytes, "goal_growth_kb": 64 * 1024}
    rc = 0
    if "ingest" in a.what.split():
        print("[rss] ingest of %d files, %.0f MB" % (len(files), nbytes / 1e6), file=sys.stderr, flush=True)
        err = os.path.join(a.logs, "rss-ingest.log")
        with open(err, "w") as e:
            t0 = time.monotonic()
            p = subprocess.Popen([a.bin, "ingest", os.path.join(a.work, "ingest"), a.src],
                                 stdout=subprocess.DEVNULL, stderr=e)
            s = Sampler(p.pid)
            s.start()
            _, st, ru = os.wait4(p.pid, 0)
            s.stop_.set()
            s.join()
        r = s.summary()
        r.update({"wall_seconds": time.monotonic() - t0, "exit": os.waitstatus_to_exitcode(st),
                  "maxrss_kb_getrusage": ru.ru_maxrss, "cpu_seconds": ru.ru_utime + ru.ru_stime})
        r["peak_rss_kb"] = max(r.get("peak_rss_kb", 0), ru.ru_maxrss)
        with open(err) as f:
            tail = [x for x in f.read().splitlines() if x.startswith("ingest:")]
        r["summary"] = tail[-1] if tail else ""
        out["ingest"] = r
    if "stow" in a.what.split():
        d = os.path.join(a.work, "stow")
        os.makedirs(d)
        errf = open(os.path.join(a.logs, "rss-serve.log"), "ab")
        p = subprocess.Popen([a.bin, "serve", d, "--http", "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=errf)
        line = p.stdout.readline().decode("utf-8", "replace").strip()
        if " at http://" not in line:
            out["stow"] = {"error": "dicomfs serve did not start: %r" % line}
            rc = 1
        else:
            url = line.rsplit(" at ", 1)[1] + "/v2/studies"
            lst = os.path.join(a.work, "list.txt")
            with open(lst, "w") as f:
                f.write("".join(x + "\n" for x in files))
            # Bodies first (stowcurl builds them, once; timed runs reuse them): a tiny run
            # would store instances, so build them through stowcurl's own function.
            sys.path.insert(0, HERE)
            import stowcurl
            print("[rss] building %d/request bodies" % a.per, file=sys.stderr, flush=True)
            stowcurl.build_bodies(files, a.per, cache)
            time.sleep(0.5)
            start = status(p.pid).get("VmRSS", 0)
            print("[rss] STOW of %d files, %d/request, 2 curl clients" % (len(files), a.per), file=sys.stderr,
                  flush=True)
            s = Sampler(p.pid)
            s.start()
            r0 = subprocess.run([sys.executable, os.path.join(HERE, "stowcurl.py"), "--url", url, "--list", lst,
                                 "--per", str(a.per), "--clients", "2", "--cache", cache, "--server-pid", str(p.pid)],
                                stdout=subprocess.PIPE)
            s.stop_.set()
            s.join()
            r = s.summary(start)
            try:
                res = json.loads(r0.stdout)
                r.update({k: res.get(k) for k in ("instances", "seconds", "failed_requests", "first_error",
                                                   "server_cpu_seconds")})
            except ValueError:
                r["error"] = "stowcurl.py printed no JSON"
                rc = 1
            final = status(p.pid)
            r["peak_rss_kb"] = max(r.get("peak_rss_kb", 0), final.get("VmHWM", 0))
            out["stow"] = r
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        errf.close()
    shutil.rmtree(a.work, ignore_errors=True)
    print(json.dumps(out))
    return rc


if __name__ == "__main__":
    sys.exit(main())
