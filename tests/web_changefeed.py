"""HTTP end-to-end: the change feed of `dicomfs serve` (GET /v{n}/changefeed[/latest]).

As the reference serves it (azure-dicom-api.md section 6):
  - an empty archive: /changefeed is 200 [], /changefeed/latest 204 without a body (both
    modes);
  - 10 instances stored one STOW at a time, two of them deleted, a series deleted, one
    deleted instance stored again with the same UIDs: every entry has the reference's
    camelCase keys (no null members), an ISO 8601 timestamp in UTC, action create/delete
    and the state derived from what exists now: current, replaced (a newer version holds
    the UIDs) or deleted; metadata (the current version's, also on replaced entries) only
    on entries of existing instances and only with includeMetadata=true (the default);
  - v1 (and v1.0-prerelease): offset/limit are a window of sequence numbers,
    offset < sequence <= offset+limit, limit 1..100 (10); paging through the whole feed in
    windows gives every entry once; the same JSON as `dicomfs changes`;
  - v2: startTime (inclusive) / endTime (exclusive) with a mandatory zone (Z, +02:00,
    -05:30 name the same instant), fractions of seconds, offset counting rows of the
    window, limit 1..200 (100), ordered by timestamp then sequence;
  - latest: v1 the highest sequence, v2 the newest timestamp; includeMetadata too;
  - 400 with a plain-text reason for every bad parameter: not a number, out of range,
    given twice, not a date and time, no zone, endTime <= startTime, includeMetadata
    not true/false; unknown parameters (and v2's times on v1) are ignored;
  - application/json whatever Accept says (the reference does not negotiate it), GET
    only (405 with Allow), CORS preflight, case-insensitive route and parameter names.
"""
import calendar
import datetime
import json
import os
import re
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import testutil as tu  # noqa: E402
import webutil as wu  # noqa: E402

ROOT = "1.2.826.0.1.3680043.9.7777.81"
STUDY = f"{ROOT}.1"
SERIES = [f"{STUDY}.1", f"{STUDY}.2"]
KEYS = {"sequence", "partitionName", "studyInstanceUid", "seriesInstanceUid", "sopInstanceUid", "action",
        "timestamp", "state"}
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,7})?(\+00:00|Z)$")


def main():
    tu.require_binary()
    c = tu.Checker("web_changefeed")
    scratch = tu.scratch("web_changefeed")
    with wu.Server(scratch, "lenient") as srv, wu.Server(scratch, "strict", args=["--strict"]) as strict:
        empty_feed(c, srv, "default")
        empty_feed(c, strict, "strict")
        run(c, srv)
        accept_and_methods(c, srv, strict)
        srv.finish_check(c)
        strict.finish_check(c)
    c.finish()


# ---- helpers ----------------------------------------------------------------------------

def get_json(c, srv, url, what, status=200):
    r = srv.get(url)
    ct, _ = wu.media_type(r.headers.get("Content-Type"))
    ok = c.ok(r.status == status and ct == "application/json", f"{what}: {status} application/json", wu.describe(r))
    data = wu.json_body(r) if ok else None
    return r, data


def feed(srv, url):
    r = srv.get(url)
    return wu.json_body(r) if r.status == 200 else None


def ts_us(text):
    """'2024-01-31T08:00:00.123456+00:00' -> microseconds since the epoch (exact)."""
    d = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return calendar.timegm(d.utctimetuple()) * 1000000 + d.microsecond


