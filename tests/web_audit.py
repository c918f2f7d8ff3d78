"""HTTP end-to-end: `dicomfs serve --audit FILE` (one JSON line per request) and the limit on
failed authentications per client address.

  - with --auth: a known sequence of requests (health, STOW, QIDO with patient values in
    the query string, retrieve, HEAD, metadata, frames (404: no pixels), DELETE, change feed, a 401 without a
    token, a 401 with a bad token, a 403, an unrouted path) gives exactly one line each
    (written as each finishes), with time (ISO 8601 UTC), sub (null unless a token was checked), client,
    method, the route template, status, bytes (the body's length as the client got it; 0
    for HEAD) and ms; 401s say authFailed and why;
  - the file is 0600 and holds no token (nor a part of one), no UID of the path, no query
    string and no patient value;
  - after 20 failed authentications (bad tokens; requests without one do not count) from
    127.0.0.2 within a minute: 429 with Retry-After (a valid token too) while 127.0.0.1 is
    still served and /health/check stays open; the block is logged once (event
    authRateLimited); --auth-failures 3 blocks after 3;
  - --audit - writes the lines to stderr; without --auth sub is null; an audit file that
    cannot be opened stops serve (exit 2).

Only 127.0.0.1 / 127.0.0.2 (loopback) are contacted.
"""
import datetime
import http.client
import json
import os
import re
import stat
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import testutil as tu  # noqa: E402
import webutil as wu  # noqa: E402

DJSON = wu.DICOM_JSON
ROOT = "1.2.826.0.1.3680043.9.7777.97"
STUDY, SERIES, SOP = ROOT + ".1", ROOT + ".1.1", ROOT + ".1.1.1"
PATIENT = "SECRETNAME^AUDIT"
PATIENT_ID = "PIDAUDIT4711"
FIELDS = ["time", "sub", "client", "method", "route", "status", "bytes", "ms"]


def token(*args):
    p = tu.run(["token", *args])
    if p.returncode != 0:
        raise RuntimeError(f"dicomfs token {args}: {p.stderr}")
    return p.stdout.strip()


def request(port, method, path, headers=None, body=None, source="127.0.0.1"):
    conn = http.client.HTTPConnection(wu.HOST, port, timeout=wu.HTTP_TIMEOUT, source_address=(source, 0))
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}))
        r = conn.getresponse()
        data = r.read()
        return wu.Response(r.status, r.reason, r.headers, data)
    finally:
        conn.close()


def read_lines(path):
    with open(path) as f:
        text = f.read()
    return text, [json.loads(line) for line in text.splitlines() if line.strip()]


def main():
    tu.require_binary()
    c = tu.Checker("web_audit")
    scratch = tu.scratch("web_audit")
    keys = os.path.join(scratch, "keys")
    p = tu.run(["keygen", keys])
    c.ok(p.returncode == 0, "dicomfs keygen", p.stderr)
    key = os.path.join(keys, "private.pem")
    owner = token("--key", key, "--role", "owner", "--sub", "owner@audit")
    reader = token("--key", key, "--role", "reader", "--sub", "reader@audit")
    audit = os.path.join(scratch, "audit.jsonl")
    with wu.Server(scratch, "archive", args=["--auth", os.path.join(keys, "auth.json"), "--audit", audit]) as srv:
        c.ok("audit log: " + audit in srv.stderr(), "serve says where the audit log goes", srv.stderr()[-300:])
        expected = requests(c, srv, owner, reader)
        limiter(c, srv, owner, audit)
        srv.finish_check(c)
    check_file(c, audit, expected, [owner, reader])
    custom_limit(c, scratch, keys)
    stderr_and_errors(c, scratch)
    c.finish()


