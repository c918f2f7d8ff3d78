"""A recording TCP relay for the interoperability tests (tests/interop/).

    tap = Tap(target_port).start()     # listens on 127.0.0.1:<tap.port>, relays to
                                       # 127.0.0.1:<target_port> byte for byte
    ... point a client at http://127.0.0.1:<tap.port>/ ...
    for x in tap.exchanges(): print(x.describe())
    tap.stop()

The relay never changes a byte in either direction (so what the server sees is exactly
what the client sent, Expect/100-continue, chunking and keep-alive included); it keeps a
copy of both streams of every connection and parses them afterwards into HTTP/1.1
exchanges: the request line, every header as sent (order, case and repeats kept), the
body (de-chunked), and the server's answer (interim 1xx lines, status, headers, body).

As a command, for looking at a client by hand:

    python3 httptap.py TARGET_PORT [LISTEN_PORT]   # prints each exchange as it completes

Only 127.0.0.1 is ever listened on or connected to.
"""
import collections
import select
import socket
import sys
import threading
import time

HOST = "127.0.0.1"

Exchange = collections.namedtuple(
    "Exchange",
    "conn index t method target version headers body body_complete "
    "interim status reason resp_headers resp_body resp_complete")


def header(headers, name):
    """The first value of NAME (case-insensitive) in a list of (name, value), or None."""
    name = name.lower()
    for k, v in headers:
        if k.lower() == name:
            return v
    return None


def headers_all(headers, name):
    name = name.lower()
    return [v for k, v in headers if k.lower() == name]


def describe(x, body_preview=0):
    """A multi-line text of one exchange: request line, headers, body size; answer."""
    out = [f"> {x.method} {x.target} {x.version}"]
    out += [f"> {k}: {v}" for k, v in x.headers]
    out.append(f"> [body {len(x.body)} bytes{'' if x.body_complete else ', incomplete'}]")
    if body_preview and x.body:
        out.append("> " + repr(x.body[:body_preview]))
    for s in x.interim:
        out.append(f"< (interim) {s}")
    if x.status is None:
        out.append("< [no answer]")
    else:
        out.append(f"< {x.status} {x.reason}")
        out += [f"< {k}: {v}" for k, v in x.resp_headers]
        out.append(f"< [body {len(x.resp_body)} bytes{'' if x.resp_complete else ', incomplete'}]")
        if body_preview and x.resp_body:
            out.append("< " + repr(x.resp_body[:body_preview]))
    return "\n".join(out)


class _Conn:
    def __init__(self, n):
        self.n = n
        self.c2s = bytearray()
        self.s2c = bytearray()
        self.c2s_times = []  # (offset in c2s, time.time()) of each chunk received
        self.closed = False


