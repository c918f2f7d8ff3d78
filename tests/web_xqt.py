"""HTTP end-to-end: extended query tags and operations of `dicomfs serve`.

As the reference serves them (azure-dicom-api.md section 7), all unpartitioned:
  - POST /v{n}/extendedquerytags (application/json, a JSON array): 202 with
    {"id", "href"} and Location = href; standard tags by keyword and by hex at each level,
    private tags with privateCreator and vr; every rule a 400 with a plain-text reason
    (wrong VR, VR not allowed, core tag "The query tag '...' is already supported",
    duplicates, sequences and nested paths, an empty array, more than 128, privateCreator
    missing or not allowed, no level, not JSON, not an array) and nothing added; 415 for
    another Content-Type, 413 past 1 MiB; 409 for a tag that exists;
  - GET /v{n}/operations/{id}: 202 with Location (its own URL) until it ends, then 200 with
    status succeeded (v2) / completed (v1), percentComplete 100, type reindex and the
    tags as resources; 404 for an unknown id or one that is not a GUID;
  - GET list (limit 1..200, offset), GET one (keyword or hex; 400 bad path, 404 not an
    extended query tag), PATCH {"queryStatus"}, DELETE (204), GET .../errors;
  - QIDO on the new tags once ready (filters at each level, a DA range, includefield, a
    private tag), also for instances stored afterwards; a value that cannot be indexed
    (a private tag declared SS holding LO text) is an error: the tag's queries are
    disabled (400) until PATCH enables them, then searches carry
    erroneous-dicom-attributes;
  - 409 while a reindex runs, with Location of the running operation, and the
    operation resuming after a restart (held back by locking ARCHIVE/reindex.lock, the
    store's one-reindexer-at-a-time lock, so the test is deterministic); a tag still
    being added is not searchable;
  - deleting a tag removes it from searches; adding it again reindexes;
  - methods (405 with Allow), CORS preflight, application/json whatever Accept says.
"""
import fcntl
import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import testutil as tu  # noqa: E402
import webutil as wu  # noqa: E402

ROOT = "1.2.826.0.1.3680043.9.7777.82"
A, B, C = f"{ROOT}.1", f"{ROOT}.2", f"{ROOT}.3"
CREATOR = "DICOMFS TEST"
JSON = "application/json"
DJSON = wu.DICOM_JSON
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,7})?(\+00:00|Z)$")
OP_TIMEOUT = float(os.environ.get("DICOMFS_HTTP_TIMEOUT", "120"))

# The first POST: standard tags by keyword and by hex at each level, two private tags.
TAGS = [
    {"path": "PatientAge", "level": "study"},
    {"path": "00200010", "vr": "SH", "level": "study"},                   # StudyID
    {"path": "SeriesNumber", "level": "series"},
    {"path": "0008103E", "level": "series"},                              # SeriesDescription
    {"path": "InstanceNumber", "vr": "IS", "level": "instance"},
    {"path": "00080023", "vr": "DA", "level": "instance"},                # ContentDate
    {"path": "00111002", "vr": "LO", "privateCreator": CREATOR, "level": "instance"},
    {"path": "00091001", "vr": "SS", "privateCreator": CREATOR, "level": "instance"},  # holds LO text in A.1.2
]
PATHS = sorted(["00101010", "00200010", "00200011", "0008103E", "00200013", "00080023", "00111002", "00091001"])


def main():
    tu.require_binary()
    c = tu.Checker("web_xqt")
    scratch = tu.scratch("web_xqt")
    with wu.Server(scratch, "main") as srv:
        run(c, srv)
        srv.finish_check(c)
    busy(c, scratch)
    c.finish()


# ---- helpers ------------------------------------------------------------------------------

def post(srv, path, body, content_type=JSON, version="v2"):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    h = {"Content-Type": content_type} if content_type else {}
    return srv.request("POST", f"/{version}{path}", body=data, headers=h)


def patch(srv, path, body, content_type=JSON):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    h = {"Content-Type": content_type} if content_type else {}
    return srv.request("PATCH", f"/v2{path}", body=data, headers=h)


def is_json(r):
    ct, _ = wu.media_type(r.headers.get("Content-Type"))
    return ct == "application/json"


def instance(study, series, sop, **attrs):
    private = attrs.pop("private", {})
    ds = tu.make_dataset(study, series, sop, PatientName="Tag^Test", Modality="OT", **attrs)
    for (group, elem), (vr, value) in private.items():
        ds.private_block(group, CREATOR, create=True).add_new(elem, vr, value)
    return wu.dicom_bytes(ds)


