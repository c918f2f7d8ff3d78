"""HTTP end-to-end: routing errors, error bodies and CORS of `dicomfs serve`
(azure-dicom-api.md sections 1 and 3-5).

  - unknown paths and versions (/v3/studies, no version): 404;
  - a method the resource does not accept: 405 with an Allow header;
  - partitions in the path while the feature is off: 400 "Data partitions feature is disabled.";
  - every error body is text/plain and not empty;
  - CORS: Access-Control-Allow-Origin on responses (success and error); OPTIONS preflight
    204 with Access-Control-Allow-Methods;
  - api-supported-versions header; /health/check.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import testutil as tu  # noqa: E402
import webutil as wu  # noqa: E402

ROOT = "1.2.826.0.1.3680043.9.7777.65"
JSON = wu.DICOM_JSON


def main():
    tu.require_binary()
    c = tu.Checker("web_errors")
    scratch = tu.scratch("web_errors")
    with wu.Server(scratch) as srv:
        run(c, srv)
        srv.finish_check(c)
    c.finish()


def run(c, srv):
    st, se, sop = f"{ROOT}.1", f"{ROOT}.1.1", f"{ROOT}.1.1.1"
    r = srv.stow("/v2/studies", wu.dicom_bytes(tu.make_dataset(st, se, sop, Modality="OT")), "application/dicom")
    c.eq(r.status, 200, "STOW one instance: 200")
    inst = f"/v2/studies/{st}/series/{se}/instances/{sop}"

    errors = []  # every error response seen, for the body checks

    def expect(method, path, status, what, accept=JSON, body=None, headers=None):
        h = dict(headers or {})
        if accept:
            h["Accept"] = accept
        r = srv.request(method, path, body=body, headers=h)
        c.ok(r.status == status, f"{method} {path}: {status} [{what}]", wu.describe(r))
        if r.status >= 400:
            errors.append((f"{method} {path}", r))
        return r

    # ---- 404 ---------------------------------------------------------------------------------------------
    expect("GET", "/", 404, "root")
    expect("GET", "/nothing/here", 404, "unknown path")
    expect("GET", "/studies", 404, "no version in the path")
    expect("GET", "/v3/studies", 404, "unknown version v3")
    expect("GET", "/v0/studies", 404, "unknown version v0")
    expect("GET", "/v2/patients", 404, "unknown resource")
    expect("GET", f"/v2/studies/{st}/bogus", 404, "unknown study sub-resource")
    expect("GET", f"{inst}/bulkdata", 404, "no bulkdata route")
    expect("GET", f"{inst}/thumbnail", 404, "no thumbnail route")
    expect("GET", f"/v2/studies/{st}/rendered", 404, "no study rendered route", accept="image/jpeg")
    expect("GET", f"{inst}/frames/1/rendered/extra", 404, "path too deep")
    expect("GET", "/v2/" + "/".join(["studies"] * 20), 404, "a very deep path")
    for v in ("v1", "v1.0-prerelease", "v2"):
        expect("GET", f"/{v}/studies", 200, f"version {v} exists")

    # ---- 405 ---------------------------------------------------------------------------------------------
    for method, path, must in [("PUT", "/v2/studies", {"GET", "POST"}),
                               ("DELETE", "/v2/studies", {"GET", "POST"}),
                               ("POST", "/v2/series", {"GET"}),
                               ("PATCH", f"/v2/studies/{st}", {"GET", "POST", "DELETE"}),
                               ("POST", f"/v2/studies/{st}/series/{se}", {"GET", "DELETE"}),
                               ("POST", f"{inst}/metadata", {"GET"}),
                               ("DELETE", f"{inst}/metadata", {"GET"}),
                               ("DELETE", f"{inst}/frames/1", {"GET"}),
                               ("PUT", f"{inst}", {"GET", "DELETE"})]:
        r = expect(method, path, 405, "method not allowed", body=b"" if method in ("PUT", "POST", "PATCH") else None)
        allow = {m.strip() for m in (r.headers.get("Allow") or "").split(",") if m.strip()}
        c.ok(must <= allow and method not in allow, f"{method} {path}: Allow lists {', '.join(sorted(must))}",
             f"Allow: {r.headers.get('Allow')!r}")

    # ---- partitions -------------------------------------------------------------------------------------------
    for path in ("/v2/partitions", "/v2/partitions/Microsoft.Default/studies", "/v1/partitions/foo/studies/1.2.3"):
        r = expect("GET", path, 400, "partitions while the feature is off")
        c.ok("Data partitions feature is disabled" in r.body.decode("utf-8", "replace"),
             f"GET {path}: the reason says 'Data partitions feature is disabled.'", wu.describe(r))
    expect("POST", "/v2/partitions/p1/studies", 400, "STOW to a partition while the feature is off",
           body=b"x", headers={"Content-Type": "application/dicom"})

    # ---- more errors whose bodies are checked below --------------------------------------------------------------
    expect("GET", "/v2/studies?limit=0", 400, "bad query")
    expect("GET", "/v2/studies", 406, "QIDO Accept text/html", accept="text/html")
    expect("GET", f"{inst}/metadata", 406, "metadata with Accept application/dicom", accept="application/dicom")
    expect("GET", f"/v2/studies/{ROOT}.9/metadata", 404, "metadata of an unknown study")
    expect("GET", f"{inst}/frames/0", 400, "frame 0", accept="application/octet-stream")
    expect("POST", "/v2/studies", 415, "STOW text/plain", body=b"x", headers={"Content-Type": "text/plain"})
    expect("DELETE", f"/v2/studies/{ROOT}.9", 404, "DELETE unknown")

    # ---- every error body is plain text ------------------------------------------------------------------------
    bad = [f"{what}: {wu.describe(r, 80)}" for what, r in errors if not wu.is_text_error(r)]
    c.eq(bad, [], f"all {len(errors)} error responses have a non-empty text/plain body")
    nocors = [what for what, r in errors if r.headers.get("Access-Control-Allow-Origin") is None]
    c.eq(nocors, [], "all error responses carry Access-Control-Allow-Origin")

    # ---- CORS ------------------------------------------------------------------------------------------------
    for path, accept in [("/v2/studies", JSON), (inst, "application/dicom; transfer-syntax=*"), (f"{inst}/metadata", JSON)]:
        r = srv.get(path, accept=accept, headers={"Origin": "http://viewer.example"})
        c.ok(r.status == 200 and r.headers.get("Access-Control-Allow-Origin") in ("*", "http://viewer.example"),
             f"GET {path}: Access-Control-Allow-Origin", str(dict(r.headers)))
    r = srv.get(f"{inst}/metadata", accept=JSON)
    exposed = {h.strip().lower() for h in (r.headers.get("Access-Control-Expose-Headers") or "").split(",")}
    c.ok("etag" in exposed, "Access-Control-Expose-Headers includes ETag (viewers need it)", repr(exposed))
    for path, must in [("/v2/studies", {"GET", "POST"}), (f"/v2/studies/{st}", {"GET", "POST", "DELETE"}),
                       (f"{inst}/metadata", {"GET"}), (inst, {"GET", "DELETE"})]:
        r = srv.request("OPTIONS", path, headers={"Origin": "http://viewer.example",
                                                  "Access-Control-Request-Method": sorted(must)[0],
                                                  "Access-Control-Request-Headers": "accept, content-type"})
        methods = {m.strip() for m in (r.headers.get("Access-Control-Allow-Methods") or "").split(",")}
        c.ok(r.status == 204 and must <= methods, f"OPTIONS {path}: 204 with Access-Control-Allow-Methods {sorted(must)}",
             f"{wu.describe(r)} Allow-Methods {r.headers.get('Access-Control-Allow-Methods')!r}")
        c.ok(r.headers.get("Access-Control-Allow-Origin") is not None and r.body == b"",
             f"OPTIONS {path}: Access-Control-Allow-Origin, empty body")
        allowed_h = (r.headers.get("Access-Control-Allow-Headers") or "").lower()
        c.ok("content-type" in allowed_h and "accept" in allowed_h,
             f"OPTIONS {path}: Access-Control-Allow-Headers covers the asked headers", repr(allowed_h))
    r = srv.request("OPTIONS", "/v3/studies")
    c.eq(r.status, 404, "OPTIONS on an unknown path: 404")

    # ---- hostile bodies and paths -------------------------------------------------------------------------------
    # many tiny parts: refused at the part over the limit, memory bounded, nothing stored
    b = "tiny"
    part = f"--{b}\r\nContent-Type: application/dicom\r\n\r\nx\r\n".encode()
    r = srv.stow("/v2/studies", part * 10001 + f"--{b}--\r\n".encode(),
                 f'multipart/related; type="application/dicom"; boundary={b}')
    c.eq(r.status, 413, "STOW of 10,001 parts: 413 (at most 10,000 per request)")
    c.ok(b"10,000" in r.body, "and the answer says the limit", wu.describe(r))
    leftovers = os.listdir(os.path.join(srv.archive, "tmp"))
    c.eq([x for x in leftovers if x.endswith(".part")], [], "no upload of the refused request is left in tmp/")
    # a frame list longer than the route keeps is refused, never cut into other frames
    r = srv.request("GET", f"{inst}/frames/" + ",".join(["1"] * 2100),
                    headers={"Accept": 'multipart/related; type="application/octet-stream"; transfer-syntax=*'})
    c.ok(r.status in (400, 404, 414), "a frame list of 4,199 characters: refused, not cut", wu.describe(r))

    # ---- common headers, health ---------------------------------------------------------------------------------
    r = srv.get("/v2/studies", accept=JSON)
    c.ok("2" in (r.headers.get("api-supported-versions") or ""), "api-supported-versions header",
         repr(r.headers.get("api-supported-versions")))
    r = srv.get("/health/check")
    body = wu.json_body(r) or {}
    c.ok(r.status == 200 and body.get("overallStatus") == "Healthy", "GET /health/check: 200 Healthy", wu.describe(r))


if __name__ == "__main__":
    main()
