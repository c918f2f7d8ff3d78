"""Helpers shared by the HTTP tests of `dicomfs serve` (tests/web_*.py).

  Server        starts `$DICOMFS serve ARCHIVE --http 127.0.0.1:0` (a fresh archive under
                SCRATCH), waits for its "dicomfs: serving DIR at http(s)://127.0.0.1:PORT" line,
                and always stops it again (SIGTERM; use it as a context manager).
  request()     one HTTP request with http.client (Content-Length or chunked bodies).
  expect_continue()  a request that sends "Expect: 100-continue" and waits for the interim
                response before it sends the body (http.client cannot do that).
  multipart() / parse_multipart() / media_type()  build and read multipart/related bodies.
  dicom_bytes() a pydicom dataset as Part-10 bytes.

Only the standard library and pydicom; nothing but 127.0.0.1 is ever contacted.
"""
import atexit
import collections
import http.client
import io
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import testutil as tu  # noqa: E402

import pydicom  # noqa: E402

HOST = "127.0.0.1"
# Requests under AddressSanitizer are slower; generous but bounded.
HTTP_TIMEOUT = float(os.environ.get("DICOMFS_HTTP_TIMEOUT", "120"))
DICOM_JSON = "application/dicom+json"

Response = collections.namedtuple("Response", "status reason headers body")

_running = []  # servers to stop at exit, whatever happens


def _stop_all():
    for s in list(_running):
        s.stop()


atexit.register(_stop_all)


def _on_signal(signum, frame):
    _stop_all()
    sys.exit(128 + signum)


for _sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    try:
        signal.signal(_sig, _on_signal)
    except (ValueError, OSError):
        pass


class Server:
    """`dicomfs serve` on a fresh archive SCRATCH/NAME. Use as `with Server(scratch) as srv:`."""

    def __init__(self, scratch, name="archive", start_timeout=60, args=(), env=None):
        self.archive = os.path.join(scratch, name)
        self.args = list(args)
        self.env = dict(os.environ, **env) if env else None
        self.log = os.path.join(scratch, name + ".stderr")
        self.proc = None
        self.url = None
        self.port = None
        self.returncode = None
        self.start_timeout = start_timeout

    def start(self):
        tu.require_binary()
        self._err = open(self.log, "wb")
        self.proc = subprocess.Popen([tu.DICOMFS, "serve", self.archive, "--http", f"{HOST}:0", *self.args],
                                     stdout=subprocess.PIPE, stderr=self._err, stdin=subprocess.DEVNULL, env=self.env)
        _running.append(self)
        line = b""
        deadline = time.time() + self.start_timeout
        while not line.endswith(b"\n"):
            left = deadline - time.time()
            if left <= 0 or self.proc.poll() is not None:
                break
            r, _, _ = select.select([self.proc.stdout], [], [], left)
            if not r:
                break
            b = os.read(self.proc.stdout.fileno(), 1)
            if not b:
                break
            line += b
        m = re.fullmatch(r"dicomfs: serving (.+) at (https?)://127\.0\.0\.1:(\d+)\n", line.decode("utf-8", "replace"))
        if not m:
            self.stop()
            raise RuntimeError(f"dicomfs serve did not start: stdout {line!r}, stderr {self.stderr()[-500:]!r}")
        self.port = int(m.group(3))
        self.url = f"{m.group(2)}://{HOST}:{self.port}"
        return self

    @property
    def pid(self):
        return self.proc.pid

    def stderr(self):
        try:
            with open(self.log, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self, timeout=60):
        """SIGTERM, wait; SIGKILL when it does not stop. Returns the exit code."""
        if self.proc is None:
            return self.returncode
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.returncode = self.proc.returncode
        try:
            self.proc.stdout.close()
            self._err.close()
        except Exception:
            pass
        self.proc = None
        if self in _running:
            _running.remove(self)
        return self.returncode

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    # ---- requests -----------------------------------------------------------------

    def request(self, method, path, body=None, headers=None, chunked=False, timeout=None):
        return request(self.port, method, path, body, headers, chunked, timeout)

    def get(self, path, accept=None, headers=None):
        h = dict(headers or {})
        if accept is not None:
            h["Accept"] = accept
        return self.request("GET", path, headers=h)

    def stow(self, path, body, content_type, accept=DICOM_JSON, headers=None, chunked=False):
        h = dict(headers or {})
        if content_type is not None:
            h["Content-Type"] = content_type
        if accept is not None:
            h["Accept"] = accept
        return self.request("POST", path, body=body, headers=h, chunked=chunked)

    def vmhwm_kb(self):
        return proc_status_kb(self.pid, "VmHWM")

    def finish_check(self, c):
        """Stops the server and checks it exited 0 (under the sanitizers a report makes it
        exit 86/87)."""
        rc = self.stop()
        c.ok(rc == 0, "the server stops on SIGTERM with exit status 0",
             f"exit status {rc}; stderr: {self.stderr()[-1500:]}")


