#!/usr/bin/python3
"""xqt.py — the benchmark's `xqt` step (issue 8): extended query tags and the change feed.

    xqt.py --bin DICOMFS --work DIR [--logs DIR] [--client WEBBENCH]
           --archive LABEL:KIND:INSTANCES:PATH[:INGEST_JSON] ...
           [--repeat N] [--rounds N] [--feed-runs N]

KIND is "bench" (a private copy of the benchmark archive: reindex, QIDO) or "synth" (a kept
gen_synth.py scale archive, changed in place and restored: reindex, QIDO, change feed).
INGEST_JSON, when given, is the archive's own ingest record (a kept synthetic archive's
ingest.json), copied into the result so report.py can relate the reindex rate to the
ingest rate even when this run did not ingest it. Prints one JSON object; progress goes to
stderr.

For each archive:
  reindex  `dicomfs tags ARCHIVE add JSON --wait`, one tag at a time, each timed: first a
           study-level tag (SeriesDate: the synthetic and benchmark instances carry it equal
           to StudyDate, so its values are written only for each study's newest instance),
           then an instance-level one (ContentDate: the same date, written for every
           instance). instances/s over the operation's own span (createdTime to
           lastUpdatedTime of the finished operation: the reindex alone) and over the
           whole process; the process's CPU seconds. Tags left by a killed run are
           deleted first; both are deleted at the end (timed), so a kept archive is as
           before.
  qido     `find --repeat N` of an equality query on the extended tag against the same
           query on the core tag it mirrors: study level SeriesDate=D vs StudyDate=D (synth:
           1 study), instance level ContentDate=D vs StudyDate=D (synth: the study's 10
           instances); D is a planted probe study's date (gen_synth.py), or on the benchmark
           archive its newest study's date (as many results as the core query). ROUNDS rounds,
           core and extended alternating; the median of the rounds' medians and of their
           p95s. Result counts are checked.
  feed     (synth) `dicomfs serve` on the archive and a keep-alive client (webbench get,
           or Python's http.client without it): the first, middle and last page of the
           feed, v1 (/v1/changefeed?offset=K&limit=100: a window of sequence numbers) and
           v2 (/v2/changefeed?startTime=T0&endTime=T1&offset=K&limit=200 over a window
           holding the whole feed, so K counts rows), and the v2 page that starts the
           last 200 entries' own window (offset 0). includeMetadata is left at its
           default (true), as a client reads the feed; the two last pages also with
           includeMetadata=false (paging alone). FEED_RUNS timed passes over the
           pages after 3 untimed ones: median and p95 per page. Bodies are checked (entry
           count, first sequence).
"""
import argparse
import datetime
import http.client
import json
import math
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.parse

# (keyword, hex, level) of the two tags added. Both mirror StudyDate in gen_synth.py and
# gen_dataset.py.
TAGS = [("SeriesDate", "00080021", "study"), ("ContentDate", "00080023", "instance")]
PROBE_DATE = "20210315"  # gen_synth.py's PROBES: the only study of that date
SUMMARY = re.compile(r"(\d+) results, median ([0-9.]+) ?(us|µs|ms|s), p95 ([0-9.]+) ?(us|µs|ms|s)")
UNIT_MS = {"s": 1e3, "ms": 1.0, "us": 1e-3, "µs": 1e-3}


