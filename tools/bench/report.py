#!/usr/bin/python3
"""report.py RESULTS.jsonl OUT.json — the benchmark's table and its JSON.

Reads the records run.sh appended (kind = env, dataset, limit, ingest, query, web, profile, xqt,
mount, error, disk),
prints the table (metric, dicomfs, limit/peer, ratio, goal, result) and notes, and writes
OUT.json: {"env", "rows", "notes", "records"}. Goals are checked here; a missed goal is a
FAIL in the table, never a non-zero exit. MB = 10^6 bytes.
"""
import json
import sys

GOAL_SMALL_FILES = 3.0   # small-set instances/s / copy-with-fsync-per-file files/s
GOAL_LARGE_MBS = 0.6     # large-set MB/s / sequential write MB/s (the issue: >= 0.6)
GOAL_FLAT = 1.5          # query median at the largest scale / at the smallest
FLAT_SLACK_MS = 0.5      # ...or an increase below this (whole-process timing noise)
FLAT_SLACK_MS_REPEAT = 0.05  # the same for in-process timing (find --repeat)
GOAL_WEB_STOW_SMALL = 10.0  # STOW-RS small set, 50/request: dicomfs/Orthanc instances/s
GOAL_WEB_STOW_LARGE = 4.0   # STOW-RS large set, 50/request: dicomfs/Orthanc MB/s
GOAL_WEB_QIDO = 0.2         # QIDO-RS p95: dicomfs/Orthanc
GOAL_WEB_WADO = 0.9         # WADO-RS instance and study MB/s / page-cache read MB/s
GOAL_WEB_META = 10.0        # study metadata: Orthanc median / dicomfs median
GOAL_MOUNT_COPY = 0.5    # cp -r into the mount's inbox / cp -r + sync to a plain directory
GOAL_MOUNT_READ = 0.8    # find | xargs cat through the mount / the same over ARCHIVE/objects
# With mountbench.py --passthrough (a minimal passthrough FUSE, tools/bench/passthrough.c), the
# goals are against it instead (the ratios to plain files are then shown for information):
GOAL_MOUNT_COPY_FUSE = 0.8  # cp -r + sync into the inbox / the same into the passthrough FUSE
GOAL_MOUNT_READ_FUSE = 0.9  # warm find | xargs cat through the mount / through the passthrough, same tree
GOAL_MOUNT_FLAT = GOAL_FLAT  # ls -l of a series: with many studies / with few
MOUNT_FLAT_SLACK_MS = 5.0    # ...or an increase below this
NOISY = 1.5              # slowest/fastest run above this: the machine was busy, say so
GOAL_XQT_QIDO = 1.5      # find on an extended query tag / the same query on the core tag
GOAL_FEED_FLAT = GOAL_FLAT  # change-feed page at the largest scale / at the smallest


def load(path):
    recs = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                recs.append(json.loads(line))
    return recs


def fmt(v, unit=""):
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    if abs(v) >= 100:
        s = "%.0f" % v
    elif abs(v) >= 10:
        s = "%.1f" % v
    elif abs(v) < 1 and v != 0:
        s = "%.3f" % v
    else:
        s = "%.2f" % v
    return s + (" " + unit if unit else "")


