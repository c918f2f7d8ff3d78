"""Helpers shared by the end-to-end tests of the dicomfs command (tests/*.py).

Environment (set by tests/CMakeLists.txt):
  DICOMFS  path of the dicomfs binary
  SCRATCH  a private directory for this test (created and emptied by scratch())
  TESTS    the tests source directory

Every check prints one line ("ok   ..." or "FAIL ...") and the test exits non-zero when
any check failed (see Checker.finish()).
"""
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import warnings

warnings.simplefilter("ignore")  # pydicom warns about the odd corpus files

import pydicom  # noqa: E402
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian  # noqa: E402

PYDICOM_DATA = os.path.join(os.path.dirname(pydicom.__file__), "data")
CORPUS = os.path.join(PYDICOM_DATA, "test_files")
CHARSETS = os.path.join(PYDICOM_DATA, "charset_files")

DICOMFS = os.environ.get("DICOMFS") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "build", "dicomfs")
TESTS = os.environ.get("TESTS") or os.path.dirname(os.path.abspath(__file__))

# Commands run under AddressSanitizer are ~3x slower; be generous but bounded.
CMD_TIMEOUT = float(os.environ.get("DICOMFS_CMD_TIMEOUT", "120"))


# ---- Reporting ----------------------------------------------------------------------

class Checker:
    """Prints one line per check, counts failures."""

    def __init__(self, name):
        self.name = name
        self.passed = 0
        self.failed = 0
        self.failures = []

    def ok(self, cond, what, detail=""):
        if cond:
            self.passed += 1
            print(f"ok   {what}", flush=True)
        else:
            self.failed += 1
            self.failures.append(what)
            msg = f"FAIL {what}"
            if detail:
                msg += f"\n     {detail}"
            print(msg, flush=True)
        return bool(cond)

    def eq(self, actual, expected, what):
        return self.ok(actual == expected, what,
                       f"expected {short(expected)}\n     actual   {short(actual)}")

    def note(self, text):
        print(f"#    {text}", flush=True)

    def finish(self):
        print(f"{self.name}: {self.passed} checks passed, {self.failed} failed", flush=True)
        if self.failed:
            print("failed checks:")
            for f in self.failures[:100]:
                print(f"  - {f}")
        sys.exit(1 if self.failed else 0)


def short(v, n=600):
    s = v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, sort_keys=True, default=str)
    return s if len(s) <= n else s[:n] + f"... ({len(s)} chars)"


# ---- Environment ----------------------------------------------------------------------

def require_binary():
    if not (os.path.isfile(DICOMFS) and os.access(DICOMFS, os.X_OK)):
        print(f"FAIL dicomfs binary not found at {DICOMFS} (set DICOMFS)")
        sys.exit(1)


def scratch(name=None):
    """Returns the private scratch directory, emptied."""
    d = os.environ.get("SCRATCH")
    if not d:
        d = os.path.join("/tmp", "dicomfs-test-" + (name or os.path.basename(sys.argv[0])))
    d = os.path.abspath(d)
    if os.path.isdir(d):
        shutil.rmtree(d)
    os.makedirs(d)
    return d


# ---- Running the binary ----------------------------------------------------------------

def run(args, timeout=None, input=None):
    """Runs dicomfs ARGS; returns CompletedProcess (text, stdout/stderr captured)."""
    return subprocess.run([DICOMFS] + [str(a) for a in args], capture_output=True,
                          timeout=timeout or CMD_TIMEOUT, input=input,
                          encoding="utf-8", errors="replace")


def parse_json_lines(text):
    """Parses one JSON object per line; returns (objects, bad_lines)."""
    out, bad = [], []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except ValueError:
            bad.append(line)
    return out, bad


def ingest(archive, paths, *opts, timeout=None):
    """dicomfs ingest --json [OPTS] ARCHIVE PATHS; returns (proc, results, bad_lines)."""
    p = run(["ingest", "--json", *opts, archive, *paths], timeout=timeout)
    results, bad = parse_json_lines(p.stdout)
    return p, results, bad


def summary_line(stderr):
    """The 'ingest: N stored[ (M already stored)], N skipped, N failed' line (last line of
    stderr) as a tuple (stored, skipped, failed); stored counts the already stored too."""
    lines = [l for l in stderr.splitlines() if l.strip()]
    if not lines:
        return None
    m = re.fullmatch(r"ingest: (\d+) stored(?: \(\d+ already stored\))?, (\d+) skipped, (\d+) failed",
                     lines[-1].strip())
    return tuple(int(x) for x in m.groups()) if m else None