def store(c, srv, datasets, what):
    parts = [("application/dicom", d) for d in datasets]
    r = srv.stow("/v2/studies", wu.multipart(parts, "xb"), 'multipart/related; type="application/dicom"; boundary=xb',
                 headers={"Accept": DJSON})
    c.eq(r.status, 200, f"STOW {what}: 200")


def wait_operation(c, srv, href, what, version="v2"):
    """Polls the operation until 200; every 202 must carry Location = its own URL."""
    path = href[len(srv.url):]
    deadline = time.time() + OP_TIMEOUT
    bad_location = None
    while True:
        r = srv.get(path)
        if r.status == 202 and r.headers.get("Location") != href:
            bad_location = r.headers.get("Location")
        if r.status != 202 or time.time() > deadline:
            break
        time.sleep(0.05)
    c.ok(bad_location is None, f"{what}: every 202 while it runs has Location = its own URL", f"Location {bad_location!r}")
    ok = c.ok(r.status == 200 and is_json(r), f"{what}: GET {path} ends with 200 application/json", wu.describe(r))
    return wu.json_body(r) if ok else None


def qido(srv, url):
    r = srv.get(url, accept=DJSON)
    return r, (wu.json_body(r) if r.status == 200 else None)


def uids(results, tag):
    return sorted(tu.jget(o, tag) for o in results or [])


# ---- the main archive -------------------------------------------------------------------------

def run(c, srv):
    store(c, srv, [
        instance(A, f"{A}.1", f"{A}.1.1", PatientID="XA", PatientAge="045Y", StudyID="SID-A", SeriesNumber=1,
                 SeriesDescription="Axial", InstanceNumber=1, ContentDate="20200115",
                 private={(0x0009, 0x01): ("LO", "12"), (0x0011, 0x02): ("LO", "alpha")}),
        instance(A, f"{A}.1", f"{A}.1.2", PatientID="XA", PatientAge="045Y", StudyID="SID-A", SeriesNumber=1,
                 SeriesDescription="Axial", InstanceNumber=2, ContentDate="20210620",
                 private={(0x0009, 0x01): ("LO", "abc"), (0x0011, 0x02): ("LO", "beta")}),
        instance(B, f"{B}.1", f"{B}.1.1", PatientID="XB", PatientAge="030Y", StudyID="SID-B", SeriesNumber=2,
                 SeriesDescription="Sagittal", InstanceNumber=7, ContentDate="20220301",
                 private={(0x0009, 0x01): ("LO", "-5")}),
    ], "3 instances in 2 studies, before any tag")

    before_tags(c, srv)
    op = add_tags(c, srv)
    if op is None:
        return
    listing(c, srv, op)
    searches(c, srv)
    erroneous(c, srv)
    rules(c, srv)
    updates(c, srv)
    deletes(c, srv)
    routes(c, srv, op)


def before_tags(c, srv):
    r = srv.get("/v2/extendedquerytags")
    c.ok(r.status == 200 and is_json(r) and wu.json_body(r) == [], "GET /v2/extendedquerytags with none: 200 []",
         wu.describe(r))
    r, _ = qido(srv, "/v2/studies?PatientAge=045Y")
    c.ok(r.status == 400 and wu.is_text_error(r), "QIDO on PatientAge before it is an extended query tag: 400",
         wu.describe(r))