def median_rec(xs):
    """The record whose "seconds" is the median (the lower one of an even count)."""
    s = sorted(xs, key=lambda x: x["seconds"])
    return s[(len(s) - 1) // 2]


def web_rows(w, row, notes, judge, ratio, where="", stow_only=False):
    """The `web` step (web.py): dicomfs against Orthanc over HTTP, and WADO against the
    page-cache read rate. Ratios are dicomfs/Orthanc (dicomfs/page cache for the WADO
    fraction rows); for latencies lower is better."""
    srv = w.get("servers", {})
    d, o = srv.get("dicomfs", {}), srv.get("orthanc", {})
    peer = "Orthanc"

    clients = []
    for s in (d, o):
        for x in s.get("stow", []):
            c = x.get("client", "webbench")
            if c not in clients:
                clients.append(c)
    judged_client = "curl" if "curl" in clients else "webbench"
    cname = {"webbench": "webbench", "curl": "curl"}

    def stow_of(s, setname, per, client=None):
        """The round with the median time (the lower of an even count)."""
        xs = [x for x in s.get("stow", []) if x["set"] == setname and x["per_request"] == per and
              x.get("client", "webbench") == (client or judged_client)]
        return median_rec(xs) if xs else None

    for name, s in (("dicomfs", d), ("Orthanc", o)):
        for setname, per, client in [(a_, b_, c_) for a_, b_ in (("small", 1), ("small", 50), ("large", 1),
                                                                 ("large", 50)) for c_ in clients]:
            xs = [x for x in s.get("stow", []) if x["set"] == setname and x["per_request"] == per and
                  x.get("client", "webbench") == client]
            if len(xs) > 1:
                t = [x["seconds"] for x in xs]
                notes.append("web STOW %s %s %d/request %s: %d rounds, %s s; the median round is shown%s" % (
                    name, setname, per, client, len(xs), ", ".join("%.2f" % x for x in t),
                    " (NOISY: slowest/fastest %.1fx)" % (max(t) / min(t)) if min(t) > 0 and max(t) / min(t) > NOISY
                    else ""))

    def rate(x, what):
        if not x or x["seconds"] <= 0 or x.get("failed_requests"):
            return None
        return (x["instances"] if what == "inst" else x["bytes"] / 1e6) / x["seconds"]

    def cpu_ms(x):
        if not x or x.get("server_cpu_seconds") is None or not x["instances"] or x.get("failed_requests"):
            return None
        return 1e3 * x["server_cpu_seconds"] / x["instances"]

    # The goals (the issue's): small 1 and 50/request instances/s >= 10x Orthanc, large 50/request
    # MB/s >= 4x, with curl as the client (webbench's rows are shown beside, not judged, when
    # curl's are there).
    for setname, per, client in [(a_, b_, c_) for a_, b_ in (("small", 1), ("small", 50), ("large", 1),
                                                             ("large", 50)) for c_ in clients]:
        a, b = stow_of(d, setname, per, client), stow_of(o, setname, per, client)
        for what, unit in (("inst", "inst/s"), ("mb", "MB/s")):
            goal, st = "", "info"
            g = GOAL_WEB_STOW_SMALL if setname == "small" else GOAL_WEB_STOW_LARGE
            if client == judged_client and ((setname == "small" and what == "inst") or
                                            (setname == "large" and what == "mb" and per == 50)):
                goal, st = ">= %g" % g, judge(ratio(rate(a, what), rate(b, what)), g)
            row("STOW-RS %s set, %d/request, 2 %s clients, %s%s" % (setname, per, cname[client], unit, where),
                rate(a, what), unit, rate(b, what), peer, ratio(rate(a, what), rate(b, what)), goal, st,
                issue=st != "info")
        row("STOW-RS %s set, %d/request, %s: server CPU per instance%s" % (setname, per, cname[client], where), cpu_ms(a),
            "ms", cpu_ms(b), "ms " + peer, ratio(cpu_ms(a), cpu_ms(b)),
            note="user+sys of the server process over the run; peak RSS %s / %s MB" % (
                fmt(a.get("server_peak_rss_kb", 0) / 1024 if a and a.get("server_peak_rss_kb") else None),
                fmt(b.get("server_peak_rss_kb", 0) / 1024 if b and b.get("server_peak_rss_kb") else None)))
        for name, s in (("dicomfs", d), ("Orthanc", o)):
            for x in s.get("stow", []):
                if x["set"] != setname or x["per_request"] != per or x.get("client", "webbench") != client:
                    continue
                if x.get("failed_requests"):
                    notes.append("web STOW %s %s %d/request %s round %s: %d of %d requests failed: %s" % (
                        name, setname, per, client, x.get("rep"), x["failed_requests"], x["requests"],
                        x.get("first_error", "")[:200]))
                if x.get("stored_count") is not None and x["stored_count"] != x["instances"]:
                    notes.append("web STOW Orthanc %s %d/request round %s: it holds %s instances after storing %s" % (
                        setname, per, x.get("rep"), x["stored_count"], x["instances"]))
    if "curl" in clients:
        notes.append("web STOW clients: curl = stowcurl.py, the curl command line (2 processes, one keep-alive "
                     "connection each, --data-binary @prebuilt-body: sent through libcurl's 64 KiB upload buffer, "
                     "Expect: 100-continue above 1 MiB); webbench = libcurl from one memory buffer, Expect off. "
                     "The goals are judged on curl's rows")
    if stow_only:
        for e in w.get("errors", []):
            notes.append("web%s ERROR: %s" % (where, e))
        return

    dq = {q["name"]: q for q in d.get("qido", {}).get("queries", [])}
    oq = {q["name"]: q for q in o.get("qido", {}).get("queries", [])}
    for nm in list(dq) + [n for n in oq if n not in dq]:
        a, b = dq.get(nm), oq.get(nm)
        av = lambda q, k: q.get(k) if q and q.get("status") in (200, 204) else None
        status, note = judge(ratio(av(a, "p95_ms"), av(b, "p95_ms")), GOAL_WEB_QIDO, ge=False), ""
        if a and (a.get("status") not in (200, 204) or a.get("count") != a.get("expected")):
            status = "WRONG"
            note = "dicomfs: HTTP %s, %s studies, expected %s" % (a.get("status"), a.get("count"), a.get("expected"))
        if b and (b.get("status") not in (200, 204) or b.get("count") != b.get("expected")):
            notes.append("web QIDO %s: Orthanc answers HTTP %s with %s studies (expected %s): its time is "
                         "shown, the goal not judged" % (nm, b.get("status"), b.get("count"), b.get("expected")))
            if status in ("PASS", "FAIL"):
                status = "n/a"
                note = "Orthanc's answer differs"
        row("QIDO-RS %s, p95" % nm, av(a, "p95_ms"), "ms", av(b, "p95_ms"), "ms " + peer,
            ratio(av(a, "p95_ms"), av(b, "p95_ms")), "<= %g" % GOAL_WEB_QIDO, status, note)
        row("QIDO-RS %s, median" % nm, av(a, "median_ms"), "ms", av(b, "median_ms"), "ms " + peer,
            ratio(av(a, "median_ms"), av(b, "median_ms")))
    if dq:
        notes.append("web QIDO: %s timed passes over the %d queries after 10 untimed ones, one keep-alive "
                     "connection, on the small set stored by STOW (50/request)" % (w.get("qido_runs"), len(dq)))

    a, b = d.get("metadata"), o.get("metadata")
    ok = lambda m: m and m.get("status") == 200 and m.get("count") == m.get("expected")
    am = a["median_ms"] if ok(a) else None
    bm = b["median_ms"] if ok(b) else None
    row("WADO-RS study metadata (%s inst), median" % w.get("meta_instances"), am, "ms", bm, "ms " + peer,
        ratio(am, bm), "<= %g (%gx faster)" % (1 / GOAL_WEB_META, GOAL_WEB_META),
        judge(ratio(am, bm), 1 / GOAL_WEB_META, ge=False),
        "" if ok(a) or not a else "dicomfs: HTTP %s, %s instances" % (a.get("status"), a.get("count")))
    if a and b:
        row("WADO-RS study metadata, p95", a["p95_ms"] if ok(a) else None, "ms", b["p95_ms"] if ok(b) else None,
            "ms " + peer, ratio(a["p95_ms"] if ok(a) else None, b["p95_ms"] if ok(b) else None),
            note="body %s B dicomfs, %s B Orthanc" % (a.get("bytes"), b.get("bytes")))
    if b and not ok(b):
        notes.append("web metadata: Orthanc answers HTTP %s with %s instances" % (b.get("status"), b.get("count")))

    pc = w.get("page_cache")
    pcr = pc["mb_s"] if pc else None
    if pc:
        row("page-cache read of the large set's object files", pcr, "MB/s",
            note="%d files, read(2) 128 KiB, warm, median of %d passes" % (pc["files"], len(pc["pass_seconds"])))
    tcp = w.get("loopback_tcp")
    if tcp:
        row("loopback TCP, one connection, sendfile -> recv (no HTTP)", tcp["mb_s"], "MB/s", pcr,
            "MB/s page cache", ratio(tcp["mb_s"], pcr),
            note="the same files; best of %d passes: the most one connection carries here" % len(tcp["pass_seconds"]))
    good = lambda x: x and not x.get("non_200") and not x.get("short_bodies")
    for key, what in (("wado_instance", "instance"), ("wado_study", "study (multipart)")):
        by = {c: (d.get("%s_c%d" % (key, c)), o.get("%s_c%d" % (key, c))) for c in (1, 2)}
        rate_of = lambda x: x["mb_s"] if good(x) else None
        # The goal: the server's throughput at its better concurrency (1 or 2 clients: on 2
        # cores the clients compete with the server for the CPU, and one connection waits a
        # round trip between answers).
        best = [(rate_of(a), c) for c, (a, _) in by.items() if a and rate_of(a) is not None]
        if best or any(a for a, _ in by.values()):
            br_, bc = max(best) if best else (None, None)
            row("WADO-RS %s retrieve, large set, MB/s vs page cache" % what, br_, "MB/s", pcr, "MB/s page cache",
                ratio(br_, pcr), ">= %g" % GOAL_WEB_WADO, judge(ratio(br_, pcr), GOAL_WEB_WADO),
                "best of 1 and 2 clients (%s)" % ", ".join(
                    "%d: %s" % (c, fmt(r, "MB/s")) for r, c in sorted(best, key=lambda t: t[1])) if best else "")
        for c in (1, 2):
            a, b = by[c]
            if not a and not b:
                continue
            ar, brr = rate_of(a), rate_of(b)
            label = "WADO-RS %s retrieve, %d client%s" % (what, c, "s" if c > 1 else "")
            row(label + ", MB/s", ar, "MB/s", brr, peer, ratio(ar, brr),
                note=("Orthanc: %.0f%% of page cache" % (100 * brr / pcr) if brr and pcr else "") +
                ("; dicomfs: %.0f%% of loopback TCP" % (100 * ar / tcp["mb_s"]) if ar and tcp else ""))
            if a and b and c == 1:
                row(label + ", per request median", a["request_median_ms"], "ms",
                    b["request_median_ms"], "ms " + peer, ratio(a["request_median_ms"], b["request_median_ms"]))
            for name, x in (("dicomfs", a), ("Orthanc", b)):
                if x and not good(x):
                    notes.append("web WADO %s %d client(s) %s: %d non-200 answers %s, %d bodies shorter than the file" % (
                        what, c, name, x.get("non_200", 0), x.get("statuses"), x.get("short_bodies", 0)))
    parts = []
    for name, s in (("dicomfs", d), ("Orthanc", o)):
        for key in ("wado_instance_c1", "wado_study_c1", "wado_instance_c2", "wado_study_c2"):
            x = s.get(key)
            if x and x.get("server_cpu_seconds_per_pass") is not None:
                parts.append("%s %s: server %.0f%%, client %.0f%%" % (
                    name, key.replace("wado_", ""), 100 * x["server_cpu_seconds_per_pass"] / x["seconds"],
                    100 * x["client_cpu_seconds_per_pass"] / x["seconds"]))
    if parts:
        notes.append("web WADO CPU, %% of one core over a pass (2 cores): %s" % "; ".join(parts))
    if w.get("wado_runs"):
        notes.append("web WADO: 1 or 2 clients, a keep-alive connection each; one untimed pass, then %s timed; "
                     "the median pass; MB/s of the DICOM files' bytes; the goal is judged on the better of "
                     "1 and 2 clients" % w["wado_runs"])

    # The client must not be the bottleneck: its CPU per wall second in each timed figure.
    busiest = []
    for name, s in (("dicomfs", d), ("Orthanc", o)):
        for x in s.get("stow", []):
            busiest.append((x["client_cpu_seconds"] / x["seconds"] if x["seconds"] else 0,
                            "%s STOW %s %d/req" % (name, x["set"], x["per_request"])))
        for key in ("wado_instance_c1", "wado_study_c1", "wado_instance_c2", "wado_study_c2"):
            x = s.get(key)
            if x:
                busiest.append((x["client_cpu_seconds_per_pass"] / x["seconds"] / x.get("clients", 1),
                                "%s %s" % (name, key)))
    if busiest:
        top = max(busiest)
        notes.append("web client (webbench, libcurl): at most %.0f%% of a core per client thread (%s)%s" % (
            100 * top[0], top[1], "; NEAR SATURATION, the client may limit that figure" if top[0] > 0.8 else ""))
    if w.get("peer"):
        notes.append("web peer: " + w["peer"])
    for e in w.get("errors", []):
        notes.append("web ERROR: " + e)


GOAL_CPU_PER_SMALL = 0.25  # ms of CPU per stored small instance (CLI ingest and STOW)
BUCKET_NAMES = {"parse": "parse (DCMTK)", "validation": "validation", "metadata_json": "metadata JSON",
                "index_values": "index values", "sqlite": "SQLite", "file_io": "file I/O (kernel)",
                "fsync": "fsync/syncfs CPU", "http": "HTTP + multipart", "memory": "malloc, page faults",
                "other": "other"}


def profile_rows(p, row, notes, extra):
    """The `profile` step (profile.py): CPU per stored small instance (goal), and its split
    into buckets, printed as a block of its own after the table."""
    if p.get("skipped") or p.get("error"):
        notes.append("profile: skipped (%s)" % (p.get("skipped") or p.get("error")))
        return
    order = p.get("order", list(BUCKET_NAMES))
    cols = [(k, p[k]) for k in ("ingest", "stow") if p.get(k)]
    for k, r in cols:
        what = "CLI ingest" if k == "ingest" else "STOW 50/request, curl"
        v = r.get("cpu_ms_per_instance")
        row("CPU per stored small instance, %s" % what, v, "ms", goal="<= %g" % GOAL_CPU_PER_SMALL,
            status="n/a" if v is None else "PASS" if v <= GOAL_CPU_PER_SMALL else "FAIL", issue=True,
            note="user+sys of the %s process, unprofiled run; %d instances in %.2f s" % (
                "ingest" if k == "ingest" else "server", r.get("instances", 0), r.get("wall_seconds", 0)))
    if not cols:
        return
    extra.append("")
    extra.append("profile: CPU ms per stored small instance by bucket (perf cpu-clock at %s Hz, DWARF stacks; "
                 "share of samples x unprofiled CPU/instance)" % p.get("freq_hz"))
    hdr = "  %-22s" % "bucket" + "".join("  %-22s" % ("CLI ingest" if k == "ingest" else "STOW 50/req (curl)")
                                         for k, _ in cols)
    extra.append(hdr)
    for b in order:
        cells = []
        for _, r in cols:
            x = (r.get("profile") or {}).get("buckets", {}).get(b)
            cells.append("%.3f ms  %4.1f%%" % (x["ms_per_instance"] or 0, 100 * x["share"]) if x else "-")
        extra.append("  %-22s" % BUCKET_NAMES.get(b, b) + "".join("  %-22s" % c for c in cells))
    for label, key in (("  of file I/O: ext4 inode allocation", "inode_alloc"),):
        cells = []
        for _, r in cols:
            x = (r.get("profile") or {}).get(key)
            cells.append("%.3f ms  %4.1f%%" % (x["ms_per_instance"] or 0, 100 * x["share"]) if x else "-")
        extra.append("  %-22s" % label.strip() + "".join("  %-22s" % c for c in cells))
    cells = []
    for _, r in cols:
        cells.append("%.3f ms/inst" % r["cpu_ms_per_instance"] if r.get("cpu_ms_per_instance") else "-")
    extra.append("  %-22s" % "total CPU" + "".join("  %-22s" % c for c in cells))
    cells = []
    for _, r in cols:
        ks = (r.get("profile") or {}).get("kernel_share")
        cells.append("%.0f%%" % (100 * ks) if ks is not None else "-")
    extra.append("  %-22s" % "of which in the kernel" + "".join("  %-22s" % c for c in cells))
    cells = []
    for _, r in cols:
        w = r.get("fsync_wait_ms_per_instance")
        cells.append("%.3f ms/inst" % w if w is not None else "-")
    extra.append("  %-22s" % "fsync wait (wall)" + "".join("  %-22s" % c for c in cells))
    for k, r in cols:
        top = (r.get("profile") or {}).get("top", [])[:12]
        if top:
            extra.append("  top functions (self), %s:" % ("CLI ingest" if k == "ingest" else "STOW 50/request, curl"))
            for t in top:
                extra.append("    %5.1f%%  %-60s %-24s %s" % (100 * t["share"], t["sym"][:60], t["dso"][:24],
                                                          BUCKET_NAMES.get(t["bucket"], t["bucket"])))
    notes.append("profile: fsync wait = wall seconds threads spent in fsync/fdatasync/syncfs (strace -f -c -w), "
                 "summed over threads, per instance; buckets: see docs/PERFORMANCE.md or profile.py")


GOAL_RSS_GROWTH_MB = 64.0


def rss_rows(x, row, notes):
    """The `rss` step (rss.py): peak RSS and its growth while storing ~2 GB."""
    mb = lambda kb: kb / 1024 if kb is not None else None
    for k, what in (("ingest", "dicomfs ingest"), ("stow", "dicomfs serve, STOW 50/request curl")):
        r = x.get(k)
        if not r:
            continue
        if r.get("error"):
            notes.append("rss %s: %s" % (k, r["error"]))
            continue
        g = mb(r.get("growth_kb"))
        row("RSS growth storing %.1f GB, %s" % (x.get("bytes", 0) / 1e9, what), g, "MB", mb(r.get("peak_rss_kb")),
            "MB peak (VmHWM)", goal="< %g MB" % GOAL_RSS_GROWTH_MB,
            status="n/a" if g is None else "PASS" if g < GOAL_RSS_GROWTH_MB else "FAIL", issue=True,
            note="RSS start %s, at 10%% %s, at 50%% %s, end %s MB; peak - start %s MB" % tuple(
                fmt(mb(r.get(f))) for f in ("start_rss_kb", "rss_10pct_kb", "rss_50pct_kb", "end_rss_kb",
                                            "growth_from_start_kb")))
    notes.append("rss: %d large instances (%.1f GB), each run into a fresh archive; growth = peak (VmHWM) - "
                 "VmRSS at 10%% of the run's time (sampled every 0.2 s)" % (x.get("files", 0), x.get("bytes", 0) / 1e9))


def dicomcast_rows(x, row, notes):
    """The `dicomcast` step (dicomcast.py): sync rate and STOW-to-FHIR lag; no goal (issue 10)."""
    s, l = x.get("sync") or {}, x.get("lag") or {}
    if x.get("error"):
        notes.append("dicomcast: %s" % x["error"])
        return
    row("dicomcast sync rate, %d entries into FHIR R4" % s.get("entries", 0), s.get("entries_per_s"), "entries/s",
        note="dicomcast --once from sequence 0: %s" % s.get("summary", ""))
    for k in ("p50", "p95"):
        row("dicomcast lag STOW -> ImagingStudy visible, %s" % k, l.get(k + "_ms"), "ms",
            note="%d STOWs of 1 instance at %s/s while dicomcast polls every 50 ms; max %s ms" % (
                l.get("count", 0), l.get("stow_rate_per_s"), l.get("max_ms")))
    notes.append("dicomcast: against tests/fhir/server.js (@medplum/fhir-router 4.5.2, in memory, validating); "
                 "one transaction per entry after three searches (Patient, Endpoint once, ImagingStudy)")


def xqt_rows(x, row, notes, judge, ratio, ing):
    """The `xqt` step (xqt.py): reindex rate against the same archive's ingest rate, find on
    an extended tag against the same find on the core tag it mirrors, and change-feed pages
    and their growth from the smallest to the largest scale."""
    archives = x.get("archives", [])
    for a in archives:
        label, n = a["label"], a["instances"]
        # The ingest rate of the same archive: this run's (the median run), else the record
        # kept with a reused scale archive.
        g = ing.get(label) or a.get("ingest") or {}
        ir = g["stored"] / g["seconds"] if g.get("seconds") and g.get("stored") else None
        ir_from = "the archive's build (reused)" if g.get("reused") or label not in ing else "this run"
        for r in a.get("reindex", []):
            secs = r.get("operation_seconds") or None
            rate = n / secs if secs else None
            status, note = "info", "operation %s s, %s %s s, CPU %s s; ingest rate from %s" % (
                fmt(secs), "whole process" if r.get("via") != "http" else "over HTTP, POST to done",
                fmt(r.get("seconds")), fmt(r.get("cpu_seconds")), ir_from if ir else "- (not ingested)")
            if r.get("exit") or r.get("status") != "succeeded" or r.get("tag_status") != "ready":
                status = "ERROR"
                note = "exit %s, operation %s, tag %s %s" % (r.get("exit"), r.get("status"), r.get("tag_status"),
                                                            r.get("stderr", ""))
            elif r.get("tag_errors"):
                note += "; %s values could not be indexed" % r["tag_errors"]
            row("reindex, %s-level tag (%s) @%s (%d inst), inst/s" % (r["level"], r["tag"], label, n), rate,
                "inst/s", ir, "inst/s ingest", ratio(rate, ir), "", status, note)
        http = [r for r in a.get("reindex", []) if r.get("via") == "http"]
        if http:
            cli = next((r["cli"] for r in http if r.get("cli")), {})
            notes.append("xqt %s: `tags add --wait` exited %s after %s s (\"%s\"): the reindex of %s was timed "
                         "over HTTP instead, in one `dicomfs serve`" % (
                             label, cli.get("exit"), fmt(cli.get("seconds")), (cli.get("cli_wait_error") or "")[:100],
                             ", ".join(r["tag"] for r in http)))
        dels = ["%s %.2f s" % (d["tag"], d["seconds"]) for d in a.get("deleted", [])]
        if dels:
            notes.append("xqt %s: tags delete (the tags' values removed again): %s" % (label, ", ".join(dels)))
        if a.get("leftover_deleted"):
            notes.append("xqt %s: deleted tags left by an earlier run first: %s" % (
                label, ", ".join(d["tag"] for d in a["leftover_deleted"])))
        for q in a.get("qido", []):
            c, e = q.get("core", {}), q.get("extended", {})
            failed = [y for y in (c, e) if y.get("median_ms") is None]
            wrong = not (c.get("count_ok") and e.get("count_ok"))
            if failed:
                bad = next((r for r in failed[0].get("rounds", []) if r.get("exit")), {})
                status, note = "ERROR", "exit %s: %s" % (bad.get("exit"), (bad.get("stderr") or "")[:100])
            elif wrong:
                status = "WRONG"
                note = "core %s, extended %s results, expected %s" % (c.get("count"), e.get("count"), q["expected"])
            else:
                status, note = None, "%s results" % q["expected"]
            core_params = " ".join(v for v in c.get("params", []) if not v.startswith("--") and v != "instance")
            for stat, what in (("median_ms", "median"), ("p95_ms", "p95")):
                rt = ratio(e.get(stat), c.get(stat))
                row("find %s (extended, %s level) @%s, %s" % (
                    " ".join(v for v in e.get("params", []) if not v.startswith("--") and v != "instance"),
                    q["level"], label, what), e.get(stat), "ms", c.get(stat), "ms core " + core_params,
                    rt, "<= %g" % GOAL_XQT_QIDO, status or judge(rt, GOAL_XQT_QIDO, ge=False), note)
        f = a.get("feed")
        if f:
            for p in f["pages"]:
                row("change feed %s @%d entries, median" % (p["name"], f["entries"]), p.get("median_ms"), "ms",
                    p.get("p95_ms"), "ms p95", status="info" if p.get("ok") else "WRONG",
                    note="%.0f KB" % (p["bytes"] / 1e3) if p.get("ok") else p.get("problem", ""))
    if archives:
        notes.append("xqt: tags %s added one at a time (`tags add --wait`), reindex rate over the operation's span; "
                     "find --repeat %s x %s rounds (core and extended alternating), the median of the rounds' "
                     "medians and p95s; change feed over HTTP (%s, one keep-alive connection, includeMetadata "
                     "default true), %s timed passes" % (
                         ", ".join("%s (%s)" % (t["keyword"], t["level"]) for t in x.get("tags", [])),
                         x.get("repeat"), x.get("rounds"),
                         next((a["feed"].get("client") for a in archives if a.get("feed")), "-"), x.get("feed_runs")))
    fed = sorted((a["feed"]["entries"], a) for a in archives if a.get("feed"))
    if len(fed) >= 2:
        (n0, a0), (n1, a1) = fed[0], fed[-1]
        p0 = {p["name"]: p for p in a0["feed"]["pages"]}
        for p in a1["feed"]["pages"]:
            q = p0.get(p["name"])
            if not q:
                continue
            for stat, what, judged in (("median_ms", "median", True), ("p95_ms", "p95", False)):
                rt = ratio(p.get(stat), q.get(stat))
                row("change feed %s: growth %d -> %d entries, %s" % (p["name"], n0, n1, what), p.get(stat), "ms",
                    q.get(stat), "ms at %d" % n0, rt, "<= %gx (flat)" % GOAL_FEED_FLAT if judged else "",
                    (judge(rt, GOAL_FEED_FLAT, ge=False) if p.get("ok") and q.get("ok") else "n/a") if judged
                    else "info")
    elif fed:
        notes.append("xqt: change-feed growth needs two scales (BENCH_SCALES); have %d" % len(fed))
    for a in archives:
        for e in a.get("errors", []):
            notes.append("xqt ERROR %s: %s" % (a["label"], e))


def mount_rows(m, row, notes, judge, ratio):
    """The `mount` step (mountbench.py): copy-in, reads and listing through the FUSE mount,
    against the same work on plain files of the same disk. Ratios are mount/plain for rates,
    many/few studies for the listing growth."""
    med = lambda xs: sorted(xs)[(len(xs) - 1) // 2] if xs else None  # the lower median
    spread = lambda xs: max(xs) / min(xs) if len(xs) > 1 and min(xs) > 0 else 1.0

    # Copy-in.
    for setname, goal_what in (("small", "inst"), ("large", "mb")):
        runs = {side: [x for x in m.get("copy", []) if x["set"] == setname and x["side"] == side]
                for side in ("mount", "plain", "fsync")}
        if not runs["mount"] and not runs["plain"]:
            continue
        ok, wrong = {}, False
        for side, xs in runs.items():
            bad = [x for x in xs if x.get("cp_exit") or (side == "mount" and x.get("stored") != x["files"]) or
                   (side == "plain" and x.get("copied_files") != x["files"])]
            for x in bad:
                notes.append("mount copy-in %s, %s, round %s: cp exit %s, %s of %s files %s%s%s" % (
                    setname, side, x["rep"], x.get("cp_exit"), x.get("stored", x.get("copied_files")), x["files"],
                    "stored" if side == "mount" else "copied",
                    ", %s .error files" % x["error_files"] if x.get("error_files") else "",
                    "; cp: " + " / ".join(x["cp_errors"])[:300] if x.get("cp_errors") else ""))
            good = [x for x in xs if x not in bad]
            ok[side] = median_rec(good) if good else None
            wrong = wrong or bool(bad)
            if len(xs) > 1:
                t = [x["seconds"] for x in xs]
                notes.append("mount copy-in %s, %s: %d rounds, %s s; the median round is shown%s" % (
                    setname, side, len(xs), ", ".join("%.2f" % v for v in t),
                    " (NOISY: slowest/fastest %.1fx)" % spread(t) if spread(t) > NOISY else ""))
        noisy = any(spread([x["seconds"] for x in runs[k]]) > NOISY for k in ("mount", "plain"))

        def rate(x, what):
            if not x or x["seconds"] <= 0:
                return None
            return (x["files"] if what == "inst" else x["bytes"] / 1e6) / x["seconds"]

        a_, p_ = ok.get("mount"), ok.get("plain")
        anchored = any(x["set"] == setname and x["side"] == "fuse" for x in m.get("copy", []))
        for what, unit, punit in (("inst", "inst/s", "files/s cp -r + sync"), ("mb", "MB/s", "MB/s cp -r + sync")):
            a, b = rate(a_, what), rate(p_, what)
            goal, st = "", "info"
            if what == goal_what and not anchored:
                goal, st = ">= %g" % GOAL_MOUNT_COPY, judge(ratio(a, b), GOAL_MOUNT_COPY)
                if noisy and st in ("PASS", "FAIL"):
                    st += " (noisy)"
            if wrong:
                st = "WRONG"  # a round lost files (see the notes); the others' median is shown
            row("mount copy-in %s set (cp -r to inbox/), %s" % (setname, unit), a, unit, b, punit, ratio(a, b),
                goal, st)
        if ok.get("fsync") and a_:
            what, unit = ("inst", "inst/s") if goal_what == "inst" else ("mb", "MB/s")
            a, b = rate(a_, what), rate(ok["fsync"], what)
            row("mount copy-in %s set, %s vs copy+fsync/file" % (setname, unit), a, unit, b,
                "%s copy+fsync/file" % ("files/s" if what == "inst" else "MB/s"), ratio(a, b))
        # The anchor: the same cp -r (+ sync) through the passthrough FUSE; and with the same
        # durability at each close (--sync-close against the passthrough's fsync_close).
        for mside, fside, label, goal_r in (("mount", "fuse", "cp -r + sync, vs passthrough FUSE", GOAL_MOUNT_COPY_FUSE),
                                            ("mount_sync_close", "fuse_fsync_close",
                                             "--sync-close, vs passthrough FUSE fsync at close", None)):
            xs = {k: [x for x in m.get("copy", []) if x["set"] == setname and x["side"] == k] for k in (mside, fside)}
            if not xs[mside] or not xs[fside]:
                continue
            bad = [x for x in xs[mside] if x.get("cp_exit") or x.get("stored") != x["files"]] + \
                  [x for x in xs[fside] if x.get("cp_exit") or x.get("copied_files") != x["files"]]
            am, af = median_rec([x for x in xs[mside] if x not in bad] or xs[mside]), \
                median_rec([x for x in xs[fside] if x not in bad] or xs[fside])
            unit = "inst/s" if goal_what == "inst" else "MB/s"
            a, b = rate(am, goal_what), rate(af, goal_what)
            st = "info" if goal_r is None else judge(ratio(a, b), goal_r)
            if st in ("PASS", "FAIL") and any(spread([x["seconds"] for x in v]) > NOISY for v in xs.values()):
                st += " (noisy)"
            row("mount copy-in %s set (%s), %s" % (setname, label, unit), a, unit, b, "%s passthrough FUSE" % unit,
                ratio(a, b), ">= %g" % goal_r if goal_r else "", "WRONG" if bad else st,
                "median of %d: mount %.2f s (cp %.2f + sync %.2f), passthrough %.2f s" % (
                    len(xs[mside]), am["seconds"], am.get("cp_seconds", 0), am.get("sync_seconds", 0), af["seconds"]),
                issue=goal_r is not None)
        if a_ and p_:
            notes.append("mount copy-in %s: %.2f ms/file through the mount (%s files); plain cp -r + sync "
                         "%.2f ms/file, of which sync %.0f%%" % (
                             setname, 1e3 * a_["seconds"] / a_["files"], a_["files"],
                             1e3 * p_["seconds"] / p_["files"],
                             100 * p_.get("sync_seconds", 0) / p_["seconds"] if p_["seconds"] else 0))

    # Reads.
    for r in m.get("read", []):
        setname = r["set"]
        what, unit = ("inst", "inst/s") if setname == "small" else ("mb", "MB/s")
        wrong = (r.get("mount_files"), r.get("mount_bytes")) != (r.get("direct_files"), r.get("direct_bytes"))
        amount = r["direct_files"] if what == "inst" else r["direct_bytes"] / 1e6
        for temp in ("warm", "cold"):
            t = r.get(temp)
            if not t:
                continue
            tm, td = med(t["mount"]), med(t["direct"])
            a = amount / tm if tm else None
            b = amount / td if td else None
            st = "WRONG" if wrong else "info" if t.get("fuse") else judge(ratio(a, b), GOAL_MOUNT_READ)
            if st in ("PASS", "FAIL") and max(spread(t["mount"]), spread(t["direct"])) > NOISY:
                st += " (noisy)"
            row("mount read %s set (find | xargs cat), %s, %s" % (setname, temp, unit), a, unit, b,
                "%s objects/ direct" % unit, ratio(a, b), "" if t.get("fuse") else ">= %g" % GOAL_MOUNT_READ, st,
                "%d files, %s MB; median of %d passes: %.3f s mount, %.3f s direct" % (
                    r["direct_files"], fmt(r["direct_bytes"] / 1e6), len(t["mount"]), tm, td))
            # The anchor: the passthrough FUSE over the same tree (studies/ mirrored, the
            # instance files hard links to the objects) -- the goal -- and over objects/.
            for side, label, goal_r in (("fuse", "same tree", GOAL_MOUNT_READ_FUSE), ("fuse_flat", "over objects/", None)):
                if not t.get(side):
                    continue
                tf = med(t[side])
                b = amount / tf if tf else None
                st = "WRONG" if wrong else "info" if goal_r is None or temp != "warm" else judge(ratio(a, b), goal_r)
                if st in ("PASS", "FAIL") and max(spread(t["mount"]), spread(t[side])) > NOISY:
                    st += " (noisy)"
                row("mount read %s set, %s, vs passthrough FUSE (%s), %s" % (setname, temp, label, unit), a, unit, b,
                    "%s passthrough FUSE" % unit, ratio(a, b),
                    ">= %g" % goal_r if goal_r and temp == "warm" else "", st,
                    "median of %d passes: %.3f s mount, %.3f s passthrough" % (len(t[side]), tm, tf),
                    issue=bool(goal_r) and temp == "warm")
        f = r.get("find_only")
        if f and r.get("warm"):
            notes.append("mount read %s, warm: the pipeline %.3f s through the mount, %.3f s direct; find alone "
                         "(no reads) %.3f s, %.3f s; %.0f us/file through the mount" % (
                             setname, med(r["warm"]["mount"]), med(r["warm"]["direct"]), med(f["mount"]),
                             med(f["direct"]), 1e6 * med(r["warm"]["mount"]) / max(1, r["direct_files"])))
        if wrong:
            notes.append("mount read %s: the mount shows %s files (%s bytes), objects/ holds %s (%s bytes)" % (
                setname, r.get("mount_files"), r.get("mount_bytes"), r.get("direct_files"), r.get("direct_bytes")))
    if m.get("read"):
        notes.append("mount reads: warm = one untimed pass, then %s timed passes, mount and direct alternating; "
                     "%s" % (m.get("read_passes"),
                             "cold = sync + drop_caches (3) before each of %s passes per side; the mount "
                             "process's own SQLite cache stays warm" % m.get("cold_passes")
                             if m.get("drop_caches") else "cold: not measured (cannot write drop_caches)"))

    # Listing.
    ls = sorted(m.get("listing", []), key=lambda x: x["studies"])
    for x in ls:
        l = x.get("ls_l")
        if not l:
            continue
        row("mount ls -l series (%d inst) @%d studies, median" % (l["entries"], x["studies"]),
            med(l["expired_ms"]), "ms", l["cold_ms"], "ms first run (cold)")
        notes.append("mount ls -l series @%d studies: %d run(s) 1.2 s apart (the mount's 1 s caches expired) "
                     "%s ms, %.0f us/entry%s; %s; first run after mounting %s ms" % (
                         x["studies"], len(l["expired_ms"]), "/".join(fmt(v) for v in l["expired_ms"]),
                         1e3 * med(l["expired_ms"]) / l["entries"],
                         " (fewer runs: the listing is slow)" if l.get("runs_cut") else "",
                         "%d back to back %s ms" % (len(l["warm_ms"]), "/".join(fmt(v) for v in l["warm_ms"]))
                         if l["warm_ms"] else "none back to back (a run outlasts the 1 s caches)",
                         fmt(l["cold_ms"])))
    if len(ls) >= 2 and ls[0].get("ls_l") and ls[-1].get("ls_l"):
        x0, x1 = ls[0], ls[-1]
        for key, what in (("expired_ms", ""), ("warm_ms", ", back to back")):
            a, b = med(x1["ls_l"][key]), med(x0["ls_l"][key])
            if key == "warm_ms" and (a is None or b is None):
                continue
            rt = ratio(a, b)
            if key == "expired_ms":
                st = "PASS" if rt is not None and (rt <= GOAL_MOUNT_FLAT or a - b < MOUNT_FLAT_SLACK_MS) else \
                    "n/a" if rt is None else "FAIL"
                goal = "<= %gx or < +%g ms (flat)" % (GOAL_MOUNT_FLAT, MOUNT_FLAT_SLACK_MS)
            else:
                st, goal = "info", ""
            row("mount ls -l series: growth %d -> %d studies%s" % (x0["studies"], x1["studies"], what),
                a, "ms", b, "ms @%d studies" % x0["studies"], rt, goal, st)
    for x in ls:
        s = x.get("ls_studies")
        if s:
            row("mount ls studies/ @%d studies, median" % x["studies"], med(s["runs_ms"]), "ms", s["first_ms"],
                "ms first run", note="%.2f us/entry" % (1e3 * med(s["runs_ms"]) / max(1, s["entries"])))
    for x in ls:
        b = x.get("build", {})
        notes.append("mount listing archive @%d studies: %d-instance series + %d one-instance studies "
                     "(~1 KB synthetic), %s%s" % (
                         x["studies"], m.get("series", 0), x["studies"],
                         "reused (built %s)" % b.get("built") if x.get("reused") else
                         "built: generated %.1f s, ingested %.1f s" % (b.get("generate_seconds", 0),
                                                                      b.get("ingest_seconds", 0)),
                         "; caches dropped before the first run" if x.get("cold_dropped") else ""))
    for p in m.get("problems", []):
        notes.append("mount: " + p)
    for e in m.get("errors", []):
        notes.append("mount ERROR: " + e)
    if m.get("seconds"):
        notes.append("mount step: %.0f s" % m["seconds"])


def main():
    recs = load(sys.argv[1])
    out_path = sys.argv[2]
    env = next((r for r in recs if r["kind"] == "env"), {})
    rows, notes = [], []

    def row(metric, value, unit, peer=None, peer_what="", ratio=None, goal="", status="info", note="",
            issue=False):
        """issue=True: one of the speed issue's goals, repeated in the goal table at the end."""
        rows.append({"metric": metric, "dicomfs": value, "unit": unit, "peer": peer,
                     "peer_what": peer_what, "ratio": ratio, "goal": goal, "status": status,
                     "note": note, "issue": issue})

    def judge(ratio, goal, ge=True):
        if ratio is None:
            return "n/a"
        return "PASS" if (ratio >= goal if ge else ratio <= goal) else "FAIL"

    # Limits: {set: {"copy": {...}, "seq": {...}}}
    lim = {}
    for r in recs:
        if r["kind"] == "limit":
            lim.setdefault(r["set"], {}).setdefault(r["result"]["mode"], []).append(r["result"])
    all_lim = lim
    lim = {k: {m: median_rec(v) for m, v in d.items()} for k, d in lim.items()}

    def lim_rate(setname, mode, what):
        x = lim.get(setname, {}).get(mode)
        if not x or x["seconds"] <= 0:
            return None
        return (x["files"] if what == "files" else x["bytes"] / 1e6) / x["seconds"]

    ing = {}
    for r in recs:
        if r["kind"] == "ingest":
            ing.setdefault(r["set"], []).append(r)
    all_ing = ing
    ing = {k: median_rec(v) for k, v in ing.items()}

    def ing_rate(setname, what):
        x = ing.get(setname)
        if not x or x["seconds"] <= 0 or not x.get("stored"):
            return None
        return (x["stored"] if what == "files" else x["bytes"] / 1e6) / x["seconds"]

    def ratio(a, b):
        return a / b if a is not None and b else None

    for setname, xs in all_ing.items():
        for x in xs:
            if x.get("failed") or x.get("stored", 0) != x.get("files"):
                notes.append("ingest %s run %s: %s of %s files stored, %s skipped, %s failed (exit %s)" % (
                    setname, x.get("run"), x.get("stored"), x.get("files"), x.get("skipped"),
                    x.get("failed"), x.get("exit")))
        if any(x.get("reused") for x in xs):
            notes.append("ingest %s: archive reused from an earlier run; its ingest figures are "
                         "from that run" % setname)
        if len(xs) > 1:
            notes.append("ingest %s: %d runs, %s s; the median run is shown" % (
                setname, len(xs), ", ".join("%.2f" % x["seconds"] for x in xs)))
    for setname, d in sorted(all_lim.items()):
        for mode, xs in sorted(d.items()):
            if len(xs) > 1:
                notes.append("limit %s %s: %d runs, %s s; the median run is shown" % (
                    setname, mode, len(xs), ", ".join("%.2f" % x["seconds"] for x in xs)))

    def spread(xs):
        t = [x["seconds"] for x in xs if x.get("seconds")]
        return max(t) / min(t) if len(t) > 1 and min(t) > 0 else 1.0

    noisy = set()  # ("limit", set, mode) or ("ingest", set) whose runs differ by > NOISY
    for setname, d in all_lim.items():
        for mode, xs in d.items():
            if spread(xs) > NOISY:
                noisy.add(("limit", setname, mode))
    for setname, xs in all_ing.items():
        if spread(xs) > NOISY:
            noisy.add(("ingest", setname))

    def judged(r, goal, *keys):
        st = judge(r, goal)
        return st + " (noisy)" if st in ("PASS", "FAIL") and any(k in noisy for k in keys) else st

    for sfx, where in (("", ""), ("-journal", " (journaled ext4)")):
        if not (any(k + sfx in ing for k in ("small", "large")) or any(k + sfx in lim for k in ("small", "large"))):
            continue  # not in a run of other steps alone
        sm, lg = "small" + sfx, "large" + sfx
        a, b = ing_rate(sm, "files"), lim_rate(sm, "copy", "files")
        row("ingest small set (64x64), instances/s%s" % where, a, "inst/s", b, "files/s copy+fsync/file",
            ratio(a, b), ">= %g" % GOAL_SMALL_FILES,
            judged(ratio(a, b), GOAL_SMALL_FILES, ("ingest", sm), ("limit", sm, "copy")), issue=True,
            note="peak RSS %s MB" % fmt(ing[sm].get("peak_rss_kb", 0) / 1024) if ing.get(sm, {}).get("peak_rss_kb")
            else "")
        a, b = ing_rate(sm, "mb"), lim_rate(sm, "copy", "mb")
        row("ingest small set, MB/s%s" % where, a, "MB/s", b, "MB/s copy+fsync/file", ratio(a, b))
        a, b = ing_rate(lg, "mb"), lim_rate(lg, "seq", "mb")
        row("ingest large set (512x512), MB/s%s" % where, a, "MB/s", b, "MB/s seq write+fdatasync",
            ratio(a, b), ">= %g" % GOAL_LARGE_MBS,
            judged(ratio(a, b), GOAL_LARGE_MBS, ("ingest", lg), ("limit", lg, "seq")), issue=True,
            note="peak RSS %s MB" % fmt(ing[lg].get("peak_rss_kb", 0) / 1024) if ing.get(lg, {}).get("peak_rss_kb")
            else "")
        a, b = ing_rate(lg, "files"), lim_rate(lg, "copy", "files")
        row("ingest large set, instances/s%s" % where, a, "inst/s", b, "files/s copy+fsync/file", ratio(a, b))
        a, b = ing_rate(lg, "mb"), lim_rate(lg, "copy", "mb")
        row("ingest large set, MB/s vs copy%s" % where, a, "MB/s", b, "MB/s copy+fsync/file", ratio(a, b))

    def synth_sizes():
        return sorted(int(k.split("-")[1]) for k in ing if k.startswith("synth-"))

    for n in synth_sizes():
        a, b = ing_rate("synth-%d" % n, "files"), lim_rate("small", "copy", "files")
        row("ingest %d synthetic ~1 KB, instances/s" % n, a, "inst/s", b,
            "files/s copy+fsync/file (small set)", ratio(a, b),
            note="reused archive" if ing["synth-%d" % n].get("reused") else "")

    for setname in ["small", "large"] + ["synth-%d" % n for n in synth_sizes()]:
        x = ing.get(setname)
        if x and x.get("stored"):
            row("index bytes/instance, %s" % setname, x["index_bytes"] / x["stored"], "B",
                note="index.db+wal after checkpoint; archive %s MB total" % fmt(x.get("archive_bytes", 0) / 1e6))
            if x.get("peak_wal_bytes") is not None and x.get("wal_samples", 0) >= 5:
                row("peak WAL during ingest, bytes/instance, %s" % setname, x["peak_wal_bytes"] / x["stored"],
                    "B", note="index.db-wal sampled every 0.2 s; %s MB" % fmt(x["peak_wal_bytes"] / 1e6))

    # Queries.
    q_by = {}
    base_rows = []
    for r in recs:
        if r["kind"] != "query":
            continue
        res = r["result"]
        q_by[r["archive"]] = (r["instances"], res)
        if "baseline" in res:
            base_rows.append((r["archive"], res["baseline"]))
    if base_rows:
        meds = [bl["median_ms"] for _, bl in base_rows]
        row("find start-up: whole process, trivial query, empty archive", sorted(meds)[len(meds) // 2],
            "ms", note="subtracted from whole-process query times")
    modes = set()
    for label, (n, res) in q_by.items():
        procs = []
        for q in res["queries"]:
            status, note = "info", ""
            if q.get("exit", 0) != 0:
                status, note = "ERROR", "exit %s: %s" % (q.get("exit"), (q.get("stderr") or "").strip()[:120])
            elif not q.get("count_ok"):
                status = "WRONG"
                note = "returned %s studies, generator expects %s" % (q.get("count"), q.get("expected"))
            if q.get("reported_count") is not None and q.get("reported_count") != q.get("count"):
                notes.append("query %s on %s: --repeat reports %s results, stdout has %s" % (
                    q["name"], label, q.get("reported_count"), q.get("count")))
            if status != "info":
                notes.append("query %s on %s: %s" % (q["name"], label, note))
            modes.add(q.get("timed_by"))
            if q.get("process"):
                procs.append(q["process"])
            row("find %s @%s (%d inst)" % (q["name"], label, n),
                q.get("median_ms"), "ms", q.get("p95_ms"), "ms p95", status=status, note=note)
        if procs:
            med = sorted(p["raw_median_ms"] for p in procs)[len(procs) // 2]
            p95s = sorted(p["raw_p95_ms"] for p in procs)[len(procs) // 2]
            row("find as a whole process @%s, median over queries" % label, med, "ms", p95s, "ms p95",
                note="includes start-up")
    if modes == {"repeat"}:
        qhdr = "in-process (`find --repeat N`): median, p95 in the limit/peer column"
        slack = FLAT_SLACK_MS_REPEAT
    else:
        qhdr = "whole process minus the trivial query's start-up: median, p95 in the limit/peer column"
        slack = FLAT_SLACK_MS

    scales = sorted((n, label) for label, (n, _) in q_by.items() if label.startswith("synth-"))
    if len(scales) >= 2:
        (n0, l0), (n1, l1) = scales[0], scales[-1]
        q0 = {q["name"]: q for q in q_by[l0][1]["queries"]}
        for q in q_by[l1][1]["queries"]:
            a, b = q.get("median_ms"), q0.get(q["name"], {}).get("median_ms")
            rt = ratio(a, b) if b else None
            if a is None or b is None:
                status = "n/a"
            elif rt is not None and rt <= GOAL_FLAT or (a - b) < slack:
                status = "PASS"
            else:
                status = "FAIL"
            row("find %s: growth %d -> %d inst" % (q["name"], n0, n1), a, "ms", b,
                "ms at %d" % n0, rt, "<= %gx or < +%g ms (flat)" % (GOAL_FLAT, slack), status)
    elif q_by:
        notes.append("latency growth needs two scales (BENCH_SCALES); have %d" % len(scales))

    for r in recs:
        if r["kind"] == "web":
            web_rows(r["result"], row, notes, judge, ratio)

    extra = []
    for r in recs:
        if r["kind"] == "profile":
            profile_rows(r["result"], row, notes, extra)

    for r in recs:
        if r["kind"] == "web_journal":
            web_rows(r["result"], row, notes, judge, ratio, where=" (journaled ext4)", stow_only=True)
        if r["kind"] == "journal":
            if r.get("skipped"):
                notes.append("journal: skipped (%s)" % r["skipped"])
            else:
                notes.append("journal: a loop-mounted ext4 image on the root disk: %s; features: %s" % (
                    r.get("fs"), r.get("features")))

    for r in recs:
        if r["kind"] == "rss":
            rss_rows(r["result"], row, notes)

    for r in recs:
        if r["kind"] == "xqt":
            xqt_rows(r["result"], row, notes, judge, ratio, ing)

    for r in recs:
        if r["kind"] == "mount":
            mount_rows(r["result"], row, notes, judge, ratio)

    for r in recs:
        if r["kind"] == "dicomcast":
            dicomcast_rows(r["result"], row, notes)

    for r in recs:
        if r["kind"] == "error":
            notes.append("ERROR in %s: %s" % (r["step"], r["message"]))
    disk = [(r["path"], r["bytes"]) for r in recs if r["kind"] == "disk"]

    # Print.
    hdr = ["metric", "dicomfs", "limit/peer", "ratio", "goal", "result"]
    body = []
    for r in rows:
        body.append([r["metric"], fmt(r["dicomfs"], r["unit"]),
                     fmt(r["peer"]) + (" " + r["peer_what"] if r["peer_what"] and r["peer"] is not None else ""),
                     fmt(r["ratio"]), r["goal"] or "-", r["status"]])
    w = [max(len(hdr[i]), *(len(b[i]) for b in body)) if body else len(hdr[i]) for i in range(len(hdr))]
    line = lambda cells: "  ".join(c.ljust(w[i]) for i, c in enumerate(cells)).rstrip()
    print()
    print("dicomfs bench — %s, %s, %s CPUs, load %s at start, %s on %s%s" % (
        env.get("date", "?"), env.get("dicomfs_rev", "?"), env.get("cpus", "?"), env.get("loadavg", "?"),
        env.get("fs", "?"), env.get("device", "?"), ", QUICK" if str(env.get("quick")) == "1" else ""))
    print("query latencies (study level, ms): " + qhdr)
    print(line(hdr))
    print(line(["-" * x for x in w]))
    for b in body:
        print(line(b))
    for x in extra:
        print(x)
    if noisy:
        notes.insert(0, "NOISY: runs of %s differ by more than %gx (slowest/fastest); the machine "
                     "was busy, so ratios marked (noisy) are not reliable: re-run on a quiet machine" % (
                         ", ".join(" ".join(k) for k in sorted(noisy)), NOISY))
    goals = [r for r in rows if r.get("issue")]
    if goals:
        print("\nthe speed issue's goals:")
        gw = max(len(r["metric"]) for r in goals)
        for r in goals:
            print("  %-12s %s  %s  %s" % (r["status"] or "-", r["metric"].ljust(gw),
                                       (r["goal"] or "").ljust(16), "ratio %s" % fmt(r["ratio"])
                                       if r["ratio"] is not None else fmt(r["dicomfs"], r["unit"])))
    if notes:
        print("\nnotes:")
        for n in notes:
            print("  - " + n)
    if disk:
        print("\ndisk use in %s (kept for reuse; delete synth-* to reclaim):" % env.get("work", "?"))
        for p, b in disk:
            print("  %8.1f MB  %s" % (b / 1e6, p))
    print("\nJSON: %s" % out_path)

    with open(out_path, "w") as f:
        json.dump({"env": env, "rows": rows, "notes": notes, "records": recs}, f, indent=1)


if __name__ == "__main__":
    main()