def find(archive, *params, level=None, study=None, series=None, v1=False):
    """dicomfs find; returns (rc, parsed JSON or None, stderr)."""
    args = ["find", archive]
    if level:
        args += ["--level", level]
    if study:
        args += ["--study", study]
    if series:
        args += ["--series", series]
    if v1:
        args.append("--v1")
    args += list(params)
    p = run(args)
    data = None
    if p.returncode == 0:
        try:
            data = json.loads(p.stdout)
        except ValueError:
            data = None
    return p.returncode, data, p.stderr


def metadata(archive, study, series=None, sop=None):
    """dicomfs metadata; returns (rc, parsed JSON or None, proc)."""
    args = ["metadata", archive, study] + ([series] if series else []) + ([sop] if sop else [])
    p = run(args)
    data = None
    if p.returncode == 0:
        try:
            data = json.loads(p.stdout)
        except ValueError:
            data = None
    return p.returncode, data, p


def delete(archive, study, series=None, sop=None):
    args = ["delete", archive, study] + ([series] if series else []) + ([sop] if sop else [])
    return run(args)


def changes(archive, offset=0, limit=None, metadata=False):
    args = ["changes", archive, "--offset", str(offset)]
    if limit:
        args += ["--limit", str(limit)]
    if not metadata:
        args.append("--no-metadata")
    p = run(args)
    data = None
    if p.returncode == 0:
        try:
            data = json.loads(p.stdout)
        except ValueError:
            data = None
    return p.returncode, data, p


def all_changes(archive, page=100):
    """Every change-feed entry, paging with --offset/--limit (v1: a window of sequence
    numbers, offset < sequence <= offset+limit) until a window comes back empty.
    Returns (entries, error text or None)."""
    out = []
    offset = 0
    for _ in range(100000):
        rc, data, p = changes(archive, offset=offset, limit=page)
        if rc != 0 or not isinstance(data, list):
            return out, f"changes --offset {offset} exited {rc}: {p.stderr.strip()[:300]}"
        if not data:
            return out, None
        out.extend(data)
        offset += page
    return out, "too many change-feed pages"


def fsck(archive, repair=False):
    return run(["fsck", archive] + (["--repair"] if repair else []))


# ---- DICOM JSON helpers ----------------------------------------------------------------

def tag_hex(keyword_or_tag):
    """'PatientName' or '00100010' -> '00100010'."""
    if re.fullmatch(r"[0-9A-Fa-f]{8}", keyword_or_tag):
        return keyword_or_tag.upper()
    t = pydicom.datadict.tag_for_keyword(keyword_or_tag)
    if t is None:
        raise KeyError(keyword_or_tag)
    return f"{t:08X}"


def jget(obj, keyword):
    """First value of an attribute in a DICOM JSON object (PN -> Alphabetic); None if absent."""
    el = obj.get(tag_hex(keyword))
    if not el:
        return None
    vals = el.get("Value")
    if not vals:
        return None
    v = vals[0]
    if isinstance(v, dict) and "Alphabetic" in v:
        return v["Alphabetic"]
    return v


def jvalues(obj, keyword):
    el = obj.get(tag_hex(keyword))
    return (el or {}).get("Value")


# ---- Generating DICOM files ----------------------------------------------------------

_uid_counter = [0]


def make_uid(root="1.2.826.0.1.3680043.9.7777", *parts):
    """Deterministic UIDs: ROOT.PARTS (numbers)."""
    return ".".join([root] + [str(int(p)) for p in parts])


def make_dataset(study, series, sop, sop_class="1.2.840.10008.5.1.4.1.1.7", **attrs):
    """A small dataset with the required attributes plus ATTRS (keyword=value)."""
    ds = Dataset()
    ds.SpecificCharacterSet = attrs.pop("SpecificCharacterSet", "ISO_IR 192")
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.PatientID = attrs.pop("PatientID", "PID")
    for k, v in attrs.items():
        if v is None:
            continue
        setattr(ds, k, v)
    return ds