def requests(c, srv, owner, reader):
    """Sends the sequence; returns [(method, route, status, bytes, sub)] as the log must have it."""
    ob = {"Authorization": f"Bearer {owner}"}
    data = wu.dicom_bytes(tu.make_dataset(STUDY, SERIES, SOP, PatientName=PATIENT, PatientID=PATIENT_ID,
                                          StudyDate="20220202", Modality="OT"))
    body = wu.multipart([("application/dicom", data)], "AUDITB")
    stow_h = dict(ob, **{"Content-Type": 'multipart/related; type="application/dicom"; boundary=AUDITB',
                         "Accept": DJSON})
    inst = f"/v2/studies/{STUDY}/series/{SERIES}/instances/{SOP}"
    steps = [
        ("GET", "/health/check", {}, None, "/health/check", 200, None),
        ("POST", "/v2/studies", stow_h, body, "/v2/studies", 200, "owner@audit"),
        ("GET", f"/v2/studies?PatientName={PATIENT}&PatientID={PATIENT_ID}", dict(ob, Accept=DJSON), None,
         "/v2/studies", 200, "owner@audit"),
        ("GET", f"/v1/studies/{STUDY}/series?Modality=OT", dict(ob, Accept=DJSON), None,
         "/v1/studies/{study}/series", 200, "owner@audit"),
        ("GET", inst, dict(ob, Accept="application/dicom; transfer-syntax=*"), None,
         "/v2/studies/{study}/series/{series}/instances/{instance}", 200, "owner@audit"),
        ("HEAD", inst, dict(ob, Accept="application/dicom; transfer-syntax=*"), None,
         "/v2/studies/{study}/series/{series}/instances/{instance}", 200, "owner@audit"),
        ("GET", f"/v2/studies/{STUDY}/metadata", dict(ob, Accept=DJSON), None, "/v2/studies/{study}/metadata", 200,
         "owner@audit"),
        ("GET", inst + "/frames/1", dict(ob, Accept='multipart/related; type="application/octet-stream"; transfer-syntax=*'),
         None, "/v2/studies/{study}/series/{series}/instances/{instance}/frames/{frames}", 404, "owner@audit"),  # no pixels
        ("GET", f"/v2/studies/{STUDY}/series/{SERIES}/metadata", dict(ob, Accept=DJSON), None,
         "/v2/studies/{study}/series/{series}/metadata", 200, "owner@audit"),
        ("GET", "/v2/changefeed?offset=0&limit=10", ob, None, "/v2/changefeed", 200, "owner@audit"),
        ("GET", "/v2/studies", {"Accept": DJSON}, None, "/v2/studies", 401, None),
        ("GET", f"/v2/studies/{STUDY}", {"Authorization": "Bearer " + owner[:-6] + "AAAAAA"}, None,
         "/v2/studies/{study}", 401, None),
        ("DELETE", f"/v2/studies/{STUDY}", {"Authorization": f"Bearer {reader}"}, None, "/v2/studies/{study}", 403,
         "reader@audit"),
        ("GET", f"/v2/nowhere/{STUDY}", ob, None, None, 404, "owner@audit"),
        ("OPTIONS", "/v2/studies", {"Origin": "http://viewer", "Access-Control-Request-Method": "GET"}, None,
         "/v2/*", 204, None),
        ("DELETE", f"/v2/studies/{STUDY}/series/{SERIES}", ob, None, "/v2/studies/{study}/series/{series}", 204,
         "owner@audit"),
    ]
    expected = []
    for method, path, h, b, route, status, sub in steps:
        r = request(srv.port, method, path, h, b)
        c.ok(r.status == status, f"{method} {route}: {status}", wu.describe(r))
        expected.append((method, route, r.status, 0 if method == "HEAD" else len(r.body), sub))
    return expected


def limiter(c, srv, owner, audit):
    bad = {"Authorization": "Bearer not.a.token", "Accept": DJSON}
    statuses = [request(srv.port, "GET", "/v2/studies", {"Accept": DJSON}, source="127.0.0.2").status
                for _ in range(25)]
    c.eq(statuses, [401] * 25, "25 requests without a token from 127.0.0.2: 401 each (not counted as guesses)")
    statuses = [request(srv.port, "GET", "/v2/studies", bad, source="127.0.0.2").status for _ in range(20)]
    c.eq(statuses, [401] * 20, "20 failed authentications from 127.0.0.2: 401 each")
    r = request(srv.port, "GET", "/v2/studies", bad, source="127.0.0.2")
    ra = r.headers.get("Retry-After") or ""
    c.ok(r.status == 429 and ra.isdigit() and 0 < int(ra) <= 60, "the 21st: 429 with Retry-After (at most 60 s)",
         f"{wu.describe(r)}, Retry-After {ra!r}")
    r = request(srv.port, "GET", "/v2/studies", {"Authorization": f"Bearer {owner}", "Accept": DJSON},
                source="127.0.0.2")
    c.eq(r.status, 429, "while blocked, even a valid token from 127.0.0.2 gets 429")
    r = request(srv.port, "GET", "/health/check", source="127.0.0.2")
    c.eq(r.status, 200, "while blocked, /health/check stays open")
    r = request(srv.port, "GET", "/v2/studies", {"Authorization": f"Bearer {owner}", "Accept": DJSON})
    c.eq(r.status, 200, "another address (127.0.0.1) is still served")
    deadline = time.time() + 10  # a line is written when its request has finished: let them land
    while True:
        _, lines = read_lines(audit)
        if len([x for x in lines if x.get("status") == 429]) >= 2 or time.time() > deadline:
            break
        time.sleep(0.1)
    events = [x for x in lines if x.get("event") == "authRateLimited"]
    c.ok(len(events) == 1 and events[0].get("client") == "127.0.0.2" and events[0].get("blockSeconds") == 60,
         "the block is logged once, naming the address", str(events))
    limited = [x for x in lines if x.get("status") == 429]
    c.ok(len(limited) == 2 and all(x["client"] == "127.0.0.2" and x["sub"] is None for x in limited),
         "the 429s have their request lines (client 127.0.0.2, sub null)", str(limited))


