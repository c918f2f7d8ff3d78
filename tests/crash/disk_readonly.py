"""A read-only archive: the archive's file system mounted read-only (a small ext4 the
test makes, loop-mounted; needs root, skips otherwise).

What a user expects: reads work (find, metadata, fsck, serve with QIDO and WADO, mount
reads), writes are refused with a reason that says the archive is read-only, and
nothing changes on the disk; the archive is intact when the file system is writable
again.
"""
import os
import random
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import crashlib as cl  # noqa: E402

tu, wu = cl.tu, cl.wu


def main():
    tu.require_binary()
    c = tu.Checker("disk_readonly")
    scratch = tu.scratch("disk_readonly")
    if os.geteuid() != 0:
        print("skipped: needs root to mount a file system read-only")
        c.finish()
    cl.install_cleanup()
    fs = cl.SmallFs("ext4", scratch, size_mb=32)
    try:
        fs.mount()
    except RuntimeError as e:
        print(f"skipped: cannot loop-mount an ext4 image ({e})")
        c.finish()
    try:
        run(c, fs, scratch)
    finally:
        cl._cleanup()
        fs.unmount()
    c.finish()


def run(c, fs, scratch):
    archive = os.path.join(fs.dir, "archive")
    gen = cl.Gen(random.Random(9), 7200)
    srv = cl.Serve(archive, os.path.join(scratch, "serve.log")).start()
    st = gen.new_study()
    se = gen.new_series(st)
    insts = [gen.instance(st, se, 1, size=16384) for _ in range(4)]
    status, ok, r = cl.stow(srv.port, insts)
    c.eq(status, 200, "STOW of 4 instances before the file system goes read-only")
    # An unclean end: the index's WAL still holds the commits (a clean close folds it back),
    # and a read-only open must read them too.
    srv.kill()
    c.ok(os.path.getsize(os.path.join(archive, "index.db-wal")) > 0, "serve killed: the WAL holds the commits")
    fs.remount(readonly=True)

    p = tu.run(["find", archive, "--level", "instance"])
    c.ok(p.returncode == 0 and all(i.sop in p.stdout for i in insts), "find on a read-only archive lists the 4 instances",
         f"exit {p.returncode}: {p.stderr[-300:]}")
    p = tu.run(["fsck", archive])
    c.ok(p.returncode == 0, "fsck on a read-only archive checks it (clean)", f"exit {p.returncode}: {p.stderr[-300:]}")
    p = tu.run(["fsck", "--repair", archive])
    c.ok(p.returncode != 0 and "read-only" in (p.stderr + p.stdout).lower(), "fsck --repair refuses, saying it is read-only",
         f"exit {p.returncode}: {p.stderr[-300:]}")
    srv = cl.Serve(archive, os.path.join(scratch, "serve.log"))
    srv.start(timeout=20)
    bad = [i.sop for i in insts if not cl.whole(i, cl.observe(srv, i))]
    c.ok(not bad, "a read-only archive serves WADO, metadata and QIDO", ", ".join(bad))
    more = [gen.instance(st, se, 2, size=0)]
    status, ok, r = cl.stow(srv.port, more)
    c.ok(not ok and r.status == 503 and "read-only" in r.body.decode("utf-8", "replace").lower(),
         "STOW to a read-only archive: 503, saying it is read-only", wu.describe(r))
    r = srv.request("DELETE", cl.inst_path(insts[0]))
    c.ok(r.status == 503 and "read-only" in r.body.decode("utf-8", "replace").lower(),
         "DELETE on a read-only archive: 503, saying it is read-only", wu.describe(r))
    srv.stop()
    fs.remount(readonly=False)
    srv = cl.Serve(archive, os.path.join(scratch, "serve.log")).start()
    bad = [i.sop for i in insts if not cl.whole(i, cl.observe(srv, i))]
    c.ok(not bad, "writable again, every instance is there byte for byte", ", ".join(bad))
    status, ok, r = cl.stow(srv.port, [gen.instance(st, se, 3, size=0)])
    c.eq(status, 200, "and STOW works again")
    c.eq(srv.stop(), 0, "serve stops")
    p, counts = cl.fsck(archive)
    c.ok(p.returncode == 0 and counts and counts[0] == 5, "fsck clean, 5 instances", p.stdout[-500:])


if __name__ == "__main__":
    main()
