"""Slow clients do not starve the others, and the server's limits end them
(`dicomfs serve --header-timeout --connection-timeout --max-connections[-per-ip]`).

While these run at once, each from its own loopback address (127.0.0.2-4; the server counts
connections per address):
  slowloris        24 connections sending their headers a byte every 0.5 s, past the
                   per-address limit of 16
  stalled upload   3 STOWs that send headers and 200 bytes of body, then nothing
  steady upload    1 STOW whose body arrives in 30 pieces over 9 s (slow but never idle)
  never-reader     4 retrieves of a 12 MiB study that read nothing
a normal client on 127.0.0.1 sends 20 QIDO, 5 WADO and 1 STOW requests: all must succeed
within 30 s in all. Then: the connections past the limit were closed at once, the other
slowloris ones by the header deadline, the stalled uploads by the idle timeout (nothing of
them stored), the never-readers by the idle timeout (their answers cut short), the steady
upload stored; the server's threads and descriptors come back to where they were.
A server with the defaults closes the 65th connection from one address at once, and one
with --max-connections 4 the 5th (what such a client sees: curl exit 52 or 56).
No timing is asserted beyond generous bounds (the two cores are shared).
"""
import os
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)
import testutil as tu  # noqa: E402
import webutil as wu  # noqa: E402
import loaddata as ld  # noqa: E402

HEADER_TIMEOUT, IDLE_TIMEOUT, PER_IP = 3, 4, 16
MP = 'multipart/related; type="application/dicom"'
BOUNDARY = "slow-clients-b0undary"


def threads_fds(pid):
    """(threads, descriptors) of PID, not counting the index's (index.db*: SQLite connections
    the store keeps in its pool, at most 16, as the load grows)."""
    try:
        fds = [t for t in fd_targets(pid) if "/index.db" not in t]
        return len(os.listdir(f"/proc/{pid}/task")), len(fds)
    except OSError:
        return None, None


def fd_targets(pid):
    out = []
    for fd in sorted(os.listdir(f"/proc/{pid}/fd"), key=int):
        try:
            out.append(f"{fd}:{os.readlink(f'/proc/{pid}/fd/{fd}')}")
        except OSError:
            pass
    return out


def connect(port, src, rcvbuf=None):
    s = socket.socket()
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.bind((src, 0))
    s.connect(("127.0.0.1", port))
    return s


def closed_within(s, seconds):
    """Waits up to SECONDS for the peer to close S (EOF or reset); returns (closed, bytes read)."""
    s.settimeout(0.2)
    got = b""
    end = time.time() + seconds
    while time.time() < end:
        try:
            b = s.recv(65536)
            if not b:
                return True, got
            got += b
        except socket.timeout:
            continue
        except OSError:
            return True, got
    return False, got


def closed_now(s):
    """Has the peer closed S (EOF or reset)? Does not wait."""
    s.setblocking(False)
    try:
        return s.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        s.setblocking(True)


def stow_body(data):
    return wu.multipart([("application/dicom", data)], BOUNDARY)


def stow_head(port, n):
    return (f"POST /v2/studies HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: application/dicom+json\r\n"
            f"Content-Type: {MP}; boundary={BOUNDARY}\r\nContent-Length: {n}\r\n\r\n").encode()


def slowloris(port, out, i):
    t0 = time.time()
    try:
        s = connect(port, "127.0.0.2")
    except OSError as e:
        out[i] = ("connect failed", repr(e), 0.0)
        return
    req = b"GET /v2/studies HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 60
    s.settimeout(0.5)
    for b in req:
        try:
            s.send(bytes([b]))
            r = s.recv(4096)
            out[i] = ("answered" if r else "closed", r[:60], time.time() - t0)
            s.close()
            return
        except socket.timeout:
            continue
        except OSError as e:
            out[i] = ("closed", repr(e), time.time() - t0)
            s.close()
            return
    out[i] = ("still open", b"", time.time() - t0)
    s.close()


def stalled_upload(port, body, out, i):
    s = connect(port, "127.0.0.3")
    s.sendall(stow_head(port, len(body)) + body[:200])
    t0 = time.time()
    closed, got = closed_within(s, IDLE_TIMEOUT + 8)
    out[i] = (closed, time.time() - t0, got[:80])
    s.close()


def steady_upload(port, body, out):
    s = connect(port, "127.0.0.3")
    s.settimeout(30)
    try:
        s.sendall(stow_head(port, len(body)))
        step = len(body) // 30 + 1
        for k in range(0, len(body), step):
            time.sleep(0.3)
            s.sendall(body[k:k + step])
        r = b""
        while b"\r\n\r\n" not in r:
            b = s.recv(65536)
            if not b:
                break
            r += b
        out["steady"] = r.split(b"\r\n", 1)[0]
    except OSError as e:
        out["steady"] = repr(e).encode()
    finally:
        s.close()


def never_reader(port, study, out, i):
    s = connect(port, "127.0.0.4", rcvbuf=4096)
    s.sendall(f"GET /v2/studies/{study} HTTP/1.1\r\nHost: x\r\nAccept: {MP}; transfer-syntax=*\r\n\r\n".encode())
    time.sleep(IDLE_TIMEOUT + 6)  # reads nothing meanwhile
    closed, got = closed_within(s, 8)
    out[i] = (closed, len(got))
    s.close()


