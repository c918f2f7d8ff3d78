#!/usr/bin/python3
"""gen_dataset.py — the benchmark's realistic dataset, deterministic (fixed seed).

    gen_dataset.py OUTDIR [--studies 125] [--series 4] [--small 4] [--large 1] [--seed 1]

Writes, into OUTDIR:
  small/<study>/<series>/<n>.dcm   CT/MR-like 64x64 16-bit single-frame instances (~10 KB)
  large/<study>/<series>/<n>.dcm   the same series with 512x512 16-bit instances (~525 KB)
  queries.json                     study-level QIDO queries a user would type, each with the
                                   number of studies the generator expects it to match (1-4)
  manifest.json                    parameters, file counts and bytes per set

Defaults: 125 studies x 4 series, 4 small + 1 large instance per series = 2,000 small and
500 large instances. Both sets share the studies and series (a series has 4 small images and
1 large one), so each set ingested alone gives an archive with all 125 studies.

Speed: one pydicom header is built per instance (only attributes vary) and written to bytes;
the pixel data element is pre-encoded once per variant and appended (Pixel Data is the last
element), so pydicom never touches the pixel bytes. ~2-4 s for the default size.
Explicit VR Little Endian, with a proper file meta group.
"""
import argparse
import datetime
import io
import json
import os
import random
import struct
import sys

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
IMPL_UID = "1.2.826.0.1.3680043.8.498.1"  # pydicom's root; fine for test data

# Family and given names; a few with accents (stored as UTF-8, ISO_IR 192), a few with
# spaces or apostrophes. No family name here starts with DOE: the DOE* query targets the
# planted patients below only.
FAMILY = """SMITH JOHNSON WILLIAMS BROWN JONES GARCÍA MILLER DAVIS RODRÍGUEZ MARTÍNEZ
HERNÁNDEZ LÓPEZ GONZÁLEZ WILSON ANDERSON THOMAS TAYLOR MOORE JACKSON MARTIN LEE PÉREZ
THOMPSON WHITE HARRIS SÁNCHEZ CLARK RAMÍREZ LEWIS ROBINSON WALKER YOUNG ALLEN KING WRIGHT
SCOTT TORRES NGUYEN HILL FLORES GREEN ADAMS NELSON BAKER HALL RIVERA CAMPBELL MITCHELL
CARTER ROBERTS MÜLLER SCHMIDT SCHNEIDER FISCHER WEBER MEYER WAGNER BECKER SCHULZ HOFFMANN
DUBOIS LEFÈVRE MOREAU GIRARD FRANÇOIS BONNET ROSSI RUSSO FERRARI ESPOSITO BIANCHI ROMANO
KOWALSKI NOWAK WIŚNIEWSKI LÖFGREN ÅKESSON NIELSEN JØRGENSEN ØSTERGAARD JANSSEN DE_VRIES
VAN_DER_BERG O'BRIEN MCCARTHY NÚÑEZ SILVA SANTOS OLIVEIRA PEREIRA COSTA ŠIMEK DVOŘÁK
NAGY KOVÁCS PAPADOPOULOS YILMAZ KAYA TANAKA SUZUKI SATO KIM PARK CHEN WANG ZHANG""".split()
GIVEN_F = """MARY PATRICIA JENNIFER LINDA ELIZABETH BARBARA SUSAN JESSICA SARAH KAREN NANCY
LISA MARGARET SANDRA ASHLEY EMILY DONNA MICHELLE CAROL AMANDA MELISSA DEBORAH STEPHANIE
RENÉE CHLOÉ ZOË INÈS MARÍA LUCÍA SOFÍA JOSÉPHINE HÉLÈNE BJÖRK INGRID ASTRID SIGRÍÐUR
ANNA GRETA HANNA KATARZYNA AGNIESZKA GIULIA FRANCESCA YUKI HANA MEI""".split()
GIVEN_M = """JAMES ROBERT MICHAEL WILLIAM DAVID RICHARD JOSEPH THOMAS CHARLES CHRISTOPHER DANIEL
MATTHEW ANTHONY MARK DONALD STEVEN PAUL ANDREW KENNETH KEVIN BRIAN GEORGE TIMOTHY JOSÉ
FRANÇOIS JÉRÔME BJÖRN SØREN JÜRGEN JÖRG ÁLVARO RAMÓN SEBASTIÁN LUKÁŠ TOMÁŠ PIOTR KRZYSZTOF
MARCO LUCA GIOVANNI KENJI HIROSHI WEI JUN MIN OLAF LARS ERIK""".split()
PLANTED = [("DOE^JOHN", "M", 2), ("DOERING^MARTA^ELISE", "F", 1)]  # DOE* -> 3 studies

