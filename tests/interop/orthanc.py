"""Interoperability: Orthanc's DICOMweb plugin as a client of `dicomfs serve`.

Debian's Orthanc (orthanc) and its DICOMweb plugin (orthanc-dicomweb) run from a private
configuration in SCRATCH on a free loopback port (interoputil.Orthanc; the system service
is never used), with two DicomWeb "Servers" entries for dicomfs's /v2/: "dicomfs" (the
plugin's defaults: chunked STOW) and "dicomfs-plain" (ChunkedTransfers false). Both point
at a recording relay (httptap) in front of dicomfs, so every request Orthanc makes is
printed with its headers in full, beside dicomfs's answer.

  1. the six files of interoputil.make_dataset (4 studies; study A has 3 instances in 2
     series) are uploaded to Orthanc's REST API (/instances);
  2. STOW-RS by Orthanc: POST /dicom-web/servers/dicomfs/stow with studies A, B, C (one
     job), then study D through dicomfs-plain; every STOW request must be answered 200;
  3. dicomfs has them: QIDO over curl finds every study, series and instance, and WADO-RS
     (curl, Accept application/dicom; transfer-syntax=*) gives each file back byte-identical;
  4. QIDO-RS by Orthanc (/qido): studies, the series of A, the instances of A, includefield;
  5. WADO-RS metadata by Orthanc (/get Uri /studies/A/metadata, also with an explicit
     Accept application/dicom+json, and an instance's metadata): the same JSON as dicomfs
     serves to curl; /get of frames (multipart, the frame bytes) and rendered (a JPEG);
  6. WADO-RS retrieve by Orthanc: the studies are deleted from Orthanc, then pulled back
     with /retrieve (study, series and instance level); Orthanc's /instances/{id}/file of
     each is byte-identical to the source file;
  7. DELETE by Orthanc (/delete, HasDelete): study B, then series S2 of A; QIDO over curl
     no longer finds them.
"""
import json
import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
import interoputil as iu  # noqa: E402
import httptap  # noqa: E402
import testutil as tu  # noqa: E402
import webutil as wu  # noqa: E402

NAME = "interop_orthanc"
JSON = "application/dicom+json"


def ovalue(obj, tag):
    """A value from Orthanc's QIDO answer ({"Value": "x"}) or from DICOM JSON ({"Value": ["x"]})."""
    el = (obj or {}).get(tag) or (obj or {}).get(tag.lower()) or {}
    v = el.get("Value")
    if isinstance(v, list):
        v = v[0] if v else None
    if isinstance(v, dict):  # a person name in DICOM JSON
        v = v.get("Alphabetic")
    return v


def qido_uids(answer, tag):
    return sorted(ovalue(o, tag) for o in answer) if isinstance(answer, list) else None


def main():
    # The default mode is what real clients meet; --strict (the reference's refusals) is not
    # what this test is about, so an inherited DICOMFS_STRICT does not apply here.
    os.environ.pop("DICOMFS_STRICT", None)
    tu.require_binary()
    plugin = iu.require_orthanc(NAME)
    iu.require_commands(NAME, "curl")
    scratch = tu.scratch(NAME)
    c = tu.Checker(NAME)
    m = iu.make_dataset(os.path.join(scratch, "data"))
    with wu.Server(scratch) as srv, httptap.Tap(srv.port) as tap:
        base = tap.url + "/v2/"
        servers = {"dicomfs": {"Url": base, "HasDelete": True},
                   "dicomfs-plain": {"Url": base, "HasDelete": True, "ChunkedTransfers": False}}
        odir = os.path.join(scratch, "orthanc")
        os.makedirs(odir)
        o = iu.Orthanc(odir, plugin, servers)
        try:
            o.start()
        except RuntimeError as e:
            iu.fail(NAME, str(e))
        try:
            run(c, srv, tap, o, m)
        finally:
            if c.failed:
                for line in o.log_errors():
                    c.note("orthanc.log: " + line)
            rc = o.stop()
            tap.settle()
            iu.print_exchanges("Orthanc -> dicomfs", tap.exchanges())
        c.ok(rc == 0, "Orthanc stops on SIGTERM with exit status 0", f"exit status {rc}; log:\n{o.log_tail()}")
        srv.finish_check(c)
    c.finish()


