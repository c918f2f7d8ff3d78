"""End-to-end: the mount's /patients and /search views, deleting through the mount
(--allow-delete), freshness when another process changes the archive, and --daemon.

A small archive is generated with pydicom and ingested in two batches (so the order of
arrival is known), then mounted with `dicomfs mount` (a real FUSE mount):
  1. /patients: "<Name> (<PatientID>)/<date> <description>/<modality> <number>
     <description>/<InstanceNumber>.dcm", with the edge cases names.h specifies: '/' and
     '(' in a PatientID (percent-encoded, and the folder resolves), control characters in a
     description, no name ("Unnamed"), no date ("no date"), equal study names and equal
     InstanceNumbers (each " ~<arrival>"), no InstanceNumber ("<SOP UID>.dcm"), UTF-8 names, one
     PatientID with two names. Every name is safe UTF-8; the files are the stored bytes;
     each instance appears exactly once.
  2. /search/<level>/<QIDO query>/: symbolic links to /studies, the same matches as
     `dicomfs find`; a bad query is EINVAL with "<query>.error" beside it; results follow
     instances stored by another process.
  3. rm / rmdir / rm -r: refused (EACCES) without --allow-delete; with it they delete
     exactly what they name, and the change feed records it; generated files stay
     read-only.
  4. A study deleted by another process leaves the mount; metadata.json's size is the
     size of what a read returns, before and after the study grows.
  5. mount --daemon returns once the mount is ready; fusermount3 -u ends it.

Needs /dev/fuse and fusermount3: skipped without them, except on CI (CI=true) where
that is a failure.
"""
import collections
import errno
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import testutil as tu  # noqa: E402

R = "1.2.826.0.1.3680043.9.7777.61"


def sanitized():
    try:
        with open(tu.DICOMFS, "rb") as f:
            return b"__asan_init" in f.read()
    except OSError:
        return False


SLOW = 3 if sanitized() else 1
FRESH_WAIT = 3.0 * SLOW  # how long a change made by another process may take to show

# ---- The data set ---------------------------------------------------------------------
# Each instance: key -> (study uid, series uid, sop uid, attributes, batch)

PATIENTS = {
    "doe": dict(PatientName="DOE^JOHN", PatientID="P1"),
    "roe": dict(PatientName="ROE^JANE", PatientID="X/Y(1)"),
    "anon": dict(PatientName="", PatientID="P3"),
    "muller": dict(PatientName="Müller^Jürgen", PatientID="P4"),
    "ann": dict(PatientName="SMITH^ANN", PatientID="P5"),
    "anne": dict(PatientName="SMITH^ANNE", PatientID="P5"),
    "jane": dict(PatientName="DOE^JANE", PatientID="P6"),
    "temp": dict(PatientName="TEMP^DEL", PatientID="P7"),
}

# study key -> (patient key, StudyDate or None, StudyDescription)
STUDIES = {
    "1": ("doe", "20200115", "CT HEAD W/O"),
    "2": ("doe", "20200115", "CT HEAD W/O"),       # the same name as study 1, arrives later
    "3": ("doe", "20210610", "MR BRAIN"),
    "4": ("roe", "20200301", "CHEST\tPA\x01LAT  x"),  # tab, control character, two spaces
    "5": ("anon", None, "KNEE"),
    "6": ("muller", "20201224", "Thorax"),
    "7": ("ann", "20190101", "A"),
    "8": ("anne", "20190102", "B"),
    "9": ("jane", "20200520", "CT CHEST"),
    "10": ("temp", "20220202", "FRESH"),
}

# series key "<study>.<n>" -> (Modality, SeriesNumber, SeriesDescription)
SERIES = {
    "1.1": ("CT", 3, "Axial"),
    "1.2": ("CT", 4, "Coronal/Sag"),
    "2.1": ("CT", 3, "Axial"),
    "3.1": ("MR", 1, "T1"),
    "4.1": ("CR", 1, "PA"),
    "5.1": ("MR", 2, "Sag"),
    "5.2": ("MR", 2, "Sag"),   # the same name as series 5.1, arrives later
    "6.1": ("CT", 1, "Lung"),
    "7.1": ("US", 1, None),
    "8.1": ("US", 1, None),
    "9.1": ("CT", 2, "Chest"),
    "10.1": ("OT", 1, "tmp"),
}

# instance key "<series>.<n>" -> (InstanceNumber or None, batch)
INSTANCES = {
    "1.1.1": (1, 1),
    "1.1.2": (2, 1),
    "1.1.3": (2, 2),     # the same InstanceNumber as 1.1.2, arrives later
    "1.1.4": (None, 1),  # no InstanceNumber
    "1.2.1": (1, 1),
    "2.1.1": (1, 2),     # study 2 arrives after study 1
    "3.1.1": (1, 1),
    "4.1.1": (1, 1),
    "4.1.2": (2, 1),
    "5.1.1": (1, 1),
    "5.2.1": (1, 2),
    "6.1.1": (7, 1),
    "6.1.2": (8, 1),
    "7.1.1": (1, 1),
    "8.1.1": (1, 1),
    "9.1.1": (1, 1),
    "9.1.3": (1, 2),     # the same InstanceNumber as 9.1.1 (9.1.2 is stored later, see main)
    "10.1.1": (1, 1),
    "10.1.2": (2, 1),
}
LATE = "1.1.5"  # stored by another process while the mount runs (CT, InstanceNumber 5)


def uid(key):
    return f"{R}.{key}"


def study_of(ikey):
    return ikey.split(".")[0]


def series_of(ikey):
    return ".".join(ikey.split(".")[:2])