def request(port, method, path, body=None, headers=None, chunked=False, timeout=None):
    """One request on a new connection; returns Response(status, reason, headers, body bytes).
    CHUNKED: BODY (bytes or an iterable of bytes) is sent with Transfer-Encoding: chunked.
    When the connection fails (the server crashed or reset it), status is 0 and reason says why,
    so that the check fails instead of the whole test."""
    try:
        return _request(port, method, path, body, headers, chunked, timeout)
    except (OSError, http.client.HTTPException) as e:
        return Response(0, f"no response: {e!r}", http.client.HTTPMessage(), b"")


def _request(port, method, path, body, headers, chunked, timeout):
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout or HTTP_TIMEOUT)
    try:
        h = dict(headers or {})
        if chunked:
            if isinstance(body, (bytes, bytearray)):
                data = bytes(body)
                body = (data[i:i + 65536] for i in range(0, len(data), 65536))
            conn.request(method, path, body=body, headers=h, encode_chunked=True)
        else:
            conn.request(method, path, body=body, headers=h)
        resp = conn.getresponse()
        data = resp.read()
        return Response(resp.status, resp.reason, resp.headers, data)
    finally:
        conn.close()


def raw_request(port, data, timeout=None):
    """Sends DATA (a complete request, bytes) and returns the parsed Response."""
    sock = socket.create_connection((HOST, port), timeout=timeout or HTTP_TIMEOUT)
    try:
        sock.sendall(data)
        resp = http.client.HTTPResponse(sock, method=data.split(b" ", 1)[0].decode())
        resp.begin()
        body = resp.read()
        return Response(resp.status, resp.reason, resp.headers, body)
    finally:
        sock.close()


def expect_continue(port, method, path, headers, body, timeout=None):
    """Sends the headers with 'Expect: 100-continue' and waits. Returns
    (interim status or None, Response, body_sent): when the server answers 100 the body is
    sent and the final response read; when it answers at once with a final status, the
    body is not sent."""
    sock = socket.create_connection((HOST, port), timeout=timeout or HTTP_TIMEOUT)
    try:
        h = dict(headers)
        h["Host"] = f"{HOST}:{port}"
        h["Expect"] = "100-continue"
        h["Content-Length"] = str(len(body))
        head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items()) + "\r\n"
        sock.sendall(head.encode("latin-1"))
        # Read the first status line and headers, byte by byte (not past them).
        buf = b""
        while not buf.endswith(b"\r\n\r\n"):
            b = sock.recv(1)
            if not b:
                break
            buf += b
        m = re.match(rb"HTTP/1\.[01] (\d{3})", buf)
        first = int(m.group(1)) if m else None
        if first == 100:
            sock.sendall(body)
            resp = http.client.HTTPResponse(sock, method=method)
            resp.begin()
            data = resp.read()
            return 100, Response(resp.status, resp.reason, resp.headers, data), True
        # A final response straight away: parse it from what was read plus the rest.
        fake = _Replay(buf, sock)
        resp = http.client.HTTPResponse(fake, method=method)
        resp.begin()
        data = resp.read()
        return None, Response(resp.status, resp.reason, resp.headers, data), False
    finally:
        sock.close()


class _Replay:
    """A socket stand-in whose makefile() yields PREFIX and then the socket's bytes."""

    def __init__(self, prefix, sock):
        self.prefix = prefix
        self.sock = sock

    def makefile(self, mode):
        sock = self.sock
        prefix = self.prefix

        class R(io.RawIOBase):
            def __init__(self):
                self.pre = prefix

            def readable(self):
                return True

            def readinto(self, b):
                if self.pre:
                    n = min(len(b), len(self.pre))
                    b[:n] = self.pre[:n]
                    self.pre = self.pre[n:]
                    return n
                d = sock.recv(len(b))
                b[:len(d)] = d
                return len(d)

        return io.BufferedReader(R())


