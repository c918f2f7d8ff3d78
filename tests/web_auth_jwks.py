"""HTTP end-to-end: `dicomfs serve --auth` with keys fetched from an issuer (auth file
`jwksUri` or `"discovery": true`), the way a real OpenID Connect issuer (Keycloak, Entra
ID, Auth0) publishes them.

A small HTTP server in this test (http.server in a thread, 127.0.0.1 only) plays the
issuer: /realms/test/.well-known/openid-configuration (issuer, jwks_uri) and
/realms/test/keys (a JWKS made of `dicomfs keygen` jwks.json files); it counts the
requests of each path.

  - discovery: serve fetches the discovery document and the JWKS once at start (and says
    where the keys come from); a token of the first key -> 200;
  - rotation: the issuer now publishes a second key too; 20 concurrent tokens of the new
    kid -> all 200 after exactly one more JWKS fetch (one fetches, the others wait; the
    discovery document is not fetched again); the first key still works, no fetch;
  - unknown kid: a burst of 20 tokens of a kid in no set -> 401 each, at most one more
    fetch (at most one refresh per 30 s);
  - replacement: 30 s later the issuer publishes only a third key: its token -> 200 after
    one fetch, the first key's token -> 401 (the new set replaced the old one);
  - jwksUri (explicit, no discovery): fetched at start, token -> 200;
  - start errors (exit 2 with the reason): the JWKS server down, a discovery document
    without jwks_uri, one naming another issuer, the JWKS answering 404, a redirect from
    http (not followed), an http:// URL to a non-loopback address (refused without any
    request), jwksUri and discovery together; with a static key as well, a JWKS server
    down at start is a warning and the static key works.

Only 127.0.0.1 is contacted.
"""
import http.server
import json
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import testutil as tu  # noqa: E402
import webutil as wu  # noqa: E402

DJSON = wu.DICOM_JSON
REFRESH_SECONDS = 30  # web/auth.c AUTH_REFRESH_SECONDS


class Issuer:
    """The test's issuer: serves DOC at the discovery path and JWKS at /realms/test/keys."""

    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {}
        self.jwks = {"keys": []}
        self.discovery = None  # None: the default document
        self.jwks_status = 200
        self.jwks_delay = 0.0
        self.redirect = None  # a Location for the JWKS path (302)
        issuer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                with issuer.lock:
                    issuer.counts[self.path] = issuer.counts.get(self.path, 0) + 1
                    doc = issuer.discovery if issuer.discovery is not None else {
                        "issuer": issuer.url, "jwks_uri": issuer.url + "/keys",
                        "authorization_endpoint": issuer.url + "/auth"}
                    jwks, status, delay, redirect = issuer.jwks, issuer.jwks_status, issuer.jwks_delay, issuer.redirect
                if self.path == "/realms/test/.well-known/openid-configuration":
                    self.answer(200, doc)
                elif self.path == "/realms/test/keys":
                    if delay:
                        time.sleep(delay)
                    if redirect:
                        self.send_response(302)
                        self.send_header("Location", redirect)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                    else:
                        self.answer(status, jwks if status == 200 else {"error": "not here"})
                else:
                    self.answer(404, {"error": "no such path"})

            def answer(self, status, obj):
                body = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/realms/test"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def count(self, what):
        path = {"discovery": "/realms/test/.well-known/openid-configuration", "jwks": "/realms/test/keys"}[what]
        with self.lock:
            return self.counts.get(path, 0)

    def publish(self, *jwks_files):
        keys = []
        for path in jwks_files:
            with open(path) as f:
                keys += json.load(f)["keys"]
        with self.lock:
            self.jwks = {"keys": keys}

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def keygen(c, scratch, name, *opts):
    d = os.path.join(scratch, name)
    p = tu.run(["keygen", d, *opts])
    c.ok(p.returncode == 0, f"dicomfs keygen {name} succeeds", p.stderr)
    with open(os.path.join(d, "jwks.json")) as f:
        kid = json.load(f)["keys"][0]["kid"]
    return {"dir": d, "key": os.path.join(d, "private.pem"), "jwks": os.path.join(d, "jwks.json"),
            "pub": os.path.join(d, "public.pem"), "kid": kid}


def token(key, iss, role="reader"):
    p = tu.run(["token", "--key", key["key"], "--role", role, "--iss", iss])
    if p.returncode != 0:
        raise RuntimeError(f"dicomfs token: {p.stderr}")
    return p.stdout.strip()


