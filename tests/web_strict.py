"""HTTP end-to-end: the lenient default against `--strict` (docs/CLI.md, "Lenient and strict").

Real clients send requests the reference service refuses; dicomfs answers them by default
and refuses them exactly as the reference does with `--strict` (or DICOMFS_STRICT=1).
Each row of the table is checked on both servers:
  - STOW without Accept, with Accept application/json, with application/dicom+xml (a
    PS3.19 XML answer naming the stored instance);
  - STOW with unquoted parameter values holding '/' (boundary), a 73-character boundary
    (Orthanc's; both modes), a part typed "application/dicom; transfer-syntax=...", a
    second part without Content-Type;
  - QIDO and metadata without Accept, with application/json, with a malformed entry
    beside a good one; QIDO without matches (200 [] against 204); study and series results
    with their computed counts (PS3.18) against only with includefield;
  - frames with OHIF's unquoted "multipart/related; type=application/octet-stream";
  - a study retrieve that needs transcoding (the reference: only as stored);
  - rendered with two media types and with a browser's <img> Accept list.
A refused request stores nothing.
"""
import os
import sys
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import testutil as tu  # noqa: E402
import webutil as wu  # noqa: E402

ROOT = "1.2.826.0.1.3680043.9.7777.66"
JSON = wu.DICOM_JSON
NATIVE = "{http://dicom.nema.org/PS3.19/models/NativeDICOM}"


def main():
    tu.require_binary()
    c = tu.Checker("web_strict")
    scratch = tu.scratch("web_strict")
    ct = os.path.join(tu.CORPUS, "CT_small.dcm")
    with open(ct, "rb") as f:
        ct_bytes = f.read()
    with wu.Server(scratch, "lenient") as lenient, wu.Server(scratch, "strict", args=["--strict"]) as strict:
        for srv in (lenient, strict):
            r = srv.stow("/v2/studies", ct_bytes, "application/dicom")
            c.eq(r.status, 200, f"{'strict' if srv is strict else 'default'}: CT_small stored")
        run(c, lenient, strict)
        lenient.finish_check(c)
        strict.finish_check(c)
    with wu.Server(scratch, "env", env={"DICOMFS_STRICT": "1"}) as env_strict:
        r = env_strict.get("/v2/studies")
        c.eq(r.status, 406, "DICOMFS_STRICT=1 makes the server strict (QIDO without Accept: 406)")
    c.finish()


class Counter:
    """Fresh instances, each in its own study, so a refusal can be checked to store nothing."""

    def __init__(self):
        self.n = 0

    def instance(self):
        self.n += 1
        st = f"{ROOT}.{self.n}"
        ds = tu.make_dataset(st, f"{st}.1", f"{st}.1.1", Modality="OT", PatientName="Strict^Test")
        return st, f"{st}.1.1", wu.dicom_bytes(ds)