def add_tags(c, srv):
    r = post(srv, "/extendedquerytags", TAGS, content_type="application/json; charset=utf-8")
    body = wu.json_body(r) or {}
    ok = c.ok(r.status == 202 and is_json(r), "POST /v2/extendedquerytags (8 tags, charset=utf-8): 202 application/json",
              wu.describe(r))
    if not ok:
        return None
    op_id, href = body.get("id", ""), body.get("href", "")
    c.ok(re.fullmatch(r"[0-9a-f]{32}", op_id) is not None, "the body's id is 32 lower-case hex digits", op_id)
    c.eq(href, f"{srv.url}/v2/operations/{op_id}", "href is <base>/v2/operations/<id>")
    c.eq(set(body), {"id", "href"}, "the body is exactly {id, href}")
    c.eq(r.headers.get("Location"), href, "Location is the href")
    state = wait_operation(c, srv, href, "the reindex") or {}
    c.eq(state.get("operationId"), op_id, "operationId is the id")
    c.eq(state.get("type"), "reindex", "type is reindex")
    c.eq(state.get("status"), "succeeded", "v2 status is succeeded")
    c.eq(state.get("percentComplete"), 100, "percentComplete is 100")
    c.eq(sorted(state.get("resources") or []), sorted(f"{srv.url}/v2/extendedquerytags/{p}" for p in PATHS),
         "resources are the hrefs of the 8 tags")
    c.ok(TIME.match(str(state.get("createdTime"))) and TIME.match(str(state.get("lastUpdatedTime"))),
         "createdTime and lastUpdatedTime are ISO 8601", tu.short(state))
    c.ok(not any(v is None for v in state.values()), "no null members in the operation")
    r = srv.get(f"/v1/operations/{op_id}")
    v1 = wu.json_body(r) or {}
    c.ok(r.status == 200 and v1.get("status") == "completed", "v1 reports status completed where v2 says succeeded",
         wu.describe(r))
    c.ok(all(u.startswith(f"{srv.url}/v1/extendedquerytags/") for u in v1.get("resources") or ["x"]),
         "v1 resources use the /v1 base")
    guid = f"{op_id[:8]}-{op_id[8:12]}-{op_id[12:16]}-{op_id[16:20]}-{op_id[20:]}"
    for form in (guid, op_id.upper()):
        r = srv.get(f"/v2/operations/{form}")
        c.ok(r.status == 200 and (wu.json_body(r) or {}).get("operationId") == op_id,
             f"GET /v2/operations/{form} (another form of the GUID): 200, the same operation", wu.describe(r))
    for bad, why in (("0" * 32, "unknown"), ("not-a-guid", "not a GUID"), (op_id[:31], "31 digits")):
        r = srv.get(f"/v2/operations/{bad}")
        c.ok(r.status == 404 and wu.is_text_error(r), f"GET /v2/operations/{bad}: 404 ({why})", wu.describe(r))
    return op_id


def listing(c, srv, op_id):
    r = srv.get("/v2/extendedquerytags")
    tags = wu.json_body(r) or []
    c.ok(r.status == 200 and is_json(r), "GET /v2/extendedquerytags: 200 application/json", wu.describe(r))
    c.eq(sorted(t.get("path") for t in tags), PATHS, "the list has the 8 tags, paths as 8 hex digits")
    by = {t.get("path"): t for t in tags}
    c.eq(by.get("00101010"), {"path": "00101010", "vr": "AS", "level": "study", "status": "ready",
                              "queryStatus": "enabled"},
         "PatientAge: vr from the dictionary, study, ready, enabled, no null members")
    c.eq(by.get("00111002"), {"path": "00111002", "vr": "LO", "privateCreator": CREATOR, "level": "instance",
                              "status": "ready", "queryStatus": "enabled"}, "the private tag carries its privateCreator")
    c.eq([by.get(p, {}).get("level") for p in ("00200010", "00200011", "0008103E", "00200013", "00080023")],
         ["study", "series", "series", "instance", "instance"], "each tag at its level")
    c.ok(all("operation" not in t for t in tags), "no tag names an operation once ready")
    c.ok(all("errors" not in t for p, t in by.items() if p != "00091001"), "only the erroneous tag has errors")
    r = srv.get("/v2/extendedquerytags?limit=2&offset=1")
    c.eq(wu.json_body(r), tags[1:3], "limit=2&offset=1 pages the list")
    r = srv.get("/v2/extendedquerytags?limit=200")
    c.eq(wu.json_body(r), tags, "limit=200 (the maximum)")
    r = srv.get("/v2/extendedquerytags?offset=8")
    c.ok(r.status == 200 and wu.json_body(r) == [], "offset past the end: 200 []", wu.describe(r))
    for url, why in (("?limit=0", "limit < 1"), ("?limit=201", "limit > 200"), ("?limit=abc", "not a number"),
                     ("?offset=-1", "negative offset"), ("?limit=1&Limit=2", "limit twice"),
                     ("?offset=2147483648", "offset beyond int.MaxValue")):
        r = srv.get("/v2/extendedquerytags" + url)
        c.ok(r.status == 400 and wu.is_text_error(r), f"GET /v2/extendedquerytags{url}: 400 [{why}]", wu.describe(r))
    for path in ("PatientAge", "00101010"):
        r = srv.get(f"/v2/extendedquerytags/{path}")
        c.ok(r.status == 200 and is_json(r) and wu.json_body(r) == by.get("00101010"),
             f"GET /v2/extendedquerytags/{path}: 200, the tag", wu.describe(r))
    for path, status, why in (("PatientWeight", 404, "a tag that is not an extended query tag"),
                              ("PatientName", 404, "a core tag is not an extended query tag"),
                              ("NoSuchKeyword", 400, "not a keyword"), ("0010101G", 400, "not hex"),
                              ("00101010.00100010", 400, "a nested path")):
        r = srv.get(f"/v2/extendedquerytags/{path}")
        c.ok(r.status == status and wu.is_text_error(r), f"GET /v2/extendedquerytags/{path}: {status} ({why})",
             wu.describe(r))