def dataset(ikey, number):
    st, se = study_of(ikey), series_of(ikey)
    pkey, date, desc = STUDIES[st]
    mod, snum, sdesc = SERIES[se]
    attrs = dict(PATIENTS[pkey])
    return tu.make_dataset(uid(st), uid(se), uid(ikey), StudyDate=date, StudyDescription=desc,
                           Modality=mod, SeriesNumber=snum, SeriesDescription=sdesc,
                           InstanceNumber=number, StudyTime="101010", **attrs)


def build(d):
    """Writes every instance (and LATE); returns {key: path}, {key: bytes}."""
    paths, data = {}, {}
    for key, (number, _) in list(INSTANCES.items()) + [(LATE, (5, 3))]:
        p = tu.write_dicom(os.path.join(d, f"{key}.dcm"), dataset(key, number))
        paths[key] = p
        with open(p, "rb") as f:
            data[key] = f.read()
    return paths, data


# ---- Helpers ----------------------------------------------------------------------------

def err_of(fn, *args):
    """The errno FN(*ARGS) fails with; 0 when it succeeds."""
    try:
        fn(*args)
        return 0
    except OSError as e:
        return e.errno


def ename(n):
    return errno.errorcode.get(n, str(n)) if n else "success"


def read(path):
    with open(path, "rb") as f:
        return f.read()


def try_read(path):
    try:
        return read(path)
    except OSError as e:
        return e


def write_attempt(path):
    """Opens PATH for writing and writes; the errno of the failure, 0 when it worked."""
    try:
        with open(path, "wb") as f:
            f.write(b"x")
        return 0
    except OSError as e:
        return e.errno


def stored_sops(archive):
    """The SOP Instance UIDs `dicomfs find` returns (or None on failure)."""
    rc, data, err = tu.find(archive, "limit=200", level="instance")
    if rc != 0 or not isinstance(data, list):
        return None
    return {tu.jget(o, "SOPInstanceUID") for o in data}


def find_uids(archive, level, query):
    """The UIDs `dicomfs find --level LEVEL` returns for the QIDO query string QUERY (as
    the mount gets it: '&'-separated, percent-encoded). (uids in order, error text)."""
    params = []
    for pair in query.split("&"):
        k, _, v = pair.partition("=")
        params.append(f"{urllib.parse.unquote(k)}={urllib.parse.unquote(v)}")
    if not any(p.startswith("limit=") for p in params):
        params.append("limit=200")
    lv = {"studies": "study", "series": "series", "instances": "instance"}[level]
    rc, data, err = tu.find(archive, *params, level=lv)
    if rc != 0 or not isinstance(data, list):
        return None, err
    kw = {"studies": "StudyInstanceUID", "series": "SeriesInstanceUID", "instances": "SOPInstanceUID"}[level]
    return [tu.jget(o, kw) for o in data], None


def safe_name_problem(name):
    """Why NAME (a str from os.listdir) breaks names.h's rules; None when it is fine."""
    raw = os.fsencode(name)
    try:
        raw.decode("utf-8", "strict")
    except UnicodeDecodeError:
        return "not valid UTF-8"
    if b"/" in raw or b"\\" in raw:
        return "has '/' or '\\'"
    if any(b < 0x20 or b == 0x7F for b in raw):
        return "has a control character"
    if name in (".", ".."):
        return "is . or .."
    if len(raw) > 255:
        return "longer than NAME_MAX"
    return None


