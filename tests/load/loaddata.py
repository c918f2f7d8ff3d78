"""Test data of the load tests (tests/load/): three template instances whose UIDs, patient
and date are placeholders of fixed width, so that any number of distinct, valid instances
is made by replacing them in place (same length: the file stays valid). loadgen.c makes its
instances the same way from the same templates; the placeholders below are its too.

  kind 1  CT, 64 x 64, 16 bit, one frame (about 9 KB)       frames, rendered
  kind 2  MR, 128 x 128, 8 bit, 4 frames (about 65 KB)      frames 1..4, rendered
  kind 3  OT, 1024 x 512, 16 bit, one frame (about 1 MiB)   a large retrieve

An instance is numbered (study, series, sop), each below 10**8; its values:
  StudyInstanceUID   1.2.826.0.1.3680043.9.7777.71.1SSSSSSSS
  SeriesInstanceUID  1.2.826.0.1.3680043.9.7777.72.1EEEEEEEE
  SOPInstanceUID     1.2.826.0.1.3680043.9.7777.73.KNNNNNNNN   (K: the kind)
  PatientID          LPIDPPPPPPPP   PatientName LOAD^PPPPPPPPPP (P: study % 50)
  StudyDate          202001DD       (DD: 1 + study % 28)
"""
import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import testutil as tu  # noqa: E402

ROOT = "1.2.826.0.1.3680043.9.7777"
P_STUDY = f"{ROOT}.71.100000000"
P_SERIES = f"{ROOT}.72.100000000"
P_SOP = f"{ROOT}.73.{{k}}00000000"
P_PID = "LPID00000000"
P_NAME = "LOAD^P0000000000"
P_DATE = "20200101"
PATIENTS = 50


def study_uid(n):
    return f"{ROOT}.71.1{n:08d}"


def series_uid(n):
    return f"{ROOT}.72.1{n:08d}"


def sop_uid(kind, n):
    return f"{ROOT}.73.{kind}{n:08d}"


def parse_sop(uid):
    """(kind, number) of a load SOP Instance UID, or None."""
    m = re.fullmatch(re.escape(ROOT) + r"\.73\.([123])(\d{8})", uid)
    return (int(m.group(1)), int(m.group(2))) if m else None


def patient(study):
    return study % PATIENTS


def _pixels(n, seed):
    return bytes((i * 7 + seed * 13 + (i >> 9)) % 251 for i in range(n))


def template_dataset(kind):
    common = dict(PatientName=P_NAME, PatientID=P_PID, StudyDate=P_DATE, StudyTime="101010",
                  StudyDescription="Load test", SeriesNumber="1", InstanceNumber="1", SamplesPerPixel=1,
                  PhotometricInterpretation="MONOCHROME2", PixelRepresentation=0)
    if kind == 1:
        return tu.make_dataset(P_STUDY, P_SERIES, P_SOP.format(k=1), sop_class="1.2.840.10008.5.1.4.1.1.2",
                               Modality="CT", Rows=64, Columns=64, BitsAllocated=16, BitsStored=12, HighBit=11,
                               PixelData=_pixels(64 * 64 * 2, 1), **common)
    if kind == 2:
        return tu.make_dataset(P_STUDY, P_SERIES, P_SOP.format(k=2), sop_class="1.2.840.10008.5.1.4.1.1.4.1",
                               Modality="MR", Rows=128, Columns=128, NumberOfFrames=4, BitsAllocated=8,
                               BitsStored=8, HighBit=7, PixelData=_pixels(128 * 128 * 4, 2), **common)
    return tu.make_dataset(P_STUDY, P_SERIES, P_SOP.format(k=3), sop_class="1.2.840.10008.5.1.4.1.1.7",
                           Modality="OT", Rows=1024, Columns=512, BitsAllocated=16, BitsStored=16, HighBit=15,
                           PixelData=_pixels(1024 * 512 * 2, 3), **common)


def write_templates(directory):
    """Writes DIRECTORY/kind{1,2,3}.dcm; returns {kind: bytes}. Every placeholder occurs
    where it should and nowhere else (checked: a replacement must hit only its value)."""
    os.makedirs(directory, exist_ok=True)
    out = {}
    for kind in (1, 2, 3):
        path = tu.write_dicom(os.path.join(directory, f"kind{kind}.dcm"), template_dataset(kind))
        with open(path, "rb") as f:
            data = f.read()
        for p, want in ((P_STUDY, 1), (P_SERIES, 1), (P_SOP.format(k=kind), 2), (P_PID, 1), (P_NAME, 1),
                        (P_DATE, 1)):
            n = data.count(p.encode())
            if n != want:
                raise RuntimeError(f"template {kind}: placeholder {p} occurs {n} times, not {want}")
        out[kind] = data
    return out


def instance_bytes(templates, kind, study, series, sop):
    """The instance (STUDY, SERIES, SOP) of KIND: its template with the values in place."""
    p = patient(study)
    data = templates[kind]
    for old, new in ((P_STUDY, study_uid(study)), (P_SERIES, series_uid(series)),
                     (P_SOP.format(k=kind), sop_uid(kind, sop)), (P_PID, f"LPID{p:08d}"),
                     (P_NAME, f"LOAD^P{p:010d}"), (P_DATE, f"202001{1 + study % 28:02d}")):
        assert len(old) == len(new)
        data = data.replace(old.encode(), new.encode())
    return data
