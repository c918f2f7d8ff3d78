"""HTTP end-to-end: `dicomfs serve --tls-cert FILE --tls-key FILE` (HTTPS, libmicrohttpd with
GnuTLS).

  - a self-signed certificate for 127.0.0.1 made here with openssl (RSA and EC P-256);
  - the start line says https://; curl --cacert: health, STOW (its RetrieveURL is https),
    QIDO, WADO (the stored bytes back), metadata; without --cacert curl refuses the
    certificate (so it is ours that is served);
  - HTTP/1.1 keep-alive: two requests in one curl run share the connection ("Re-using
    existing connection"), and two requests on one Python ssl connection both answer;
  - plain http to the https port fails cleanly and the server goes on serving;
  - with --auth as well: 401 without a token, 200 with one, over TLS;
  - bad files stop serve with exit 2 and the reason, before the archive is created: a
    missing certificate, a file that is not PEM, a key that is not the certificate's,
    --tls-cert without --tls-key.

Needs openssl and curl (Debian: openssl, curl). Only 127.0.0.1 is contacted.
"""
import http.client
import json
import os
import shutil
import ssl
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import testutil as tu  # noqa: E402
import webutil as wu  # noqa: E402

DJSON = wu.DICOM_JSON
ROOT = "1.2.826.0.1.3680043.9.7777.98"
STUDY, SERIES, SOP = ROOT + ".1", ROOT + ".1.1", ROOT + ".1.1.1"


def openssl(*args):
    return subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60)


def make_cert(d, name, key_args):
    key, cert = os.path.join(d, name + ".key"), os.path.join(d, name + ".crt")
    p = openssl("req", "-x509", *key_args, "-nodes", "-keyout", key, "-out", cert, "-days", "2",
                "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost")
    if p.returncode != 0:
        raise RuntimeError(f"openssl req: {p.stderr}")
    return cert, key


def curl(*args, timeout=60):
    return subprocess.run(["curl", "-sS", "--noproxy", "*", "--max-time", "30", *args], capture_output=True,
                          timeout=timeout)


