"""The load test: 50 concurrent loopback HTTP clients (loadgen, libcurl multi) and a mount
of the same archive, for LOAD_TIME seconds (60 by default; `make load`: 600), then checks.

  server   `dicomfs serve ARCHIVE --http 127.0.0.1:0` with its default limits
  mount    `dicomfs mount ARCHIVE MNT` (a second process on the archive); two threads:
           a reader (ls of studies/, a study's series, a series' instances, then cat of
           an instance, checked against the bytes it must have; ls of patients/; cat of a
           study's metadata.json) and a copier (cp of new instances into inbox/)
  sampler  every second: the server's and the mount's RSS (VmRSS), threads and open
           descriptors (/proc/PID/status, /proc/PID/task, /proc/PID/fd)

Fails on: any unexpected answer (loadgen.c's top comment says which are expected, and how
it tells: a 404 only when a delete of every instance the request was about was sent before
the answer); a mount read that fails or differs when its instance was not deleted by the
run (an instance of a study the run deleted from may vanish under ls or cat); an instance
the run stored (HTTP or mount) and did not delete that is not retrievable byte-identical;
a deleted one that is; fsck not clean; the server or mount crashing or not stopping cleanly;
the server's descriptors (not counting the index's, index.db*, which the store pools, at most
16 connections) or threads not back to their idle number once the clients are gone; its RSS
at the end more than 2x + 128 MiB its RSS after the warm-up (the first quarter); the server's
or the mount's RSS not back to the warm-up's (+ 32 MiB) within 30 s of idling.
Never timings. Writes SCRATCH/load-report.json and prints the table.

Environment: DICOMFS, LOADGEN (the loadgen binary), SCRATCH, LOAD_TIME, LOAD_CLIENTS (50),
LOAD_SEED.
"""
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)
import testutil as tu  # noqa: E402
import webutil as wu  # noqa: E402
import loaddata as ld  # noqa: E402

LOAD_TIME = float(os.environ.get("LOAD_TIME", "60"))
CLIENTS = int(os.environ.get("LOAD_CLIENTS", "50"))
SEED = int(os.environ.get("LOAD_SEED", str(int(time.time()))))
LOADGEN = os.environ.get("LOADGEN") or os.path.join(os.path.dirname(tu.DICOMFS), "tests", "loadgen")
MOUNT_STUDY0 = 90000000  # the mount copier's studies (loadgen's count up from 1)
IDLE_SLACK_KIB = 32 * 1024  # idle RSS may exceed the warm-up's by this (caches of a grown index)


def proc_sample(pid):
    """(rss KiB, threads, descriptors not counting index.db*, index.db* descriptors, index.db-wal
    descriptors: one per open SQLite connection) or None."""
    try:
        rss = wu.proc_status_kb(pid, "VmRSS")
        threads = len(os.listdir(f"/proc/{pid}/task"))
        other = index = wal = 0
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                t = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if "/index.db" in t:
                index += 1
                wal += t.endswith("/index.db-wal")
            else:
                other += 1
        return rss, threads, other, index, wal
    except OSError:
        return None


def sample_until(pid, done, seconds):
    """proc_sample(pid) every 0.5 s until done(sample) or SECONDS pass: the last sample (None
    once the process is gone)."""
    end = time.monotonic() + seconds
    while True:
        now = proc_sample(pid)
        if not now or done(now) or time.monotonic() > end:
            return now
        time.sleep(0.5)


class Sampler(threading.Thread):
    def __init__(self, pids):
        super().__init__(daemon=True)
        self.pids = pids  # name -> pid
        self.samples = {n: [] for n in pids}  # name -> [(t, rss, threads, fds, index fds, wal fds)]
        self.stop = threading.Event()
        self.t0 = time.monotonic()

    def sample(self):
        for name, pid in self.pids.items():
            s = proc_sample(pid)
            if s:
                self.samples[name].append((time.monotonic() - self.t0,) + s)

    def run(self):
        while not self.stop.wait(1.0):
            self.sample()


