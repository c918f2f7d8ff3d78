"""Shared by the crash, power-loss and disk tests (tests/crash/*.py).

  Proc / Serve / Mount   `dicomfs serve` and `dicomfs mount` processes on one archive,
                         started, waited for, killed (SIGKILL) or stopped; a killed
                         mount is lazily unmounted (fusermount3 -uz).
  Gen                    new DICOM instances (Part-10 bytes) with unique UIDs, seeded.
  Model                  what a user was promised: every acknowledged instance (sha256
                         of its bytes), acknowledged deletes, sent-but-unanswered
                         writes ("maybe") that the checks resolve to all-or-nothing.
  Checker                checks the archive against the model through HTTP (WADO,
                         metadata, QIDO, change feed, extended query tags), fsck and
                         the mount.

Everything is invariants a user is told (docs/ARCHITECTURE.md 1, 4, 6, 8), never the
archive's file layout: the checks survive a change of how commits record their intents.
"""
import hashlib
import http.client
import io
import json
import os
import random
import re
import select
import signal
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import testutil as tu  # noqa: E402
import webutil as wu  # noqa: E402

import pydicom  # noqa: E402
from pydicom.dataset import FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian  # noqa: E402

HOST = "127.0.0.1"
ORIGINAL = "application/dicom; transfer-syntax=*"
DJSON = "application/dicom+json"
ROOT = "1.2.826.0.1.3680043.9.7777.91"

_procs = []


def _cleanup():
    for p in list(_procs):
        p.kill()


def install_cleanup(extra=None):
    """Kills every started process (and runs EXTRA) at exit and on SIGTERM/SIGINT."""
    import atexit

    def run_all():
        _cleanup()
        if extra:
            extra()
    atexit.register(run_all)

    def on_signal(signum, frame):
        run_all()
        os._exit(128 + signum)
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, on_signal)


# ---- Processes ---------------------------------------------------------------------------

class Proc:
    def __init__(self, args, log):
        self.args = args
        self.log = log
        self.p = None

    def start_proc(self, stdout=subprocess.DEVNULL):
        self.errf = open(self.log, "ab")
        self.p = subprocess.Popen([tu.DICOMFS] + self.args, stdout=stdout, stderr=self.errf,
                                  stdin=subprocess.DEVNULL)
        _procs.append(self)

    def alive(self):
        return self.p is not None and self.p.poll() is None

    def kill(self):
        """SIGKILL, at once (the crash)."""
        if self.p is None:
            return None
        if self.p.poll() is None:
            try:
                self.p.send_signal(signal.SIGKILL)
            except OSError:
                pass
        return self.reap()

    def stop(self, timeout=30):
        if self.p is None:
            return None
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
        return self.reap()

    def reap(self):
        rc = self.p.wait()
        try:
            if self.p.stdout:
                self.p.stdout.close()
            self.errf.close()
        except Exception:
            pass
        self.p = None
        if self in _procs:
            _procs.remove(self)
        self.after_exit()
        return rc

    def after_exit(self):
        pass

    def stderr_tail(self, n=1500):
        try:
            with open(self.log, "rb") as f:
                return f.read().decode("utf-8", "replace")[-n:]
        except OSError:
            return ""


class Serve(Proc):
    def __init__(self, archive, log, args=()):
        super().__init__(["serve", archive, "--http", f"{HOST}:0", *args], log)
        self.port = None

    def start(self, timeout=30):
        self.start_proc(stdout=subprocess.PIPE)
        line = b""
        deadline = time.time() + timeout
        while not line.endswith(b"\n") and time.time() < deadline and self.p.poll() is None:
            r, _, _ = select.select([self.p.stdout], [], [], max(0.0, deadline - time.time()))
            if not r:
                break
            b = os.read(self.p.stdout.fileno(), 1)
            if not b:
                break
            line += b
        m = re.search(rb":(\d+)\n$", line)
        if not m:
            rc = self.stop()
            raise RuntimeError(f"serve did not start (exit {rc}): {line!r} {self.stderr_tail()!r}")
        self.port = int(m.group(1))
        return self

    def request(self, method, path, body=None, headers=None, timeout=30):
        return wu.request(self.port, method, path, body, headers, timeout=timeout)

    def get(self, path, accept=None, timeout=30):
        return self.request("GET", path, headers={"Accept": accept} if accept else {}, timeout=timeout)


