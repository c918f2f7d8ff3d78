"""HTTP end-to-end: STOW-RS (POST /v{n}/studies[/{study}]) of `dicomfs serve`.

Checks, each named after the reference's rule (azure-dicom-api.md section 2):
  - request forms: one application/dicom body; multipart/related with quoted and unquoted
    boundary, with and without the type parameter (parts without Content-Type take it);
    Content-Length and chunked transfer encoding; Expect: 100-continue;
  - status: 200 all stored, 202 mixed, 202 on a v2 warning (implicit VR -> 45063, invalid DA
    -> 1 with FailedAttributesSequence), v1 200 with warnings, 409 nothing stored (45070
    duplicate), 43264 for a study mismatch on POST /studies/{study}, 204 for no parts;
  - the response dataset: ReferencedSOPSequence / FailedSOPSequence items, RetrieveURL
    (00081190) at the top only with the study in the URL;
  - refusals: 415 (content type, a part of another type, no boundary), 406 (Accept text/html), 400 (bad study UID, malformed or truncated multipart) -- and nothing
    of a refused, malformed or truncated request is stored;
  - a 150 MB single-part upload is stored while the server's peak RSS grows < 30 MB.
"""
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import testutil as tu  # noqa: E402
import webutil as wu  # noqa: E402

ROOT = "1.2.826.0.1.3680043.9.7777.61"
JSON = wu.DICOM_JSON
_n = [0]


def new_instance(study=None, series=None, implicit=False, **attrs):
    """(study, series, sop, bytes) of a fresh small instance."""
    _n[0] += 1
    k = _n[0]
    study = study or f"{ROOT}.{k}"
    series = series or f"{study}.1"
    sop = f"{series}.{k}"
    attrs.setdefault("PatientName", "Stow^Test")
    attrs.setdefault("StudyDate", "20240102")
    attrs.setdefault("Modality", "OT")
    ds = tu.make_dataset(study, series, sop, **attrs)
    return study, series, sop, wu.dicom_bytes(ds, implicit=implicit)


def main():
    tu.require_binary()
    c = tu.Checker("web_stow")
    scratch = tu.scratch("web_stow")
    with wu.Server(scratch) as srv:
        run(c, srv)
        srv.finish_check(c)
    c.finish()


