"""Interoperability: dcmjs-org's npm dicomweb-client (the DICOMweb client of OHIF and
dicom-microscopy-viewer) against `dicomfs serve`.

The client and its XMLHttpRequest for Node (xhr2) are pinned in
tests/interop/dicomweb-client/package-lock.json and installed there by `npm ci` the first
time. This driver writes the data (interoputil.make_dataset), starts `dicomfs serve` on a
fresh archive, puts a recording relay (httptap) in front of it and runs
dicomweb-client/test.js against the relay. test.js calls every request the client has
(storeInstances, the three searches, the three metadata levels, instance/series/study
retrieval, frames, rendered, rendered frames, thumbnails, bulk data) and checks the
content: UIDs, byte-identical instances, frame bytes equal to pydicom's, real JPEG/PNG of
the right size. Then every HTTP exchange is printed with its headers in full: what the
client sent and what dicomfs answered.

Fails (never skips) when node, npm or the pinned packages are missing.
"""
import os
import subprocess
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
import interoputil as iu  # noqa: E402
import httptap  # noqa: E402
import testutil as tu  # noqa: E402
import webutil as wu  # noqa: E402

NAME = "interop_dicomweb_client"
PKG = os.path.join(HERE, "dicomweb-client")


def main():
    # The default mode is what real clients meet; --strict (the reference's refusals) is not
    # what this test is about, so an inherited DICOMFS_STRICT does not apply here.
    os.environ.pop("DICOMFS_STRICT", None)
    tu.require_binary()
    scratch = tu.scratch(NAME)
    iu.npm_ci(NAME, PKG, os.path.join(scratch, "npm-ci.log"))
    c = tu.Checker(NAME)
    data = os.path.join(scratch, "data")
    iu.make_dataset(data)
    with wu.Server(scratch) as srv, httptap.Tap(srv.port) as tap:
        env = dict(os.environ, DICOMWEB_URL=tap.url + "/v2", DATA=data)
        for k in list(env):
            if k.lower() in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
                del env[k]
        try:
            p = subprocess.run(["node", os.path.join(PKG, "test.js")], cwd=PKG, env=env,
                               stdin=subprocess.DEVNULL, capture_output=True, timeout=120)
            out, rc = p.stdout.decode("utf-8", "replace"), p.returncode
            err = p.stderr.decode("utf-8", "replace")
        except subprocess.TimeoutExpired as e:
            out = (e.stdout or b"").decode("utf-8", "replace")
            err, rc = "node did not finish within 120 s", 124
        sys.stdout.write(out)
        if err.strip():
            print("#    node stderr: " + err.strip()[-2000:].replace("\n", "\n#    "))
        tap.settle()
        iu.print_exchanges("dicomweb-client -> dicomfs", tap.exchanges())
        c.ok(rc == 0, "test.js: every dicomweb-client check passed", f"node exit status {rc}")
        srv.finish_check(c)
    c.finish()


if __name__ == "__main__":
    main()