class Mount(Proc):
    def __init__(self, archive, mnt, log, args=()):
        super().__init__(["mount", archive, mnt, *args], log)
        self.mnt = mnt

    def start(self, timeout=30):
        os.makedirs(self.mnt, exist_ok=True)
        self.start_proc()
        deadline = time.time() + timeout
        while time.time() < deadline:
            if os.path.ismount(self.mnt):
                return self
            if self.p.poll() is not None:
                break
            time.sleep(0.005)
        rc = self.kill()
        raise RuntimeError(f"mount did not come up (exit {rc}): {self.stderr_tail()!r}")

    def after_exit(self):
        unmount(self.mnt)


def unmount(mnt):
    if os.path.ismount(mnt) or _stale_mount(mnt):
        subprocess.run(["fusermount3", "-uz", mnt], capture_output=True)


def _stale_mount(mnt):
    try:
        os.stat(mnt)
        return False
    except OSError:
        return True


def have_fuse():
    return os.path.exists("/dev/fuse") and subprocess.run(["sh", "-c", "command -v fusermount3"],
                                                         capture_output=True).returncode == 0


# ---- DICOM instances ----------------------------------------------------------------------

def dicom_bytes(ds):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = "1.2.826.0.1.3680043.9.7777.1"
    ds.file_meta = meta
    ds.is_little_endian = True
    ds.is_implicit_VR = False
    ds.preamble = b"\0" * 128
    b = io.BytesIO()
    pydicom.dcmwrite(b, ds, write_like_original=False)
    return b.getvalue()


class Gen:
    """Instances with unique UIDs: ROOT.<run>.<study>[.<series>[.<n>]]. SliceThickness
    is the round's number and ProtocolName the series' name, so that extended query tags
    on them select known sets."""

    SIZES = (0, 256, 2048, 16384, 16384, 65536, 262144)

    def __init__(self, rng, run_id):
        self.rng = rng
        self.root = f"{ROOT}.{run_id}"
        self.n_study = 0
        self.n_series = {}
        self.n_inst = 0

    def new_study(self):
        self.n_study += 1
        return f"{self.root}.{self.n_study}"

    def new_series(self, study):
        k = self.n_series.get(study, 0) + 1
        self.n_series[study] = k
        return f"{study}.{k}"

    def instance(self, study, series, round_no, size=None):
        self.n_inst += 1
        sop = f"{series}.{self.n_inst}"
        n = self.rng.choice(self.SIZES) if size is None else size
        ds = tu.make_dataset(study, series, sop, PatientName=f"Crash^P{study.rsplit('.', 1)[1]}",
                             PatientID=f"C{study.rsplit('.', 1)[1]}", StudyDate="20240101", Modality="OT",
                             InstanceNumber=self.n_inst, SliceThickness=f"{round_no}.5",
                             ProtocolName=protocol_of(series),
                             StudyDescription="crash " + "x" * self.rng.randrange(40))
        if n:
            side = max(1, int(n ** 0.5))
            ds.Rows = ds.Columns = side
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.BitsAllocated = ds.BitsStored = 8
            ds.HighBit = 7
            ds.PixelRepresentation = 0
            ds.PixelData = self.rng.randbytes(side * side + (side * side) % 2)
        return Inst(study, series, sop, dicom_bytes(ds), round_no)


def protocol_of(series):
    """The ProtocolName of every instance of SERIES (root.run.study.k): P<study>x<k>."""
    parts = series.split(".")
    return f"P{parts[-2]}x{parts[-1]}"


class Inst:
    __slots__ = ("study", "series", "sop", "data", "sha", "size", "round", "state", "protocol")

    def __init__(self, study, series, sop, data, round_no):
        self.study, self.series, self.sop, self.round = study, series, sop, round_no
        self.data = data  # dropped once checked, to bound memory
        self.sha = hashlib.sha256(data).hexdigest()
        self.size = len(data)
        self.state = "new"  # new, maybe (sent, no answer), present, maybe_deleted, deleted, absent


# ---- The model ------------------------------------------------------------------------------

