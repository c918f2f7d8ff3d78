"""A full disk: the archive on a small file system (a size-limited tmpfs, then a small
loop-mounted ext4 the test makes) that fills up.

On each file system:
  - instances are stored over STOW and copied into the mount's inbox until the disk is
    full by the archive's own data; then a filler file takes what is left;
  - STOW fails with an answer that says the archive is full (507 Insufficient Storage,
    plain text naming the full disk), never a 2xx, a 409 per-instance failure or a
    dropped connection; the mount's close() (or write()) of a copied file fails with
    ENOSPC; a request of several instances stores none of them (all or nothing);
  - meanwhile reads go on: QIDO, WADO and mount reads of what is stored;
  - every instance acknowledged before is present and byte-identical, fsck is clean
    (after the server and the mount stop, and after a SIGKILL of both while full);
  - when space returns (the filler and some instances deleted), STOW and copy-in work
    again, and fsck stays clean.
Needs root (mount); skips otherwise. FUSE parts skip without /dev/fuse.
"""
import errno
import hashlib
import os
import random
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import crashlib as cl  # noqa: E402

tu, wu = cl.tu, cl.wu


def fill(path, chunk=1 << 20):
    """Writes PATH until the disk is full; returns the bytes written."""
    n = 0
    with open(path, "ab", buffering=0) as f:
        buf = b"\xa5" * chunk
        while True:
            try:
                n += f.write(buf)
            except OSError as e:
                if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise
                if chunk > 4096:
                    chunk //= 16
                    buf = buf[:chunk]
                    continue
                break
        try:
            os.fsync(f.fileno())
        except OSError:
            pass
    return n


def full_answer(r):
    text = r.body.decode("utf-8", "replace").lower()
    return r.status == 507 and wu.is_text_error(r) and ("full" in text or "space" in text)


def run_on(c, kind, scratch, rng):
    top = os.path.join(scratch, kind)
    fs = cl.SmallFs(kind, top, size_mb=24)
    try:
        fs.mount()
    except RuntimeError as e:
        c.note(f"{kind}: cannot make the small file system ({e}); skipped")
        return
    try:
        exercise(c, kind, fs.dir, scratch, rng)
    finally:
        cl._cleanup()
        fs.unmount()


