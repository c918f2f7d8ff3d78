#!/usr/bin/env python3
"""Writes raw seed inputs for every fuzz target into OUT/<name>/ (from the pydicom test
files and the requests the test suite sends). run.sh seed minimises them with -merge=1
into tests/fuzz/corpus/<name>/; the committed corpora come from that, plus what long
runs found."""
import base64, hashlib, hmac, json, os, sys

CORPUS = "/usr/lib/python3/dist-packages/pydicom/data/test_files"
out = sys.argv[1]


def put(name, data):
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, hashlib.sha1(data).hexdigest()[:16]), "wb") as f:
        f.write(data)


def dicom(name, limit=6000):
    with open(os.path.join(CORPUS, name), "rb") as f:
        return f.read()[:limit]


small = ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "SC_rgb_rle_2frame.dcm", "JPEG-lossy.dcm",
         "ExplVR_BigEndNoMeta.dcm", "ExplVR_LitEndNoMeta.dcm", "no_meta_group_length.dcm", "meta_missing_tsyntax.dcm",
         "priv_SQ.dcm", "nested_priv_SQ.dcm", "UN_sequence.dcm", "empty_charset_LEI.dcm", "DICOMDIR",
         "rtdose_1frame.dcm", "SC_rgb_small_odd.dcm", "SC_rgb_small_odd_jpeg.dcm", "reportsi.dcm", "test-SR.dcm",
         "MR_small_RLE.dcm", "JPEG2000.dcm", "image_dfl.dcm", "rtplan_truncated.dcm", "badVR.dcm"]

# ingest: whole small files, and the first 6,000 bytes of bigger ones
for n in small:
    if not os.path.exists(os.path.join(CORPUS, n)):
        continue
    put("ingest", dicom(n, 12000 if n in ("CT_small.dcm", "MR_small.dcm") else 6000))

# multipart: seed byte, boundary line, body (parts as STOW clients send them)
part = dicom("rtplan.dcm", 300)
for b, body in [
    ("abc", b"--abc\r\nContent-Type: application/dicom\r\n\r\n" + part + b"\r\n--abc--\r\n"),
    ("DICOMwebBoundary", b"preamble\r\n--DICOMwebBoundary\r\nContent-Type: application/dicom\r\nContent-Length: 4\r\n\r\nDICM"
     b"\r\n--DICOMwebBoundary\r\nContent-Type: application/dicom\r\n\r\nxx\r\n--DICOMwebBoundary--\r\nepilogue"),
    ("x", b"\r\n--x  \t\r\ncontent-type:application/dicom\n\nbody\r\n--x--"),
    ("----=_Part_0_1", b"------=_Part_0_1\r\nContent-Type: application/dicom\r\nX-Extra: a\r\n continued\r\n\r\n\r\n--\r\n------=_Part_0_1--"),
    ("b", b"--b\r\n\r\nno content type\r\n--b\r\nContent-Type: a/b\r\nContent-Type: c/d\r\n\r\n\r\n--b--"),
    ("0123456789" * 7, b"--" + b"0123456789" * 7 + b"\r\nContent-Type: application/dicom\r\n\r\n" + b"\r\n-" * 20 + b"\r\n--" + b"0123456789" * 7 + b"--"),
]:
    put("multipart", b"\x07" + b.encode() + b"\n" + body)

# mediatype: Content-Type and Accept values the tests and real clients send
for v in ['multipart/related; type="application/dicom"; boundary=abc', "application/dicom",
          'multipart/related; type="application/octet-stream"; transfer-syntax=*',
          "multipart/related; type=application/octet-stream; transfer-syntax=1.2.840.10008.1.2.4.50",
          "application/dicom; transfer-syntax=*", "application/dicom+json, application/json;q=0.9, */*;q=0.1",
          'text/html, application/xhtml+xml, application/xml;q=0.9, image/webp, */*;q=0.8',
          'multipart/related; type="application/dicom"; boundary="a\\"b;c,d"', "image/jpeg;q=0.5,image/png;q=1.000",
          "application/json; charset=utf-8", 'a/b; ;; c = "d" ; q=0.001', "*/*"]:
    put("mediatype", "\x03" + v)

# qido: flags byte + query string (tests/web_qido.py, find_qido.py)
for flags, q in [(0, "PatientName=doe*"), (0, "PatientName=Doe^John&fuzzymatching=true"), (1, "Modality=CT&limit=2&offset=1"),
                 (2, "SOPInstanceUID=1.2.826.0.1.3680043.8.498.1.1.1"), (0, "StudyDate=20200101-20211231&includefield=all"),
                 (8, "includefield=ModalitiesInStudy,NumberOfStudyRelatedInstances"), (4, "PatientID=P1&includefield=00081030"),
                 (0x12, "InstanceNumber=1"), (0x11, "SeriesInstanceUID=1.2.826.0.1.3680043.8.498.1.1"),
                 (0, "StudyTime=100000-&AccessionNumber=A*"), (0, "PatientName=m%C3%BCller&fuzzymatching=true"),
                 (0, "ReferringPhysicianName=sm?th*"), (0, "limit=0"), (0, "PatientName=a&PatientName=b"),
                 (0, "00100020=P2&StudyInstanceUID=1.2.826.0.1.3680043.8.498.1,1.2.826.0.1.3680043.8.498.2")]:
    put("qido", bytes([flags]) + q.encode())