CT_SERIES = ["Topogram 0.6 T20f", "Thorax 1.0 Br40 axial", "Thorax 3.0 Br60 coronal",
             "Thorax 3.0 Br40 sagittal"]
MR_SERIES = ["localizer", "t1_mprage_sag", "t2_tse_tra", "flair_tra"]
CT_STUDIES = ["CT THORAX W/O CONTRAST", "CT ABDOMEN PELVIS W CONTRAST", "CT HEAD W/O",
              "CT CHEST LOW DOSE"]
MR_STUDIES = ["MRI BRAIN W/WO CONTRAST", "MR KNEE RIGHT", "MRI LUMBAR SPINE", "MR PROSTATE"]
INSTITUTIONS = ["Hôpital Saint-Louis", "St. Mary's Hospital", "Klinikum Süd",
                "General Hospital", "Universitätsklinikum"]


def name_value(s):
    return s.replace("_", " ")


def pixel_element(rows, cols, variant):
    """Pre-encoded (7FE0,0010) OW element: a simple phantom, 12 bits stored."""
    rng = np.random.default_rng(1000 + variant)
    y, x = np.mgrid[0:rows, 0:cols]
    cy, cx = rows / 2, cols / 2
    r = np.hypot((y - cy) / (rows * 0.42), (x - cx) / (cols * 0.36))
    img = np.where(r < 1.0, 1024 + 40, 0).astype(np.float64)  # soft tissue in air
    r2 = np.hypot((y - cy * (0.8 + 0.1 * variant)) / (rows * 0.1), (x - cx) / (cols * 0.1))
    img = np.where(r2 < 1.0, 1024 + 700, img)  # a bone-ish blob
    img += rng.normal(0, 12, size=img.shape)
    data = np.clip(img, 0, 4095).astype("<u2").tobytes()
    return struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, len(data)) + data


def make_header(st, se, inst_no, sop_uid, rows, cols):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = st["sop_class"]
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = IMPL_UID
    meta.ImplementationVersionName = "DICOMFS_BENCH"

    ds = Dataset()
    ds.file_meta = meta
    ds.preamble = b"\0" * 128
    ds.is_little_endian = True
    ds.is_implicit_VR = False
    if st["utf8"]:
        ds.SpecificCharacterSet = "ISO_IR 192"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = st["sop_class"]
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = st["date"]
    ds.SeriesDate = st["date"]
    ds.ContentDate = st["date"]
    ds.StudyTime = st["time"]
    ds.SeriesTime = st["time"]
    ds.ContentTime = st["time"]
    ds.AccessionNumber = st["accession"]
    ds.Modality = st["modality"]
    ds.Manufacturer = "SIEMENS" if st["modality"] == "CT" else "GE MEDICAL SYSTEMS"
    ds.InstitutionName = st["institution"]
    ds.ReferringPhysicianName = st["referrer"]
    ds.StudyDescription = st["description"]
    ds.SeriesDescription = se["description"]
    ds.ManufacturerModelName = "SOMATOM Force" if st["modality"] == "CT" else "SIGNA Premier"
    ds.PatientName = st["patient_name"]
    ds.PatientID = st["patient_id"]
    ds.IssuerOfPatientID = "HOSP"
    ds.PatientBirthDate = st["birth"]
    ds.PatientSex = st["sex"]
    ds.PatientAge = st["age"]
    ds.BodyPartExamined = st["body_part"]
    ds.SliceThickness = "1.0"
    if st["modality"] == "CT":
        ds.KVP = "120"
    ds.StudyInstanceUID = st["uid"]
    ds.SeriesInstanceUID = se["uid"]
    ds.StudyID = st["study_id"]
    ds.SeriesNumber = se["number"]
    ds.InstanceNumber = inst_no
    ds.ImagePositionPatient = [-160.0, -160.0, -50.0 - 1.0 * inst_no]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.FrameOfReferenceUID = st["for_uid"]
    ds.SliceLocation = -50.0 - 1.0 * inst_no
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = cols
    ds.PixelSpacing = [320.0 / rows, 320.0 / cols]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, write_like_original=False)
    return buf.getvalue()