def proc_status_kb(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def sanitized():
    """Is the binary built with AddressSanitizer?"""
    try:
        with open(tu.DICOMFS, "rb") as f:
            return b"__asan_init" in f.read()
    except OSError:
        return False


# ---- Media types and multipart ----------------------------------------------------------

def media_type(text):
    """'a/b; x="y"; z=w' -> ('a/b', {'x': 'y', 'z': 'w'}) (type and names lower-cased)."""
    if text is None:
        return None, {}
    parts = []
    cur, q = "", False
    for ch in text:
        if ch == '"':
            q = not q
        if ch == ";" and not q:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    mt = parts[0].strip().lower()
    params = {}
    for p in parts[1:]:
        if "=" not in p:
            continue
        k, v = p.split("=", 1)
        v = v.strip()
        if len(v) >= 2 and v[0] == '"' and v[-1] == '"':
            v = v[1:-1]
        params[k.strip().lower()] = v
    return mt, params


def multipart(parts, boundary, preamble=b"", epilogue=b"", close=True):
    """A multipart body: PARTS are (content type or None, bytes) or (headers dict, bytes)."""
    out = bytearray(preamble)
    b = boundary.encode()
    for i, (ct, data) in enumerate(parts):
        out += (b"\r\n" if i or preamble else b"") + b"--" + b + b"\r\n"
        if isinstance(ct, dict):
            for k, v in ct.items():
                out += f"{k}: {v}\r\n".encode()
        elif ct is not None:
            out += f"Content-Type: {ct}\r\n".encode()
        out += b"\r\n" + data
    if close:
        out += b"\r\n--" + b + b"--\r\n" + epilogue
    return bytes(out)


def parse_multipart(content_type, body):
    """Parses a multipart/related response strictly. Returns (parts, error): parts is a list
    of (headers dict with lower-cased names, bytes); error a string or None."""
    mt, params = media_type(content_type)
    if mt != "multipart/related":
        return None, f"not multipart/related: {content_type!r}"
    boundary = params.get("boundary")
    if not boundary:
        return None, "no boundary parameter"
    delim = b"--" + boundary.encode()
    if not body.startswith(delim):
        return None, "the body does not start with the boundary"
    pos = 0
    parts = []
    while True:
        # at a delimiter
        pos += len(delim)
        if body[pos:pos + 2] == b"--":
            rest = body[pos + 2:]
            if rest not in (b"", b"\r\n"):
                return parts, f"unexpected epilogue {rest[:40]!r}"
            return parts, None
        if body[pos:pos + 2] != b"\r\n":
            return None, f"no CRLF after a delimiter at {pos}"
        pos += 2
        hend = body.find(b"\r\n\r\n", pos)
        if hend < 0:
            return None, "part headers not terminated"
        headers = {}
        if hend > pos:
            for line in body[pos:hend].decode("latin-1").split("\r\n"):
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
        pos = hend + 4
        nxt = body.find(b"\r\n" + delim, pos)
        if nxt < 0:
            return None, "no closing delimiter"
        parts.append((headers, body[pos:nxt]))
        pos = nxt + 2


# ---- DICOM -------------------------------------------------------------------------------

def dicom_bytes(ds, implicit=False):
    """DS as Part-10 bytes (as tu.write_dicom writes it)."""
    path = os.path.join("/dev/shm" if os.path.isdir("/dev/shm") else "/tmp", f"webutil-{os.getpid()}.dcm")
    try:
        tu.write_dicom(path, ds, implicit=implicit)
        with open(path, "rb") as f:
            return f.read()
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass


def read_dicom(data):
    return pydicom.dcmread(io.BytesIO(data), force=True)


def json_body(resp):
    try:
        return json.loads(resp.body.decode("utf-8"))
    except Exception:
        return None


def seq_items(obj, tag):
    el = (obj or {}).get(tag) or {}
    return el.get("Value") or []


def first_value(obj, tag):
    el = (obj or {}).get(tag) or {}
    v = el.get("Value")
    return v[0] if v else None


def describe(resp, n=300):
    body = resp.body[:n].decode("utf-8", "replace") if resp.body else ""
    if resp.status == 0:
        return resp.reason
    return f"status {resp.status}, Content-Type {resp.headers.get('Content-Type')!r}, body {body!r}"


def is_text_error(resp):
    """A plain-text, non-empty error body."""
    ct, _ = media_type(resp.headers.get("Content-Type"))
    return ct == "text/plain" and len(resp.body.strip()) > 0