def normal_client(srv, sop_paths, out):
    lat, bad = [], []
    t0 = time.time()
    reqs = [("GET", "/v2/studies?PatientID=LPID00000001", None)] * 5 + \
           [("GET", "/v2/series?Modality=CT&limit=10", None)] * 5 + \
           [("GET", "/v2/studies?StudyDate=20200101-20200131&includefield=all", None)] * 5 + \
           [("GET", "/v2/instances?limit=5", None)] * 5 + [("GET", p, None) for p in sop_paths[:5]]
    for method, path, _ in reqs:
        t = time.time()
        r = srv.request(method, path, headers={"Accept": "application/dicom+json" if "instances/" not in path
                                               else "application/dicom; transfer-syntax=*"}, timeout=20)
        lat.append(time.time() - t)
        if r.status not in (200, 204):
            bad.append(f"{path}: {wu.describe(r, 100)}")
    t = time.time()
    r = srv.request("POST", "/v2/studies", body=stow_body(out["normal_stow_data"]),
                    headers={"Content-Type": f"{MP}; boundary={BOUNDARY}", "Accept": "application/dicom+json"},
                    timeout=20)
    lat.append(time.time() - t)
    if r.status != 200:
        bad.append(f"STOW: {wu.describe(r, 100)}")
    out["normal"] = (len(reqs) + 1, bad, max(lat), time.time() - t0)


def run_slow(c, scratch, templates):
    args = ["--header-timeout", str(HEADER_TIMEOUT), "--connection-timeout", str(IDLE_TIMEOUT),
            "--max-connections-per-ip", str(PER_IP), "--max-connections", "200"]
    with wu.Server(scratch, args=args) as srv:
        # 12 x 1 MiB in study 1 (the large retrieve), 10 small instances in study 2
        big = [ld.instance_bytes(templates, 3, 1, 1, n) for n in range(12)]
        small = [ld.instance_bytes(templates, 1, 2, 2, n) for n in range(10)]
        stored = 0
        for data in big + small:
            r = srv.request("POST", "/v2/studies", body=stow_body(data),
                            headers={"Content-Type": f"{MP}; boundary={BOUNDARY}", "Accept": "application/dicom+json"})
            stored += r.status == 200
        c.eq(stored, 22, "setup: 12 large and 10 small instances stored")
        sop_paths = [f"/v2/studies/{ld.study_uid(2)}/series/{ld.series_uid(2)}/instances/{ld.sop_uid(1, n)}"
                     for n in range(10)]
        time.sleep(1)
        base_threads, base_fds = threads_fds(srv.pid)
        base_targets = fd_targets(srv.pid)
        c.note(f"idle server: {base_threads} threads, {base_fds} descriptors (not counting index.db*)")

        out = {"normal_stow_data": ld.instance_bytes(templates, 1, 3, 3, 1)}
        loris = [None] * 24
        stalled = [None] * 3
        readers = [None] * 4
        stalled_data = [stow_body(ld.instance_bytes(templates, 1, 4, 4, n)) for n in range(3)]
        steady_data = stow_body(ld.instance_bytes(templates, 1, 5, 5, 1))
        ts = [threading.Thread(target=slowloris, args=(srv.port, loris, i)) for i in range(24)]
        ts += [threading.Thread(target=stalled_upload, args=(srv.port, stalled_data[i], stalled, i)) for i in range(3)]
        ts += [threading.Thread(target=steady_upload, args=(srv.port, steady_data, out))]
        ts += [threading.Thread(target=never_reader, args=(srv.port, ld.study_uid(1), readers, i)) for i in range(4)]
        for t in ts:
            t.start()
        time.sleep(0.5)
        peak_threads, peak_fds = threads_fds(srv.pid)
        normal = threading.Thread(target=normal_client, args=(srv, sop_paths, out))
        normal.start()
        normal.join(60)
        for t in ts:
            t.join(60)

        n, bad, worst, total = out.get("normal", (0, ["did not finish"], 0, 0))
        c.ok(not bad and n == 26 and total < 30,
             f"meanwhile a normal client's {n} requests (20 QIDO, 5 WADO, 1 STOW) all succeed within 30 s",
             "; ".join(bad[:5]) + f" (took {total:.1f} s)")
        c.note(f"normal client: {n} requests in {total:.2f} s, slowest {worst * 1000:.0f} ms; "
               f"server at the slow clients' peak: {peak_threads} threads, {peak_fds} descriptors")

        refused = [x for x in loris if x and x[0] == "closed" and x[2] < 1.0]
        reaped = [x for x in loris if x and x[0] == "closed" and HEADER_TIMEOUT - 0.5 <= x[2] <= HEADER_TIMEOUT + 5]
        c.ok(len(refused) >= 24 - PER_IP, f"slowloris: the {24 - PER_IP} connections past --max-connections-per-ip "
             f"{PER_IP} are closed at once", str(loris))
        c.ok(len(refused) + len(reaped) == 24 and not any(x[0] == "answered" for x in loris),
             f"slowloris: the others are closed, unanswered, by --header-timeout {HEADER_TIMEOUT} "
             f"although they keep sending", str(loris))
        c.note(f"slowloris: {len(refused)} closed at once, {len(reaped)} after "
               f"{min((x[2] for x in reaped), default=0):.1f}-{max((x[2] for x in reaped), default=0):.1f} s")

        c.ok(all(x and x[0] and x[1] <= IDLE_TIMEOUT + 4 for x in stalled),
             f"stalled uploads are closed by --connection-timeout {IDLE_TIMEOUT} (within {IDLE_TIMEOUT + 4} s)",
             str(stalled))
        c.note("stalled uploads closed after " + ", ".join(f"{x[1]:.1f} s" for x in stalled if x))
        sops = [ld.sop_uid(1, n) for n in range(3)]
        r = srv.get(f"/v2/studies/{ld.study_uid(4)}/instances", accept="application/dicom+json")
        c.ok((r.status == 200 and r.body == b"[]") or r.status in (204, 404),
             f"nothing of the stalled uploads is stored ({sops[0]}...)", wu.describe(r))

        c.ok(out.get("steady", b"").startswith(b"HTTP/1.1 200"),
             "the steady upload (30 pieces over 9 s, longer than the header deadline) is stored: 200",
             repr(out.get("steady")))
        r = srv.get(f"/v2/studies/{ld.study_uid(5)}/series/{ld.series_uid(5)}/instances/{ld.sop_uid(1, 1)}",
                    accept="application/dicom; transfer-syntax=*")
        c.ok(r.status == 200 and r.body == ld.instance_bytes(templates, 1, 5, 5, 1),
             "... and retrievable byte-identical", wu.describe(r, 100))

        c.ok(all(x and x[0] and x[1] < 12 * 1049322 for x in readers),
             f"never-readers of a 12 MiB study are closed by --connection-timeout {IDLE_TIMEOUT}, their answers cut short",
             str(readers))
        c.note("never-readers had received " + ", ".join(f"{x[1]} bytes" for x in readers if x))

        # the slow clients' threads and descriptors are all given back
        end = time.time() + 15
        while time.time() < end:
            th, fd = threads_fds(srv.pid)
            if th is not None and th <= base_threads and fd <= base_fds:
                break
            time.sleep(0.5)
        c.ok(th <= base_threads and fd <= base_fds,
             f"afterwards the server is back to {base_threads} threads and {base_fds} descriptors",
             f"{th} threads, {fd} descriptors; new: {sorted(set(fd_targets(srv.pid)) - set(base_targets))}")
        srv.finish_check(c)


