#!/usr/bin/python3
"""gen_synth.py — N small synthetic instances (no pixel data, ~1 KB) for the scale tests.

    gen_synth.py OUTDIR N [--jobs 2]

Writes OUTDIR/files/dNNNN/NNNNNNN.dcm in directories of 10,000, plus OUTDIR/queries.json
(the same five study-level queries at every N, each matching 1-3 studies) and
OUTDIR/manifest.json.

Speed: one template file is built with pydicom with fixed-width placeholder values; every
instance is a copy of its bytes with the placeholders overwritten in place (UIDs with
fixed-width numeric components, names padded with spaces). Roughly 10-20 us per file, in
--jobs processes: 1M files in ~10-20 s on two cores, most of it file creation.

Shape: 10 instances per study (2 series of 5), 2-3 studies per patient, StudyDates spread
over 2010-2019. Five "probe" studies sit at fixed fractions of the set (so they are spread
through ingest order) and belong to two planted patients; they are the only studies dated
2021-2022 and the only names that begin with DOE or contain ZEPHYRINE, so each query
matches the same 1-3 studies at 100k and at 1M and latency growth is not result growth.
"""
import argparse
import datetime
import io
import json
import multiprocessing
import os
import sys

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

ROOT = "1.2.826.0.1.3680043.8.498.77"
PER_DIR = 10000
PER_SERIES = 5
SERIES_PER_STUDY = 2
PER_STUDY = PER_SERIES * SERIES_PER_STUDY
W_NAME = 32

SYLL = ["KAL", "MOR", "TEN", "BRA", "VIN", "SAR", "LUN", "HOL", "GRE", "PAS", "TOR", "FEL",
        "MAR", "NOV", "RIK", "SEL", "BAN", "COR", "WEL", "ART", "HAN", "JUS", "LEM", "QUI"]
GIVEN = ["ANNA", "PETER", "MARIA", "JOHN", "LINDA", "JAMES", "SOFIA", "LUCAS", "EMMA", "NOAH",
         "MIA", "LIAM", "OLIVIA", "ELIAS", "CLARA", "FELIX", "NORA", "OSCAR", "IDA", "HUGO",
         "ALMA", "THEO", "ELLEN", "ADAM", "KAREN", "PAUL", "RUTH", "MAX", "IRIS", "LEO"]
# Probe studies: (fraction of the set, name, PatientID, AccessionNumber, StudyDate)
PROBES = [
    (0.13, "DOE^JANE", "PRB0000001", "PRBACC0001", "20210211"),
    (0.29, "VANTERPOOL^ZEPHYRINE", "PRB0000002", "PRBACC0004", "20220105"),
    (0.47, "DOE^JANE", "PRB0000001", "PRBACC0002", "20210315"),
    (0.71, "VANTERPOOL^ZEPHYRINE", "PRB0000002", "PRBACC0005", "20220930"),
    (0.83, "DOE^JANE", "PRB0000001", "PRBACC0003", "20210520"),
]
QUERIES = [
    {"name": "PatientID", "params": ["PatientID=PRB0000001"], "expected": 3},
    {"name": "PatientName=DOE*", "params": ["PatientName=DOE*"], "expected": 3},
    {"name": "StudyDate range", "params": ["StudyDate=20220101-20221231"], "expected": 2},
    {"name": "AccessionNumber", "params": ["AccessionNumber=PRBACC0002"], "expected": 1},
    {"name": "fuzzy name word", "params": ["PatientName=zephyrine", "fuzzymatching=true"], "expected": 2},
]

# Placeholders: unique byte strings of the final width.
M_STUDY, M_SERIES, M_SOP = b"1111111111", b"1222222222", b"1333333333"
M_NAME = b"PNMARK" + b"Q" * (W_NAME - 6)
M_PID, M_ACC, M_DATE = b"PIDMARK_ZZ", b"ACCMARK_ZZ", b"18000101"
M_INST, M_SERNO = b"987654", b"8643"


def template():
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = ROOT + ".3." + M_SOP.decode()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = "1.2.826.0.1.3680043.8.498.1"
    ds = Dataset()
    ds.file_meta = meta
    ds.preamble = b"\0" * 128
    ds.is_little_endian = True
    ds.is_implicit_VR = False
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["DERIVED", "SECONDARY", "OTHER"]
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = ROOT + ".3." + M_SOP.decode()
    ds.StudyDate = M_DATE.decode()
    ds.SeriesDate = M_DATE.decode()
    ds.ContentDate = M_DATE.decode()
    ds.StudyTime = "101500"
    ds.SeriesTime = "101500"
    ds.AccessionNumber = M_ACC.decode()
    ds.Modality = "CT"
    ds.Manufacturer = "DICOMFS BENCH"
    ds.InstitutionName = "Synthetic General Hospital"
    ds.ReferringPhysicianName = "REFERRER^SYNTHETIC"
    ds.StudyDescription = "SYNTHETIC STUDY FOR INDEX SCALE TESTS"
    ds.SeriesDescription = "synthetic series, no pixel data"
    ds.OperatorsName = "OPERATOR^SYNTHETIC"
    ds.ManufacturerModelName = "gen_synth.py"
    ds.PatientName = M_NAME.decode()
    ds.PatientID = M_PID.decode()
    ds.IssuerOfPatientID = "SYNTH"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.BodyPartExamined = "CHEST"
    ds.ProtocolName = "SYNTHETIC PROTOCOL"
    ds.StudyInstanceUID = ROOT + ".1." + M_STUDY.decode()
    ds.SeriesInstanceUID = ROOT + ".2." + M_SERIES.decode()
    ds.StudyID = "1"
    ds.SeriesNumber = M_SERNO.decode()
    ds.InstanceNumber = M_INST.decode()
    ds.FrameOfReferenceUID = ROOT + ".4.1"
    ds.PositionReferenceIndicator = ""
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, write_like_original=False)
    data = buf.getvalue()
    offsets = {}
    for key, marker, count in (("study", M_STUDY, 1), ("series", M_SERIES, 1), ("sop", M_SOP, 2),
                               ("name", M_NAME, 1), ("pid", M_PID, 1), ("acc", M_ACC, 1),
                               ("date", M_DATE, 3), ("inst", M_INST, 1), ("serno", M_SERNO, 1)):
        offs, start = [], 0
        while (i := data.find(marker, start)) >= 0:
            offs.append(i)
            start = i + 1
        if len(offs) != count:
            sys.exit("gen_synth: placeholder %r found %d times, want %d" % (marker, len(offs), count))
        offsets[key] = offs
    return data, offsets