class Tap:
    def __init__(self, target_port, listen_port=0, target_host=HOST):
        self.target = (target_host, target_port)
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind((HOST, listen_port))
        self.lsock.listen(64)
        self.port = self.lsock.getsockname()[1]
        self.url = f"http://{HOST}:{self.port}"
        self.lock = threading.Lock()
        self.conns = []
        self.threads = []
        self.stopping = False
        self.acceptor = None

    def start(self):
        self.acceptor = threading.Thread(target=self._accept, daemon=True)
        self.acceptor.start()
        return self

    def stop(self):
        self.stopping = True
        try:
            self.lsock.close()
        except OSError:
            pass
        for t in list(self.threads):
            t.join(timeout=5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    def _accept(self):
        while not self.stopping:
            try:
                r, _, _ = select.select([self.lsock], [], [], 0.2)
                if not r:
                    continue
                csock, _ = self.lsock.accept()
            except OSError:
                return
            with self.lock:
                conn = _Conn(len(self.conns))
                self.conns.append(conn)
            t = threading.Thread(target=self._relay, args=(csock, conn), daemon=True)
            self.threads.append(t)
            t.start()

    def _relay(self, csock, conn):
        try:
            ssock = socket.create_connection(self.target, timeout=10)
        except OSError:
            csock.close()
            conn.closed = True
            return
        ssock.settimeout(None)
        socks = {csock: (ssock, conn.c2s), ssock: (csock, conn.s2c)}
        open_read = {csock, ssock}
        try:
            while open_read and not self.stopping:
                r, _, _ = select.select(list(open_read), [], [], 0.2)
                for s in r:
                    other, buf = socks[s]
                    try:
                        data = s.recv(65536)
                    except OSError:
                        data = b""
                    if data:
                        with self.lock:
                            if buf is conn.c2s:
                                conn.c2s_times.append((len(buf), time.time()))
                            buf += data
                        try:
                            other.sendall(data)
                        except OSError:
                            open_read.clear()
                            break
                    else:
                        open_read.discard(s)
                        try:
                            other.shutdown(socket.SHUT_WR)
                        except OSError:
                            pass
        finally:
            for s in (csock, ssock):
                try:
                    s.close()
                except OSError:
                    pass
            conn.closed = True

    def mark(self):
        """A point in time: exchanges(since=mark) lists only the requests begun after it."""
        return time.time()

    def settle(self, timeout=5.0):
        """Waits until every request recorded so far has its whole answer recorded too (or
        TIMEOUT). Each chunk is recorded before it is forwarded, so this matters only for
        answers that end with the connection (no Content-Length, not chunked)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if all(x.status is not None and x.resp_complete for x in self.exchanges()):
                return True
            time.sleep(0.02)
        return False

    def exchanges(self, since=0.0):
        with self.lock:
            snap = [(c.n, bytes(c.c2s), bytes(c.s2c), c.closed, list(c.c2s_times))
                    for c in self.conns]
        out = []
        for n, c2s, s2c, closed, times in snap:
            out += parse_connection(n, c2s, s2c, closed, times)
        out = [x for x in out if x.t >= since]
        out.sort(key=lambda x: (x.t, x.conn, x.index))  # in the order the requests began
        return out


# ---- Parsing -----------------------------------------------------------------------------

def _head(buf, pos):
    """(start line, [(name, value)], position after the blank line) or None."""
    end = buf.find(b"\r\n\r\n", pos)
    if end < 0:
        return None
    lines = buf[pos:end].decode("latin-1").split("\r\n")
    hdrs = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and hdrs:  # obsolete folding
            k, v = hdrs[-1]
            hdrs[-1] = (k, v + " " + line.strip())
            continue
        k, _, v = line.partition(":")
        hdrs.append((k.strip(), v.strip()))
    return lines[0], hdrs, end + 4


def _body(buf, pos, hdrs, until_close):
    """(body, position after it, complete)."""
    te = (header(hdrs, "Transfer-Encoding") or "").lower()
    if "chunked" in te:
        out = bytearray()
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                return bytes(out), len(buf), False
            size_txt = buf[pos:eol].split(b";")[0].strip()
            try:
                size = int(size_txt, 16)
            except ValueError:
                return bytes(out), len(buf), False
            pos = eol + 2
            if size == 0:
                # trailers up to an empty line
                end = buf.find(b"\r\n", pos)
                while end >= 0 and end != pos:
                    pos = end + 2
                    end = buf.find(b"\r\n", pos)
                if end < 0:
                    return bytes(out), len(buf), False
                return bytes(out), end + 2, True
            if pos + size + 2 > len(buf):
                out += buf[pos:pos + size]
                return bytes(out), len(buf), False
            out += buf[pos:pos + size]
            pos += size + 2
    cl = header(hdrs, "Content-Length")
    if cl is not None:
        try:
            n = int(cl)
        except ValueError:
            n = 0
        body = buf[pos:pos + n]
        return bytes(body), pos + len(body), len(body) == n
    if until_close:
        return bytes(buf[pos:]), len(buf), True
    return b"", pos, True


def _time_at(times, offset):
    t = times[0][1] if times else 0.0
    for off, tt in times:
        if off > offset:
            break
        t = tt
    return t


def parse_connection(n, c2s, s2c, closed, times=()):
    reqs = []
    pos = 0
    while pos < len(c2s):
        start = pos
        h = _head(c2s, pos)
        if not h:
            break
        line, hdrs, pos = h
        parts = line.split(" ", 2)
        while len(parts) < 3:
            parts.append("")
        body, pos, complete = _body(c2s, pos, hdrs, until_close=False)
        reqs.append((_time_at(times, start), parts[0], parts[1], parts[2], hdrs, body, complete))
        if not complete:
            break
    out = []
    rpos = 0
    for i, (t, method, target, version, hdrs, body, complete) in enumerate(reqs):
        interim, status, reason, rh, rb, rcomplete = [], None, "", [], b"", False
        while rpos < len(s2c):
            h = _head(s2c, rpos)
            if not h:
                break
            sline, shdrs, rpos2 = h
            p = sline.split(" ", 2)
            try:
                code = int(p[1])
            except (IndexError, ValueError):
                break
            rpos = rpos2
            if 100 <= code < 200:
                interim.append(sline)
                continue
            status, reason, rh = code, (p[2] if len(p) > 2 else ""), shdrs
            if method == "HEAD" or code in (204, 304):
                rb, rcomplete = b"", True
            else:
                rb, rpos, rcomplete = _body(s2c, rpos, shdrs, until_close=True)
                if header(shdrs, "Content-Length") is None and \
                        "chunked" not in (header(shdrs, "Transfer-Encoding") or "").lower():
                    rcomplete = closed
            break
        out.append(Exchange(n, i, t, method, target, version, hdrs, body, complete,
                            interim, status, reason, rh, rb, rcomplete))
    return out


def main():
    target = int(sys.argv[1])
    listen = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    tap = Tap(target, listen).start()
    print(f"httptap: {tap.url} -> {HOST}:{target}", flush=True)
    seen = set()
    try:
        while True:
            time.sleep(0.2)
            for x in tap.exchanges():
                key = (x.conn, x.index)
                if key in seen or x.status is None or not x.resp_complete:
                    continue
                seen.add(key)
                print(describe(x), "\n", flush=True)
    except KeyboardInterrupt:
        tap.stop()


if __name__ == "__main__":
    main()