def run(c, srv, tap, o, m):
    src = {n: iu.read_bytes(v["path"]) for n, v in m.items()}
    A, B, C, D = m["ct1"]["study"], m["mr"]["study"], m["dose"]["study"], m["rle"]["study"]
    S1, S2 = m["ct1"]["series"], m["ct3"]["series"]
    dfs = srv.url + "/v2"

    # ---- 1. Into Orthanc ----------------------------------------------------------------
    ostudy = {}  # study UID -> Orthanc study ID
    for n, v in m.items():
        st, ans = o.json("POST", "/instances", src[n])
        okd = c.ok(st == 200 and isinstance(ans, dict) and ans.get("Status") == "Success",
                   f"Orthanc: upload {n}.dcm to /instances", f"{st} {ans!r}"[:300])
        if okd:
            ostudy[v["study"]] = ans["ParentStudy"]
            st, data = o.request("GET", f"/instances/{ans['ID']}/file")
            c.ok(st == 200 and data == src[n], f"Orthanc keeps {n}.dcm byte for byte")

    # ---- 2. STOW-RS by Orthanc ----------------------------------------------------------
    t = tap.mark()
    res = [ostudy[s] for s in (A, B, C) if s in ostudy]
    st, ans = o.json("POST", "/dicom-web/servers/dicomfs/stow", {"Resources": res, "Synchronous": True})
    c.ok(st == 200, "Orthanc /dicom-web/servers/dicomfs/stow of studies A, B, C (chunked): 200",
         f"{st} {json.dumps(ans)[:400] if not isinstance(ans, bytes) else ans[:400]!r}")
    check_stow_exchanges(c, tap, t, "dicomfs")
    t = tap.mark()
    st, ans = o.json("POST", "/dicom-web/servers/dicomfs-plain/stow",
                     {"Resources": [ostudy.get(D, "")], "Synchronous": True})
    c.ok(st == 200, "Orthanc /dicom-web/servers/dicomfs-plain/stow of study D (ChunkedTransfers false): 200",
         f"{st} {json.dumps(ans)[:400] if not isinstance(ans, bytes) else ans[:400]!r}")
    check_stow_exchanges(c, tap, t, "dicomfs-plain")

    # ---- 3. dicomfs has them (curl) ----------------------------------------------------------
    missing = [n for n, v in m.items() if iu.curl(
        f"{dfs}/studies/{v['study']}/series/{v['series']}/instances/{v['sop']}/metadata",
        headers=[f"Accept: {JSON}"]).status != 200]
    c.ok(not missing, "dicomfs holds every instance Orthanc sent", f"missing: {missing}")
    if missing:
        # Not a check: so that the QIDO, WADO and retrieve checks below still say something.
        c.note(f"storing {missing} with curl (STOW-RS, application/dicom) so that the checks below still run")
        for n in missing:
            r = iu.curl(f"{dfs}/studies", "POST", [f"Accept: {JSON}", "Content-Type: application/dicom"],
                        data_file=m[n]["path"])
            if r.status != 200:
                c.note(f"curl STOW of {n} failed too: {r.describe()}")
    r = iu.curl(f"{dfs}/studies", headers=[f"Accept: {JSON}"])
    c.eq(qido_uids(r.json(), "0020000D"), sorted({A, B, C, D}), "curl QIDO /studies: the 4 studies stored by Orthanc")
    r = iu.curl(f"{dfs}/studies/{A}/series", headers=[f"Accept: {JSON}"])
    c.eq(qido_uids(r.json(), "0020000E"), sorted([S1, S2]), "curl QIDO /studies/A/series: its 2 series")
    r = iu.curl(f"{dfs}/studies/{A}/instances", headers=[f"Accept: {JSON}"])
    c.eq(qido_uids(r.json(), "00080018"), sorted(m[n]["sop"] for n in ("ct1", "ct2", "ct3")),
         "curl QIDO /studies/A/instances: its 3 instances")
    for n, v in m.items():
        r = iu.curl(f"{dfs}/studies/{v['study']}/series/{v['series']}/instances/{v['sop']}",
                    headers=["Accept: application/dicom; transfer-syntax=*"])
        c.ok(r.status == 200 and r.body == src[n], f"curl WADO instance {n}: byte-identical to the file given to Orthanc",
             r.describe(80) if r.body != src[n] else "")

    # ---- 4. QIDO-RS by Orthanc --------------------------------------------------------------
    def oqido(uri, args=None):
        body = {"Uri": uri}
        if args is not None:
            body["Arguments"] = args
        st, ans = o.json("POST", "/dicom-web/servers/dicomfs/qido", body)
        return st, ans

    st, ans = oqido("/studies")
    c.ok(st == 200 and qido_uids(ans, "0020000D") == sorted({A, B, C, D}), "Orthanc /qido /studies: the 4 studies",
         f"{st} {str(ans)[:300]}")
    st, ans = oqido("/studies", {"PatientName": "CompressedSamples^CT1"})
    c.ok(st == 200 and qido_uids(ans, "0020000D") == [A], "Orthanc /qido /studies?PatientName=...: study A",
         f"{st} {str(ans)[:300]}")
    st, ans = oqido(f"/studies/{A}/series")
    c.ok(st == 200 and qido_uids(ans, "0020000E") == sorted([S1, S2]), "Orthanc /qido /studies/A/series: 2 series",
         f"{st} {str(ans)[:300]}")
    # The plugin's /qido keeps only string values in its simplified answer (numbers such as
    # IS or US values, which DICOM JSON sends as JSON numbers, come back without "Value"), so
    # includefield is checked for the tags there and for the values through /get, which
    # passes dicomfs's body through.
    sops = sorted(m[n]["sop"] for n in ("ct1", "ct2", "ct3"))
    st, ans = oqido(f"/studies/{A}/instances", {"includefield": "00280010"})
    c.ok(st == 200 and qido_uids(ans, "00080018") == sops and all("00280010" in i for i in ans),
         "Orthanc /qido /studies/A/instances?includefield=00280010: 3 instances, each with Rows",
         f"{st} {str(ans)[:300]}")
    st, ans = o.json("POST", "/dicom-web/servers/dicomfs/get",
                     {"Uri": f"/studies/{A}/instances", "Arguments": {"includefield": "00280010"}})
    c.ok(st == 200 and qido_uids(ans, "00080018") == sops and all(ovalue(i, "00280010") == 128 for i in ans),
         "Orthanc /get /studies/A/instances?includefield=00280010: Rows 128 in each", f"{st} {str(ans)[:300]}")
    st, ans = oqido("/instances", {"SOPInstanceUID": m["dose"]["sop"], "includefield": "NumberOfFrames"})
    c.ok(st == 200 and isinstance(ans, list) and len(ans) == 1 and ovalue(ans[0], "00080018") == m["dose"]["sop"]
         and "00280008" in ans[0],
         "Orthanc /qido /instances?SOPInstanceUID=dose&includefield=NumberOfFrames: dose, with NumberOfFrames",
         f"{st} {str(ans)[:300]}")
    # No match: dicomfs answers 200 with [] (PS3.18 CP-2473); Orthanc's plugin cannot parse the
    # reference's empty 204 (it answers 400 "Bad file format"), which is why.
    st, ans = oqido("/studies", {"PatientID": "no-such-patient"})
    c.ok(st == 200 and ans == [], "Orthanc /qido with no match: 200, no studies", f"{st} {str(ans)[:200]}")

    # ---- 5. WADO-RS metadata, frames, rendered by Orthanc (/get) ---------------------------------
    ref = iu.curl(f"{dfs}/studies/{A}/metadata", headers=[f"Accept: {JSON}"]).json()
    c.ok(isinstance(ref, list) and len(ref) == 3, "curl WADO /studies/A/metadata: 3 instances", str(ref)[:200])
    for what, extra in (("", {}), (" with HttpHeaders Accept application/dicom+json", {"HttpHeaders": {"Accept": JSON}})):
        st, ans = o.json("POST", "/dicom-web/servers/dicomfs/get", {"Uri": f"/studies/{A}/metadata", **extra})
        c.ok(st == 200 and ans == ref, f"Orthanc /get /studies/A/metadata{what}: the JSON dicomfs serves",
             f"{st} {str(ans)[:300]}")
    d = m["dose"]
    ipath = f"/studies/{d['study']}/series/{d['series']}/instances/{d['sop']}"
    st, ans = o.json("POST", "/dicom-web/servers/dicomfs/get", {"Uri": ipath + "/metadata"})
    c.ok(st == 200 and isinstance(ans, list) and len(ans) == 1 and ovalue(ans[0], "00080018") == d["sop"]
         and ovalue(ans[0], "00280008") == 15, "Orthanc /get instance metadata of dose: NumberOfFrames 15",
         f"{st} {str(ans)[:300]}")
    # /get answers with the remote's body; Orthanc returns its Content-Type as well.
    st, body = o.request("POST", "/dicom-web/servers/dicomfs/get", json.dumps({"Uri": ipath + "/frames/2,15"}).encode())
    frames = [iu.read_bytes(f) for f in d["frame_files"]]
    parts = split_multipart(body)
    c.ok(st == 200 and parts == [frames[1], frames[14]], "Orthanc /get frames/2,15 of dose: two parts, the frames' bytes",
         f"{st}, {len(body)} bytes, parts {[len(p) for p in parts or []]}")
    ct = m["ct1"]
    st, body = o.request("POST", "/dicom-web/servers/dicomfs/get", json.dumps(
        {"Uri": f"/studies/{ct['study']}/series/{ct['series']}/instances/{ct['sop']}/rendered"}).encode())
    c.ok(st == 200 and body[:2] == b"\xff\xd8" and body[-2:] == b"\xff\xd9",
         "Orthanc /get rendered ct1 (Accept */*): a JPEG", f"{st} {body[:40]!r}")

    # ---- 6. WADO-RS retrieve by Orthanc ----------------------------------------------------------
    for s, oid in ostudy.items():
        o.request("DELETE", f"/studies/{oid}")
    st, ans = o.json("GET", "/instances")
    c.ok(st == 200 and ans == [], "Orthanc is empty after deleting the studies", f"{st} {ans!r}"[:200])
    mr = m["mr"]
    for what, resources, count in (
            ("study A", [{"Study": A}], 3),
            ("series of C", [{"Study": C, "Series": d["series"]}], 1),
            ("instance of B and study D", [{"Study": B, "Series": mr["series"], "Instance": mr["sop"]}, {"Study": D}], 2)):
        st, ans = o.json("POST", "/dicom-web/servers/dicomfs/retrieve", {"Resources": resources, "Synchronous": True})
        got = ans.get("ReceivedInstancesCount") if isinstance(ans, dict) else None
        c.ok(st == 200 and str(got) == str(count), f"Orthanc /retrieve {what}: {count} instance(s) received",
             f"{st} {str(ans)[:300]}")
    for n, v in m.items():
        st, ans = o.json("POST", "/tools/lookup", v["sop"].encode())
        ids = [x["ID"] for x in ans if x.get("Type") == "Instance"] if st == 200 and isinstance(ans, list) else []
        if not c.ok(len(ids) == 1, f"Orthanc has {n} again after /retrieve", f"{st} {ans!r}"[:200]):
            continue
        st, data = o.request("GET", f"/instances/{ids[0]}/file")
        c.ok(st == 200 and data == src[n], f"retrieved {n}: Orthanc's /instances/{{id}}/file is byte-identical to the source",
             f"{st}, {len(data)} bytes vs {len(src[n])}")

    # ---- 7. DELETE by Orthanc --------------------------------------------------------------------
    st, ans = o.json("POST", "/dicom-web/servers/dicomfs/delete", {"Level": "Study", "StudyInstanceUID": B})
    c.ok(st == 200, "Orthanc /delete study B: 200", f"{st} {ans!r}"[:200])
    r = iu.curl(f"{dfs}/studies?StudyInstanceUID={B}", headers=[f"Accept: {JSON}"])
    c.ok(r.status == 200 and r.body == b"[]", "curl QIDO: study B is gone (200 [])", r.describe())
    st, ans = o.json("POST", "/dicom-web/servers/dicomfs/delete",
                     {"Level": "Series", "StudyInstanceUID": A, "SeriesInstanceUID": S2})
    c.ok(st == 200, "Orthanc /delete series S2 of A: 200", f"{st} {ans!r}"[:200])
    r = iu.curl(f"{dfs}/studies/{A}/series", headers=[f"Accept: {JSON}"])
    c.eq(qido_uids(r.json(), "0020000E"), [S1], "curl QIDO: study A has only S1 left")


def check_stow_exchanges(c, tap, since, server):
    tap.settle()
    xs = [x for x in tap.exchanges(since) if x.method == "POST"]
    c.ok(xs and all(x.status == 200 for x in xs),
         f"every STOW request of Orthanc ({server}) was answered 200 by dicomfs",
         "; ".join(f"{x.method} {x.target} -> {x.status} {x.resp_body[:200]!r}" for x in xs) or "no request seen")


def split_multipart(body):
    """The parts of a multipart body whose boundary is read from its first line."""
    if not body.startswith(b"--"):
        return None
    eol = body.find(b"\r\n")
    delim = body[:eol]
    ct = "multipart/related; boundary=" + delim[2:].decode("latin-1")
    parts, err = wu.parse_multipart(ct, body)
    return None if err else [p for _, p in parts]


if __name__ == "__main__":
    main()