def write_dicom(path, ds, implicit=False):
    """Writes DS as a DICOM Part 10 file (preamble, file meta), Explicit VR Little Endian
    unless IMPLICIT."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    meta.ImplementationClassUID = "1.2.826.0.1.3680043.9.7777.1"
    ds.file_meta = meta
    ds.is_little_endian = True
    ds.is_implicit_VR = implicit
    ds.preamble = b"\0" * 128
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    pydicom.dcmwrite(path, ds, write_like_original=False)
    return path


def corpus_files(root=CORPUS):
    """Every file below ROOT (recursively), sorted by path relative to ROOT."""
    rels = []
    for d, _, fs in os.walk(root):
        for f in fs:
            rels.append(os.path.relpath(os.path.join(d, f), root))
    return sorted(rels)


# ---- Attribute validation (what the store is expected to flag as invalid) -------------

_DA = re.compile(r"^\d{8}$")
_TM = re.compile(r"^\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?$")
_DS = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_IS = re.compile(r"^[+-]?\d+$")
_UI = re.compile(r"^[0-9.]*[0-9]$")
_AS = re.compile(r"^\d{3}[DWMY]$")
# UIDs: the reference's regex (Azure UidValidation), which allows leading zeros
_MAXLEN = {"AE": 16, "CS": 16, "DS": 16, "IS": 12, "LO": 64, "SH": 16, "UI": 64, "AS": 4}


def valid_date(s):
    if not _DA.match(s):
        return False
    try:
        datetime.date(int(s[:4]), int(s[4:6]), int(s[6:8]))
        return True
    except ValueError:
        return False


def _raw_values(elem):
    """The element's raw text values (before pydicom conversion) or None if binary."""
    raw = elem.value
    if isinstance(raw, (bytes, bytearray)):
        try:
            raw = raw.decode("latin-1")
        except Exception:
            return None
    if isinstance(raw, (list, tuple, pydicom.multival.MultiValue)):
        return [str(v) for v in raw]
    if raw is None:
        return []
    s = str(raw)
    return s.split("\\") if s else []


def value_problem(vr, v):
    """Why the single value V (a string) breaks VR, or None when it is valid (by the rules
    the reference applies: DA dates, length limits, UI syntax, IS/DS/AS syntax)."""
    if v == "":
        return None
    if vr in _MAXLEN and len(v) > _MAXLEN[vr]:
        return f"{vr} too long"
    if vr == "DA" and not valid_date(v):
        return f"bad DA {v!r}"
    if vr == "UI" and not _UI.match(v):
        return f"bad UI {v!r}"
    if vr == "IS" and not _IS.match(v):
        return f"bad IS {v!r}"
    if vr == "DS" and not _DS.match(v):
        return f"bad DS {v!r}"
    if vr == "AS" and not _AS.match(v):
        return f"bad AS {v!r}"
    if vr == "PN" and any(len(g) > 64 for g in v.split("=")):
        return "PN group too long"
    return None


def invalid_attributes(ds, only_top_level=True):
    """Top-level attributes whose content breaks their VR (keyword or tag list).
    Only the checks the reference applies (DA, length limits, UI, IS/DS syntax, AS)."""
    bad = []
    for elem in ds:
        if elem.tag.group == 0x0002:
            continue
        vr = elem.VR
        try:
            vals = [v.strip(" \0") if vr != "UI" else v.rstrip("\0").strip()
                    for v in (_raw_values(elem) or [])]
        except Exception:
            continue
        name = elem.keyword or f"{elem.tag.group:04X}{elem.tag.element:04X}"
        problem = None
        for v in vals:
            problem = value_problem(vr, v)
            if problem:
                break
        if problem:
            bad.append((name, problem))
    return bad


def reported_failed_attributes(result):
    """[(tag 'GGGGEEEE', content, vr)] from an ingest line's failedAttributes (the
    ErrorComment texts: 'DICOM100: (0028,0008) - Content "1A" does not validate VR IS: ...')."""
    out = []
    for line in (result.get("failedAttributes") or "").splitlines():
        m = re.search(r'\(([0-9A-Fa-f]{4}),([0-9A-Fa-f]{4})\)\s*-\s*Content "(.*)" does not validate VR (\w\w)',
                      line)
        if m:
            out.append(((m.group(1) + m.group(2)).upper(), m.group(3), m.group(4)))
        else:
            m = re.search(r"\(([0-9A-Fa-f]{4}),([0-9A-Fa-f]{4})\)", line)
            if m:
                out.append(((m.group(1) + m.group(2)).upper(), None, None))
    return out


REQUIRED = ["SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"]