def run(c, srv):
    def stored(sop):
        r = srv.get(f"/v2/instances?SOPInstanceUID={sop}", accept=JSON)
        return r.status == 200 and sop.encode() in r.body

    def check_json(r, what):
        ct, _ = wu.media_type(r.headers.get("Content-Type"))
        body = wu.json_body(r)
        c.ok(ct == JSON and isinstance(body, dict), f"{what}: the body is an application/dicom+json dataset",
             wu.describe(r))
        return body or {}

    def referenced(body):
        return wu.seq_items(body, "00081199")

    def failed(body):
        return wu.seq_items(body, "00081198")

    # ---- single part application/dicom ----------------------------------------------------
    st, se, sop, data = new_instance()
    r = srv.stow("/v2/studies", data, "application/dicom")
    c.eq(r.status, 200, "single part application/dicom: 200 (all stored)")
    body = check_json(r, "single part")
    refs = referenced(body)
    c.eq(len(refs), 1, "single part: ReferencedSOPSequence has one item")
    item = refs[0] if refs else {}
    c.eq(wu.first_value(item, "00081150"), "1.2.840.10008.5.1.4.1.1.7", "ReferencedSOPSequence item: 00081150 SOP class")
    c.eq(wu.first_value(item, "00081155"), sop, "ReferencedSOPSequence item: 00081155 SOP instance")
    c.eq(wu.first_value(item, "00081190"), f"{srv.url}/v2/studies/{st}/series/{se}/instances/{sop}",
         "ReferencedSOPSequence item: 00081190 is the instance's absolute RetrieveURL")
    c.eq(item.get("00081190", {}).get("vr"), "UR", "instance RetrieveURL has vr UR")
    c.ok("00081196" not in item, "no WarningReason for a clean instance", tu.short(item))
    c.ok("00741048" in item, "v2: the item carries a (possibly empty) FailedAttributesSequence", tu.short(item))
    c.ok("00081190" not in body, "no top-level RetrieveURL when the URL has no study", tu.short(body))
    c.ok("00081198" not in body, "no FailedSOPSequence when everything is stored", tu.short(body))
    c.ok(stored(sop), "the stored instance is found by QIDO")
    c.ok(r.headers.get("Access-Control-Allow-Origin") is not None, "STOW responses carry Access-Control-Allow-Origin")

    # ---- multipart forms ------------------------------------------------------------------
    def mp_case(what, ctype_fmt, boundary, part_types, chunked=False):
        insts = [new_instance() for _ in part_types]
        body = wu.multipart([(t, i[3]) for t, i in zip(part_types, insts)], boundary)
        r = srv.stow("/v2/studies", body, ctype_fmt.format(b=boundary), chunked=chunked)
        ok = c.eq(r.status, 200, f"{what}: 200")
        if not ok:
            c.note(wu.describe(r))
        js = wu.json_body(r) or {}
        c.eq(sorted(wu.first_value(i, "00081155") for i in referenced(js)), sorted(i[2] for i in insts),
             f"{what}: every part is listed in ReferencedSOPSequence")
        c.ok(all(stored(i[2]) for i in insts), f"{what}: every part is stored")

    mp_case("multipart, quoted boundary, type parameter",
            'multipart/related; type="application/dicom"; boundary="{b}"', "qb-1234", ["application/dicom"] * 2)
    mp_case("multipart, unquoted boundary, type parameter",
            'multipart/related; type="application/dicom"; boundary={b}', "ub5678", ["application/dicom"] * 2)
    mp_case("multipart, no type parameter (parts typed)", "multipart/related; boundary={b}", "nt9",
            ["application/dicom"] * 3)
    mp_case("multipart, type parameter and a first part without Content-Type",
            'multipart/related; type="application/dicom"; boundary={b}', "rootT", [None])
    mp_case("multipart, part Content-Type case-insensitive (Application/DICOM)",
            'multipart/related; type="application/dicom"; boundary={b}', "caseB", ["Application/DICOM"])
    mp_case("multipart, chunked transfer encoding",
            'multipart/related; type="application/dicom"; boundary={b}', "chunk-b", ["application/dicom"] * 2,
            chunked=True)

    # a preamble before the first delimiter and an epilogue after the last are ignored (RFC 2046)
    st, se, sop, data = new_instance()
    body = wu.multipart([("application/dicom", data)], "pre", preamble=b"This is a preamble.", epilogue=b"epilogue\r\n")
    r = srv.stow("/v2/studies", body, 'multipart/related; type="application/dicom"; boundary=pre')
    c.ok(r.status == 200 and stored(sop), "multipart with a preamble and an epilogue: 200, stored", wu.describe(r))
    st, se, sop, data = new_instance()
    r = srv.stow("/v2/studies", wu.multipart([("application/dicom", data)], "st"),
                 'multipart/related; type="application/dicom"; start="<x>"; boundary=st')
    c.ok(r.status == 400 and wu.is_text_error(r) and not stored(sop), "multipart with a start parameter: 400 (not supported)",
         wu.describe(r))

    # explicit Content-Length (http.client sets it for bytes; check it was really sent)
    st, se, sop, data = new_instance()
    raw = (f"POST /v2/studies HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\nAccept: {JSON}\r\n"
           f"Content-Type: application/dicom\r\nContent-Length: {len(data)}\r\nConnection: close\r\n\r\n").encode() + data
    r = wu.raw_request(srv.port, raw)
    c.eq(r.status, 200, "single part with Content-Length (raw request): 200")
    c.ok(stored(sop), "single part with Content-Length: stored")

    st, se, sop, data = new_instance()
    r = srv.stow("/v2/studies", data, "application/dicom", chunked=True)
    c.eq(r.status, 200, "single part application/dicom, chunked transfer encoding: 200")
    c.ok(stored(sop), "single part chunked: stored")

    # ---- Expect: 100-continue ---------------------------------------------------------------
    st, se, sop, data = new_instance()
    interim, r, sent = wu.expect_continue(srv.port, "POST", "/v2/studies",
                                          {"Accept": JSON, "Content-Type": "application/dicom"}, data)
    c.eq(interim, 100, "Expect: 100-continue: the server answers 100 Continue before the body")
    c.eq(r.status, 200, "Expect: 100-continue: then 200 after the body")
    c.ok(stored(sop), "Expect: 100-continue: stored")
    interim, r, sent = wu.expect_continue(srv.port, "POST", "/v2/studies",
                                          {"Accept": JSON, "Content-Type": "text/plain"}, data)
    c.ok(interim is None and r.status == 415, "Expect: 100-continue with a refused content type: 415 at once, no 100",
         f"interim {interim}, {wu.describe(r)}")

    # ---- 202 mixed, 409 duplicates -----------------------------------------------------------
    st, se, sop_dup, data_dup = new_instance()
    r = srv.stow("/v2/studies", data_dup, "application/dicom")
    c.eq(r.status, 200, "an instance stored once: 200")
    r = srv.stow("/v2/studies", data_dup, "application/dicom")
    c.eq(r.status, 409, "the same instance again: 409 (nothing stored)")
    body = check_json(r, "409 duplicate")
    f = failed(body)
    c.eq([wu.first_value(i, "00081197") for i in f], [45070], "409 duplicate: FailedSOPSequence has FailureReason 45070")
    c.eq([(wu.first_value(i, "00081150"), wu.first_value(i, "00081155")) for i in f],
         [("1.2.840.10008.5.1.4.1.1.7", sop_dup)], "FailedSOPSequence item names SOP class and instance")
    c.eq(f[0].get("00081197", {}).get("vr") if f else None, "US", "FailureReason has vr US")
    c.ok("00081199" not in body, "409: no ReferencedSOPSequence", tu.short(body))

    st, se, sop_new, data_new = new_instance()
    boundary = "mixed-b"
    body_bytes = wu.multipart([("application/dicom", data_new), ("application/dicom", data_dup),
                               ("application/dicom", b"this is not a DICOM file at all" * 10)], boundary)
    r = srv.stow("/v2/studies", body_bytes, f'multipart/related; type="application/dicom"; boundary={boundary}')
    c.eq(r.status, 202, "mixed stored and failed parts: 202")
    body = check_json(r, "202 mixed")
    c.eq([wu.first_value(i, "00081155") for i in referenced(body)], [sop_new], "202 mixed: ReferencedSOPSequence lists the new instance")
    reasons = sorted(wu.first_value(i, "00081197") for i in failed(body))
    c.eq(reasons, [272, 45070], "202 mixed: FailedSOPSequence has 45070 (duplicate) and 272 (not DICOM)")
    bad = [i for i in failed(body) if wu.first_value(i, "00081197") == 272]
    c.ok(bad and "00081155" not in bad[0] and "00081150" not in bad[0],
         "the unparsable part's failure item has no SOP UIDs", tu.short(bad))
    c.ok(stored(sop_new), "202 mixed: the new instance is stored")

    # ---- warnings: v2 202, v1 200 --------------------------------------------------------------
    st, se, sop, data = new_instance(implicit=True)
    r = srv.stow("/v2/studies", data, "application/dicom")
    c.eq(r.status, 202, "v2 implicit VR file: 202 (stored with a warning)")
    refs = referenced(wu.json_body(r) or {})
    c.eq([wu.first_value(i, "00081196") for i in refs], [45063], "v2 implicit VR: WarningReason 45063")
    c.eq(refs[0].get("00081196", {}).get("vr") if refs else None, "US", "WarningReason has vr US")
    c.ok(stored(sop), "v2 implicit VR: stored")

    st, se, sop, data = new_instance(StudyDate="20201332")
    r = srv.stow("/v2/studies", data, "application/dicom")
    c.eq(r.status, 202, "v2 invalid DA (StudyDate 20201332): 202")
    refs = referenced(wu.json_body(r) or {})
    c.eq([wu.first_value(i, "00081196") for i in refs], [1], "v2 invalid DA: WarningReason 1")
    fas = wu.seq_items(refs[0] if refs else {}, "00741048")
    comments = [wu.first_value(i, "00000902") for i in fas]
    c.ok(len(comments) == 1 and comments[0] and "(0008,0020)" in comments[0] and "DA" in comments[0]
         and comments[0].startswith("DICOM100:"),
         "v2 invalid DA: FailedAttributesSequence has one ErrorComment 'DICOM100: (0008,0020) ... DA'",
         tu.short(fas))
    c.eq(fas[0].get("00000902", {}).get("vr") if fas else None, "LO", "ErrorComment has vr LO")
    c.ok(stored(sop), "v2 invalid DA: stored")

    st, se, sop, data = new_instance(implicit=True)
    r = srv.stow("/v1/studies", data, "application/dicom")
    c.eq(r.status, 200, "v1 implicit VR file: 200 (v1 warnings still give 200)")
    refs = referenced(wu.json_body(r) or {})
    c.eq([wu.first_value(i, "00081196") for i in refs], [45063], "v1 implicit VR: WarningReason 45063 in the item")
    c.ok(refs and "00741048" not in refs[0], "v1: items carry no FailedAttributesSequence", tu.short(refs))
    c.ok(refs and wu.first_value(refs[0], "00081190", ).startswith(f"{srv.url}/v1/studies/"),
         "v1: the instance RetrieveURL is under /v1/", tu.short(refs))

    st, se, sop, data = new_instance(StudyDate="20201332")
    r = srv.stow("/v1/studies", data, "application/dicom")
    c.eq(r.status, 409, "v1 invalid indexed DA (StudyDate): 409 (rejected)")
    f = failed(wu.json_body(r) or {})
    c.eq([wu.first_value(i, "00081197") for i in f], [43264], "v1 invalid DA: FailureReason 43264")
    c.ok(f and any("(0008,0020)" in (wu.first_value(i, "00000902") or "") for i in wu.seq_items(f[0], "00741048")),
         "v1 invalid DA: the failure item has a FailedAttributesSequence naming (0008,0020)", tu.short(f))
    c.ok(not stored(sop), "v1 invalid DA: not stored")

    st, se, sop, data = new_instance(ReferringPhysicianName="One^A\\Two^B")
    r = srv.stow("/v2/studies", data, "application/dicom")
    c.eq(r.status, 200, "an indexed attribute with two values: 200")
    w = r.headers.get("Warning") or ""
    c.ok(w.startswith("299 ") and "only first value is indexed" in w,
         "an indexed attribute with two values: Warning: 299 ... only first value is indexed", repr(w))

    # ---- study in the URL --------------------------------------------------------------------
    study_a = f"{ROOT}.900"
    st, se, sop_a, data_a = new_instance(study=study_a)
    st_b, se_b, sop_b, data_b = new_instance()
    r = srv.stow(f"/v2/studies/{study_a}", data_a, "application/dicom")
    c.eq(r.status, 200, "POST /studies/{study} with a matching instance: 200")
    body = wu.json_body(r) or {}
    c.eq(wu.first_value(body, "00081190"), f"{srv.url}/v2/studies/{study_a}",
         "POST /studies/{study}: top-level RetrieveURL is the study URL")
    r = srv.stow(f"/v2/studies/{study_a}", data_b, "application/dicom")
    c.eq(r.status, 409, "POST /studies/{study} with an instance of another study: 409")
    body = wu.json_body(r) or {}
    f = failed(body)
    c.eq([wu.first_value(i, "00081197") for i in f], [43264], "study mismatch: FailureReason 43264 (as the code, not 43265)")
    c.eq([wu.first_value(i, "00081155") for i in f], [sop_b], "study mismatch: the failure item names the instance")
    c.ok("00081190" not in body, "no top-level RetrieveURL when nothing was stored", tu.short(body))
    c.ok(not stored(sop_b), "study mismatch: the instance is not stored")
    st, se, sop_a2, data_a2 = new_instance(study=study_a)
    b = "mm"
    r = srv.stow(f"/v2/studies/{study_a}", wu.multipart([("application/dicom", data_a2), ("application/dicom", data_b)], b),
                 f'multipart/related; type="application/dicom"; boundary={b}')
    c.eq(r.status, 202, "POST /studies/{study}, one matching and one other study: 202")
    body = wu.json_body(r) or {}
    c.eq(wu.first_value(body, "00081190"), f"{srv.url}/v2/studies/{study_a}", "202: top-level RetrieveURL present")
    c.eq([wu.first_value(i, "00081197") for i in failed(body)], [43264], "202: the other study's part fails with 43264")
    st, se, sop_lc, data_lc = new_instance(study=study_a)
    r = srv.stow(f"/v2/studies/{study_a}", data_lc, "application/dicom", accept="*/*")
    c.eq(r.status, 200, "Accept */* is acceptable for STOW")

    # ---- refusals: 415 ---------------------------------------------------------------------------
    st, se, sop, data = new_instance()
    r = srv.stow("/v2/studies", data, "application/octet-stream")
    c.eq(r.status, 415, "Content-Type application/octet-stream: 415")
    c.ok(wu.is_text_error(r), "415: plain-text reason", wu.describe(r))
    r = srv.stow("/v2/studies", data, None)
    c.eq(r.status, 415, "no Content-Type: 415")
    r = srv.stow("/v2/studies", data, 'multipart/related; type="application/dicom"')
    c.eq(r.status, 415, "multipart/related without boundary: 415")
    c.ok(not stored(sop), "nothing stored after the 415s")
    st, se, sop1, data1 = new_instance()
    b = "other-type"
    r = srv.stow("/v2/studies", wu.multipart([("application/dicom", data1), ("application/json", b"{}")], b),
                 f'multipart/related; type="application/dicom"; boundary={b}')
    c.eq(r.status, 415, "a part of another type (application/json): 415")
    c.ok(wu.is_text_error(r), "415 part type: plain-text reason", wu.describe(r))
    c.ok(not stored(sop1), "a part of another type: nothing of the request is stored (not even the good first part)")

    # ---- refusals: 406 ------------------------------------------------------------------------------
    st, se, sop, data = new_instance()
    r = srv.stow("/v2/studies", data, "application/dicom", accept="text/html")
    c.eq(r.status, 406, "Accept text/html: 406")
    c.ok(wu.is_text_error(r), "406: plain-text reason", wu.describe(r))
    c.ok(not stored(sop), "nothing stored after the 406s")

    # ---- refusals: 400 ------------------------------------------------------------------------------
    r = srv.stow("/v2/studies/1.2.abc", data, "application/dicom")
    c.eq(r.status, 400, "bad study UID in the URL (1.2.abc): 400")
    c.ok(wu.is_text_error(r), "400 bad UID: plain-text reason", wu.describe(r))
    r = srv.stow("/v2/studies/1.2.3.", data, "application/dicom")
    c.eq(r.status, 400, "bad study UID in the URL (trailing dot): 400")
    r = srv.stow("/v2/studies/" + "1" * 65, data, "application/dicom")
    c.eq(r.status, 400, "study UID in the URL longer than 64: 400")
    c.ok(not stored(sop), "nothing stored after the 400s for bad UIDs")

    # truncated multipart: a complete first part, the second part cut off (no closing delimiter)
    st, se, sop1, data1 = new_instance()
    st, se, sop2, data2 = new_instance()
    b = "trunc"
    whole = wu.multipart([("application/dicom", data1), ("application/dicom", data2)], b)
    cut = whole[:len(whole) - len(data2) // 2]
    r = srv.stow("/v2/studies", cut, f'multipart/related; type="application/dicom"; boundary={b}')
    c.eq(r.status, 400, "truncated multipart (second part has no closing delimiter): 400")
    c.ok(wu.is_text_error(r), "400 truncated: plain-text reason", wu.describe(r))
    whole_noclose = wu.multipart([("application/dicom", data1), ("application/dicom", data2)], b, close=False)
    r = srv.stow("/v2/studies", whole_noclose, f'multipart/related; type="application/dicom"; boundary={b}')
    c.eq(r.status, 400, "multipart without its closing delimiter: 400")
    # malformed: a part header line without a colon; a part header block over 16 KiB
    bad = wu.multipart([("application/dicom", data1)], b, close=False) + \
        b"\r\n--" + b.encode() + b"\r\nthis header line has no colon\r\n\r\n" + data2 + b"\r\n--" + b.encode() + b"--\r\n"
    r = srv.stow("/v2/studies", bad, f'multipart/related; type="application/dicom"; boundary={b}')
    c.eq(r.status, 400, "malformed multipart (a part header line without a colon): 400")
    bad = wu.multipart([("application/dicom", data1), ({"Content-Type": "application/dicom", "X-Pad": "x" * 20000}, data2)], b)
    r = srv.stow("/v2/studies", bad, f'multipart/related; type="application/dicom"; boundary={b}')
    c.eq(r.status, 400, "malformed multipart (part headers longer than 16 KiB): 400")
    r = srv.stow("/v2/studies", b"no delimiter anywhere in this body" * 20,
                 f'multipart/related; type="application/dicom"; boundary={b}')
    c.eq(r.status, 400, "multipart body without any delimiter: 400")
    c.ok(not stored(sop1) and not stored(sop2), "nothing stored from the truncated/malformed multipart requests")

    # connection closed mid-body (Content-Length promises more)
    st, se, sop3, data3 = new_instance()
    for what, ctype, payload in [("single part", "application/dicom", data3),
                                 ("multipart", f'multipart/related; type="application/dicom"; boundary={b}',
                                  wu.multipart([("application/dicom", data3), ("application/dicom", data2)], b))]:
        sock = socket.create_connection((wu.HOST, srv.port), timeout=30)
        head = (f"POST /v2/studies HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\nAccept: {JSON}\r\n"
                f"Content-Type: {ctype}\r\nContent-Length: {len(payload) + 1000}\r\n\r\n").encode()
        sock.sendall(head + payload)
        time.sleep(0.3)
        sock.close()
    tmpdir = os.path.join(srv.archive, "tmp")
    leftovers = None
    for _ in range(50):
        time.sleep(0.2)
        # (the server's own tmp/<id>.open, made at its first commit, is not an upload)
        leftovers = [x for x in os.listdir(tmpdir) if not x.endswith(".open")] if os.path.isdir(tmpdir) else []
        if not leftovers:
            break
    c.ok(not stored(sop3) and not stored(sop2), "connection closed mid-body: nothing of the request is stored")
    c.eq(leftovers, [], "connection closed mid-body: no upload left in ARCHIVE/tmp")

    # ---- 204 for no parts ------------------------------------------------------------------------------
    b = "empty"
    r = srv.stow("/v2/studies", f"--{b}--\r\n".encode(), f'multipart/related; type="application/dicom"; boundary={b}')
    c.eq(r.status, 204, "multipart body with no parts (only the closing delimiter): 204")
    c.eq(r.body, b"", "204: empty body")
    r = srv.stow("/v2/studies", b"", "application/dicom")
    c.eq(r.status, 204, "empty application/dicom body: 204 (no parts)")

    # ---- streaming: a 150 MB single-part upload ----------------------------------------------------------------
    big_upload(c, srv, stored)


def big_upload(c, srv, stored):
    """150 MB of 8-bit pixels (6 frames of 5000 x 5000) streamed in 1 MiB pieces."""
    import struct
    rows = cols = 5000
    frames = 6
    pixels = rows * cols * frames
    study = f"{ROOT}.7000"
    ds = tu.make_dataset(study, f"{study}.1", f"{study}.1.1", Modality="OT", PatientName="Big^Upload",
                         SamplesPerPixel=1, PhotometricInterpretation="MONOCHROME2", Rows=rows, Columns=cols,
                         NumberOfFrames=frames, BitsAllocated=8, BitsStored=8, HighBit=7, PixelRepresentation=0)
    head = wu.dicom_bytes(ds) + struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, pixels)
    total = len(head) + pixels
    chunk = bytes(range(256)) * 4096  # 1 MiB

    def gen():
        yield head
        left = pixels
        while left:
            n = min(left, len(chunk))
            yield chunk[:n]
            left -= n

    before = srv.vmhwm_kb()
    t0 = time.time()
    r = srv.request("POST", "/v2/studies", body=gen(),
                    headers={"Content-Type": "application/dicom", "Accept": wu.DICOM_JSON, "Content-Length": str(total)})
    secs = time.time() - t0
    after = srv.vmhwm_kb()
    c.eq(r.status, 200, f"a {total / 1e6:.0f} MB single-part upload: 200 ({secs:.1f} s)")
    c.ok(stored(f"{study}.1.1"), "the 150 MB instance is stored")
    grew = (after - before) / 1024 if before and after else None
    c.ok(grew is not None and grew < 30, "streaming: peak RSS (VmHWM) grows by less than 30 MB during a 150 MB upload",
         f"VmHWM {before} kB -> {after} kB ({grew} MB)")
    if grew is not None:
        c.note(f"VmHWM {before} kB -> {after} kB (+{grew:.1f} MB)")


if __name__ == "__main__":
    main()