# params: flags byte + change-feed query string (tests/web_changefeed.py)
for flags, q in [(1, "offset=0&limit=3"), (1, "offset=2&includeMetadata=false"), (0, "startTime=2020-01-01T00:00:00Z"),
                 (0, "startTime=2020-01-01T00:00:00.123456%2B02:00&endTime=2999-12-31T23:59:59Z&limit=200"),
                 (2, "endTime=2024-02-29T08:00:00 01:00"), (4, "includeMetadata=TRUE"), (8, "OFFSET=1&limit=1"),
                 (0, "startTime=2020-01-01&offset=-1"), (1, "limit=101&limit=1"), (0, "starttime=1999-12-31t23:59-0130")]:
    put("params", bytes([flags]) + q.encode())

# xqt: add-tags bodies (tests/web_xqt.py, store_xqt.c)
for body in [[{"path": "00101010", "level": "study"}], [{"path": "PatientAge", "vr": "AS", "level": "Study"}],
             [{"path": "00091001", "vr": "SS", "privateCreator": "ACME", "level": "instance"}],
             [{"path": "ManufacturerModelName", "level": "series"}, {"path": "00181030", "level": "study"}],
             [{"path": "00280010", "vr": "US", "level": "instance"}], [{"path": "00100010", "level": "study"}],
             [{"path": "00081140", "level": "study"}], [], {"path": "00101010"},
             [{"path": "00101010", "level": "study"}, {"path": "00101010", "level": "series"}],
             [{"path": "00280106", "level": "instance"}], [{"PATH": "00080070", "Level": "SERIES", "VR": "lo"}]]:
    put("xqt", json.dumps(body))
put("xqt", "[{\"path\": \"00101010\", \"level\": \"study\"")

# fspath: paths of the mount (tests/fs_views.py, fs_mount.sh)
for p in ["/", "/inbox/a/b.dcm", "/studies/1.2.826.0.1.3680043.8.498.1/series/1.2.826.0.1.3680043.8.498.1.1/instances/x.dcm",
          "/studies/1.2.826.0.1.3680043.8.498.1/metadata.json", "/changes/latest.json", "/changes/12.json", "/changes/feed.jsonl",
          "/patients", "/patients/Doe, John (P1)", "/patients/Doe, John (P1)/20200101 Chest", "/patients/Doe, John (P1)/20200101 Chest/CT 1",
          "/patients/Doe, John (P1)/20200101 Chest/CT 1/1.dcm", "/patients/Müller, Ängela M (P2)/20210615",
          "/patients/Roe, Jane (P3) ~2", "/search/studies/PatientName=DOE*&StudyDate=20200101-20201231",
          "/search/series/Modality=CT/1.2.826.0.1.3680043.8.498.1.1", "/search/instances/limit=x.error",
          "/extended-query-tags/00101010.json", "/operations/0123.json", "/.DS_Store", "/x/y/z/a/b/c/d/e/f/g",
          "//studies//1.2//series/", "/patients/%2Fodd%25 (x%2Fy)"]:
    put("fspath", p)

# jwt: mode 0 raw headers; 1 (HS256) and 2 (RS256) header\npayload signed by the target
def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=")
claims = {"iss": "https://issuer.test", "aud": "dicom", "exp": 4102444800, "sub": "fuzz", "realm": {"roles": ["reader", "writer"]}}
for mode, hdr, pl in [(1, {"alg": "HS256", "typ": "JWT"}, claims), (2, {"alg": "RS256"}, claims),
                      (1, {"alg": "HS256"}, dict(claims, aud=["x", "api://x"], nbf=0)), (2, {"alg": "RS256", "kid": "nope"}, claims),
                      (1, {"alg": "HS256"}, dict(claims, exp=1)), (1, {"alg": "none"}, claims),
                      (1, {"alg": "HS256", "crit": ["x"]}, claims), (2, {"alg": "ES256", "kid": "ec-1"}, claims),
                      (1, {"alg": "HS256"}, dict(claims, iss="other", realm={"roles": "owner"}))]:
    put("jwt", bytes([mode]) + json.dumps(hdr).encode() + b"\n" + json.dumps(pl).encode())
h = b64(json.dumps({"alg": "HS256"}).encode()) + b"." + b64(json.dumps(claims).encode())
sig = b64(hmac.new(b"fuzz-secret-0123456789abcdef0123456789", h, hashlib.sha256).digest())
for raw in [b"Bearer " + h + b"." + sig, b"bearer  " + h + b"." + sig + b"  ", b"Bearer not.a.token", b"Basic abc",
            b"Bearer a.b", b"Bearer " + h + b".", b"Bearer ...."]:
    put("jwt", b"\x00" + raw)
