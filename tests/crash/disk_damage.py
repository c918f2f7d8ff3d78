"""Object files removed, truncated or overwritten behind the archive's back (a disk
error, a user's rm): fsck reports them, and every request that meets one says so —
WADO instance, frames, study retrieve, a read through the mount — never a crash, a hang
or a silent wrong answer (a 200 with other or fewer bytes). The others keep working.

The damaged files are found by their content (the file in the archive that holds an
instance's bytes), not by the archive's naming scheme.
"""
import errno
import hashlib
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import crashlib as cl  # noqa: E402

tu, wu = cl.tu, cl.wu


def find_file(archive, data):
    sha = hashlib.sha256(data).hexdigest()
    for d, _, files in os.walk(archive):
        for f in files:
            p = os.path.join(d, f)
            if os.path.getsize(p) == len(data):
                with open(p, "rb") as fh:
                    if hashlib.sha256(fh.read()).hexdigest() == sha:
                        return p
    return None


def mount_read(mnt, i):
    path = os.path.join(mnt, "studies", i.study, "series", i.series, "instances", i.sop + ".dcm")
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError as e:
        return e.errno


def main():
    tu.require_binary()
    c = tu.Checker("disk_damage")
    scratch = tu.scratch("disk_damage")
    cl.install_cleanup()
    archive = os.path.join(scratch, "archive")
    rng = random.Random(5)
    gen = cl.Gen(rng, 7100)
    srv = cl.Serve(archive, os.path.join(scratch, "serve.log")).start()
    st = gen.new_study()
    se = gen.new_series(st)
    insts = [gen.instance(st, se, 1, size=65536) for _ in range(6)]
    status, ok, r = cl.stow(srv.port, insts)
    c.eq(status, 200, "STOW of 6 instances: 200")
    data = {i.sop: i.data for i in insts}
    fine, removed, truncated, overwritten = insts[0], insts[1], insts[2], insts[3]
    files = {i.sop: find_file(archive, i.data) for i in insts}
    c.ok(all(files.values()), "each instance's bytes are a file in the archive")
    os.unlink(files[removed.sop])
    with open(files[truncated.sop], "r+b") as f:
        f.truncate(len(data[truncated.sop]) // 2)
    with open(files[overwritten.sop], "r+b") as f:  # same size, other pixel bytes
        f.seek(len(data[overwritten.sop]) - 1000)
        f.write(b"\x00" * 1000)

    p, counts = cl.fsck(archive)
    c.eq(p.returncode, 1, "fsck exits 1")
    c.ok(removed.sop in p.stdout and "missing" in p.stdout, "fsck names the removed object's instance", p.stdout[-600:])
    c.ok(truncated.sop in p.stdout or "wrong size" in p.stdout, "fsck reports the truncated object", p.stdout[-600:])
    c.ok(overwritten.sop in p.stdout and "checksum" in p.stdout,
         "fsck reports the object overwritten with the same size (its CRC-32 differs)", p.stdout[-600:])
    c.ok(fine.sop not in p.stdout, "and not the intact one")

    for what, i in (("removed", removed), ("truncated", truncated)):
        r = srv.get(cl.inst_path(i), accept=cl.ORIGINAL)
        c.ok(r.status >= 400 and wu.is_text_error(r) or r.status == 0 and "Incomplete" in r.reason,
             f"WADO of the {what} object: an error status with a reason (or a cut connection), not 200",
             wu.describe(r))
        c.ok(not (r.status == 200 and hashlib.sha256(r.body).hexdigest() != i.sha),
             f"WADO of the {what} object never answers 200 with other bytes")
        r = srv.get(cl.inst_path(i) + "/frames/1", accept="application/octet-stream; transfer-syntax=*")
        c.ok(r.status >= 400 or r.status == 0, f"frames of the {what} object: an error, not 200", wu.describe(r))
        r = srv.get(f"/v2/studies/{i.study}", accept="multipart/related; type=\"application/dicom\"; transfer-syntax=*")
        c.ok(r.status != 200 or r.status == 0, f"study retrieve with the {what} object: an error, not 200",
             wu.describe(r))
    r = srv.get(cl.inst_path(fine), accept=cl.ORIGINAL)
    c.eq(hashlib.sha256(r.body).hexdigest() if r.status == 200 else r.status, fine.sha,
         "an intact instance of the same series still retrieves byte-identical")
    c.ok(srv.alive(), "the server is still running", srv.stderr_tail())

    if cl.have_fuse():
        mnt = cl.Mount(archive, os.path.join(scratch, "mnt"), os.path.join(scratch, "mount.log")).start()
        for what, i in (("removed", removed), ("truncated", truncated)):
            got = mount_read(mnt.mnt, i)
            c.ok(got == errno.EIO or got == errno.ENOENT,
                 f"a read of the {what} object through the mount fails (EIO or ENOENT), not a short or wrong read",
                 f"got {got if isinstance(got, int) and errno.errorcode.get(got) else got}")
        c.eq(mount_read(mnt.mnt, fine), fine.sha, "the mount reads an intact instance byte for byte")
        c.ok(mnt.alive(), "the mount is still running", mnt.stderr_tail())
        mnt.stop()
    rc = srv.stop()
    c.eq(rc, 0, "serve stops with exit 0")
    c.finish()


if __name__ == "__main__":
    main()
