"""Interoperability: OHIF Viewer 3 in headless Chromium against `dicomfs serve`.

The viewer is the prebuilt one of npm @ohif/app (its dist/), driven by playwright-core and
checked with pngjs, all pinned in tests/interop/ohif/package-lock.json and installed there
by `npm ci` the first time. The browser is Debian's chromium (/usr/bin/chromium, or
$CHROMIUM). This driver writes a study (2 series, CT and MR, 2 instances each, from
pydicom's CT_small.dcm and MR_small.dcm), starts `dicomfs serve` on a fresh archive,
stores the files with curl (STOW-RS), puts a recording relay (tests/interop/httptap.py)
in front of the server and runs ohif.test.js twice against the relay: with OHIF's default
Accept for frames (type="application/octet-stream", quoted) and with
omitQuotationForMultipartRequest: true (unquoted). Each run opens the study list (the
study's row: patient, modalities, description, number of instances) and the viewer (the
image is drawn and not black; both series in the study browser; the second series drawn
too), and fails on any answer >= 400 from dicomfs. Then every HTTP exchange the relay saw
is printed with its headers in full, CORS preflights included (the browser hides those).

Only 127.0.0.1 is contacted at test time; npm ci (the first run) is the only use of the
registry. Screenshots go to the scratch directory (in the build directory). Fails (never
skips) when chromium, node, npm or the pinned packages are missing.
"""
import json
import os
import shutil
import subprocess
import sys
import warnings

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
HERE = os.path.dirname(os.path.abspath(__file__))
INTEROP = os.path.dirname(HERE)
sys.path.insert(0, INTEROP)
sys.path.insert(0, os.path.dirname(INTEROP))
import interoputil as iu  # noqa: E402
import httptap  # noqa: E402
import testutil as tu  # noqa: E402
import webutil as wu  # noqa: E402

import pydicom  # noqa: E402

NAME = "interop_ohif"
CHROMIUM = os.environ.get("CHROMIUM") or "/usr/bin/chromium"
NODE_TIMEOUT = 150  # one variant takes about 15 s on 2 cores

ROOT = "1.2.826.0.1.3680043.9.7777.91"
STUDY = f"{ROOT}.1"
PATIENT = "OHIF^Interop"
PATIENT_SHOWN = "OHIF, Interop"  # how OHIF's study list formats the name
DESCRIPTION = "OHIF interop"
SERIES = [  # (modality, source file, series UID, z positions of its instances)
    ("CT", "CT_small.dcm", f"{ROOT}.1.1", (-75.7, -70.7)),
    ("MR", "MR_small.dcm", f"{ROOT}.1.2", (6.6406, 11.6406)),
]


def make_study(d):
    """One study of a patient: a CT series and an MR series of 2 instances each."""
    os.makedirs(d, exist_ok=True)
    files, series = [], []
    for number, (modality, src, uid, zs) in enumerate(SERIES, 1):
        sops = []
        for i, z in enumerate(zs, 1):
            ds = pydicom.dcmread(os.path.join(tu.CORPUS, src))
            sop = f"{uid}.{i}"
            ds.StudyInstanceUID = STUDY
            ds.SeriesInstanceUID = uid
            ds.SOPInstanceUID = sop
            ds.file_meta.MediaStorageSOPInstanceUID = sop
            ds.PatientName = PATIENT
            ds.PatientID = "OHIF-1"
            ds.StudyDescription = DESCRIPTION
            ds.StudyDate = "20040119"
            ds.StudyTime = "072730"
            ds.AccessionNumber = "OHIF1"
            ds.StudyID = "OHIF1"
            ds.SeriesNumber = number
            ds.SeriesDescription = f"{modality} of {src}"
            ds.InstanceNumber = i
            pos = [float(v) for v in ds.ImagePositionPatient]
            ds.ImagePositionPatient = [pos[0], pos[1], z]
            p = os.path.join(d, f"{modality.lower()}{i}.dcm")
            ds.save_as(p, write_like_original=True)
            files.append(p)
            sops.append(sop)
        series.append({"uid": uid, "modality": modality, "instances": len(zs), "sops": sops})
    expect = {"study": STUDY, "patient": PATIENT_SHOWN, "description": DESCRIPTION,
              "instances": len(files), "modalities": [m for m, *_ in SERIES], "series": series}
    return files, expect


def main():
    # The default mode is what real clients meet (tests/interop/README.md).
    os.environ.pop("DICOMFS_STRICT", None)
    warnings.simplefilter("ignore")
    tu.require_binary()
    iu.require_commands(NAME, "node", "npm", "curl")
    if not os.access(CHROMIUM, os.X_OK):
        iu.fail(NAME, f"{CHROMIUM} is missing (Debian package chromium): run tools/install-deps.sh --test")
    scratch = tu.scratch(NAME)
    iu.npm_ci(NAME, HERE, os.path.join(scratch, "npm-ci.log"))
    c = tu.Checker(NAME)
    files, expect = make_study(os.path.join(scratch, "data"))

    with wu.Server(scratch) as srv, httptap.Tap(srv.port) as tap:
        # STOW-RS with curl, straight to the server (the tap is for OHIF's requests).
        for p in files:
            r = iu.curl(srv.url + "/v2/studies", "POST",
                        ["Content-Type: application/dicom", "Accept: application/dicom+json"],
                        data_file=p)
            c.ok(r.status == 200, f"STOW-RS of {os.path.basename(p)} (curl): 200", r.describe())

        env = {k: v for k, v in os.environ.items()
               if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")}
        env.update(DICOMWEB_URL=tap.url, EXPECT=json.dumps(expect), ARTIFACTS=scratch,
                   CHROMIUM=CHROMIUM)
        for variant in ("quoted", "unquoted"):
            since = tap.mark()
            try:
                p = subprocess.run(["node", os.path.join(HERE, "ohif.test.js")], cwd=HERE,
                                   env=dict(env, VARIANT=variant), stdin=subprocess.DEVNULL,
                                   capture_output=True, timeout=NODE_TIMEOUT)
                out, rc = p.stdout.decode("utf-8", "replace"), p.returncode
                err = p.stderr.decode("utf-8", "replace")
            except subprocess.TimeoutExpired as e:
                out = (e.stdout or b"").decode("utf-8", "replace")
                err, rc = f"node did not finish within {NODE_TIMEOUT} s", 124
            sys.stdout.write(out)
            if err.strip():
                print("#    node stderr: " + err.strip()[-2000:].replace("\n", "\n#    "))
            tap.settle()
            exchanges = tap.exchanges(since)
            iu.print_exchanges(f"OHIF ({variant}) -> dicomfs", exchanges)
            c.ok(rc == 0, f"ohif.test.js ({variant}): every check in the browser passed",
                 f"node exit status {rc}")
            # What the browser does not show: CORS preflights, and the answers as sent.
            bad = [x for x in exchanges if x.status is None or x.status >= 400]
            c.ok(not bad, f"({variant}) every exchange the tap saw (preflights included) was answered below 400",
                 "; ".join(f"{x.status} {x.method} {x.target} [Accept: {httptap.header(x.headers, 'Accept')}]"
                           for x in bad))
            pre = [x for x in exchanges if x.method == "OPTIONS"]
            if pre:
                c.note(f"({variant}) {len(pre)} CORS preflight(s): " + "; ".join(
                    f"{x.status} {x.target} [Access-Control-Request-Headers: "
                    f"{httptap.header(x.headers, 'Access-Control-Request-Headers')}]" for x in pre))
            else:
                c.note(f"({variant}) no CORS preflight")
        srv.finish_check(c)
    c.finish()


if __name__ == "__main__":
    main()
