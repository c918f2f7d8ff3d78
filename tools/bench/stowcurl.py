#!/usr/bin/python3
"""stowcurl.py — STOW-RS with the curl command line as the client (the issue's measurement:
"curl clients"), beside webbench.c's libcurl client.

    stowcurl.py --url URL/studies --list FILES --per N --clients 2 --cache DIR
                [--mode keepalive|process] [--server-pid PID] [--check]

The request bodies are built before the clock starts: one file per request under --cache
(multipart/related; type="application/dicom", the same parts and boundary as webbench),
kept while the list and N are unchanged. Then CLIENTS curl processes run at once, each over
its share of the requests (request i goes to client i mod CLIENTS):

  keepalive  (default) one `curl --config` per client holding every request of its share,
             separated by `next`: one connection, kept alive, as a scripted client does.
  process    one `curl` process per request (a new connection each time), as a shell loop
             does.

Each request is `curl --data-binary @BODY -H 'Content-Type: multipart/related;
type="application/dicom"; boundary=...' -H 'Accept: application/dicom+json'` with curl's
defaults otherwise: curl reads the file into memory, libcurl sends it through its 64 KiB
upload buffer (a send(2) per 64 KiB), and a body over 1 MiB is sent after an
`Expect: 100-continue` round trip (webbench turns Expect off). Prints one JSON object with
the same fields as `webbench stow` ({"requests", "instances", "bytes", "body_bytes",
"seconds", "status", "failed_requests", "first_error", "client_cpu_seconds"}), plus
"server_cpu_seconds" when --server-pid is given (user+sys of that process over the run,
from /proc/PID/stat) and "client": "curl-MODE".
"""
import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import time

BOUNDARY = "dicomfs-bench-7d3c1a"
CTYPE = 'multipart/related; type="application/dicom"; boundary=' + BOUNDARY
TICK = os.sysconf("SC_CLK_TCK")


def cpu_of(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except (OSError, IndexError, ValueError):
        return None


def build_bodies(files, per, cache):
    """[(path, instances, bytes of the files)], built once per (files, per)."""
    key = hashlib.sha256(("%d\n" % per + "\n".join(files)).encode()).hexdigest()[:12]
    d = os.path.join(cache, "bodies-%d-%s" % (per, key))
    meta = os.path.join(d, "bodies.json")
    if os.path.exists(meta):
        with open(meta) as f:
            return json.load(f)
    shutil.rmtree(d + ".tmp", ignore_errors=True)
    os.makedirs(d + ".tmp")
    out = []
    for b in range(0, len(files), per):
        path = os.path.join(d, "%05d.body" % (b // per))
        n = size = 0
        with open(os.path.join(d + ".tmp", os.path.basename(path)), "wb") as w:
            for p in files[b:b + per]:
                with open(p, "rb") as f:
                    data = f.read()
                w.write(("--%s\r\nContent-Type: application/dicom\r\n\r\n" % BOUNDARY).encode())
                w.write(data)
                w.write(b"\r\n")
                n += 1
                size += len(data)
            w.write(("--%s--\r\n" % BOUNDARY).encode())
        out.append([path, n, size])
    with open(os.path.join(d + ".tmp", "bodies.json"), "w") as f:
        json.dump(out, f)
    shutil.rmtree(d, ignore_errors=True)
    os.rename(d + ".tmp", d)
    return out


def q(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def request_opts(url, body, resp):
    return ["url = " + q(url), "header = " + q("Content-Type: " + CTYPE),
            "header = " + q("Accept: application/dicom+json"), "data-binary = " + q("@" + body),
            "output = " + q(resp), "write-out = " + q("%{http_code}\\n")]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True)
    ap.add_argument("--list", required=True)
    ap.add_argument("--per", type=int, required=True)
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--cache", required=True)
    ap.add_argument("--mode", choices=("keepalive", "process"), default="keepalive")
    ap.add_argument("--server-pid", type=int)
    ap.add_argument("--curl", default="curl")
    a = ap.parse_args()
    with open(a.list) as f:
        files = [x.strip() for x in f if x.strip()]
    bodies = build_bodies(files, a.per, a.cache)
    run = os.path.join(a.cache, "run-%d" % os.getpid())
    shutil.rmtree(run, ignore_errors=True)
    os.makedirs(run)
    shares = [list(range(c, len(bodies), a.clients)) for c in range(a.clients)]
    for b in bodies:  # the bodies are read from the page cache, as the dataset is
        with open(b[0], "rb") as f:
            while f.read(1 << 20):
                pass
    procs = []
    codes = {}
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    c0 = cpu_of(a.server_pid) if a.server_pid else None
    t0 = time.monotonic()
    if a.mode == "keepalive":
        for c, share in enumerate(shares):
            cfg = os.path.join(run, "client-%d.cfg" % c)
            with open(cfg, "w") as f:
                f.write("silent\nshow-error\n")
                for k, i in enumerate(share):
                    if k:
                        f.write("next\n")
                    f.write("\n".join(request_opts(a.url, bodies[i][0], os.path.join(run, "r%05d" % i))) + "\n")
            procs.append((share, subprocess.Popen([a.curl, "--config", cfg], stdout=subprocess.PIPE,
                                                  stderr=subprocess.PIPE)))
        for share, p in procs:
            out, err = p.communicate()
            lines = out.decode().split()
            for k, i in enumerate(share):
                codes[i] = int(lines[k]) if k < len(lines) and lines[k].isdigit() else 0
            if p.returncode:
                print("stowcurl: curl exited %d: %s" % (p.returncode, err.decode("utf-8", "replace")[-300:]),
                      file=sys.stderr)
    else:
        import threading

        def client(share):
            for i in share:
                args = [a.curl, "-sS"]
                for o in request_opts(a.url, bodies[i][0], os.path.join(run, "r%05d" % i)):
                    k, _, v = o.partition(" = ")
                    args += ["--" + k, json.loads(v)]
                r = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                s = r.stdout.decode().strip()
                codes[i] = int(s) if s.isdigit() else 0

        ts = [threading.Thread(target=client, args=(s,)) for s in shares]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    t1 = time.monotonic()
    c1 = cpu_of(a.server_pid) if a.server_pid else None
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    status, failed, first = {}, 0, ""
    for i in range(len(bodies)):
        code = codes.get(i, 0)
        status[str(code)] = status.get(str(code), 0) + 1
        body = b""
        try:
            with open(os.path.join(run, "r%05d" % i), "rb") as f:
                body = f.read()
        except OSError:
            pass
        if code < 200 or code > 299 or b"00081197" in body:
            failed += 1
            if not first:
                first = "request %d: HTTP %d: %s" % (i, code, body[:400].decode("utf-8", "replace"))
    shutil.rmtree(run, ignore_errors=True)
    res = {"requests": len(bodies), "instances": sum(b[1] for b in bodies), "bytes": sum(b[2] for b in bodies),
           "body_bytes": sum(os.path.getsize(b[0]) for b in bodies), "seconds": t1 - t0,
           "clients": a.clients, "per_request": a.per, "status": status, "failed_requests": failed,
           "first_error": first, "client": "curl-" + a.mode,
           "client_cpu_seconds": (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)}
    if c0 is not None and c1 is not None:
        res["server_cpu_seconds"] = c1 - c0
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