class Model:
    """What the archive must hold. Writers call the on_* methods as answers arrive
    (before any kill): a thread-safe log, also appended to ACKLOG so that a failure can
    be read afterwards."""

    def __init__(self, acklog):
        self.lock = threading.Lock()
        self.inst = {}  # sop -> Inst
        self.acklog = open(acklog, "a", buffering=1)
        self.round_acks = 0
        self.cut = False  # a power cut has begun: answers from now on prove nothing (cut_begins)
        self.after_cut = 0  # answers that came after a cut had begun, over the run

    def cut_begins(self):
        """A power cut starts. EXT4_IOC_SHUTDOWN takes milliseconds, and a sync that ends
        meanwhile can return 0 for bytes the cut then drops (seen: a mount close() and
        fsync() answered 0.3-0.7 ms after the ioctl returned, their commit missing after
        the cut). A real power loss lets no answer out after it, so from here on a success
        is no acknowledgement: its write is checked as cut (all or nothing)."""
        with self.lock:
            self.cut = True
            self.log("cut", phase="begins")

    def cut_ends(self):
        with self.lock:
            self.log("cut", phase="done")

    def answered(self, what, **kw):
        """Logs a success; True when it acknowledges (no cut had begun), else it stays maybe."""
        with self.lock:
            if self.cut:
                self.after_cut += 1
                self.log(what + " after the cut began", **kw)
                return False
            self.log(what, **kw)
            return True

    def round_begins(self):
        with self.lock:
            self.cut = False
            self.round_acks = 0

    def log(self, what, **kw):
        self.acklog.write(json.dumps(dict(what=what, t=round(time.time(), 4), **kw)) + "\n")

    def sending(self, insts):
        with self.lock:
            for i in insts:
                i.state = "maybe"
                self.inst[i.sop] = i

    def stored(self, inst, how):
        with self.lock:
            if self.cut:  # stays "maybe"
                self.after_cut += 1
                self.log("stored after the cut began", sop=inst.sop, via=how)
                return
            inst.state = "present"
            self.round_acks += 1
            self.log("stored", sop=inst.sop, via=how)

    def deleting(self, insts):
        with self.lock:
            for i in insts:
                i.state = "maybe_deleted"

    def deleted(self, insts, how):
        with self.lock:
            if self.cut:  # stay "maybe_deleted"
                self.after_cut += 1
                self.log("deleted after the cut began", sops=[i.sop for i in insts], via=how)
                return
            for i in insts:
                i.state = "deleted"
            self.round_acks += 1
            self.log("deleted", sops=[i.sop for i in insts], via=how)

    def present(self):
        with self.lock:
            return [i for i in self.inst.values() if i.state == "present"]

    def in_state(self, *states):
        with self.lock:
            return [i for i in self.inst.values() if i.state in states]


# ---- Writers -----------------------------------------------------------------------------

def stow(port, insts, timeout=30):
    """One STOW-RS request of INSTS; returns (status, set of stored SOP UIDs) — status 0
    when the connection broke."""
    body = wu.multipart([("application/dicom", i.data) for i in insts], "crashb")
    r = wu.request(port, "POST", "/v2/studies", body,
                   {"Content-Type": 'multipart/related; type="application/dicom"; boundary=crashb',
                    "Accept": DJSON}, timeout=timeout)
    if r.status not in (200, 202):
        return r.status, set(), r
    j = wu.json_body(r) or {}
    ok = {wu.first_value(item, "00081155") for item in wu.seq_items(j, "00081199")}
    return r.status, ok, r


