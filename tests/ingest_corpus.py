"""End-to-end: ingest every file of pydicom's test corpus (recursively, dicomdirtests
included) with `dicomfs ingest --json` and check each file's result against an explicit
expectation table, then `dicomfs fsck`.

The table was built by inspecting the files with pydicom and dcmdump:
  - not DICOM (text, json, gzip files; no_meta.dcm whose bytes start no data set) -> failed 272
  - DCMTK cannot parse the data set (truncated, or wrong VR encoding)           -> failed 272
  - a bare data set without preamble and file meta is read as the reference's
    fo-dicom (and DCMTK) read it (rtstruct.dcm, ExplVR_*NoMeta.dcm), then validated
  - Media Storage Directory SOP class (DICOMDIR, whatever the name)             -> skipped
  - a required UID or PatientID missing / a UID invalid                          -> failed 43264
  - same (study, series, SOP) triple as a file earlier in sorted order         -> failed 45070
    (the same bytes as that file                                                 -> stored, already stored)
  - Implicit VR Little Endian                                                    -> stored, warning 45063
  - an attribute whose content breaks its VR (badVR.dcm: IS "1A")                -> stored, warning 1
Files are passed explicitly, sorted by their path relative to the corpus, with --jobs 1,
so "earlier" is well defined.
"""
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import testutil as tu  # noqa: E402

import pydicom  # noqa: E402

STORED = ("stored", None)
IMPLICIT = ("stored", 45063)
WARN = ("stored", 1)
NOTDICOM = ("failed", 272)
INVALID = ("failed", 43264)
DUP = ("failed", 45070)
SKIP = ("skipped", None)
ALREADY = ("stored", "already")  # the same bytes as a file stored before: nothing changes

