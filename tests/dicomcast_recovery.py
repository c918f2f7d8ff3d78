"""dicomcast when things go wrong, against `dicomfs serve` and the real FHIR R4 server of
tests/fhir (what must hold: nothing skipped, nothing duplicated, every failure readable):

  - a FHIR validation failure (IssuerOfPatientID "General Hospital" as the identifier's
    system with --issuer-as-system: not a FHIR uri) is one "fhir" line in the error log
    with status 400 and the OperationOutcome's text, and the entries after it still sync;
    an invalid optional value (PatientSex "X") is an "invalidValue" line and the entry
    syncs without it; a missing required value (no Modality) is a "dicom" line;
  - kill -9 in the middle of a batch of 40 entries, then a restart: every instance exactly
    once in its ImagingStudy, one ImagingStudy per study, one Patient per PatientID, the
    checkpoint at latest;
  - the FHIR server stopped while dicomcast runs and entries arrive: it retries with
    backoff (said on stderr), then catches up once the server is back; SIGTERM then ends
    it with status 0;
  - a change feed with gaps (a loopback proxy between dicomcast and dicomfs): an entry
    missing from a page once is read again and synced; one that never comes is logged as
    a "gap" and the entries after it sync;
  - a FHIR server that is not R4 is refused at start with a clear message (exit 1).
"""
import http.server
import json
import os
import signal
import socketserver
import sys
import threading
import time
import urllib.request

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "fhir"))
import testutil as tu  # noqa: E402
import webutil as wu  # noqa: E402
import fhirutil as fu  # noqa: E402

NAME = "dicomcast_recovery"
ROOT = "1.2.826.0.1.3680043.9.7777.111"
CT = "1.2.840.10008.5.1.4.1.1.2"
BOUNDARY = "dicomcast-recovery"


def uid(*parts):
    return ".".join([ROOT] + [str(p) for p in parts])


def stow(srv, datasets):
    body = wu.multipart([("application/dicom", wu.dicom_bytes(d)) for d in datasets], BOUNDARY)
    r = srv.stow("/v2/studies", body, f'multipart/related; type="application/dicom"; boundary={BOUNDARY}')
    return r.status == 200


def inst(study, series, n, pid, **kw):
    kw.setdefault("Modality", "CT")
    return tu.make_dataset(uid(study), uid(study, series), uid(study, series, n), CT, PatientID=pid,
                           InstanceNumber=str(n), **kw)


def latest(srv):
    return (wu.json_body(srv.get("/v1/changefeed/latest")) or {}).get("sequence", 0)


def validation(c, scratch, srv, fhir):
    ok = stow(srv, [inst(1, 1, 1, "V-1", IssuerOfPatientID="General Hospital", PatientSex="M")])
    ok &= stow(srv, [inst(2, 1, 1, "V-2", IssuerOfPatientID="urn:oid:1.2.3", PatientSex="X")])
    d = inst(3, 1, 1, "V-3")
    del d.Modality
    ok &= stow(srv, [d])
    ok &= stow(srv, [inst(4, 1, 1, "V-4", PatientSex="F")])
    c.ok(ok, "STOW of 4 instances (a bad issuer, a bad sex, no Modality, a good one)")
    cast = fu.Cast(srv.url, fhir.url, os.path.join(scratch, "validation.json"), "--issuer-as-system")
    p = cast.once()
    c.ok(p.returncode == 0, "dicomcast --once exits 0 although entries failed", p.stderr[-1500:])
    errs = cast.error_lines()
    by_kind = {}
    for e in errs:
        by_kind.setdefault(e["kind"], []).append(e)
    f = by_kind.get("fhir", [])
    c.ok(len(f) == 1 and f[0].get("fhirStatus") == 400 and f[0].get("sopInstanceUid") == uid(1, 1, 1)
         and "uri" in f[0].get("error", "").lower() and f[0].get("sequence") == 1,
         "the validation failure: one 'fhir' line, status 400, the sequence, the UIDs, the outcome's text", tu.short(errs))
    iv = by_kind.get("invalidValue", [])
    c.ok(len(iv) == 1 and iv[0].get("tag") == "00100040" and iv[0].get("value") == "X",
         "PatientSex X: one 'invalidValue' line naming the tag and value", tu.short(errs))
    dc = by_kind.get("dicom", [])
    c.ok(len(dc) == 1 and dc[0].get("tag") == "00080060" and dc[0].get("sopInstanceUid") == uid(3, 1, 1),
         "no Modality: one 'dicom' line naming the tag", tu.short(errs))
    c.eq(fhir.study(uid(1)), None, "the refused entry left nothing (the transaction is atomic)")
    p2 = fhir.search("Patient", identifier="urn:oid:1.2.3|V-2")
    c.ok(len(p2) == 1 and "gender" not in p2[0], "the entry after the failure synced: V-2's Patient (issuer as "
         "system), without a gender", tu.short(p2))
    c.ok(isinstance(fhir.study(uid(2)), dict) and isinstance(fhir.study(uid(4)), dict),
         "the entries after the failure synced: their ImagingStudies exist")
    c.eq(cast.synced(), latest(srv), "the checkpoint is past the failed entries")


