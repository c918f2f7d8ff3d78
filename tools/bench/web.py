#!/usr/bin/python3
"""web.py — the benchmark's `web` step: DICOMweb over HTTP on 127.0.0.1, dicomfs against
Orthanc with its DICOMweb plugin (the same requests, the same client).

    web.py --bin DICOMFS --client WEBBENCH --dataset DS --work DIR [--logs DIR]
           [--servers "dicomfs orthanc"] [--qido-runs N] [--meta-runs N] [--wado-runs N]

Prints one JSON object (see the end of main()); progress goes to stderr. The HTTP client is
webbench.c (libcurl, one keep-alive connection per client thread, request bodies built in
memory before the clock starts); its own CPU time is recorded with each figure, so a client
that saturates a core would show.

For each server and each (set, instances per request) in (small, large) x (1, 50), a fresh
server on a fresh, empty directory; STOW-RS of the whole set by 2 clients (multipart/related;
type="application/dicom"). Then, on the server just loaded:
  small, 50/request  QIDO-RS: the dataset's five study queries (queries.json), RUNS passes
                     over the five after 10 untimed passes, one warm connection: median, p95.
                     Then the 4 large instances of the dataset's first study are stored too, so
                     that study holds 20 instances, and GET /studies/{study}/metadata is timed
                     the same way.
  large, 50/request  WADO-RS: (a) every instance, GET one by one (dicomfs: Accept:
                     application/dicom; transfer-syntax=*; Orthanc's plugin only answers
                     multipart: multipart/related; type="application/dicom";
                     transfer-syntax=*); (b) every study (multipart, transfer-syntax=*). One
                     untimed pass, then RUNS timed passes; MB/s of the DICOM bytes (the
                     files' sizes) over the median pass. Each with 1 client (one connection:
                     request, whole answer, next request) and with 2 (on 2 cores they compete
                     with the server for the CPU); report.py judges the better of the two. dicomfs only: the page-cache read
                     rate of its object files (webbench read: read(2) into a 128 KiB buffer,
                     once to warm, then RUNS timed passes), and the loopback TCP rate of the
                     same files (webbench tcp: sendfile(2) to a recv(2) loop, no HTTP; the
                     best of 5 passes) — the most one connection can carry on this machine.
The STOW runs are repeated --stow-reps rounds (servers interleaved); the reads run on the
last round's servers.

Orthanc runs from a private config (written here) with 1.10's defaults otherwise: SQLite
index and files in its StorageDirectory, StorageAccessOnFind "Always", a 128 MB storage cache,
50 HTTP threads, keep-alive. HTTP on a free port (Orthanc 1.10 listens on all interfaces;
RemoteAccessAllowed false refuses anything but loopback), the DICOM server disabled,
authentication off, only the DICOMweb plugin loaded (root /dicom-web/). The system service is
never used.
"""
import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import math

ORTHANC = "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
MULTIPART_ANY = 'multipart/related; type="application/dicom"; transfer-syntax=*'
TICK = os.sysconf("SC_CLK_TCK")