# file (relative to the corpus) -> (result, failureReason or warningReason)
EXPECTED = {
    '693_J2KI.dcm': STORED,
    'CT_small.dcm': STORED,
    'ExplVR_BigEnd.dcm': INVALID,  # missing PatientID
    'ExplVR_BigEndNoMeta.dcm': INVALID,  # bare data set (no preamble/meta), no PatientID
    'ExplVR_LitEndNoMeta.dcm': INVALID,  # bare data set (no preamble/meta), no PatientID
    'GDCMJ2K_TextGBR.dcm': INVALID,  # missing PatientID
    'J2K_pixelrep_mismatch.dcm': STORED,
    'JPEG-lossy.dcm': STORED,
    'JPEG2000-embedded-sequence-delimiter.dcm': STORED,
    'JPEG2000.dcm': DUP,  # duplicate of JPEG2000-embedded-sequence-delimiter.dcm
    'JPGExtended.dcm': DUP,  # duplicate of JPEG-lossy.dcm
    'MR_small.dcm': STORED,
    'MR_small_RLE.dcm': DUP,  # duplicate of MR_small.dcm
    'MR_small_bigendian.dcm': DUP,  # duplicate of MR_small.dcm
    'MR_small_expb.dcm': DUP,  # duplicate of MR_small.dcm
    'MR_small_implicit.dcm': DUP,  # duplicate of MR_small.dcm
    'MR_small_jp2klossless.dcm': DUP,  # duplicate of MR_small.dcm
    'MR_small_jpeg_ls_lossless.dcm': DUP,  # duplicate of MR_small.dcm
    'MR_small_padded.dcm': DUP,  # duplicate of MR_small.dcm
    'MR_truncated.dcm': NOTDICOM,  # unparsable (DCMTK: premature end / bad element)
    'README.txt': NOTDICOM,  # no DICM preamble (not a DICOM Part 10 file)
    'SC_jpeg_no_color_transform.dcm': STORED,
    'SC_jpeg_no_color_transform_2.dcm': STORED,
    'SC_rgb_dcmtk_+eb+cr.dcm': STORED,
    'SC_rgb_dcmtk_+eb+cy+n1.dcm': STORED,
    'SC_rgb_dcmtk_+eb+cy+n2.dcm': STORED,
    'SC_rgb_dcmtk_+eb+cy+np.dcm': STORED,
    'SC_rgb_dcmtk_+eb+cy+s2.dcm': STORED,
    'SC_rgb_dcmtk_+eb+cy+s4.dcm': STORED,
    'SC_rgb_gdcm_KY.dcm': STORED,
    'SC_rgb_jpeg.dcm': NOTDICOM,  # unparsable (DCMTK: premature end / bad element)
    'SC_rgb_jpeg_app14_dcmd.dcm': ALREADY,  # byte for byte SC_jpeg_no_color_transform_2.dcm
    'SC_rgb_jpeg_dcmd.dcm': IMPLICIT,  # implicit VR
    'SC_rgb_jpeg_dcmtk.dcm': STORED,
    'SC_rgb_jpeg_gdcm.dcm': STORED,
    'SC_rgb_jpeg_lossy_gdcm.dcm': STORED,
    'SC_rgb_rle.dcm': DUP,  # duplicate of SC_rgb_jpeg_gdcm.dcm
    'SC_rgb_rle_16bit.dcm': DUP,  # duplicate of SC_rgb_jpeg_gdcm.dcm
    'SC_rgb_rle_16bit_2frame.dcm': DUP,  # duplicate of SC_rgb_jpeg_gdcm.dcm
    'SC_rgb_rle_2frame.dcm': DUP,  # duplicate of SC_rgb_jpeg_gdcm.dcm
    'SC_rgb_rle_32bit.dcm': DUP,  # duplicate of SC_rgb_jpeg_gdcm.dcm
    'SC_rgb_rle_32bit_2frame.dcm': DUP,  # duplicate of SC_rgb_jpeg_gdcm.dcm
    'SC_rgb_small_odd.dcm': STORED,
    'SC_rgb_small_odd_jpeg.dcm': STORED,
    'SC_ybr_full_422_uncompressed.dcm': DUP,  # duplicate of SC_rgb_dcmtk_+eb+cy+n2.dcm
    'UN_sequence.dcm': INVALID,  # missing SOPClassUID,StudyInstanceUID,SeriesInstanceUID,SOPInstanceUID,PatientID
    'badVR.dcm': WARN,  # invalid [('NumberOfFrames', "bad IS '1A'")]
    'dicomdirtests/77654033/CR1/6154': STORED,
    'dicomdirtests/77654033/CR2/6247': STORED,
    'dicomdirtests/77654033/CR3/6278': STORED,
    'dicomdirtests/77654033/CT2/17106': STORED,
    'dicomdirtests/77654033/CT2/17136': STORED,
    'dicomdirtests/77654033/CT2/17166': STORED,
    'dicomdirtests/77654033/CT2/17196': STORED,
    'dicomdirtests/98892001/CT2N/6293': STORED,
    'dicomdirtests/98892001/CT2N/6924': STORED,
    'dicomdirtests/98892001/CT5N/2062': STORED,
    'dicomdirtests/98892001/CT5N/2392': STORED,
    'dicomdirtests/98892001/CT5N/2693': STORED,
    'dicomdirtests/98892001/CT5N/3023': STORED,
    'dicomdirtests/98892001/CT5N/3353': STORED,
    'dicomdirtests/98892003/MR1/15820': STORED,
    'dicomdirtests/98892003/MR1/4919': STORED,
    'dicomdirtests/98892003/MR1/5641': STORED,
    'dicomdirtests/98892003/MR2/15970': STORED,
    'dicomdirtests/98892003/MR2/4950': STORED,
    'dicomdirtests/98892003/MR2/4981': STORED,
    'dicomdirtests/98892003/MR2/5011': STORED,
    'dicomdirtests/98892003/MR2/6273': STORED,
    'dicomdirtests/98892003/MR2/6605': STORED,
    'dicomdirtests/98892003/MR2/6935': STORED,
    'dicomdirtests/98892003/MR700/4467': STORED,
    'dicomdirtests/98892003/MR700/4528': STORED,
    'dicomdirtests/98892003/MR700/4558': STORED,
    'dicomdirtests/98892003/MR700/4588': STORED,
    'dicomdirtests/98892003/MR700/4618': STORED,
    'dicomdirtests/98892003/MR700/4648': STORED,
    'dicomdirtests/98892003/MR700/4678': STORED,
    'dicomdirtests/DICOMDIR': SKIP,  # DICOMDIR
    'dicomdirtests/DICOMDIR-bigEnd': SKIP,  # DICOMDIR
    'dicomdirtests/DICOMDIR-empty.dcm': SKIP,  # DICOMDIR
    'dicomdirtests/DICOMDIR-implicit': SKIP,  # DICOMDIR
    'dicomdirtests/DICOMDIR-nooffset': SKIP,  # DICOMDIR
    'dicomdirtests/DICOMDIR-nopatient': SKIP,  # DICOMDIR
    'dicomdirtests/DICOMDIR-reordered': SKIP,  # DICOMDIR
    'dicomdirtests/README.txt': NOTDICOM,  # no DICM preamble (not a DICOM Part 10 file)
    'dicomdirtests/TINY_ALPHA/DICOMDIR': SKIP,  # DICOMDIR
    'dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM000000': STORED,
    'dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM000001': STORED,
    'dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM000002': STORED,
    'dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM000003': STORED,
    'dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM000004': STORED,
    'dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM000005': STORED,
    'dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM000006': STORED,
    'dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM000007': STORED,
    'dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM000008': STORED,
    'dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM000009': STORED,
    'dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000A': STORED,
    'dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000B': STORED,
    'dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000C': STORED,
    'dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000D': STORED,
    'dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000E': STORED,
    'dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000F': STORED,
    'dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000G': STORED,
    'dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000H': STORED,
    'dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000I': STORED,
    'dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000J': STORED,
    'dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000K': STORED,
    'dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000L': STORED,
    'dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000M': STORED,
    'dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000N': STORED,
    'dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000O': STORED,
    'dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000P': STORED,
    'dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000Q': STORED,
    'dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000R': STORED,
    'dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000S': STORED,
    'dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000T': STORED,
    'dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000U': STORED,
    'dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000V': STORED,
    'dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000W': STORED,
    'dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000X': STORED,
    'dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000Y': STORED,
    'dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00000Z': STORED,
    'dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM000010': STORED,
    'dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM000011': STORED,
    'dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM000012': STORED,
    'dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM000013': STORED,
    'dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM000014': STORED,
    'dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM000015': STORED,
    'dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM000016': STORED,
    'dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM000017': STORED,
    'dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM000018': STORED,
    'dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM000019': STORED,
    'dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00001A': STORED,
    'dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00001B': STORED,
    'dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00001C': STORED,
    'dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM00001D': STORED,
    'dicomdirtests/TINY_ALPHA/README': NOTDICOM,  # no DICM preamble (not a DICOM Part 10 file)
    'empty_charset_LEI.dcm': INVALID,  # missing SOPClassUID,StudyInstanceUID,SeriesInstanceUID,SOPInstanceUID,PatientID
    'image_dfl.dcm': STORED,
    'liver_1frame.dcm': STORED,
    'liver_expb_1frame.dcm': DUP,  # duplicate of liver_1frame.dcm
    'meta_missing_tsyntax.dcm': INVALID,  # missing SOPClassUID,StudyInstanceUID,SeriesInstanceUID,SOPInstanceUID,PatientID
    'nested_priv_SQ.dcm': INVALID,  # missing SOPClassUID,StudyInstanceUID,SeriesInstanceUID,SOPInstanceUID,PatientID
    'no_meta.dcm': NOTDICOM,  # no preamble, and the bytes do not start a data set (DCMTK fails)
    'no_meta_group_length.dcm': INVALID,  # missing SOPClassUID,StudyInstanceUID,SeriesInstanceUID,SOPInstanceUID,PatientID
    'priv_SQ.dcm': INVALID,  # missing SOPClassUID,StudyInstanceUID,SeriesInstanceUID,SOPInstanceUID,PatientID
    'reportsi.dcm': STORED,
    'reportsi_with_empty_number_tags.dcm': DUP,  # duplicate of reportsi.dcm
    'rtdose.dcm': DUP,  # duplicate of badVR.dcm
    'rtdose_1frame.dcm': DUP,  # duplicate of badVR.dcm
    'rtdose_expb.dcm': DUP,  # duplicate of badVR.dcm
    'rtdose_expb_1frame.dcm': DUP,  # duplicate of badVR.dcm
    'rtdose_rle.dcm': DUP,  # duplicate of badVR.dcm
    'rtdose_rle_1frame.dcm': DUP,  # duplicate of badVR.dcm
    'rtplan.dcm': IMPLICIT,  # implicit VR
    'rtplan.dump': NOTDICOM,  # no DICM preamble (not a DICOM Part 10 file)
    'rtplan_truncated.dcm': NOTDICOM,  # unparsable (DCMTK: premature end / bad element)
    'rtstruct.dcm': IMPLICIT,  # bare implicit VR data set (no preamble/meta), readable
    'rtstruct.dump': NOTDICOM,  # no DICM preamble (not a DICOM Part 10 file)
    'test-SR.dcm': STORED,
    'test1.json': NOTDICOM,  # no DICM preamble (not a DICOM Part 10 file)
    'test_PN.json': NOTDICOM,  # no DICM preamble (not a DICOM Part 10 file)
    'waveform_ecg.dcm': STORED,
    'zipMR.gz': NOTDICOM,  # no DICM preamble (not a DICOM Part 10 file)
}

MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"


def norm(p):
    return os.path.realpath(p)


def uids_of(path):
    """(study, series, sop, sop class) as pydicom reads them, or None."""
    try:
        ds = pydicom.dcmread(path, force=True)
        return tuple(str(ds.get(k, "")) for k in
                     ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"))
    except Exception:
        return None


def reason_of(r):
    if r.get("result") == "failed":
        return r.get("failureReason")
    if r.get("alreadyStored"):
        return "already"
    return r.get("warningReason")


def describe(r):
    return (f"result={r.get('result')} failureReason={r.get('failureReason')} "
            f"warningReason={r.get('warningReason')} message={r.get('message')!r}")


def main():
    tu.require_binary()
    c = tu.Checker("ingest_corpus")
    scratch = tu.scratch("ingest_corpus")
    archive = os.path.join(scratch, "archive")

    rels = tu.corpus_files()
    c.eq(len(rels), len(EXPECTED), f"corpus has {len(EXPECTED)} files (pydicom {pydicom.__version__})")
    c.eq(sorted(set(rels) - set(EXPECTED)), [], "every corpus file has an expectation")
    c.eq(sorted(set(EXPECTED) - set(rels)), [], "every expectation names a corpus file")
    rels = [r for r in rels if r in EXPECTED]

    # Sanity of the table: duplicates are exactly the repeated UID triples, in sorted order.
    seen = {}
    table_ok = True
    for rel in rels:
        exp = EXPECTED[rel]
        if exp[0] == "stored" or exp == DUP:
            u = uids_of(os.path.join(tu.CORPUS, rel))
            trip = u[:3] if u else None
            is_dup = trip in seen
            if is_dup != (exp in (DUP, ALREADY)):
                table_ok = False
                c.ok(False, f"table: {rel} duplicate={is_dup} by UIDs but expected {exp}")
            seen.setdefault(trip, rel)
    c.ok(table_ok, "table: the 45070 and already-stored entries are exactly the repeated (study, series, SOP) triples")
    same = [rel for rel in rels if EXPECTED[rel] == ALREADY and
            open(os.path.join(tu.CORPUS, rel), "rb").read() !=
            open(os.path.join(tu.CORPUS, seen[uids_of(os.path.join(tu.CORPUS, rel))[:3]]), "rb").read()]
    c.eq(same, [], "table: the already-stored entries have the bytes of the first file with their UIDs")

    # ---- Ingest everything, one file after the other -------------------------------
    paths = [os.path.join(tu.CORPUS, r) for r in rels]
    proc, results, bad = tu.ingest(archive, paths, "--jobs", "1", timeout=300)
    print(f"#    ingest of {len(paths)} files exited {proc.returncode}; last stderr line: "
          f"{(proc.stderr.strip().splitlines() or [''])[-1]}")
    c.eq(proc.returncode, 1, "ingest exits 1 (some files failed)")
    c.eq(bad, [], "every stdout line of ingest --json is a JSON object")

    by_path = {}
    for r in results:
        by_path.setdefault(norm(r.get("path", "")), []).append(r)
    c.eq(len(results), len(paths), "one result line per file")

    counts = {}
    actual_of = {}
    for rel, p in zip(rels, paths):
        exp = EXPECTED[rel]
        got = by_path.get(norm(p), [])
        if len(got) != 1:
            c.ok(False, f"{rel}: exactly one result line", f"got {len(got)}: {tu.short(got)}")
            continue
        r = got[0]
        actual = (r.get("result"), reason_of(r))
        actual_of[rel] = actual
        counts[actual] = counts.get(actual, 0) + 1
        c.ok(actual == exp, f"{rel}: {exp[0]}" + (f" ({exp[1]})" if exp[1] else ""),
             f"expected {exp}, actual {describe(r)}")
        if r.get("result") == "stored":
            if r.get("failureReason") is not None:
                c.ok(False, f"{rel}: stored line has no failureReason", describe(r))
            u = uids_of(p)
            keys = ("studyInstanceUid", "seriesInstanceUid", "sopInstanceUid", "sopClassUid")
            c.eq(tuple(r.get(k) for k in keys), u, f"{rel}: stored line names the file's UIDs")
        elif r.get("result") == "failed":
            if not r.get("message"):
                c.ok(False, f"{rel}: failed line has a message", describe(r))
            if actual[1] in (45070, 43264) and exp == actual:
                # the UIDs are known for a parsable file
                u = uids_of(p)
                if exp[1] == 45070 and r.get("sopInstanceUid") not in (None, u[2]):
                    c.ok(False, f"{rel}: 45070 line names the file's SOP instance", describe(r))

    # ---- Summary --------------------------------------------------------------------
    n_stored = sum(1 for a in actual_of.values() if a[0] == "stored")
    n_skipped = sum(1 for a in actual_of.values() if a[0] == "skipped")
    n_failed = sum(1 for a in actual_of.values() if a[0] == "failed")
    c.eq(tu.summary_line(proc.stderr), (n_stored, n_skipped, n_failed),
         "last stderr line is 'ingest: N stored, N skipped, N failed' with the right counts")
    print("#    summary of actual results:")
    names = {STORED: "stored", IMPLICIT: "stored with warning 45063 (implicit VR)",
             WARN: "stored with warning 1 (invalid attributes)", NOTDICOM: "failed 272 (not DICOM / unparsable)",
             INVALID: "failed 43264 (validation)", DUP: "failed 45070 (already stored)",
             SKIP: "skipped (DICOMDIR)", ALREADY: "stored before with the same bytes (already stored)"}
    for k, v in sorted(counts.items(), key=lambda kv: -kv[1]):
        print(f"#      {v:4d} {names.get(k, k)}")

    # ---- Every stored instance is retrievable, and only those --------------------------
    stored_uids = set()
    for rel in rels:
        if actual_of.get(rel, ("",))[0] == "stored":
            u = uids_of(os.path.join(tu.CORPUS, rel))
            stored_uids.add(u[:3])
    missing = []
    for study, series, sop in sorted(stored_uids):
        rc, data, p = tu.metadata(archive, study, series, sop)
        if rc != 0 or not isinstance(data, list) or len(data) != 1 or \
                tu.jget(data[0], "SOPInstanceUID") != sop:
            missing.append((sop, rc, p.stderr.strip()[:200]))
    c.eq(missing, [], f"metadata of each of the {len(stored_uids)} stored instances (exit 0, one object, its SOP UID)")
    rc, data, err = tu.find(archive, "limit=200", level="instance")
    got = sorted((tu.jget(o, "StudyInstanceUID"), tu.jget(o, "SeriesInstanceUID"), tu.jget(o, "SOPInstanceUID"))
                 for o in (data or []))
    c.eq(got, sorted(stored_uids), "find --level instance lists exactly the stored instances, once each")
    rc, data, err = tu.find(archive, "limit=200", level="study")
    c.eq(sorted(tu.jget(o, "StudyInstanceUID") for o in (data or [])),
         sorted({u[0] for u in stored_uids}), "find --level study lists exactly the stored studies")

    # Failed files left nothing behind: the unparsable MR_truncated shares MR_small's UIDs,
    # which must be there once, as MR_small.dcm's bytes.
    p = tu.fsck(archive)
    c.eq(p.returncode, 0, "fsck exits 0 after the corpus ingest")
    print("#    " + (p.stdout.strip().splitlines() or ["(no fsck output)"])[-1])
    m = re.search(r"fsck: (\d+) instances, (\d+) objects, (\d+) missing, (\d+) orphans, (\d+) index errors",
                  p.stdout)
    c.ok(m is not None, "fsck prints its summary line", p.stdout[-300:])
    if m:
        c.eq(int(m.group(1)), len(stored_uids), "fsck counts every stored instance")
        c.eq(int(m.group(2)), len(stored_uids), "fsck finds one object per stored instance")

    # ---- Ingesting the same files again: already stored, which is no failure ----------
    again = [os.path.join(tu.CORPUS, r) for r in ("CT_small.dcm", "rtplan.dcm", "badVR.dcm")]
    proc2, res2, _ = tu.ingest(archive, again, "--jobs", "1")
    c.eq(sorted((os.path.basename(r.get("path", "")), r.get("result"), r.get("alreadyStored"), r.get("failureReason"))
                for r in res2),
         sorted((os.path.basename(a), "stored", True, None) for a in again),
         "re-ingesting stored files: each is already stored (the same bytes), not a failure")
    c.eq(proc2.returncode, 0, "re-ingest of files already stored exits 0")
    c.ok("ingest: 3 stored (3 already stored), 0 skipped, 0 failed" in proc2.stderr,
         "and its summary says they were already stored", proc2.stderr[-300:])
    # the same UIDs with other bytes (MR_small_RLE.dcm is MR_small.dcm recompressed) still fail
    proc2b, res2b, _ = tu.ingest(archive, [os.path.join(tu.CORPUS, "MR_small_RLE.dcm")])
    c.eq([(r.get("result"), r.get("failureReason")) for r in res2b], [("failed", 45070)],
         "a file with the UIDs of a stored instance but other bytes fails with 45070")
    c.eq(proc2b.returncode, 1, "and ingest exits 1")

    # ---- The whole corpus as one folder (recursion, DICOMDIR by content) ------------
    archive2 = os.path.join(scratch, "archive-folder")
    proc3, res3, bad3 = tu.ingest(archive2, [tu.CORPUS], timeout=300)
    c.eq(bad3, [], "folder ingest: every stdout line is JSON")
    res3_by = {}
    for r in res3:
        res3_by.setdefault(os.path.relpath(norm(r.get("path", "")), norm(tu.CORPUS)), []).append(r)
    c.eq(sorted(res3_by), sorted(rels), "folder ingest: one result for every file found recursively")
    groups = {}
    mism = []
    for rel in rels:
        got = res3_by.get(rel)
        if not got:
            continue
        r = got[0]
        actual = (r.get("result"), reason_of(r))
        exp = EXPECTED[rel]
        if exp[0] == "stored" or exp == DUP:
            # whichever copy came first is stored; parallel jobs may also report 45071
            u = uids_of(os.path.join(tu.CORPUS, rel))
            groups.setdefault(u[:3], []).append((rel, actual))
        elif actual != exp:
            mism.append((rel, exp, actual))
    c.eq(mism, [], "folder ingest: non-duplicate files get the same results as file by file")
    bad_groups = []
    for trip, members in groups.items():
        stored = [m for m in members if m[1][0] == "stored" and m[1] != ALREADY]
        others = [m for m in members if m[1][0] != "stored"]
        if len(stored) != 1 or any(m[1] not in (DUP, ALREADY, ("failed", 45071)) for m in others):
            bad_groups.append(members)
    c.eq(bad_groups, [], "folder ingest: each UID triple stored exactly once, its copies 45070/45071")
    p = tu.fsck(archive2)
    c.eq(p.returncode, 0, "fsck exits 0 after the folder ingest")

    # ---- OS junk is skipped by name ---------------------------------------------------
    junk = os.path.join(scratch, "junk")
    os.makedirs(junk)
    src = open(os.path.join(tu.CORPUS, "CT_small.dcm"), "rb").read()
    for name in (".DS_Store", "Thumbs.db", "desktop.ini", "._CT_small.dcm"):
        with open(os.path.join(junk, name), "wb") as f:
            f.write(src)
    with open(os.path.join(junk, "real.dcm"), "wb") as f:
        f.write(src)
    archive3 = os.path.join(scratch, "archive-junk")
    proc4, res4, _ = tu.ingest(archive3, [junk])
    stored4 = [os.path.basename(r.get("path", "")) for r in res4 if r.get("result") == "stored"]
    failed4 = [os.path.basename(r.get("path", "")) for r in res4 if r.get("result") == "failed"]
    c.eq((stored4, failed4), (["real.dcm"], []),
         "OS junk names (.DS_Store, Thumbs.db, desktop.ini, ._*) are not ingested")
    c.eq(proc4.returncode, 0, "ingest of a folder with only junk besides one good file exits 0")

    # ---- v1 rules: PatientID must have a value --------------------------------------
    archive4 = os.path.join(scratch, "archive-v1")
    v1files = [os.path.join(tu.CORPUS, r) for r in ("MR_small.dcm", "test-SR.dcm", "reportsi.dcm")]
    proc5, res5, _ = tu.ingest(archive4, v1files, "--v1", "--jobs", "1")
    got5 = {os.path.basename(r.get("path", "")): (r.get("result"), reason_of(r)) for r in res5}
    c.eq(got5.get("MR_small.dcm"), STORED, "--v1: MR_small.dcm (PatientID 4MR1) stored")
    c.eq(got5.get("test-SR.dcm"), INVALID, "--v1: test-SR.dcm (empty PatientID) failed 43264")
    c.eq(got5.get("reportsi.dcm"), INVALID, "--v1: reportsi.dcm (empty PatientID) failed 43264")

    # ---- --study: every instance must belong to that study ----------------------------
    archive5 = os.path.join(scratch, "archive-study")
    mr = os.path.join(tu.CORPUS, "MR_small.dcm")
    ct = os.path.join(tu.CORPUS, "CT_small.dcm")
    mr_study = uids_of(mr)[0]
    proc6, res6, _ = tu.ingest(archive5, [mr, ct], "--study", mr_study, "--jobs", "1")
    got6 = {os.path.basename(r.get("path", "")): (r.get("result"), reason_of(r)) for r in res6}
    c.eq(got6.get("MR_small.dcm"), STORED, "--study MR's study: MR_small.dcm stored")
    c.eq(got6.get("CT_small.dcm"), INVALID, "--study MR's study: CT_small.dcm failed 43264")
    c.eq(proc6.returncode, 1, "--study mismatch makes ingest exit 1")

    c.finish()


if __name__ == "__main__":
    main()