def searches(c, srv):
    def match(url, want, tag, what):
        r, res = qido(srv, url)
        c.ok(r.status == 200 and uids(res, tag) == sorted(want), f"QIDO {url}: {what}", wu.describe(r))
        return res

    res = match("/v2/studies?PatientAge=045Y", [A], "0020000D", "study A (PatientAge, study level)")
    c.ok(res and tu.jget(res[0], "PatientAge") == "045Y", "the filter attribute is returned (00101010)")
    match("/v2/studies?StudyID=SID-B", [B], "0020000D", "study B (StudyID by keyword)")
    match("/v2/studies?00200010=SID-B", [B], "0020000D", "study B (StudyID by tag)")
    res = match("/v2/studies?includefield=PatientAge,StudyID", [A, B], "0020000D", "both studies")
    c.ok(res and sorted(tu.jget(o, "PatientAge") for o in res) == ["030Y", "045Y"] and
         sorted(tu.jget(o, "StudyID") for o in res) == ["SID-A", "SID-B"],
         "includefield=PatientAge,StudyID returns the new tags' values", tu.short(res))
    match("/v2/series?SeriesNumber=2", [f"{B}.1"], "0020000E", "series B.1 (SeriesNumber, series level)")
    match("/v2/series?SeriesDescription=Axial", [f"{A}.1"], "0020000E", "series A.1 (SeriesDescription)")
    match(f"/v2/studies/{A}/series?0008103E=axial", [f"{A}.1"], "0020000E", "case-insensitive LO match, scoped")
    match("/v2/instances?InstanceNumber=7", [f"{B}.1.1"], "00080018", "B.1.1 (InstanceNumber, instance level)")
    res = match("/v2/instances?ContentDate=20200101-20211231", [f"{A}.1.1", f"{A}.1.2"], "00080018",
                "A's two instances (a DA range)")
    c.ok(res and all(tu.jget(o, "ContentDate") for o in res), "the ContentDate filter is returned with the results",
         tu.short(res))
    match(f"/v2/studies/{A}/instances?00080023=20210620", [f"{A}.1.2"], "00080018", "A.1.2 (an exact DA)")
    match("/v2/instances?00111002=alpha", [f"{A}.1.1"], "00080018", "A.1.1 (a private tag)")
    match("/v2/instances?00111002=gamma", [], "00080018", "nothing (a private value no instance has)")
    r, _ = qido(srv, "/v2/studies?SeriesNumber=2")
    c.ok(r.status == 400 and wu.is_text_error(r), "QIDO /v2/studies?SeriesNumber=2: 400 (a series tag at study level)",
         wu.describe(r))
    r, _ = qido(srv, "/v2/instances?InstanceNumber=seven")
    c.ok(r.status == 400 and wu.is_text_error(r), "QIDO InstanceNumber=seven: 400 (IS needs a number)", wu.describe(r))
    # Stored after the tags are ready: indexed at commit.
    store(c, srv, [instance(C, f"{C}.1", f"{C}.1.1", PatientID="XC", PatientAge="060Y", StudyID="SID-C",
                            SeriesNumber=3, InstanceNumber=9, ContentDate="20230101")], "study C, after the tags")
    match("/v2/studies?PatientAge=060Y", [C], "0020000D", "study C at once (indexed when stored)")
    match("/v2/instances?InstanceNumber=9", [f"{C}.1.1"], "00080018", "C's instance at once")