def log(msg):
    print("[xqt %s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


def p95(xs):
    s = sorted(xs)
    return s[max(0, math.ceil(0.95 * len(s)) - 1)]


def parse_time(s):
    """The feed's and operations' ISO 8601 times ("2026-01-02T03:04:05.123456+00:00")."""
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00"))


def child_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run(argv, timeout=None):
    t0 = time.perf_counter()
    c0 = child_cpu()
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    return time.perf_counter() - t0, child_cpu() - c0, r


def text(b):
    return b.decode("utf-8", "replace").strip()


TICK = os.sysconf("SC_CLK_TCK")


def cpu_of(pid):
    """User+system CPU seconds of PID (all its threads) so far."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except (OSError, IndexError, ValueError):
        return None


class Server:
    """`dicomfs serve ARCHIVE` on a free loopback port, with one keep-alive connection."""

    def __init__(self, a, path, label):
        self.a, self.path, self.label = a, path, label
        self.conn = None

    def start(self):
        self.err = open(os.path.join(self.a.logs, "xqt-serve-%s.log" % self.label), "ab")
        self.p = subprocess.Popen([self.a.bin, "serve", self.path, "--http", "127.0.0.1:0"],
                                  stdout=subprocess.PIPE, stderr=self.err)
        line = text(self.p.stdout.readline())
        if " at http://" not in line:
            self.stop()
            raise RuntimeError("dicomfs serve did not start: %r" % line)
        self.origin = line.rsplit(" at ", 1)[1]
        self.pid = self.p.pid
        u = urllib.parse.urlsplit(self.origin)
        self.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)

    def request(self, method, path, body=None, content_type=None):
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        self.conn.request(method, path, body=body, headers=headers)
        r = self.conn.getresponse()
        return r.status, r.read().decode("utf-8", "replace")

    def stop(self):
        if self.conn:
            self.conn.close()
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(60)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.err.close()


class Archive:
    def __init__(self, a, spec):
        parts = spec.split(":", 4)
        if len(parts) < 4:
            sys.exit("xqt: --archive wants LABEL:KIND:INSTANCES:PATH[:INGEST_JSON], not %r" % spec)
        self.label, self.kind, n, self.path = parts[:4]
        self.instances = int(n)
        self.ingest_json = parts[4] if len(parts) > 4 and parts[4] else None
        self.a = a
        self.errors = []

    def dicomfs(self, *args, timeout=None):
        return run([self.a.bin] + list(args), timeout=timeout)

    def cleanup_tags(self, out, only=None):
        """Deletes the bench's tags (or the tag ONLY) if present: a killed run's leftovers,
        or ours at the end."""
        for kw, hexa, _ in TAGS:
            if only and hexa != only:
                continue
            _, _, r = self.dicomfs("tags", self.path, "get", hexa)
            if r.returncode != 0:
                continue
            secs, cpu, r = self.dicomfs("tags", self.path, "delete", hexa)
            ok = r.returncode == 0
            if out is not None:
                out.append({"tag": kw, "path": hexa, "seconds": secs, "cpu_seconds": cpu, "ok": ok})
            if not ok:
                self.errors.append("tags delete %s: exit %d: %s" % (kw, r.returncode, text(r.stderr)[-300:]))

    def reindex(self):
        res, srv = [], None
        try:
            for kw, hexa, level in TAGS:
                body = json.dumps([{"path": kw, "level": level}])
                if srv is None:
                    x = self.reindex_cli(kw, hexa, level, body)
                    if x.get("cli_wait_error"):
                        # `tags add --wait` gave up (see reindex_cli): the tag's operation is
                        # unfinished. Remove the tag and measure over HTTP instead, in one
                        # `dicomfs serve` (which also takes up the orphaned operation).
                        self.cleanup_tags(None, only=hexa)
                        srv = Server(self.a, self.path, self.label)
                        srv.start()
                if srv is not None:
                    x = self.reindex_http(srv, kw, hexa, level, body, x if x.get("cli_wait_error") else None)
                self.check_tag(x, hexa)
                res.append(x)
        finally:
            if srv is not None:
                srv.stop()
        return res

    def reindex_cli(self, kw, hexa, level, body):
        log("%s: tags add %s (%s level) --wait, %d instances" % (self.label, kw, level, self.instances))
        secs, cpu, r = self.dicomfs("tags", self.path, "add", body, "--wait")
        x = {"tag": kw, "path": hexa, "level": level, "instances": self.instances, "seconds": secs,
             "cpu_seconds": cpu, "exit": r.returncode, "via": "cli"}
        try:
            op = json.loads(r.stdout)
            x["status"] = op.get("status")
            x["operation_seconds"] = (parse_time(op["lastUpdatedTime"]) - parse_time(op["createdTime"])).total_seconds()
        except (ValueError, KeyError, TypeError):
            x["status"] = None
            x["stderr"] = text(r.stderr)[-300:]
            # tools/cmd_tags.c's wait_and_print() treats store_operations_wait()'s 1 s
            # timeout as a refusal: any reindex longer than a second ends the command
            # with exit 1 (and its exit stops the reindex until another process takes it up).
            if r.returncode == 1 and "still running after" in x["stderr"]:
                x["cli_wait_error"] = x["stderr"]
                log("%s: tags add --wait gave up after %.1f s: %s; measuring over HTTP instead" % (
                    self.label, secs, x["stderr"]))
        return x

    def reindex_http(self, srv, kw, hexa, level, body, cli):
        """POST /v2/extendedquerytags on SRV, then GET /v2/operations/{id} every 20 ms until
        it has ended; the wall time and the server's CPU time over it."""
        log("%s: POST /v2/extendedquerytags %s (%s level) to dicomfs serve, %d instances" % (
            self.label, kw, level, self.instances))
        x = {"tag": kw, "path": hexa, "level": level, "instances": self.instances, "via": "http"}
        if cli:
            x["cli"] = {k: cli.get(k) for k in ("seconds", "exit", "cli_wait_error")}
        deadline = time.time() + 300
        while True:  # 409 while the orphaned operation of the CLI's attempt is being finished
            c0, t0 = cpu_of(srv.pid), time.perf_counter()
            status, resp = srv.request("POST", "/v2/extendedquerytags", body, "application/json")
            if status != 409 or time.time() > deadline:
                break
            time.sleep(0.05)
        if status != 202:
            x.update(status=None, exit=status, stderr="HTTP %d: %s" % (status, resp[:300]))
            return x
        op_id = json.loads(resp)["id"]
        while True:
            status, resp = srv.request("GET", "/v2/operations/" + op_id)
            if status != 202:
                break
            time.sleep(0.02)
        t1, c1 = time.perf_counter(), cpu_of(srv.pid)
        x.update(seconds=t1 - t0, cpu_seconds=c1 - c0 if c0 is not None and c1 is not None else None,
                 exit=0 if status == 200 else status)
        try:
            op = json.loads(resp)
            x["status"] = op.get("status")
            x["operation_seconds"] = (parse_time(op["lastUpdatedTime"]) - parse_time(op["createdTime"])).total_seconds()
        except (ValueError, KeyError, TypeError):
            x["status"] = None
            x["stderr"] = "HTTP %d: %s" % (status, resp[:300])
        return x

    def check_tag(self, x, hexa):
        """The tag's status after its reindex; errors for a failed add."""
        _, _, g = self.dicomfs("tags", self.path, "get", hexa)
        try:
            tag = json.loads(g.stdout)
            x["tag_status"], x["query_status"] = tag.get("status"), tag.get("queryStatus")
            x["tag_errors"] = (tag.get("errors") or {}).get("count", 0)
        except ValueError:
            x["tag_status"] = None
        if x.get("exit") != 0 or x.get("status") != "succeeded" or x.get("tag_status") != "ready":
            self.errors.append("tags add %s (%s): exit %s, operation %s, tag %s: %s" % (
                x["tag"], x["via"], x.get("exit"), x.get("status"), x.get("tag_status"), x.get("stderr", "")))
        if x.get("operation_seconds"):
            log("%s: %s reindexed in %.2f s (%s %.2f s, CPU %.2f s): %.0f inst/s" % (
                self.label, x["tag"], x["operation_seconds"], "process" if x["via"] == "cli" else "POST to done",
                x.get("seconds") or 0, x.get("cpu_seconds") or 0, self.instances / x["operation_seconds"]))

    def find_repeat(self, params, n):
        _, _, r = self.dicomfs("find", self.path, "--repeat", str(n), *params)
        m = SUMMARY.search(text(r.stderr))
        try:
            count = len(json.loads(r.stdout))
        except ValueError:
            count = None
        if r.returncode != 0 or not m:
            return {"exit": r.returncode, "count": count, "stderr": text(r.stderr)[-300:]}
        return {"exit": 0, "count": count, "reported": int(m.group(1)),
                "median_ms": float(m.group(2)) * UNIT_MS[m.group(3)], "p95_ms": float(m.group(4)) * UNIT_MS[m.group(5)]}

    def bench_date(self):
        """A StudyDate of the benchmark archive (its newest study's), for its QIDO pair."""
        _, _, r = self.dicomfs("find", self.path, "limit=1")
        try:
            return json.loads(r.stdout)[0]["00080020"]["Value"][0]
        except (ValueError, KeyError, IndexError, TypeError):
            self.errors.append("find limit=1: no StudyDate in %r" % r.stdout[:200])
            return None

    def qido(self):
        """Pairs of (level, expected count or None: the core query's, core, extended)."""
        if self.kind == "synth":
            date, counts = PROBE_DATE, (1, 10)
        else:
            date, counts = self.bench_date(), (None, None)
            if not date:
                return []
        pairs = [
            ("study", counts[0], ["StudyDate=" + date], ["SeriesDate=" + date]),
            ("instance", counts[1], ["--level", "instance", "StudyDate=" + date],
             ["--level", "instance", "ContentDate=" + date]),
        ]
        out = []
        for level, expected, core, ext in pairs:
            rounds = {"core": [], "extended": []}
            for k in range(self.a.rounds):
                order = (("core", core), ("extended", ext)) if k % 2 == 0 else (("extended", ext), ("core", core))
                for side, params in order:
                    rounds[side].append(self.find_repeat(params, self.a.repeat))
            if expected is None:  # the benchmark archive: as many as the core query finds
                expected = rounds["core"][0].get("count")
            x = {"level": level, "expected": expected, "repeat": self.a.repeat, "rounds": self.a.rounds}
            for side, params in (("core", core), ("extended", ext)):
                rs = rounds[side]
                good = [r for r in rs if r.get("exit") == 0 and "median_ms" in r]
                y = {"params": params, "rounds": rs, "count": rs[-1].get("count") if rs else None}
                if good:
                    y["median_ms"] = statistics.median(r["median_ms"] for r in good)
                    y["p95_ms"] = statistics.median(r["p95_ms"] for r in good)
                if len(good) != len(rs):
                    bad = [r for r in rs if r not in good][0]
                    self.errors.append("find %s: exit %s: %s" % (" ".join(params), bad.get("exit"), bad.get("stderr")))
                y["count_ok"] = all(r.get("count") == expected for r in rs)
                x[side] = y
            log("%s: QIDO %s level: core %s ms, extended %s ms (medians)" % (
                self.label, level, fmt_ms(x["core"].get("median_ms")), fmt_ms(x["extended"].get("median_ms"))))
            out.append(x)
        return out

    def feed(self, logs):
        srv = Server(self.a, self.path, self.label)
        srv.start()
        try:
            return self.feed_pages(srv.origin, srv.pid)
        finally:
            srv.stop()

    def feed_pages(self, origin, pid):
        u = urllib.parse.urlsplit(origin)
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)

        def get_json(path):
            conn.request("GET", path, headers={"Accept": "application/json"})
            r = conn.getresponse()
            body = r.read()
            if r.status != 200:
                raise RuntimeError("GET %s: HTTP %d %s" % (path, r.status, body[:200]))
            return json.loads(body)

        latest = get_json("/v1/changefeed/latest?includeMetadata=false")
        n = latest["sequence"]
        first = get_json("/v1/changefeed?offset=0&limit=1&includeMetadata=false")[0]
        late = get_json("/v1/changefeed?offset=%d&limit=1&includeMetadata=false" % max(0, n - 200))[0]
        t0 = parse_time(first["timestamp"])
        t1 = parse_time(latest["timestamp"]) + datetime.timedelta(seconds=1)
        q = lambda t: urllib.parse.quote(t.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), safe="")
        window = "startTime=%s&endTime=%s" % (q(t0), q(t1))
        mid = n // 2
        # (name, path, expected entries, expected first sequence)
        pages = [
            ("v1 first page", "/v1/changefeed?offset=0&limit=100", 100, 1),
            ("v1 middle page", "/v1/changefeed?offset=%d&limit=100" % mid, 100, mid + 1),
            ("v1 last page", "/v1/changefeed?offset=%d&limit=100" % (n - 100), 100, n - 99),
            ("v2 first page", "/v2/changefeed?%s&offset=0&limit=200" % window, 200, 1),
            ("v2 middle page", "/v2/changefeed?%s&offset=%d&limit=200" % (window, mid), 200, mid + 1),
            ("v2 last page", "/v2/changefeed?%s&offset=%d&limit=200" % (window, n - 200), 200, n - 199),
            # The same last pages without metadata: what paging itself costs.
            ("v1 last page, includeMetadata=false",
             "/v1/changefeed?offset=%d&limit=100&includeMetadata=false" % (n - 100), 100, n - 99),
            ("v2 last page, includeMetadata=false",
             "/v2/changefeed?%s&offset=%d&limit=200&includeMetadata=false" % (window, n - 200), 200, n - 199),
            ("v2 last 200 entries' window, offset 0",
             "/v2/changefeed?startTime=%s&endTime=%s&offset=0&limit=200" % (q(parse_time(late["timestamp"])), q(t1)),
             None, late["sequence"]),
        ]
        out = {"entries": n, "first_timestamp": first["timestamp"], "last_timestamp": latest["timestamp"],
               "runs": self.a.feed_runs, "pages": []}
        log("%s: change feed of %d entries, %d pages x %d runs (%s)" % (
            self.label, n, len(pages), self.a.feed_runs, "webbench" if self.a.client else "http.client"))
        if self.a.client:
            tmp = os.path.join(self.a.work, "feed-" + self.label)
            shutil.rmtree(tmp, ignore_errors=True)
            os.makedirs(os.path.join(tmp, "bodies"))
            lst = os.path.join(tmp, "urls.txt")
            with open(lst, "w") as f:
                f.write("".join(origin + path + "\n" for _, path, _, _ in pages))
            r = subprocess.run([self.a.client, "get", lst, "application/json", str(self.a.feed_runs), "3", "1",
                                os.path.join(tmp, "bodies")], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            if r.returncode != 0:
                raise RuntimeError("webbench get failed (exit %d): %s" % (r.returncode, text(r.stderr)[-300:]))
            res = json.loads(r.stdout)
            got = []
            for i, x in enumerate(res["urls"]):
                with open(os.path.join(tmp, "bodies", str(i)), "rb") as f:
                    got.append((x["ms"], x["status"], f.read()))
            out["client"] = "webbench"
            out["client_cpu_seconds"] = res.get("client_cpu_seconds")
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            times = [[] for _ in pages]
            last = [None] * len(pages)
            for k in range(3 + self.a.feed_runs):
                for i, (_, path, _, _) in enumerate(pages):
                    t = time.perf_counter()
                    conn.request("GET", path, headers={"Accept": "application/json"})
                    r = conn.getresponse()
                    body = r.read()
                    ms = (time.perf_counter() - t) * 1e3
                    if k >= 3:
                        times[i].append(ms)
                    last[i] = (r.status, body)
            got = [(times[i], last[i][0], last[i][1]) for i in range(len(pages))]
            out["client"] = "http.client"
        conn.close()
        for (name, path, want_n, want_first), (ms, status, body) in zip(pages, got):
            x = {"name": name, "path": path, "status": status, "bytes": len(body),
                 "median_ms": statistics.median(ms) if ms else None, "p95_ms": p95(ms) if ms else None,
                 "min_ms": min(ms) if ms else None, "ms": ms}
            try:
                v = json.loads(body)
                x["count"] = len(v)
                x["first_sequence"] = v[0]["sequence"] if v else None
            except (ValueError, KeyError, TypeError, IndexError):
                x["count"] = None
            loose = want_n is None  # entries stored in the same microsecond may start the window earlier
            if loose:
                want_n = min(200, n - want_first + 1)
            x["expected"], x["expected_first"] = want_n, want_first
            fs = x.get("first_sequence")
            x["ok"] = status == 200 and x["count"] == want_n and fs is not None and (
                fs <= want_first if loose else fs == want_first)
            if not x["ok"]:  # a wrong answer, shown as WRONG in the table (not a crash)
                x["problem"] = ("feed %s: HTTP %s, %s entries from %s; expected %s from %s" % (
                    name, status, x.get("count"), x.get("first_sequence"), want_n, want_first))
                log("%s: %s" % (self.label, x["problem"]))
            log("%s: %s: median %s ms, p95 %s ms" % (self.label, name, fmt_ms(x["median_ms"]), fmt_ms(x["p95_ms"])))
            out["pages"].append(x)
        return out


def fmt_ms(v):
    return "-" if v is None else "%.3f" % v


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--logs", default=None)
    ap.add_argument("--client", default="")
    ap.add_argument("--archive", action="append", default=[])
    ap.add_argument("--repeat", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--feed-runs", type=int, default=50)
    a = ap.parse_args()
    a.logs = a.logs or a.work
    os.makedirs(a.work, exist_ok=True)
    t_start = time.time()
    out = {"archives": [], "tags": [{"keyword": k, "path": h, "level": l} for k, h, l in TAGS],
           "probe_date": PROBE_DATE, "repeat": a.repeat, "rounds": a.rounds, "feed_runs": a.feed_runs}
    failed = False
    for spec in a.archive:
        ar = Archive(a, spec)
        x = {"label": ar.label, "kind": ar.kind, "instances": ar.instances, "path": ar.path}
        if ar.ingest_json:
            try:
                with open(ar.ingest_json) as f:
                    x["ingest"] = json.load(f)
            except (OSError, ValueError) as e:
                ar.errors.append("cannot read %s: %s" % (ar.ingest_json, e))
        try:
            ar.cleanup_tags(x.setdefault("leftover_deleted", []))
            x["reindex"] = ar.reindex()
            x["qido"] = ar.qido()
            if ar.kind == "synth":
                try:
                    x["feed"] = ar.feed(a.logs)
                except (RuntimeError, OSError, ValueError, KeyError, IndexError) as e:
                    ar.errors.append("change feed: %s" % e)
                    log("ERROR %s: change feed: %s" % (ar.label, e))
        except (OSError, subprocess.SubprocessError) as e:
            ar.errors.append(str(e))
        finally:
            x["deleted"] = []
            ar.cleanup_tags(x["deleted"])
        x["errors"] = ar.errors
        failed = failed or bool(ar.errors)
        out["archives"].append(x)
    out["seconds"] = time.time() - t_start
    print(json.dumps(out))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