class MountWorker(threading.Thread):
    """Reads (READER) or copies into inbox/ (copier) until STOP; records ops and failures."""

    def __init__(self, mnt, templates, stop, reader, seed):
        super().__init__(daemon=True)
        self.mnt, self.templates, self.stop, self.reader = mnt, templates, stop, reader
        self.rng = random.Random(seed)
        self.ms = {}  # op -> [ms]
        self.failures = []  # (op, study uid or None, sop uid or None, detail)
        self.copied = []  # (study, series, sop) whose close() succeeded
        self.tmp = None

    def timed(self, op, fn):
        t = time.monotonic()
        try:
            return fn()
        finally:
            self.ms.setdefault(op, []).append((time.monotonic() - t) * 1000)

    def fail(self, op, study, sop, detail):
        self.failures.append((op, study, sop, detail))

    def read_once(self):
        studies_dir = os.path.join(self.mnt, "studies")
        try:
            studies = self.timed("mount_ls", lambda: os.listdir(studies_dir))
        except OSError as e:
            return self.fail("mount_ls", None, None, f"ls studies/: {e}")
        studies = [s for s in studies if s.startswith(ld.ROOT + ".71.")]
        if not studies:
            return
        st = self.rng.choice(studies)
        sd = os.path.join(studies_dir, st)
        what = self.rng.random()
        try:
            if what < 0.15:
                data = self.timed("mount_metadata", lambda: open(os.path.join(sd, "metadata.json"), "rb").read())
                json.loads(data)
                return
            if what < 0.25:
                pats = self.timed("mount_ls", lambda: os.listdir(os.path.join(self.mnt, "patients")))
                if pats:
                    self.timed("mount_ls", lambda: os.listdir(os.path.join(self.mnt, "patients", self.rng.choice(pats))))
                return
            series = self.timed("mount_ls", lambda: os.listdir(os.path.join(sd, "series")))
            if not series:
                return
            se = self.rng.choice(series)
            idir = os.path.join(sd, "series", se, "instances")
            insts = self.timed("mount_ls", lambda: os.listdir(idir))
            if not insts:
                return
            name = self.rng.choice(insts)
        except (OSError, ValueError) as e:
            return self.fail("mount_ls", st, None, f"{e}")
        sop = name[:-4] if name.endswith(".dcm") else name
        try:
            data = self.timed("mount_cat", lambda: open(os.path.join(idir, name), "rb").read())
        except OSError as e:
            return self.fail("mount_cat", st, sop, f"cat: {e}")
        parsed = ld.parse_sop(sop)
        if not parsed:
            return self.fail("mount_cat", st, sop, "an instance name that is no load SOP UID")
        kind, n = parsed
        try:
            study_n = int(st.rsplit(".", 1)[1]) - 100000000
            series_n = int(se.rsplit(".", 1)[1]) - 100000000
        except ValueError:
            return self.fail("mount_cat", st, sop, "unexpected folder names")
        if data != ld.instance_bytes(self.templates, kind, study_n, series_n, n):
            self.fail("mount_cat", st, sop, f"{len(data)} bytes that differ from the instance's")

    def copy_once(self, k):
        study, series, sop = MOUNT_STUDY0 + k // 4, MOUNT_STUDY0 + k // 4, MOUNT_STUDY0 + k
        data = ld.instance_bytes(self.templates, 1, study, series, sop)
        dst = os.path.join(self.mnt, "inbox", f"load-{k}.dcm")
        with open(self.tmp, "wb") as f:
            f.write(data)
        try:
            self.timed("mount_cp", lambda: shutil.copyfile(self.tmp, dst))
            self.copied.append((study, series, sop))
        except OSError as e:
            self.fail("mount_cp", ld.study_uid(study), ld.sop_uid(1, sop), f"cp: {e}")

    def run(self):
        k = 0
        self.tmp = os.path.join(os.path.dirname(self.mnt), f"copy-{id(self)}.dcm")
        while not self.stop.is_set():
            if self.reader:
                self.read_once()
            else:
                self.copy_once(k)
                k += 1
                time.sleep(0.05)


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(p * (len(v) - 1) + 0.5))] if v else 0.0


def summary(samples, warm_t):
    """start (first), warm (first sample after WARM_T), peak and end of each field."""
    if not samples:
        return None
    warm = next((s for s in samples if s[0] >= warm_t), samples[-1])
    out = {}
    for i, name in ((1, "rss_kib"), (2, "threads"), (3, "fds"), (4, "index_fds"), (5, "connections")):
        out[name] = {"start": samples[0][i], "warm": warm[i], "peak": max(s[i] for s in samples), "end": samples[-1][i]}
    return out