def background(s):
    """PatientName, PatientID, AccessionNumber, StudyDate of background study S."""
    p = s * 2 // 5  # 2-3 studies per patient
    h = (p * 2654435761 + 12345) & 0xFFFFFFFF
    fam = SYLL[h % 24] + SYLL[(h >> 5) % 24] + SYLL[(h >> 10) % 24]
    name = "%s^%s" % (fam, GIVEN[(h >> 15) % len(GIVEN)])
    d = DATES[((s * 40503 + 7) * 2246822519 & 0xFFFFFFFF) % len(DATES)]
    return name, "S%09d" % p, "A%09d" % s, d


D0 = datetime.date(2010, 1, 1)
DATES = [(D0 + datetime.timedelta(days=k)).strftime("%Y%m%d").encode() for k in range(3652)]


def probes_for(n):
    studies = n // PER_STUDY
    return {int(studies * f): (name, pid, acc, date) for f, name, pid, acc, date in PROBES}


def write_batch(args):
    outdir, n, b = args
    data, off = template()
    probes = probes_for(n)
    d = os.path.join(outdir, "files", "d%04d" % b)
    os.makedirs(d, exist_ok=True)
    buf = bytearray(data)
    o_study, o_series, o_sop = off["study"][0], off["series"][0], off["sop"]
    o_name, o_pid, o_acc, o_date = off["name"][0], off["pid"][0], off["acc"][0], off["date"]
    o_inst, o_serno = off["inst"][0], off["serno"][0]
    last_study = -1
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
    for i in range(b * PER_DIR, min(n, (b + 1) * PER_DIR)):
        s = i // PER_STUDY
        if s != last_study:
            last_study = s
            if s in probes:
                name, pid, acc, date = probes[s]
                date = date.encode()
            else:
                name, pid, acc, date = background(s)
            buf[o_study:o_study + 10] = b"%d" % (1000000000 + s)
            buf[o_name:o_name + W_NAME] = name.ljust(W_NAME).encode()
            buf[o_pid:o_pid + 10] = pid.encode()
            buf[o_acc:o_acc + 10] = acc.encode()
            for o in o_date:
                buf[o:o + 8] = date
        buf[o_series:o_series + 10] = b"%d" % (1000000000 + i // PER_SERIES)
        sop = b"%d" % (1000000000 + i)
        for o in o_sop:
            buf[o:o + 10] = sop
        buf[o_inst:o_inst + 6] = b"%06d" % (i % PER_SERIES + 1)
        buf[o_serno:o_serno + 4] = b"%04d" % ((i // PER_SERIES) % SERIES_PER_STUDY + 1)
        fd = os.open(os.path.join(d, "%07d.dcm" % i), flags, 0o644)
        os.write(fd, buf)
        os.close(fd)
    return min(n, (b + 1) * PER_DIR) - b * PER_DIR


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("outdir")
    ap.add_argument("n", type=int)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    args = ap.parse_args()
    if args.n < PER_STUDY * 20:
        sys.exit("gen_synth: N must be at least %d" % (PER_STUDY * 20))
    if args.n >= 9000000000:
        sys.exit("gen_synth: N too large for the fixed-width UIDs")
    data, _ = template()
    batches = (args.n + PER_DIR - 1) // PER_DIR
    work = [(args.outdir, args.n, b) for b in range(batches)]
    if args.jobs > 1 and batches > 1:
        with multiprocessing.Pool(args.jobs) as pool:
            done = sum(pool.imap_unordered(write_batch, work))
    else:
        done = sum(map(write_batch, work))
    with open(os.path.join(args.outdir, "queries.json"), "w") as f:
        json.dump(QUERIES, f, indent=1)
    manifest = {"n": args.n, "files": done, "bytes": done * len(data), "file_size": len(data),
                "studies": args.n // PER_STUDY, "dirs": batches}
    with open(os.path.join(args.outdir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    print(json.dumps(manifest))


if __name__ == "__main__":
    main()
