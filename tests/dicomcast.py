"""dicomcast end to end: STOW to `dicomfs serve`, `dicomcast --once`, and what a real FHIR R4
server (tests/fhir/server.js: @medplum/fhir-router, pinned) then holds, field by field
against the metadata dicomfs serves (the reference's mapping, azure-dicom-api.md section 8):

  - Patient: identifier (PatientID, --patient-system), name from the PN components (family;
    given = components 2 and 3 split on spaces; prefix; suffix; use usual), gender codes
    M/F/O, birthDate on create only; a later study of the same patient with another name is
    a PUT with If-Match W/"versionId" that changes the name and keeps the birthDate;
  - Endpoint: one, dicom-wado-rs, address = the DICOMweb base URL, referenced by every study;
  - ImagingStudy: identifier urn:dicom:uid | urn:oid:UID, status, subject, meta.source,
    started from date + time + TimezoneOffsetFromUTC (with a zone; without one: UTC; date
    only), modalities, accession number (type ACSN), note, series (number, modality,
    description, started) and instances (number, SOP class) of a multi-series study and of
    the pydicom corpus (whatever dicomfs stores of it);
  - an instance stored and deleted before the sync: its create is skipped, nothing written;
  - a second run from an empty state (a replay of every entry) writes nothing: only reads;
  - deletes: an instance (its series stays), a series (it leaves the study), a whole study
    (the ImagingStudy is deleted; the Patient stays).
"""
import json
import os
import sys
import urllib.parse

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "fhir"))
import testutil as tu  # noqa: E402
import webutil as wu  # noqa: E402
import fhirutil as fu  # noqa: E402

NAME = "dicomcast"
ROOT = "1.2.826.0.1.3680043.9.7777.110"
CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
SYSTEM = "urn:oid:1.2.826.0.1.3680043.9.7777.110.99"
BOUNDARY = "dicomcast-test-boundary"
CORPUS = ["CT_small.dcm", "MR_small.dcm", "rtdose.dcm", "rtplan.dcm", "rtstruct.dcm", "JPEG2000.dcm",
          "SC_rgb_rle.dcm", "liver_1frame.dcm", "image_dfl.dcm", "test-SR.dcm", "reportsi.dcm",
          "waveform_ecg.dcm", "ExplVR_BigEnd.dcm", "693_J2KI.dcm", "JPGExtended.dcm"]


def uid(*parts):
    return ".".join([ROOT] + [str(p) for p in parts])


def stow(c, srv, datasets, what):
    parts = [("application/dicom", wu.dicom_bytes(ds) if not isinstance(ds, bytes) else ds) for ds in datasets]
    body = wu.multipart(parts, BOUNDARY)
    r = srv.stow("/v2/studies", body, f'multipart/related; type="application/dicom"; boundary={BOUNDARY}')
    return c.ok(r.status == 200, f"STOW of {what} is answered 200", wu.describe(r))


def study_metadata(srv, study):
    r = srv.get(f"/v2/studies/{study}/metadata", accept=wu.DICOM_JSON)
    return wu.json_body(r) if r.status == 200 else []


def ds(study, series, sop, sop_class=CT, **kw):
    return tu.make_dataset(study, series, sop, sop_class, **kw)


def make_data():
    a, b, c2 = uid(1), uid(2), uid(3)
    common_a = dict(PatientID="PAT-A", PatientName="Doe^John Paul^Q^Dr^Jr", PatientSex="M", PatientBirthDate="19700102",
                    StudyDate="20240301", StudyTime="101530.123", TimezoneOffsetFromUTC="+0130",
                    AccessionNumber="ACC-1", StudyDescription="Chest CT", StudyID="1")
    study_a = [
        ds(a, uid(1, 1), uid(1, 1, 1), CT, Modality="CT", SeriesNumber="1", SeriesDescription="Axial",
           SeriesDate="20240301", SeriesTime="1016", InstanceNumber="1", **common_a),
        ds(a, uid(1, 1), uid(1, 1, 2), CT, Modality="CT", SeriesNumber="1", SeriesDescription="Axial",
           SeriesDate="20240301", SeriesTime="1016", InstanceNumber="2", **common_a),
        ds(a, uid(1, 2), uid(1, 2, 1), MR, Modality="MR", SeriesNumber="2", SeriesDescription="Scout",
           InstanceNumber="1", **common_a),
    ]
    study_b = [ds(b, uid(2, 1), uid(2, 1, 1), CT, PatientID="PAT-B", PatientName="Roe^Jane", PatientSex="F",
                  StudyDate="20230515", StudyTime="0930", Modality="CT", SeriesNumber="7", InstanceNumber="3")]
    # The same patient as A, later, with another name: an update with If-Match.
    study_c = [ds(c2, uid(3, 1), uid(3, 1, 1), MR, PatientID="PAT-A", PatientName="Doe^Johnny", PatientSex="O",
                  PatientBirthDate="19991231", StudyDate="20220101", Modality="MR", SeriesNumber="1",
                  InstanceNumber="1")]
    return a, b, c2, study_a, study_b, study_c