def write_auth(scratch, name, cfg):
    path = os.path.join(scratch, name + ".json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    return path


def get(port, tok):
    return wu.request(port, "GET", "/v2/studies", headers={"Authorization": f"Bearer {tok}", "Accept": DJSON})


def burst(port, tok, n=20):
    """N concurrent requests with TOK; their statuses and one body."""
    results = [None] * n

    def one(i):
        try:
            results[i] = get(port, tok)
        except Exception as e:  # noqa: BLE001
            results[i] = e

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def statuses(results):
    return sorted({r.status if hasattr(r, "status") else repr(r) for r in results}, key=str)


def ok_status(r):
    return r.status in (200, 204)


def main():
    c = tu.Checker("web_auth_jwks")
    tu.require_binary()
    scratch = tu.scratch("web_auth_jwks")
    k1 = keygen(c, scratch, "key1")
    k2 = keygen(c, scratch, "key2", "--ec")
    k3 = keygen(c, scratch, "key3")
    k4 = keygen(c, scratch, "key4")  # never published
    issuer = Issuer()
    try:
        rotation(c, scratch, issuer, k1, k2, k3, k4)
        explicit_uri(c, scratch, issuer, k1)
        start_errors(c, scratch, issuer, k1)
    finally:
        issuer.close()
    c.finish()


def rotation(c, scratch, issuer, k1, k2, k3, k4):
    issuer.publish(k1["jwks"])
    iss = issuer.url
    auth = write_auth(scratch, "discovery", {"issuer": iss, "audiences": ["dicomfs"], "discovery": True})
    with wu.Server(scratch, "discovery-archive", args=["--auth", auth, "--auth-failures", "0"]) as srv:
        c.eq((issuer.count("discovery"), issuer.count("jwks")), (1, 1),
             "discovery: serve fetched the discovery document and the JWKS once at start")
        c.ok(issuer.url + "/keys" in srv.stderr() and "1 RS256" in srv.stderr(),
             "serve's start message names the JWKS URL and the fetched key", srv.stderr()[-400:])
        r = get(srv.port, token(k1, iss))
        c.ok(ok_status(r), "a token of the published key -> 200", wu.describe(r))
        r = get(srv.port, token(k1, "someone-else"))
        c.ok(r.status == 401 and "issuer" in r.body.decode(), "a token of the published key from another issuer -> 401",
             wu.describe(r))
        c.eq(issuer.count("jwks"), 1, "known kids fetch nothing")

        # rotation: the issuer publishes a second (EC) key as well; it answers slowly so
        # that the 20 requests overlap the one fetch
        issuer.publish(k1["jwks"], k2["jwks"])
        with issuer.lock:
            issuer.jwks_delay = 0.5
        rs = burst(srv.port, token(k2, iss))
        with issuer.lock:
            issuer.jwks_delay = 0.0
        c.ok(all(hasattr(r, "status") and ok_status(r) for r in rs),
             "rotation: 20 concurrent tokens of the new kid -> all 200 after the refresh", str(statuses(rs)))
        c.eq(issuer.count("jwks"), 2, "rotation: exactly one more JWKS fetch for the 20 (the others waited for it)")
        c.eq(issuer.count("discovery"), 1, "rotation: the discovery document is not fetched again")
        r = get(srv.port, token(k1, iss))
        c.ok(ok_status(r), "rotation: the first key still works", wu.describe(r))
        c.eq(issuer.count("jwks"), 2, "rotation: the first key fetches nothing")
        refreshed_at = time.monotonic()

        before = issuer.count("jwks")
        rs = burst(srv.port, token(k4, iss))
        c.ok(all(hasattr(r, "status") and r.status == 401 and "kid" in r.body.decode() for r in rs),
             "unknown kid: a burst of 20 tokens of a kid in no set -> 401 each, saying the kid is unknown",
             str(statuses(rs)) + " " + (wu.describe(rs[0]) if hasattr(rs[0], "status") else ""))
        c.ok(issuer.count("jwks") - before <= 1, "unknown kid: the 20 cause at most one more fetch (rate limit)",
             f"{issuer.count('jwks') - before} fetches")

        # replacement: after the rate limit's window the issuer publishes only a third key
        issuer.publish(k3["jwks"])
        wait = REFRESH_SECONDS + 1 - (time.monotonic() - refreshed_at)
        if wait > 0:
            c.note(f"waiting {wait:.0f} s for the refresh window")
            time.sleep(wait)
        before = issuer.count("jwks")
        r = get(srv.port, token(k3, iss))
        c.ok(ok_status(r), "replacement: 30 s later a token of the new only key -> 200", wu.describe(r))
        c.eq(issuer.count("jwks") - before, 1, "replacement: after one more fetch")
        r = get(srv.port, token(k1, iss))
        c.ok(r.status == 401 and "kid" in r.body.decode(),
             "replacement: the first key's token -> 401 (the new set replaced the old)", wu.describe(r))
        r = get(srv.port, token(k2, iss))
        c.ok(r.status == 401, "replacement: the second key's token -> 401", wu.describe(r))
        c.eq(issuer.count("jwks") - before, 1, "replacement: and those fetch nothing within the window")
        srv.finish_check(c)


def explicit_uri(c, scratch, issuer, k1):
    issuer.publish(k1["jwks"])
    before = (issuer.count("discovery"), issuer.count("jwks"))
    auth = write_auth(scratch, "jwksuri", {"issuer": "dicomfs-local", "audiences": ["dicomfs"],
                                           "jwksUri": issuer.url + "/keys"})
    with wu.Server(scratch, "jwksuri-archive", args=["--auth", auth]) as srv:
        c.eq((issuer.count("discovery") - before[0], issuer.count("jwks") - before[1]), (0, 1),
             "jwksUri: the JWKS is fetched at start, no discovery")
        r = get(srv.port, token(k1, "dicomfs-local"))
        c.ok(ok_status(r), "jwksUri: a token of the published key -> 200", wu.describe(r))
        srv.finish_check(c)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_errors(c, scratch, issuer, k1):
    down = f"http://127.0.0.1:{free_port()}/realms/test"
    base = {"audiences": ["dicomfs"]}

    def refused(label, cfg, expect, setup=None):
        if setup:
            setup()
        path = write_auth(scratch, "bad-" + label.replace(" ", "-"), dict(base, **cfg))
        t0 = time.monotonic()
        p = tu.run(["serve", os.path.join(scratch, "never"), "--http", "127.0.0.1:0", "--auth", path], timeout=60)
        c.ok(p.returncode == 2 and all(e in p.stderr for e in expect),
             f"start: {label} -> exit 2 naming {expect}", f"rc {p.returncode}: {p.stderr[-400:]}")
        c.ok(time.monotonic() - t0 < 30, f"start: {label}: within the fetch timeout")
        with issuer.lock:
            issuer.discovery = None
            issuer.jwks_status = 200
            issuer.redirect = None

    refused("JWKS server down", {"issuer": down, "discovery": True}, [down + "/.well-known/openid-configuration"])
    refused("JWKS URL down", {"issuer": "i", "jwksUri": down + "/keys"}, [down + "/keys", "cannot fetch"])

    def no_jwks_uri():
        with issuer.lock:
            issuer.discovery = {"issuer": issuer.url}
    refused("discovery document without jwks_uri", {"issuer": issuer.url, "discovery": True}, ["jwks_uri"],
            no_jwks_uri)

    def other_issuer():
        with issuer.lock:
            issuer.discovery = {"issuer": "https://elsewhere.example", "jwks_uri": issuer.url + "/keys"}
    refused("discovery document of another issuer", {"issuer": issuer.url, "discovery": True}, ["issuer"],
            other_issuer)

    def not_found():
        with issuer.lock:
            issuer.jwks_status = 404
    refused("JWKS answering 404", {"issuer": issuer.url, "discovery": True}, ["404"], not_found)

    def redirect():
        with issuer.lock:
            issuer.redirect = issuer.url + "/.well-known/openid-configuration"
    refused("JWKS redirect from http (not followed)", {"issuer": "i", "jwksUri": issuer.url + "/keys"}, ["302"],
            redirect)

    before = issuer.count("jwks")
    refused("http to a non-loopback address", {"issuer": "i", "jwksUri": "http://192.0.2.1/keys"},
            ["loopback", "https"])
    refused("a discovery issuer that is no URL", {"issuer": "dicomfs-local", "discovery": True}, ["https"])
    refused("ftp jwksUri", {"issuer": "i", "jwksUri": "ftp://127.0.0.1/keys"}, ["https"])
    refused("jwksUri and discovery together", {"issuer": issuer.url, "jwksUri": issuer.url + "/keys",
                                               "discovery": True}, ["not both"])
    c.eq(issuer.count("jwks"), before, "start: refused configurations request nothing")

    # a static key as well: a JWKS server down is a warning, the static key works
    auth = write_auth(scratch, "static-and-down", {"issuer": "dicomfs-local", "audiences": ["dicomfs"],
                                                   "keys": [k1["pub"]], "jwksUri": down + "/keys"})
    with wu.Server(scratch, "static-archive", args=["--auth", auth]) as srv:
        c.ok("WARNING" in srv.stderr() and down + "/keys" in srv.stderr(),
             "static key and JWKS server down: serve starts with a warning", srv.stderr()[-400:])
        r = get(srv.port, token(k1, "dicomfs-local"))
        c.ok(ok_status(r), "static key and JWKS server down: the static key works", wu.describe(r))
        srv.finish_check(c)


if __name__ == "__main__":
    main()