def custom_limit(c, scratch, keys):
    with wu.Server(scratch, "limit-archive", args=["--auth", os.path.join(keys, "auth.json"),
                                                    "--auth-failures", "3"]) as srv:
        bad = {"Authorization": "Bearer not.a.token", "Accept": DJSON}
        statuses = [request(srv.port, "GET", "/v2/studies", bad).status for _ in range(4)]
        c.eq(statuses, [401, 401, 401, 429], "--auth-failures 3: the 4th bad token gets 429")
        c.ok("too many failed authentications" in srv.stderr(), "without --audit the block is said on stderr",
             srv.stderr()[-300:])
        srv.finish_check(c)
    p = tu.run(["serve", os.path.join(scratch, "never2"), "--auth-failures", "x"])
    c.ok(p.returncode == 2 and "--auth-failures" in p.stderr, "--auth-failures x: exit 2", p.stderr[-200:])


def check_file(c, audit, expected, tokens):
    c.eq(oct(stat.S_IMODE(os.stat(audit).st_mode)), oct(0o600), "the audit file is 0600")
    text, lines = read_lines(audit)
    reqs = [x for x in lines if "event" not in x]
    main_part = [x for x in reqs if x["client"] == "127.0.0.1"][:len(expected)]
    c.eq(len([x for x in reqs if x["client"] == "127.0.0.1"]), len(expected) + 1,
         "one line per request (the sequence, and the one after the limiter test)")
    c.eq([list(x)[:8] for x in main_part], [FIELDS] * len(main_part), "each line has time, sub, client, method, "
         "route, status, bytes, ms in that order")
    # lines are written as requests finish (each on its own connection here): compare as sets
    key = lambda t: tuple("" if v is None else str(v) for v in t)  # noqa: E731
    got = sorted(((x["method"], x["route"], x["status"], x["bytes"], x["sub"]) for x in main_part), key=key)
    for e in expected:
        c.ok(e in got, f"a line for {e[0]} {e[1]} {e[2]}: method, route template, status, bytes, sub",
             f"expected {e}; lines {got}")
    c.eq(got, sorted(expected, key=key), "and no other lines")
    times_ok = all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", x["time"]) for x in reqs)
    c.ok(times_ok, "times are ISO 8601 UTC with milliseconds")
    now = datetime.datetime.now(datetime.timezone.utc)
    t0 = datetime.datetime.strptime(main_part[0]["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc)
    c.ok(abs((now - t0).total_seconds()) < 600, "the first time is now (UTC)", main_part[0]["time"])
    c.ok(all(isinstance(x["ms"], (int, float)) and 0 <= x["ms"] < 60000 for x in reqs), "ms is a duration")
    fails = [x for x in main_part if x["status"] == 401]
    c.ok(len(fails) == 2 and all(x.get("authFailed") is True and x.get("reason") for x in fails),
         "401 lines say authFailed and why", str(fails))
    secrets = {"a token": [t for t in tokens] + [t.split(".")[1] for t in tokens] + [t.split(".")[2][:20] for t in tokens],
               "a UID": [STUDY, SERIES, SOP, ROOT], "a patient value": [PATIENT, "SECRETNAME", PATIENT_ID],
               "a query string": ["?", "PatientName", "offset="], "the Authorization header": ["Bearer", "not.a.token"]}
    for what, needles in secrets.items():
        found = [n for n in needles if n in text]
        c.eq(found, [], f"the audit file has no {what}")


def stderr_and_errors(c, scratch):
    with wu.Server(scratch, "open-archive", args=["--audit", "-"]) as srv:
        r = request(srv.port, "GET", "/v2/studies?PatientName=NOBODY", {"Accept": DJSON})
        c.ok(r.status in (200, 204), "without --auth: QIDO answers", wu.describe(r))
        srv.stop()
        lines = [json.loads(x) for x in srv.stderr().splitlines() if x.startswith("{")]
        c.ok(len(lines) == 1 and lines[0]["route"] == "/v2/studies" and lines[0]["sub"] is None
             and "NOBODY" not in srv.stderr(), "--audit - writes the line to stderr (sub null without --auth)",
             srv.stderr()[-600:])
    archive = os.path.join(scratch, "never")
    p = tu.run(["serve", archive, "--http", "127.0.0.1:0", "--audit", os.path.join(scratch, "no", "such", "dir", "a")])
    c.ok(p.returncode == 2 and "audit log" in p.stderr and not os.path.exists(archive),
         "an audit file that cannot be opened: exit 2 saying why, no archive created", p.stderr[-300:])


if __name__ == "__main__":
    main()
