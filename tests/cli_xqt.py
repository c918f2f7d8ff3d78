"""End-to-end: `dicomfs tags` (extended query tags) and `dicomfs operations`.

A small archive (three studies, pydicom) is made searchable on more attributes:
  1. usage: --help of each command, usage errors exit 2, unreadable @FILE exits 2;
  2. refusals (a core tag, bad JSON, an empty array, an unknown keyword, a VR that does not
     match the dictionary, a tag that exists) exit 1 with 'dicomfs tags: <why>' on stderr
     and change nothing;
  3. add prints {"id", "href"} as HTTP's 202 does; the operation it names runs to
     "succeeded" (v2) / "completed" (v1); add --wait prints the finished operation;
  4. the tags at study (PatientAge), series (BodyPartExamined) and instance
     (InstanceNumber) level are then ready, and `dicomfs find` filters and includefield
     return them, for the instances stored before and after the add;
  5. list, get by hex and by keyword, update (argument, stdin, @FILE) agree with each
     other; disabled tags cannot be queried; errors lists the values that could not be
     indexed (a private SS tag over text), with offset and limit;
  6. delete removes the tag and its queries; fsck is clean at the end.
"""
import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import testutil as tu  # noqa: E402

R = "1.2.826.0.1.3680043.9.7777.81"
SLOW = 3 if b"__asan_init" in open(tu.DICOMFS, "rb").read() else 1

# instance key -> (PatientAge, BodyPartExamined, InstanceNumber, private (0009,1001) text)
INSTANCES = {
    "1.1.1": ("042Y", "HEAD", 1, "abc"),
    "1.1.2": ("042Y", "HEAD", 2, "12"),
    "2.1.1": ("030Y", "CHEST", 1, "xyz"),
}
LATE = ("3.1.1", ("042Y", "KNEE", 7, "5"))  # stored after the tags exist


def uid(key):
    return f"{R}.{key}"


def write_instance(d, key, values):
    age, body, number, text = values
    st, se = key.split(".")[0], ".".join(key.split(".")[:2])
    ds = tu.make_dataset(uid(st), uid(se), uid(key), PatientName="XQT^TEST", StudyDate="20200101",
                         Modality="CT", PatientAge=age, BodyPartExamined=body, InstanceNumber=number)
    block = ds.private_block(0x0009, "TESTPC", create=True)
    block.add_new(0x01, "LO", text)
    return tu.write_dicom(os.path.join(d, f"{key}.dcm"), ds)


def tags(archive, *args, input=None):
    """dicomfs tags ARCHIVE ARGS; returns (rc, parsed stdout or None, proc)."""
    p = tu.run(["tags", archive, *args], input=input)
    try:
        data = json.loads(p.stdout) if p.stdout.strip() else None
    except ValueError:
        data = None
    return p.returncode, data, p


def operation(archive, op_id, *opts):
    p = tu.run(["operations", archive, op_id, *opts])
    try:
        data = json.loads(p.stdout) if p.returncode == 0 else None
    except ValueError:
        data = None
    return p.returncode, data, p


def wait_operation(archive, op_id, limit=60):
    """Polls the operation until it has ended; returns its last JSON (or None)."""
    deadline = time.monotonic() + limit * SLOW
    data = None
    while time.monotonic() < deadline:
        rc, data, _ = operation(archive, op_id)
        if rc == 0 and data and data.get("status") in ("succeeded", "failed", "completed"):
            return data
        time.sleep(0.1)
    return data


def low(v):
    return v.lower() if isinstance(v, str) else v


def uids(archive, level, *params):
    """UIDs `dicomfs find --level LEVEL PARAMS` returns, or the exit code when refused."""
    rc, data, err = tu.find(archive, *params, level=level)
    if rc != 0:
        return rc
    kw = {"study": "StudyInstanceUID", "series": "SeriesInstanceUID", "instance": "SOPInstanceUID"}[level]
    return sorted(tu.jget(o, kw) for o in data)


