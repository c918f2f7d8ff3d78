"""HTTP end-to-end: QIDO-RS (the six search routes) of `dicomfs serve`.

A few studies are stored with STOW; then (azure-dicom-api.md section 4):
  - every route answers 200 with the same body as `dicomfs find` for the same query
    (level, scope, filters, includefield, limit/offset, fuzzymatching, v1 and v2);
  - 200 with [] when nothing matches (also an offset past the end; CP-2473);
  - 400 with a plain-text reason: unknown key, bad limit, '<' in the query string,
    includefield=all with other fields, a bad UID in the URL, a filter at a level the
    route does not allow;
  - 406 when Accept does not allow application/dicom+json;
  - v1 and v2 default attributes differ as the reference's tables say.
"""
import os
import sys
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import testutil as tu  # noqa: E402
import webutil as wu  # noqa: E402

ROOT = "1.2.826.0.1.3680043.9.7777.62"
JSON = wu.DICOM_JSON

STUDIES = [  # (PatientName, PatientID, StudyDate, StudyTime, description, [(modality, n instances)])
    ("Müller^Jürgen", "Q001", "20200115", "101500", "CT Chest", [("CT", 2), ("PR", 1)]),
    ("John^Doe", "Q002", "20210301", "080000", "MR Brain", [("MR", 2)]),
    ("Jane^Doe", "Q003", "20220710", "235959", "CT Abdomen", [("CT", 1)]),
]


def main():
    tu.require_binary()
    c = tu.Checker("web_qido")
    scratch = tu.scratch("web_qido")
    with wu.Server(scratch) as srv:
        run(c, srv)
        srv.finish_check(c)
    c.finish()