def main():
    tu.require_binary()
    c = tu.Checker("load")
    scratch = tu.scratch("load")
    if not os.access(LOADGEN, os.X_OK):
        c.ok(False, f"the load generator is built ({LOADGEN})")
        c.finish()
    templates = ld.write_templates(os.path.join(scratch, "templates"))
    c.note(f"LOAD_TIME {LOAD_TIME:g} s, {CLIENTS} HTTP clients + 2 mount threads, seed {SEED}; "
           f"{os.cpu_count()} CPUs shared with whatever else runs (timings are noisy)")
    mnt = os.path.join(scratch, "mnt")
    os.makedirs(mnt)
    srv = wu.Server(scratch).start()
    mlog = open(os.path.join(scratch, "mount.log"), "wb")
    mount = subprocess.Popen([tu.DICOMFS, "mount", srv.archive, mnt], stdout=mlog, stderr=subprocess.STDOUT)
    report = {"load_time": LOAD_TIME, "clients": CLIENTS, "seed": SEED}
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and mount.poll() is None and not os.path.ismount(mnt):
            time.sleep(0.05)
        if not c.ok(os.path.ismount(mnt), "the mount is up"):
            return
        run(c, scratch, srv, mount, mnt, templates, report)
    finally:
        subprocess.run(["fusermount3", "-uz", mnt], capture_output=True, timeout=30)
        try:
            mrc = mount.wait(timeout=30)
        except subprocess.TimeoutExpired:
            mount.kill()  # our own child, by its Popen
            mrc = mount.wait()
        mlog.close()
        c.ok(mrc == 0, "the mount stops cleanly (exit 0)", f"exit {mrc}")
        srv.finish_check(c)
        p = tu.fsck(srv.archive)
        c.ok(p.returncode == 0, "fsck: the archive is consistent at the end", (p.stdout + p.stderr)[-1500:])
        with open(os.path.join(scratch, "load-report.json"), "w") as f:
            json.dump(report, f, indent=1)
        c.finish()


def warm_up(c, srv, templates):
    """One STOW, retrieve, QIDO and delete, so that the threads the server starts on first use
    (the store's commit thread...) are there when the idle numbers are taken."""
    n = 80000000
    data = ld.instance_bytes(templates, 1, n, n, n)
    path = f"/v2/studies/{ld.study_uid(n)}/series/{ld.series_uid(n)}/instances/{ld.sop_uid(1, n)}"
    r1 = srv.request("POST", "/v2/studies", body=wu.multipart([("application/dicom", data)], "warm"),
                     headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=warm',
                              "Accept": "application/dicom+json"})
    r2 = srv.get(path, accept="application/dicom; transfer-syntax=*")
    r3 = srv.get("/v2/studies?limit=1", accept="application/dicom+json")
    r4 = srv.request("DELETE", f"/v2/studies/{ld.study_uid(n)}")
    c.ok((r1.status, r2.status, r3.status, r4.status) == (200, 200, 200, 204), "warm-up: STOW, WADO, QIDO, delete",
         f"{r1.status} {r2.status} {r3.status} {r4.status}")


