#!/usr/bin/python3
"""Writes the request bodies of dicomfs.postman_collection.json into a directory.

    /usr/bin/python3 tests/postman/make_data.py OUT_DIR

The UIDs, patient IDs and the multipart boundary come from dicomfs.postman_environment.json
(next to this script), so the files and the collection's assertions always agree. Files:

  instance.dcm       study 1 / series 1: one CT instance, 2 frames of 8x8 16-bit pixels
  series2.multipart  study 1 / series 2: two MR instances as multipart/related parts
  study2.dcm         study 2: one instance (the StudyInstanceUID-mismatch request posts it)
  study2.multipart   study 2: that instance as the only part, a part without its own
                     Content-Type (it takes the root type="application/dicom")
  badpart.multipart  one part of Content-Type application/octet-stream (415)
  empty.multipart    a multipart body with no parts (204)
  untyped2nd.multipart  study 3: two parts, the second without a Content-Type (415: only
                     the first part may take the root type)
  typeparams.multipart  study 3 (a third instance): one part of Content-Type "application/dicom;
                     transfer-syntax=..." (415: the reference wants exactly application/dicom)

Needs pydicom (Debian: python3-pydicom).
"""
import json
import os
import sys
import warnings

warnings.simplefilter("ignore")

import pydicom  # noqa: E402
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
SC = "1.2.840.10008.5.1.4.1.1.7"


def env():
    with open(os.path.join(HERE, "dicomfs.postman_environment.json"), encoding="utf-8") as f:
        return {v["key"]: v["value"] for v in json.load(f)["values"]}


def dataset(study, series, sop, sop_class, **attrs):
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    for k, v in attrs.items():
        setattr(ds, k, v)
    return ds


def add_pixels(ds, frames, rows=8, cols=8):
    """FRAMES frames of ROWS x COLS 16-bit unsigned monochrome pixels (a ramp per frame)."""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    data = bytearray()
    for f in range(frames):
        for i in range(rows * cols):
            v = (i * 64 + f * 1000) % 4096
            data += v.to_bytes(2, "little")
    ds.PixelData = bytes(data)
    ds["PixelData"].VR = "OW"


def part10(ds):
    """DS as Part 10 bytes (preamble, file meta), Explicit VR Little Endian."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = "1.2.826.0.1.3680043.9.7777.1"
    ds.file_meta = meta
    ds.is_little_endian = True
    ds.is_implicit_VR = False
    ds.preamble = b"\0" * 128
    from io import BytesIO
    out = BytesIO()
    pydicom.dcmwrite(out, ds, write_like_original=False)
    return out.getvalue()


def multipart(boundary, parts, part_type="application/dicom"):
    """A multipart/related body; PART_TYPE None leaves out each part's Content-Type."""
    body = b""
    for p in parts:
        body += b"--" + boundary.encode() + b"\r\n"
        if part_type:
            body += b"Content-Type: " + part_type.encode() + b"\r\n"
        body += b"\r\n" + p + b"\r\n"
    return body + b"--" + boundary.encode() + b"--\r\n"


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: make_data.py OUT_DIR")
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    e = env()
    b = e["boundary"]
    study1 = dict(PatientName=e["patientName"], PatientID=e["patientId"], PatientBirthDate="19800202",
                  StudyDate="20240115", StudyTime="101500", AccessionNumber=e["accessionNumber"],
                  StudyDescription="Postman chest study", ReferringPhysicianName="Smith^Anna", StudyID="PM1")

    inst = dataset(e["studyUid"], e["seriesUid"], e["instanceUid"], CT, Modality="CT", SeriesNumber=1,
                   InstanceNumber=1, SeriesDescription="Axial", ManufacturerModelName="PostmanScanner",
                   **study1)
    add_pixels(inst, 2)

    mr = []
    for n, sop in enumerate((e["instance2aUid"], e["instance2bUid"]), 1):
        ds = dataset(e["studyUid"], e["series2Uid"], sop, MR, Modality="MR", SeriesNumber=2, InstanceNumber=n,
                     SeriesDescription="Sagittal", **study1)
        add_pixels(ds, 1)
        mr.append(part10(ds))

    s2 = dataset(e["study2Uid"], e["study2SeriesUid"], e["study2InstanceUid"], SC, Modality="OT",
                 PatientName=e["patient2Name"], PatientID=e["patient2Id"], StudyDate="20230505",
                 AccessionNumber="ACC-PM-2", StudyDescription="Newman knee study", SeriesNumber=1, InstanceNumber=1)
    add_pixels(s2, 1, rows=4, cols=4)
    s2 = part10(s2)

    s3 = []
    for n, sop in enumerate((e["study3Instance1Uid"], e["study3Instance2Uid"], e["study3Instance3Uid"]), 1):
        ds = dataset(e["study3Uid"], e["study3SeriesUid"], sop, SC, Modality="OT", PatientName="Rejected^Upload",
                     PatientID="PM-4244", StudyDate="20220303", SeriesNumber=1, InstanceNumber=n)
        add_pixels(ds, 1, rows=4, cols=4)
        s3.append(part10(ds))
    second_untyped = multipart(b, s3[:1]).rsplit(b"--" + b.encode() + b"--", 1)[0] + \
        multipart(b, s3[1:2], part_type=None)

    files = {
        "instance.dcm": part10(inst),
        "series2.multipart": multipart(b, mr),
        "study2.dcm": s2,
        "study2.multipart": multipart(b, [s2], part_type=None),
        "badpart.multipart": multipart(b, [s2], part_type="application/octet-stream"),
        "empty.multipart": ("--%s--\r\n" % b).encode(),
        "untyped2nd.multipart": second_untyped,
        "typeparams.multipart": multipart(b, s3[2:], part_type="application/dicom; transfer-syntax=" + ExplicitVRLittleEndian),
    }
    for name, data in files.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
    print("wrote %d files into %s" % (len(files), out))


if __name__ == "__main__":
    main()
