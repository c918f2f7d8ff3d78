"""End-to-end: QIDO-RS matching through `dicomfs find`, then delete and the change feed.

A small archive is generated with pydicom (5 studies, 8 series, 11 instances; accented
names; dates; modalities), ingested one file per `dicomfs ingest` call so that the order
of storage is known, and then queried:
  - exact match, case-insensitive strings, PN case- and accent-insensitive;
  - DA ranges a-b, a-, -b; wildcards * and ?; fuzzymatching (word-prefix on PN);
  - which attributes each level / scope may filter, and every refused query (exit 1);
  - scoping with --study / --series; includefield (keyword, tag, all, computed);
  - limit/offset paging and newest-first order;
  - delete (study, series, instance) and the change feed's states and delete entries.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import testutil as tu  # noqa: E402

ROOT = "1.2.826.0.1.3680043.9.7777.42"

# study key -> attributes; series: (key, modality, model, pps date, n instances)
STUDIES = {
    "S1": dict(PatientName="Müller^Jürgen", PatientID="P001", PatientBirthDate="19600101",
               StudyDate="20200115", StudyTime="101500", AccessionNumber="ACC001",
               ReferringPhysicianName="Smith^John", StudyDescription="CT Chest",
               series=[("A", "CT", "Optima CT660", "20200115", 3), ("B", "PR", "Viewer", "20200116", 1)]),
    "S2": dict(PatientName="John^Doe", PatientID="P002", PatientBirthDate="19751231",
               StudyDate="20210301", StudyTime="080000", AccessionNumber="ACC002",
               ReferringPhysicianName="Müller^Anna", StudyDescription="MR Brain",
               series=[("A", "MR", "Signa HDxt", "20210301", 2), ("B", "MR", "Signa HDxt", "20210302", 1)]),
    "S3": dict(PatientName="Jane^Doe", PatientID="P003", PatientBirthDate="19900515",
               StudyDate="20220710", StudyTime="235959", AccessionNumber="ACC003",
               ReferringPhysicianName="Smith^John", StudyDescription="CT Abdomen",
               series=[("A", "CT", "Revolution", "20220710", 2)]),
    "S4": dict(PatientName="O'Brien^José", PatientID="P004", PatientBirthDate="20000229",
               StudyDate="20230228", StudyTime="120000", AccessionNumber="ACC004",
               ReferringPhysicianName="Ng^Wei", StudyDescription="US Liver",
               series=[("A", "US", "Logiq E9", "20230228", 1)]),
    "S5": dict(PatientName="Doe^Johnny", PatientID="P005", PatientBirthDate="19851010",
               StudyDate="20200115", StudyTime="170000", AccessionNumber="ACC005",
               ReferringPhysicianName="Smith^John", StudyDescription="mr knee",
               series=[("A", "MR", "Signa HDxt", "20200115", 1)]),
}
ORDER = ["S1", "S2", "S3", "S4", "S5"]  # the order of storage

STUDY_DEFAULT = {"StudyInstanceUID", "StudyDate", "StudyDescription", "AccessionNumber",
                 "ReferringPhysicianName", "PatientName", "PatientID", "PatientBirthDate"}
SERIES_DEFAULT = {"SeriesInstanceUID", "Modality", "PerformedProcedureStepStartDate",
                  "ManufacturerModelName"}
INSTANCE_DEFAULT = {"SOPInstanceUID"}
STUDY_COMPUTED = {"ModalitiesInStudy", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances"}
SERIES_COMPUTED = {"NumberOfSeriesRelatedInstances"}
COMPUTED = STUDY_COMPUTED | SERIES_COMPUTED

study_uid = {k: f"{ROOT}.{i + 1}" for i, k in enumerate(ORDER)}
uid_study = {v: k for k, v in study_uid.items()}
series_uid = {}    # "S1A" -> uid
instances = []     # (study key, series key "S1A", sop uid, file) in storage order
sop_name = {}


def build(scratch):
    d = os.path.join(scratch, "files")
    n = 0
    for si, sk in enumerate(ORDER):
        st = STUDIES[sk]
        for se_i, (sek, modality, model, ppsdate, count) in enumerate(st["series"]):
            se_uid = f"{study_uid[sk]}.{se_i + 1}"
            series_uid[sk + sek] = se_uid
            for inst in range(count):
                sop = f"{se_uid}.{inst + 1}"
                attrs = {k: v for k, v in st.items() if k != "series"}
                ds = tu.make_dataset(study_uid[sk], se_uid, sop, Modality=modality,
                                     ManufacturerModelName=model,
                                     PerformedProcedureStepStartDate=ppsdate,
                                     SeriesNumber=se_i + 1, InstanceNumber=inst + 1, **attrs)
                n += 1
                path = tu.write_dicom(os.path.join(d, f"{n:02d}_{sk}{sek}_{inst + 1}.dcm"), ds)
                instances.append((sk, sk + sek, sop, path))
                sop_name[sop] = f"{sk}{sek}{inst + 1}"


def names(results, level):
    """Readable names of a find result: S1 / S1A / S1A1."""
    out = []
    for o in results or []:
        if level == "study":
            out.append(uid_study.get(tu.jget(o, "StudyInstanceUID"), "?"))
        elif level == "series":
            se = tu.jget(o, "SeriesInstanceUID")
            out.append(next((k for k, v in series_uid.items() if v == se), "?"))
        else:
            out.append(sop_name.get(tu.jget(o, "SOPInstanceUID"), "?"))
    return out


def main():
    tu.require_binary()
    c = tu.Checker("find_qido")
    scratch = tu.scratch("find_qido")
    archive = os.path.join(scratch, "archive")
    build(scratch)

    for sk, sek, sop, path in instances:
        p, res, _ = tu.ingest(archive, [path])
        ok = p.returncode == 0 and len(res) == 1 and res[0].get("result") == "stored" \
            and "warningReason" not in res[0]
        c.ok(ok, f"ingest {os.path.basename(path)}: stored without warning",
             f"rc={p.returncode} {tu.short(res)} {p.stderr[-200:]}")

    def q(expected, *params, level="study", study=None, series=None, ordered=False, what=None):
        rc, data, err = tu.find(archive, *params, level=level, study=study, series=series)
        got = names(data, level) if rc == 0 else f"exit {rc}: {err.strip()[:200]}"
        scope = (f" --study {uid_study.get(study, study)}" if study else "") + \
                (f" --series {series}" if series else "")
        label = what or f"find --level {level}{scope} {' '.join(params)} -> {expected}"
        if rc == 0 and not ordered:
            got = sorted(got)
            expected = sorted(expected)
        c.eq(got, expected, label)
        return data

    def refused(*params, level="study", study=None, series=None, why=""):
        rc, data, err = tu.find(archive, *params, level=level, study=study, series=series)
        scope = (f" --study {uid_study.get(study, study)}" if study else "") + \
                (" --series" if series else "")
        c.ok(rc == 1 and err.strip() != "",
             f"find --level {level}{scope} {' '.join(params)} is refused (exit 1, reason on stderr){why}",
             f"rc={rc} stdout={tu.short(data)} stderr={err.strip()[:200]}")
        if rc == 1 and err.strip():
            print(f"#    reason: {err.strip().splitlines()[-1][:160]}")

    all_studies = list(ORDER)

    # ---- Study level matching ----------------------------------------------------------
    q(all_studies, what="find (no filter) lists the 5 studies")
    q(list(reversed(ORDER)), ordered=True, what="studies come newest first (reverse order of storage)")
    q(["S1"], "PatientName=Müller^Jürgen")
    q(["S1"], "PatientName=müller^jürgen", what="PN is case-insensitive: müller^jürgen -> S1")
    q(["S1"], "PatientName=Muller^Jurgen", what="PN is accent-insensitive: Muller^Jurgen -> S1")
    q(["S1"], "PatientName=MULLER^JURGEN")
    q(["S4"], "PatientName=o'brien^jose", what="PN accent- and case-insensitive: o'brien^jose -> S4")
    q([], "PatientName=John", what="PN without fuzzymatching is an exact match: John -> []")
    q([], "PatientName=Müller", what="exact match: Müller does not match Müller^Jürgen")
    q(["S2"], "PatientName=John*")
    q(["S2", "S3"], "PatientName=*Doe")
    q(["S3"], "PatientName=J?ne^Doe")
    q(["S2", "S3"], "PatientName=J*^Doe")
    q(["S2", "S5"], "PatientName=jo do", "fuzzymatching=true",
      what="fuzzymatching=true 'jo do' matches John^Doe and Doe^Johnny (word prefixes)")
    q([], "PatientName=ohn", "fuzzymatching=true", what="fuzzymatching=true 'ohn' matches nothing (not a word prefix)")
    q(["S1"], "PatientName=jürg", "fuzzymatching=true")
    q(["S1"], "PatientName=jurg", "fuzzymatching=true", what="fuzzymatching is accent-insensitive: jurg -> S1")
    q([], "PatientName=jo do", "fuzzymatching=false", what="fuzzymatching=false 'jo do' -> []")
    q(["S2"], "ReferringPhysicianName=muller^anna")
    q(["S1", "S3", "S5"], "ReferringPhysicianName=Smith^John")
    q(["S1"], "PatientID=P001")
    q(["S1"], "PatientID=p001", what="strings are case-insensitive: PatientID=p001 -> S1")
    q(all_studies, "PatientID=P00?")
    q(all_studies, "PatientID=P*")
    q([], "PatientID=P00")
    q(["S2"], "00100020=P002", what="a filter by tag: 00100020=P002 -> S2")
    q(["S3"], "AccessionNumber=acc003")
    q(["S1", "S3"], "StudyDescription=ct*")
    q(["S2"], "StudyDescription=*brain")
    q(["S5"], "StudyDescription=MR KNEE")
    q(["S1", "S5"], "StudyDate=20200115")
    q(["S1", "S5"], "StudyDate=20200101-20201231")
    q(["S3", "S4"], "StudyDate=20220101-")
    q(["S1", "S5"], "StudyDate=-20201231")
    q(["S2"], "StudyDate=20210301-20210301")
    q([], "StudyDate=20240101-")
    q(["S2"], "PatientBirthDate=19751231")
    q(["S2", "S3", "S5"], "PatientBirthDate=19700101-19991231")
    q(["S4"], "PatientBirthDate=20000101-")
    q(["S2", "S5"], "ModalitiesInStudy=MR")
    q(["S1", "S3"], "ModalitiesInStudy=CT")
    q(["S1"], "ModalitiesInStudy=PR")
    q(["S3"], f"StudyInstanceUID={study_uid['S3']}")
    q(["S3"], "PatientName=*Doe", "StudyDate=20220710", what="two filters combine with AND")
    q([], "PatientName=*Doe", "StudyDate=20200115")

    # ---- Series level ---------------------------------------------------------------
    q(["S1A", "S3A"], "Modality=CT", level="series")
    q(["S1A", "S3A"], "Modality=ct", level="series", what="Modality=ct (case-insensitive) -> S1A S3A")
    q(["S2A", "S2B", "S5A"], "ManufacturerModelName=signa hdxt", level="series")
    q(["S2B"], "PerformedProcedureStepStartDate=20210302", level="series")
    q(["S1B", "S2A", "S2B", "S3A", "S4A"], "PerformedProcedureStepStartDate=20200116-", level="series")
    q(["S2A", "S2B"], "PatientName=John^Doe", level="series",
      what="--level series may filter study attributes: PatientName=John^Doe -> S2A S2B")
    q(["S3A"], "StudyDate=20220710", "Modality=CT", level="series")
    q(["S1B"], f"SeriesInstanceUID={series_uid['S1B']}", level="series")
    q(["S2A", "S2B"], level="series", study=study_uid["S2"],
      what="--study S2 --level series lists S2's series")
    q(["S2B"], "PerformedProcedureStepStartDate=20210302", level="series", study=study_uid["S2"])
    q([], "Modality=CT", level="series", study=study_uid["S2"])
    all_series = sorted(series_uid)
    q(all_series, level="series", what="find --level series lists all 8 series")

    # ---- Instance level -----------------------------------------------------------------
    all_inst = [sop_name[i[2]] for i in instances]
    q(all_inst, level="instance", what="find --level instance lists all 11 instances")
    q(list(reversed(all_inst)), level="instance", ordered=True,
      what="instances come newest first (reverse order of storage)")
    q(["S1A1", "S1A2", "S1A3"], level="instance", study=study_uid["S1"], series=series_uid["S1A"],
      what="--study S1 --series S1A lists its 3 instances")
    q(["S1A1", "S1A2", "S1A3", "S1B1"], level="instance", study=study_uid["S1"],
      what="--study S1 --level instance lists S1's 4 instances")
    q(["S1B1"], "Modality=PR", level="instance", study=study_uid["S1"],
      what="--study S1 --level instance may filter series attributes: Modality=PR -> S1B1")
    q(["S3A1", "S3A2"], "PatientName=Jane^Doe", level="instance",
      what="--level instance may filter study attributes")
    q(["S2A2"], f"SOPInstanceUID={series_uid['S2A']}.2", level="instance")
    q(["S2A2"], f"SOPInstanceUID={series_uid['S2A']}.2", level="instance",
      study=study_uid["S2"], series=series_uid["S2A"])
    q([], f"SOPInstanceUID={series_uid['S2A']}.2", level="instance",
      study=study_uid["S1"], series=series_uid["S1A"], what="an instance outside the scope is not found")

    # ---- Refused queries ----------------------------------------------------------------
    refused("Foo=1", why=" [unknown attribute]")
    refused("PatientSex=M", why=" [attribute not searchable]")
    refused("PatientName=", why=" [empty value]")
    refused("PatientName=John*", "PatientName=Jane*", why=" [duplicate key]")
    refused("PatientName=John*", "00100010=Jane*", why=" [duplicate attribute, keyword and tag]")
    refused("includefield=all", "includefield=StudyDescription", why=" [includefield=all with other fields]")
    refused("includefield=all,StudyDescription", why=" [includefield=all with another field]")
    refused("includefield=NoSuchAttribute", why=" [unknown includefield]")
    refused("limit=0", why=" [limit < 1]")
    refused("limit=201", why=" [limit > 200]")
    refused("limit=-5", why=" [negative limit]")
    refused("limit=ten", why=" [limit not a number]")
    refused("offset=-1", why=" [offset < 0]")
    refused("fuzzymatching=maybe", why=" [fuzzymatching not a boolean]")
    refused("StudyDate=2020-01-15", why=" [invalid DA]")
    refused("StudyDate=20200115-20190101", why=" [range end before start]")

    # dates the calendar does not have: 400 with the reason, alone or as a range end
    def refused_date(value, reason, key="StudyDate", level="study"):
        rc, data, err = tu.find(archive, f"{key}={value}", level=level)
        c.ok(rc == 1 and value in err and reason in err,
             f"find {key}={value} is refused (exit 1) because {reason}", f"rc={rc} stderr={err.strip()[:300]}")
    refused_date("20201301", "there is no month 13")
    refused_date("20200230", "there is no day 30 in February 2020")
    refused_date("20210229", "there is no day 29 in February 2021")
    refused_date("20200101-20201301", "there is no month 13")
    refused_date("20201301-", "there is no month 13")
    refused_date("19991332", "there is no month 13", key="PatientBirthDate")
    refused_date("20200431", "there is no day 31 in April 2020", key="PerformedProcedureStepStartDate", level="series")
    q(["S4"], "PatientBirthDate=20000229", what="29 February of a leap year is a date: PatientBirthDate=20000229 -> S4")
    q(["S1", "S5"], "StudyDate=20200101-20210228", what="a range ending on 28 February 2021 is a range: -> S1, S5")

    # the limit: 1 to 200 per call, as QIDO-RS; --help says so
    p = tu.run(["find", "--help"])
    c.ok(p.returncode == 0 and "1 to 200" in p.stdout and "offset" in p.stdout,
         "find --help documents the limit (1 to 200) and paging with offset", p.stdout[-400:])
    rc, data, err = tu.find(archive, "limit=201")
    c.ok(rc == 1 and "1 to 200" in err, "limit=201 is refused with the range it must be in", err.strip()[:200])
    refused("Modality=CT", level="study", why=" [series attribute at study level]")
    refused("SOPInstanceUID=1.2.3", level="series", why=" [instance attribute at series level]")
    refused("PatientName=John^Doe", level="series", study=study_uid["S2"],
            why=" [study attribute in a study-scoped series search]")
    refused("Modality=MR", level="instance", study=study_uid["S2"], series=series_uid["S2A"],
            why=" [series attribute in a series-scoped instance search]")

    # ---- includefield and returned attributes -----------------------------------------
    def keys(o):
        out = set()
        for t in o:
            kw = tu.pydicom.datadict.keyword_for_tag(int(t, 16)) if len(t) == 8 else t
            out.add(kw or t)
        return out

    # By default study and series results carry their computed attributes, as PS3.18 lists
    # them (viewers show the counts); --strict as the reference: only with includefield.
    rc, data, err = tu.find(archive, level="study")
    ks = set().union(*(keys(o) for o in data)) if data else set()
    c.ok(data and ks <= STUDY_DEFAULT | STUDY_COMPUTED and {"StudyInstanceUID", "PatientName", "PatientID", "StudyDate"} <= ks,
         "study results carry the default study attributes and the computed ones, nothing else", f"keys: {sorted(ks)}")
    s1 = next((o for o in data or [] if tu.jget(o, "StudyInstanceUID") == study_uid["S1"]), {})
    c.eq(tu.jget(s1, "PatientName"), "Müller^Jürgen", "PatientName comes back as stored (UTF-8)")
    c.eq(tu.jget(s1, "StudyDate"), "20200115", "StudyDate comes back")
    c.eq(s1.get("00100010", {}).get("vr"), "PN", "PatientName has vr PN")
    c.ok(STUDY_COMPUTED <= ks, "computed study attributes are there without includefield", f"keys: {sorted(ks)}")
    rc, data, err = tu.find(archive, "--strict", level="study")
    ks = set().union(*(keys(o) for o in data)) if data else set()
    c.ok(data and ks <= STUDY_DEFAULT and not (ks & COMPUTED),
         "--strict: the default study attributes only, no computed ones without includefield", f"keys: {sorted(ks)}")

    rc, data, err = tu.find(archive, level="series")
    ks = set().union(*(keys(o) for o in data)) if data else set()
    c.ok(data and {"SeriesInstanceUID", "Modality", "NumberOfSeriesRelatedInstances"} <= ks and
         ks <= STUDY_DEFAULT | SERIES_DEFAULT | SERIES_COMPUTED,
         "series results carry the default series attributes and their count (and at most the study's)",
         f"keys: {sorted(ks)}")
    rc, data, err = tu.find(archive, level="instance")
    ks = set().union(*(keys(o) for o in data)) if data else set()
    c.ok(data and "SOPInstanceUID" in ks and ks <= STUDY_DEFAULT | SERIES_DEFAULT | INSTANCE_DEFAULT | {"SOPClassUID", "InstanceNumber"},
         "instance results carry SOPInstanceUID (and at most the default attributes)", f"keys: {sorted(ks)}")

    def study_obj(*params):
        rc, data, err = tu.find(archive, *params, level="study")
        return {uid_study.get(tu.jget(o, "StudyInstanceUID")): o for o in (data or [])}, rc, err

    objs, rc, err = study_obj("includefield=ModalitiesInStudy")
    c.eq(sorted(tu.jvalues(objs.get("S1", {}), "ModalitiesInStudy") or []), ["CT", "PR"],
         "includefield=ModalitiesInStudy: S1 -> CT, PR")
    c.eq(sorted(tu.jvalues(objs.get("S2", {}), "ModalitiesInStudy") or []), ["MR"],
         "includefield=ModalitiesInStudy: S2 -> MR (once)")
    objs, rc, err = study_obj("includefield=NumberOfStudyRelatedSeries,NumberOfStudyRelatedInstances")
    c.eq({k: (tu.jget(o, "NumberOfStudyRelatedSeries"), tu.jget(o, "NumberOfStudyRelatedInstances"))
          for k, o in objs.items()},
         {"S1": (2, 4), "S2": (2, 3), "S3": (1, 2), "S4": (1, 1), "S5": (1, 1)},
         "includefield=NumberOfStudyRelatedSeries,NumberOfStudyRelatedInstances (comma list)")
    objs, rc, err = study_obj("includefield=00201208")
    c.eq({k: tu.jget(o, "NumberOfStudyRelatedInstances") for k, o in objs.items()},
         {"S1": 4, "S2": 3, "S3": 2, "S4": 1, "S5": 1}, "includefield=00201208 (by tag)")
    objs, rc, err = study_obj("includefield=all")
    ks = set().union(*(keys(o) for o in objs.values())) if objs else set()
    # the reference's v2 StudyResult.AvailableTags include ModalitiesInStudy and
    # NumberOfStudyRelatedInstances, and includefield=all returns all available tags
    c.ok(objs and STUDY_DEFAULT <= ks and {"ModalitiesInStudy", "NumberOfStudyRelatedInstances"} <= ks,
         "includefield=all returns the study attributes and the computed ones", f"keys: {sorted(ks)}")
    rc, data, err = tu.find(archive, "includefield=NumberOfSeriesRelatedInstances", level="series")
    c.eq({names([o], "series")[0]: tu.jget(o, "NumberOfSeriesRelatedInstances") for o in (data or [])},
         {"S1A": 3, "S1B": 1, "S2A": 2, "S2B": 1, "S3A": 2, "S4A": 1, "S5A": 1},
         "includefield=NumberOfSeriesRelatedInstances at series level")
    rc, data, err = tu.find(archive, "includefield=StudyDescription", level="series", study=study_uid["S3"])
    c.eq([tu.jget(o, "StudyDescription") for o in (data or [])], ["CT Abdomen"],
         "includefield=StudyDescription adds a study attribute to a study-scoped series search")

    # ---- Paging -----------------------------------------------------------------------
    rc, full, err = tu.find(archive, level="instance")
    pages = []
    for off in (0, 4, 8, 12):
        rc, data, err = tu.find(archive, "limit=4", f"offset={off}", level="instance")
        pages.append(names(data, "instance") if rc == 0 else None)
    c.eq([len(p) if p is not None else None for p in pages], [4, 4, 3, 0],
         "limit=4 offset=0,4,8,12 -> 4, 4, 3, 0 instances")
    c.eq(sum((p or [] for p in pages), []), names(full, "instance"),
         "the pages concatenated are the full result in the same order")
    q(["S5"], "limit=1", ordered=True, what="limit=1 -> the newest study only")
    q(["S4"], "limit=1", "offset=1", ordered=True, what="limit=1 offset=1 -> the second newest")
    q(all_studies, "limit=200", what="limit=200 is accepted")
    q([], "offset=100", what="an offset past the end -> []")
    # The default limit is 100: store 95 more instances in one series, then count.
    bulk = []
    for i in range(95):
        ds = tu.make_dataset(study_uid["S4"], series_uid["S4A"], f"{series_uid['S4A']}.{100 + i}",
                             Modality="US", PatientName="O'Brien^José", PatientID="P004",
                             StudyDate="20230228", InstanceNumber=100 + i)
        bulk.append(tu.write_dicom(os.path.join(scratch, "bulk", f"{i:03d}.dcm"), ds))
    p, res, _ = tu.ingest(archive, bulk)
    c.eq(sum(1 for r in res if r.get("result") == "stored"), 95, "95 more instances stored in S4A")
    rc, data, err = tu.find(archive, level="instance")
    c.eq(len(data or []), 100, "without limit, at most 100 results (106 instances)")
    rc, data, err = tu.find(archive, "limit=200", level="instance")
    c.eq(len(data or []), 106, "limit=200 returns all 106 instances")
    rc, data, err = tu.find(archive, "limit=200", "offset=100", level="instance")
    c.eq(len(data or []), 6, "limit=200 offset=100 returns the last 6")
    c.eq(tu.jget((data or [{}])[-1], "SOPInstanceUID"), instances[0][2],
         "the oldest instance comes last")

    # ---- Delete and the change feed -------------------------------------------------------
    feed_before, err = tu.all_changes(archive)
    c.ok(err is None, "changes can be read", err or "")
    creates = [e for e in feed_before if e.get("action") == "create"]
    c.eq(len(creates), 106, "the change feed has one create entry per stored instance")
    c.ok(all(e.get("state") == "current" for e in creates), "every create entry is current before deleting")

    victim = f"{series_uid['S3A']}.1"
    p = tu.delete(archive, study_uid["S3"], series_uid["S3A"], victim)
    c.eq((p.returncode, p.stdout.strip()), (0, "1"), "delete of one instance (S3A1) prints 1")
    q([], f"SOPInstanceUID={victim}", level="instance", what="the deleted instance is no longer found")
    q(["S3A2"], level="instance", study=study_uid["S3"], what="S3 keeps its other instance")
    objs, rc, err = study_obj("includefield=NumberOfStudyRelatedInstances", f"StudyInstanceUID={study_uid['S3']}")
    c.eq(tu.jget(objs.get("S3", {}), "NumberOfStudyRelatedInstances"), 1, "S3 now counts 1 instance")
    rc, data, p = tu.metadata(archive, study_uid["S3"], series_uid["S3A"], victim)
    c.eq(rc, 1, "metadata of the deleted instance exits 1")

    p = tu.delete(archive, study_uid["S2"], series_uid["S2B"])
    c.eq((p.returncode, p.stdout.strip()), (0, "1"), "delete of series S2B prints 1")
    q(["S2A"], level="series", study=study_uid["S2"], what="S2 keeps series S2A only")
    q(["S2"], "ModalitiesInStudy=MR", "PatientID=P002")

    p = tu.delete(archive, study_uid["S4"])
    c.eq((p.returncode, p.stdout.strip()), (0, "96"), "delete of study S4 prints 96")
    q(["S1", "S2", "S3", "S5"], what="S4 is gone from the study search")
    q([], "PatientName=o'brien^jose", what="S4 no longer matches its patient")
    rc, data, err = tu.find(archive, "limit=200", level="instance")
    c.eq(len(data or []), 8, "8 instances remain")

    p = tu.delete(archive, study_uid["S4"])
    c.eq(p.returncode, 1, "delete of a study that is gone exits 1")
    p = tu.delete(archive, "1.2.3.999", "1.2.3.999.1", "1.2.3.999.1.1")
    c.eq(p.returncode, 1, "delete of an unknown instance exits 1")

    feed, err = tu.all_changes(archive)
    c.ok(err is None, "changes can be read after deleting", err or "")
    seqs = [e.get("sequence") for e in feed]
    c.ok(all(isinstance(s, int) for s in seqs) and all(a < b for a, b in zip(seqs, seqs[1:])),
         "change-feed sequences are strictly increasing")
    deleted_sops = {victim, f"{series_uid['S2B']}.1"} | \
        {i[2] for i in instances if i[0] == "S4"} | {f"{series_uid['S4A']}.{100 + i}" for i in range(95)}
    creates = [e for e in feed if e.get("action") == "create"]
    deletes = [e for e in feed if e.get("action") == "delete"]
    c.eq(len(creates), 106, "still 106 create entries")
    c.eq(sorted(e.get("sopInstanceUid") for e in deletes), sorted(deleted_sops),
         "one delete entry per deleted instance (98)")
    wrong = [(e.get("sopInstanceUid"), e.get("state")) for e in creates
             if e.get("state") != ("deleted" if e.get("sopInstanceUid") in deleted_sops else "current")]
    c.eq(wrong, [], "create entries of deleted instances show state deleted, the others current")
    c.ok(all(e.get("sequence") > max(x.get("sequence") for x in creates) for e in deletes),
         "delete entries come after the creates")
    c.ok(all(e.get("studyInstanceUid") and e.get("seriesInstanceUid") for e in deletes),
         "delete entries name their study and series")
    rc, first, p = tu.changes(archive, offset=0, limit=1, metadata=True)
    ok = rc == 0 and isinstance(first, list) and len(first) == 1
    c.ok(ok, "changes --offset 0 --limit 1 returns one entry")

    p = tu.fsck(archive)
    c.eq(p.returncode, 0, "fsck exits 0 after the deletes")
    c.finish()


if __name__ == "__main__":
    main()