def copy_in(path, data, fsync=True):
    """Writes DATA to PATH (a new file in the mount's inbox) as cp would, fsync() before
    close() when FSYNC. Returns (acknowledged, errno or None): acknowledged once fsync()
    returned 0 (or, without FSYNC, close())."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError as e:
        return False, e.errno
    acked = False
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view[:1 << 17])
            view = view[n:]
        if fsync:
            os.fsync(fd)
            acked = True
    except OSError as e:
        try:
            os.close(fd)
        except OSError:
            pass
        return False, e.errno
    try:
        os.close(fd)
    except OSError as e:
        return acked, e.errno
    return True, None


# ---- Checks ---------------------------------------------------------------------------------

def inst_path(i):
    return f"/v2/studies/{i.study}/series/{i.series}/instances/{i.sop}"


def observe(srv, i):
    """What the archive holds of instance I: dict of wado (sha or status), metadata (ok
    or status), qido (count)."""
    o = {}
    r = srv.get(inst_path(i), accept=ORIGINAL)
    o["wado"] = hashlib.sha256(r.body).hexdigest() if r.status == 200 else r.status
    r = srv.get(inst_path(i) + "/metadata", accept=DJSON)
    if r.status == 200:
        j = wu.json_body(r)
        o["metadata"] = "ok" if isinstance(j, list) and len(j) == 1 and wu.first_value(j[0], "00080018") == i.sop \
            else f"wrong body {r.body[:200]!r}"
    else:
        o["metadata"] = r.status
    r = srv.get(f"/v2/studies/{i.study}/series/{i.series}/instances?SOPInstanceUID={i.sop}", accept=DJSON)
    j = wu.json_body(r) if r.status == 200 else None
    o["qido"] = len(j) if isinstance(j, list) else (0 if r.status == 204 else f"status {r.status}")
    return o


def whole(i, o):
    return o == {"wado": i.sha, "metadata": "ok", "qido": 1}


def gone(o):
    return o == {"wado": 404, "metadata": 404, "qido": 0}


def fsck(archive):
    p = tu.run(["fsck", archive], timeout=600)
    last = (p.stdout.strip().splitlines() or [""])[-1]
    m = re.search(r"fsck: (\d+) instances, (\d+) objects, (\d+) missing, (\d+) orphans, (\d+) index errors", last)
    counts = tuple(int(x) for x in m.groups()) if m else None
    return p, counts


def feed_after(srv, seq):
    """Change-feed entries with sequence > SEQ (v1: the window offset < sequence <=
    offset + limit), until a window comes back empty."""
    out = []
    while True:
        r = srv.get(f"/v1/changefeed?offset={seq}&limit=100&includeMetadata=false", accept="application/json")
        j = wu.json_body(r) if r.status == 200 else None
        if not isinstance(j, list):
            raise RuntimeError(f"change feed after {seq}: {wu.describe(r)}")
        if not j:
            return out
        out += j
        seq += 100


# ---- Small file systems (root) ----------------------------------------------------------------

class SmallFs:
    """A file system of SIZE_MB at TOP/fs: a tmpfs, or an ext4 image (TOP/img) mounted
    through a loop device (journal=False: mkfs.ext4 -O ^has_journal). Unmounting frees
    the loop device (mount -o loop sets autoclear)."""

    def __init__(self, kind, top, size_mb=32, journal=True, opts=""):
        self.kind, self.top, self.size_mb, self.journal, self.opts = kind, top, size_mb, journal, opts
        self.dir = os.path.join(top, "fs")
        self.img = os.path.join(top, "img")
        self.mounted = False

    def _run(self, *args):
        p = subprocess.run(list(args), capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(args)}: {p.stderr.strip() or p.returncode}")
        return p

    def make(self):
        os.makedirs(self.dir, exist_ok=True)
        if self.kind == "ext4":
            with open(self.img, "wb") as f:
                f.truncate(self.size_mb << 20)
            self._run("mkfs.ext4", "-q", "-F", "-O", "has_journal" if self.journal else "^has_journal", self.img)

    def mount(self, readonly=False):
        if not os.path.exists(self.img) and self.kind == "ext4" or not os.path.isdir(self.dir):
            self.make()
        opts = ",".join(o for o in (("ro" if readonly else "rw"), self.opts) if o)
        if self.kind == "tmpfs":
            self._run("mount", "-t", "tmpfs", "-o", f"size={self.size_mb}m,mode=0700,{opts}", "tmpfs", self.dir)
        else:
            self._run("mount", "-t", "ext4", "-o", f"loop,{opts}", self.img, self.dir)
        self.mounted = True
        return self

    def remount(self, readonly):
        self._run("mount", "-o", "remount," + ("ro" if readonly else "rw"), self.dir)

    def unmount(self, lazy_ok=True):
        if not self.mounted:
            return
        p = subprocess.run(["umount", self.dir], capture_output=True, text=True)
        if p.returncode != 0 and lazy_ok:
            subprocess.run(["umount", "-l", self.dir], capture_output=True)
        self.mounted = False