def erroneous(c, srv):
    r = srv.get("/v2/extendedquerytags/00091001")
    t = wu.json_body(r) or {}
    c.eq(t.get("queryStatus"), "disabled", "a tag with an indexing error: queryStatus disabled")
    c.eq(t.get("status"), "ready", "... and status ready")
    c.eq(t.get("errors"), {"count": 1, "href": f"{srv.url}/v2/extendedquerytags/00091001/errors"},
         "errors: count 1 and the href of the error list")
    r = srv.get("/v2/extendedquerytags/00091001/errors")
    errs = wu.json_body(r) or []
    c.ok(r.status == 200 and is_json(r) and len(errs) == 1, "GET .../00091001/errors: 200, one error", wu.describe(r))
    e = errs[0] if errs else {}
    c.eq(set(e), {"studyInstanceUid", "seriesInstanceUid", "sopInstanceUid", "createdTime", "errorMessage"},
         "an error has the reference's members")
    c.eq((e.get("studyInstanceUid"), e.get("seriesInstanceUid"), e.get("sopInstanceUid")), (A, f"{A}.1", f"{A}.1.2"),
         "the error names the instance whose value ('abc') is not an SS")
    c.ok(TIME.match(str(e.get("createdTime"))) and str(e.get("errorMessage") or "").strip(),
         "createdTime is ISO 8601, errorMessage a text", tu.short(e))
    r = srv.get("/v2/extendedquerytags/00091001/errors?offset=1")
    c.ok(r.status == 200 and wu.json_body(r) == [], "errors?offset=1: 200 []", wu.describe(r))
    r = srv.get("/v2/extendedquerytags/PatientAge/errors")
    c.ok(r.status == 200 and wu.json_body(r) == [], "errors of a tag without errors: 200 []", wu.describe(r))
    for url, status in (("/v2/extendedquerytags/PatientWeight/errors", 404),
                        ("/v2/extendedquerytags/NoSuchKeyword/errors", 400),
                        ("/v2/extendedquerytags/00091001/errors?limit=0", 400),
                        ("/v2/extendedquerytags/00091001/errors?limit=201", 400),
                        ("/v2/extendedquerytags/00091001/errors?offset=-1", 400)):
        r = srv.get(url)
        c.ok(r.status == status and wu.is_text_error(r), f"GET {url}: {status}", wu.describe(r))

    r, _ = qido(srv, "/v2/instances?00091001=12")
    c.ok(r.status == 400 and wu.is_text_error(r), "QIDO on the disabled tag: 400", wu.describe(r))
    r = patch(srv, "/extendedquerytags/00091001", {"queryStatus": "enabled"})
    t = wu.json_body(r) or {}
    c.ok(r.status == 200 and is_json(r) and t.get("queryStatus") == "enabled" and t.get("errors", {}).get("count") == 1,
         "PATCH {queryStatus: enabled}: 200, the tag enabled, its errors kept", wu.describe(r))
    r, res = qido(srv, "/v2/instances?00091001=12")
    c.ok(r.status == 200 and uids(res, "00080018") == [f"{A}.1.1"], "QIDO 00091001=12 after re-enabling: A.1.1",
         wu.describe(r))
    c.eq(r.headers.get("erroneous-dicom-attributes"), "00091001",
         "... with erroneous-dicom-attributes: 00091001 (results may miss instances)")
    r, res = qido(srv, "/v2/instances?00091001=-5")
    c.ok(r.status == 200 and uids(res, "00080018") == [f"{B}.1.1"], "QIDO 00091001=-5: B.1.1 (SS values compare as numbers)",
         wu.describe(r))
    r, _ = qido(srv, "/v2/instances?InstanceNumber=7")
    c.ok(r.status == 200 and r.headers.get("erroneous-dicom-attributes") is None,
         "a search without the erroneous tag has no erroneous-dicom-attributes", str(dict(r.headers)))
    c.ok("erroneous-dicom-attributes" in (r.headers.get("Access-Control-Expose-Headers") or ""),
         "browsers may read it (Access-Control-Expose-Headers)")