def check_patient(c, fhir, md_a, md_c):
    pats = fhir.search("Patient", identifier=f"{SYSTEM}|PAT-A")
    if not c.eq(len(pats), 1, "one Patient for PatientID PAT-A (two studies)"):
        return None
    p = pats[0]
    exp = fu.expected_patient(md_c, SYSTEM)
    exp["birthDate"] = fu.expected_patient(md_a, SYSTEM)["birthDate"]
    got = {k: v for k, v in p.items() if k not in ("id", "meta")}
    c.eq(got, exp, "Patient PAT-A: identifier, the second study's name and gender, the first study's birthDate")
    c.eq(fu.expected_name("Doe^John Paul^Q^Dr^Jr"),
         {"family": "Doe", "given": ["John", "Paul", "Q"], "prefix": ["Dr"], "suffix": ["Jr"], "use": "usual"},
         "(the expected name of PN Doe^John Paul^Q^Dr^Jr)")
    return p


def main():
    tu.require_binary()
    fu.require_dicomcast()
    c = tu.Checker(NAME)
    scratch = tu.scratch(NAME)
    a, b, c2, study_a, study_b, study_c = make_data()
    with wu.Server(scratch) as srv, fu.FhirServer(scratch, test=NAME) as fhir:
        stow(c, srv, study_a, "a 3-instance, 2-series study")
        stow(c, srv, study_b, "a second patient's study")
        stow(c, srv, study_c, "the first patient's later study")
        # Stored and deleted before the sync: the create entry is in state deleted.
        gone = ds(uid(4), uid(4, 1), uid(4, 1, 1), CT, PatientID="PAT-GONE", Modality="CT")
        stow(c, srv, [gone], "an instance deleted at once")
        r = srv.request("DELETE", f"/v2/studies/{uid(4)}")
        c.ok(r.status in (200, 202, 204), "DELETE of that study", wu.describe(r))
        stored_corpus = []
        for name in CORPUS:
            with open(os.path.join(tu.CORPUS, name), "rb") as f:
                data = f.read()
            body = wu.multipart([("application/dicom", data)], BOUNDARY)
            r = srv.stow("/v2/studies", body, f'multipart/related; type="application/dicom"; boundary={BOUNDARY}')
            if r.status == 200:
                stored_corpus.append(name)
        c.ok(len(stored_corpus) >= 6, f"dicomfs stores most of the chosen corpus files ({len(stored_corpus)}: "
             f"{', '.join(stored_corpus)})")

        cast = fu.Cast(srv.url, fhir.url, os.path.join(scratch, "state.json"), "--patient-system", SYSTEM)
        p = cast.once()
        c.ok(p.returncode == 0, "dicomcast --once exits 0", p.stderr[-2000:])
        c.note(p.stderr.strip().splitlines()[-1] if p.stderr.strip() else "(no stderr)")
        latest = wu.json_body(srv.get("/v1/changefeed/latest"))["sequence"]
        c.eq(cast.synced(), latest, "the state file holds the latest sequence")
        errors = cast.error_lines()
        c.ok(all(e.get("kind") in ("invalidValue", "dicom") for e in errors),
             "the error log holds only value problems of the corpus (no FHIR failure)", fu.tu.short(errors))

        md_a, md_b, md_c = study_metadata(srv, a), study_metadata(srv, b), study_metadata(srv, c2)
        pat = check_patient(c, fhir, md_a[0], md_c[0])
        check_requests(c, fhir, pat)

        eps = fhir.search("Endpoint")
        c.eq(len(eps), 1, "one Endpoint")
        ep = eps[0] if eps else {}
        c.eq({k: v for k, v in ep.items() if k not in ("id", "meta")},
             {"resourceType": "Endpoint", "name": f"DICOM WADO-RS endpoint {srv.url}", "status": "active",
              "connectionType": {"system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type",
                                 "code": "dicom-wado-rs"},
              "payloadType": [{"text": "DICOM WADO-RS"}], "payloadMimeType": ["application/dicom"],
              "address": srv.url}, "the Endpoint: dicom-wado-rs at the DICOMweb base URL")

        st = fhir.study(a)
        c.ok(isinstance(st, dict), "one ImagingStudy for study A")
        st = st if isinstance(st, dict) else {}
        c.eq(st.get("identifier"), [{"system": "urn:dicom:uid", "value": f"urn:oid:{a}"},
                                    {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                                          "code": "ACSN"}]}, "value": "ACC-1"}],
             "study A: identifiers urn:dicom:uid and the accession number (type ACSN)")
        c.eq(st.get("status"), "available", "study A: status available")
        c.eq(st.get("subject"), {"reference": f"Patient/{(pat or {}).get('id')}"}, "study A: subject is the Patient")
        c.eq(st.get("endpoint"), [{"reference": f"Endpoint/{ep.get('id')}"}], "study A: the endpoint")
        c.eq((st.get("meta") or {}).get("source"), srv.url, "study A: meta.source is the DICOMweb base URL")
        c.eq(st.get("started"), "2024-03-01T10:15:30.123+01:30", "study A: started with TimezoneOffsetFromUTC")
        c.eq([m.get("code") for m in st.get("modality", [])], ["CT", "MR"], "study A: modalities CT, MR")
        c.ok(all(m.get("system") == fu.DCM for m in st.get("modality", [])), "study A: modality codes are DCM")
        c.eq(st.get("note"), [{"text": "Chest CT"}], "study A: note is the StudyDescription")
        c.eq(fu.actual_series(st), fu.expected_series(md_a), "study A: series and instances as the metadata")
        c.eq(fu.actual_series(st)[uid(1, 1)].get("started"), "2024-03-01T10:16:00+01:30",
             "study A series 1: started from SeriesDate + SeriesTime (HHMM) + offset")
        c.eq((st.get("numberOfSeries"), st.get("numberOfInstances")), (2, 3), "study A: 2 series, 3 instances")

        sb = fhir.study(b) or {}
        c.eq(sb.get("started"), "2023-05-15T09:30:00Z", "study B: a time without a zone is taken as UTC")
        pb = fhir.search("Patient", identifier=f"{SYSTEM}|PAT-B")
        c.eq([{k: v for k, v in x.items() if k not in ("id", "meta")} for x in pb],
             [fu.expected_patient(md_b[0], SYSTEM)], "Patient PAT-B: name Roe^Jane, female, no birthDate")
        sc = fhir.study(c2) or {}
        c.eq(sc.get("started"), "2022-01-01", "study C: a date without a time is a date")
        c.eq(sc.get("subject"), st.get("subject"), "study C: the same Patient as study A")
        c.eq(fhir.study(uid(4)), None, "the instance deleted before the sync left no ImagingStudy")
        c.eq(fhir.search("Patient", identifier=f"{SYSTEM}|PAT-GONE"), [], "... and no Patient")

        check_corpus(c, srv, fhir, stored_corpus, errors)

        # A replay of the whole feed (a fresh state file) finds everything in place.
        before = len(fhir.requests())
        replay = fu.Cast(srv.url, fhir.url, os.path.join(scratch, "replay.json"), "--patient-system", SYSTEM)
        p = replay.once()
        c.ok(p.returncode == 0, "a replay of every entry exits 0", p.stderr[-1500:])
        writes = [e for r in fhir.requests()[before:] if r["method"] != "GET" for e in r.get("entries", [r])]
        # PAT-A's two studies carry two names, and each entry applies its own: the replay
        # renames the Patient back and forth, ending as before. Nothing else is written.
        pat_url = f"Patient/{(pat or {}).get('id')}"
        c.eq([w for w in writes if w.get("url") != pat_url], [],
             "the replay creates and changes nothing (only searches; PAT-A's renames aside)")
        c.eq(fhir.search("Patient", identifier=f"{SYSTEM}|PAT-A")[0].get("name"), (pat or {}).get("name"),
             "after the replay PAT-A has the name of its latest study again")

        check_deletes(c, srv, fhir, cast, a, b, md_a)
        srv.finish_check(c)
    c.finish()