def run(c, srv):
    uids = []  # (study, [(series, [sops])])
    for i, (pn, pid, date, time_, desc, series) in enumerate(STUDIES):
        study = f"{ROOT}.{i + 1}"
        parts, ser = [], []
        for j, (mod, n) in enumerate(series):
            se = f"{study}.{j + 1}"
            sops = []
            for k in range(n):
                sop = f"{se}.{k + 1}"
                ds = tu.make_dataset(study, se, sop, PatientName=pn, PatientID=pid, StudyDate=date, StudyTime=time_,
                                     StudyDescription=desc, Modality=mod, SeriesNumber=j + 1, InstanceNumber=k + 1,
                                     AccessionNumber=f"ACC{i + 1}", Rows=2, Columns=2, BitsAllocated=8)
                parts.append(("application/dicom", wu.dicom_bytes(ds)))
                sops.append(sop)
            ser.append((se, sops))
        uids.append((study, ser))
        r = srv.stow("/v2/studies", wu.multipart(parts, "qb"), 'multipart/related; type="application/dicom"; boundary=qb')
        c.eq(r.status, 200, f"STOW study {i + 1} ({len(parts)} instances): 200")

    s1, s1series = uids[0]
    se1 = s1series[0][0]

    def same_as_find(path, params, level, study=None, series=None, v1=False, what=None):
        qs = urllib.parse.urlencode(params)
        url = path + ("?" + qs if qs else "")
        r = srv.get(url, accept=JSON)
        args = ["find", srv.archive, "--level", level]
        if study:
            args += ["--study", study]
        if series:
            args += ["--series", series]
        if v1:
            args.append("--v1")
        args += [f"{k}={v}" for k, v in params]
        p = tu.run(args)
        label = what or f"GET {url} equals `dicomfs find`"
        if p.returncode != 0:
            c.ok(False, label, f"find exited {p.returncode}: {p.stderr.strip()[:300]}")
            return r
        expected = p.stdout.rstrip("\n")
        if expected == "[]":
            c.ok(r.status == 200 and r.body == b"[]", label + " (200 [], find prints [])", wu.describe(r))
            return r
        ct, _ = wu.media_type(r.headers.get("Content-Type"))
        c.ok(r.status == 200 and ct == JSON, f"GET {url}: 200 application/dicom+json", wu.describe(r))
        c.eq(r.body.decode("utf-8", "replace"), expected, label)
        return r

    # ---- the six routes -------------------------------------------------------------------------
    for v, prefix in ((False, "/v2"), (True, "/v1")):
        same_as_find(f"{prefix}/studies", [], "study", v1=v)
        same_as_find(f"{prefix}/series", [], "series", v1=v)
        same_as_find(f"{prefix}/studies/{s1}/series", [], "series", study=s1, v1=v)
        same_as_find(f"{prefix}/instances", [], "instance", v1=v)
        same_as_find(f"{prefix}/studies/{s1}/instances", [], "instance", study=s1, v1=v)
        same_as_find(f"{prefix}/studies/{s1}/series/{se1}/instances", [], "instance", study=s1, series=se1, v1=v)

    r = srv.get("/v2/studies", accept=JSON)
    data = wu.json_body(r) or []
    c.eq(len(data), 3, "GET /v2/studies lists the 3 studies")
    r = srv.get(f"/v2/studies/{s1}/series/{se1}/instances", accept=JSON)
    c.eq(len(wu.json_body(r) or []), 2, "GET /studies/{s1}/series/{se1}/instances lists its 2 instances")
    c.ok(r.headers.get("Access-Control-Allow-Origin") is not None, "QIDO responses carry Access-Control-Allow-Origin")

    # ---- filters, includefield, paging, fuzzy ---------------------------------------------------------
    same_as_find("/v2/studies", [("PatientName", "Müller^Jürgen")], "study")
    same_as_find("/v2/studies", [("PatientName", "muller^jurgen")], "study")
    same_as_find("/v2/studies", [("00100020", "Q002")], "study")
    same_as_find("/v2/studies", [("StudyDate", "20200101-20211231")], "study")
    same_as_find("/v2/studies", [("PatientName", "doe"), ("fuzzymatching", "true")], "study")
    same_as_find("/v2/studies", [("includefield", "ModalitiesInStudy,NumberOfStudyRelatedInstances")], "study")
    same_as_find("/v2/studies", [("includefield", "all")], "study")
    same_as_find("/v2/studies", [("limit", "1"), ("offset", "1")], "study")
    same_as_find("/v2/series", [("Modality", "CT")], "series")
    same_as_find("/v2/series", [("Modality", "CT"), ("PatientID", "Q003")], "series")
    same_as_find(f"/v2/studies/{s1}/series", [("Modality", "PR")], "series", study=s1)
    same_as_find("/v2/instances", [("SOPInstanceUID", f"{se1}.2")], "instance")
    same_as_find(f"/v2/studies/{s1}/instances", [("Modality", "CT"), ("includefield", "00200013")], "instance", study=s1)
    same_as_find("/v1/studies", [("includefield", "StudyDescription")], "study", v1=True)
    r = srv.get("/v2/studies?PatientName=M%C3%BCller%5EJ%C3%BCrgen", accept=JSON)
    c.ok(r.status == 200 and len(wu.json_body(r) or []) == 1, "percent-encoded UTF-8 value (M%C3%BCller%5EJ%C3%BCrgen) matches",
         wu.describe(r))
    r = srv.get("/v2/studies?LIMIT=1", accept=JSON)
    c.ok(r.status == 200 and len(wu.json_body(r) or []) == 1, "the parameter name limit is case-insensitive (LIMIT=1)",
         wu.describe(r))

    # ---- no match: 200 [] (CP-2473; the reference's 204 with --strict, tests/web_strict.py) -----------------
    for url in ["/v2/studies?PatientName=Nobody^Here", "/v2/studies?offset=50", "/v2/instances?SOPInstanceUID=1.2.3.4",
                f"/v2/studies/{ROOT}.99/series"]:
        r = srv.get(url, accept=JSON)
        c.ok(r.status == 200 and r.body == b"[]", f"GET {url}: 200 with an empty array (nothing matches)", wu.describe(r))

    # ---- 400 ---------------------------------------------------------------------------------------------
    def bad(url, why):
        r = srv.get(url, accept=JSON)
        c.ok(r.status == 400 and wu.is_text_error(r), f"GET {url}: 400 with a plain-text reason [{why}]", wu.describe(r))
        if r.status == 400:
            c.note("reason: " + r.body.decode("utf-8", "replace")[:150])

    bad("/v2/studies?Foo=1", "unknown key")
    bad("/v2/studies?limit=0", "limit < 1")
    bad("/v2/studies?limit=201", "limit > 200")
    bad("/v2/studies?limit=abc", "limit not a number")
    bad("/v2/studies?offset=-1", "negative offset")
    bad("/v2/studies?PatientName=%3Cscript%3E", "'<' in the query string (%3C)")
    bad("/v2/studies?PatientName=<b>", "'<' in the query string")
    bad("/v2/studies?Foo%3C=1", "'<' in a key")
    bad("/v2/studies?includefield=all&includefield=StudyDescription", "includefield=all with other fields")
    bad("/v2/studies?includefield=all,StudyDescription", "includefield=all with another field")
    bad("/v2/studies?includefield=NoSuchThing", "unknown includefield")
    bad("/v2/studies?Modality=CT", "series attribute at study level")
    bad(f"/v2/studies/{s1}/series?PatientName=John", "study attribute in a study-scoped series search")
    bad("/v2/studies?PatientName=A&PatientName=B", "the same key twice")
    bad("/v2/studies?StudyDate=2020-01-15", "invalid DA")
    bad("/v2/studies/1.2.abc/series", "bad study UID in the URL")
    bad(f"/v2/studies/{s1}/series/1.2.x/instances", "bad series UID in the URL")

    # ---- 406 ------------------------------------------------------------------------------------------------
    for accept in ["text/html", "application/dicom", "application/dicom+json;q=0, text/html"]:
        r = srv.get("/v2/studies", accept=accept)
        c.ok(r.status == 406 and wu.is_text_error(r), f"GET /v2/studies with Accept {accept!r}: 406", wu.describe(r))
    # No Accept header and application/json are DICOM JSON too (tests/web_strict.py: not with --strict).
    for accept in ["*/*", "application/*", "application/dicom+json; q=0.5, text/html", "application/json", None,
                   "text/html, application/dicom+json; type=x/y"]:
        r = srv.get("/v2/studies", accept=accept)
        c.eq(r.status, 200, f"GET /v2/studies with Accept {accept!r}: 200")

    # ---- v1 vs v2 default attributes --------------------------------------------------------------------------
    def keys(url):
        r = srv.get(url, accept=JSON)
        return set().union(*(set(o) for o in (wu.json_body(r) or [{}])))

    v2s, v1s = keys("/v2/studies"), keys("/v1/studies")
    v2_study = {"0020000D", "00080020", "00081030", "00080050", "00080090", "00100010", "00100020", "00100030",
                "00080061", "00201206", "00201208"}  # + the computed ones PS3.18 lists (not with --strict)
    c.ok(v2s <= v2_study and {"0020000D", "00100010", "00081030"} <= v2s,
         "v2 study results: the v2 default set (StudyDescription included, StudyTime not)", str(sorted(v2s)))
    c.ok("00080030" in v1s and "00081030" not in v1s and "00080005" in v1s,
         "v1 study results: StudyTime and SpecificCharacterSet, no StudyDescription (v1 default set)", str(sorted(v1s)))
    v2i, v1i = keys(f"/v2/studies/{s1}/series/{se1}/instances"), keys(f"/v1/studies/{s1}/series/{se1}/instances")
    c.eq(v2i, {"00080018"}, "v2 series' instances: only SOPInstanceUID")
    c.ok({"00080016", "00080018", "00200013", "00280010", "00280011", "00280100"} <= v1i,
         "v1 series' instances: SOPClassUID, SOPInstanceUID, InstanceNumber, Rows, Columns, BitsAllocated", str(sorted(v1i)))
    v2se = keys("/v2/series")
    c.ok({"0020000E", "00080060"} <= v2se and "00100010" in v2se,
         "v2 all series: series attributes plus the study's (PatientName)", str(sorted(v2se)))


if __name__ == "__main__":
    main()
