#!/usr/bin/python3
"""mountbench.py — the benchmark's `mount` step: the archive as a folder (FUSE), against the
same work done on a plain directory of the same disk.

    mountbench.py --bin DICOMFS --dataset DS --work DIR [--logs DIR] [--schema HASH]
                  [--reps N] [--read-passes N] [--cold-passes N] [--ls-runs N]
                  [--series N] [--studies "FEW MANY"] [--rebuild] [--fsyncbench BIN]
                  [--passthrough BIN] [--no-sync-close]

Prints one JSON object (see the end of main()); progress goes to stderr. Every mount is
`DICOMFS mount ARCHIVE MP` in the foreground (a child of this process), waited for with
os.path.ismount, and always unmounted (fusermount3 -u, then SIGTERM/SIGKILL of that child and
fusermount3 -uz if it does not end) — also on an exception, SIGINT or SIGTERM.

copy    For each of --reps rounds and each dataset set (small, large): a fresh archive,
        mounted; `cp -r DS/SET MP/inbox/` then `sync MP/inbox` timed (close() returns once a
        file is checked; `sync DIR` once every queued commit is durable), side "mount"; then
        unmounted and the stored instances counted in index.db. Unless --no-sync-close, the
        same with `dicomfs mount --sync-close` ("mount_sync_close": each close waits for
        durability). With --passthrough (tools/bench/passthrough.c, a minimal passthrough
        FUSE: the goals' anchor), after each the same `cp -r` + `sync` into it over a fresh
        directory of the same disk: "fuse" (plain) and "fuse_fsync_close" (-o fsync_close:
        each close fsyncs, the durability --sync-close gives). The peer: `cp -r DS/SET PLAIN/`
        followed by `sync`, timed together, into a fresh directory on the same file system.
        Sources read once first (page cache). With --fsyncbench, also `fsyncbench copy` of the
        same files (each written and fsync'd before the next), for context.
read    On the last round's two archives: `find MP/studies -name '*.dcm' -print0 | xargs -0
        cat >/dev/null` against the same pipeline over ARCHIVE/objects ("direct") and, with
        --passthrough, through the passthrough FUSE (-o keep_cache, as the mount keeps
        instances' pages) over a mirror of studies/ whose .dcm files are hard links to the
        objects ("fuse": the same files through the same tree, the goal's anchor) and over
        ARCHIVE/objects ("fuse_flat": the direct reads' tree). Warm: one untimed pass each,
        then --read-passes timed passes, the sides in turn (each goes first once in a while).
        Cold (when /proc/sys/vm/drop_caches can be written): `sync; echo 3 > drop_caches`
        before each of --cold-passes passes (all sides but fuse_flat). The mount process
        keeps its own SQLite cache; only the kernel's caches are dropped. Also, warm, the
        find alone (no reads): where the time goes.
listing Archives of one --series-instance series plus FEW or MANY one-instance studies
        (synthetic ~1 KB instances from gen_synth.py's template), built once with `dicomfs
        ingest` and kept under WORK (keyed by the sizes, the generator and the index schema).
        On each: a fresh mount, caches dropped (when possible), then `ls -l` of the series'
        instances/ directory: the first run (cold), --ls-runs runs 1.2 s apart (the mount's
        1 s entry/attribute caches expired: the mount's own work) and --ls-runs back to back
        (kernel caches valid); `ls` of studies/ likewise (first run, then --ls-runs). When
        the first `ls -l` is slow, fewer runs (as many as fit in LS_BUDGET_MS, at least one)
        and none back to back if it took over 1 s (the caches expire during a run anyway).
"""
import argparse
import hashlib
import inspect
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

DROP = "/proc/sys/vm/drop_caches"
BIG = 2000000000      # UID number of the big series' study and series; its SOPs from here
EXTRA = 3000000000    # UID numbers of the one-instance studies
PER_DIR = 10000
LS_BUDGET_MS = 30000  # timed `ls -l` runs of the series per archive, after the first one