def run(c, scratch, srv, mount, mnt, templates, report):
    warm_up(c, srv, templates)
    time.sleep(1)
    sampler = Sampler({"server": srv.pid, "mount": mount.pid})
    sampler.sample()
    idle = proc_sample(srv.pid)
    sampler.start()
    stop = threading.Event()
    workers = [MountWorker(mnt, templates, stop, True, SEED), MountWorker(mnt, templates, stop, False, SEED + 1)]
    for w in workers:
        w.start()
    state_file = os.path.join(scratch, "state.txt")
    t0 = time.monotonic()
    p = subprocess.run([LOADGEN, srv.url, os.path.join(scratch, "templates"), str(LOAD_TIME), str(CLIENTS),
                        state_file, str(SEED)], capture_output=True, text=True, timeout=LOAD_TIME * 2 + 300)
    wall = time.monotonic() - t0
    stop.set()
    for w in workers:
        w.join(60)
    try:
        lg = json.loads(p.stdout)
    except ValueError:
        lg = None
    if not c.ok(lg is not None, "loadgen ran and reported", f"exit {p.returncode}; stdout {p.stdout[-800:]!r}; "
                f"stderr {p.stderr[-800:]!r}"):
        return
    report["http"] = lg
    errors = sum(r["errors"] for r in lg["routes"].values())
    c.ok(errors == 0 and p.returncode == 0, f"HTTP: no unexpected answer in {sum(r['requests'] for r in lg['routes'].values())} "
         f"requests (and the verification)", "\n     ".join(lg["errors"]))

    # mount: failures are expected only for instances of studies the run deleted from
    states = {}
    touched = set()  # studies the run deleted from (or whose state is unknown)
    with open(state_file) as f:
        for line in f:
            state, sop, study = line.split()
            states[sop] = state
            if state != "stored":
                touched.add(study)
    unexpected = [x for x in (f for w in workers for f in w.failures)
                  if not ((x[2] and states.get(x[2], "stored") != "stored") or (x[1] and x[1] in touched))]
    expected = sum(len(w.failures) for w in workers) - len(unexpected)
    mops = {}
    for w in workers:
        for op, v in w.ms.items():
            mops.setdefault(op, []).extend(v)
    c.ok(not unexpected, f"mount: no unexpected failure in {sum(len(v) for v in mops.values())} operations "
         f"({expected} expected: a study the run deleted from)", "\n     ".join(map(str, unexpected[:10])))
    copied = workers[1].copied
    bad = []
    for study, series, sop in copied:
        r = srv.get(f"/v2/studies/{ld.study_uid(study)}/series/{ld.series_uid(series)}/instances/{ld.sop_uid(1, sop)}",
                    accept="application/dicom; transfer-syntax=*")
        if r.status != 200 or r.body != ld.instance_bytes(templates, 1, study, series, sop):
            bad.append(f"{ld.sop_uid(1, sop)}: {wu.describe(r, 80)}")
    c.ok(copied and not bad, f"the {len(copied)} instances copied into the mount's inbox/ are retrievable "
         f"byte-identical over HTTP", "; ".join(bad[:5]))
    report["mount"] = {op: {"requests": len(v), "per_second": len(v) / wall, "p50_ms": pct(v, .5),
                            "p95_ms": pct(v, .95), "p99_ms": pct(v, .99), "max_ms": max(v)} for op, v in mops.items()}
    report["mount_failures"] = {"expected": expected, "unexpected": [list(map(str, x)) for x in unexpected[:20]]}

    # resources once the clients are gone
    now = sample_until(srv.pid, lambda n: n[1] <= idle[1] and n[2] <= idle[2], 20)
    sampler.stop.set()
    sampler.join(5)
    sampler.sample()
    warm_t = LOAD_TIME / 4
    res = {n: summary(s, warm_t) for n, s in sampler.samples.items()}
    report["resources"] = res
    report["samples"] = sampler.samples
    sv = res["server"]
    c.ok(now[2] <= idle[2], f"server descriptors back to idle once the clients are gone ({idle[2]}, index.db* apart)",
         f"{now[2]} descriptors")
    c.ok(now[1] <= idle[1], f"server threads back to idle ({idle[1]})", f"{now[1]} threads")
    # SQLite connections: the writer, the checkpointer and at most 16 idle in the store's pool,
    # one -wal descriptor each. index.db itself may have more: SQLite keeps a closed connection's descriptor while
    # others hold POSIX locks on the file (closing it would drop theirs) and reuses it at the next
    # open, so their number is bounded by the most connections ever open at once (one a thread).
    c.ok(now[4] <= 18, f"server: {now[4]} SQLite connections open when idle (the writer, the checkpointer and "
         f"the pool's 16 at most)")
    c.ok(now[3] - now[4] <= 1 + 18 + sv["threads"]["peak"], f"server: {now[3] - now[4]} index.db/-shm descriptors, "
         f"within the connections ever open at once (at most one a thread, {sv['threads']['peak']})")
    c.ok(sv["rss_kib"]["end"] <= 2 * sv["rss_kib"]["warm"] + 128 * 1024,
         "server RSS at the end within 2x + 128 MiB of its RSS after the warm-up",
         f"{sv['rss_kib']}")
    # Idle, serve's and mount's main threads hand malloc's free memory back every 10 s
    # (tools/idle.c): RSS falls back to the warm-up's level, or below, within 30 s.
    idle_rss = {}
    for name, pid in (("server", srv.pid), ("mount", mount.pid)):
        target = res[name]["rss_kib"]["warm"] + IDLE_SLACK_KIB
        rss = sample_until(pid, lambda n: n[0] <= target, 30)
        idle_rss[name] = rss[0] if rss else None
        c.ok(idle_rss[name] is not None and idle_rss[name] <= target,
             f"{name}: RSS back to the warm-up's level (+{IDLE_SLACK_KIB // 1024} MiB) once idle",
             f"{idle_rss[name]} KiB idle, {res[name]['rss_kib']}")
    report["idle_rss_kib"] = idle_rss
    print_table(report, wall)


def print_table(report, wall):
    lg = report["http"]
    print(f"\n#    {lg['seconds']:.0f} s of load, {report['clients']} clients; instances {lg['instances']}")
    print("#    route               requests    req/s    p50 ms   p95 ms   p99 ms   max ms  errors expected")
    rows = list(lg["routes"].items()) + list(report["mount"].items())
    for name, r in rows:
        print(f"#    {name:<18} {r['requests']:>9} {r['per_second']:>8.1f} {r['p50_ms']:>9.1f} {r['p95_ms']:>8.1f} "
              f"{r['p99_ms']:>8.1f} {r['max_ms']:>8.1f} {r.get('errors', 0):>7} {r.get('expected', 0):>8}")
    tot = sum(r["requests"] for n, r in lg["routes"].items() if not n.startswith("verify"))
    print(f"#    HTTP total (mix)    {tot:>9} {tot / lg['seconds']:>8.1f}")
    for name, res in report["resources"].items():
        if res:
            print(f"#    {name}: " + "; ".join(f"{k} start {v['start']} warm {v['warm']} peak {v['peak']} end {v['end']}"
                                            for k, v in res.items())
                  + f"; rss_kib idle {report.get('idle_rss_kib', {}).get(name)}")


if __name__ == "__main__":
    main()
