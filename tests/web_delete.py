"""HTTP end-to-end: DELETE of a study, series or instance (azure-dicom-api.md section 5).

  - 204 with an empty body; then the resource answers 404 (retrieve and metadata) and QIDO
    no longer finds it, while its neighbours stay;
  - a second DELETE of the same resource, and of unknown ones: 404;
  - a bad UID in the URL: 400; every error body plain text;
  - the change feed (`dicomfs changes`) has one delete entry per deleted instance;
  - a deleted instance can be stored again (STOW 200).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import testutil as tu  # noqa: E402
import webutil as wu  # noqa: E402

ROOT = "1.2.826.0.1.3680043.9.7777.64"
JSON = wu.DICOM_JSON
MP_ORIGINAL = 'multipart/related; type="application/dicom"; transfer-syntax=*'


def main():
    tu.require_binary()
    c = tu.Checker("web_delete")
    scratch = tu.scratch("web_delete")
    with wu.Server(scratch) as srv:
        run(c, srv)
        srv.finish_check(c)
    c.finish()


def run(c, srv):
    # study 1: series 1 (3 instances), series 2 (1); study 2: series 1 (2)
    layout = {f"{ROOT}.1": {f"{ROOT}.1.1": 3, f"{ROOT}.1.2": 1}, f"{ROOT}.2": {f"{ROOT}.2.1": 2}}
    data = {}
    parts = []
    for st, series in layout.items():
        for se, n in series.items():
            for k in range(n):
                sop = f"{se}.{k + 1}"
                ds = tu.make_dataset(st, se, sop, Modality="OT", PatientName="Delete^Me")
                data[sop] = wu.dicom_bytes(ds)
                parts.append(("application/dicom", data[sop]))
    r = srv.stow("/v2/studies", wu.multipart(parts, "db"), 'multipart/related; type="application/dicom"; boundary=db')
    c.eq(r.status, 200, "STOW 6 instances in 2 studies: 200")

    s1, s2 = f"{ROOT}.1", f"{ROOT}.2"
    se11, se12 = f"{ROOT}.1.1", f"{ROOT}.1.2"
    inst = f"/v2/studies/{s1}/series/{se11}/instances/{se11}.2"

    def qido(url):
        r = srv.get(url, accept=JSON)
        return [wu.first_value(o, "00080018") for o in (wu.json_body(r) or [])] if r.status == 200 else \
            ([] if r.status == 204 else f"status {r.status}")

    # ---- instance -----------------------------------------------------------------------------------
    r = srv.request("DELETE", inst)
    c.ok(r.status == 204 and r.body == b"", "DELETE instance: 204 with an empty body", wu.describe(r))
    c.ok(r.headers.get("Access-Control-Allow-Origin") is not None, "DELETE responses carry Access-Control-Allow-Origin")
    r = srv.get(inst, accept="application/dicom; transfer-syntax=*")
    c.ok(r.status == 404 and wu.is_text_error(r), "the deleted instance: GET 404", wu.describe(r))
    r = srv.get(inst + "/metadata", accept=JSON)
    c.eq(r.status, 404, "the deleted instance: metadata 404")
    r = srv.get(inst + "/frames/1", accept="application/octet-stream")
    c.eq(r.status, 404, "the deleted instance: frames 404")
    c.eq(qido(f"/v2/instances?SOPInstanceUID={se11}.2"), [], "QIDO no longer finds the deleted instance")
    c.eq(sorted(qido(f"/v2/studies/{s1}/series/{se11}/instances")), [f"{se11}.1", f"{se11}.3"],
         "its series keeps the other 2 instances")
    r = srv.get(f"/v2/studies/{s1}/series/{se11}", accept=MP_ORIGINAL)
    parts, err = wu.parse_multipart(r.headers.get("Content-Type"), r.body)
    c.ok(r.status == 200 and err is None and sorted(b for _, b in parts) == sorted([data[f"{se11}.1"], data[f"{se11}.3"]]),
         "series retrieve returns the 2 remaining instances", f"{wu.describe(r, 60)} {err}")
    r = srv.request("DELETE", inst)
    c.ok(r.status == 404 and wu.is_text_error(r), "DELETE of the same instance again: 404", wu.describe(r))

    # ---- series ---------------------------------------------------------------------------------------
    r = srv.request("DELETE", f"/v2/studies/{s1}/series/{se11}")
    c.ok(r.status == 204 and r.body == b"", "DELETE series: 204 with an empty body", wu.describe(r))
    r = srv.get(f"/v2/studies/{s1}/series/{se11}", accept=MP_ORIGINAL)
    c.eq(r.status, 404, "the deleted series: GET 404")
    r = srv.get(f"/v2/studies/{s1}/series/{se11}/metadata", accept=JSON)
    c.eq(r.status, 404, "the deleted series: metadata 404")
    r = srv.get(f"/v2/studies/{s1}/series/{se11}/instances/{se11}.1", accept="application/dicom; transfer-syntax=*")
    c.eq(r.status, 404, "an instance of the deleted series: GET 404")
    r = srv.get(f"/v2/studies/{s1}/series", accept=JSON)
    c.eq([wu.first_value(o, "0020000E") for o in (wu.json_body(r) or [])], [se12], "QIDO: study 1 keeps only series 2")
    r = srv.get(f"/v2/series?SeriesInstanceUID={se11}", accept=JSON)
    c.ok(r.status == 200 and r.body == b"[]", "QIDO no longer finds the deleted series (200 [])", wu.describe(r))
    r = srv.request("DELETE", f"/v2/studies/{s1}/series/{se11}")
    c.eq(r.status, 404, "DELETE of the same series again: 404")

    # ---- study ----------------------------------------------------------------------------------------
    r = srv.request("DELETE", f"/v2/studies/{s1}")
    c.ok(r.status == 204 and r.body == b"", "DELETE study: 204 with an empty body", wu.describe(r))
    r = srv.get(f"/v2/studies/{s1}", accept=MP_ORIGINAL)
    c.eq(r.status, 404, "the deleted study: GET 404")
    r = srv.get(f"/v2/studies/{s1}/metadata", accept=JSON)
    c.eq(r.status, 404, "the deleted study: metadata 404")
    r = srv.get("/v2/studies", accept=JSON)
    c.eq([wu.first_value(o, "0020000D") for o in (wu.json_body(r) or [])], [s2], "QIDO lists only study 2")
    c.eq(sorted(qido("/v2/instances")), [f"{ROOT}.2.1.1", f"{ROOT}.2.1.2"], "QIDO instances: only study 2's remain")
    r = srv.request("DELETE", f"/v2/studies/{s1}")
    c.eq(r.status, 404, "DELETE of the same study again: 404")

    # ---- unknown, bad UIDs ----------------------------------------------------------------------------
    for url in [f"/v2/studies/{ROOT}.99", f"/v2/studies/{s2}/series/{ROOT}.99",
                f"/v2/studies/{s2}/series/{ROOT}.2.1/instances/{ROOT}.99", f"/v1/studies/{ROOT}.98"]:
        r = srv.request("DELETE", url)
        c.ok(r.status == 404 and wu.is_text_error(r), f"DELETE {url[len('/v2/studies/'):] or url}: 404 (unknown)",
             wu.describe(r))
    for url in ["/v2/studies/1.2.abc", f"/v2/studies/{s2}/series/1.2.", f"/v2/studies/{s2}/series/{ROOT}.2.1/instances/x",
                "/v2/studies/" + "1" * 65]:
        r = srv.request("DELETE", url)
        c.ok(r.status == 400 and wu.is_text_error(r), f"DELETE {url}: 400 (bad UID)", wu.describe(r))
    c.eq(sorted(qido("/v2/instances")), [f"{ROOT}.2.1.1", f"{ROOT}.2.1.2"], "the refused DELETEs removed nothing")

    # ---- v1 route, change feed, store again ---------------------------------------------------------------
    r = srv.request("DELETE", f"/v1/studies/{s2}/series/{ROOT}.2.1/instances/{ROOT}.2.1.1")
    c.eq(r.status, 204, "DELETE under /v1/: 204")
    rc, feed, p = tu.changes(srv.archive, offset=0, limit=100)
    deletes = sorted(e.get("sopInstanceUid") for e in (feed or []) if e.get("action") == "delete")
    c.eq(deletes, sorted([f"{se11}.1", f"{se11}.2", f"{se11}.3", f"{se12}.1", f"{ROOT}.2.1.1"]),
         "the change feed has one delete entry per deleted instance")
    r = srv.stow("/v2/studies", data[f"{se11}.2"], "application/dicom")
    c.eq(r.status, 200, "a deleted instance can be stored again: 200")
    r = srv.get(inst, accept="application/dicom; transfer-syntax=*")
    c.ok(r.status == 200 and r.body == data[f"{se11}.2"], "and retrieved again, byte-identical", wu.describe(r, 40))
    p = tu.fsck(srv.archive)
    c.eq(p.returncode, 0, "fsck exits 0 after the deletes")


if __name__ == "__main__":
    main()
