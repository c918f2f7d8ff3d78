"""Helpers of the dicomcast tests (tests/dicomcast*.py) and its benchmark step.

  FhirServer   the FHIR R4 server of tests/fhir/server.js (npm @medplum/fhir-router, pinned
               in package-lock.json, installed by `npm ci` the first time, as the interop
               tests do) on 127.0.0.1; a context manager that always stops it. restart()
               brings it back on the same port (with --data, with the same resources).
  Cast         runs the dicomcast binary ($DICOMCAST, else beside $DICOMFS).
  expected_*   the reference's mapping (azure-dicom-api.md section 8) written again in
               Python from a DICOM JSON object, to check what dicomcast wrote field by field.
"""
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
sys.path.insert(0, TESTS)
sys.path.insert(0, os.path.join(TESTS, "interop"))
import testutil as tu  # noqa: E402
import interoputil as iu  # noqa: E402

DICOMCAST = os.environ.get("DICOMCAST") or os.path.join(os.path.dirname(os.path.abspath(tu.DICOMFS)), "dicomcast")
DCM = "http://dicom.nema.org/resources/ontology/DCM"
NO_PROXY = {k: None for k in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY")}


def _env():
    env = dict(os.environ)
    for k in list(env):
        if k.lower() in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
            del env[k]
    return env


def require_dicomcast():
    if not (os.path.isfile(DICOMCAST) and os.access(DICOMCAST, os.X_OK)):
        print(f"FAIL dicomcast binary not found at {DICOMCAST} (set DICOMCAST, or build the dicomcast target)")
        sys.exit(1)


class FhirServer:
    """node tests/fhir/server.js on 127.0.0.1 (a free port), logging every request."""

    def __init__(self, scratch, name="fhir", test="dicomcast", persist=False):
        iu.npm_ci(test, HERE, os.path.join(scratch, "npm-ci.log"))
        self.log = os.path.join(scratch, name + ".requests.jsonl")
        self.stderr_path = os.path.join(scratch, name + ".stderr")
        self.data = os.path.join(scratch, name + ".data.json") if persist else None
        self.port = 0
        self.proc = None
        self.url = None

    def start(self, timeout=90):
        args = ["node", os.path.join(HERE, "server.js"), "--port", str(self.port), "--log", self.log]
        if self.data:
            args += ["--data", self.data]
        self._err = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self._err, stdin=subprocess.DEVNULL,
                                     env=_env(), preexec_fn=iu._die_with_parent)
        line = b""
        deadline = time.time() + timeout
        while not line.endswith(b"\n") and time.time() < deadline and self.proc.poll() is None:
            r, _, _ = select.select([self.proc.stdout], [], [], max(0.0, deadline - time.time()))
            if r:
                b = os.read(self.proc.stdout.fileno(), 1)
                if not b:
                    break
                line += b
        m = re.fullmatch(r"fhir: listening at (http://127\.0\.0\.1:(\d+)(/\S*))\n", line.decode("utf-8", "replace"))
        if not m:
            self.stop()
            with open(self.stderr_path, "rb") as f:
                err = f.read().decode("utf-8", "replace")[-1500:]
            raise RuntimeError(f"the FHIR server did not start: stdout {line!r}, stderr {err}")
        self.url, self.port = m.group(1), int(m.group(2))
        return self

    def stop(self):
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        rc = self.proc.returncode
        self.proc.stdout.close()
        self._err.close()
        self.proc = None
        return rc

    def restart(self):
        self.stop()
        return self.start()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    # ---- reading what is there ----------------------------------------------------------

    def get(self, path):
        """(status, JSON body) of GET URL/PATH."""
        req = urllib.request.Request(self.url + "/" + path, headers={"Accept": "application/fhir+json"})
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(req, timeout=60) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            body = e.read()
            try:
                return e.code, json.loads(body)
            except ValueError:
                return e.code, body

    def search(self, rtype, **params):
        """Every resource of RTYPE matching PARAMS (all pages)."""
        q = urllib.parse.urlencode(dict(params, _count="1000"))
        status, bundle = self.get(f"{rtype}?{q}")
        if status != 200:
            raise RuntimeError(f"search {rtype}?{q}: {status} {bundle}")
        return [e["resource"] for e in bundle.get("entry", [])]

    def study(self, uid):
        found = self.search("ImagingStudy", identifier=f"urn:dicom:uid|urn:oid:{uid}")
        return found[0] if len(found) == 1 else (None if not found else found)

    def requests(self):
        """The requests logged so far (one dict per request)."""
        try:
            with open(self.log) as f:
                return [json.loads(line) for line in f if line.strip()]
        except OSError:
            return []


