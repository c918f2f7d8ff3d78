"""End-to-end: extended query tags and operations in the mount (a real FUSE mount).

  1. /extended-query-tags/ lists <path>.json per tag; cat of one is what `dicomfs tags get`
     prints (without its newline), and stat gives the size cat reads;
  2. writing a JSON array to a new name (new.json) adds the tags at close(); cp of a file
     does too; the operation is listed under /operations/ and <id>.json reads as
     `dicomfs operations` prints it, until it has succeeded;
  3. a refused write fails close() with the errno (EINVAL for bad JSON or a rule of the
     reference, EEXIST for a tag that exists) and <name>.json.error says why; rm of the
     .error file forgets it;
  4. writing {"queryStatus": ...} to <path>.json updates the tag (a bad one: EINVAL and
     <path>.json.error, which the next good update clears);
  5. /search/<level>/<query>/ folders follow the tags: refused before a tag is ready,
     the matches once it is, refused again when it is disabled (a cached result is not
     reused) and after it is deleted;
  6. rm <path>.json is EACCES without --allow-delete and deletes the tag with it; other
     names than NAME.json cannot be written; unknown operation files are ENOENT.

Needs /dev/fuse and fusermount3: skipped without them, except on CI (CI=true).
"""
import errno
import json
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import testutil as tu  # noqa: E402

R = "1.2.826.0.1.3680043.9.7777.82"
SLOW = 3 if b"__asan_init" in open(tu.DICOMFS, "rb").read() else 1
WAIT = 30.0 * SLOW

# instance key -> (PatientAge, InstanceNumber)
INSTANCES = {"1.1.1": ("042Y", 1), "1.1.2": ("042Y", 2), "2.1.1": ("030Y", 2)}


def uid(key):
    return f"{R}.{key}"