def log(msg):
    print("[mount %s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


def rm(path):
    shutil.rmtree(path, ignore_errors=True)
    if os.path.lexists(path):
        subprocess.run(["rm", "-rf", path])


def sh(cmd):
    """Runs CMD in bash; (seconds, CompletedProcess) with stderr captured."""
    t0 = time.perf_counter()
    p = subprocess.run(["bash", "-c", cmd], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return time.perf_counter() - t0, p


def q(path):
    return "'" + path.replace("'", "'\\''") + "'"


def warm(path):
    subprocess.run(["bash", "-c", "find %s -type f -print0 | xargs -0 -r cat >/dev/null" % q(path)])


def can_drop():
    try:
        with open(DROP, "w") as f:
            f.write("1\n")
        return True
    except OSError:
        return False


def drop_caches():
    os.sync()
    with open(DROP, "w") as f:
        f.write("3\n")


class Stop(Exception):
    pass


def on_term(signum, frame):
    raise Stop("signal %d" % signum)


def holders(mp):
    """Processes with a cwd, root or open file under MP: "pid (command)", for a busy unmount."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        links = []
        for name in ("cwd", "root"):
            try:
                links.append(os.readlink("/proc/%s/%s" % (pid, name)))
            except OSError:
                pass
        try:
            for fd in os.listdir("/proc/%s/fd" % pid):
                try:
                    links.append(os.readlink("/proc/%s/fd/%s" % (pid, fd)))
                except OSError:
                    pass
        except OSError:
            pass
        if any(x == mp or x.startswith(mp + "/") for x in links):
            try:
                with open("/proc/%s/cmdline" % pid, "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                cmd = "?"
            out.append("%s (%s)" % (pid, cmd[:120]))
    return out


class Mount:
    """`with Mount(...) as m:` — the archive mounted at m.mp for the block's length."""

    def __init__(self, binary, archive, mp, logpath, problems, cmd=None):
        self.bin, self.archive, self.mp, self.logpath = binary, archive, mp, logpath
        self.problems = problems  # list of strings: anomalies seen (log lines, exit codes)
        self.cmd = cmd or [binary, "mount", archive, mp]  # e.g. the passthrough's, or with --sync-close
        self.p = None

    def __enter__(self):
        os.makedirs(self.mp, exist_ok=True)
        if os.path.ismount(self.mp):  # left over from a killed run
            subprocess.run(["fusermount3", "-uz", self.mp], stderr=subprocess.DEVNULL)
        self.err = open(self.logpath, "w")
        self.t0 = time.perf_counter()
        self.p = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL,
                                  stdout=self.err, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while not os.path.ismount(self.mp):
            if self.p.poll() is not None:
                self.err.close()
                raise RuntimeError("dicomfs mount exited %s before mounting: %s" % (self.p.returncode, self.tail()))
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("dicomfs mount: not mounted after 20 s: %s" % self.tail())
            time.sleep(0.01)
        self.mount_seconds = time.perf_counter() - self.t0
        return self

    def tail(self, n=3):
        try:
            with open(self.logpath) as f:
                return " | ".join(f.read().splitlines()[-n:])
        except OSError:
            return ""

    def stop(self):
        """Unmounts and waits for the process; records anything unusual in problems."""
        if self.p is None:
            return
        p, self.p = self.p, None
        rc = None
        if p.poll() is None:
            for _ in range(50):  # EBUSY right after a close is possible: retry for 5 s
                r = subprocess.run(["fusermount3", "-u", self.mp], stderr=subprocess.PIPE, text=True)
                if r.returncode == 0 or not os.path.ismount(self.mp):
                    break
                time.sleep(0.1)
            else:
                self.problems.append("fusermount3 -u %s kept failing for 5 s: %s; processes using it: %s" % (
                    self.mp, r.stderr.strip(), ", ".join(holders(self.mp)) or "none found in /proc"))
            try:
                rc = p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.problems.append("dicomfs mount did not end within 60 s of fusermount3 -u; SIGTERM")
                p.send_signal(signal.SIGTERM)
                try:
                    rc = p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.problems.append("dicomfs mount ignored SIGTERM for 10 s; SIGKILL")
                    p.kill()
                    rc = p.wait()
        else:
            rc = p.returncode
            self.problems.append("dicomfs mount of %s had exited (%s) before the unmount: %s" % (
                self.archive, rc, self.tail()))
        if os.path.ismount(self.mp):
            subprocess.run(["fusermount3", "-uz", self.mp], stderr=subprocess.DEVNULL)
        self.err.close()
        if rc not in (0, None):
            self.problems.append("dicomfs mount of %s exited %s: %s" % (self.archive, rc, self.tail()))
        with open(self.logpath) as f:
            for line in f:
                line = line.strip()
                if line and not (" mounted at " in line or "stopping" in line or "unmounted" in line or
                                 "Ignoring invalid max threads value" in line):
                    self.problems.append("dicomfs mount log (%s): %s" % (os.path.basename(self.logpath), line[:300]))

    def __exit__(self, *exc):
        self.stop()
        return False


def count_instances(archive):
    try:
        con = sqlite3.connect("file:%s?mode=ro" % os.path.join(archive, "index.db"), uri=True)
        try:
            return con.execute("SELECT count(*) FROM instance").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error as e:
        return "error: %s" % e


def tree_size(path, pattern=None):
    n = b = 0
    for d, _, files in os.walk(path):
        for f in files:
            if pattern and not f.endswith(pattern):
                continue
            n += 1
            b += os.lstat(os.path.join(d, f)).st_size
    return n, b


# ---- copy ------------------------------------------------------------------------------

def fuse_copy(a, rep, setname, src, files, nbytes, side, opts, problems):
    """`cp -r SRC` into the passthrough FUSE (over a fresh directory of the same disk), then
    `sync`: the same copy through FUSE with no ingest (fsync_close: each close fsyncs)."""
    back = os.path.join(a.work, "fuse-back")
    mp = os.path.join(a.work, "mp")
    rm(back)
    os.makedirs(back)
    os.sync()
    with Mount(a.passthrough, back, mp, os.path.join(a.logs, "mount-copy-%s-%s.log" % (setname, side)), problems,
               [a.passthrough, "-f"] + opts + [back, mp]):
        secs, p = sh("cp -r %s %s/" % (q(src), q(mp)))
        ssecs, sp = sh("sync %s" % q(mp))
    pf, pb = tree_size(back)
    rm(back)
    log("copy %s (%d/%d): %s cp -r %.2f s + sync %.2f s" % (setname, rep, a.reps, side, secs, ssecs))
    return {"set": setname, "side": side, "rep": rep, "files": files, "bytes": nbytes, "seconds": secs + ssecs,
            "cp_seconds": secs, "sync_seconds": ssecs, "cp_exit": p.returncode or sp.returncode,
            "cp_errors": p.stderr.splitlines()[:5], "copied_files": pf, "copied_bytes": pb}


def copy_round(a, rep, setname, problems):
    src = os.path.join(a.dataset, setname)
    files, nbytes = tree_size(src)
    out = []
    arch = os.path.join(a.work, "copy-%s" % setname)
    mp = os.path.join(a.work, "mp")
    plain = os.path.join(a.work, "plain")
    rm(arch)
    rm(plain)
    warm(src)
    os.sync()
    log("copy %s (%d/%d): cp -r into the mount's inbox, %d files, %d MB" % (
        setname, rep, a.reps, files, nbytes // 1000000))
    sides = [("mount", [])] + ([("mount_sync_close", ["--sync-close"])] if a.sync_close_too else [])
    for side, extra in sides:
        rm(arch)
        os.sync()
        with Mount(a.bin, arch, mp, os.path.join(a.logs, "mount-copy-%s%s.log" % (setname, "-sc" if extra else "")),
                   problems, [a.bin, "mount", arch, mp] + extra) as m:
            secs, p = sh("cp -r %s %s/inbox/" % (q(src), q(mp)))
            # Default closes return once a file is checked; `sync DIR` waits for the queued
            # commits (durable, as the plain copy's sync).
            ssecs, sp = sh("sync %s/inbox" % q(mp))
            errs = [x for x in p.stderr.splitlines() if x.strip()]
            efiles = int(subprocess.run(["bash", "-c", "find %s/inbox -name '*.error' | wc -l" % q(mp)],
                                        capture_output=True, text=True).stdout.strip() or 0)
            listed = int(subprocess.run(["bash", "-c", "find %s/studies -name '*.dcm' | wc -l" % q(mp)],
                                        capture_output=True, text=True).stdout.strip() or 0)
        stored = count_instances(arch)
        out.append({"set": setname, "side": side, "rep": rep, "files": files, "bytes": nbytes, "seconds": secs + ssecs,
                    "cp_seconds": secs, "sync_seconds": ssecs, "sync_exit": sp.returncode,
                    "mount_seconds": m.mount_seconds, "cp_exit": p.returncode or sp.returncode,
                    "cp_error_lines": len(errs), "cp_errors": errs[:5], "error_files": efiles, "stored": stored,
                    "listed": listed})
        log("copy %s (%d/%d): %s cp -r %.2f s + sync %.2f s (stored %s, cp exit %d)" % (
            setname, rep, a.reps, side, secs, ssecs, stored, p.returncode))
        if a.passthrough:  # the anchor: the same cp -r through a minimal passthrough FUSE
            pside, popts = ("fuse", []) if side == "mount" else ("fuse_fsync_close", ["-o", "fsync_close"])
            out.append(fuse_copy(a, rep, setname, src, files, nbytes, pside, popts, problems))
    os.sync()
    os.makedirs(plain)
    os.sync()
    t0 = time.perf_counter()
    r = subprocess.run(["cp", "-r", src, plain + "/"], stderr=subprocess.PIPE, text=True)
    t1 = time.perf_counter()
    os.sync()  # sync(2), as sync(1) does
    t2 = time.perf_counter()
    pf, pb = tree_size(plain)
    out.append({"set": setname, "side": "plain", "rep": rep, "files": files, "bytes": nbytes, "seconds": t2 - t0,
                "cp_seconds": t1 - t0, "sync_seconds": t2 - t1, "cp_exit": r.returncode,
                "cp_errors": r.stderr.splitlines()[:5], "copied_files": pf, "copied_bytes": pb})
    log("copy %s (%d/%d): plain cp -r + sync %.2f s (sync %.2f s)" % (setname, rep, a.reps, t2 - t0, t2 - t1))
    rm(plain)
    if a.fsyncbench:  # context: the same files each written and fsync'd before the next
        lst = os.path.join(a.work, "list-%s.txt" % setname)
        with open(lst, "w") as f:
            f.writelines(sorted(os.path.join(d, x) + "\n" for d, _, xs in os.walk(src) for x in xs))
        os.makedirs(plain)
        os.sync()
        r = subprocess.run([a.fsyncbench, "copy", plain, lst], capture_output=True, text=True)
        try:
            x = json.loads(r.stdout)
            out.append({"set": setname, "side": "fsync", "rep": rep, "files": x["files"], "bytes": x["bytes"],
                        "seconds": x["seconds"], "cp_exit": r.returncode, "copied_files": x["files"]})
            log("copy %s (%d/%d): fsyncbench copy (fsync per file) %.2f s" % (setname, rep, a.reps, x["seconds"]))
        except (ValueError, KeyError):
            problems.append("fsyncbench copy %s failed (exit %d): %s" % (setname, r.returncode, r.stderr[:300]))
        rm(plain)
    return out


# ---- read ------------------------------------------------------------------------------

def mirror_tree(mp, arch, dst):
    """A plain copy of the mount's studies/ tree under DST/studies: the same folders, each
    instance file a hard link to its object (the same files), the metadata files copied. The
    passthrough FUSE over it reads the same files through the same tree as the mount."""
    rm(dst)
    try:
        con = sqlite3.connect("file:%s?mode=ro" % os.path.join(arch, "index.db"), uri=True)
        objects = dict(con.execute("SELECT uid, object FROM instance"))
        con.close()
    except sqlite3.Error:
        objects = {}
    top = os.path.join(mp, "studies")
    for d, dirs, files in os.walk(top):
        here = os.path.join(dst, "studies", os.path.relpath(d, top))
        os.makedirs(here, exist_ok=True)
        for f in files:
            obj = objects.get(f[:-4]) if f.endswith(".dcm") else None
            if obj:
                os.link(os.path.join(arch, obj), os.path.join(here, f))
            else:
                shutil.copyfile(os.path.join(d, f), os.path.join(here, f))


def read_set(a, setname, dropping, problems):
    """Warm (and cold) `find | xargs cat` of every instance: through the mount's studies/,
    directly over ARCHIVE/objects, and (with --passthrough) through the passthrough FUSE over
    the same tree (a mirror of studies/ whose instance files are the objects, hard-linked:
    "fuse", the goal's anchor) and over objects/ ("fuse_flat": the direct reads' tree)."""
    arch = os.path.join(a.work, "copy-%s" % setname)
    mp = os.path.join(a.work, "mp")
    pmp = os.path.join(a.work, "mp-fuse")
    mirror = os.path.join(a.work, "mirror-%s" % setname)
    res = {"set": setname}
    cmds = {"direct": "find %s/objects -name '*.dcm' -print0 | xargs -0 cat >/dev/null" % q(arch),
            "mount": "find %s/studies -name '*.dcm' -print0 | xargs -0 cat >/dev/null" % q(mp)}
    res["direct_files"], res["direct_bytes"] = tree_size(os.path.join(arch, "objects"), ".dcm")
    with Mount(a.bin, arch, mp, os.path.join(a.logs, "mount-read-%s.log" % setname), problems):
        res["mount_files"], res["mount_bytes"] = tree_size(os.path.join(mp, "studies"), ".dcm")
        if (res["mount_files"], res["mount_bytes"]) != (res["direct_files"], res["direct_bytes"]):
            problems.append("read %s: the mount shows %d .dcm files (%d bytes), objects/ holds %d (%d bytes)" % (
                setname, res["mount_files"], res["mount_bytes"], res["direct_files"], res["direct_bytes"]))
        anchors = []
        if a.passthrough:
            mirror_tree(mp, arch, mirror)
            anchors = [("fuse", mirror, "studies"), ("fuse_flat", arch, "objects")]
        with PassthroughSet(a, anchors, pmp, setname, problems) as pts:
            for side, path in pts.items():
                cmds[side] = "find %s -name '*.dcm' -print0 | xargs -0 cat >/dev/null" % q(path)
            sides = list(cmds)
            log("read %s: %d files, %d MB; warm: 1 untimed + %d timed passes each (%s, in turn)" % (
                setname, res["direct_files"], res["direct_bytes"] // 1000000, a.read_passes, ", ".join(sides)))
            for side in sides:
                sh(cmds[side])
            warm_t = {k: [] for k in sides}
            for i in range(a.read_passes):
                for side in sides[i % len(sides):] + sides[:i % len(sides)]:  # each goes first in turn
                    secs, p = sh(cmds[side])
                    if p.returncode != 0:
                        problems.append("read %s %s pass: exit %d: %s" % (setname, side, p.returncode,
                                                                          p.stderr[:300]))
                    warm_t[side].append(secs)
            res["warm"] = warm_t
            # Where the time goes: the same find without the reads (warm, same alternation).
            find_t = {k: [] for k in sides}
            for i in range(a.read_passes):
                for side in sides:
                    secs, _ = sh(cmds[side].split(" -print0 |")[0] + " >/dev/null")
                    find_t[side].append(secs)
            res["find_only"] = find_t
            log("read %s warm: %s; find alone: %s (medians)" % (
                setname, ", ".join("%s %.3f s" % (k, statistics.median(v)) for k, v in warm_t.items()),
                ", ".join("%s %.3f s" % (k, statistics.median(v)) for k, v in find_t.items())))
            if dropping:
                cold_sides = [k for k in sides if k != "fuse_flat"]
                cold_t = {k: [] for k in cold_sides}
                for i in range(a.cold_passes):
                    for side in cold_sides[i % len(cold_sides):] + cold_sides[:i % len(cold_sides)]:
                        drop_caches()
                        secs, p = sh(cmds[side])
                        if p.returncode != 0:
                            problems.append("read %s %s cold pass: exit %d: %s" % (setname, side, p.returncode,
                                                                                   p.stderr[:300]))
                        cold_t[side].append(secs)
                res["cold"] = cold_t
                log("read %s cold: %s (medians)" % (
                    setname, ", ".join("%s %.3f s" % (k, statistics.median(v)) for k, v in cold_t.items())))
    rm(mirror)
    return res


class PassthroughSet:
    """`with PassthroughSet(a, [(side, backing, subdir)...], base, ...) as pts:` — one
    passthrough FUSE mount per anchor (at BASE-<side>, with keep_cache: the page cache kept
    across opens, as the mount keeps it for instances), pts = {side: the mounted SUBDIR}."""

    def __init__(self, a, anchors, base, setname, problems):
        self.a, self.anchors, self.base, self.setname, self.problems = a, anchors, base, setname, problems
        self.mounts = []

    def __enter__(self):
        out = {}
        try:
            for side, backing, sub in self.anchors:
                mp = "%s-%s" % (self.base, side)
                m = Mount(self.a.passthrough, backing, mp,
                          os.path.join(self.a.logs, "mount-read-%s-%s.log" % (self.setname, side)), self.problems,
                          [self.a.passthrough, "-f", "-o", "keep_cache", backing, mp])
                m.__enter__()
                self.mounts.append(m)
                out[side] = os.path.join(mp, sub)
        except BaseException:
            self.__exit__()
            raise
        return out

    def __exit__(self, *exc):
        for m in self.mounts:
            m.stop()
        self.mounts = []
        return False


# ---- listing ---------------------------------------------------------------------------

def gen_listing(outdir, series_n, studies_n):
    """The files of a listing archive: one series of SERIES_N instances (one study), and
    STUDIES_N studies of one instance each; gen_synth.py's template, UIDs of their own."""
    import gen_synth
    data, off = gen_synth.template()
    buf = bytearray(data)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC

    def put(key, value, i=0):
        o = off[key][i]
        buf[o:o + len(value)] = value

    def study(name, pid, acc, date):
        put("name", name.ljust(gen_synth.W_NAME).encode())
        put("pid", pid.encode())
        put("acc", acc.encode())
        for i in range(len(off["date"])):
            put("date", date, i)

    def write(k, i):
        d = os.path.join(outdir, "d%04d" % (k // PER_DIR))
        if k % PER_DIR == 0:
            os.makedirs(d, exist_ok=True)
        fd = os.open(os.path.join(d, "%07d.dcm" % k), flags, 0o644)
        os.write(fd, buf)
        os.close(fd)

    k = 0
    study("BIGSERIES^LISTING", "BIGSER0001", "BIGACC0001", b"20200101")
    put("study", b"%d" % BIG)
    put("series", b"%d" % BIG)
    put("serno", b"0001")
    for i in range(series_n):
        for j in range(2):
            put("sop", b"%d" % (BIG + i), j)
        put("inst", b"%06d" % (i % 1000000 + 1))
        write(k, i)
        k += 1
    put("inst", b"000001")
    for s in range(studies_n):
        study(*gen_synth.background(s))
        put("study", b"%d" % (EXTRA + s))
        put("series", b"%d" % (EXTRA + s))
        for j in range(2):
            put("sop", b"%d" % (EXTRA + s), j)
        write(k, s)
        k += 1
    return k, len(data)


def gen_key(series_n, studies_n, schema):
    import gen_synth
    h = hashlib.sha256()
    h.update(inspect.getsource(gen_synth).encode())
    h.update(inspect.getsource(gen_listing).encode())
    h.update(b"%d %d" % (BIG, EXTRA))
    return "series=%d studies=%d gen=%s schema=%s" % (series_n, studies_n, h.hexdigest()[:12], schema)


def listing_archive(a, studies_n, problems):
    d = os.path.join(a.work, "ls-s%d-x%d" % (a.series, studies_n))
    key = gen_key(a.series, studies_n, a.schema)
    info = {"dir": d, "studies": studies_n, "instances": a.series + studies_n}
    if not a.rebuild and os.path.isfile(os.path.join(d, "ready")) and open(os.path.join(d, "ready")).read().strip() == key:
        log("listing: reusing %s" % d)
        info["reused"] = True
        with open(os.path.join(d, "build.json")) as f:
            info["build"] = json.load(f)
        return info
    need = (a.series + studies_n) * 12 * 1024
    st = os.statvfs(a.work)
    if st.f_bavail * st.f_frsize < need:
        raise RuntimeError("listing archive %s needs ~%d MB free" % (d, need // 1000000))
    rm(d)
    os.makedirs(d)
    log("listing: generating %d + %d synthetic instances into %s" % (a.series, studies_n, d))
    t0 = time.perf_counter()
    files = os.path.join(d, "files")
    n, size = gen_listing(files, a.series, studies_n)
    t1 = time.perf_counter()
    log("listing: generated in %.1f s; ingesting" % (t1 - t0))
    logpath = os.path.join(a.logs, "mount-ls-ingest-%d.log" % studies_n)
    with open(logpath, "w") as lf:
        r = subprocess.run([a.bin, "ingest", os.path.join(d, "archive"), files], stdout=subprocess.DEVNULL, stderr=lf)
    t2 = time.perf_counter()
    stored = count_instances(os.path.join(d, "archive"))
    if r.returncode != 0 or stored != n:
        raise RuntimeError("listing: dicomfs ingest exited %d, %s of %d stored (see %s)" % (r.returncode, stored, n, logpath))
    log("listing: ingested %d in %.1f s" % (n, t2 - t1))
    rm(files)
    info["reused"] = False
    info["build"] = {"generate_seconds": t1 - t0, "ingest_seconds": t2 - t1, "instances": n, "file_size": size,
                     "built": time.strftime("%Y-%m-%dT%H:%M:%S")}
    with open(os.path.join(d, "build.json"), "w") as f:
        json.dump(info["build"], f)
    with open(os.path.join(d, "ready"), "w") as f:
        f.write(key + "\n")
    return info


def ls_time(args):
    t0 = time.perf_counter()
    p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    t = (time.perf_counter() - t0) * 1e3
    return t, p


def listing(a, studies_n, dropping, problems):
    info = listing_archive(a, studies_n, problems)
    arch = os.path.join(info["dir"], "archive")
    mp = os.path.join(a.work, "mp")
    import gen_synth
    sdir = "studies/%s.1.%d/series/%s.2.%d/instances" % (gen_synth.ROOT, BIG, gen_synth.ROOT, BIG)
    with Mount(a.bin, arch, mp, os.path.join(a.logs, "mount-ls-%d.log" % studies_n), problems):
        path = os.path.join(mp, sdir)
        if dropping:
            drop_caches()
        info["cold_dropped"] = dropping

        def lsl():
            t, p = ls_time(["ls", "-l", path])
            lines = p.stdout.count(b"\n")
            if p.returncode != 0 or lines != a.series + 1:
                problems.append("ls -l of the series @%d studies: exit %d, %d lines (want %d): %s" % (
                    studies_n, p.returncode, lines, a.series + 1, p.stderr.decode(errors="replace")[:300]))
            return t

        def lss():
            t, p = ls_time(["ls", os.path.join(mp, "studies")])
            lines = p.stdout.count(b"\n")
            if p.returncode != 0 or lines != studies_n + 1:
                problems.append("ls studies/ @%d studies: exit %d, %d entries (want %d): %s" % (
                    studies_n, p.returncode, lines, studies_n + 1, p.stderr.decode(errors="replace")[:300]))
            return t

        log("listing @%d studies: ls -l of the %d-instance series, first run (cold%s)" % (
            studies_n, a.series, ", caches dropped" if dropping else ""))
        r = {"entries": a.series, "cold_ms": lsl(), "expired_ms": [], "warm_ms": []}
        # A slow listing gets fewer runs (LS_BUDGET_MS of them at most, but one at least), and
        # no back-to-back runs when one run outlasts the 1 s caches (they would be the same).
        runs = max(1, min(a.ls_runs, int(LS_BUDGET_MS // max(r["cold_ms"], 1))))
        warm_runs = a.ls_runs if r["cold_ms"] < 1000 else 0
        r["runs_cut"] = runs < a.ls_runs
        log("listing @%d studies: first %.0f ms; %d runs 1.2 s apart, %d back to back" % (
            studies_n, r["cold_ms"], runs, warm_runs))
        for _ in range(runs):
            time.sleep(1.2)
            r["expired_ms"].append(lsl())
        for _ in range(warm_runs):
            r["warm_ms"].append(lsl())
        info["ls_l"] = r
        log("listing @%d studies: ls -l median %.0f ms (caches expired)%s" % (
            studies_n, statistics.median(r["expired_ms"]),
            ", %.0f ms back to back" % statistics.median(r["warm_ms"]) if r["warm_ms"] else ""))
        time.sleep(1.2)
        s = {"entries": studies_n + 1, "first_ms": lss(), "runs_ms": []}
        for _ in range(a.ls_runs):
            s["runs_ms"].append(lss())
        info["ls_studies"] = s
        log("listing @%d studies: ls studies/ first %.0f ms, median %.0f ms" % (
            studies_n, s["first_ms"], statistics.median(s["runs_ms"])))
    return info


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--logs")
    ap.add_argument("--schema", default="unknown")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--read-passes", type=int, default=5)
    ap.add_argument("--cold-passes", type=int, default=3)
    ap.add_argument("--ls-runs", type=int, default=5)
    ap.add_argument("--series", type=int, default=10000)
    ap.add_argument("--studies", default="100 100000", help="the two numbers of extra studies")
    ap.add_argument("--rebuild", action="store_true")
    ap.add_argument("--fsyncbench", help="fsyncbench.c's binary: also time a copy with fsync per file")
    ap.add_argument("--passthrough", help="passthrough.c's binary: the same copy-ins and reads through a minimal "
                    "passthrough FUSE (the goals' anchor)")
    ap.add_argument("--no-sync-close", dest="sync_close_too", action="store_false",
                    help="skip the copy-ins with `dicomfs mount --sync-close` (and the passthrough's fsync_close)")
    ap.add_argument("--parts", default="copy read listing")
    a = ap.parse_args()
    a.work = os.path.abspath(a.work)
    a.logs = os.path.abspath(a.logs or a.work)
    os.makedirs(a.work, exist_ok=True)
    os.makedirs(a.logs, exist_ok=True)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    problems, errors = [], []
    dropping = can_drop()
    out = {"reps": a.reps, "read_passes": a.read_passes, "cold_passes": a.cold_passes if dropping else 0,
           "ls_runs": a.ls_runs, "series": a.series, "drop_caches": dropping,
           "copy": [], "read": [], "listing": [], "problems": problems, "errors": errors}
    parts = a.parts.split()
    t_start = time.perf_counter()
    try:
        if "copy" in parts:
            for rep in range(1, a.reps + 1):
                for setname in ("small", "large"):
                    try:
                        out["copy"] += copy_round(a, rep, setname, problems)
                    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
                        errors.append("copy %s round %d: %s" % (setname, rep, e))
                        log("ERROR: " + errors[-1])
        if "read" in parts:
            for setname in ("small", "large"):
                if not os.path.isfile(os.path.join(a.work, "copy-%s" % setname, "index.db")):
                    errors.append("read %s: no archive from the copy part" % setname)
                    continue
                try:
                    out["read"].append(read_set(a, setname, dropping, problems))
                except (RuntimeError, OSError, subprocess.SubprocessError) as e:
                    errors.append("read %s: %s" % (setname, e))
                    log("ERROR: " + errors[-1])
        if "listing" in parts:
            for n in (int(x) for x in a.studies.split()):
                try:
                    out["listing"].append(listing(a, n, dropping, problems))
                except (RuntimeError, OSError, subprocess.SubprocessError) as e:
                    errors.append("listing @%d studies: %s" % (n, e))
                    log("ERROR: " + errors[-1])
    except (Stop, KeyboardInterrupt) as e:
        errors.append("interrupted: %s" % (e or "SIGINT"))
    finally:
        for setname in ("small", "large"):  # 300 MB; the figures are kept
            rm(os.path.join(a.work, "copy-%s" % setname))
        rm(os.path.join(a.work, "plain"))
    out["seconds"] = time.perf_counter() - t_start
    for p in problems:
        log("problem: " + p)
    print(json.dumps(out))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