class Mount:
    """`dicomfs mount ARCHIVE MNT [OPTS]` in the background; always unmounted again."""

    def __init__(self, archive, mnt, log, *opts):
        self.archive, self.mnt, self.log, self.opts = archive, mnt, log, opts
        self.proc = None

    def __enter__(self):
        os.makedirs(self.mnt, exist_ok=True)
        self.logf = open(self.log, "wb")
        self.proc = subprocess.Popen([tu.DICOMFS, "mount", self.archive, self.mnt, *self.opts],
                                     stdout=self.logf, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30 * SLOW
        while time.monotonic() < deadline and self.proc.poll() is None and not os.path.ismount(self.mnt):
            time.sleep(0.05)
        return self

    @property
    def mounted(self):
        return os.path.ismount(self.mnt)

    def __exit__(self, *exc):
        subprocess.run(["fusermount3", "-uz", self.mnt], capture_output=True, timeout=30)
        try:
            self.rc = self.proc.wait(timeout=30 * SLOW)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # our own child, by its Popen
            self.rc = self.proc.wait()
        self.logf.close()
        return False

    def log_text(self):
        try:
            with open(self.log, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""


def wait_until(cond, limit):
    """Polls COND until true or LIMIT seconds; returns (result, seconds waited)."""
    t0 = time.monotonic()
    while True:
        v = cond()
        if v or time.monotonic() - t0 >= limit:
            return v, time.monotonic() - t0
        time.sleep(0.05)


# ---- 1. /patients ---------------------------------------------------------------------

def check_patients(c, mnt, archive, data, stored):
    P = os.path.join(mnt, "patients")
    top = sorted(os.listdir(P)) if os.path.isdir(P) else []
    expected_top = sorted(["DOE, JOHN (P1)", "ROE, JANE (X%2FY%281%29)", "Unnamed (P3)",
                           "Müller, Jürgen (P4)", "SMITH, ANN (P5)", "SMITH, ANNE (P5)",
                           "DOE, JANE (P6)", "TEMP, DEL (P7)"])
    c.eq(top, expected_top, "/patients lists one folder per (PatientID, name): 'DOE, JOHN (P1)', "
         "percent-encoded IDs, 'Unnamed', UTF-8, two folders for P5's two names")

    doe = os.path.join(P, "DOE, JOHN (P1)")
    studies = sorted(os.listdir(doe)) if os.path.isdir(doe) else []
    tagged = sorted((s for s in studies if re.fullmatch(r"2020-01-15 CT HEAD W_O ~\d+", s)),
                    key=lambda s: int(s.rsplit("~", 1)[1]))
    c.ok(len(tagged) == 2 and "2021-06-10 MR BRAIN" in studies and len(studies) == 3,
         "a study is '<YYYY-MM-DD> <description>' ('/' -> '_'); equal ones both get ' ~<arrival>'",
         f"listed {studies}")
    # which study answers to which name: tags follow arrival; the plain name means the first
    first = os.path.join(doe, "2020-01-15 CT HEAD W_O", "CT 3 Axial", "1.dcm")
    c.ok(try_read(first) == data["1.1.1"], "the plain study name still answers, as the first to arrive (study 1)")
    if len(tagged) == 2:
        c.ok(try_read(os.path.join(doe, tagged[0], "CT 3 Axial", "1.dcm")) == data["1.1.1"],
             f"'{tagged[0]}' is the first study (study 1)")
        c.ok(try_read(os.path.join(doe, tagged[1], "CT 3 Axial", "1.dcm")) == data["2.1.1"],
             f"'{tagged[1]}' is the later study (study 2)")

    s1 = os.path.join(doe, tagged[0] if tagged else "2020-01-15 CT HEAD W_O")
    series = sorted(os.listdir(s1)) if os.path.isdir(s1) else []
    c.eq(series, ["CT 3 Axial", "CT 4 Coronal_Sag"], "series are '<Modality> <SeriesNumber> <description>'")

    ax = os.path.join(s1, "CT 3 Axial")
    inst = sorted(os.listdir(ax)) if os.path.isdir(ax) else []
    dups = sorted((n for n in inst if re.fullmatch(r"2 ~\d+\.dcm", n)), key=lambda n: int(n[3:-4]))
    c.ok(set(inst) - set(dups) == {"1.dcm", uid("1.1.4") + ".dcm"} and len(dups) == 2 and len(inst) == 4,
         "instances are '<InstanceNumber>.dcm', a repeated number '<n> ~<arrival>.dcm' for each, "
         "no number '<SOPInstanceUID>.dcm'", f"listed {inst}")
    c.ok(try_read(os.path.join(ax, "2.dcm")) == data["1.1.2"], "'2.dcm' still answers, as the first numbered 2")
    dup = dups[1:]  # the later one (the size check below)
    if len(dups) == 2:
        c.ok(try_read(os.path.join(ax, dups[0])) == data["1.1.2"], f"'{dups[0]}' is the first one")
        c.ok(try_read(os.path.join(ax, dups[1])) == data["1.1.3"], f"'{dups[1]}' is the later one")
    c.ok(try_read(os.path.join(ax, uid("1.1.4") + ".dcm")) == data["1.1.4"],
         "the instance without InstanceNumber reads back as '<SOPInstanceUID>.dcm'")
    c.eq(err_of(os.stat, os.path.join(ax, "3.dcm")), errno.ENOENT, "a number no instance has is ENOENT")

    roe = os.path.join(P, "ROE, JANE (X%2FY%281%29)")
    c.ok(os.path.isdir(roe), "the folder of PatientID 'X/Y(1)' resolves (stat)")
    roe_studies = sorted(os.listdir(roe)) if os.path.isdir(roe) else []
    c.eq(roe_studies, ["2020-03-01 CHEST PA LAT x"],
         "a tab, a control character and a run of spaces in a description become one space")
    c.ok(try_read(os.path.join(roe, "2020-03-01 CHEST PA LAT x", "CR 1 PA", "2.dcm")) == data["4.1.2"],
         "a file below the percent-encoded patient folder reads back")

    anon = os.path.join(P, "Unnamed (P3)")
    c.eq(sorted(os.listdir(anon)) if os.path.isdir(anon) else None, ["no date KNEE"],
         "a study without StudyDate is 'no date <description>'")
    knee = os.path.join(anon, "no date KNEE")
    kseries = sorted(os.listdir(knee)) if os.path.isdir(knee) else []
    ktagged = sorted((n for n in kseries if re.fullmatch(r"MR 2 Sag ~\d+", n)), key=lambda n: int(n.rsplit("~", 1)[1]))
    c.ok(len(kseries) == 2 and len(ktagged) == 2, "equal series both get ' ~<arrival>'", f"listed {kseries}")
    c.ok(try_read(os.path.join(knee, "MR 2 Sag", "1.dcm")) == data["5.1.1"],
         "the plain series name answers as the first series")
    if len(ktagged) == 2:
        c.ok(try_read(os.path.join(knee, ktagged[1], "1.dcm")) == data["5.2.1"], f"'{ktagged[1]}' is the later series")
    chest = os.path.join(P, "DOE, JANE (P6)", "2020-05-20 CT CHEST", "CT 2 Chest")
    cinst = sorted(os.listdir(chest)) if os.path.isdir(chest) else []
    ctagged = sorted((n for n in cinst if re.fullmatch(r"1 ~\d+\.dcm", n)), key=lambda n: int(n[3:-4]))
    c.ok(len(cinst) == 2 and len(ctagged) == 2,
         "two instances numbered 1: '1 ~<a>.dcm' and '1 ~<b>.dcm'", f"listed {cinst}")
    if len(ctagged) == 2:
        c.ok(try_read(os.path.join(chest, ctagged[1])) == data["9.1.3"], f"'{ctagged[1]}' is the later one")
    c.ok(try_read(os.path.join(P, "Müller, Jürgen (P4)", "2020-12-24 Thorax", "CT 1 Lung", "7.dcm")) == data["6.1.1"],
         "a UTF-8 path ('Müller, Jürgen (P4)/2020-12-24 Thorax/CT 1 Lung/7.dcm') reads back")
    c.eq(sorted(os.listdir(os.path.join(P, "SMITH, ANN (P5)"))), ["2019-01-01 A"],
         "one PatientID, two names: the first folder has the first name's study")
    c.eq(sorted(os.listdir(os.path.join(P, "SMITH, ANNE (P5)"))), ["2019-01-02 B"],
         "and the second folder the second name's")
    c.eq(sorted(os.listdir(os.path.join(P, "SMITH, ANN (P5)", "2019-01-01 A"))), ["US 1"],
         "a series without description is '<Modality> <SeriesNumber>'")
    c.eq(err_of(os.stat, os.path.join(P, "SMITH, ANN (P9)")), errno.ENOENT, "an unknown patient folder is ENOENT")
    c.eq(err_of(os.stat, os.path.join(P, "no brackets")), errno.ENOENT, "a name that is no patient folder is ENOENT")

    # the whole tree: safe names, every instance exactly once, the stored bytes, sizes
    by_bytes = {v: k for k, v in data.items()}
    seen = collections.Counter()
    bad_names, bad_bytes, bad_sizes, other = [], [], [], []
    for d, dirs, files in os.walk(P):
        for n in dirs + files:
            why = safe_name_problem(n)
            if why:
                bad_names.append(f"{os.path.join(d, n)!r}: {why}")
        depth = len(os.path.relpath(d, P).split(os.sep)) if d != P else 0
        if files and depth != 3:
            other.append(f"files at depth {depth}: {d}")
        for n in files:
            p = os.path.join(d, n)
            b = try_read(p)
            key = by_bytes.get(b) if isinstance(b, bytes) else None
            if key is None:
                bad_bytes.append(p)
                continue
            seen[uid(key)] += 1
            if os.stat(p).st_size != len(b):
                bad_sizes.append(f"{p}: stat {os.stat(p).st_size}, read {len(b)}")
    c.ok(not bad_names, "every name below /patients is UTF-8 without '/', '\\' or control characters",
         "; ".join(bad_names[:10]))
    c.ok(not other, "files are only found at the instance level", "; ".join(other[:5]))
    c.ok(not bad_bytes, "every file below /patients is byte for byte a source file", "; ".join(bad_bytes[:5]))
    c.ok(not bad_sizes, "every file's size (stat) is the size of its bytes", "; ".join(bad_sizes[:5]))
    twice = [u for u, k in seen.items() if k > 1]
    c.ok(not twice, "no instance appears twice in /patients", f"{twice}")
    c.eq(sorted(seen), sorted(stored or []), "walking /patients finds exactly the stored instances")

    # ls -l (readdirplus) shows the sizes too
    p = subprocess.run(["ls", "-ln", ax], capture_output=True, text=True, timeout=60)
    sizes = {}
    for line in p.stdout.splitlines():
        m = re.match(r"^-\S+\s+\d+\s+\d+\s+\d+\s+(\d+)\s+\S+\s+\S+\s+\S+\s+(.*)$", line)
        if m:
            sizes[m.group(2)] = int(m.group(1))
    want = {"1.dcm": len(data["1.1.1"]), uid("1.1.4") + ".dcm": len(data["1.1.4"])}
    if dups:
        want[dups[0]] = len(data["1.1.2"])
    if dup:
        want[dup[0]] = len(data["1.1.3"])
    c.eq(sizes, want, "ls -l of a series folder shows each instance's size")
    return ax


# ---- 2. /search -----------------------------------------------------------------------

def expected_target(level, u):
    """The link target of the entry for UID U at LEVEL (from the data set's keys)."""
    key = u[len(R) + 1:]
    st = study_of(key)
    if level == "studies":
        return f"../../../studies/{uid(st)}"
    if level == "series":
        return f"../../../studies/{uid(st)}/series/{uid(series_of(key))}"
    return f"../../../studies/{uid(st)}/series/{uid(series_of(key))}/instances/{u}.dcm"


def check_search(c, mnt, archive, data, paths):
    S = os.path.join(mnt, "search")
    c.eq(sorted(os.listdir(S)) if os.path.isdir(S) else None, ["instances", "series", "studies"],
         "/search lists studies, series and instances")
    queries = [
        ("studies", "PatientName=DOE*"),
        ("studies", "StudyDate=20200101-20201231"),
        ("studies", "PatientName=DOE*&StudyDate=20200101-20201231"),
        ("studies", "ModalitiesInStudy=CT&StudyDate=20200101-20201231"),
        ("studies", "limit=1"),
        ("studies", "PatientID=X%2FY%281%29"),
        ("studies", "PatientName=M%C3%BCller*"),
        ("studies", "StudyDescription=CT%20HEAD%20W%2FO"),
        ("series", "Modality=CT"),
        ("series", "Modality=MR&limit=1"),
        ("series", "Modality=US&PatientID=P5"),
        ("instances", "Modality=CT"),
        ("instances", f"SeriesInstanceUID={uid('1.1')}"),
        ("instances", "PatientName=DOE*&Modality=CT&StudyDate=20200101-20201231"),
        ("instances", "limit=1"),
    ]
    by_bytes = {v: k for k, v in data.items()}
    for level, q in queries:
        folder = os.path.join(S, level, q)
        want, err = find_uids(archive, level, q)
        if not c.ok(want is not None and len(want) > 0, f"find --level {level} {q} has matches (to compare with)",
                    err or ""):
            continue
        try:
            names = os.listdir(folder)
        except OSError as e:
            c.ok(False, f"search/{level}/{q} lists", str(e))
            continue
        got = [n[:-4] if level == "instances" and n.endswith(".dcm") else n for n in names]
        c.eq(sorted(got), sorted(want), f"search/{level}/{q} holds exactly what find returns ({len(want)})")
        bad_links, bad_reads = [], []
        for n in names:
            p = os.path.join(folder, n)
            u = n[:-4] if level == "instances" else n
            if not os.path.islink(p):
                bad_links.append(f"{n}: not a symbolic link")
                continue
            t = os.readlink(p)
            if t != expected_target(level, u):
                bad_links.append(f"{n} -> {t}")
                continue
            real = os.path.realpath(p)
            rel = os.path.relpath(real, mnt)
            if not rel.startswith("studies" + os.sep) or not os.path.exists(p):
                bad_links.append(f"{n} resolves to {real}")
            if level == "instances":
                b = try_read(p)
                if not isinstance(b, bytes) or by_bytes.get(b) != u[len(R) + 1:]:
                    bad_reads.append(n)
        c.ok(not bad_links, f"search/{level}/{q}: entries are links to ../../../studies/... that resolve",
             "; ".join(bad_links[:5]))
        if level == "instances":
            c.ok(not bad_reads, f"search/{level}/{q}: reading through the links gives the stored bytes",
                 "; ".join(bad_reads[:5]))
        if "limit=1" in q:
            c.eq(len(names), 1, f"search/{level}/{q}: limit=1 gives one entry")

    # ls -l of a search folder: lstat works on every entry
    q = "PatientName=DOE*&StudyDate=20200101-20201231"
    p = subprocess.run(["ls", "-l", os.path.join(S, "studies", q)], capture_output=True, text=True, timeout=60)
    links = [l for l in p.stdout.splitlines() if l.startswith("l")]
    want = find_uids(archive, "studies", q)[0]
    c.ok(p.returncode == 0 and want and len(links) == len(want),
         "ls -l of a search folder shows every link", p.stdout + p.stderr)

    # bad queries: EINVAL, and <query>.error says why
    for level, q, word in [("studies", "StudyDate=notadate", "notadate"), ("studies", "Foo=1", "Foo"),
                           ("instances", "StudyDate=2020-99", "2020-99"),
                           ("studies", "StudyDate=20200230", "no day 30 in February 2020"),
                           ("series", "StudyDate=20200101-20201301", "no month 13")]:
        folder = os.path.join(S, level, q)
        c.eq(ename(err_of(os.stat, folder)), "EINVAL", f"stat search/{level}/{q} fails with EINVAL")
        c.eq(ename(err_of(os.listdir, folder)), "EINVAL", f"ls search/{level}/{q} fails with EINVAL")
        why = try_read(folder + ".error")
        ok = isinstance(why, bytes) and word.encode() in why
        c.ok(ok, f"search/{level}/{q}.error is readable and names the problem", repr(why))
        if ok:
            st = os.stat(folder + ".error")
            c.eq(st.st_size, len(why), f"search/{level}/{q}.error: its size is the size of its text")
            lv = {"studies": "study", "series": "series", "instances": "instance"}[level]
            rc, _, stderr = tu.find(archive, urllib.parse.unquote(q), level=lv)
            c.ok(rc != 0 and why.decode().strip() in stderr,
                 f"search/{level}/{q}.error gives find's reason", f"find exit {rc}, stderr {stderr!r}")
    c.eq(ename(err_of(os.stat, os.path.join(S, "bogus"))), "ENOENT", "search/bogus is ENOENT")
    c.eq(ename(err_of(os.listdir, os.path.join(S, "bogus", "Modality=CT"))), "ENOENT",
         "search/bogus/<query> is ENOENT")
    c.eq(ename(err_of(os.stat, os.path.join(S, "studies", "PatientName=DOE*", "1.2.3"))), "ENOENT",
         "a name that is not in a search folder is ENOENT")

    # results are not stale: another process stores a matching instance
    folder = os.path.join(S, "instances", "Modality=CT")
    before = set(os.listdir(folder))
    os.listdir(os.path.join(S, "studies", "PatientName=DOE*"))
    late = uid(LATE) + ".dcm"
    c.ok(late not in before, "the late instance is not listed before it is stored")
    p, results, _ = tu.ingest(archive, [paths[LATE]])
    c.ok(p.returncode == 0 and results and results[0].get("result") == "stored",
         "another `dicomfs ingest` process stores a new CT instance", p.stderr)
    after = set(os.listdir(folder))
    c.eq(sorted(after - before), [late], "listed again, search/instances/Modality=CT has the new instance")
    c.ok(try_read(os.path.join(folder, late)) == data[LATE], "and it reads back through its link")
    want, _ = find_uids(archive, "instances", "Modality=CT")
    c.eq(sorted(n[:-4] for n in after), sorted(want or []), "and it still equals find's answer")


# ---- 4. Freshness ---------------------------------------------------------------------

def meta_consistent(path):
    """(size from stat == length read, stat size, read length)."""
    try:
        size = os.stat(path).st_size
        n = len(read(path))
        return size == n, size, n
    except OSError as e:
        return False, str(e), None


def check_metadata_sizes(c, mnt, what):
    bad = []
    S = os.path.join(mnt, "studies")
    count = 0
    for st in sorted(os.listdir(S)):
        paths = [os.path.join(S, st, "metadata.json")]
        for se in sorted(os.listdir(os.path.join(S, st, "series"))):
            paths.append(os.path.join(S, st, "series", se, "metadata.json"))
        for p in paths:
            ok, size, n = meta_consistent(p)
            count += 1
            if not ok:
                bad.append(f"{os.path.relpath(p, mnt)}: stat {size}, read {n}")
    c.ok(not bad and count > 0, f"{what}: every metadata.json's size (stat) is what a read returns ({count} files)",
         "; ".join(bad[:5]))


def check_metadata_growth(c, mnt, archive, data, paths, extra_path):
    """A study grows (another process stores an instance): stat and read still agree."""
    meta = os.path.join(mnt, "studies", uid("9"), "metadata.json")
    ok, size0, n0 = meta_consistent(meta)
    c.ok(ok, "study 9's metadata.json: stat size equals the bytes read", f"stat {size0}, read {n0}")
    p, results, _ = tu.ingest(archive, [extra_path])
    c.ok(p.returncode == 0 and results and results[0].get("result") == "stored",
         "another process adds an instance to study 9", p.stderr)
    first = meta_consistent(meta)
    if not first[0]:
        c.note(f"right after the ingest: stat {first[1]}, read {first[2]} (the mount hears of other "
               f"processes' changes by polling)")
    (ok, size1, n1), waited = wait_until(lambda: meta_consistent(meta), FRESH_WAIT)
    c.ok(ok, f"after it, stat size equals the bytes read again (within {FRESH_WAIT:.0f} s)",
         f"stat {size1}, read {n1}")
    c.note(f"metadata.json consistent after {waited:.2f} s")
    c.ok(isinstance(n1, int) and isinstance(n0, int) and n1 > n0, "and metadata.json grew",
         f"before {n0}, after {n1}")


def check_delete_by_other(c, mnt, archive):
    st = uid("10")
    files = [os.path.join(mnt, "studies", st, "series", uid("10.1"), "instances", uid(k) + ".dcm")
             for k in ("10.1.1", "10.1.2")]
    pfiles = [os.path.join(mnt, "patients", "TEMP, DEL (P7)", "2022-02-02 FRESH", "OT 1 tmp", n)
              for n in ("1.dcm", "2.dcm")]
    c.ok(all(os.path.isfile(f) for f in files + pfiles), "study 10's files stat through both views")
    for f in files + pfiles:  # fill the kernel's caches
        try_read(f)
    os.listdir(os.path.join(mnt, "studies"))
    sfolder = os.path.join(mnt, "search", "instances", "PatientID=P7")
    c.eq(sorted(os.listdir(sfolder)), sorted(uid(k) + ".dcm" for k in ("10.1.1", "10.1.2")),
         "search/instances/PatientID=P7 lists study 10's instances")
    p = tu.delete(archive, st)
    c.ok(p.returncode == 0, "another process deletes study 10 (dicomfs delete)", p.stderr)
    everything = files + pfiles + [os.path.join(mnt, "studies", st), os.path.join(mnt, "patients", "TEMP, DEL (P7)")]

    t0 = time.monotonic()
    seen = {}  # view -> seconds until every path of it had gone

    def gone():
        for view, fs in (("studies", files), ("patients", pfiles)):
            if view not in seen and not any(os.path.exists(f) for f in fs):
                seen[view] = time.monotonic() - t0
        return (len(seen) == 2 and not any(os.path.exists(f) for f in everything)
                and st not in os.listdir(os.path.join(mnt, "studies"))
                and "TEMP, DEL (P7)" not in os.listdir(os.path.join(mnt, "patients")))
    ok, waited = wait_until(gone, FRESH_WAIT)
    left = [os.path.relpath(f, mnt) for f in everything if os.path.exists(f)]
    c.ok(ok, f"its files and folders leave both views within {FRESH_WAIT:.0f} s", f"still there: {left}")
    c.note(f"study 10 gone from the mount after {waited:.2f} s (instance files: "
           + ", ".join(f"/{v} {t:.2f} s" for v, t in sorted(seen.items())) + ")")
    c.ok(isinstance(try_read(files[0]), OSError), "reading a deleted instance fails")
    c.eq(os.listdir(sfolder), [], "listed again, search/instances/PatientID=P7 is empty")


# ---- 3. Deleting ----------------------------------------------------------------------

def write_refusals(c, mnt, what):
    meta = os.path.join(mnt, "studies", uid("6"), "metadata.json")
    smeta = os.path.join(mnt, "studies", uid("6"), "series", uid("6.1"), "metadata.json")
    allowed = ("EROFS", "EACCES", "EPERM")
    for p in (meta, smeta, os.path.join(mnt, "changes", "latest.json"), os.path.join(mnt, "changes", "1.json"),
              os.path.join(mnt, "changes", "feed.jsonl")):
        e = ename(write_attempt(p))
        c.ok(e in allowed, f"{what}: writing {os.path.relpath(p, mnt)} fails (EROFS or EACCES)", e)
    e = ename(write_attempt(os.path.join(mnt, "changes", "new.json")))
    c.ok(e in allowed + ("ENOENT",), f"{what}: creating a file under changes/ fails", e)
    e = ename(err_of(os.truncate, meta, 0))
    c.ok(e in allowed, f"{what}: truncating metadata.json fails", e)
    e = ename(err_of(os.unlink, os.path.join(mnt, "changes", "latest.json")))
    c.ok(e in allowed, f"{what}: rm changes/latest.json fails", e)
    ok, size, n = meta_consistent(meta)
    c.ok(ok and isinstance(n, int) and n > 0, f"{what}: metadata.json is unchanged", f"stat {size}, read {n}")


def check_no_delete(c, mnt, archive, ax):
    before = stored_sops(archive)
    inst = os.path.join(mnt, "studies", uid("4"), "series", uid("4.1"), "instances", uid("4.1.1") + ".dcm")
    c.eq(ename(err_of(os.unlink, inst)), "EACCES", "without --allow-delete: rm of an instance file is EACCES")
    c.eq(ename(err_of(os.unlink, os.path.join(ax, "1.dcm"))), "EACCES",
         "without --allow-delete: rm of a /patients instance file is EACCES")
    c.eq(ename(err_of(os.rmdir, os.path.join(mnt, "studies", uid("4")))), "EACCES",
         "without --allow-delete: rmdir of a study is EACCES")
    c.eq(ename(err_of(os.rmdir, os.path.join(mnt, "patients", "SMITH, ANN (P5)", "2019-01-01 A"))), "EACCES",
         "without --allow-delete: rmdir of a /patients study folder is EACCES")
    p = subprocess.run(["rm", "-rf", os.path.join(mnt, "studies", uid("7"))], capture_output=True, text=True,
                       timeout=60 * SLOW)
    c.ok(p.returncode != 0, "without --allow-delete: rm -rf of a study fails", p.stderr)
    c.eq(sorted(stored_sops(archive) or []), sorted(before or []), "and nothing was deleted")
    write_refusals(c, mnt, "read-only mount")


def delete_entries(archive):
    entries, err = tu.all_changes(archive)
    return {e.get("sopInstanceUid") for e in entries if e.get("action") == "delete"}, err


def check_delete(c, mnt, archive):
    start = stored_sops(archive) or set()
    # rm of one instance, in each view
    inst = os.path.join(mnt, "studies", uid("1"), "series", uid("1.2"), "instances", uid("1.2.1") + ".dcm")
    e = err_of(os.unlink, inst)
    c.eq(ename(e), "success", "with --allow-delete: rm of a /studies instance file succeeds")
    now = stored_sops(archive) or set()
    c.eq(sorted(start - now), [uid("1.2.1")], "it deleted exactly that instance")
    c.ok(not os.path.exists(inst), "and the file is gone from the mount")
    pinst = os.path.join(mnt, "patients", "Müller, Jürgen (P4)", "2020-12-24 Thorax", "CT 1 Lung", "7.dcm")
    e = err_of(os.unlink, pinst)
    c.eq(ename(e), "success", "rm of a /patients instance file succeeds")
    now2 = stored_sops(archive) or set()
    c.eq(sorted(now - now2), [uid("6.1.1")], "it deleted exactly that instance")
    c.ok(not os.path.exists(pinst), "and the file is gone from the view")
    c.eq(sorted(os.listdir(os.path.dirname(pinst))), ["8.dcm"], "its sibling is still listed")
    deleted, err = delete_entries(archive)
    c.ok(err is None and {uid("1.2.1"), uid("6.1.1")} <= deleted,
         "the change feed has a delete entry for each", err or f"delete entries: {sorted(deleted)}")

    # metadata.json goes with its study: rm of it deletes nothing
    before = stored_sops(archive) or set()
    e = err_of(os.unlink, os.path.join(mnt, "studies", uid("8"), "metadata.json"))
    c.eq(sorted(stored_sops(archive) or []), sorted(before), f"rm of a metadata.json deletes nothing ({ename(e)})")

    # rmdir of a folder that still holds instances
    before = stored_sops(archive) or set()
    c.eq(ename(err_of(os.rmdir, os.path.join(mnt, "studies", uid("4")))), "ENOTEMPTY",
         "rmdir of a non-empty study is ENOTEMPTY")
    c.eq(ename(err_of(os.rmdir, os.path.join(mnt, "patients", "SMITH, ANNE (P5)", "2019-01-02 B"))), "ENOTEMPTY",
         "rmdir of a non-empty /patients study folder is ENOTEMPTY")
    c.eq(ename(err_of(os.rmdir, os.path.join(mnt, "patients"))), "EACCES", "rmdir of /patients is EACCES")
    c.eq(sorted(stored_sops(archive) or []), sorted(before), "and nothing was deleted")

    def rm_r(rel, studies, what):
        """rm -r of REL, which holds the instances of the studies STUDIES."""
        path = os.path.join(mnt, rel)
        before = stored_sops(archive) or set()
        want = {u for u in before if any(u.startswith(uid(st) + ".") for st in studies)}
        p = subprocess.run(["rm", "-r", path], capture_output=True, text=True, timeout=60 * SLOW)
        c.ok(p.returncode == 0 and not p.stderr, f"rm -r {what} exits 0 without complaint",
             f"exit {p.returncode}: {p.stderr.strip()[:600]}")
        after = stored_sops(archive) or set()
        c.eq(sorted(before - after), sorted(want), f"rm -r {what} deleted exactly its instances ({len(want)})")
        c.ok(not os.path.lexists(path), f"after rm -r {what} the folder is gone",
             f"{path} still exists" + (f", holding {os.listdir(path)}" if os.path.isdir(path) else ""))
        deleted, err = delete_entries(archive)
        c.ok(err is None and want <= deleted, f"rm -r {what}: the change feed has its delete entries",
             err or f"missing {sorted(want - deleted)}")

    rm_r(os.path.join("studies", uid("4")), ["4"], "of a study under /studies")
    c.ok(uid("4") not in os.listdir(os.path.join(mnt, "studies")), "the study is no longer listed")
    rm_r(os.path.join("patients", "SMITH, ANN (P5)"), ["7"], "of 'SMITH, ANN (P5)' (one of two names of P5)")
    c.ok(os.path.isdir(os.path.join(mnt, "patients", "SMITH, ANNE (P5)")), "'SMITH, ANNE (P5)' is still there")
    rm_r(os.path.join("patients", "DOE, JANE (P6)"), ["9"], "of 'DOE, JANE (P6)' (equal InstanceNumbers)")
    # Equal sibling names: once rm has deleted the instances of the first sibling, its
    # (untagged) name must still be removable as an emptied folder.
    rm_r(os.path.join("patients", "Unnamed (P3)", "no date KNEE"), ["5"],
         "of 'Unnamed (P3)/no date KNEE' (equal series names)")
    rm_r(os.path.join("patients", "DOE, JOHN (P1)"), ["1", "2", "3"],
         "of 'DOE, JOHN (P1)' (equal study names, equal InstanceNumbers)")
    c.ok("DOE, JOHN (P1)" not in os.listdir(os.path.join(mnt, "patients")), "the patient is no longer listed")
    write_refusals(c, mnt, "--allow-delete mount")


# ---- 5. --daemon ----------------------------------------------------------------------

def pids_of_mount(mnt):
    """The pids of `dicomfs mount ... MNT` processes (read from /proc; nothing is signalled)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
            with open(f"/proc/{d}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if b"mount" in args and os.fsencode(mnt) in args and os.fsencode(tu.DICOMFS) in args and state != b"Z":
            out.append(int(d))
    return out


def check_daemon(c, archive, mnt):
    os.makedirs(mnt, exist_ok=True)
    p = None
    try:
        p = subprocess.run([tu.DICOMFS, "mount", "--daemon", archive, mnt], capture_output=True, text=True,
                           timeout=60 * SLOW)
        mounted = os.path.ismount(mnt)  # no waiting: ready when the command returns
        c.eq(p.returncode, 0, "mount --daemon exits 0")
        c.ok(mounted, "the mountpoint is mounted when mount --daemon returns", p.stderr)
        if not mounted:
            return
        pids = pids_of_mount(mnt)
        c.eq(len(pids), 1, "one process keeps serving in the background")
        c.ok(len(os.listdir(os.path.join(mnt, "studies"))) > 0, "the daemon's mount lists the studies")
        time.sleep(0.3)
        c.ok(os.path.ismount(mnt) and "patients" in os.listdir(mnt), "and keeps serving")
        u = subprocess.run(["fusermount3", "-u", mnt], capture_output=True, text=True, timeout=30)
        c.eq(u.returncode, 0, "fusermount3 -u unmounts it")
        ended, waited = wait_until(lambda: not set(pids) & set(pids_of_mount(mnt)), 10 * SLOW)
        c.ok(ended and pids, "and the daemon process ends", f"still running: {pids}")
    finally:
        if os.path.ismount(mnt):
            subprocess.run(["fusermount3", "-uz", mnt], capture_output=True, timeout=30)


# ---- Main -----------------------------------------------------------------------------

def main():
    t0 = time.monotonic()
    c = tu.Checker("fs_views")
    tu.require_binary()
    if not os.path.exists("/dev/fuse") or not shutil.which("fusermount3"):
        if os.environ.get("CI") == "true":
            c.ok(False, "/dev/fuse and fusermount3 are there (required on CI)")
            c.finish()
        print("skipped: no /dev/fuse or fusermount3")
        print("fs_views: 0 checks passed, 0 failed")
        sys.exit(0)

    # A run that was killed may have left its mounts behind: emptying the scratch folder
    # would then fail inside them.
    old = os.path.abspath(os.environ.get("SCRATCH") or "/tmp/dicomfs-test-fs_views")
    for sub in ("mnt", "mnt-daemon"):
        subprocess.run(["fusermount3", "-uz", os.path.join(old, sub)], capture_output=True, timeout=30)
    # SIGTERM/SIGHUP (ctest, a closed terminal) end the test through the cleanup code
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda n, _: sys.exit(128 + n))
    scratch = tu.scratch("fs_views")
    archive = os.path.join(scratch, "archive")
    mnt = os.path.join(scratch, "mnt")
    paths, data = build(os.path.join(scratch, "src"))
    extra = tu.write_dicom(os.path.join(scratch, "src", "9.1.2.dcm"), dataset("9.1.2", 2))

    for batch in (1, 2):
        keys = [k for k, (_, b) in INSTANCES.items() if b == batch]
        p, results, bad = tu.ingest(archive, [paths[k] for k in keys])
        c.ok(p.returncode == 0 and len(results) == len(keys) and all(r.get("result") == "stored" for r in results),
             f"batch {batch}: {len(keys)} instances stored", p.stderr + p.stdout[:600])
    stored = stored_sops(archive)
    c.eq(sorted(stored or []), sorted(uid(k) for k in INSTANCES), "find returns every stored instance")

    with Mount(archive, mnt, os.path.join(scratch, "mount1.log")) as m:
        if not c.ok(m.mounted, "the archive is mounted (no --allow-delete)", m.log_text()):
            c.finish()
        try:
            ax = check_patients(c, mnt, archive, data, stored)
            check_metadata_sizes(c, mnt, "before changes")
            check_search(c, mnt, archive, data, paths)
            check_metadata_growth(c, mnt, archive, data, paths, extra)
            check_metadata_sizes(c, mnt, "after changes")
            check_delete_by_other(c, mnt, archive)
            check_no_delete(c, mnt, archive, ax)
        except Exception as e:  # a crash of the test must not leave the mount behind
            c.ok(False, f"the read-only mount phase ran to its end: {type(e).__name__}: {e}")
    c.eq(m.rc, 0, "the first mount process exits 0 after fusermount3 -uz")

    with Mount(archive, mnt, os.path.join(scratch, "mount2.log"), "--allow-delete") as m:
        if c.ok(m.mounted, "the archive is mounted with --allow-delete", m.log_text()):
            try:
                check_delete(c, mnt, archive)
            except Exception as e:
                c.ok(False, f"the --allow-delete phase ran to its end: {type(e).__name__}: {e}")
    c.eq(m.rc, 0, "the --allow-delete mount process exits 0 after fusermount3 -uz")

    check_daemon(c, archive, os.path.join(scratch, "mnt-daemon"))

    p = tu.fsck(archive)
    c.eq(p.returncode, 0, "the archive is consistent (fsck)")
    c.note(f"ran for {time.monotonic() - t0:.1f} s")
    c.finish()


if __name__ == "__main__":
    main()