def check_requests(c, fhir, pat):
    """What dicomcast sent: conditional creates, and the Patient's update with If-Match."""
    reqs = fhir.requests()
    tx = [r for r in reqs if r["method"] == "POST" and r.get("type") == "transaction"]
    c.ok(tx and all(r["status"] == 200 for r in tx), "every transaction was answered 200",
         fu.tu.short([r for r in tx if r["status"] != 200]))
    entries = [e for r in tx for e in r.get("entries", [])]
    posts = [e for e in entries if e["method"] == "POST"]
    c.ok(posts and all(e.get("ifNoneExist") for e in posts), "every create is conditional (ifNoneExist)")
    puts = [e for e in entries if e["method"] == "PUT" and e["url"].startswith("Patient/")]
    c.eq(len(puts), 1, "one Patient update (the second study's new name)")
    ok = bool(puts) and puts[0].get("ifMatch", "").startswith('W/"') and puts[0]["ifMatch"].endswith('"')
    c.ok(ok, 'the Patient update carries If-Match: W/"versionId"', fu.tu.short(puts))
    study_puts = [e for e in entries if e["method"] == "PUT" and e["url"].startswith("ImagingStudy/")]
    c.ok(study_puts and all(e.get("ifMatch", "").startswith('W/"') for e in study_puts),
         "every ImagingStudy update carries If-Match")


