"""Power loss: acknowledged data survives when the writes the disk had not been told to
keep are dropped — for the object files and the index, on ext4 with a journal and
without one (mkfs.ext4 -O ^has_journal).

Method (xfstests' "godown", since this kernel has no device-mapper for dm-flakey): the
archive lives on an ext4 image loop-mounted by the test. The rounds of crash.py run on
it (STOW, copy-in through the mount, deletes, extended query tags and their reindex,
acknowledgements logged as they arrive), but each round's crash is a power cut:
  1. ioctl(EXT4_IOC_SHUTDOWN, EXT4_GOING_FLAGS_NOLOGFLUSH) on the archive's file system:
     from then on nothing more reaches the disk — dirty pages and the running journal
     transaction are dropped, every later write and fsync fails with EIO. The ioctl
     is no instant: it takes 3-10 ms, and an fsync that ends meanwhile can return 0
     for bytes it then drops (seen twice in ~400 rounds: a close() and an fsync() of
     the mount answered 0.3-0.7 ms after the ioctl returned, their commit not on the
     disk). A real power loss lets no answer out after it, so a success answered once
     the cut has begun is no acknowledgement: its write is checked as a cut one (all
     or nothing), as are the writes in flight;
  2. SIGKILL of the server and the mount;
  3. umount, e2fsck -p (what a boot does after a crash; needed without a journal),
     mount again;
  4. crash.py's checks: fsck clean, every acknowledged instance byte-identical and
     fully indexed, acknowledged deletes gone, the change feed gapless, tags listed.
So what survives is exactly what was synced before the cut (fsync, fdatasync, syncfs,
SQLite's WAL syncs), as after a power loss; an EIO after the cut must never be taken
for success (no acknowledgement may be missing afterwards).

Needs root, loop devices and ext4 (skips with the reason otherwise). Environment:
POWERLOSS_ROUNDS (rounds per file system, default 6: make test; make crashtest runs 200), POWERLOSS_FS
(journal or nojournal: only that one), CRASH_SEED, CRASH_MAX_DELAY, CRASH_SNAPSHOT (a folder: each round's archive
is copied there as the crash left it, before the checks open it; beside it the raw image before e2fsck and
e2fsck's output).
"""
import fcntl
import os
import shutil
import struct
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import crashlib as cl  # noqa: E402
import crash  # noqa: E402

tu = cl.tu
EXT4_IOC_SHUTDOWN = 0x8004587D  # _IOR('X', 125, __u32)
EXT4_GOING_FLAGS_NOLOGFLUSH = 2


def shutdown(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.ioctl(fd, EXT4_IOC_SHUTDOWN, struct.pack("I", EXT4_GOING_FLAGS_NOLOGFLUSH))
    finally:
        os.close(fd)


class PowerLoss(crash.Run):
    def __init__(self, fs, journal, rounds):
        self.name = "powerloss-" + ("journal" if journal else "nojournal")
        self.fs = fs
        self.e2fsck_fixed = 0
        super().__init__(base=fs.dir, rounds=rounds)

    def crash(self):
        self.model.cut_begins()
        shutdown(self.fs.dir)
        self.model.cut_ends()
        both = self.kill_all()
        self.fs.unmount(lazy_ok=False)
        if os.environ.get("CRASH_SNAPSHOT"):  # the disk as the cut left it, before any repair
            subprocess.run(["cp", "--sparse=always", self.fs.img, os.environ["CRASH_SNAPSHOT"] + ".img"], check=True)
        p = subprocess.run(["e2fsck", "-p", "-f", self.fs.img], capture_output=True, text=True)
        self.e2fsck_fixed += p.returncode == 1
        if os.environ.get("CRASH_SNAPSHOT"):
            with open(os.environ["CRASH_SNAPSHOT"] + ".e2fsck", "a") as log:
                log.write(f"--- exit {p.returncode}\n{p.stdout}{p.stderr}")
        self.c.ok(p.returncode in (0, 1), f"{self.name}: e2fsck -p after the power cut needs no manual repair",
                  p.stdout[-500:] + p.stderr[-500:])
        self.fs.mount()
        return both


def main():
    tu.require_binary()
    c = tu.Checker("crash_powerloss")
    scratch = tu.scratch("crash_powerloss")
    why = None
    if os.geteuid() != 0:
        why = "needs root (loop-mounted ext4 images)"
    elif not os.path.exists("/dev/loop-control"):
        why = "no loop devices (/dev/loop-control)"
    if why:
        print(f"skipped: {why}")
        c.finish()
    rounds = int(os.environ.get("POWERLOSS_ROUNDS", "6"))
    top = scratch + ".fs"  # crash.Run empties SCRATCH: the file systems live beside it
    passed = failed = 0
    failures = []
    kinds = {"journal": (True,), "nojournal": (False,)}.get(os.environ.get("POWERLOSS_FS", ""), (True, False))
    for journal in kinds:
        fs = cl.SmallFs("ext4", os.path.join(top, "journal" if journal else "nojournal"), size_mb=512, journal=journal)
        try:
            fs.mount()
            shutdown_ok = probe(fs)
        except (RuntimeError, OSError) as e:
            print(f"skipped: cannot loop-mount ext4 or shut it down ({e})")
            fs.unmount()
            c.finish()
        if not shutdown_ok:
            print("skipped: EXT4_IOC_SHUTDOWN does not drop unsynced writes here")
            c.finish()
        os.environ.setdefault("CRASH_SEED_INSTANCES", "200")
        run = PowerLoss(fs, journal, rounds)
        try:
            run.main(finish=False)
        finally:
            cl._cleanup()
            fs.unmount()
        run.c.note(f"{run.name}: e2fsck fixed the file system after {run.e2fsck_fixed} of {rounds} cuts; "
                   f"{run.model.after_cut} successes were answered after a cut had begun (checked as cut writes)")
        passed += run.c.passed
        failed += run.c.failed
        failures += run.c.failures
        if run.c.failed:
            break
    shutil.rmtree(top, ignore_errors=True)
    c.passed, c.failed, c.failures = passed, failed, failures
    c.finish()


def probe(fs):
    """Does a shutdown drop what was not synced? (a file written but not synced must not
    survive the cut and a remount; one fsync'd must.)"""
    keep, lose = os.path.join(fs.dir, "probe-kept"), os.path.join(fs.dir, "probe-lost")
    with open(keep, "wb") as f:
        f.write(b"k" * 65536)
        os.fsync(f.fileno())
    dfd = os.open(fs.dir, os.O_RDONLY)
    os.fsync(dfd)
    os.close(dfd)
    with open(lose, "wb") as f:
        f.write(b"l" * 65536)
    shutdown(fs.dir)
    fs.unmount(lazy_ok=False)
    subprocess.run(["e2fsck", "-p", "-f", fs.img], capture_output=True)
    fs.mount()
    ok = os.path.getsize(keep) == 65536 and (not os.path.exists(lose) or os.path.getsize(lose) < 65536)
    os.unlink(keep)
    if os.path.exists(lose):
        os.unlink(lose)
    return ok


if __name__ == "__main__":
    main()