def rules(c, srv):
    count = len(wu.json_body(srv.get("/v2/extendedquerytags")) or [])

    def bad(body, why, status=400, needle=None, content_type=JSON):
        r = post(srv, "/extendedquerytags", body, content_type=content_type)
        ok = r.status == status and wu.is_text_error(r)
        if ok and needle:
            ok = needle in r.body.decode("utf-8", "replace")
        c.ok(ok, f"POST {why}: {status} with a plain-text reason", wu.describe(r))
        if r.status == status:
            c.note("reason: " + r.body.decode("utf-8", "replace")[:160])

    bad([{"path": "PatientWeight", "vr": "LO", "level": "study"}], "a VR that is not the dictionary's (DS)")
    bad([{"path": "ImageComments", "level": "instance"}], "a tag whose VR is not allowed (LT)")
    bad([{"path": "00131001", "vr": "OB", "privateCreator": CREATOR, "level": "instance"}], "a private tag with vr OB")
    bad([{"path": "00131001", "vr": "XY", "privateCreator": CREATOR, "level": "instance"}], "a private tag with vr XY")
    bad([{"path": "PatientName", "level": "study"}], "a core tag by keyword",
        needle="The query tag 'PatientName' is already supported")
    bad([{"path": "00100010", "level": "study"}], "a core tag by hex", needle="The query tag '00100010' is already supported")
    bad([{"path": "Modality", "level": "series"}], "a core series tag", needle="is already supported")
    bad([{"path": "PatientWeight", "level": "study"}, {"path": "PatientWeight", "level": "study"}], "a tag twice")
    bad([{"path": "PatientWeight", "level": "study"}, {"path": "00101030", "level": "study"}],
        "a tag twice (keyword and hex)")
    bad([{"path": "ReferencedStudySequence", "level": "study"}], "a sequence")
    bad([{"path": "00081110.00081150", "level": "study"}], "a nested path")
    bad([], "an empty array")
    many = [{"path": f"0013{0x1000 + i:04X}", "vr": "LO", "privateCreator": CREATOR, "level": "instance"}
            for i in range(129)]
    bad(many, "129 tags (more than 128)")
    bad(many[:121], f"121 tags with {count} existing (more than 128 in all)")
    bad([{"path": "00131001", "vr": "LO", "level": "instance"}], "a private tag without privateCreator")
    bad([{"path": "00131001", "privateCreator": CREATOR, "level": "instance"}], "a private tag without vr")
    bad([{"path": "PatientWeight", "privateCreator": CREATOR, "level": "study"}], "a standard tag with privateCreator")
    bad([{"path": "00130010", "vr": "LO", "privateCreator": CREATOR, "level": "instance"}], "a private creator element")
    bad([{"path": "NoSuchKeyword", "level": "study"}], "an unknown keyword")
    bad([{"path": "0010103G", "level": "study"}], "a path that is not hex")
    bad([{"path": "PatientWeight"}], "no level")
    bad([{"path": "PatientWeight", "level": "patient"}], "level patient")
    bad([{"vr": "DS", "level": "study"}], "no path")
    bad(b'[{"path": "PatientWeight", "level": "study"}', "invalid JSON")
    bad({"path": "PatientWeight", "level": "study"}, "an object, not an array")
    bad(["PatientWeight"], "an array of strings")
    bad(b"", "an empty body")
    bad([{"path": "PatientWeight", "level": "study"}], "Content-Type text/plain", 415, content_type="text/plain")
    bad([{"path": "PatientWeight", "level": "study"}], "no Content-Type", 415, content_type=None)
    bad([{"path": "PatientWeight", "level": "study"}], "Content-Type text/json ([Consumes] is application/json)", 415,
        content_type="text/json")
    bad([{"path": "PatientWeight", "level": "study"}], "Content-Type application/dicom+json", 415,
        content_type=DJSON)
    big = json.dumps([{"path": "PatientWeight", "level": "study", "pad": "x" * (1100 * 1024)}]).encode()
    bad(big, "a body over 1 MiB", 413)
    r = srv.request("POST", "/v2/extendedquerytags", body=big, headers={"Content-Type": JSON}, chunked=True)
    c.ok(r.status == 413 and wu.is_text_error(r), "POST a chunked body over 1 MiB (no Content-Length): 413",
         wu.describe(r))
    bad([{"path": "PatientAge", "level": "study"}], "a tag that exists", 409)
    r = post(srv, "/extendedquerytags", [{"path": "PatientAge", "level": "study"}])
    c.ok(r.headers.get("Location") is None, "409 for an existing tag has no Location (no operation runs)",
         str(r.headers.get("Location")))
    after = wu.json_body(srv.get("/v2/extendedquerytags")) or []
    c.eq(len(after), count, "none of the refused requests added a tag")
    c.ok(all(t.get("path") != "00101030" for t in after), "PatientWeight is not among the tags")


def updates(c, srv):
    def send(body, status, why, path="PatientAge", content_type=JSON):
        r = patch(srv, f"/extendedquerytags/{path}", body, content_type)
        c.ok(r.status == status and (is_json(r) if status == 200 else wu.is_text_error(r)),
             f"PATCH /v2/extendedquerytags/{path} {why}: {status}", wu.describe(r))
        return wu.json_body(r) if r.status == 200 else None

    t = send({"queryStatus": "disabled"}, 200, "{queryStatus: disabled}")
    c.eq((t or {}).get("queryStatus"), "disabled", "the answer is the updated tag (disabled)")
    r, _ = qido(srv, "/v2/studies?PatientAge=045Y")
    c.ok(r.status == 400 and wu.is_text_error(r), "QIDO on a disabled tag: 400", wu.describe(r))
    c.eq((wu.json_body(srv.get("/v2/extendedquerytags/00101010")) or {}).get("queryStatus"), "disabled",
         "GET shows it disabled")
    t = send({"queryStatus": "enabled"}, 200, "{queryStatus: enabled} (Content-Type text/json)", content_type="text/json")
    c.eq((t or {}).get("queryStatus"), "enabled", "enabled again")
    r, res = qido(srv, "/v2/studies?PatientAge=045Y")
    c.ok(r.status == 200 and uids(res, "0020000D") == [A], "QIDO on it works again", wu.describe(r))
    send({"queryStatus": "maybe"}, 400, "{queryStatus: maybe}")
    send([{"queryStatus": "enabled"}], 400, "an array")
    send(b'{"queryStatus": ', 400, "invalid JSON")
    send(b"", 400, "an empty body")
    send({"queryStatus": "enabled"}, 415, "Content-Type text/plain", content_type="text/plain")
    send({"queryStatus": "enabled"}, 415, "no Content-Type", content_type=None)
    send({"queryStatus": "enabled"}, 404, "of a tag that is not an extended query tag", path="PatientWeight")
    send({"queryStatus": "enabled"}, 400, "of a path that is not a tag", path="NoSuchKeyword")