class Mount:
    """`dicomfs mount ARCHIVE MNT [OPTS]` in the background; always unmounted again."""

    def __init__(self, archive, mnt, log, *opts):
        self.archive, self.mnt, self.log, self.opts = archive, mnt, log, opts

    def __enter__(self):
        os.makedirs(self.mnt, exist_ok=True)
        self.logf = open(self.log, "wb")
        self.proc = subprocess.Popen([tu.DICOMFS, "mount", self.archive, self.mnt, *self.opts],
                                     stdout=self.logf, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30 * SLOW
        while time.monotonic() < deadline and self.proc.poll() is None and not os.path.ismount(self.mnt):
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        subprocess.run(["fusermount3", "-uz", self.mnt], capture_output=True, timeout=30)
        try:
            self.rc = self.proc.wait(timeout=30 * SLOW)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # our own child, by its Popen
            self.rc = self.proc.wait()
        self.logf.close()
        return False


def err_of(fn, *args):
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


def write(path, text):
    """open(PATH, 'w'), write, close: the errno close() (or open) failed with, 0 on success."""
    try:
        with open(path, "w") as f:
            f.write(text)
        return 0
    except OSError as e:
        return e.errno


def listdir(path):
    try:
        return sorted(os.listdir(path))
    except OSError as e:
        return e.errno


def cli(*args):
    return tu.run(list(args))


def wait_until(cond, limit):
    t0 = time.monotonic()
    while True:
        v = cond()
        if v or time.monotonic() - t0 >= limit:
            return v
        time.sleep(0.05)


def op_status(mnt, op_id):
    b = try_read(os.path.join(mnt, "operations", f"{op_id}.json"))
    try:
        return json.loads(b).get("status") if isinstance(b, bytes) else None
    except ValueError:
        return None


def main():
    tu.require_binary()
    c = tu.Checker("fs_xqt")
    if not os.path.exists("/dev/fuse") or not shutil.which("fusermount3"):
        if os.environ.get("CI") == "true":
            c.ok(False, "/dev/fuse and fusermount3 are there on CI")
            c.finish()
        print("skipped: no /dev/fuse")
        c.finish()
    S = tu.scratch("fs_xqt")
    A, M, src = os.path.join(S, "archive"), os.path.join(S, "mnt"), os.path.join(S, "src")
    paths = []
    for key, (age, number) in INSTANCES.items():
        st, se = key.split(".")[0], ".".join(key.split(".")[:2])
        ds = tu.make_dataset(uid(st), uid(se), uid(key), PatientName="XQT^FS", StudyDate="20200101", Modality="CT",
                             PatientAge=age, InstanceNumber=number)
        paths.append(tu.write_dicom(os.path.join(src, f"{key}.dcm"), ds))
    p, results, _ = tu.ingest(A, paths)
    c.ok(p.returncode == 0 and len(results) == 3, "three instances stored", p.stderr[-300:])

    X = os.path.join(M, "extended-query-tags")
    O = os.path.join(M, "operations")
    age_search = os.path.join(M, "search", "studies", "PatientAge=042Y")
    with Mount(A, M, os.path.join(S, "mount.log")) as m:
        if not c.ok(os.path.ismount(M), "the archive is mounted"):
            c.finish()
        root = listdir(M)
        c.ok(isinstance(root, list) and "extended-query-tags" in root and "operations" in root,
             "the root lists extended-query-tags and operations", f"{root}")
        c.eq(listdir(X), [], "/extended-query-tags/ of an archive without tags is empty")
        c.eq(listdir(O), [], "/operations/ is empty")
        c.eq(ename(err_of(os.listdir, age_search)), "EINVAL", "a search by PatientAge is refused (no such tag yet)")
        why = try_read(age_search + ".error")
        c.ok(isinstance(why, bytes) and b"PatientAge" in why, "and its .error says why", f"{why!r}")

        # ---- 2. add by writing new.json ---------------------------------------------------
        rc = write(os.path.join(X, "new.json"), '[{"path":"PatientAge","vr":"AS","level":"Study"}]')
        c.eq(ename(rc), "success", "writing a JSON array to new.json adds the tag (close() succeeds)")
        names = listdir(X)
        c.ok(isinstance(names, list) and "00101010.json" in names and "new.json" not in names
             and "new.json.error" not in names, "00101010.json is listed; new.json is gone after close", f"{names}")
        ops = listdir(O)
        c.ok(isinstance(ops, list) and len(ops) == 1 and ops[0].endswith(".json") and len(ops[0]) == 37,
             "/operations/ lists the operation the write started", f"{ops}")
        op_id = ops[0][:-5] if isinstance(ops, list) and ops else "0" * 32
        op = try_read(os.path.join(O, f"{op_id}.json"))
        try:
            op = json.loads(op)
        except (ValueError, TypeError):
            op = None
        c.ok(op and op.get("operationId") == op_id and op.get("resources") == ["/extendedquerytags/00101010"],
             "cat /operations/<id>.json: the operation, for PatientAge", f"{op}")
        done = wait_until(lambda: op_status(M, op_id) == "succeeded", WAIT)
        c.ok(done, "the operation file shows it succeeding (the reindex runs in the mount)")
        p = cli("operations", A, op_id)
        c.eq(try_read(os.path.join(O, f"{op_id}.json")), p.stdout.rstrip("\n").encode(),
             "the operation file reads as `dicomfs operations` prints it")
        p = cli("tags", A, "get", "00101010")
        tagfile = os.path.join(X, "00101010.json")
        content = try_read(tagfile)
        c.eq(content, p.stdout.rstrip("\n").encode(), "cat 00101010.json is `dicomfs tags get 00101010` (ready)")
        c.ok(isinstance(content, bytes) and os.stat(tagfile).st_size == len(content), "its size is what cat reads")
        tag = json.loads(content) if isinstance(content, bytes) else {}
        c.ok(tag.get("status", "").lower() == "ready" and tag.get("queryStatus", "").lower() == "enabled",
             "the tag is ready and enabled", f"{tag}")
        c.eq(try_read(os.path.join(X, "PatientAge.json")), content, "PatientAge.json answers too (by keyword)")

        # ---- 5. search follows -----------------------------------------------------------
        got = wait_until(lambda: listdir(age_search) == [uid("1")], 3 * SLOW)
        c.ok(got, "once ready, the PatientAge=042Y folder lists study 1", f"{listdir(age_search)}")
        target = os.readlink(os.path.join(age_search, uid("1"))) if got else ""
        c.eq(target, f"../../../studies/{uid('1')}", "as a link to studies/")

        # ---- 3. refused writes -------------------------------------------------------------
        for name, body, want, says in [
                ("bad.json", "not json at all", "EINVAL", "JSON"),
                ("core.json", '[{"path":"PatientName","vr":"PN","level":"Study"}]', "EINVAL", "PatientName"),
                ("empty.json", "[]", "EINVAL", None),
                ("again.json", '[{"path":"PatientAge","vr":"AS","level":"Study"}]', "EEXIST", "exist"),
                ("00101010.json", '[{"path":"00101010","vr":"AS","level":"Study"}]', "EEXIST", "exist")]:
            rc = write(os.path.join(X, name), body)
            c.eq(ename(rc), want, f"writing {body[:40]!r} to {name}: close() fails with {want}")
            text = try_read(os.path.join(X, name + ".error"))
            c.ok(isinstance(text, bytes) and text.startswith(name.encode() + b": not added: ")
                 and (says is None or says.lower().encode() in text.lower()),
                 f"{name}.error says why", f"{text!r}")
        names = listdir(X)
        c.ok(isinstance(names, list) and "bad.json.error" in names and "bad.json" not in names,
             "the .error files are listed (the refused names are not)", f"{names}")
        c.eq(ename(err_of(os.unlink, os.path.join(X, "bad.json.error"))), "success", "rm bad.json.error works")
        c.ok("bad.json.error" not in (listdir(X) or []), "and it is gone")
        c.eq(ename(write(os.path.join(X, "notes.txt"), "x")), "EACCES", "a name not ending in .json cannot be written")
        c.ok(err_of(os.mkdir, os.path.join(X, "dir")) in (errno.EROFS, errno.EACCES, errno.EPERM),
             "mkdir in /extended-query-tags is refused")
        p = cli("tags", A, "list")
        c.eq([t.get("path") for t in json.loads(p.stdout)] if p.returncode == 0 else p.stderr, ["00101010"],
             "refused writes added nothing")

        # ---- 2b. cp of a file adds too --------------------------------------------------------
        body = os.path.join(src, "instance-number.json")
        with open(body, "w") as f:
            f.write('[{"path": "InstanceNumber", "vr": "IS", "level": "Instance"}]\n')
        try:
            shutil.copyfile(body, os.path.join(X, "cp.json"))
            rc = 0
        except OSError as e:
            rc = e.errno
        c.eq(ename(rc), "success", "cp of a JSON file into /extended-query-tags/ adds its tag")
        ops2 = [o for o in (listdir(O) or []) if o != f"{op_id}.json"]
        c.eq(len(ops2), 1, "a second operation is listed")
        if ops2:
            c.ok(wait_until(lambda: op_status(M, ops2[0][:-5]) == "succeeded", WAIT), "and succeeds")
        inst = os.path.join(M, "search", "instances", "InstanceNumber=2")
        c.ok(wait_until(lambda: listdir(inst) == sorted([uid("1.1.2") + ".dcm", uid("2.1.1") + ".dcm"]), 3 * SLOW),
             "search/instances/InstanceNumber=2 lists the two instances numbered 2", f"{listdir(inst)}")

        # ---- 4. updates ---------------------------------------------------------------------
        c.eq(ename(write(tagfile, '{"queryStatus":"disabled"}')), "success",
             "writing {\"queryStatus\":\"disabled\"} to 00101010.json updates it")
        content = try_read(tagfile)
        p = cli("tags", A, "get", "00101010")
        c.eq(content, p.stdout.rstrip("\n").encode(), "cat shows the updated tag, as `dicomfs tags get`")
        c.ok(isinstance(content, bytes) and json.loads(content).get("queryStatus", "").lower() == "disabled",
             "queryStatus is disabled")
        c.ok(isinstance(content, bytes) and os.stat(tagfile).st_size == len(content), "and its size follows")
        c.ok(wait_until(lambda: listdir(age_search) == errno.EINVAL, 3 * SLOW),
             "the search folder listed before is refused now (its cached result is not reused)",
             f"{listdir(age_search)}")
        c.eq(ename(write(tagfile, '{"queryStatus":"maybe"}')), "EINVAL", "queryStatus maybe: close() fails with EINVAL")
        text = try_read(tagfile + ".error")
        c.ok(isinstance(text, bytes) and text.startswith(b"00101010.json: not updated: "),
             "00101010.json.error says why", f"{text!r}")
        c.eq(ename(write(tagfile, '{"queryStatus":"enabled"}')), "success", "enabling it again by a write")
        c.ok("00101010.json.error" not in (listdir(X) or []), "a good update clears the .error")
        c.ok(wait_until(lambda: listdir(age_search) == [uid("1")], 3 * SLOW),
             "and the search folder lists study 1 again", f"{listdir(age_search)}")

        # ---- 6. rm without --allow-delete, operations ------------------------------------------
        c.eq(ename(err_of(os.unlink, tagfile)), "EACCES", "rm 00101010.json without --allow-delete: EACCES")
        c.eq(cli("tags", A, "get", "00101010").returncode, 0, "the tag is still there")
        c.eq(ename(err_of(os.unlink, os.path.join(X, "00100040.json"))), "ENOENT", "rm of a file no tag has: ENOENT")
        c.eq(ename(err_of(os.stat, os.path.join(O, "0" * 32 + ".json"))), "ENOENT", "an unknown operation file: ENOENT")
        c.eq(ename(err_of(os.stat, os.path.join(O, "nothex.json"))), "ENOENT", "a name that is no operation id: ENOENT")
        c.eq(ename(write(os.path.join(O, f"{op_id}.json"), "x")), "EACCES", "operation files are read-only")
    c.eq(m.rc, 0, "the mount process exits 0 after fusermount3 -uz (no sanitizer report)")

    with Mount(A, M, os.path.join(S, "mount2.log"), "--allow-delete") as m:
        c.ok(os.path.ismount(M), "mounted again with --allow-delete")
        c.ok(listdir(os.path.join(M, "search", "studies", "PatientAge=030Y")) == [uid("2")],
             "after a remount the tag is still searchable")
        c.eq(ename(err_of(os.unlink, os.path.join(X, "00101010.json"))), "success",
             "rm 00101010.json with --allow-delete deletes the tag")
        c.ok(cli("tags", A, "get", "00101010").returncode == 1, "`dicomfs tags get` no longer finds it")
        c.ok("00101010.json" not in (listdir(X) or []), "it leaves the listing", f"{listdir(X)}")
        c.ok(wait_until(lambda: listdir(age_search) == errno.EINVAL, 3 * SLOW),
             "and the search by it is refused again", f"{listdir(age_search)}")
    c.eq(m.rc, 0, "the --allow-delete mount process exits 0")
    c.ok(not os.path.ismount(M), "unmounted")
    p = tu.fsck(A)
    c.ok(p.returncode == 0, "fsck is clean", p.stdout[-400:])
    c.finish()


if __name__ == "__main__":
    main()