def check_corpus(c, srv, fhir, names, errors):
    """Every stored corpus study: the ImagingStudy's series and instances as the metadata;
    a study whose instances lack a required value is in the error log instead."""
    import pydicom
    studies = set()
    for name in names:
        studies.add(str(pydicom.dcmread(os.path.join(tu.CORPUS, name), stop_before_pixels=True).StudyInstanceUID))
    for s in sorted(studies):
        mds = study_metadata(srv, s)
        failed = {e.get("sopInstanceUid") for e in errors if e.get("kind") == "dicom" and e.get("studyInstanceUid") == s}
        ok_mds = [m for m in mds if fu._v(m, "00080018") not in failed]
        st = fhir.study(s)
        if not ok_mds:
            c.ok(st is None, f"corpus study {s}: no instance could map (logged), no ImagingStudy")
            continue
        c.eq(fu.actual_series(st if isinstance(st, dict) else {}), fu.expected_series(ok_mds),
             f"corpus study {s}: series and instances as the metadata ({len(ok_mds)} instances)")
        pid = fu._v(ok_mds[0], "00100020")
        pats = fhir.search("Patient", identifier=f"{SYSTEM}|{pid}")
        exp = fu.expected_patient(ok_mds[0], SYSTEM)
        c.eq([{k: v for k, v in x.items() if k not in ("id", "meta")} for x in pats][:1], [exp],
             f"corpus study {s}: Patient {pid!r} (name, gender, birthDate)")


def check_deletes(c, srv, fhir, cast, a, b, md_a):
    r1 = srv.request("DELETE", f"/v2/studies/{a}/series/{uid(1, 1)}/instances/{uid(1, 1, 2)}")
    r2 = srv.request("DELETE", f"/v2/studies/{a}/series/{uid(1, 2)}")
    r3 = srv.request("DELETE", f"/v2/studies/{b}")
    c.ok(all(r.status in (200, 202, 204) for r in (r1, r2, r3)), "DELETE of an instance, a series and a study")
    p = cast.once()
    c.ok(p.returncode == 0, "dicomcast --once after the deletes exits 0", p.stderr[-1500:])
    st = fhir.study(a) or {}
    left = [m for m in md_a if fu._v(m, "00080018") == uid(1, 1, 1)]
    c.eq(fu.actual_series(st), fu.expected_series(left), "study A keeps series 1 with its one instance left")
    c.eq((st.get("numberOfSeries"), st.get("numberOfInstances")), (1, 1), "study A: 1 series, 1 instance")
    c.eq(fhir.study(b), None, "study B's ImagingStudy is deleted with its last instance")
    c.eq(len(fhir.search("Patient", identifier=f"{SYSTEM}|PAT-B")), 1, "... and its Patient stays")


if __name__ == "__main__":
    main()