def plan(args):
    rng = random.Random(args.seed)
    uid = lambda *parts: generate_uid(entropy_srcs=["dicomfs-bench", str(args.seed)] + [str(p) for p in parts])
    d0 = datetime.date(2014, 1, 1)
    span = (datetime.date(2023, 12, 31) - d0).days

    # Patients: the planted ones first, then random ones with 1-4 studies each.
    patients = []
    for name, sex, k in PLANTED:
        patients.append({"name": name, "sex": sex, "k": k})
    total = sum(p["k"] for p in patients)
    used = set(p["name"] for p in patients)
    while total < args.studies:
        k = min(rng.choices([1, 2, 3, 4], weights=[45, 30, 15, 10])[0], args.studies - total)
        sex = rng.choice("MF")
        while True:
            fam = rng.choice(FAMILY)
            giv = rng.choice(GIVEN_M if sex == "M" else GIVEN_F)
            name = name_value(fam) + "^" + giv
            if rng.random() < 0.2:  # a middle name now and then
                name += "^" + rng.choice(GIVEN_M if sex == "M" else GIVEN_F)
            if name not in used:
                break
        used.add(name)
        patients.append({"name": name, "sex": sex, "k": k})
        total += k
    pid_pool = rng.sample(range(1000000, 9999999), len(patients))
    for p, pid in zip(patients, pid_pool):
        p["id"] = "MRN%07d" % pid
        p["birth"] = datetime.date(1930, 1, 1) + datetime.timedelta(days=rng.randrange(80 * 365))

    studies = []
    acc_pool = rng.sample(range(10000000, 99999999), args.studies)
    for p in patients:
        dates = sorted(d0 + datetime.timedelta(days=rng.randrange(span)) for _ in range(p["k"]))
        for d in dates:
            s = len(studies)
            modality = "CT" if rng.random() < 0.7 else "MR"
            age = max(0, (d - p["birth"]).days // 365)
            studies.append({
                "index": s,
                "uid": uid("study", s),
                "for_uid": uid("for", s),
                "patient_name": p["name"],
                "utf8": any(ord(c) > 127 for c in p["name"]),
                "patient_id": p["id"],
                "birth": p["birth"].strftime("%Y%m%d"),
                "sex": p["sex"],
                "age": "%03dY" % age,
                "date": d.strftime("%Y%m%d"),
                "time": "%02d%02d%02d" % (rng.randrange(7, 20), rng.randrange(60), rng.randrange(60)),
                "accession": "A%d" % acc_pool[s],
                "modality": modality,
                "sop_class": CT_IMAGE if modality == "CT" else MR_IMAGE,
                "description": rng.choice(CT_STUDIES if modality == "CT" else MR_STUDIES),
                "body_part": "CHEST" if modality == "CT" else "BRAIN",
                "institution": rng.choice(INSTITUTIONS),
                "referrer": rng.choice(FAMILY).replace("_", " ") + "^" + rng.choice(GIVEN_M + GIVEN_F),
                "study_id": str(rng.randrange(1, 99999)),
                "series": [{"uid": uid("series", s, j), "number": j + 1,
                            "description": (CT_SERIES if modality == "CT" else MR_SERIES)[j % 4]}
                           for j in range(args.series)],
            })
    # The referrer can contain accents too.
    for st in studies:
        st["utf8"] = st["utf8"] or any(ord(c) > 127 for c in st["referrer"] + st["institution"])
    return studies, patients


def pick_queries(studies, patients, seed):
    rng = random.Random(seed * 7919)
    q = []
    # PatientID of a (not planted) patient with 3 studies, else the largest.
    cands = [p for p in patients[len(PLANTED):] if p["k"] == 3] or sorted(patients, key=lambda p: -p["k"])
    p = cands[len(cands) // 2]
    q.append({"name": "PatientID", "params": ["PatientID=" + p["id"]], "expected": p["k"]})
    q.append({"name": "PatientName=DOE*", "params": ["PatientName=DOE*"],
              "expected": sum(1 for s in studies if s["patient_name"].startswith("DOE"))})
    # A StudyDate range of ~6 weeks holding 2-4 studies, as near the middle as possible.
    dates = sorted(datetime.datetime.strptime(s["date"], "%Y%m%d").date() for s in studies)
    best = None
    for i, d in enumerate(dates):
        lo, hi = d, d + datetime.timedelta(days=42)
        n = sum(1 for x in dates if lo <= x <= hi)
        if 2 <= n <= 4:
            score = abs(i - len(dates) // 2)
            if best is None or score < best[0]:
                best = (score, lo, hi, n)
    if best is None:  # tiny datasets: a single day
        best = (0, dates[0], dates[0], sum(1 for x in dates if x == dates[0]))
    _, lo, hi, n = best
    q.append({"name": "StudyDate range", "params": ["StudyDate=%s-%s" % (lo.strftime("%Y%m%d"), hi.strftime("%Y%m%d"))],
              "expected": n})
    st = studies[rng.randrange(len(studies))]
    q.append({"name": "AccessionNumber", "params": ["AccessionNumber=" + st["accession"]], "expected": 1})
    # Fuzzy: a name word (ASCII, >= 5 letters) that begins words of 1-4 studies only.
    # Expected count assumes the reference's rule: prefix match on any word of the name,
    # case-insensitive.
    words = {}
    for s in studies:
        for w in set(s["patient_name"].replace("^", " ").split()):
            words.setdefault(w, set())
    for w in words:
        for s in studies:
            if any(x.startswith(w) for x in s["patient_name"].replace("^", " ").split()):
                words[w].add(s["index"])
    ok = sorted(w for w, ss in words.items()
                if 1 <= len(ss) <= 4 and len(w) >= 5 and w.isascii() and w.isalpha() and not w.startswith("DOE"))
    w = ok[len(ok) // 2] if ok else "DOE"
    q.append({"name": "fuzzy name word", "params": ["PatientName=" + w.lower(), "fuzzymatching=true"],
              "expected": len(words.get(w, ()))})
    return q


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("outdir")
    ap.add_argument("--studies", type=int, default=125)
    ap.add_argument("--series", type=int, default=4, help="series per study")
    ap.add_argument("--small", type=int, default=4, help="64x64 instances per series")
    ap.add_argument("--large", type=int, default=1, help="512x512 instances per series")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    studies, patients = plan(args)
    pix = {64: [pixel_element(64, 64, v) for v in range(4)],
           512: [pixel_element(512, 512, v) for v in range(4)]}
    counts = {"small": [0, 0], "large": [0, 0]}
    for st in studies:
        for se in st["series"]:
            for setname, size, per in (("small", 64, args.small), ("large", 512, args.large)):
                d = os.path.join(args.outdir, setname, "%03d" % st["index"], "%d" % se["number"])
                os.makedirs(d, exist_ok=True)
                for k in range(per):
                    inst_no = k + 1 if setname == "small" else args.small + k + 1
                    sop = generate_uid(entropy_srcs=[se["uid"], setname, str(k)])
                    data = make_header(st, se, inst_no, sop, size, size) + pix[size][(st["index"] + k) % 4]
                    with open(os.path.join(d, "%04d.dcm" % inst_no), "wb") as f:
                        f.write(data)
                    counts[setname][0] += 1
                    counts[setname][1] += len(data)

    queries = pick_queries(studies, patients, args.seed)
    with open(os.path.join(args.outdir, "queries.json"), "w") as f:
        json.dump(queries, f, indent=1, ensure_ascii=False)
    manifest = {"params": vars(args), "studies": len(studies), "patients": len(patients),
                "sets": {k: {"files": v[0], "bytes": v[1]} for k, v in counts.items()}}
    with open(os.path.join(args.outdir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    print(json.dumps(manifest))


if __name__ == "__main__":
    main()