def run(c, lenient, strict):
    new = Counter()

    def stored(srv, st):
        return srv.get(f"/v2/studies?StudyInstanceUID={st}", accept=JSON).status == 200

    def both(what, send, ok_default, strict_status, check=None):
        """SEND(srv) on each server: the default must give OK_DEFAULT, --strict STRICT_STATUS."""
        for srv, want in ((lenient, ok_default), (strict, strict_status)):
            mode = "strict" if srv is strict else "default"
            r, st = send(srv)
            good = r.status == want
            if good and check and srv is lenient:
                good = check(r)
            c.ok(good, f"{mode}: {what}: {want}", wu.describe(r, 200))
            if st is not None:
                c.eq(stored(srv, st), want < 300, f"{mode}: {what}: {'stored' if want < 300 else 'nothing stored'}")

    def stow(accept, content_type=None, body=None):
        def send(srv):
            st, sop, data = new.instance()
            return srv.stow("/v2/studies", body(data) if body else data, content_type or "application/dicom",
                            accept=accept), st
        return send

    # ---- STOW: Accept ----------------------------------------------------------------------------
    both("STOW without Accept", stow(None), 200, 406)
    both("STOW with Accept application/json", stow("application/json"), 200, 406,
         lambda r: "00081199" in (wu.json_body(r) or {}))

    def is_xml_answer(r):
        if r.headers.get("Content-Type") != "application/dicom+xml":
            return False
        try:
            root = ET.fromstring(r.body)
        except ET.ParseError:
            return False
        ref = root.find(f"{NATIVE}DicomAttribute[@tag='00081199']")
        sops = [v.text for v in root.iter(f"{NATIVE}Value")]
        return root.tag == f"{NATIVE}NativeDicomModel" and ref is not None and any(
            s and s.startswith(ROOT) for s in sops)
    both("STOW with Accept application/dicom+xml (dcm4che's stowrs)", stow("application/dicom+xml"), 200, 406,
         is_xml_answer)
    both("STOW with Accept 'application/dicom+xml;q=0.9, application/dicom+json;q=0.1'",
         stow("application/dicom+xml;q=0.9, application/dicom+json;q=0.1"), 200, 200, is_xml_answer)

    # ---- STOW: Content-Type and parts ----------------------------------------------------------------
    def mp(boundary, header=None, part_types=("application/dicom",)):
        def body(data):
            return wu.multipart([(t, data) for t in part_types], boundary)
        return stow(JSON, header or f'multipart/related; type="application/dicom"; boundary={boundary}', body)

    b73 = "o" * 73
    both("STOW with a 73-character boundary (Orthanc)", mp(b73), 200, 200)
    both("STOW with an unquoted boundary holding '/' and '='",
         mp("a/b=c", 'multipart/related; type=application/dicom; boundary=a/b=c'), 200, 415)
    both("STOW with a part typed 'application/dicom; transfer-syntax=1.2.840.10008.1.2.1'",
         mp("ts", part_types=("application/dicom; transfer-syntax=1.2.840.10008.1.2.1",)), 200, 415)

    def second_part_untyped(srv):
        st, _, first = new.instance()
        _, _, second = new.instance()
        b = "untyped"
        body = (f"--{b}\r\nContent-Type: application/dicom\r\n\r\n".encode() + first +
                f"\r\n--{b}\r\n\r\n".encode() + second + f"\r\n--{b}--\r\n".encode())
        return srv.stow("/v2/studies", body, f'multipart/related; type="application/dicom"; boundary={b}'), st
    both("STOW whose second part has no Content-Type", second_part_untyped, 200, 415)

    def no_root_type(srv):
        st, _, data = new.instance()
        b = "noroot"
        body = f"--{b}\r\n\r\n".encode() + data + f"\r\n--{b}--\r\n".encode()
        return srv.stow("/v2/studies", body, f"multipart/related; boundary={b}"), st
    both("STOW without a type parameter and an untyped part", no_root_type, 200, 415)

    # ---- QIDO and metadata: Accept ---------------------------------------------------------------------
    study = "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"
    series = "1.3.6.1.4.1.5962.1.3.1.1.20040119072730.12322"
    sop = "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322"
    inst = f"/v2/studies/{study}/series/{series}/instances/{sop}"

    def get(path, accept):
        return lambda srv: (srv.get(path, accept=accept), None)

    is_json_list = (lambda r: isinstance(wu.json_body(r), list))
    for accept in (None, "application/json", "text/html;q=x, application/dicom+json"):
        both(f"QIDO with Accept {accept!r}", get(f"/v2/studies?StudyInstanceUID={study}", accept), 200, 406, is_json_list)
        both(f"metadata with Accept {accept!r}", get(f"{inst}/metadata", accept), 200, 406, is_json_list)

    # ---- computed study/series attributes: OHIF's study list asks for StudyDescription and
    # Modality only, and shows NumberOfStudyRelatedInstances (PS3.18 returns it by default) ----
    def counts(r):
        body = wu.json_body(r) or []
        return len(body) == 1 and wu.first_value(body[0], "00201208") == 1 and \
            wu.first_value(body[0], "00201206") == 1 and wu.first_value(body[0], "00080061") == "CT"
    ohif_list = f"/v2/studies?StudyInstanceUID={study}&limit=101&offset=0&fuzzymatching=false&includefield=00081030%2C00080060"
    both("OHIF's study list query carries the study's counts and modalities", get(ohif_list, JSON), 200, 200, counts)
    r = strict.get(ohif_list, accept=JSON)
    c.ok(r.status == 200 and not ({"00201208", "00201206", "00080061"} & set((wu.json_body(r) or [{}])[0])),
         "strict: no computed attributes unless includefield names them", wu.describe(r, 300))
    r = lenient.get(f"/v2/studies/{study}/series", accept=JSON)
    c.ok(r.status == 200 and wu.first_value((wu.json_body(r) or [{}])[0], "00201209") == 1,
         "default: series results carry NumberOfSeriesRelatedInstances", wu.describe(r, 300))

    # ---- QIDO without matches -------------------------------------------------------------------------
    both("QIDO without matches (200 [] as CP-2473; the reference: 204)", get("/v2/studies?PatientName=Nobody", JSON),
         200, 204, lambda r: r.body == b"[]")

    # ---- frames: OHIF's unquoted type -----------------------------------------------------------------
    ohif = "multipart/related; type=application/octet-stream; transfer-syntax=*"
    both("frames with OHIF's unquoted 'type=application/octet-stream'", get(f"{inst}/frames/1", ohif), 200, 406,
         lambda r: r.headers.get("Content-Type", "").startswith("multipart/related"))
    both("frames with the same type quoted", get(f"{inst}/frames/1", ohif.replace("application/octet-stream",
                                                                                   '"application/octet-stream"')),
         200, 200)

    # ---- study retrieve in a syntax other than the stored one -------------------------------------------
    def implicit_study(srv):
        st, _, _ = new.instance()
        for k in range(2):
            ds = tu.make_dataset(st, f"{st}.2", f"{st}.2.{k + 1}", Modality="OT")
            r = srv.stow("/v2/studies", wu.dicom_bytes(ds, implicit=True), "application/dicom")
            c.ok(r.status in (200, 202), "an implicit-VR instance stored", wu.describe(r))
        return srv.get(f"/v2/studies/{st}", accept='multipart/related; type="application/dicom"'), None
    both("a study of 2 implicit-VR instances asked in Explicit VR LE (application/dicom's default)", implicit_study,
         200, 406, lambda r: r.headers.get("Content-Type", "").startswith("multipart/related"))

    # ---- rendered: Accept lists ----------------------------------------------------------------------
    both("rendered with 'image/jpeg, image/png'", get(f"{inst}/rendered", "image/jpeg, image/png"), 200, 406,
         lambda r: r.body[:2] == b"\xff\xd8")
    browser = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8"
    both("rendered with a browser's <img> Accept", get(f"{inst}/rendered", browser), 200, 406,
         lambda r: r.headers.get("Content-Type") in ("image/jpeg", "image/png"))
    both("rendered with Accept image/gif", get(f"{inst}/rendered", "image/gif"), 406, 406)


if __name__ == "__main__":
    main()