def iso(us, hours=0, minutes=0, digits=6):
    """US as ISO 8601 in the zone +HOURS:MINUTES (Z for 0), DIGITS fraction digits (cut)."""
    tz = datetime.timezone(datetime.timedelta(hours=hours, minutes=minutes))
    d = datetime.datetime.fromtimestamp(us // 1000000, tz).replace(microsecond=us % 1000000)
    text = d.strftime("%Y-%m-%dT%H:%M:%S")
    if digits:
        text += "." + f"{d.microsecond:06d}{'0' * 7}"[:digits]
    off = d.strftime("%z")
    return text + ("Z" if off == "+0000" else off[:3] + ":" + off[3:])


def q(**params):
    return urllib.parse.urlencode(params)  # '+' becomes %2B, as a client must send it


def instance(n, series, **extra):
    sop = f"{series}.{n}"
    ds = tu.make_dataset(STUDY, series, sop, PatientName="Feed^Test", PatientID="CF1", Modality="OT",
                         InstanceNumber=n, **extra)
    return sop, wu.dicom_bytes(ds)


def expected_state(entry, entries, live):
    """current for the newest create of an instance that exists, replaced for its older
    entries, deleted for every entry of an instance that no longer exists."""
    sop = entry["sopInstanceUid"]
    if sop not in live:
        return "deleted"
    newest = max(e["sequence"] for e in entries if e["sopInstanceUid"] == sop and e["action"] == "create")
    return "current" if entry["sequence"] == newest else "replaced"


# ---- the empty archive --------------------------------------------------------------------

def empty_feed(c, srv, mode):
    for v in ("v1", "v1.0-prerelease", "v2"):
        r = srv.get(f"/{v}/changefeed/latest")
        c.ok(r.status == 204 and r.body == b"", f"{mode}: empty archive: GET /{v}/changefeed/latest is 204 without a body",
             wu.describe(r))
        r = srv.get(f"/{v}/changefeed")
        c.ok(r.status == 200 and r.body == b"[]", f"{mode}: empty archive: GET /{v}/changefeed is 200 []", wu.describe(r))


# ---- the feed ------------------------------------------------------------------------------

def run(c, srv):
    live = set()
    sops = []
    for n in range(1, 11):
        sop, data = instance(n, SERIES[0] if n <= 5 else SERIES[1], ImageComments="version 1")
        r = srv.stow("/v2/studies", data, "application/dicom")
        c.eq(r.status, 200, f"STOW instance {n}: 200")
        sops.append(sop)
        live.add(sop)
        time.sleep(0.002)  # distinct timestamps for the time windows

    _, first = get_json(c, srv, "/v1/changefeed", "GET /v1/changefeed (10 stored)")
    c.eq([e.get("sequence") for e in first or []], list(range(1, 11)),
         "v1 defaults (offset 0, limit 10): sequences 1..10 in order")
    c.eq([e.get("sopInstanceUid") for e in first or []], sops, "the entries name the stored instances in order")

    # Two instances, then the second series (5 instances in one delete).
    for sop in sops[2:4]:
        r = srv.request("DELETE", f"/v2/studies/{STUDY}/series/{SERIES[0]}/instances/{sop}")
        c.eq(r.status, 204, f"DELETE instance {sop}: 204")
        live.discard(sop)
    r = srv.request("DELETE", f"/v2/studies/{STUDY}/series/{SERIES[1]}")
    c.eq(r.status, 204, "DELETE the second series (5 instances): 204")
    live -= set(sops[5:])
    # The third instance again, same UIDs, other content: a new version.
    time.sleep(0.002)
    sop3, data = instance(3, SERIES[0], ImageComments="version 2")
    r = srv.stow("/v2/studies", data, "application/dicom")
    c.eq(r.status, 200, "STOW the deleted third instance again (same UIDs): 200")
    live.add(sop3)

    r, entries = get_json(c, srv, "/v2/changefeed", "GET /v2/changefeed (the whole feed)")
    entries = entries or []
    c.eq(len(entries), 18, "18 entries: 10 creates, 7 deletes, 1 create")
    shape(c, entries)
    states(c, entries, live, sops, sop3)
    v1_windows(c, srv, entries)
    same_as_cli(c, srv)
    v2_windows(c, srv, entries)
    latest(c, srv, entries)
    bad_parameters(c, srv)


def shape(c, entries):
    bad_keys = [e for e in entries if not KEYS <= set(e) <= KEYS | {"metadata"}]
    c.ok(not bad_keys, "every entry has exactly the reference's camelCase keys (metadata optional)",
         tu.short(bad_keys[:2]))
    nulls = [e for e in entries if any(v is None for v in e.values())]
    c.ok(not nulls, "no entry has a null member (null members are left out)", tu.short(nulls[:2]))
    c.ok(all(isinstance(e.get("sequence"), int) for e in entries), "sequence is a JSON number")
    seqs = [e.get("sequence") for e in entries]
    c.eq(seqs, sorted(set(seqs)), "sequences are unique and increase")
    c.ok(all(e.get("partitionName") == "Microsoft.Default" for e in entries), "partitionName is Microsoft.Default")
    c.ok(all(e.get("studyInstanceUid") == STUDY for e in entries), "studyInstanceUid of every entry")
    c.eq([e.get("action") for e in entries], ["create"] * 10 + ["delete"] * 7 + ["create"],
         "actions: create x10, delete x7, create")
    bad_ts = [e.get("timestamp") for e in entries if not TIMESTAMP.match(str(e.get("timestamp")))]
    c.ok(not bad_ts, "timestamps are ISO 8601 in UTC (2024-01-31T08:00:00.123456+00:00)", tu.short(bad_ts[:3]))
    stamps = [ts_us(e["timestamp"]) for e in entries if not bad_ts]
    c.ok(stamps == sorted(stamps), "timestamps do not go back as sequences increase")
    now = time.time() * 1e6
    c.ok(all(abs(now - t) < 3600e6 for t in stamps), "timestamps are the time of the change (within the hour)")


def states(c, entries, live, sops, sop3):
    wrong = [(e["sequence"], e.get("state"), expected_state(e, entries, live)) for e in entries
             if e.get("state") != expected_state(e, entries, live)]
    c.ok(not wrong, "every entry's state: current, replaced (stored again) or deleted, from what exists now",
         tu.short(wrong))
    by_state = {s: [e for e in entries if e.get("state") == s] for s in ("current", "replaced", "deleted")}
    c.eq(len(by_state["current"]), 3 + 1, "current: instances 1, 2, 5 and the new version of 3")
    c.eq(sorted(e["sequence"] for e in by_state["replaced"]), [3, 11],
         "replaced: the first create and the delete of instance 3 (stored again)")
    c.eq(len(by_state["deleted"]), 18 - 4 - 2, "deleted: every entry of instances 4 and 6..10")
    with_meta = [e for e in entries if "metadata" in e]
    c.ok(all(e["state"] != "deleted" for e in with_meta) and len(with_meta) == 6,
         "includeMetadata defaults to true: metadata on the 6 entries of existing instances, none on deleted ones",
         f"{len(with_meta)} with metadata")
    c.ok(all(tu.jget(e["metadata"], "SOPInstanceUID") == e["sopInstanceUid"] for e in with_meta),
         "metadata is the instance's DICOM JSON (00080018 = sopInstanceUid)")
    replaced = by_state["replaced"]
    c.ok(replaced and all(tu.jget(e.get("metadata") or {}, "ImageComments") == "version 2" for e in replaced),
         "replaced entries carry the current version's metadata (ImageComments 'version 2')",
         tu.short([e.get("metadata", {}).get("00204000") for e in replaced]))
    c.ok(any(e["sopInstanceUid"] == sop3 and e["state"] == "current" and e["action"] == "create" for e in entries),
         "the new create of instance 3 is current")


def v1_windows(c, srv, entries):
    seqs = [e["sequence"] for e in entries]
    for v in ("v1", "v1.0-prerelease"):
        for offset, limit in ((0, 4), (2, 3), (10, 5), (17, 10), (18, 10), (100, 100)):
            got = feed(srv, f"/{v}/changefeed?offset={offset}&limit={limit}&includeMetadata=false")
            want = [s for s in seqs if offset < s <= offset + limit]
            c.eq([e["sequence"] for e in got or []], want,
                 f"/{v}/changefeed?offset={offset}&limit={limit}: entries with {offset} < sequence <= {offset + limit}")
    # Paging through the whole feed in windows: every entry once, gaps or not.
    paged, offset = [], 0
    while offset <= seqs[-1] + 4:
        page = feed(srv, f"/v1/changefeed?offset={offset}&limit=4") or []
        c.ok(all(offset < e["sequence"] <= offset + 4 for e in page), f"v1 window offset={offset}&limit=4 stays inside it")
        paged += page
        offset += 4
    c.eq([e["sequence"] for e in paged], seqs, "paging v1 windows of 4 gives every entry once, in order")
    c.eq(paged, entries, "v1 pages have the same entries as the v2 feed (metadata included)")
    got = feed(srv, "/v1/changefeed?offset=0&limit=100")
    c.eq(len(got or []), 18, "v1 limit=100 (the maximum)")
    got = feed(srv, "/v1/changefeed?includeMetadata=false")
    c.ok(got is not None and len(got) == 10 and not any("metadata" in e for e in got),
         "v1 includeMetadata=false: no metadata on any entry (default limit 10)")


def same_as_cli(c, srv):
    for offset, limit, meta in ((0, 10, True), (5, 7, False), (10, 100, True)):
        url = f"/v1/changefeed?offset={offset}&limit={limit}&includeMetadata={'true' if meta else 'false'}"
        got = feed(srv, url)
        rc, cli, p = tu.changes(srv.archive, offset=offset, limit=limit, metadata=meta)
        c.ok(rc == 0 and got is not None and got == cli, f"GET {url} equals `dicomfs changes` (--offset {offset} --limit "
             f"{limit}{'' if meta else ' --no-metadata'})", f"rc {rc}; {p.stderr.strip()[:200]}")


def v2_windows(c, srv, entries):
    stamps = [ts_us(e["timestamp"]) for e in entries]

    def window(start=None, end=None):
        return [e["sequence"] for e, t in zip(entries, stamps)
                if (start is None or t >= start) and (end is None or t < end)]

    def seqs(params, what):
        got = feed(srv, "/v2/changefeed?" + q(includeMetadata="false", **params))
        if got is None:
            c.ok(False, what, f"GET with {params} failed")
            return None
        return [e["sequence"] for e in got]

    t5, t12 = stamps[4], stamps[11]
    c.eq(seqs({"startTime": iso(t5)}, "startTime"), window(start=t5), "v2 startTime is inclusive (Z)")
    c.eq(seqs({"endTime": iso(t5)}, "endTime"), window(end=t5), "v2 endTime is exclusive (Z)")
    c.eq(seqs({"startTime": iso(t5), "endTime": iso(t12)}, "both"), window(t5, t12),
         "v2 startTime..endTime: [start, end)")
    c.eq(seqs({"startTime": iso(t5, 2), "endTime": iso(t12, 2)}, "+02:00"), window(t5, t12),
         "the same instants written in +02:00 give the same window")
    c.eq(seqs({"startTime": iso(t5, -5, -30), "endTime": iso(t12, 14)}, "-05:30/+14:00"), window(t5, t12),
         "... and in -05:30 and +14:00")
    # t5's UTC wall-clock time with another zone: -02:00 is two hours later (nothing yet),
    # +02:00 two hours earlier (everything).
    c.eq(seqs({"startTime": iso(t5).replace("Z", "-02:00")}, "-02:00"), window(start=t5 + 7200 * 1000000),
         "t5's wall-clock time with -02:00 is two hours after t5 (no entries)")
    c.eq(seqs({"startTime": iso(t5).replace("Z", "+02:00")}, "+02:00"), window(start=t5 - 7200 * 1000000),
         "t5's wall-clock time with +02:00 is two hours before t5 (every entry)")
    c.eq(seqs({"startTime": iso(t5 + 1)}, "t5+1us"), window(start=t5 + 1), "microseconds count: startTime 1 us later")
    c.eq(seqs({"startTime": iso(t5, digits=7)}, "7 digits"), window(start=t5), "7 fraction digits (.NET's 'O')")
    c.eq(seqs({"startTime": iso(t5, digits=3)}, "ms"), window(start=t5 - t5 % 1000), "3 fraction digits (milliseconds)")
    c.eq(seqs({"startTime": iso(t5, digits=0)}, "no fraction"), window(start=t5 - t5 % 1000000), "no fraction")
    minute = t5 - t5 % 60000000
    no_secs = iso(minute, digits=0)[:16] + "Z"
    c.eq(seqs({"startTime": no_secs}, "hh:mm"), window(start=minute), f"no seconds ({no_secs})")
    c.eq(seqs({"startTime": iso(t5).replace("T", " ")}, "space"), window(start=t5), "a space between date and time")
    c.eq(seqs({"startTime": iso(t5, 2).replace("+02:00", "+0200")}, "+0200"), window(start=t5), "an offset without colon")
    c.eq(seqs({"startTime": "2000-01-01T00:00:00Z", "endTime": "2000-01-02T00:00:00Z"}, "past"), [],
         "a window in the past: 200 []")
    c.eq(seqs({"startTime": ""}, "blank"), window(), "a blank startTime is as none (the reference skips it)")
    # Row offset and limit inside the window, ordered by timestamp then sequence.
    all_v2 = seqs({}, "all")
    c.eq(all_v2, window(), "v2 without a window: every entry (limit 100 by default)")
    ordered = [e["sequence"] for e, t in sorted(zip(entries, stamps), key=lambda p: (p[1], p[0]["sequence"]))]
    c.eq(all_v2, ordered, "v2 is ordered by timestamp, then sequence")
    c.eq(seqs({"offset": 2, "limit": 3}, "rows"), ordered[2:5], "v2 offset/limit count rows: offset=2&limit=3")
    c.eq(seqs({"startTime": iso(t5), "offset": 1, "limit": 2}, "rows in window"), window(start=t5)[1:3],
         "v2 offset counts rows of the window, not sequences")
    c.eq(seqs({"limit": 200}, "limit 200"), ordered, "v2 limit=200 (the maximum)")
    c.eq(seqs({"offset": 50}, "offset past"), [], "v2 offset past the end: 200 []")
    # A '+' sent unencoded arrives as a space: taken as '+' by default (not with --strict).
    raw = iso(t5, 2)
    r = srv.get("/v2/changefeed?includeMetadata=false&startTime=" + raw)
    c.ok(r.status == 200 and [e["sequence"] for e in wu.json_body(r) or []] == window(start=t5),
         f"an unencoded '+' in startTime={raw} (a space once decoded) is taken as '+'", wu.describe(r))
    got = feed(srv, "/v2/changefeed?includeMetadata=false&startTime=" + urllib.parse.quote(iso(t5), safe=":"))
    c.eq([e["sequence"] for e in got or []], window(start=t5), "percent-encoded colons are fine")


def latest(c, srv, entries):
    for v in ("v1", "v1.0-prerelease", "v2"):
        r, e = get_json(c, srv, f"/{v}/changefeed/latest", f"GET /{v}/changefeed/latest")
        c.ok(isinstance(e, dict), f"/{v}/changefeed/latest is one JSON object")
        c.eq(e, entries[-1], f"/{v}/changefeed/latest is the newest entry (with its metadata)")
    r, e = get_json(c, srv, "/v2/changefeed/latest?includeMetadata=false", "latest without metadata")
    c.ok(isinstance(e, dict) and "metadata" not in e and e.get("sequence") == entries[-1]["sequence"],
         "latest?includeMetadata=false: the newest entry without metadata", tu.short(e))
    r = srv.get("/v2/changefeed/latest?includeMetadata=maybe")
    c.ok(r.status == 400 and wu.is_text_error(r), "latest?includeMetadata=maybe: 400", wu.describe(r))
    r = srv.get("/v1/changefeed/latest?offset=abc&limit=0")
    c.eq(r.status, 200, "latest ignores offset and limit (not its parameters)")


def bad_parameters(c, srv):
    def bad(url, why, needle=None):
        r = srv.get(url)
        ok = r.status == 400 and wu.is_text_error(r)
        if ok and needle:
            ok = needle.lower() in r.body.decode("utf-8", "replace").lower()
        c.ok(ok, f"GET {url}: 400 with a plain-text reason [{why}]", wu.describe(r))

    for v in ("v1", "v2"):
        top = 100 if v == "v1" else 200
        bad(f"/{v}/changefeed?limit=0", "limit < 1", "limit")
        bad(f"/{v}/changefeed?limit={top + 1}", f"limit > {top}", "limit")
        bad(f"/{v}/changefeed?limit=abc", "limit not a number", "limit")
        bad(f"/{v}/changefeed?limit=1.5", "limit not a whole number", "limit")
        bad(f"/{v}/changefeed?limit=", "limit empty", "limit")
        bad(f"/{v}/changefeed?offset=-1", "negative offset", "offset")
        bad(f"/{v}/changefeed?offset=x1", "offset not a number", "offset")
        bad(f"/{v}/changefeed?offset=2147483648", "offset beyond int.MaxValue (the reference's [Range])", "offset")
        bad(f"/{v}/changefeed?offset=99999999999999999999", "offset overflows", "offset")
        bad(f"/{v}/changefeed?limit=1&limit=2", "limit twice", "limit")
        bad(f"/{v}/changefeed?offset=1&OFFSET=2", "offset twice (names are case-insensitive)", "offset")
        bad(f"/{v}/changefeed?includeMetadata=yes", "includeMetadata not true/false", "includeMetadata")
        bad(f"/{v}/changefeed?includeMetadata=true&includemetadata=false", "includeMetadata twice", "includeMetadata")
    for value, why in (("2024-01-31T08:00:00", "no zone"), ("2024-01-31", "a date alone has no zone"),
                       ("yesterday", "garbage"), ("2024-13-01T00:00:00Z", "month 13"),
                       ("2023-02-29T00:00:00Z", "February 29 of a common year"), ("2024-01-31T24:00:00Z", "hour 24"),
                       ("2024-01-31T08:00:00+15:00", "offset beyond 14 hours"),
                       ("2024-01-31T08:00:00.Z", "a dot without digits"), ("20240131T080000Z", "basic format"),
                       ("2024-01-31T08:00:00Zjunk", "junk after the zone")):
        bad("/v2/changefeed?" + q(startTime=value), f"startTime {value}: {why}", "startTime")
    bad("/v2/changefeed?" + q(endTime="2024-01-31T08:00:00"), "endTime without zone", "endTime")
    bad("/v2/changefeed?" + q(startTime="2024-01-31T08:00:00Z", endTime="2024-01-31T08:00:00Z"), "endTime = startTime")
    bad("/v2/changefeed?" + q(startTime="2024-01-31T08:00:00Z", endTime="2024-01-31T07:00:00Z"), "endTime < startTime")
    bad("/v2/changefeed?" + q(startTime="2024-01-31T10:00:00+02:00", endTime="2024-01-31T08:00:00Z"),
        "endTime = startTime in other zones")
    bad("/v2/changefeed?" + q(startTime="2024-01-01T00:00:00Z", STARTTIME="2024-01-02T00:00:00Z"), "startTime twice")

    # Unknown parameters are ignored, as ASP.NET model binding ignores them; v1 has no times.
    base = feed(srv, "/v2/changefeed?includeMetadata=false")
    c.eq(feed(srv, "/v2/changefeed?includeMetadata=false&foo=bar&foo=baz"), base, "unknown parameters are ignored")
    c.eq(feed(srv, "/v1/changefeed?includeMetadata=false&limit=100&startTime=garbage"), base,
         "v1 ignores startTime (a v2 parameter)")
    c.eq(feed(srv, "/v2/changefeed?INCLUDEMETADATA=FALSE&Limit=100"), base,
         "parameter names and true/false are case-insensitive")


# ---- Accept, methods, routes ---------------------------------------------------------------

def accept_and_methods(c, srv, strict):
    for s, mode in ((srv, "default"), (strict, "strict")):
        for accept in (None, "*/*", "application/json", "text/html", "application/dicom+json"):
            for url in ("/v2/changefeed?limit=1", "/v2/changefeed/latest"):
                r = s.get(url, accept=accept)
                ct, _ = wu.media_type(r.headers.get("Content-Type"))
                want = 204 if s is strict and url.endswith("latest") else 200  # strict's archive is empty
                c.ok(r.status == want and (want == 204 or ct == "application/json"),
                     f"{mode}: GET {url} with Accept {accept!r}: {want}{' application/json' if want == 200 else ''} "
                     "(the reference does not check Accept here)", wu.describe(r))
    r = strict.get("/v2/changefeed?startTime=2024-01-31T10:00:00+02:00")
    c.ok(r.status == 400 and wu.is_text_error(r),
         "strict: an unencoded '+' (a space once decoded) leaves no zone: 400, as the reference", wu.describe(r))
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        for url in ("/v2/changefeed", "/v1/changefeed/latest"):
            r = srv.request(method, url, body=b"{}" if method != "DELETE" else None,
                            headers={"Content-Type": "application/json"})
            c.ok(r.status == 405 and r.headers.get("Allow") == "GET", f"{method} {url}: 405 with Allow: GET",
                 wu.describe(r) + f", Allow {r.headers.get('Allow')!r}")
    r = srv.request("OPTIONS", "/v2/changefeed", headers={"Origin": "http://viewer.example",
                                                          "Access-Control-Request-Method": "GET"})
    c.ok(r.status == 204 and "GET" in (r.headers.get("Access-Control-Allow-Methods") or ""),
         "OPTIONS /v2/changefeed (CORS preflight): 204 allowing GET", wu.describe(r))
    r = srv.get("/v2/ChangeFeed/Latest")
    c.eq(r.status, 200, "route names are case-insensitive (/v2/ChangeFeed/Latest)")
    r = srv.get("/v2/changefeed")
    c.ok(r.headers.get("Access-Control-Allow-Origin") is not None and r.headers.get("api-supported-versions"),
         "change-feed responses carry CORS and api-supported-versions headers")
    for url, status in (("/v2/partitions/Microsoft.Default/changefeed", 400), ("/v2/changefeed/oldest", 404),
                        ("/v2/changefeed/latest/x", 404), ("/changefeed", 404), ("/v3/changefeed", 404)):
        r = srv.get(url)
        c.ok(r.status == status and wu.is_text_error(r), f"GET {url}: {status}", wu.describe(r))


if __name__ == "__main__":
    main()