def run_defaults(c, scratch):
    with wu.Server(scratch, name="defaults") as srv:
        conns = [connect(srv.port, "127.0.0.5") for _ in range(65)]
        time.sleep(0.5)
        states = [closed_now(s) for s in conns]
        c.ok(not any(states[:64]) and states[64],
             "defaults: 64 connections from one address stay open, the 65th is closed at once",
             f"closed: {[i for i, x in enumerate(states) if x]}")
        r = srv.get("/v2/studies", accept="application/dicom+json")
        c.ok(r.status in (200, 204), "... while another address is served", wu.describe(r))
        for s in conns:
            s.close()
        srv.finish_check(c)
    with wu.Server(scratch, name="limit4", args=["--max-connections", "4", "--max-connections-per-ip", "0"]) as srv:
        conns = [connect(srv.port, "127.0.0.6") for _ in range(4)]
        time.sleep(0.5)
        p = subprocess.run(["curl", "-sS", "-m", "10", "--interface", "127.0.0.7",
                            f"http://127.0.0.1:{srv.port}/health/check"], capture_output=True, text=True)
        c.ok(p.returncode in (52, 56), "--max-connections 4: the 5th connection is closed unanswered "
             "(curl: empty reply or reset)", f"curl exit {p.returncode}: {p.stderr.strip()}")
        c.note(f"what curl sees past the limit: exit {p.returncode}, {p.stderr.strip()}")
        conns.pop().close()
        time.sleep(0.5)
        r = srv.get("/health/check")
        c.eq(r.status, 200, "... and once one of the 4 closes, a new connection is served")
        for s in conns:
            s.close()
        srv.finish_check(c)
    for bad in (["--max-connections", "-1"], ["--header-timeout", "x"], ["--connection-timeout", "99999999"],
                ["--max-connections-per-ip", ""]):
        p = tu.run(["serve", os.path.join(scratch, "never"), "--http", "127.0.0.1:0", *bad], timeout=30)
        c.ok(p.returncode == 2 and bad[0] in p.stderr, f"serve {' '.join(bad)}: exit 2 naming the option",
             f"exit {p.returncode}: {p.stderr.strip()[:200]}")


def main():
    tu.require_binary()
    c = tu.Checker("web_slow_clients")
    scratch = tu.scratch("web_slow_clients")
    templates = ld.write_templates(os.path.join(scratch, "templates"))
    run_slow(c, scratch, templates)
    run_defaults(c, scratch)
    c.finish()


if __name__ == "__main__":
    main()
