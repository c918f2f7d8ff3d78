"""HTTP end-to-end: WADO-RS (retrieve, metadata, frames, rendered) of `dicomfs serve`.

Per azure-dicom-api.md section 3:
  - round trip: every file of pydicom's test corpus (dicomdirtests included) that STOW
    accepts comes back byte-identical from GET instance with
    Accept 'application/dicom; transfer-syntax=*', with its transfer syntax in Content-Type;
  - study and series retrieve are multipart/related (boundary parameter, no type parameter
    in the outer Content-Type; each part application/dicom; transfer-syntax=...; parts
    byte-identical to the stored files); Accept */* gives multipart as stored; a single
    part is only for the instance route;
  - the default application/dicom asks for Explicit VR LE: JPEG baseline is transcoded and
    pydicom reads the result; so are the instances of a study or series; an
    unknown transfer syntax -> 406;
  - metadata at three levels: JSON array equal to `dicomfs metadata`, ETag, If-None-Match
    -> 304 without a body, gzip;
  - frames: single frame octet-stream equals pydicom's pixel bytes for native files,
    multipart for several, 0 / 'a' -> 400, past the end -> 404;
  - rendered: JPEG by default, PNG, quality, quality=0 -> 400, Accept lists negotiated,
    no pixel data -> 404.
"""
import gzip
import io
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import testutil as tu  # noqa: E402
import webutil as wu  # noqa: E402

import pydicom  # noqa: E402

ROOT = "1.2.826.0.1.3680043.9.7777.63"
JSON = wu.DICOM_JSON
EXPLICIT = "1.2.840.10008.1.2.1"
IMPLICIT = "1.2.840.10008.1.2"
ORIGINAL = "application/dicom; transfer-syntax=*"
MP_ORIGINAL = 'multipart/related; type="application/dicom"; transfer-syntax=*'


def main():
    tu.require_binary()
    c = tu.Checker("web_wado")
    scratch = tu.scratch("web_wado")
    with wu.Server(scratch) as srv:
        run(c, srv)
        srv.finish_check(c)
    c.finish()


def inst_path(st, se, sop):
    return f"/v2/studies/{st}/series/{se}/instances/{sop}"


def stow_one(srv, data, version="v2"):
    """STOW one file; (status, (study, series, sop) or None)."""
    r = srv.stow(f"/{version}/studies", data, "application/dicom")
    body = wu.json_body(r) or {}
    refs = wu.seq_items(body, "00081199")
    if r.status in (200, 202) and len(refs) == 1:
        url = wu.first_value(refs[0], "00081190") or ""
        parts = url.split("/")
        # .../studies/{st}/series/{se}/instances/{sop}
        try:
            return r.status, (parts[parts.index("studies") + 1], parts[parts.index("series") + 1],
                              parts[parts.index("instances") + 1])
        except (ValueError, IndexError):
            return r.status, None
    return r.status, None