def kill9(c, scratch, srv, fhir):
    base = latest(srv)
    data = [inst(10 + s, 1 + (n % 2), n, f"K-{s}", PatientName=f"Kill^{s}") for s in range(4) for n in range(1, 11)]
    c.ok(stow(srv, data), "STOW of 40 instances (4 studies, 2 series each)")
    cast = fu.Cast(srv.url, fhir.url, os.path.join(scratch, "kill.json"), "--batch", "10")
    # Start where the previous part ended: the entries of this part only.
    with open(cast.state, "w") as f:
        json.dump({"syncedSequence": base}, f)
    proc = cast.start("--once", stderr_path=os.path.join(scratch, "kill1.stderr"))
    reached = fu.wait_for(lambda: cast.synced() >= base + 12 or proc.poll() is not None, 60, 0.02)
    proc.kill()
    proc.wait()
    at = cast.synced()
    c.ok(reached and base < at < base + 40, f"dicomcast killed with SIGKILL mid-batch (checkpoint at {at - base} of 40)")
    p = cast.once()
    c.ok(p.returncode == 0, "the restarted dicomcast --once exits 0", p.stderr[-1500:])
    c.eq(cast.synced(), latest(srv), "the checkpoint reaches latest")
    ok = True
    for s in range(4):
        found = fhir.search("ImagingStudy", identifier=f"urn:dicom:uid|urn:oid:{uid(10 + s)}")
        uids = [i["uid"] for st in found for se in st.get("series", []) for i in se.get("instance", [])]
        exp = sorted(uid(10 + s, 1 + (n % 2), n) for n in range(1, 11))
        ok &= c.ok(len(found) == 1 and sorted(uids) == exp,
                   f"study {s}: one ImagingStudy, its 10 instances each exactly once", f"{len(found)} studies, {uids}")
        ok &= c.eq(len(fhir.search("Patient", identifier=f"K-{s}")), 1, f"study {s}: one Patient")


def fhir_restart(c, scratch, srv, fhir):
    cast = fu.Cast(srv.url, fhir.url, os.path.join(scratch, "restart.json"), "--poll", "0.2")
    with open(cast.state, "w") as f:
        json.dump({"syncedSequence": latest(srv)}, f)
    err = os.path.join(scratch, "restart.stderr")
    proc = cast.start(stderr_path=err)
    time.sleep(0.5)
    fhir.stop()
    c.ok(stow(srv, [inst(20, 1, n, "R-1") for n in range(1, 6)]), "with the FHIR server stopped, STOW of 5 instances")
    retried = fu.wait_for(lambda: "retrying in" in open(err).read(), 20)
    c.ok(retried, "dicomcast says it is retrying", open(err).read()[-500:])
    time.sleep(2)
    fhir.start()
    goal = latest(srv)
    caught = fu.wait_for(lambda: cast.synced() >= goal, 60, 0.2)
    c.ok(caught, "after the FHIR server is back, dicomcast catches up", open(err).read()[-1000:])
    st = fhir.study(uid(20))
    n = sum(len(se.get("instance", [])) for se in (st or {}).get("series", [])) if isinstance(st, dict) else 0
    c.eq(n, 5, "the 5 instances are in the ImagingStudy")
    c.ok(isinstance(fhir.study(uid(2)), dict), "what was synced before the restart is still there")
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(timeout=20)
    except Exception:
        proc.kill()
        rc = proc.wait()
    c.eq(rc, 0, "SIGTERM: dicomcast exits 0")
    c.ok("stopped by signal 15" in open(err).read(), "... and says so")