class Cast:
    """dicomcast against DICOMWEB and FHIR with the state file STATE."""

    def __init__(self, dicomweb, fhir, state, *args):
        self.base = ["--dicomweb", dicomweb, "--fhir", fhir, "--state", state, "--no-progress", *args]
        self.state = state
        self.errors = state + ".errors.jsonl"

    def once(self, *args, timeout=120):
        require_dicomcast()
        return subprocess.run([DICOMCAST, *self.base, "--once", *args], capture_output=True, timeout=timeout,
                              encoding="utf-8", errors="replace", env=_env(), stdin=subprocess.DEVNULL)

    def start(self, *args, stderr_path):
        require_dicomcast()
        self._err = open(stderr_path, "wb")
        return subprocess.Popen([DICOMCAST, *self.base, *args], stdout=subprocess.DEVNULL, stderr=self._err,
                                stdin=subprocess.DEVNULL, env=_env(), preexec_fn=iu._die_with_parent)

    def synced(self):
        try:
            with open(self.state) as f:
                return json.load(f)["syncedSequence"]
        except (OSError, ValueError, KeyError):
            return 0

    def error_lines(self):
        try:
            with open(self.errors) as f:
                return [json.loads(line) for line in f if line.strip()]
        except OSError:
            return []


def wait_for(cond, timeout, step=0.1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(step)
    return cond()


# ---- the mapping, again ------------------------------------------------------------------

def _v(md, tag):
    vals = (md.get(tag) or {}).get("Value") or []
    if not vals:
        return ""
    v = vals[0]
    if isinstance(v, dict):
        v = v.get("Alphabetic", "")
    return str(v).strip()


def _date(da):
    if not re.fullmatch(r"\d{8}", da):
        return None
    import datetime
    try:
        datetime.date(int(da[:4]), int(da[4:6]), int(da[6:]))
    except ValueError:
        return None
    return f"{da[:4]}-{da[4:6]}-{da[6:]}"


def _started(md, dtag, ttag):
    d = _date(_v(md, dtag))
    if not d:
        return None
    tm = _v(md, ttag).replace(":", "")
    m = re.fullmatch(r"(\d\d)(\d\d)?(\d\d)?(\.\d{1,6})?", tm)
    if not tm or not m:
        return d
    t = f"{m.group(1)}:{m.group(2) or '00'}:{m.group(3) or '00'}{m.group(4) or ''}"
    tz = _v(md, "00080201")
    zone = f"{tz[:3]}:{tz[3:]}" if re.fullmatch(r"[+-]\d{4}", tz) else "Z"
    return f"{d}T{t}{zone}"


def expected_name(pn):
    comps = (pn.split("^") + [""] * 5)[:5]
    name = {}
    if comps[0]:
        name["family"] = comps[0]
    given = comps[1].split() + comps[2].split()
    if given:
        name["given"] = given
    if comps[3]:
        name["prefix"] = [comps[3]]
    if comps[4]:
        name["suffix"] = [comps[4]]
    if name:
        name["use"] = "usual"
    return name or None


def expected_patient(md, system=""):
    """The Patient a create of MD gives (without id/meta)."""
    p = {"resourceType": "Patient", "identifier": [dict({"value": _v(md, "00100020")}, **({"system": system} if system else {}))]}
    name = expected_name(_v(md, "00100010"))
    if name:
        p["name"] = [name]
    g = {"M": "male", "F": "female", "O": "other"}.get(_v(md, "00100040"))
    if g:
        p["gender"] = g
    b = _date(_v(md, "00100030"))
    if b:
        p["birthDate"] = b
    return p


def expected_series(mds):
    """{series uid: {number, modality, description, started, instances: {uid: (sopClass, number)}}}
    from the metadata of a study's instances (the last instance's series values win)."""
    out = {}
    for md in mds:
        s = out.setdefault(_v(md, "0020000E"), {"instances": {}})
        num = _v(md, "00200011")
        if re.fullmatch(r"\d+", num):
            s["number"] = int(num)
        s["modality"] = _v(md, "00080060")
        if _v(md, "0008103E"):
            s["description"] = _v(md, "0008103E")
        st = _started(md, "00080021", "00080031")
        if st:
            s["started"] = st
        inum = _v(md, "00200013")
        s["instances"][_v(md, "00080018")] = (_v(md, "00080016"), int(inum) if re.fullmatch(r"\d+", inum) else None)
    return out


def actual_series(study):
    out = {}
    for s in (study or {}).get("series", []):
        d = {"instances": {}, "modality": s.get("modality", {}).get("code")}
        for k in ("number", "description", "started"):
            if k in s:
                d[k] = s[k]
        for i in s.get("instance", []):
            d["instances"][i["uid"]] = (i.get("sopClass", {}).get("code"), i.get("number"))
        out[s["uid"]] = d
    return out
