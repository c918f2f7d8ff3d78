"""Shared by the interoperability tests (tests/interop/*.py): the test data, the
dependency checks, curl, npm ci, a private Orthanc, and the printing of what the tap saw.

  make_dataset(dir)   writes the DICOM files both tests use (below) and manifest.json
  require(...)        fails the test with a clear message when a dependency is missing
  curl(...)           one request with the curl command (a real third-party client)
  npm_ci(dir)         `npm ci` once into DIR/node_modules (locked against concurrent runs)
  Orthanc(...)        Debian's Orthanc with its DICOMweb plugin on a free loopback port,
                      from a private configuration (never the system service)
  print_exchanges()   every HTTP exchange a tap recorded, headers in full

The data set (UID root 1.2.826.0.1.3680043.9.7777.90 for what is made here):
  ct1   pydicom's CT_small.dcm, byte for byte (Explicit VR LE, 128x128, 16 bit)
  ct2   CT_small with a new SOP Instance UID, same series         } study A:
  ct3   CT_small with a new series and SOP Instance UID           } 3 instances, 2 series
  mr    pydicom's MR_small.dcm, byte for byte (its own study B; 64x64, 16 bit)
  dose  pydicom's rtdose.dcm rewritten as Explicit VR LE: 15 frames of 10x10x32 bit (study C)
  rle   pydicom's SC_rgb_rle_2frame.dcm, byte for byte: RLE, 2 RGB frames (study D)
For every file the manifest has its UIDs, transfer syntax, size, rows, columns, number of
frames and, per frame, a file with the frame's bytes as stored (native: its slice of Pixel
Data; encapsulated: the frame's fragments joined), made with pydicom.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import testutil as tu  # noqa: E402

import pydicom  # noqa: E402
from pydicom import encaps  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian  # noqa: E402

HOST = "127.0.0.1"
ROOT = "1.2.826.0.1.3680043.9.7777.90"
ORTHANC = "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN_PKG = "orthanc-dicomweb"


def fail(test, msg):
    print(f"FAIL {msg}", flush=True)
    print(f"{test}: 0 checks passed, 1 failed", flush=True)
    sys.exit(1)


# ---- Dependencies ------------------------------------------------------------------------

def require_commands(test, *cmds):
    missing = [c for c in cmds if shutil.which(c) is None]
    if missing:
        fail(test, f"missing command(s) {', '.join(missing)}: run tools/install-deps.sh --test")


def dicomweb_plugin(test):
    """The path of libOrthancDicomWeb.so, as installed by the Debian package."""
    try:
        out = subprocess.run(["dpkg", "-L", DICOMWEB_PLUGIN_PKG], capture_output=True, text=True,
                             timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        out = ""
    libs = [l for l in out.splitlines() if l.endswith("/libOrthancDicomWeb.so")]
    # Prefer the plugins directory (a symlink to the versioned library).
    libs.sort(key=lambda l: (0 if "/plugins/" in l else 1, l))
    for l in libs:
        if os.path.exists(l):
            return l
    fail(test, f"the Debian package {DICOMWEB_PLUGIN_PKG} (libOrthancDicomWeb.so) is not installed: "
               "run tools/install-deps.sh --test")


def require_orthanc(test):
    if not os.access(ORTHANC, os.X_OK):
        fail(test, f"{ORTHANC} is missing (Debian package orthanc): run tools/install-deps.sh --test")
    return dicomweb_plugin(test)


def _npm_installed(pkgdir):
    """Does PKGDIR/node_modules hold exactly the versions package-lock.json names?"""
    try:
        with open(os.path.join(pkgdir, "package-lock.json")) as f:
            lock = json.load(f)
        for path, info in lock.get("packages", {}).items():
            if not path.startswith("node_modules/"):
                continue
            with open(os.path.join(pkgdir, path, "package.json")) as f:
                if json.load(f).get("version") != info.get("version"):
                    return False
        return True
    except (OSError, ValueError):
        return False


def npm_ci(test, pkgdir, log):
    """`npm ci` into PKGDIR unless its node_modules already holds what package-lock.json
    pins. A lock directory keeps two concurrent runs (ctest -j, two build directories)
    from installing at once."""
    require_commands(test, "node", "npm")
    if _npm_installed(pkgdir):
        return
    lock = os.path.join(pkgdir, ".npm-ci.lock")
    for _ in range(300):
        try:
            os.mkdir(lock)
            break
        except FileExistsError:
            time.sleep(1)
    try:
        if not _npm_installed(pkgdir):
            with open(log, "wb") as f:
                rc = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                                    cwd=pkgdir, stdout=f, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, timeout=600).returncode
            if rc != 0:
                with open(log, "rb") as f:
                    sys.stdout.write(f.read().decode("utf-8", "replace")[-3000:])
                fail(test, f"npm ci in {pkgdir} failed (exit {rc})")
    finally:
        try:
            os.rmdir(lock)
        except OSError:
            pass
    if not _npm_installed(pkgdir):
        fail(test, f"{pkgdir}/node_modules does not hold the versions of package-lock.json after npm ci")


# ---- Data ----------------------------------------------------------------------------------

def _frame_size(ds):
    return ds.Rows * ds.Columns * ds.SamplesPerPixel * ds.BitsAllocated // 8


def _frames(ds):
    n = int(ds.get("NumberOfFrames", 1) or 1)
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        return list(encaps.generate_pixel_data_frame(ds.PixelData, n))
    size = _frame_size(ds)
    return [bytes(ds.PixelData[i * size:(i + 1) * size]) for i in range(n)]


def make_dataset(d):
    """Writes the files into D; returns the manifest (also written to D/manifest.json):
    {name: {path, study, series, sop, ts, size, rows, columns, frames, frame_files}}."""
    os.makedirs(os.path.join(d, "frames"), exist_ok=True)
    ct = os.path.join(tu.CORPUS, "CT_small.dcm")
    paths = {}
    for name, src in (("ct1", ct), ("mr", "MR_small.dcm"), ("rle", "SC_rgb_rle_2frame.dcm")):
        paths[name] = os.path.join(d, name + ".dcm")
        shutil.copyfile(os.path.join(tu.CORPUS, src), paths[name])
    for name, series, sop, number in (("ct2", None, f"{ROOT}.1.2", 2),
                                      ("ct3", f"{ROOT}.2", f"{ROOT}.2.1", 3)):
        ds = pydicom.dcmread(ct)
        ds.SOPInstanceUID = sop
        ds.file_meta.MediaStorageSOPInstanceUID = sop
        ds.InstanceNumber = number
        if series:
            ds.SeriesInstanceUID = series
            ds.SeriesNumber = 2
            ds.SeriesDescription = "interop second series"
        paths[name] = os.path.join(d, name + ".dcm")
        ds.save_as(paths[name], write_like_original=True)
    ds = pydicom.dcmread(os.path.join(tu.CORPUS, "rtdose.dcm"))
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.is_implicit_VR = False
    ds.is_little_endian = True
    paths["dose"] = os.path.join(d, "dose.dcm")
    ds.save_as(paths["dose"], write_like_original=False)

    manifest = {}
    for name in ("ct1", "ct2", "ct3", "mr", "dose", "rle"):
        p = paths[name]
        ds = pydicom.dcmread(p)
        frames = _frames(ds)
        ffiles = []
        for i, fr in enumerate(frames, 1):
            fp = os.path.join(d, "frames", f"{name}.{i}.bin")
            with open(fp, "wb") as f:
                f.write(fr)
            ffiles.append(fp)
        manifest[name] = {
            "path": p, "study": str(ds.StudyInstanceUID), "series": str(ds.SeriesInstanceUID),
            "sop": str(ds.SOPInstanceUID), "ts": str(ds.file_meta.TransferSyntaxUID),
            "size": os.path.getsize(p), "rows": int(ds.Rows), "columns": int(ds.Columns),
            "frames": len(frames), "frame_files": ffiles,
            "patient_id": str(ds.get("PatientID", "")), "modality": str(ds.get("Modality", "")),
        }
    with open(os.path.join(d, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    return manifest


def read_bytes(p):
    with open(p, "rb") as f:
        return f.read()


# ---- curl ----------------------------------------------------------------------------------

class CurlResult:
    def __init__(self, status, headers, body, err):
        self.status, self.headers, self.body, self.err = status, headers, body, err

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def json(self):
        try:
            return json.loads(self.body.decode("utf-8"))
        except Exception:
            return None

    def describe(self, n=300):
        if self.status == 0:
            return f"curl failed: {self.err}"
        return (f"status {self.status}, Content-Type {self.header('Content-Type')!r}, "
                f"body {self.body[:n].decode('utf-8', 'replace')!r}")


def curl(url, method="GET", headers=(), data_file=None, data=None, timeout=60):
    """One request with curl (only 127.0.0.1 URLs). HEADERS: list of 'Name: value'."""
    assert url.startswith(f"http://{HOST}:"), url
    cmd = ["curl", "-sS", "--noproxy", "*", "-X", method, "-D", "-", "--max-time", str(timeout),
           "-o", "-", url]
    for h in headers:
        cmd += ["-H", h]
    inp = None
    if data_file is not None:
        cmd += ["--data-binary", "@" + data_file]
    elif data is not None:
        cmd += ["--data-binary", "@-"]
        inp = data
    try:
        p = subprocess.run(cmd, input=inp, capture_output=True, timeout=timeout + 10)
    except subprocess.TimeoutExpired:
        return CurlResult(0, [], b"", "timeout")
    if p.returncode != 0:
        return CurlResult(0, [], b"", p.stderr.decode("utf-8", "replace").strip())
    out = p.stdout
    # -D - writes every header block (100 Continue included) before the body.
    status, headers = 0, []
    while True:
        end = out.find(b"\r\n\r\n")
        if end < 0 or not out.startswith(b"HTTP/"):
            break
        lines = out[:end].decode("latin-1").split("\r\n")
        out = out[end + 4:]
        status = int(lines[0].split()[1])
        headers = [(k.strip(), v.strip()) for k, _, v in (l.partition(":") for l in lines[1:])]
        if status >= 200:
            break
    return CurlResult(status, headers, out, "")


# ---- Orthanc -------------------------------------------------------------------------------

def _die_with_parent():
    """In the child: SIGTERM when the test dies, even by SIGKILL (a ctest timeout)."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, 15)  # PR_SET_PDEATHSIG, SIGTERM
    except Exception:
        pass