def log(msg):
    print("[web %s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


def p95(xs):
    s = sorted(xs)
    return s[max(0, math.ceil(0.95 * len(s)) - 1)]


def cpu_of(pid):
    """User+system CPU seconds of PID (all its threads) so far."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except (OSError, IndexError, ValueError):
        return None


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Dicomfs:
    name = "dicomfs"

    def __init__(self, binary, directory, logdir):
        self.binary, self.dir, self.logdir = binary, directory, logdir

    def start(self):
        self.err = open(os.path.join(self.logdir, "web-serve-%s.log" % os.path.basename(self.dir)), "ab")
        self.p = subprocess.Popen([self.binary, "serve", self.dir, "--http", "127.0.0.1:0"],
                                  stdout=subprocess.PIPE, stderr=self.err)
        line = self.p.stdout.readline().decode("utf-8", "replace").strip()
        # 'dicomfs: serving <dir> at http://127.0.0.1:<port>'
        if " at http://" not in line:
            self.stop()
            raise RuntimeError("dicomfs serve did not start: %r" % line)
        self.origin = line.rsplit(" at ", 1)[1]
        self.base = self.origin + "/v2"
        self.pid = self.p.pid

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(60)
            except subprocess.TimeoutExpired:
                log("dicomfs serve did not stop within 60 s of SIGTERM; killing it")
                self.p.kill()
                self.p.wait()
        self.err.close()

    def objects(self):
        out = []
        for root, _, files in os.walk(os.path.join(self.dir, "objects")):
            out += [os.path.join(root, f) for f in files if f.endswith(".dcm")]
        return sorted(out)

    instance_accept = "application/dicom; transfer-syntax=*"


class Orthanc:
    name = "orthanc"

    def __init__(self, directory, logdir):
        self.dir, self.logdir = directory, logdir

    def start(self):
        storage = os.path.join(self.dir, "storage")
        os.makedirs(storage, exist_ok=True)
        for attempt in range(3):
            port = free_port()
            config = {
                "Name": "dicomfs-bench",
                "StorageDirectory": storage,
                "IndexDirectory": storage,
                "HttpPort": port,
                "RemoteAccessAllowed": False,
                "AuthenticationEnabled": False,
                "DicomServerEnabled": False,
                "Plugins": [DICOMWEB_PLUGIN],
                "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            }
            cfg = os.path.join(self.dir, "orthanc.json")
            with open(cfg, "w") as f:
                json.dump(config, f, indent=1)
            self.err = open(os.path.join(self.logdir, "web-orthanc-%s.log" % os.path.basename(self.dir)), "ab")
            self.p = subprocess.Popen([ORTHANC, cfg], stdout=self.err, stderr=subprocess.STDOUT, cwd=self.dir)
            self.origin = "http://127.0.0.1:%d" % port
            deadline = time.time() + 60
            while time.time() < deadline and self.p.poll() is None:
                try:
                    with urllib.request.urlopen(self.origin + "/system", timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    time.sleep(0.1)
            if self.p.poll() is None and time.time() < deadline:
                self.base = self.origin + "/dicom-web"
                self.pid = self.p.pid
                return
            self.stop()
            log("Orthanc did not start on port %d (attempt %d); see %s" % (port, attempt + 1, self.err.name))
        raise RuntimeError("Orthanc did not start; see %s" % self.err.name)

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(60)
            except subprocess.TimeoutExpired:
                log("Orthanc did not stop within 60 s of SIGTERM; killing it")
                self.p.kill()
                self.p.wait()
        self.err.close()

    def count_instances(self):
        with urllib.request.urlopen(self.origin + "/statistics", timeout=30) as r:
            return json.load(r)["CountInstances"]

    instance_accept = MULTIPART_ANY


def dataset_uids(ds, work):
    """{set: [{"path", "study", "series", "sop", "size"}]}, in path order; cached in WORK."""
    cache = os.path.join(work, "uids.json")
    key = os.path.realpath(ds)
    if os.path.exists(cache):
        with open(cache) as f:
            c = json.load(f)
        if c.get("dataset") == key:
            return c["sets"]
    import pydicom
    sets = {}
    for name in ("small", "large"):
        paths = []
        for root, _, files in os.walk(os.path.join(ds, name)):
            paths += [os.path.join(root, f) for f in files]
        rows = []
        for p in sorted(paths):
            d = pydicom.dcmread(p, stop_before_pixels=True,
                                specific_tags=["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"])
            rows.append({"path": p, "study": str(d.StudyInstanceUID), "series": str(d.SeriesInstanceUID),
                         "sop": str(d.SOPInstanceUID), "size": os.path.getsize(p)})
        sets[name] = rows
    with open(cache + ".tmp", "w") as f:
        json.dump({"dataset": key, "sets": sets}, f)
    os.replace(cache + ".tmp", cache)
    return sets


class Bench:
    def __init__(self, a):
        self.a = a
        self.client = a.client
        self.tmp = os.path.join(a.work, "tmp")
        os.makedirs(self.tmp, exist_ok=True)

    def run_client(self, *args):
        r = subprocess.run([self.client] + [str(x) for x in args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if r.returncode != 0:
            raise RuntimeError("webbench %s failed (exit %d): %s" % (args[0], r.returncode,
                                                                   r.stderr.decode("utf-8", "replace")[-500:]))
        if r.stderr:
            log("webbench %s: %s" % (args[0], r.stderr.decode("utf-8", "replace").strip()[-300:]))
        return json.loads(r.stdout)

    def write_list(self, name, lines):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write("".join(x + "\n" for x in lines))
        return path

    def stow(self, srv, rows, per, label, client="webbench"):
        lst = self.write_list("stow-%s.txt" % label, [r["path"] for r in rows])
        if client == "curl":  # stowcurl.py: the curl command line, 2 processes, keep-alive
            r = subprocess.run([sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                             "stowcurl.py"),
                                "--url", srv.base + "/studies", "--list", lst, "--per", str(per), "--clients", "2",
                                "--cache", self.a.curl_cache, "--server-pid", str(srv.pid)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            if r.returncode != 0 or not r.stdout.strip():
                raise RuntimeError("stowcurl.py failed (exit %d): %s" % (
                    r.returncode, r.stderr.decode("utf-8", "replace")[-500:]))
            if r.stderr:
                log("stowcurl: %s" % r.stderr.decode("utf-8", "replace").strip()[-300:])
            return json.loads(r.stdout)
        c0 = cpu_of(srv.pid)
        res = self.run_client("stow", srv.base + "/studies", 2, per, lst)
        c1 = cpu_of(srv.pid)
        res["server_cpu_seconds"] = c1 - c0 if c0 is not None and c1 is not None else None
        res["client"] = "webbench"
        return res

    def get(self, srv, urls, accept, runs, warmup, label, save=False, clients=1):
        lst = self.write_list("get-%s.txt" % label, urls)
        args = ["get", lst, accept, runs, warmup, clients]
        if save:
            d = os.path.join(self.tmp, "bodies-%s" % label)
            shutil.rmtree(d, ignore_errors=True)
            os.makedirs(d)
            args.append(d)
        c0 = cpu_of(srv.pid)
        res = self.run_client(*args)
        c1 = cpu_of(srv.pid)
        # server CPU over warm-up and timed passes together; scaled to the timed part below
        res["server_cpu_seconds_all_passes"] = c1 - c0 if c0 is not None and c1 is not None else None
        if save:
            res["saved"] = d
        return res

    def qido(self, srv, queries):
        urls = [srv.base + "/studies?" + "&".join(
            urllib.parse.quote(p.split("=", 1)[0], safe="") + "=" + urllib.parse.quote(p.split("=", 1)[1], safe="*")
            for p in q["params"]) for q in queries]
        res = self.get(srv, urls, "application/dicom+json", self.a.qido_runs, 10, "qido-" + srv.name, save=True)
        out = []
        for i, (q, u, r) in enumerate(zip(queries, urls, res["urls"])):
            count = None
            with open(os.path.join(res["saved"], str(i)), "rb") as f:
                body = f.read()
            if r["status"] == 204 or (r["status"] == 200 and not body.strip()):
                count = 0
            elif r["status"] == 200:
                try:
                    count = len(json.loads(body))
                except ValueError:
                    count = None
            out.append({"name": q["name"], "url": u, "status": r["status"], "count": count,
                        "expected": q["expected"], "median_ms": statistics.median(r["ms"]),
                        "p95_ms": p95(r["ms"]), "runs": len(r["ms"]), "bytes": r["bytes"], "ms": r["ms"]})
        return {"queries": out, "client_cpu_seconds": res["client_cpu_seconds"],
                "pass_seconds": res["pass_seconds"]}

    def metadata(self, srv, study, n_expected):
        res = self.get(srv, [srv.base + "/studies/%s/metadata" % study], "application/dicom+json",
                       self.a.meta_runs, 5, "meta-" + srv.name, save=True)
        r = res["urls"][0]
        count = None
        try:
            with open(os.path.join(res["saved"], "0"), "rb") as f:
                count = len(json.load(f))
        except ValueError:
            pass
        return {"status": r["status"], "count": count, "expected": n_expected, "bytes": r["bytes"],
                "median_ms": statistics.median(r["ms"]), "p95_ms": p95(r["ms"]), "runs": len(r["ms"]), "ms": r["ms"]}

    def throughput(self, srv, urls, accept, payload, label, clients):
        res = self.get(srv, urls, accept, self.a.wado_runs, 1, label, clients=clients)
        passes = res["pass_seconds"]
        med = statistics.median(passes)
        bad = [r["status"] for r in res["urls"] if r["status"] != 200]
        short = sum(1 for r, want in zip(res["urls"], payload) if r["bytes"] < want)
        per = [x for r in res["urls"] for x in r["ms"]]
        cpu = res.get("server_cpu_seconds_all_passes")
        n_passes = self.a.wado_runs + 1
        return {"requests": len(urls), "bytes": sum(payload), "body_bytes_per_pass": res["body_bytes"] / len(passes),
                "pass_seconds": passes, "seconds": med, "mb_s": sum(payload) / 1e6 / med,
                "request_median_ms": statistics.median(per), "request_p95_ms": p95(per),
                "non_200": len(bad), "statuses": sorted(set(bad)), "short_bodies": short,
                "clients": clients, "accept": accept,
                "client_cpu_seconds_per_pass": res["client_cpu_seconds"] / len(passes),
                "server_cpu_seconds_per_pass": cpu / n_passes if cpu is not None else None}


TRASH = []  # server directories, deleted at the end (see run_server)


def peak_rss_kb(pid):
    """VmHWM of PID (its peak resident set so far), or None."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def run_server(a, b, out, name, rep, last, sets, queries, meta_study, meta_large):
    """One round of the STOW runs on NAME (set x per request x client), and on the last
    round the reads (on the first client's servers)."""
    first_client = a.stow_clients.split()[0]
    res = out["servers"].setdefault(name, {"stow": []})
    for setname, per, client in [(s_, p_, c_) for s_ in ("small", "large") for p_ in (1, 50)
                                 for c_ in a.stow_clients.split()]:
        rows = sets[setname]
        if True:
            # A new directory for every run, deleted only at the end of the step: on ext4
            # without a journal each new inode is allocated after scanning past the inodes
            # deleted in the last 30 s, so a run right after a deletion pays for it.
            label = "%s-%s-%d-%s-r%d" % (name, setname, per, client, rep)
            d = os.path.join(a.work, label)
            shutil.rmtree(d, ignore_errors=True)
            os.makedirs(d)
            TRASH.append(d)
            srv = Dicomfs(a.bin, d, a.logs) if name == "dicomfs" else Orthanc(d, a.logs)
            try:
                srv.start()
            except (RuntimeError, OSError) as e:
                out["errors"].append("%s: %s" % (label, e))
                log("ERROR %s: %s" % (label, e))
                continue
            try:
                log("%s: STOW-RS %d %s instances, %d per request, 2 %s clients (round %d of %d)" % (
                    name, len(rows), setname, per, client, rep, a.stow_reps))
                st = b.stow(srv, rows, per, label, client)
                st.update({"set": setname, "per_request": per, "rep": rep, "client": client})
                st["server_peak_rss_kb"] = peak_rss_kb(srv.pid)
                if name == "orthanc":
                    st["stored_count"] = srv.count_instances()
                log("%s: %.0f inst/s, %.1f MB/s (%s)" % (label, st["instances"] / st["seconds"],
                                                        st["bytes"] / 1e6 / st["seconds"], st["status"]))
                res["stow"].append(st)
                if last and setname == "small" and per == 50 and client == first_client:
                    log("%s: QIDO-RS, %d passes over %d queries" % (name, a.qido_runs, len(queries)))
                    res["qido"] = b.qido(srv, queries)
                    extra = b.stow(srv, meta_large, 50, label + "-meta")
                    if extra["failed_requests"]:
                        out["errors"].append("%s: storing the metadata study's large instances: %s" % (
                            label, extra["first_error"][:200]))
                    log("%s: study metadata (%d instances), %d runs" % (name, out["meta_instances"], a.meta_runs))
                    res["metadata"] = b.metadata(srv, meta_study, out["meta_instances"])
                if last and setname == "large" and per == 50 and client == first_client:
                    urls = [srv.base + "/studies/%s/series/%s/instances/%s" % (r["study"], r["series"], r["sop"])
                            for r in rows]
                    studies = {}
                    for r in rows:
                        studies[r["study"]] = studies.get(r["study"], 0) + r["size"]
                    for c in (1, 2):
                        log("%s: WADO-RS instances, %d passes of %d, %d client(s)" % (name, a.wado_runs, len(urls), c))
                        res["wado_instance_c%d" % c] = b.throughput(srv, urls, srv.instance_accept,
                                                                    [r["size"] for r in rows], "wado-inst-" + name, c)
                        log("%s: WADO-RS studies, %d passes of %d, %d client(s)" % (name, a.wado_runs, len(studies), c))
                        res["wado_study_c%d" % c] = b.throughput(srv, [srv.base + "/studies/" + s for s in studies],
                                                                 MULTIPART_ANY, list(studies.values()),
                                                                 "wado-study-" + name, c)
                    if name == "dicomfs":
                        objs = srv.objects()
                        lst = b.write_list("objects.txt", objs)
                        pc = b.run_client("read", lst, max(3, a.wado_runs))
                        pc["seconds"] = statistics.median(pc["pass_seconds"])
                        pc["mb_s"] = pc["bytes"] / 1e6 / pc["seconds"]
                        out["page_cache"] = pc
                        tcp = b.run_client("tcp", lst, 5)
                        tcp["seconds"] = min(tcp["pass_seconds"])  # a limit: the best pass
                        tcp["mb_s"] = tcp["bytes"] / 1e6 / tcp["seconds"]
                        out["loopback_tcp"] = tcp
                        log("page cache: %.0f MB/s, loopback TCP (sendfile, no HTTP): %.0f MB/s over %d object "
                            "files" % (pc["mb_s"], tcp["mb_s"], pc["files"]))
            except (RuntimeError, OSError, ValueError, KeyError) as e:
                out["errors"].append("%s: %s" % (label, e))
                log("ERROR %s: %s" % (label, e))
            finally:
                srv.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--client", required=True)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--logs", default=None)
    ap.add_argument("--servers", default="dicomfs orthanc")
    ap.add_argument("--qido-runs", type=int, default=100)
    ap.add_argument("--meta-runs", type=int, default=100)
    ap.add_argument("--wado-runs", type=int, default=3)
    ap.add_argument("--stow-reps", type=int, default=3, help="rounds of the STOW runs (the median is reported)")
    ap.add_argument("--stow-clients", default="webbench curl",
                    help="STOW clients: webbench (libcurl, one buffer, no Expect) and/or curl (stowcurl.py)")
    ap.add_argument("--stow-only", action="store_true", help="the STOW runs only (no QIDO, metadata, WADO)")
    ap.add_argument("--curl-cache", help="where stowcurl.py keeps its request bodies (default WORK/../stowcurl-cache)")
    a = ap.parse_args()
    a.logs = a.logs or a.work
    a.curl_cache = a.curl_cache or os.path.join(os.path.dirname(os.path.abspath(a.work)), "stowcurl-cache")
    os.makedirs(a.work, exist_ok=True)
    os.makedirs(a.logs, exist_ok=True)
    b = Bench(a)
    t_start = time.time()
    sets = dataset_uids(a.dataset, a.work)
    with open(os.path.join(a.dataset, "queries.json")) as f:
        queries = json.load(f)
    meta_study = sets["small"][0]["study"]
    meta_small = [r for r in sets["small"] if r["study"] == meta_study]
    meta_large = [r for r in sets["large"] if r["study"] == meta_study]
    out = {"servers": {}, "errors": [], "meta_study": meta_study,
           "meta_instances": len(meta_small) + len(meta_large),
           "sets": {k: {"files": len(v), "bytes": sum(r["size"] for r in v)} for k, v in sets.items()},
           "qido_runs": a.qido_runs, "meta_runs": a.meta_runs, "wado_runs": a.wado_runs,
           "stow_reps": a.stow_reps}

    for rep in range(1, a.stow_reps + 1):
        last = rep == a.stow_reps and not a.stow_only  # QIDO, metadata and WADO: the last round's servers
        for name in a.servers.split():
            run_server(a, b, out, name, rep, last, sets, queries, meta_study, meta_large)
    if "orthanc" in a.servers.split():
        v = subprocess.run(["dpkg-query", "-W", "-f", "${Package} ${Version}, ", "orthanc", "orthanc-dicomweb"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL).stdout.decode().strip(" ,")
        out["peer"] = ("%s; private config, otherwise 1.10's defaults: one file per instance in its "
                       "StorageDirectory (fdatasync each; no directory sync), SQLite index (WAL, "
                       "synchronous=NORMAL: commits are not synced), StorageAccessOnFind Always, "
                       "128 MB storage cache, 50 HTTP threads, keep-alive; DICOM server off, auth off; "
                       "WADO instance Accept: %s (its plugin has no single-part answer)" % (v, MULTIPART_ANY))
    out["seconds"] = time.time() - t_start
    out["stow_clients"] = a.stow_clients.split()
    log("removing %d server directories" % len(TRASH))
    for d in TRASH:
        shutil.rmtree(d, ignore_errors=True)
    print(json.dumps(out))
    # A failure on dicomfs's side is the bench's own (exit 1); the peer's are notes.
    return 1 if any(e.startswith("dicomfs") for e in out["errors"]) else 0


if __name__ == "__main__":
    sys.exit(main())