def exercise(c, kind, top, scratch, rng):
    archive = os.path.join(top, "archive")
    mnt = os.path.join(scratch, "mnt")
    gen = cl.Gen(rng, 7000 + (kind == "ext4"))
    srv = cl.Serve(archive, os.path.join(scratch, f"{kind}-serve.log")).start()
    fuse = cl.have_fuse()
    mount = cl.Mount(archive, mnt, os.path.join(scratch, f"{kind}-mount.log")).start() if fuse else None
    acked = []
    # Space the test gives back in step 4, whatever the archive's WAL took meanwhile: a
    # DELETE needs room in the index's WAL before it frees anything.
    reserve = os.path.join(top, "reserve")
    with open(reserve, "wb") as f:
        f.write(b"\0" * (4 << 20))
        os.fsync(f.fileno())

    # 1. the archive's own data fills the disk
    first = None
    study = gen.new_study()
    for k in range(400):
        series = gen.new_series(study) if k % 10 == 0 else series
        batch = [gen.instance(study, series, 1, size=262144) for _ in range(2)]
        status, ok, r = cl.stow(srv.port, batch)
        if status == 200 and len(ok) == 2:
            acked += batch
            continue
        first = (batch, status, ok, r)
        break
    c.ok(first is not None, f"{kind}: STOW eventually fails on the full disk ({len(acked)} instances stored first)")
    if first is None:
        return
    batch, status, ok, r = first
    c.ok(full_answer(r), f"{kind}: STOW on the full disk: 507 with a plain-text reason that says the disk is full",
         wu.describe(r))
    c.eq(sorted(ok), [], f"{kind}: and neither instance of the request is acknowledged")
    # whatever room is left, a filler takes it: from here the disk is full for sure
    filler = os.path.join(top, "filler")
    fill(filler)
    # (ext4 may still find a few blocks: root's reserve, blocks freed by the refused
    # request; whatever is stored is acknowledged, and the filler takes the rest again)
    answers = []
    for _ in range(6):
        b2 = [gen.instance(study, series, 1, size=262144)]
        status, ok, r_full = cl.stow(srv.port, b2)
        if status == 200 and len(ok) == 1:
            acked += b2
            fill(filler)
            continue
        answers.append(r_full)
        if len(answers) == 3:
            break
    c.ok(len(answers) == 3 and all(full_answer(r) for r in answers),
         f"{kind}: STOW with the disk filled up: 507 saying the disk is full, every time",
         "; ".join(wu.describe(r) for r in answers))
    small = [gen.instance(study, series, 1, size=0)]
    status, ok, r = cl.stow(srv.port, small)
    c.ok(full_answer(r) or (status == 200 and len(ok) == 1),
         f"{kind}: a tiny STOW on the full disk is stored or refused as full, nothing else", wu.describe(r))
    if status == 200 and ok:
        acked += small
    if mount:
        inst = gen.instance(study, series, 1, size=262144)
        ack, err = cl.copy_in(os.path.join(mnt, "inbox", "full.dcm"), inst.data, fsync=True)
        c.ok(not ack and err == errno.ENOSPC, f"{kind}: a copy into the mount's inbox on the full disk fails with ENOSPC",
             f"acknowledged {ack}, errno {err and errno.errorcode.get(err)}")
        try:
            with open(os.path.join(mnt, "inbox", "full.dcm.error")) as f:
                why = f.read()
        except OSError as e:
            why = str(e)
        c.ok("full" in why.lower() or "space" in why.lower(), f"{kind}: and full.dcm.error says the disk is full", why[:300])

    # 2. reads go on
    sample = rng.sample(acked, min(10, len(acked)))
    bad = [i.sop for i in sample if not cl.whole(i, cl.observe(srv, i))]
    c.ok(not bad, f"{kind}: while full, WADO, metadata and QIDO of stored instances work", ", ".join(bad[:3]))
    if mount:
        i = sample[0]
        try:
            with open(os.path.join(mnt, "studies", i.study, "series", i.series, "instances", i.sop + ".dcm"), "rb") as f:
                sha = hashlib.sha256(f.read()).hexdigest()
        except OSError as e:
            sha = str(e)
        c.eq(sha, i.sha, f"{kind}: while full, the mount reads a stored instance")
    r = srv.get("/v2/studies", accept=cl.DJSON)
    c.eq(r.status, 200, f"{kind}: while full, QIDO /v2/studies answers 200")

    # 3. a crash while full loses nothing
    srv.kill()
    if mount:
        mount.kill()
    p, counts = cl.fsck(archive)
    c.ok(p.returncode == 0, f"{kind}: after SIGKILL on the full disk, fsck exits 0", p.stdout[-800:] + p.stderr[-300:])
    c.eq(counts and counts[0], len(acked), f"{kind}: fsck counts every acknowledged instance")
    try:
        srv = cl.Serve(archive, os.path.join(scratch, f"{kind}-serve.log")).start()
    except RuntimeError as e:
        c.ok(False, f"{kind}: serve starts again on the full disk", str(e))
        fill_free(filler, 4 << 20)
        srv = cl.Serve(archive, os.path.join(scratch, f"{kind}-serve.log")).start()
    else:
        c.ok(True, f"{kind}: serve starts again on the full disk")
    bad = [i.sop for i in acked if not cl.whole(i, cl.observe(srv, i))]
    c.ok(not bad, f"{kind}: all {len(acked)} acknowledged instances are byte-identical after the crash", ", ".join(bad[:3]))

    # 4. space returns: the filler goes, and instances are deleted
    os.unlink(filler)
    os.unlink(reserve)
    os.sync()  # ext4 reuses freed blocks once the journal has committed their release
    gone = acked[:6]
    for i in gone:
        r = srv.request("DELETE", cl.inst_path(i))
        c.ok(r.status == 204, f"{kind}: DELETE of an instance once space is back: 204", wu.describe(r))
    acked = acked[6:]
    if mount:
        mount = cl.Mount(archive, mnt, os.path.join(scratch, f"{kind}-mount.log")).start()
    more = [gen.instance(study, gen.new_series(study), 2, size=65536) for _ in range(3)]
    status, ok, r = cl.stow(srv.port, more)
    c.ok(status == 200 and len(ok) == 3, f"{kind}: once space is back, STOW stores again", wu.describe(r))
    acked += [i for i in more if i.sop in ok]
    if mount:
        inst = gen.instance(study, more[0].series, 2, size=65536)
        ack, err = cl.copy_in(os.path.join(mnt, "inbox", "back.dcm"), inst.data, fsync=True)
        c.ok(ack and err is None, f"{kind}: once space is back, a copy into the inbox succeeds",
             f"errno {err and errno.errorcode.get(err)}")
        if ack:
            acked.append(inst)
        mount.stop()
    bad = [i.sop for i in acked if not cl.whole(i, cl.observe(srv, i))]
    c.ok(not bad, f"{kind}: every acknowledged instance is there ({len(acked)})", ", ".join(bad[:3]))
    bad = [i.sop for i in gone if not cl.gone(cl.observe(srv, i))]
    c.ok(not bad, f"{kind}: the deleted ones are gone", ", ".join(bad[:3]))
    rc = srv.stop()
    c.eq(rc, 0, f"{kind}: serve stops with exit 0")
    p, counts = cl.fsck(archive)
    c.ok(p.returncode == 0 and counts and counts[0] == len(acked), f"{kind}: fsck clean at the end, {len(acked)} instances",
         p.stdout[-800:])


def fill_free(filler, n):
    size = os.path.getsize(filler)
    os.truncate(filler, max(0, size - n))


def main():
    tu.require_binary()
    c = tu.Checker("disk_full")
    scratch = tu.scratch("disk_full")
    if os.geteuid() != 0:
        print("skipped: needs root to mount a small file system")
        c.finish()
    cl.install_cleanup()
    rng = random.Random(int(os.environ.get("CRASH_SEED", "20240607")))
    for kind in ("tmpfs", "ext4"):
        run_on(c, kind, scratch, rng)
    c.finish()


if __name__ == "__main__":
    main()