def free_port():
    s = socket.socket()
    s.bind((HOST, 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Orthanc:
    """Orthanc 1.10 (Debian) with the DICOMweb plugin from a private configuration in DIR:
    storage and index in DIR/storage, HTTP on a free port (Orthanc listens on every
    interface and has no bind option; RemoteAccessAllowed=false refuses anything that is
    not loopback), DICOM server disabled, no authentication, no Lua, no other plugin.
    SERVERS: the DicomWeb "Servers" entries. The Debian system service is never used."""

    def __init__(self, directory, plugin, servers, name="interop"):
        self.dir, self.plugin, self.servers, self.name = directory, plugin, servers, name
        self.proc = None
        self.log = os.path.join(directory, "orthanc.log")

    def start(self, timeout=60):
        storage = os.path.join(self.dir, "storage")
        os.makedirs(storage, exist_ok=True)
        for attempt in range(3):
            port = free_port()
            config = {
                "Name": self.name,
                "StorageDirectory": storage,
                "IndexDirectory": storage,
                "HttpPort": port,
                "RemoteAccessAllowed": False,
                "AuthenticationEnabled": False,
                "DicomServerEnabled": False,
                "DicomPort": free_port(),
                "ExecuteLuaEnabled": False,
                "HttpTimeout": 60,
                "Plugins": [self.plugin],
                "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "Servers": self.servers},
            }
            cfg = os.path.join(self.dir, "orthanc.json")
            with open(cfg, "w") as f:
                json.dump(config, f, indent=1)
            self._log = open(self.log, "ab")
            env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
            self.proc = subprocess.Popen([ORTHANC, cfg], stdout=self._log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=self.dir, env=env,
                                         preexec_fn=_die_with_parent)
            self.url = f"http://{HOST}:{port}"
            deadline = time.time() + timeout
            while time.time() < deadline and self.proc.poll() is None:
                try:
                    with urllib.request.urlopen(self.url + "/system", timeout=2) as r:
                        if r.status == 200:
                            return self
                except OSError:
                    time.sleep(0.1)
            self.stop()
        raise RuntimeError(f"Orthanc did not start; see {self.log}:\n{self.log_tail()}")

    def log_errors(self, n=20):
        """The last N error lines of Orthanc's log (its glog lines start with E)."""
        try:
            with open(self.log, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return []
        return [l for l in lines if l.startswith("E")][-n:]

    def log_tail(self, n=3000):
        try:
            with open(self.log, "rb") as f:
                return f.read().decode("utf-8", "replace")[-n:]
        except OSError:
            return ""

    def stop(self):
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        rc = self.proc.returncode
        self.proc = None
        self._log.close()
        return rc

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    def request(self, method, path, body=None, timeout=120):
        """(status, bytes) of a request to Orthanc's own REST API."""
        data = body
        if isinstance(body, (dict, list)):
            data = json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(req, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()
        except OSError as e:
            return 0, str(e).encode()

    def json(self, method, path, body=None, timeout=120):
        status, data = self.request(method, path, body, timeout)
        try:
            return status, json.loads(data.decode("utf-8")) if data else None
        except ValueError:
            return status, data


# ---- Reporting -----------------------------------------------------------------------------

def print_exchanges(title, exchanges):
    import httptap
    print(f"#    ---- {title}: {len(exchanges)} HTTP exchange(s) seen by the tap ----", flush=True)
    for x in exchanges:
        for line in httptap.describe(x).splitlines():
            print("#    " + line)
        ct = httptap.header(x.headers, "Content-Type") or ""
        if ct.lower().startswith("multipart/") and x.body:
            # How the body begins: the first delimiter and the first part's headers.
            end = x.body.find(b"\r\n\r\n", x.body.find(b"--"))
            print("#    > [body starts] " + repr(x.body[:end + 4 if end >= 0 else 160]))
            print("#    > [body ends]   " + repr(x.body[-60:]))
        if x.status is not None and x.status >= 400 and x.resp_body:
            print("#    < " + x.resp_body[:300].decode("utf-8", "replace").replace("\n", "\\n"))
        print("#")
    sys.stdout.flush()
