"""HTTP end-to-end: access control of `dicomfs serve --auth` (bearer tokens, roles, data
actions), and `dicomfs keygen` / `dicomfs token`.

  - keygen: a private folder (0700) of 0600 files; its auth file works as is; the JWKS
    kid is the key's RFC 7638 thumbprint;
  - a principal x route matrix over every route kind of web/route.h (the test checks that
    it names them all): anonymous, an empty bearer, another scheme, malformed, expired,
    not yet valid, wrong audience, wrong issuer, wrong signature (another key with our
    kid; a payload changed after signing), alg none (three spellings), HS/RS confusion
    (HS256 signed with the public key PEM as secret), unknown kid, a crit header -> 401
    with the reference's WWW-Authenticate challenge; no roles, an unknown role, reader,
    "DICOM Data Reader", writer, owner, "DICOM Data Owner", custom roles of a roles file
    (one with notDataActions), HS256 with the shared secret, a roles claim that is a
    string, a token expired within the clock skew -> 403 (plain text naming the data
    action) or the route's own answer;
  - refused writes, deletes and tag changes change nothing (change feed head, QIDO,
    extended query tags, fsck), and with Expect: 100-continue the body is not even sent;
  - /health/check and CORS preflight need no token; a path that does not route needs one;
  - a JWKS file (RS256 and ES256 keys) instead of PEM keys; auth file errors stop serve;
  - without --auth, Authorization headers (empty bearer included) are ignored.
  - safe defaults: without --auth serve says it listens on loopback only, and refuses a
    non-loopback address (exit 2, archive not created) unless --insecure-no-auth (checked
    with an address of no interface here, so that nothing listens beyond loopback); a new
    archive's folders are 0700 and its files (index, lock, stored objects) 0600; an
    existing archive's modes are left as they are.

Tokens are minted with `dicomfs token`; the bad ones are crafted here (base64url + json,
hmac for HS256). Only 127.0.0.1 is contacted.
"""
import base64
import hashlib
import hmac
import json
import os
import re
import stat
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import testutil as tu  # noqa: E402
import webutil as wu  # noqa: E402

DJSON = wu.DICOM_JSON
CT = os.path.join(tu.CORPUS, "CT_small.dcm")
ROOT = "1.2.826.0.1.3680043.9.7777.99"
HS_SECRET = "a-shared-secret-of-at-least-32-characters!"
CHALLENGE = 'Bearer authorization_uri="dicomfs-local", resource_id="dicomfs", realm="dicomfs"'
ROLES = {"roles": [
    {"name": "curator", "dataActions": ["read", "delete", "manageExtendedQueryTags"], "notDataActions": [],
     "scopes": ["/"]},
    {"name": "nodelete", "dataActions": ["*"], "notDataActions": ["delete"], "scopes": ["/"]},
]}
ALL_ACTIONS = {"read", "write", "delete", "manageExtendedQueryTags", "export"}