def deletes(c, srv):
    r = srv.request("DELETE", "/v2/extendedquerytags/StudyID")
    c.ok(r.status == 204 and r.body == b"", "DELETE /v2/extendedquerytags/StudyID: 204 without a body", wu.describe(r))
    r = srv.get("/v2/extendedquerytags/00200010")
    c.eq(r.status, 404, "the deleted tag: GET 404")
    r, _ = qido(srv, "/v2/studies?StudyID=SID-A")
    c.ok(r.status == 400 and wu.is_text_error(r), "QIDO on the deleted tag: 400", wu.describe(r))
    tags = wu.json_body(srv.get("/v2/extendedquerytags")) or []
    c.ok(len(tags) == len(PATHS) - 1 and all(t.get("path") != "00200010" for t in tags), "the list no longer has it")
    for path, status, why in (("StudyID", 404, "again"), ("NoSuchKeyword", 400, "a path that is not a tag"),
                              ("PatientName", 404, "a core tag")):
        r = srv.request("DELETE", f"/v2/extendedquerytags/{path}")
        c.ok(r.status == status and wu.is_text_error(r), f"DELETE /v2/extendedquerytags/{path}: {status} ({why})",
             wu.describe(r))
    # Added again: reindexed from the stored instances.
    r = post(srv, "/extendedquerytags", [{"path": "StudyID", "level": "study"}])
    c.eq(r.status, 202, "POST StudyID again: 202")
    href = (wu.json_body(r) or {}).get("href")
    if href:
        state = wait_operation(c, srv, href, "the second reindex") or {}
        c.eq(state.get("status"), "succeeded", "the second reindex succeeded")
    r, res = qido(srv, "/v2/studies?StudyID=SID-A")
    c.ok(r.status == 200 and uids(res, "0020000D") == [A], "QIDO StudyID=SID-A after adding it again: study A",
         wu.describe(r))


def routes(c, srv, op_id):
    for method, url, allow in (("PUT", "/v2/extendedquerytags", "GET, POST"),
                               ("DELETE", "/v2/extendedquerytags", "GET, POST"),
                               ("POST", "/v2/extendedquerytags/PatientAge", "GET, PATCH, DELETE"),
                               ("PUT", "/v2/extendedquerytags/PatientAge", "GET, PATCH, DELETE"),
                               ("DELETE", "/v2/extendedquerytags/PatientAge/errors", "GET"),
                               ("DELETE", f"/v2/operations/{op_id}", "GET"),
                               ("POST", f"/v2/operations/{op_id}", "GET")):
        r = srv.request(method, url, body=b"[]" if method != "DELETE" else None, headers={"Content-Type": JSON})
        c.ok(r.status == 405 and r.headers.get("Allow") == allow, f"{method} {url}: 405 with Allow: {allow}",
             wu.describe(r) + f", Allow {r.headers.get('Allow')!r}")
    for url, methods in (("/v2/extendedquerytags", "GET, POST"), ("/v2/extendedquerytags/PatientAge", "GET, PATCH, DELETE"),
                         (f"/v2/operations/{op_id}", "GET")):
        r = srv.request("OPTIONS", url, headers={"Origin": "http://viewer.example", "Access-Control-Request-Method": "GET"})
        c.ok(r.status == 204 and (r.headers.get("Access-Control-Allow-Methods") or "").startswith(methods),
             f"OPTIONS {url}: 204 allowing {methods}", wu.describe(r) + f" {r.headers.get('Access-Control-Allow-Methods')}")
    for v in ("v1", "v1.0-prerelease"):
        r = srv.get(f"/{v}/extendedquerytags/00091001")
        t = wu.json_body(r) or {}
        c.ok(r.status == 200 and t.get("errors", {}).get("href") == f"{srv.url}/{v}/extendedquerytags/00091001/errors",
             f"GET /{v}/extendedquerytags/00091001: hrefs use the request's version ({v})", wu.describe(r))
    for accept in (None, "text/html", "application/dicom+json"):
        r = srv.get("/v2/extendedquerytags", accept=accept)
        c.ok(r.status == 200 and is_json(r), f"GET /v2/extendedquerytags with Accept {accept!r}: 200 application/json",
             wu.describe(r))
    for url, status in (("/v2/partitions/Microsoft.Default/extendedquerytags", 400), ("/v2/operations", 404),
                        (f"/v2/operations/{op_id}/x", 404), ("/v2/extendedquerytags/PatientAge/errors/x", 404),
                        ("/v2/extendedquerytags/PatientAge/other", 404)):
        r = srv.get(url)
        c.ok(r.status == status and wu.is_text_error(r), f"GET {url}: {status}", wu.describe(r))
    r = srv.get("/v2/ExtendedQueryTags/PatientAge")
    c.eq(r.status, 200, "route names are case-insensitive (/v2/ExtendedQueryTags/PatientAge)")