def run(c, srv):
    # ---- round trip of the corpus ------------------------------------------------------------
    stored = {}  # rel path -> (uids, bytes)
    for rel in tu.corpus_files():
        with open(os.path.join(tu.CORPUS, rel), "rb") as f:
            data = f.read()
        status, uids = stow_one(srv, data)
        if uids:
            stored[rel] = (uids, data)
    c.ok(len(stored) >= 60, f"STOW accepts most of the corpus ({len(stored)} files)")
    mismatched = []
    for rel, (uids, data) in sorted(stored.items()):
        r = srv.get(inst_path(*uids), accept=ORIGINAL)
        ct, params = wu.media_type(r.headers.get("Content-Type"))
        try:
            ts = pydicom.dcmread(os.path.join(tu.CORPUS, rel), force=True, stop_before_pixels=True) \
                .file_meta.get("TransferSyntaxUID")
        except Exception:
            ts = None
        ok = r.status == 200 and r.body == data and ct == "application/dicom" and params.get("transfer-syntax") \
            and (ts is None or params.get("transfer-syntax") == str(ts))
        if not ok:
            mismatched.append(f"{rel}: {r.status} {r.headers.get('Content-Type')} {len(r.body)}/{len(data)} bytes"
                              f" (file ts {ts})")
    c.eq(mismatched, [], f"GET instance with '{ORIGINAL}': all {len(stored)} stored corpus files come back "
                         "byte-identical, Content-Type application/dicom; transfer-syntax=<stored>")
    for name in ("CT_small.dcm", "SC_rgb_jpeg_dcmtk.dcm", "MR_small.dcm", "rtplan.dcm"):
        c.ok(name in stored, f"the corpus file {name} is stored (needed below)")

    # ---- study / series retrieve ---------------------------------------------------------------
    g = f"{ROOT}.1"
    files = {}  # sop -> bytes
    for j in range(2):
        se = f"{g}.{j + 1}"
        for k in range(2 - j):
            sop = f"{se}.{k + 1}"
            ds = tu.make_dataset(g, se, sop, Modality="OT", PatientName="Multi^Part", SamplesPerPixel=1,
                                 PhotometricInterpretation="MONOCHROME2", Rows=2, Columns=3, BitsAllocated=8,
                                 BitsStored=8, HighBit=7, PixelRepresentation=0, PixelData=bytes(range(6)))
            data = wu.dicom_bytes(ds)
            files[sop] = data
            c.eq(stow_one(srv, data)[0], 200, f"STOW {sop[len(ROOT):]}: 200")

    def check_multipart(url, accept, expected, what):
        r = srv.get(url, accept=accept)
        ok = c.eq(r.status, 200, f"{what}: 200")
        ctype = r.headers.get("Content-Type") or ""
        mt, params = wu.media_type(ctype)
        c.ok(mt == "multipart/related" and params.get("boundary") and "type" not in params,
             f"{what}: Content-Type multipart/related with a boundary and no type parameter", repr(ctype))
        parts, err = wu.parse_multipart(ctype, r.body)
        c.ok(err is None, f"{what}: the body parses as multipart", err or "")
        parts = parts or []
        types = [wu.media_type(h.get("content-type")) for h, _ in parts]
        c.ok(parts and all(t == "application/dicom" and p.get("transfer-syntax") == EXPLICIT for t, p in types),
             f"{what}: every part is application/dicom; transfer-syntax={EXPLICIT}",
             str([h.get("content-type") for h, _ in parts]))
        c.eq(sorted(len(b) for _, b in parts), sorted(len(b) for b in expected), f"{what}: one part per instance")
        c.ok(sorted(b for _, b in parts) == sorted(expected), f"{what}: parts are byte-identical to the stored files")
        return ok

    check_multipart(f"/v2/studies/{g}", MP_ORIGINAL, list(files.values()), "study retrieve, multipart transfer-syntax=*")
    check_multipart(f"/v2/studies/{g}/series/{g}.1", MP_ORIGINAL, [files[f"{g}.1.1"], files[f"{g}.1.2"]],
                    "series retrieve, multipart transfer-syntax=*")
    check_multipart(f"/v2/studies/{g}", "*/*", list(files.values()), "study retrieve, Accept */* (multipart, as stored)")
    check_multipart(inst_path(g, f"{g}.2", f"{g}.2.1"), MP_ORIGINAL, [files[f"{g}.2.1"]],
                    "instance retrieve, multipart Accept")
    r = srv.get(f"/v2/studies/{g}", accept=ORIGINAL)
    c.eq(r.status, 406, "study retrieve with single-part Accept application/dicom: 406 (multipart only)")
    r = srv.get(f"/v2/studies/{g}/series/{g}.1", accept="text/html")
    c.eq(r.status, 406, "series retrieve with Accept text/html: 406")
    r = srv.get(inst_path(g, f"{g}.1", f"{g}.1.1"), accept="*/*")
    mt, _ = wu.media_type(r.headers.get("Content-Type"))
    c.ok(r.status == 200 and mt == "multipart/related", "instance retrieve with Accept */*: multipart", wu.describe(r, 80))

    # a study of 2 instances stored as Implicit VR, asked for Explicit VR LE
    h = f"{ROOT}.2"
    for k in range(2):
        ds = tu.make_dataset(h, f"{h}.1", f"{h}.1.{k + 1}", Modality="OT")
        stow_one(srv, wu.dicom_bytes(ds, implicit=True))
    # (the reference refuses with 406: tests/web_strict.py checks that with --strict)
    for what, path in (("study", f"/v2/studies/{h}"), ("series", f"/v2/studies/{h}/series/{h}.1")):
        for accept in (f'multipart/related; type="application/dicom"; transfer-syntax={EXPLICIT}',
                       'multipart/related; type="application/dicom"'):
            r = srv.get(path, accept=accept)
            parts, perr = wu.parse_multipart(r.headers.get("Content-Type"), r.body) if r.status == 200 else (None, "")
            explicit = []
            for hdr, body in parts or []:
                try:
                    ds = pydicom.dcmread(io.BytesIO(body))
                    explicit.append(ds.file_meta.TransferSyntaxUID == EXPLICIT and
                                    hdr.get("content-type") == f"application/dicom; transfer-syntax={EXPLICIT}")
                except Exception:
                    explicit.append(False)
            c.ok(len(explicit) == 2 and all(explicit),
                 f"{what} of 2 implicit-VR instances with Accept {accept!r}: both parts transcoded to Explicit VR LE",
                 perr or wu.describe(r))
    r = srv.get(f"/v2/studies/{h}", accept=MP_ORIGINAL)
    c.eq(r.status, 200, "the same study with transfer-syntax=*: 200")

    # ---- transcoding ---------------------------------------------------------------------------------
    if "SC_rgb_jpeg_dcmtk.dcm" in stored:
        (st, se, sop), data = stored["SC_rgb_jpeg_dcmtk.dcm"]
        r = srv.get(inst_path(st, se, sop), accept="application/dicom")
        c.eq(r.status, 200, "JPEG baseline instance with Accept application/dicom (default: Explicit VR LE): 200")
        c.eq(wu.media_type(r.headers.get("Content-Type")), ("application/dicom", {"transfer-syntax": EXPLICIT}),
             "transcoded: Content-Type application/dicom; transfer-syntax=1.2.840.10008.1.2.1")
        try:
            ds = wu.read_dicom(r.body)
            got = (str(ds.file_meta.TransferSyntaxUID), str(ds.SOPInstanceUID), len(ds.PixelData))
        except Exception as e:
            got = repr(e)
        c.eq(got, (EXPLICIT, sop, 100 * 100 * 3),
             "pydicom reads the transcoded file: transfer syntax 1.2.1, same SOPInstanceUID, 100x100x3 native pixels")
        r = srv.get(inst_path(st, se, sop), accept=f"application/dicom; transfer-syntax={EXPLICIT}")
        c.eq(r.status, 200, "JPEG baseline with explicit transfer-syntax=1.2.840.10008.1.2.1: 200")
        r = srv.get(inst_path(st, se, sop), accept="application/dicom; transfer-syntax=1.2.3.4")
        c.ok(r.status == 406 and wu.is_text_error(r), "unknown transfer syntax 1.2.3.4: 406", wu.describe(r))
        r = srv.get(inst_path(st, se, sop), accept="application/dicom; transfer-syntax=1.2.840.10008.1.2.4.50")
        c.eq(r.status, 406, "transfer syntax outside the reference's list (JPEG baseline asked): 406")

    # ---- 404s -------------------------------------------------------------------------------------------
    r = srv.get(inst_path(g, f"{g}.1", f"{g}.1.99"), accept=ORIGINAL)
    c.ok(r.status == 404 and wu.is_text_error(r), "unknown instance: 404", wu.describe(r))
    r = srv.get(f"/v2/studies/{ROOT}.404", accept=MP_ORIGINAL)
    c.eq(r.status, 404, "unknown study: 404")
    r = srv.get(f"/v2/studies/{ROOT}.404/metadata", accept=JSON)
    c.eq(r.status, 404, "metadata of an unknown study: 404")
    r = srv.get(f"/v2/studies/1.2.x", accept=MP_ORIGINAL)
    c.eq(r.status, 400, "retrieve with a bad study UID: 400")

    # ---- metadata -------------------------------------------------------------------------------------
    levels = [("study", f"/v2/studies/{g}/metadata", [g], 3),
              ("series", f"/v2/studies/{g}/series/{g}.1/metadata", [g, f"{g}.1"], 2),
              ("instance", f"/v2/studies/{g}/series/{g}.1/instances/{g}.1.2/metadata", [g, f"{g}.1", f"{g}.1.2"], 1)]
    etags = []
    for level, url, args, n in levels:
        r = srv.get(url, accept=JSON)
        data = wu.json_body(r)
        c.ok(r.status == 200 and isinstance(data, list) and len(data) == n and all(isinstance(o, dict) for o in data),
             f"{level} metadata: 200, a JSON array of {n} objects", wu.describe(r, 100))
        c.eq(wu.media_type(r.headers.get("Content-Type"))[0], JSON, f"{level} metadata: Content-Type application/dicom+json")
        p = tu.run(["metadata", srv.archive] + args)
        c.eq(data, tu.json.loads(p.stdout) if p.returncode == 0 else None, f"{level} metadata equals `dicomfs metadata`")
        etag = r.headers.get("ETag")
        etags.append(etag)
        c.ok(bool(etag), f"{level} metadata: ETag header", str(dict(r.headers)))
        if etag:
            r2 = srv.get(url, accept=JSON, headers={"If-None-Match": etag})
            c.ok(r2.status == 304 and r2.body == b"", f"{level} metadata with If-None-Match: <ETag>: 304 without a body",
                 wu.describe(r2))
            c.ok(r2.headers.get("ETag") is None, f"{level} metadata 304: no ETag header (as the reference)",
                 repr(r2.headers.get("ETag")))
            r3 = srv.get(url, accept=JSON, headers={"If-None-Match": etag + "0"})
            c.eq(r3.status, 200, f"{level} metadata with another If-None-Match: 200")
        rz = srv.get(url, accept=JSON, headers={"Accept-Encoding": "gzip"})
        try:
            unz = gzip.decompress(rz.body) if rz.headers.get("Content-Encoding") == "gzip" else None
        except Exception:
            unz = None
        c.ok(rz.status == 200 and unz == r.body, f"{level} metadata with Accept-Encoding: gzip: gzip body decoding to the same JSON",
             f"status {rz.status} Content-Encoding {rz.headers.get('Content-Encoding')!r}")
        ra = srv.get(url, accept="application/dicom")
        c.eq(ra.status, 406, f"{level} metadata with Accept application/dicom: 406")
        rn = srv.get(url, accept=None)
        c.ok(rn.status == 200 and rn.body == r.body, f"{level} metadata without Accept: 200, the same JSON", wu.describe(rn))
    c.ok(len(set(etags)) == 3 or None in etags, "study, series and instance ETags differ", str(etags))
    # the study ETag changes when an instance is added
    ds = tu.make_dataset(g, f"{g}.1", f"{g}.1.9", Modality="OT")
    stow_one(srv, wu.dicom_bytes(ds))
    r = srv.get(f"/v2/studies/{g}/metadata", accept=JSON, headers={"If-None-Match": etags[0] or "x"})
    c.ok(r.status == 200 and len(wu.json_body(r) or []) == 4 and r.headers.get("ETag") != etags[0],
         "after a new instance, the old study ETag no longer matches (200, 4 objects, new ETag)", wu.describe(r, 80))

    # ---- frames -------------------------------------------------------------------------------------
    m = f"{ROOT}.3"
    frames8 = [bytes((f * 40 + i) % 256 for i in range(15)) for f in range(4)]  # 4 frames of 3 x 5, 8 bit
    ds = tu.make_dataset(m, f"{m}.1", f"{m}.1.1", Modality="OT", SamplesPerPixel=1, PhotometricInterpretation="MONOCHROME2",
                         Rows=3, Columns=5, NumberOfFrames=4, BitsAllocated=8, BitsStored=8, HighBit=7,
                         PixelRepresentation=0, PixelData=b"".join(frames8) + b"\0")
    c.eq(stow_one(srv, wu.dicom_bytes(ds))[0], 200, "STOW an 8-bit 4-frame native instance: 200")
    mf = inst_path(m, f"{m}.1", f"{m}.1.1")
    for k in (1, 3, 4):
        r = srv.get(f"{mf}/frames/{k}", accept="application/octet-stream; transfer-syntax=*")
        c.ok(r.status == 200 and r.body == frames8[k - 1], f"8-bit multi-frame: frame {k} (octet-stream, ts=*) is its pixel bytes",
             wu.describe(r, 60))
    r = srv.get(f"{mf}/frames/2", accept="application/octet-stream")
    c.ok(r.status == 200 and r.body == frames8[1], "frame 2 with Accept application/octet-stream (default Explicit VR LE)",
         wu.describe(r, 60))
    c.eq(wu.media_type(r.headers.get("Content-Type")), ("application/octet-stream", {"transfer-syntax": EXPLICIT}),
         "single frame: Content-Type application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1")
    r = srv.get(f"{mf}/frames/1,4,2", accept='multipart/related; type="application/octet-stream"; transfer-syntax=*')
    parts, err = wu.parse_multipart(r.headers.get("Content-Type"), r.body)
    c.ok(r.status == 200 and err is None and [b for _, b in parts] == [frames8[0], frames8[3], frames8[1]],
         "frames 1,4,2 as multipart: three parts with those frames' bytes, in order", f"{wu.describe(r, 60)} {err}")
    c.ok(parts and all(wu.media_type(h.get("content-type"))[0] == "application/octet-stream" for h, _ in parts),
         "frame parts are application/octet-stream", str([h for h, _ in parts or []]))
    r = srv.get(f"{mf}/frames/1,2", accept="*/*")
    parts, err = wu.parse_multipart(r.headers.get("Content-Type"), r.body)
    c.ok(r.status == 200 and err is None and len(parts) == 2, "frames 1,2 with Accept */*: multipart of 2", wu.describe(r, 60))
    for bad in ("0", "a", "1,0", "1,,2", "-1"):
        r = srv.get(f"{mf}/frames/{bad}", accept="application/octet-stream; transfer-syntax=*")
        c.ok(r.status == 400 and wu.is_text_error(r), f"frame list '{bad}': 400", wu.describe(r))
    r = srv.get(f"{mf}/frames/5", accept="application/octet-stream; transfer-syntax=*")
    c.ok(r.status == 404 and wu.is_text_error(r), "frame 5 of 4: 404", wu.describe(r))
    r = srv.get(f"{mf}/frames/2,9", accept='multipart/related; type="application/octet-stream"; transfer-syntax=*')
    c.eq(r.status, 404, "frames 2,9 of 4: 404")
    r = srv.get(f"{mf}/frames/1", accept="text/html")
    c.eq(r.status, 406, "frame with Accept text/html: 406")

    # rtdose.dcm shares its UIDs with badVR.dcm (stored above): store a copy with new UIDs,
    # still Implicit VR as the original
    ds = pydicom.dcmread(os.path.join(tu.CORPUS, "rtdose.dcm"))
    st, se, sop = f"{ROOT}.4", f"{ROOT}.4.1", f"{ROOT}.4.1.1"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = st, se, sop
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    copy = os.path.join(os.path.dirname(srv.archive), "rtdose_copy.dcm")
    ds.save_as(copy)
    with open(copy, "rb") as f:
        status, uids = stow_one(srv, f.read())
    c.eq((status, uids), (202, (st, se, sop)), "STOW a copy of rtdose.dcm with new UIDs: 202 (implicit VR warning)")
    fsize = ds.Rows * ds.Columns * ds.BitsAllocated // 8 * ds.SamplesPerPixel
    bad = []
    for k in range(1, int(ds.NumberOfFrames) + 1):
        r = srv.get(f"{inst_path(st, se, sop)}/frames/{k}", accept="application/octet-stream; transfer-syntax=*")
        if r.status != 200 or r.body != ds.PixelData[(k - 1) * fsize:k * fsize]:
            bad.append((k, r.status, len(r.body)))
    c.eq(bad, [], f"rtdose.dcm (implicit VR, 32-bit, {ds.NumberOfFrames} frames): every frame equals pydicom's bytes")
    r = srv.get(f"{inst_path(st, se, sop)}/frames/15", accept="application/octet-stream")
    c.ok(r.status == 200 and r.body == ds.PixelData[14 * fsize:15 * fsize],
         "rtdose.dcm frame 15 with the default (Explicit VR LE): the same native bytes", wu.describe(r, 40))
    if "SC_rgb_jpeg_dcmtk.dcm" in stored:
        (st, se, sop), data = stored["SC_rgb_jpeg_dcmtk.dcm"]
        r = srv.get(f"{inst_path(st, se, sop)}/frames/1", accept="application/octet-stream")
        c.ok(r.status == 200 and len(r.body) == 100 * 100 * 3,
             "JPEG baseline frame 1 as octet-stream (Explicit VR LE): decoded, 100x100x3 bytes", wu.describe(r, 40))
        r = srv.get(f"{inst_path(st, se, sop)}/frames/1", accept="application/octet-stream; transfer-syntax=*")
        c.ok(r.status == 200 and r.body[:2] == b"\xff\xd8",
             "JPEG baseline frame 1 with transfer-syntax=*: the JPEG stream as stored", wu.describe(r, 40))

    # ---- rendered ---------------------------------------------------------------------------------------
    if "CT_small.dcm" in stored:
        (st, se, sop), data = stored["CT_small.dcm"]
        base = inst_path(st, se, sop)
        r = srv.get(f"{base}/rendered")
        c.ok(r.status == 200 and r.headers.get("Content-Type") == "image/jpeg" and r.body[:2] == b"\xff\xd8",
             "rendered without Accept: image/jpeg", wu.describe(r, 20))
        r = srv.get(f"{base}/rendered", accept="image/png")
        c.ok(r.status == 200 and r.headers.get("Content-Type") == "image/png" and r.body[:8] == b"\x89PNG\r\n\x1a\n",
             "rendered with Accept image/png: a PNG", wu.describe(r, 20))
        q100 = srv.get(f"{base}/rendered?quality=100", accept="image/jpeg")
        q50 = srv.get(f"{base}/rendered?quality=50", accept="image/jpeg")
        c.ok(q100.status == 200 and q50.status == 200 and len(q50.body) < len(q100.body),
             "rendered quality=50 is smaller than quality=100", f"{len(q50.body)} vs {len(q100.body)} bytes")
        for qv in ("0", "101", "abc"):
            r = srv.get(f"{base}/rendered?quality={qv}", accept="image/jpeg")
            c.ok(r.status == 400 and wu.is_text_error(r), f"rendered quality={qv}: 400", wu.describe(r))
        r = srv.get(f"{base}/rendered", accept="image/jpeg, image/png")
        c.ok(r.status == 200 and r.headers.get("Content-Type") == "image/jpeg", "rendered with two Accept types: JPEG",
             wu.describe(r, 20))
        r = srv.get(f"{base}/rendered", accept="image/avif,image/webp,image/apng,image/svg+xml,image/png;q=0.9,*/*;q=0.8")
        c.ok(r.status == 200 and r.headers.get("Content-Type") == "image/png",
             "rendered with a browser's <img> Accept preferring PNG over */*: PNG", wu.describe(r, 20))
        r = srv.get(f"{base}/rendered", accept="image/gif")
        c.eq(r.status, 406, "rendered with Accept image/gif: 406")
        r = srv.get(f"{base}/frames/1/rendered", accept="image/jpeg")
        c.ok(r.status == 200 and r.body[:2] == b"\xff\xd8", "frames/1/rendered: image/jpeg", wu.describe(r, 20))
        r = srv.get(f"{base}/frames/2/rendered", accept="image/jpeg")
        c.eq(r.status, 404, "frames/2/rendered of a single-frame image: 404")
    r = srv.get(f"{mf}/frames/3/rendered", accept="image/png")
    c.ok(r.status == 200 and r.body[:4] == b"\x89PNG", "frame 3 of the 8-bit multi-frame rendered as PNG", wu.describe(r, 20))
    r = srv.get(inst_path(h, f"{h}.1", f"{h}.1.1") + "/rendered", accept="image/jpeg")
    c.ok(r.status == 404 and wu.is_text_error(r), "rendered of an instance without pixel data: 404", wu.describe(r))
    if "rtplan.dcm" in stored:
        (st, se, sop), data = stored["rtplan.dcm"]
        r = srv.get(inst_path(st, se, sop) + "/rendered", accept="image/jpeg")
        c.eq(r.status, 404, "rendered of rtplan.dcm (no pixel data): 404")


if __name__ == "__main__":
    main()