def main():
    tu.require_binary()
    c = tu.Checker("web_tls")
    for tool in ("openssl", "curl"):
        if not shutil.which(tool):
            c.ok(False, f"{tool} is installed (Debian package {tool})")
            c.finish()
    scratch = tu.scratch("web_tls")
    certs = os.path.join(scratch, "certs")
    os.makedirs(certs)
    rsa = make_cert(certs, "rsa", ["-newkey", "rsa:2048"])
    ec = make_cert(certs, "ec", ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"])
    round_trip(c, scratch, "rsa", rsa)
    with wu.Server(scratch, "ec-archive", args=["--tls-cert", ec[0], "--tls-key", ec[1]]) as srv:
        r = curl("--cacert", ec[0], "-o", "/dev/null", "-w", "%{http_code}", srv.url + "/health/check")
        c.ok(r.returncode == 0 and r.stdout == b"200", "an EC P-256 certificate serves too",
             f"curl exit {r.returncode}: {r.stdout!r} {r.stderr[-300:]!r}")
        srv.finish_check(c)
    with_auth(c, scratch, rsa)
    bad_files(c, scratch, rsa, ec)
    c.finish()


def round_trip(c, scratch, name, pair):
    cert, key = pair
    data = wu.dicom_bytes(tu.make_dataset(STUDY, SERIES, SOP, PatientName="TLS^TEST", PatientID="TLS1",
                                          StudyDate="20210101", Modality="OT"))
    body = wu.multipart([("application/dicom", data)], "TLSBOUNDARY")
    body_file = os.path.join(scratch, "stow.body")
    with open(body_file, "wb") as f:
        f.write(body)
    with wu.Server(scratch, name + "-archive", args=["--tls-cert", cert, "--tls-key", key]) as srv:
        c.ok(srv.url.startswith("https://127.0.0.1:"), "the start line says https://127.0.0.1:PORT", srv.url)
        base = srv.url
        ca = ["--cacert", cert]
        r = curl(*ca, "-o", "/dev/null", "-w", "%{http_code}", base + "/health/check")
        c.ok(r.returncode == 0 and r.stdout == b"200", "curl --cacert: /health/check -> 200 over TLS",
             f"curl exit {r.returncode}: {r.stdout!r} {r.stderr[-300:]!r}")
        r = curl("-o", "/dev/null", base + "/health/check")
        c.ok(r.returncode == 60, "without --cacert curl refuses the self-signed certificate (exit 60)",
             f"curl exit {r.returncode}: {r.stderr[-300:]!r}")
        r = curl(*ca, "-X", "POST", "--data-binary", "@" + body_file,
                 "-H", 'Content-Type: multipart/related; type="application/dicom"; boundary=TLSBOUNDARY',
                 "-H", "Accept: " + DJSON, "-w", "\n%{http_code}", base + "/v2/studies")
        out, _, status = r.stdout.rpartition(b"\n")
        c.ok(r.returncode == 0 and status == b"200", "STOW over TLS -> 200", f"{status!r} {out[:300]!r} {r.stderr!r}")
        try:
            item = json.loads(out)["00081199"]["Value"][0]
            url = item["00081190"]["Value"][0]
        except Exception:
            url = ""
        c.ok(url == f"{base}/v2/studies/{STUDY}/series/{SERIES}/instances/{SOP}",
             "the STOW answer's RetrieveURL is https://", f"{url!r}; body {out[:400]!r}")
        r = curl(*ca, "-H", "Accept: " + DJSON, base + f"/v2/studies?StudyInstanceUID={STUDY}")
        try:
            found = [wu.first_value(o, "0020000D") for o in json.loads(r.stdout)]
        except Exception:
            found = None
        c.eq(found, [STUDY], "QIDO over TLS finds the study")
        inst = base + f"/v2/studies/{STUDY}/series/{SERIES}/instances/{SOP}"
        r = curl(*ca, "-H", "Accept: application/dicom; transfer-syntax=*", inst)
        c.ok(r.returncode == 0 and r.stdout == data, "WADO over TLS returns the stored bytes",
             f"curl exit {r.returncode}, {len(r.stdout)} bytes (sent {len(data)})")
        # keep-alive: two URLs in one curl run share one connection
        r = curl(*ca, "-v", "-o", "/dev/null", "-o", "/dev/null", "-H", "Accept: " + DJSON,
                 base + "/v2/studies", inst + "/metadata")
        err = r.stderr.decode("utf-8", "replace")
        c.ok(r.returncode == 0 and "Re-using existing connection" in err and err.count("HTTP/1.1 200") == 2,
             "HTTP/1.1 keep-alive over TLS: curl re-uses the connection for the second request",
             f"curl exit {r.returncode}: {err[-1200:]}")
        ctx = ssl.create_default_context(cafile=cert)
        conn = http.client.HTTPSConnection(wu.HOST, srv.port, context=ctx, timeout=wu.HTTP_TIMEOUT)
        statuses = []
        try:
            for path in ("/health/check", f"/v2/studies/{STUDY}/metadata"):
                conn.request("GET", path, headers={"Accept": DJSON})
                resp = conn.getresponse()
                resp.read()
                statuses.append((resp.status, resp.getheader("Connection")))
            sock_reused = conn.sock is not None
        finally:
            conn.close()
        c.ok([s for s, _ in statuses] == [200, 200] and sock_reused and all(h != "close" for _, h in statuses),
             "two requests on one Python TLS connection both answer 200, the connection stays open",
             str(statuses))
        r = curl("-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{srv.port}/health/check")
        c.ok(r.returncode != 0 and r.stdout in (b"000", b""), "plain http to the https port fails (no HTTP answer)",
             f"curl exit {r.returncode}: {r.stdout!r} {r.stderr[-200:]!r}")
        r = curl(*ca, "-o", "/dev/null", "-w", "%{http_code}", base + "/health/check")
        c.ok(r.returncode == 0 and r.stdout == b"200", "... and the server goes on serving https",
             f"curl exit {r.returncode}: {r.stdout!r}")
        srv.finish_check(c)


def with_auth(c, scratch, pair):
    cert, key = pair
    keys = os.path.join(scratch, "auth")
    p = tu.run(["keygen", keys])
    if not c.ok(p.returncode == 0, "dicomfs keygen for the TLS + auth server", p.stderr):
        return
    tok = tu.run(["token", "--key", os.path.join(keys, "private.pem"), "--role", "reader"]).stdout.strip()
    with wu.Server(scratch, "auth-archive", args=["--tls-cert", cert, "--tls-key", key, "--auth",
                                                   os.path.join(keys, "auth.json")]) as srv:
        ca = ["--cacert", cert, "-o", "/dev/null", "-w", "%{http_code}", "-H", "Accept: " + DJSON]
        r = curl(*ca, srv.url + "/v2/studies")
        c.ok(r.stdout == b"401", "TLS + --auth: no token -> 401", repr(r.stdout))
        r = curl(*ca, "-H", f"Authorization: Bearer {tok}", srv.url + "/v2/studies")
        c.ok(r.stdout in (b"200", b"204"), "TLS + --auth: a reader token -> 200/204", repr(r.stdout))
        srv.finish_check(c)


def bad_files(c, scratch, rsa, ec):
    junk = os.path.join(scratch, "junk.pem")
    with open(junk, "w") as f:
        f.write("this is not a certificate\n")
    broken = os.path.join(scratch, "broken.pem")
    with open(broken, "w") as f:
        f.write("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    cases = [
        ("a missing certificate", ["--tls-cert", os.path.join(scratch, "nope.crt"), "--tls-key", rsa[1]],
         "No such file"),
        ("a certificate file that is not PEM", ["--tls-cert", junk, "--tls-key", rsa[1]], "not a PEM"),
        ("a broken PEM certificate", ["--tls-cert", broken, "--tls-key", rsa[1]], "cannot be used"),
        ("a key that is not the certificate's", ["--tls-cert", rsa[0], "--tls-key", ec[1]], "cannot be used"),
        ("--tls-cert without --tls-key", ["--tls-cert", rsa[0]], "--tls-key"),
        ("--tls-key without --tls-cert", ["--tls-key", rsa[1]], "--tls-cert"),
    ]
    for i, (label, args, why) in enumerate(cases):
        archive = os.path.join(scratch, f"bad-{i}")
        p = tu.run(["serve", archive, "--http", "127.0.0.1:0", *args], timeout=60)
        c.ok(p.returncode == 2 and why in p.stderr, f"serve with {label}: exit 2 saying why",
             f"exit {p.returncode}: {p.stderr[-300:]}")
        c.ok(not os.path.exists(archive), f"... and the archive is not created ({label})")


if __name__ == "__main__":
    main()