# ---- a reindex held back: 409, 202, resuming after a restart ----------------------------------------

def busy(c, scratch):
    srv = wu.Server(scratch, "busy", args=["--strict"]).start()
    try:
        held_back(c, srv, scratch)
    finally:
        srv.stop()


def held_back(c, srv, scratch):
    s = f"{ROOT}.9"
    store(c, srv, [instance(s, f"{s}.1", f"{s}.1.1", PatientID="XW", PatientWeight="70")], "strict: one instance")
    # The store runs one reindex at a time, under an flock of ARCHIVE/reindex.lock; holding it
    # keeps the operation from starting, so that it is deterministically still running.
    fd = os.open(os.path.join(srv.archive, "reindex.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        r = post(srv, "/extendedquerytags", [{"path": "PatientWeight", "level": "study"}])
        body = wu.json_body(r) or {}
        href = body.get("href", "")
        c.ok(r.status == 202 and r.headers.get("Location") == href and href, "strict: POST PatientWeight: 202 with Location",
             wu.describe(r))
        time.sleep(0.3)
        r = srv.get(href[len(srv.url):])
        state = wu.json_body(r) or {}
        c.ok(r.status == 202 and r.headers.get("Location") == href,
             "strict: the held-back operation: 202 with Location = its own URL", wu.describe(r))
        c.ok(state.get("status") in ("notStarted", "running") and (state.get("percentComplete") or 0) < 100,
             "... status notStarted (or running), percentComplete < 100", tu.short(state))
        r = srv.get("/v2/extendedquerytags/PatientWeight")
        t = wu.json_body(r) or {}
        c.eq(t.get("status"), "adding", "the tag being added: status adding")
        c.eq(t.get("operation"), {"id": body.get("id"), "href": href}, "... and operation {id, href} of its reindex")
        r, _ = qido(srv, "/v2/studies?PatientWeight=70")
        c.ok(r.status == 400 and wu.is_text_error(r), "QIDO on a tag still being added: 400", wu.describe(r))
        r = post(srv, "/extendedquerytags", [{"path": "PatientSize", "level": "study"}])
        c.ok(r.status == 409 and wu.is_text_error(r), "POST another tag while a reindex runs: 409, plain text",
             wu.describe(r))
        c.eq(r.headers.get("Location"), href, "... with Location of the running operation")
        r = srv.get("/v2/extendedquerytags")
        c.ok(r.status == 200 and is_json(r), "strict: GET /v2/extendedquerytags without Accept: 200 application/json",
             wu.describe(r))
        r = srv.get("/v2/extendedquerytags/PatientSize")
        c.eq(r.status, 404, "the refused tag was not added")
    finally:
        os.close(fd)
    # Restarted, the server resumes the operation.
    srv.stop()
    srv.start()
    if not href:
        return
    state = wait_operation(c, srv, srv.url + href[href.index("/v2/"):], "after a restart, the resumed reindex") or {}
    c.eq(state.get("status"), "succeeded", "the resumed reindex succeeded")
    t = wu.json_body(srv.get("/v2/extendedquerytags/PatientWeight")) or {}
    c.ok(t.get("status") == "ready" and "operation" not in t, "the tag is ready and names no operation", tu.short(t))
    r, res = qido(srv, "/v2/studies?PatientWeight=70")
    c.ok(r.status == 200 and uids(res, "0020000D") == [s], "QIDO PatientWeight=70: the stored study", wu.describe(r))


if __name__ == "__main__":
    main()