class GapProxy:
    """A loopback proxy to dicomfs that removes the entry of sequence ONCE from the first
    page holding it, and the entry of sequence ALWAYS from every page."""

    def __init__(self, upstream, once, always):
        proxy = self
        self.once, self.always, self.dropped_once = once, always, False

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                req = urllib.request.Request(upstream + self.path, headers={"Accept": "application/json"})
                opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
                with opener.open(req, timeout=60) as r:
                    status, body = r.status, r.read()
                if self.path.startswith("/v1/changefeed?") and body:
                    entries = json.loads(body)
                    keep = []
                    for e in entries:
                        if e["sequence"] == proxy.always:
                            continue
                        if e["sequence"] == proxy.once and not proxy.dropped_once:
                            proxy.dropped_once = True
                            continue
                        keep.append(e)
                    body = json.dumps(keep).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def gaps(c, scratch, srv, fhir):
    base = latest(srv)
    c.ok(stow(srv, [inst(30, 1, n, "G-1") for n in range(1, 9)]), "STOW of 8 instances")
    proxy = GapProxy(srv.url, once=base + 3, always=base + 6)
    try:
        # The Endpoint's address is the proxy's URL here: another endpoint, as it should be.
        cast = fu.Cast(proxy.url, fhir.url, os.path.join(scratch, "gaps.json"), "--gap-retries", "1", "--batch", "5")
        with open(cast.state, "w") as f:
            json.dump({"syncedSequence": base}, f)
        p = cast.once()
    finally:
        proxy.close()
    c.ok(p.returncode == 0, "dicomcast --once through the gapping proxy exits 0", p.stderr[-1500:])
    c.ok(proxy.dropped_once, "the proxy did drop an entry once")
    st = fhir.study(uid(30))
    got = sorted(i["uid"] for se in (st or {}).get("series", []) for i in se.get("instance", [])) if isinstance(st, dict) else []
    exp = sorted(uid(30, 1, n) for n in range(1, 9) if n != 6)
    c.eq(got, exp, "every instance but the never-delivered one is synced (the once-dropped one too)")
    g = [e for e in cast.error_lines() if e["kind"] == "gap"]
    c.ok(len(g) == 1 and g[0].get("sequence") == base + 6, "the permanent gap is one 'gap' line with its sequence",
         tu.short(cast.error_lines()))
    c.eq(cast.synced(), base + 8, "the checkpoint moves past the gap to latest")


class NotR4(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def do_GET(self):
        body = json.dumps({"resourceType": "CapabilityStatement", "fhirVersion": "3.0.2",
                           "rest": [{"interaction": [{"code": "transaction"}]}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def not_r4(c, scratch, srv):
    s = socketserver.TCPServer(("127.0.0.1", 0), NotR4)
    threading.Thread(target=s.serve_forever, daemon=True).start()
    try:
        p = fu.Cast(srv.url, f"http://127.0.0.1:{s.server_address[1]}/fhir", os.path.join(scratch, "stu3.json")).once()
    finally:
        s.shutdown()
        s.server_close()
    c.ok(p.returncode == 1 and "needs FHIR R4" in p.stderr and "3.0.2" in p.stderr,
         "a FHIR STU3 server is refused at start (exit 1, the version named)", f"{p.returncode}: {p.stderr[-500:]}")


def main():
    tu.require_binary()
    fu.require_dicomcast()
    c = tu.Checker(NAME)
    scratch = tu.scratch(NAME)
    with wu.Server(scratch) as srv, fu.FhirServer(scratch, test=NAME, persist=True) as fhir:
        validation(c, scratch, srv, fhir)
        kill9(c, scratch, srv, fhir)
        fhir_restart(c, scratch, srv, fhir)
        gaps(c, scratch, srv, fhir)
        not_r4(c, scratch, srv)
        srv.finish_check(c)
    c.finish()


if __name__ == "__main__":
    main()