def refused(c, p, what, pattern=None):
    """P (a proc) exited 1 with one 'dicomfs tags: ...' line on stderr (matching PATTERN)."""
    lines = [l for l in p.stderr.splitlines() if l.strip()]
    good = p.returncode == 1 and len(lines) == 1 and lines[0].startswith("dicomfs tags: ") and \
        (pattern is None or re.search(pattern, lines[0], re.I))
    c.ok(good, what, f"rc {p.returncode}, stderr {p.stderr.strip()[:300]!r}")


def main():
    tu.require_binary()
    c = tu.Checker("cli_xqt")
    S = tu.scratch("cli_xqt")
    A = os.path.join(S, "archive")
    src = os.path.join(S, "src")
    paths = [write_instance(src, k, v) for k, v in INSTANCES.items()]
    p, results, _ = tu.ingest(A, paths)
    c.ok(p.returncode == 0 and len(results) == 3, "three instances stored", p.stderr[-300:])

    # ---- 1. usage ------------------------------------------------------------------------
    p = tu.run(["tags", "--help"])
    c.ok(p.returncode == 0 and p.stdout.startswith("usage: dicomfs tags ARCHIVE list"), "tags --help: usage, exit 0")
    for sub in ("list", "add", "get", "update", "delete", "errors"):
        p = tu.run(["tags", A, sub, "--help"])
        c.ok(p.returncode == 0 and p.stdout.startswith(f"usage: dicomfs tags ARCHIVE {sub}"),
             f"tags ARCHIVE {sub} --help describes {sub}, exit 0", p.stdout[:200])
    p = tu.run(["operations", "--help"])
    c.ok(p.returncode == 0 and p.stdout.startswith("usage: dicomfs operations ARCHIVE ID"), "operations --help, exit 0")
    c.ok("tags" in tu.run(["--help"]).stdout and "operations" in tu.run(["--help"]).stdout,
         "dicomfs --help lists tags and operations")
    for args, what in [([], "no arguments"), ([A], "no command"), ([A, "frob"], "an unknown command"),
                       ([A, "get"], "get without PATH"), ([A, "list", "x"], "list with an argument"),
                       ([A, "update", "PatientAge"], "update without JSON"),
                       ([A, "get", "PatientAge", "--limit", "5"], "--limit on get"),
                       ([A, "list", "--limit", "x"], "--limit x"), ([A, "list", "--limit"], "--limit without a number"),
                       ([A, "list", "--frob"], "an unknown option"), ([A, "get", "PatientAge", "--wait"], "--wait on get"),
                       ([A, "add", "@" + os.path.join(S, "missing.json")], "add @FILE of a missing file")]:
        p = tu.run(["tags", *args])
        c.ok(p.returncode == 2 and p.stderr.strip() and not p.stdout, f"tags {what}: exit 2, says why on stderr",
             f"rc {p.returncode} {p.stderr.strip()[:200]!r}")
    p = tu.run(["tags", A, "add", "@" + os.path.join(S, "missing.json")])
    c.ok("missing.json: No such file or directory" in p.stderr, "a missing @FILE: 'No such file or directory'", p.stderr)
    p = tu.run(["tags", os.path.join(S, "nothing"), "list"])
    c.ok(p.returncode == 2 and "No such file or directory" in p.stderr and not os.path.exists(os.path.join(S, "nothing")),
         "tags on a missing archive: exit 2, creates nothing")
    for args, what in [([A], "without ID"), ([A, "1", "2"], "with two IDs"), ([A, "x", "--frob"], "an unknown option")]:
        p = tu.run(["operations", *args])
        c.eq(p.returncode, 2, f"operations {what}: exit 2")

    # ---- 2. refusals ------------------------------------------------------------------------
    rc, data, p = tags(A, "list")
    c.ok(rc == 0 and data == [], "list of a new archive: []", p.stdout)
    c.eq(uids(A, "study", "PatientAge=042Y"), 1, "before any tag, find PatientAge=042Y is refused (exit 1)")
    for body, what, pattern in [
            ('[{"path":"PatientName","vr":"PN","level":"Study"}]', "a core searchable tag", "PatientName"),
            ("nonsense", "not JSON", "JSON"),
            ("[]", "an empty array", None),
            ('[{"path":"NoSuchKeyword","vr":"LO","level":"Study"}]', "an unknown keyword", "NoSuchKeyword"),
            ('[{"path":"00101010","vr":"DA","level":"Study"}]', "a VR other than the dictionary's", "DA|VR"),
            ('[{"path":"00091001","vr":"SS","level":"Instance"}]', "a private tag without privateCreator", "private"),
            ('[{"path":"PatientAge","vr":"AS","level":"Study"},{"path":"PatientAge","vr":"AS","level":"Study"}]',
             "the same tag twice", None)]:
        rc, data, p = tags(A, "add", body)
        refused(c, p, f"add of {what}: exit 1, 'dicomfs tags: <why>'", pattern)
    rc, data, p = tags(A, "list")
    c.ok(rc == 0 and data == [], "refused adds changed nothing", p.stdout)

    # ---- 3. add, operations ---------------------------------------------------------------
    body = json.dumps([{"path": "PatientAge", "vr": "AS", "level": "Study"},
                       {"path": "00180015", "vr": "CS", "level": "Series"},
                       {"path": "InstanceNumber", "vr": "IS", "level": "Instance"}])
    rc, data, p = tags(A, "add", body)
    ok = rc == 0 and isinstance(data, dict) and sorted(data) == ["href", "id"] and re.fullmatch(r"[0-9a-f]{32}", data["id"])
    c.ok(ok, "add prints {id, href} of the operation, exit 0", p.stdout + p.stderr)
    op_id = data["id"] if ok else "0" * 32
    c.eq(data.get("href") if ok else None, f"/operations/{op_id}", "href is /operations/<id> (HTTP's without its base)")
    rc, op, p = operation(A, op_id)
    c.ok(rc == 0 and op and op.get("operationId") == op_id and op.get("type") == "reindex",
         "operations ARCHIVE ID prints the operation (operationId, type reindex)", p.stdout + p.stderr)
    op = wait_operation(A, op_id)
    c.ok(op and op.get("status") == "succeeded" and op.get("percentComplete") == 100,
         "the reindex runs to succeeded, 100 percent", json.dumps(op))
    c.ok(op and sorted(op.get("resources", [])) == ["/extendedquerytags/00101010", "/extendedquerytags/00180015",
                                                  "/extendedquerytags/00200013"],
         "its resources are the three tags", json.dumps(op))
    rc, op1, p = operation(A, op_id, "--v1")
    c.ok(rc == 0 and op1 and op1.get("status") == "completed", "operations --v1 says completed", p.stdout)
    for bad, what in [("nothex", "an id that is not hex"), ("0" * 32, "an unknown id")]:
        p = tu.run(["operations", A, bad])
        c.ok(p.returncode == 1 and p.stderr.startswith("dicomfs operations: ") and not p.stdout,
             f"operations of {what}: exit 1 with the reason", p.stderr)

    # ---- 4. ready and searchable -----------------------------------------------------------
    rc, age, p = tags(A, "get", "PatientAge")
    c.ok(rc == 0 and age and age.get("path") == "00101010" and age.get("vr") == "AS" and low(age.get("level")) == "study"
         and low(age.get("status")) == "ready" and low(age.get("queryStatus")) == "enabled",
         "get PatientAge: 00101010, AS, study, ready, enabled", p.stdout + p.stderr)
    rc2, _, p2 = tags(A, "get", "00101010")
    c.eq(p2.stdout, p.stdout, "get by 8 hex digits prints the same as by keyword")
    c.eq(uids(A, "study", "PatientAge=042Y"), [uid("1")], "find PatientAge=042Y finds study 1")
    c.eq(uids(A, "series", "BodyPartExamined=CHEST"), [uid("2.1")], "find --level series BodyPartExamined=CHEST")
    c.eq(uids(A, "instance", "InstanceNumber=2"), [uid("1.1.2")], "find --level instance InstanceNumber=2")
    rc, res, _ = tu.find(A, f"StudyInstanceUID={uid('2')}", "includefield=PatientAge")
    c.ok(rc == 0 and res and tu.jget(res[0], "PatientAge") == "030Y", "includefield=PatientAge returns it (030Y)",
         json.dumps(res)[:300])
    late = write_instance(src, *LATE)
    p, results, _ = tu.ingest(A, [late])
    c.eq(uids(A, "study", "PatientAge=042Y"), [uid("1"), uid("3")], "an instance stored afterwards is found too")
    c.eq(uids(A, "series", "BodyPartExamined=KNEE"), [uid("3.1")], "and at the series level")

    # ---- 5. list, update, errors -----------------------------------------------------------
    rc, lst, p = tags(A, "list")
    c.ok(rc == 0 and [t.get("path") for t in lst or []] == ["00101010", "00180015", "00200013"],
         "list has the three tags", p.stdout)
    same = all(tags(A, "get", t["path"])[1] == t for t in lst or [])
    c.ok(same and lst, "each listed tag is what get prints for it")
    rc, page, p = tags(A, "list", "--offset", "1", "--limit", "1")
    c.ok(rc == 0 and [t.get("path") for t in page or []] == ["00180015"], "list --offset 1 --limit 1: the second tag",
         p.stdout)
    rc, _, p = tags(A, "list", "--limit", "0")
    refused(c, p, "list --limit 0: exit 1 with the reason", "limit")
    rc, _, p = tags(A, "add", '[{"path":"PatientAge","vr":"AS","level":"Study"}]')
    refused(c, p, "adding a tag that exists: exit 1, says it exists", "exist")

    rc, out, p = tags(A, "update", "PatientAge", '{"queryStatus":"disabled"}')
    c.ok(rc == 0 and out and low(out.get("queryStatus")) == "disabled", "update queryStatus disabled prints the tag",
         p.stdout + p.stderr)
    c.eq(tags(A, "get", "PatientAge")[1], out, "get shows what update printed")
    c.eq(uids(A, "study", "PatientAge=042Y"), 1, "a disabled tag cannot be queried (exit 1)")
    rc, out, p = tags(A, "update", "00101010", "-", input='{"queryStatus":"enabled"}')
    c.ok(rc == 0 and out and low(out.get("queryStatus")) == "enabled", "update from stdin (-) enables it again",
         p.stdout + p.stderr)
    c.eq(uids(A, "study", "PatientAge=042Y"), [uid("1"), uid("3")], "and it is queried again")
    for args, what, pattern in [(["PatientAge", '{"queryStatus":"maybe"}'], "queryStatus maybe", None),
                                (["PatientAge", "{"], "bad JSON", None),
                                (["PatientSex", '{"queryStatus":"enabled"}'], "a tag that is not extended", "PatientSex"),
                                (["zzz", '{"queryStatus":"enabled"}'], "a path that is no tag", "zzz")]:
        rc, _, p = tags(A, "update", *args)
        refused(c, p, f"update with {what}: exit 1", pattern)
    rc, _, p = tags(A, "get", "PatientSex")
    refused(c, p, "get of a tag that is not extended: exit 1", "PatientSex")

    private = os.path.join(S, "private.json")
    with open(private, "w") as f:
        json.dump([{"path": "00091001", "vr": "SS", "privateCreator": "TESTPC", "level": "Instance"}], f)
    rc, op, p = tags(A, "add", "@" + private, "--wait")
    c.ok(rc == 0 and op and op.get("status") == "succeeded" and op.get("resources") == ["/extendedquerytags/00091001"]
         and re.fullmatch(r"[0-9a-f]{32}", op.get("operationId", "")),
         "add @FILE --wait prints the finished operation", p.stdout + p.stderr)
    # --wait waits however long the reindex takes: here another process (this test) holds
    # reindex.lock for 2.5 s, so it cannot start before (it timed out after 1 s once).
    import fcntl
    import threading
    lockf = open(os.path.join(A, "reindex.lock"), "a+")
    fcntl.flock(lockf, fcntl.LOCK_EX)
    release = threading.Timer(2.5, lambda: (fcntl.flock(lockf, fcntl.LOCK_UN), lockf.close()))
    release.start()
    t0 = time.time()
    rc, op, p = tags(A, "add", '[{"path":"ContentTime","level":"instance"}]', "--wait")
    release.join()
    c.ok(rc == 0 and op and op.get("status") == "succeeded" and time.time() - t0 >= 2.4,
         "add --wait outlasts a reindex that cannot start for 2.5 s, then prints it succeeded", p.stdout + p.stderr)
    rc, _, p = tags(A, "delete", "ContentTime")
    c.ok(rc == 0, "and the tag is deleted again", p.stderr)
    rc, pt, p = tags(A, "get", "00091001")
    c.ok(rc == 0 and pt and low(pt.get("status")) == "ready" and low(pt.get("queryStatus")) == "disabled"
         and (pt.get("errors") or {}).get("count") == 2,
         "a private SS tag over text ('abc', 'xyz'; '12' and '5' are numbers): ready, 2 errors, queries disabled", p.stdout)
    rc, errs, p = tags(A, "errors", "00091001")
    c.ok(rc == 0 and isinstance(errs, list) and sorted(e.get("sopInstanceUid") for e in errs) ==
         sorted([uid("1.1.1"), uid("2.1.1")]) and all(e.get("errorMessage") and e.get("createdTime")
                                                                  for e in errs),
         "errors lists the instances whose values could not be indexed", p.stdout)
    rc, one, p = tags(A, "errors", "00091001", "--offset", "1", "--limit", "1")
    c.ok(rc == 0 and errs and one == errs[1:2], "errors --offset 1 --limit 1: the second", p.stdout)
    rc, none, p = tags(A, "errors", "PatientAge")
    c.ok(rc == 0 and none == [], "errors of a tag without errors: []", p.stdout)
    rc, _, p = tags(A, "errors", "PatientSex")
    refused(c, p, "errors of a tag that is not extended: exit 1")
    c.eq(uids(A, "instance", "00091001=12"), 1, "the tag with errors cannot be queried")
    with open(os.path.join(S, "enable.json"), "w") as f:
        f.write('{"queryStatus":"enabled"}')
    rc, out, p = tags(A, "update", "00091001", "@" + os.path.join(S, "enable.json"))
    c.ok(rc == 0 and low(out.get("queryStatus")) == "enabled", "update @FILE re-enables it", p.stdout + p.stderr)
    c.eq(uids(A, "instance", "00091001=12"), [uid("1.1.2")], "then the one indexable value is found")

    # ---- 6. delete --------------------------------------------------------------------------
    rc, _, p = tags(A, "delete", "BodyPartExamined")
    c.ok(rc == 0 and p.stdout == "" and p.stderr == "", "delete prints nothing, exit 0", p.stdout + p.stderr)
    rc, _, p = tags(A, "get", "BodyPartExamined")
    refused(c, p, "get of the deleted tag: exit 1")
    c.eq(uids(A, "series", "BodyPartExamined=CHEST"), 1, "the deleted tag cannot be queried")
    rc, _, p = tags(A, "delete", "BodyPartExamined")
    refused(c, p, "deleting it again: exit 1")
    rc, lst, p = tags(A, "list")
    c.ok(rc == 0 and [t.get("path") for t in lst or []] == ["00091001", "00101010", "00200013"] or
         sorted(t.get("path") for t in lst or []) == ["00091001", "00101010", "00200013"],
         "list has the other tags", p.stdout)
    p = tu.fsck(A)
    c.ok(p.returncode == 0, "fsck is clean", p.stdout[-400:])
    c.finish()


if __name__ == "__main__":
    main()