def b64u(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64u(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def jwt_parts(tok):
    h, p, s = tok.split(".")
    return json.loads(unb64u(h)), json.loads(unb64u(p)), s


def hs256(header, payload, secret):
    si = b64u(json.dumps(header).encode()) + "." + b64u(json.dumps(payload).encode())
    sig = hmac.new(secret, si.encode(), hashlib.sha256).digest()
    return si + "." + b64u(sig)


def token(*args):
    p = tu.run(["token", *args])
    if p.returncode != 0:
        raise RuntimeError(f"dicomfs token {args}: {p.stderr}")
    return p.stdout.strip()


def main():
    tu.require_binary()
    c = tu.Checker("web_auth")
    scratch = tu.scratch("web_auth")
    keys = make_keys(c, scratch)
    principals = make_principals(keys)
    # the matrix sends hundreds of bad tokens from one address: no 429s (web_audit tests them)
    with wu.Server(scratch, "main", args=["--auth", keys["auth_file"], "--auth-failures", "0"]) as srv:
        c.ok("access control" in srv.stderr(), "serve says at start that access control is on", srv.stderr()[-300:])
        matrix(c, srv, principals, keys)
        srv.finish_check(c)
    jwks(c, scratch, keys)
    config_errors(c, scratch, keys)
    without_auth(c, scratch, principals)
    safe_defaults(c, scratch)
    postman(c, scratch, keys)
    c.finish()


# ---- keys, auth files, tokens ---------------------------------------------------------------

def make_keys(c, scratch):
    d = os.path.join(scratch, "auth")
    p = tu.run(["keygen", d])
    c.ok(p.returncode == 0, "dicomfs keygen DIR succeeds", p.stderr)
    c.eq(stat.S_IMODE(os.stat(d).st_mode), 0o700, "keygen's folder is mode 0700")
    for name in ("private.pem", "public.pem", "jwks.json", "auth.json"):
        c.eq(stat.S_IMODE(os.stat(os.path.join(d, name)).st_mode), 0o600, f"keygen's {name} is mode 0600")
    p = tu.run(["keygen", d])
    c.ok(p.returncode != 0 and "--force" in p.stderr, "keygen again keeps the existing key (refuses without --force)",
         p.stderr)
    with open(os.path.join(d, "auth.json")) as f:
        auth = json.load(f)
    c.eq((auth["issuer"], auth["audiences"]), ("dicomfs-local", ["dicomfs"]), "keygen's auth file: issuer dicomfs-local, audience dicomfs")
    with open(os.path.join(d, "jwks.json")) as f:
        jwk = json.load(f)["keys"][0]
    canon = json.dumps({k: jwk[k] for k in ("e", "kty", "n")}, separators=(",", ":"), sort_keys=True)
    kid = b64u(hashlib.sha256(canon.encode()).digest())
    c.eq(jwk["kid"], kid, "the JWKS kid is the RFC 7638 thumbprint")
    # the test's auth file: keygen's plus an HS256 secret and the roles file
    with open(os.path.join(d, "roles.json"), "w") as f:
        json.dump(ROLES, f)
    auth.update({"hs256Secret": HS_SECRET, "roles": "roles.json"})
    auth_file = os.path.join(d, "test-auth.json")
    with open(auth_file, "w") as f:
        json.dump(auth, f)
    other = os.path.join(scratch, "other")
    ec = os.path.join(scratch, "ec")
    for folder, opts in ((other, []), (ec, ["--ec"])):
        p = tu.run(["keygen", folder, *opts])
        c.ok(p.returncode == 0, f"dicomfs keygen {' '.join(opts)} succeeds", p.stderr)
    with open(os.path.join(d, "public.pem"), "rb") as f:
        public_pem = f.read()
    return {"dir": d, "auth_file": auth_file, "key": os.path.join(d, "private.pem"), "kid": kid,
            "other": os.path.join(other, "private.pem"), "ec": os.path.join(ec, "private.pem"),
            "jwks": [os.path.join(d, "jwks.json"), os.path.join(ec, "jwks.json")], "public_pem": public_pem}


def make_principals(k):
    """name -> (Authorization header value or None, expected data actions or None for a 401)."""
    key = k["key"]
    now = int(time.time())
    owner = token("--key", key, "--role", "owner", "--sub", "owner@test")
    reader = token("--key", key, "--role", "reader")
    _, body, sig = owner.split(".")
    tampered_h, tampered_p, tampered_s = jwt_parts(reader)
    tampered_p["roles"] = ["owner"]
    tampered = ".".join([reader.split(".")[0], b64u(json.dumps(tampered_p).encode()), tampered_s])
    claims = {"iss": "dicomfs-local", "aud": "dicomfs", "sub": "x", "exp": now + 3600, "roles": ["owner"]}
    none_tokens = {f"alg {a}": b64u(json.dumps({"alg": a, "typ": "JWT"}).encode()) + "." +
                   b64u(json.dumps(claims).encode()) + "." for a in ("none", "None", "NONE")}
    bearer = lambda t: f"Bearer {t}"  # noqa: E731
    bad = {
        "anonymous": None,
        "empty bearer": "Bearer ",
        "Basic scheme": "Basic dXNlcjpwYXNz",
        "malformed": "Bearer not-a-jwt",
        "two parts": "Bearer " + owner.rsplit(".", 1)[0],
        "expired": bearer(token("--key", key, "--role", "owner", "--ttl", "-2m")),
        "not yet valid": bearer(token("--key", key, "--role", "owner", "--nbf", "10m")),
        "wrong audience": bearer(token("--key", key, "--role", "owner", "--aud", "someone-else")),
        "wrong issuer": bearer(token("--key", key, "--role", "owner", "--iss", "https://evil.example")),
        "wrong signature (other key, our kid)": bearer(token("--key", k["other"], "--role", "owner", "--kid", k["kid"])),
        "payload changed after signing": bearer(tampered),
        "HS/RS confusion (public PEM as HS secret)": bearer(hs256({"alg": "HS256", "typ": "JWT", "kid": k["kid"]},
                                                                  claims, k["public_pem"])),
        "HS256 with a wrong secret": bearer(hs256({"alg": "HS256", "typ": "JWT"}, claims, b"x" * 40)),
        "unknown kid": bearer(token("--key", key, "--role", "owner", "--kid", "no-such-kid")),
        "crit header": bearer(hs256({"alg": "HS256", "crit": ["exp"], "exp": 1}, claims, HS_SECRET.encode())),
        "RS384 (not accepted)": bearer(b64u(json.dumps({"alg": "RS384"}).encode()) + "." + body + "." + sig),
        "no exp": bearer(hs256({"alg": "HS256"}, {k2: v for k2, v in claims.items() if k2 != "exp"}, HS_SECRET.encode())),
    }
    for name, t in none_tokens.items():
        bad[name] = bearer(t)
        bad[name + " with a signature"] = bearer(t + sig)
    good = {
        "no roles": (bearer(token("--key", key)), set()),
        "unknown role": (bearer(token("--key", key, "--role", "superuser")), set()),
        "reader": (bearer(reader), {"read"}),
        "DICOM Data Reader": (bearer(token("--key", key, "--role", "DICOM Data Reader")), {"read"}),
        "writer": (bearer(token("--key", key, "--role", "writer")), {"read", "write"}),
        "owner": (bearer(owner), ALL_ACTIONS),
        "DICOM Data Owner": (bearer(token("--key", key, "--role", "DICOM Data Owner")), ALL_ACTIONS),
        "curator (roles file)": (bearer(token("--key", key, "--role", "curator")),
                                 {"read", "delete", "manageExtendedQueryTags"}),
        "nodelete (roles file, notDataActions)": (bearer(token("--key", key, "--role", "nodelete")),
                                                  ALL_ACTIONS - {"delete"}),
        "reader + writer roles": (bearer(token("--key", key, "--role", "reader", "--role", "writer")),
                                  {"read", "write"}),
        "HS256 shared secret, reader": (bearer(token("--secret", HS_SECRET, "--role", "reader")), {"read"}),
        "roles claim a string (writer)": (bearer(hs256({"alg": "HS256", "typ": "JWT"}, dict(claims, roles="writer"),
                                                       HS_SECRET.encode())), {"read", "write"}),
        "expired within the skew, reader": (bearer(token("--key", key, "--role", "reader", "--ttl", "-20s")), {"read"}),
        "ES256 key not configured": None,
    }
    good.pop("ES256 key not configured")
    bad["ES256 token, key not configured"] = bearer(token("--key", k["ec"], "--role", "owner"))
    out = {n: (h, None) for n, h in bad.items()}
    out.update(good)
    return out


# ---- the routes ---------------------------------------------------------------------------

class Ctx:
    """UIDs of the seeded data and of what each principal may create or delete."""

    def __init__(self):
        ds = tu.pydicom.dcmread(CT)
        self.st, self.se, self.sop = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)
        with open(CT, "rb") as f:
            self.ct = f.read()


def instance(study, series, sop):
    return wu.dicom_bytes(tu.make_dataset(study, series, sop, PatientName="AUTH^TEST", PatientID="AUTH1",
                                          StudyDate="20200101", Modality="OT"))


def victim(pi, kind):
    """UIDs, unique to principal PI, of what it may delete (seeded by the owner)."""
    return tuple(tu.make_uid(ROOT, kind, pi, n) for n in (1, 2, 3))


XQT_TAGS = ["PatientWeight", "PatientSize", "Occupation", "PatientReligiousPreference", "MilitaryRank",
            "EthnicGroup", "PatientComments", "AdditionalPatientHistory", "PatientBirthName", "BranchOfService"]


def routes(ctx):
    """(route kind, label, method, path function(pi), body function(pi), headers, action or None, ok statuses)."""
    s, se, i = ctx.st, ctx.se, ctx.sop
    inst = f"/v2/studies/{s}/series/{se}/instances/{i}"
    acc = {"Accept": DJSON}
    stow_h = {"Content-Type": "application/dicom", "Accept": DJSON}
    xqt = lambda pi: ctx.xqt.get(pi, XQT_TAGS[0])  # noqa: E731
    const = lambda p: (lambda pi: p)  # noqa: E731
    return [
        ("ROUTE_HEALTH", "GET /health/check", "GET", const("/health/check"), None, {}, None, {200}),
        ("ROUTE_PREFLIGHT", "OPTIONS /v2/studies", "OPTIONS", const("/v2/studies"), None,
         {"Origin": "http://viewer", "Access-Control-Request-Method": "POST",
          "Access-Control-Request-Headers": "Authorization"}, None, {204}),
        ("ROUTE_QIDO", "GET /v2/studies", "GET", const("/v2/studies?PatientID=*"), None, acc, "read", {200}),
        ("ROUTE_QIDO", "GET /v1/series", "GET", const("/v1/series"), None, acc, "read", {200}),
        ("ROUTE_QIDO", "GET /v2/instances", "GET", const("/v2/instances"), None, acc, "read", {200}),
        ("ROUTE_QIDO", "GET /v2/studies/{s}/series", "GET", const(f"/v2/studies/{s}/series"), None, acc, "read", {200}),
        ("ROUTE_QIDO", "GET /v2/studies/{s}/instances", "GET", const(f"/v2/studies/{s}/instances"), None, acc, "read", {200}),
        ("ROUTE_QIDO", "GET /v2/studies/{s}/series/{se}/instances", "GET",
         const(f"/v2/studies/{s}/series/{se}/instances"), None, acc, "read", {200}),
        ("ROUTE_RETRIEVE", "GET /v2/studies/{s}", "GET", const(f"/v2/studies/{s}"), None,
         {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}, "read", {200}),
        ("ROUTE_RETRIEVE", "GET /v2/studies/{s}/series/{se}", "GET", const(f"/v2/studies/{s}/series/{se}"), None,
         {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}, "read", {200}),
        ("ROUTE_RETRIEVE", "GET .../instances/{i}", "GET", const(inst), None,
         {"Accept": "application/dicom; transfer-syntax=*"}, "read", {200}),
        ("ROUTE_RETRIEVE", "HEAD .../instances/{i}", "HEAD", const(inst), None,
         {"Accept": "application/dicom; transfer-syntax=*"}, "read", {200}),
        ("ROUTE_METADATA", "GET /v2/studies/{s}/metadata", "GET", const(f"/v2/studies/{s}/metadata"), None, acc, "read", {200}),
        ("ROUTE_METADATA", "GET .../series/{se}/metadata", "GET", const(f"/v2/studies/{s}/series/{se}/metadata"), None,
         acc, "read", {200}),
        ("ROUTE_METADATA", "GET .../instances/{i}/metadata", "GET", const(inst + "/metadata"), None, acc, "read", {200}),
        ("ROUTE_FRAMES", "GET .../frames/1", "GET", const(inst + "/frames/1"), None,
         {"Accept": 'multipart/related; type="application/octet-stream"; transfer-syntax=*'}, "read", {200}),
        ("ROUTE_RENDERED", "GET .../rendered", "GET", const(inst + "/rendered"), None, {"Accept": "image/png"}, "read", {200}),
        ("ROUTE_RENDERED", "GET .../frames/1/rendered", "GET", const(inst + "/frames/1/rendered"), None,
         {"Accept": "image/jpeg"}, "read", {200}),
        ("ROUTE_CHANGEFEED", "GET /v1/changefeed", "GET", const("/v1/changefeed"), None, {}, "read", {200}),
        ("ROUTE_CHANGEFEED", "GET /v2/changefeed", "GET", const("/v2/changefeed"), None, {}, "read", {200}),
        ("ROUTE_CHANGEFEED_LATEST", "GET /v2/changefeed/latest", "GET", const("/v2/changefeed/latest"), None, {},
         "read", {200}),
        ("ROUTE_XQT_LIST", "GET /v2/extendedquerytags", "GET", const("/v2/extendedquerytags"), None, {}, "read", {200}),
        ("ROUTE_XQT_GET", "GET /v2/extendedquerytags/PatientAge", "GET", const("/v2/extendedquerytags/PatientAge"),
         None, {}, "read", {200}),
        ("ROUTE_XQT_ERRORS", "GET /v2/extendedquerytags/PatientAge/errors", "GET",
         const("/v2/extendedquerytags/PatientAge/errors"), None, {}, "read", {200}),
        ("ROUTE_OPERATION", "GET /v2/operations/{id}", "GET",
         const("/v2/operations/00000000000000000000000000000000"), None, {}, "read", {404}),
        ("(no route)", "GET /v2/nothing-here", "GET", const("/v2/nothing-here"), None, {}, "", {404}),
        # writes: each allowed principal its own UIDs
        ("ROUTE_STOW", "POST /v2/studies", "POST", const("/v2/studies"),
         lambda pi: instance(*victim(pi, 10)), stow_h, "write", {200}),
        ("ROUTE_STOW", "POST /v2/studies/{study}", "POST", lambda pi: f"/v2/studies/{victim(pi, 11)[0]}",
         lambda pi: instance(*victim(pi, 11)), stow_h, "write", {200}),
        ("ROUTE_XQT_ADD", "POST /v2/extendedquerytags", "POST", const("/v2/extendedquerytags"),
         lambda pi: json.dumps([{"path": xqt(pi), "level": "study"}]).encode(), {"Content-Type": "application/json"},
         "manageExtendedQueryTags", {202}),
        ("ROUTE_XQT_UPDATE", "PATCH /v2/extendedquerytags/{tag}", "PATCH", lambda pi: f"/v2/extendedquerytags/{xqt(pi)}",
         lambda pi: json.dumps({"queryStatus": "Enabled"}).encode(), {"Content-Type": "application/json"},
         "manageExtendedQueryTags", {200}),
        ("ROUTE_XQT_DELETE", "DELETE /v2/extendedquerytags/{tag}", "DELETE",
         lambda pi: f"/v2/extendedquerytags/{xqt(pi)}", None, {}, "manageExtendedQueryTags", {204}),
        ("ROUTE_DELETE", "DELETE .../instances/{i}", "DELETE",
         lambda pi: "/v2/studies/{}/series/{}/instances/{}".format(*victim(pi, 20)), None, {}, "delete", {204}),
        ("ROUTE_DELETE", "DELETE .../series/{se}", "DELETE",
         lambda pi: "/v2/studies/{}/series/{}".format(*victim(pi, 21)[:2]), None, {}, "delete", {204}),
        ("ROUTE_DELETE", "DELETE /v2/studies/{s}", "DELETE", lambda pi: f"/v2/studies/{victim(pi, 22)[0]}", None, {},
         "delete", {204}),
    ]


def route_kinds():
    with open(os.path.join(tu.TESTS, "..", "web", "route.h")) as f:
        text = f.read()
    body = text[text.index("typedef enum"):text.index("} route_kind;")]
    return set(re.findall(r"\b(ROUTE_[A-Z_]+)\b", body))


# ---- the matrix ---------------------------------------------------------------------------

def snapshot(srv, owner):
    h = {"Authorization": owner, "Accept": DJSON}
    latest = srv.get("/v2/changefeed/latest", headers=h)
    studies = srv.get("/v2/studies?limit=200", headers=h)
    tags = srv.get("/v2/extendedquerytags", headers=h)
    return (latest.status, latest.body, studies.status, sorted(json.dumps(x, sort_keys=True) for x in (wu.json_body(studies) or [])),
            tags.status, tags.body)


def wait_operations(srv, owner, timeout=60):
    """Waits until no extended query tag is still being added."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = srv.get("/v2/extendedquerytags", headers={"Authorization": owner})
        tags = wu.json_body(r) or []
        if not any(t.get("status") == "adding" for t in tags):
            return True
        time.sleep(0.05)
    return False


def matrix(c, srv, principals, keys):
    ctx = Ctx()
    owner = principals["owner"][0]
    rts = routes(ctx)
    kinds = route_kinds()
    covered = {r[0] for r in rts}
    c.ok(kinds <= covered, "the matrix covers every route kind of web/route.h", f"missing: {sorted(kinds - covered)}")
    names = list(principals)
    index = {n: i for i, n in enumerate(names)}
    xqt_users = [index[n] for n, (h, a) in principals.items() if a and "manageExtendedQueryTags" in a]
    ctx.xqt = {pi: XQT_TAGS[k] for k, pi in enumerate(xqt_users)}

    # seed: the CT, a tag (PatientAge) to read, and for each principal that may delete its victims
    r = srv.stow("/v2/studies", ctx.ct, "application/dicom", headers={"Authorization": owner})
    c.ok(r.status == 200, "seed: the owner stores CT_small", wu.describe(r))
    r = srv.request("POST", "/v2/extendedquerytags", body=json.dumps([{"path": "PatientAge", "level": "study"}]).encode(),
                    headers={"Authorization": owner, "Content-Type": "application/json"})
    c.ok(r.status == 202, "seed: the owner adds the tag PatientAge", wu.describe(r))
    c.ok(wait_operations(srv, owner), "seed: the reindex ends")
    for n, (h, acts) in principals.items():
        if acts is not None and "delete" in acts:
            for kind in (20, 21, 22):
                st, se, sop = victim(index[n], kind)
                r = srv.stow("/v2/studies", instance(st, se, sop), "application/dicom", headers={"Authorization": owner})
                c.ok(r.status == 200, f"seed: a study for {n} to delete ({kind})", wu.describe(r))

    before = snapshot(srv, owner)
    fsck_before = tu.fsck(srv.archive)
    table = {}

    def run(name, label, method, path, body, headers, h):
        hh = dict(headers)
        if h is not None:
            hh["Authorization"] = h
        return srv.request(method, path, body=body, headers=hh)

    # Every request but the allowed changes first: nothing may change.
    for name in names:
        h, acts = principals[name]
        pi = index[name]
        for kind, label, method, pathf, bodyf, headers, action, ok in rts:
            if action is None:
                continue  # open routes: below
            if acts is not None and action and action in acts and method in ("POST", "PATCH", "DELETE"):
                continue  # allowed changes: below, after the no-change check
            r = run(name, label, method, pathf(pi), bodyf(pi) if bodyf else None, headers, h)
            table[(label, name)] = r.status
            text = method == "HEAD" or wu.is_text_error(r)  # HEAD: the headers of the text answer only
            if acts is None:
                c.ok(r.status == 401 and r.headers.get("WWW-Authenticate") == CHALLENGE and text,
                     f"{name}: {label} -> 401 with the challenge",
                     wu.describe(r) + f" WWW-Authenticate {r.headers.get('WWW-Authenticate')!r}")
            elif action and action not in acts:
                c.ok(r.status == 403 and text and (method == "HEAD" or f"'{action}'" in r.body.decode("utf-8", "replace"))
                     and "WWW-Authenticate" not in r.headers,
                     f"{name}: {label} -> 403 naming '{action}'", wu.describe(r))
            else:
                c.ok(r.status in ok, f"{name}: {label} -> {sorted(ok)}", wu.describe(r))
    after = snapshot(srv, owner)
    c.ok(after == before, "refused writes, deletes and tag changes changed nothing (change feed, QIDO, tags)",
         f"before {str(before)[:400]}\n     after  {str(after)[:400]}")
    fsck_after = tu.fsck(srv.archive)
    c.ok(fsck_after.returncode == 0 and fsck_after.stdout == fsck_before.stdout, "fsck: the same, clean archive",
         fsck_after.stdout[-300:] + fsck_after.stderr[-300:])

    # Expect: 100-continue: a refused STOW is answered before its body is sent.
    for name in ("anonymous", "expired", "reader"):
        h, _ = principals[name]
        hdr = {"Content-Type": "application/dicom", "Accept": DJSON}
        if h:
            hdr["Authorization"] = h
        first, r, sent = wu.expect_continue(srv.port, "POST", "/v2/studies", hdr, instance(*victim(99, 30)))
        want = 403 if name == "reader" else 401
        c.ok(first is None and not sent and r.status == want,
             f"{name}: STOW with Expect: 100-continue -> {want} at once, the body never sent",
             f"interim {first}, sent {sent}, {wu.describe(r)}")
    c.ok(snapshot(srv, owner) == before, "...and nothing was stored")

    # Open routes, for everyone.
    for name in names:
        h, _ = principals[name]
        for kind, label, method, pathf, bodyf, headers, action, ok in rts:
            if action is None:
                r = run(name, label, method, pathf(0), None, headers, h)
                table[(label, name)] = r.status
                c.ok(r.status in ok, f"{name}: {label} -> {sorted(ok)} (no token needed)", wu.describe(r))

    # Allowed changes.
    for name in names:
        h, acts = principals[name]
        if acts is None:
            continue
        pi = index[name]
        for kind, label, method, pathf, bodyf, headers, action, ok in rts:
            if not (action and action in acts and method in ("POST", "PATCH", "DELETE")):
                continue
            r = run(name, label, method, pathf(pi), bodyf(pi) if bodyf else None, headers, h)
            table[(label, name)] = r.status
            c.ok(r.status in ok, f"{name}: {label} -> {sorted(ok)}", wu.describe(r))
            if kind == "ROUTE_XQT_ADD":
                wait_operations(srv, owner)
    c.ok(snapshot(srv, owner) != before, "the allowed changes did change the archive")

    print_table(c, table, [r[1] for r in rts], names)


def print_table(c, table, labels, names):
    short = {n: f"P{i}" for i, n in enumerate(names)}
    c.note("principals: " + "; ".join(f"{short[n]}={n}" for n in names))
    c.note(f"{'route':44} " + " ".join(f"{short[n]:>4}" for n in names))
    seen = set()
    for label in labels:
        if label in seen:
            continue
        seen.add(label)
        c.note(f"{label[:44]:44} " + " ".join(f"{table.get((label, n), '-'):>4}" for n in names))


# ---- JWKS, configuration errors, no auth ------------------------------------------------------

def jwks(c, scratch, keys):
    merged = {"keys": []}
    for path in keys["jwks"]:
        with open(path) as f:
            merged["keys"] += json.load(f)["keys"]
    merged["keys"].append({"kty": "oct", "k": "c2VjcmV0", "kid": "ignored"})  # not a signing key we use
    d = os.path.join(scratch, "jwks")
    os.makedirs(d)
    with open(os.path.join(d, "jwks.json"), "w") as f:
        json.dump(merged, f)
    auth = os.path.join(d, "auth.json")
    with open(auth, "w") as f:
        json.dump({"issuer": "dicomfs-local", "audiences": ["other", "dicomfs"], "jwks": "jwks.json"}, f)
    with wu.Server(scratch, "jwks-archive", args=["--auth", auth]) as srv:
        for label, tok, want in (
                ("RS256 reader (JWKS key)", token("--key", keys["key"], "--role", "reader"), 200),
                ("ES256 reader (JWKS key)", token("--key", keys["ec"], "--role", "reader"), 200),
                ("ES256 writer, aud array with one configured", token("--key", keys["ec"], "--role", "writer",
                                                                      "--aud", "x", "--aud", "dicomfs"), 200),
                ("RS256 of a key not in the JWKS", token("--key", keys["other"], "--role", "owner"), 401),
                ("ES256 token with the RSA key's kid", token("--key", keys["ec"], "--role", "owner", "--kid", keys["kid"]), 401),
                ("RS256 without kid (tries the RSA keys)", token("--key", keys["key"], "--role", "reader", "--kid", ""), 200),
                ("HS256 (no secret configured)", token("--secret", HS_SECRET, "--role", "owner"), 401)):
            r = srv.get("/v2/studies", headers={"Authorization": f"Bearer {tok}", "Accept": DJSON})
            c.ok(r.status in (want, 204 if want == 200 else want), f"JWKS: {label} -> {want}", wu.describe(r))
        r = srv.get("/v2/studies", headers={"Accept": DJSON})
        c.ok(r.status == 401 and r.headers.get("WWW-Authenticate") == 'Bearer authorization_uri="dicomfs-local", '
             'resource_id="other", realm="other"', "JWKS server: anonymous -> 401, challenge with the first audience",
             str(r.headers.get("WWW-Authenticate")))
        srv.finish_check(c)


def config_errors(c, scratch, keys):
    d = os.path.join(scratch, "bad-config")
    os.makedirs(d)
    cases = {
        "unknown field": {"issuer": "i", "audiences": ["a"], "keys": [os.path.join(keys["dir"], "public.pem")], "issuerr": 1},
        "no key": {"issuer": "i", "audiences": ["a"]},
        "no issuer": {"audiences": ["a"], "hs256Secret": HS_SECRET},
        "short secret": {"issuer": "i", "audiences": ["a"], "hs256Secret": "short"},
        "private key as a key": {"issuer": "i", "audiences": ["a"], "keys": [keys["key"]]},
        "unknown data action": {"issuer": "i", "audiences": ["a"], "hs256Secret": HS_SECRET, "roles": "roles.json"},
    }
    with open(os.path.join(d, "roles.json"), "w") as f:
        json.dump({"roles": [{"name": "x", "dataActions": ["reed"]}]}, f)
    for label, cfg in cases.items():
        path = os.path.join(d, label.replace(" ", "-") + ".json")
        with open(path, "w") as f:
            json.dump(cfg, f)
        p = tu.run(["serve", os.path.join(scratch, "never"), "--http", "127.0.0.1:0", "--auth", path], timeout=30)
        c.ok(p.returncode == 2 and p.stderr.strip() and "serving" not in p.stdout,
             f"serve --auth with {label}: refuses to start (exit 2, says why)", p.stderr[-300:])
    p = tu.run(["serve", os.path.join(scratch, "never"), "--http", "127.0.0.1:0", "--auth", os.path.join(d, "missing.json")],
               timeout=30)
    c.ok(p.returncode == 2 and "missing.json" in p.stderr, "serve --auth with a missing file: exit 2", p.stderr[-300:])


def without_auth(c, scratch, principals):
    with wu.Server(scratch, "open-archive") as srv:
        for label, h in (("no header", None), ("an empty bearer", "Bearer "), ("an expired token", principals["expired"][0]),
                         ("garbage", "Bearer x.y.z")):
            hh = {"Accept": DJSON}
            if h is not None:
                hh["Authorization"] = h
            r = srv.get("/v2/studies", headers=hh)
            c.ok(r.status in (200, 204), f"without --auth: {label} is ignored", wu.describe(r))
        srv.finish_check(c)


def stow_one(srv, data, headers=None):
    body = wu.multipart([("application/dicom", data)], "AUTHBOUNDARY")
    return srv.stow("/v2/studies", body, 'multipart/related; type="application/dicom"; boundary=AUTHBOUNDARY',
                    headers=headers)


def safe_defaults(c, scratch):
    mode = lambda p: stat.S_IMODE(os.stat(p).st_mode)  # noqa: E731
    with wu.Server(scratch, "private-archive") as srv:
        c.ok("no access control (no --auth): listening on loopback 127.0.0.1 only" in srv.stderr(),
             "without --auth serve says at start that it listens on loopback only", srv.stderr()[-300:])
        r = stow_one(srv, instance(ROOT + ".70", ROOT + ".70.1", ROOT + ".70.1.1"))
        c.ok(r.status == 200, "a STOW to the new archive is stored", wu.describe(r))
        a = srv.archive
        for d in ("", "objects", "objects/00", "objects/ff", "tmp"):
            c.eq(oct(mode(os.path.join(a, d))), oct(0o700), f"a new archive's folder '{d or '.'}' is 0700")
        files = [os.path.join(a, n) for n in ("index.db", "lock")]
        files += [os.path.join(a, n) for n in ("index.db-wal", "index.db-shm") if os.path.exists(os.path.join(a, n))]
        for root, _, names in os.walk(os.path.join(a, "objects")):
            files += [os.path.join(root, n) for n in names]
        c.ok(any(f.endswith(".dcm") for f in files), "the stored object is in objects/", str(files))
        bad = [(os.path.relpath(f, a), oct(mode(f))) for f in files if mode(f) != 0o600]
        c.eq(bad, [], "a new archive's files (index, its WAL, lock, stored objects) are 0600")
        srv.finish_check(c)
    os.chmod(os.path.join(scratch, "private-archive"), 0o750)
    with wu.Server(scratch, "private-archive") as srv:
        c.eq(oct(mode(srv.archive)), oct(0o750), "an existing archive's modes are left as they are")
        srv.finish_check(c)
    for host in ("0.0.0.0", "192.0.2.1"):
        archive = os.path.join(scratch, f"exposed-{host}")
        p = tu.run(["serve", archive, "--http", f"{host}:0"])
        c.ok(p.returncode == 2 and "--insecure-no-auth" in p.stderr and "--auth" in p.stderr,
             f"serve --http {host}:0 without --auth exits 2 naming --auth and --insecure-no-auth",
             f"exit {p.returncode}: {p.stderr[-300:]}")
        c.ok(not os.path.exists(archive), f"... and does not create the archive ({host})")
    # 192.0.2.1 (TEST-NET-1) is no interface's address: past the check, listening fails
    p = tu.run(["serve", os.path.join(scratch, "exposed-insecure"), "--http", "192.0.2.1:0", "--insecure-no-auth"])
    c.ok(p.returncode == 2 and "cannot listen" in p.stderr and "insecure" not in p.stderr,
         "with --insecure-no-auth a non-loopback address passes the check (and here fails to listen)",
         f"exit {p.returncode}: {p.stderr[-300:]}")


def postman(c, scratch, keys):
    """The Postman collection, with bearerToken set to an owner token, against serve --strict
    --auth: every request passes with a token. Needs newman (tests/web_postman.sh installs it
    with npm ci); without it the run is skipped with a note."""
    pm = os.path.join(tu.TESTS, "postman")
    newman = os.path.join(pm, "node_modules", ".bin", "newman")
    if not os.access(newman, os.X_OK):
        c.note(f"newman is not installed in {pm}/node_modules (web_postman runs npm ci): the collection run is skipped")
        return
    data = os.path.join(scratch, "postman-data")
    p = subprocess.run(["/usr/bin/python3", os.path.join(pm, "make_data.py"), data], capture_output=True, text=True)
    if not c.ok(p.returncode == 0, "postman: make_data.py writes the bodies", p.stderr[-300:]):
        return
    tok = token("--key", keys["key"], "--role", "owner", "--sub", "newman")
    with wu.Server(scratch, "postman-archive", args=["--strict", "--auth", keys["auth_file"]]) as srv:
        p = subprocess.run([newman, "run", os.path.join(pm, "dicomfs.postman_collection.json"),
                            "--environment", os.path.join(pm, "dicomfs.postman_environment.json"),
                            "--env-var", f"baseUrl={srv.url}", "--env-var", f"bearerToken={tok}",
                            "--working-dir", data, "--no-insecure-file-read", "--reporters", "cli",
                            "--disable-unicode", "--color", "off", "--timeout-request", "30000"],
                           capture_output=True, text=True, timeout=180)
        c.ok(p.returncode == 0, "postman: the whole collection passes with bearerToken = an owner token",
             p.stdout[-2500:] + p.stderr[-500:])
        p = subprocess.run([newman, "run", os.path.join(pm, "dicomfs.postman_collection.json"),
                            "--environment", os.path.join(pm, "dicomfs.postman_environment.json"),
                            "--env-var", f"baseUrl={srv.url}", "--folder", "QIDO",
                            "--working-dir", data, "--reporters", "cli", "--color", "off"],
                           capture_output=True, text=True, timeout=180)
        c.ok(p.returncode != 0 and "401" in p.stdout, "postman: without bearerToken the requests get 401",
             p.stdout[-1000:])
        srv.finish_check(c)


if __name__ == "__main__":
    main()
