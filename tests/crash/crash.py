"""Crash consistency at scale: SIGKILL of `dicomfs serve` and `dicomfs mount` at random
moments while they store (STOW-RS; copy-in through the mount's inbox), delete (HTTP
DELETE; rm in the mount) and reindex (extended query tags added and deleted over HTTP,
the background reindex running), then reopen and check what a user was promised.

One archive for all rounds. It is seeded with SEED instances, then each round:
  1. the server and the mount (started by the previous round's checks) get work from
     writer threads: STOW requests of 1-4 new instances, files copied into inbox/ (fsync
     before close, or close alone with --sync-close), deletes of instances, series and
     studies, and now and then an extended query tag added or deleted;
     each writer logs an acknowledgement in the model the moment it arrives (2xx with the
     instance listed, fsync()/close() returning 0, 204) — acks.jsonl keeps them;
  2. after a random delay (0-CRASH_MAX_DELAY ms) both processes get SIGKILL;
  3. `dicomfs fsck` (the first opener, alone: it repairs) must exit 0: no missing or
     orphan objects, no index errors;
  4. the server and the mount are started again, and over HTTP: every write sent but not
     answered is all or nothing (WADO bytes, metadata, QIDO agree), every instance
     acknowledged this round and a sample of older ones are byte-identical in WADO, have
     their metadata and are found by QIDO, acknowledged deletes are gone from all three,
     fsck's instance count is the model's, the change feed since the last round has no
     gaps and holds exactly the acknowledged creates and deletes, extended query tags
     acknowledged are listed (and when ready, their queries find exactly the instances
     with the value); a few instances are read through the mount too.
At the end every instance ever sent is checked, and the whole feed.

Environment: CRASH_ROUNDS (default 50), CRASH_SEED (default: random; printed, so that a
failure can be replayed), CRASH_SEED_INSTANCES (default 600), CRASH_MAX_DELAY (ms,
default 400), CRASH_DIR (where the archive lives, default SCRATCH; e.g. a small or
unjournaled file system), CRASH_NO_MOUNT=1 (HTTP only). Needs /dev/fuse for the mount
parts (skipped without; CI has it).
"""
import json
import os
import random
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import crashlib as cl  # noqa: E402

tu, wu = cl.tu, cl.wu

XQT = {  # path -> (POST body entry, level of the query)
    "00180050": {"path": "SliceThickness", "level": "instance"},
    "00181030": {"path": "ProtocolName", "level": "series"},
}


class Round:
    """The work of one round, done by threads until `killed` is set."""

    def __init__(self, run, no):
        self.run, self.no = run, no
        self.rng = random.Random(run.rng.random())
        self.killed = threading.Event()
        self.unexpected = []  # failures seen while the processes were still alive
        self.lock = threading.Lock()
        self.threads = []

    def fail(self, what):
        if not self.killed.is_set():
            with self.lock:
                self.unexpected.append(what)

    def spawn(self, fn, *args):
        t = threading.Thread(target=self.guard, args=(fn,) + args, daemon=True)
        self.threads.append(t)
        t.start()

    def guard(self, fn, *args):
        try:
            fn(*args)
        except Exception as e:  # a writer's own bug must fail the test, not hang it
            self.fail(f"{fn.__name__}: {e!r}")

    def pause(self, ms):
        self.killed.wait(self.rng.uniform(0, ms) / 1000)

    # ---- writers ---------------------------------------------------------------------

    def stow_writer(self, batches):
        port = self.run.srv.port
        for batch in batches:
            if self.killed.is_set():
                return
            self.run.model.sending(batch)
            status, ok, r = cl.stow(port, batch)
            for i in batch:
                if i.sop in ok:
                    self.run.model.stored(i, "stow")
            if status not in (200,) or len(ok) != len(batch):
                self.fail(f"STOW of {len(batch)} instances: {wu.describe(r)}")
            self.pause(60)

    def copy_writer(self, insts, fsync):
        mnt = self.run.mnt.mnt
        for k, i in enumerate(insts):
            if self.killed.is_set():
                return
            self.run.model.sending([i])
            acked, err = cl.copy_in(os.path.join(mnt, "inbox", f"r{self.no}_{k}.dcm"), i.data, fsync=fsync)
            if acked:
                self.run.model.stored(i, "fsync" if fsync else "close (--sync-close)")
            if err is not None:
                self.fail(f"copy of {i.sop} into the inbox: {os.strerror(err)}")
            self.pause(80)

    def delete_writer(self, targets):
        for kind, insts, via in targets:
            if self.killed.is_set():
                return
            i = insts[0]
            self.run.model.deleting(insts)
            if via == "mount":
                try:
                    os.unlink(os.path.join(self.run.mnt.mnt, "studies", i.study, "series", i.series, "instances",
                                           i.sop + ".dcm"))
                    self.run.model.deleted(insts, "rm")
                except OSError as e:
                    self.fail(f"rm of {i.sop} in the mount: {e}")
            else:
                path = {"study": f"/v2/studies/{i.study}", "series": f"/v2/studies/{i.study}/series/{i.series}",
                        "instance": cl.inst_path(i)}[kind]
                r = self.run.srv.request("DELETE", path)
                if r.status == 204:
                    self.run.model.deleted(insts, "DELETE " + kind)
                else:
                    self.fail(f"DELETE {path}: {wu.describe(r)}")
            self.pause(100)

    def xqt_writer(self, action, path):
        self.pause(self.run.max_delay / 2)
        run = self.run
        if action == "add":
            run.tags[path] = "maybe"
            r = run.srv.request("POST", "/v2/extendedquerytags", json.dumps([XQT[path]]).encode(),
                                {"Content-Type": "application/json"})
            if r.status == 202:
                if run.model.answered("tag added", path=path):
                    run.tags[path] = "present"
                href = (wu.json_body(r) or {}).get("href", "")
                op = href[href.find("/v2/"):]
                while not self.killed.is_set():  # was the reindex still running at the kill?
                    o = run.srv.get(op)
                    state = (wu.json_body(o) or {}).get("status") if o.status in (200, 202) else None
                    if state not in ("notStarted", "running"):
                        break
                    if self.killed.wait(0.01):
                        run.stats["reindex_killed"] += 1
            elif r.status == 409:  # another reindex still running: refused, nothing changed
                run.tags[path] = "absent"
            else:
                self.fail(f"POST extendedquerytags {path}: {wu.describe(r)}")
        else:
            run.tags[path] = "maybe"
            r = run.srv.request("DELETE", f"/v2/extendedquerytags/{path}")
            if r.status == 204:
                if run.model.answered("tag deleted", path=path):
                    run.tags[path] = "absent"
            else:
                self.fail(f"DELETE extendedquerytags/{path}: {wu.describe(r)}")


class Run:
    name = "crash"

    def __init__(self, base=None, rounds=None):
        tu.require_binary()
        self.scratch = tu.scratch(self.name)
        self.seed = int(os.environ.get("CRASH_SEED") or random.SystemRandom().randrange(1, 10 ** 9))
        self.rounds = rounds if rounds is not None else int(os.environ.get("CRASH_ROUNDS", "50"))
        self.n_seed = int(os.environ.get("CRASH_SEED_INSTANCES", "600"))
        self.max_delay = float(os.environ.get("CRASH_MAX_DELAY", "400"))
        self.use_mount = cl.have_fuse() and not os.environ.get("CRASH_NO_MOUNT")
        base = base or os.environ.get("CRASH_DIR") or self.scratch
        self.archive = os.path.join(base, "archive")
        if base != self.scratch and os.path.exists(self.archive):
            import shutil
            shutil.rmtree(self.archive)
        self.rng = random.Random(self.seed)
        self.gen = cl.Gen(random.Random(self.rng.random()), self.seed % 1000000)
        self.model = cl.Model(os.path.join(self.scratch, "acks.jsonl"))
        self.c = tu.Checker(self.name)
        self.srv = self.mnt = None
        self.tags = {p: "absent" for p in XQT}  # absent, maybe, present
        self.feed_seq = 0
        self.feed_seen = {}  # sop -> set of actions seen in the feed
        self.stats = {"killed_rounds": 0, "acks": 0, "maybe_stored": 0, "maybe_absent": 0, "ops_killed": 0,
                      "reindex_seen_running": 0, "reindex_killed": 0}
        self.mount_args = []
        print(f"#    CRASH_SEED={self.seed} CRASH_ROUNDS={self.rounds} (replay with the same CRASH_SEED)", flush=True)
        if not self.use_mount:
            print("#    no /dev/fuse (or CRASH_NO_MOUNT): HTTP rounds only", flush=True)
        cl.install_cleanup()

    # ---- processes -------------------------------------------------------------------

    def start(self, round_no):
        self.srv = cl.Serve(self.archive, os.path.join(self.scratch, "serve.log")).start()
        if self.use_mount:
            self.mount_args = ["--allow-delete"] + (["--sync-close"] if round_no % 2 else [])
            self.mnt = cl.Mount(self.archive, os.path.join(self.scratch, "mnt"), os.path.join(self.scratch, "mount.log"),
                                self.mount_args).start()

    def crash(self):
        """The crash of a round: SIGKILL of both processes (powerloss.py adds the disk's)."""
        return self.kill_all()

    def kill_all(self):
        alive = [p for p in (self.srv, self.mnt) if p and p.alive()]
        for p in (self.srv, self.mnt):
            if p and p.p and p.p.poll() is None:
                p.p.send_signal(9)
        for p in (self.srv, self.mnt):
            if p and p.p:
                p.kill()  # reaps; a mount is lazily unmounted
        return len(alive) == (2 if self.use_mount else 1)

    # ---- seeding ---------------------------------------------------------------------

    def seed_archive(self):
        t0 = time.time()
        self.start(0)
        insts = []
        while len(insts) < self.n_seed:
            st = self.gen.new_study()
            for _ in range(3):
                se = self.gen.new_series(st)
                insts += [self.gen.instance(st, se, 0, size=self.gen.rng.choice((0, 256, 2048))) for _ in range(10)]
        for k in range(0, len(insts), 50):
            batch = insts[k:k + 50]
            self.model.sending(batch)
            status, ok, r = cl.stow(self.srv.port, batch, timeout=120)
            for i in batch:
                if i.sop in ok:
                    self.model.stored(i, "seed")
        self.c.eq(len(self.model.present()), len(insts), f"seeded {len(insts)} instances over STOW")
        self.check_feed()
        for i in insts:
            i.data = None
        self.c.note(f"seeding took {time.time() - t0:.1f} s")

    # ---- a round ---------------------------------------------------------------------

    def plan(self, rnd):
        rng = rnd.rng
        present = self.model.present()
        studies = sorted({i.study for i in present})
        write_studies = [self.gen.new_study() for _ in range(rng.randint(1, 2))]
        if studies:
            write_studies.append(rng.choice(studies))
        by_study = {}
        for i in present:
            by_study.setdefault(i.study, {}).setdefault(i.series, []).append(i)

        def target():
            st = rng.choice(write_studies)
            old = list(by_study.get(st, {}))
            se = rng.choice(old) if old and rng.random() < 0.6 else self.gen.new_series(st)
            return st, se
        stows = []
        for _ in range(2 * (int(self.max_delay / 35) + 1)):
            st, se = target()
            stows.append([self.gen.instance(st, se, rnd.no) for _ in range(rng.randint(1, 4))])
        copies = []
        if self.use_mount:
            for _ in range(int(self.max_delay / 50) + 1):
                st, se = target()
                copies.append(self.gen.instance(st, se, rnd.no))
        deletes = []
        candidates = [i for i in present if i.study not in write_studies]
        if candidates and rng.random() < 0.7:
            used = set()
            for _ in range(rng.randint(1, 4)):
                i = rng.choice(candidates)
                if i.study in used:
                    continue
                used.add(i.study)
                r = rng.random()
                if r < 0.1 and sum(len(v) for v in by_study[i.study].values()) <= 40:
                    deletes.append(("study", [j for v in by_study[i.study].values() for j in v], "http"))
                elif r < 0.35:
                    deletes.append(("series", by_study[i.study][i.series], "http"))
                else:
                    via = "mount" if self.use_mount and rng.random() < 0.4 else "http"
                    deletes.append(("instance", [i], via))
        xqt = None
        if rng.random() < 0.35:
            present_tags = [p for p, s in self.tags.items() if s == "present"]
            absent_tags = [p for p, s in self.tags.items() if s == "absent"]
            if present_tags and (not absent_tags or rng.random() < 0.5):
                xqt = ("delete", rng.choice(present_tags))
            elif absent_tags:
                xqt = ("add", rng.choice(absent_tags))
        return stows, copies, deletes, xqt

    def one_round(self, no):
        t0 = time.time()
        rnd = Round(self, no)
        stows, copies, deletes, xqt = self.plan(rnd)
        t_plan = time.time() - t0
        self.model.round_begins()
        delay = rnd.rng.uniform(0, self.max_delay) / 1000
        half = (len(stows) + 1) // 2
        rnd.spawn(rnd.stow_writer, stows[:half])
        rnd.spawn(rnd.stow_writer, stows[half:])
        if copies:
            rnd.spawn(rnd.copy_writer, copies, "--sync-close" not in self.mount_args)
        if deletes:
            rnd.spawn(rnd.delete_writer, deletes)
        if xqt:
            rnd.spawn(rnd.xqt_writer, *xqt)
        time.sleep(delay)
        busy = sum(t.is_alive() for t in rnd.threads)
        rnd.killed.set()
        both = self.crash()
        for t in rnd.threads:
            t.join(60)
        hung = [t for t in rnd.threads if t.is_alive()]
        self.c.ok(not hung, f"round {no}: every writer returned after the kill", f"{len(hung)} still blocked")
        self.c.ok(both, f"round {no}: the processes were alive until the kill",
                  (self.srv.stderr_tail() if self.srv else "") + (self.mnt.stderr_tail() if self.mnt else ""))
        self.c.ok(not rnd.unexpected, f"round {no}: no write failed before the kill", "; ".join(rnd.unexpected[:5]))
        self.stats["killed_rounds"] += busy > 0
        self.stats["acks"] += self.model.round_acks
        t1 = time.time()
        self.check(no)
        print(f"#    round {no}: killed after {delay * 1000:.0f} ms, {busy} writers busy, "
              f"{self.model.round_acks} acknowledgements; {time.time() - t0:.2f} s (plan {t_plan:.2f}, "
              f"check {time.time() - t1:.2f})", flush=True)

    # ---- checks ----------------------------------------------------------------------

    def check(self, no, full=False):
        c = self.c
        keep = os.environ.get("CRASH_SNAPSHOT")
        if keep and not c.failed:  # the first failed round's stays  # the archive as the crash left it, before anything opens it (for a failed round)
            import shutil
            shutil.rmtree(keep, ignore_errors=True)
            shutil.copytree(self.archive, keep, symlinks=True)
        p, counts = cl.fsck(self.archive)
        c.ok(p.returncode == 0 and counts and counts[2:] == (0, 0, 0),
             f"round {no}: fsck after the crash exits 0 (nothing missing, orphaned or half-indexed)",
             (p.stdout[-1500:] + p.stderr[-500:]))
        self.start(no + 1)
        srv = self.srv
        bad = []
        for i in self.model.in_state("maybe", "maybe_deleted"):
            o = cl.observe(srv, i)
            was = i.state
            if cl.whole(i, o):
                i.state = "present"
                self.stats["maybe_stored" if was == "maybe" else "ops_killed"] += 1
            elif cl.gone(o):
                i.state = "absent" if was == "maybe" else "deleted"
                self.stats["maybe_absent" if was == "maybe" else "ops_killed"] += 1
            else:
                bad.append(f"{i.sop} ({was}): {o}")
        c.ok(not bad, f"round {no}: every write cut by the kill is all or nothing (WADO, metadata, QIDO agree)",
             "; ".join(bad[:5]))
        present = self.model.present()
        deleted = self.model.in_state("deleted")
        if full:
            sample, dsample = present, deleted
        else:
            sample = [i for i in present if i.round == no]
            sample += self.rng.sample(present, min(15, len(present)))
            dsample = [i for i in deleted if i.round >= no - 1] + self.rng.sample(deleted, min(5, len(deleted)))
        lost = [f"{i.sop}: {o}" for i in sample for o in [cl.observe(srv, i)] if not cl.whole(i, o)]
        c.ok(not lost, f"round {no}: {len(sample)} acknowledged instances are byte-identical, with metadata, found by QIDO",
             "; ".join(lost[:5]))
        back = [f"{i.sop}: {o}" for i in dsample for o in [cl.observe(srv, i)] if not cl.gone(o)]
        c.ok(not back, f"round {no}: {len(dsample)} acknowledged deletes are gone (WADO, metadata, QIDO)",
             "; ".join(back[:5]))
        if counts:
            c.eq(counts[0], len(present), f"round {no}: fsck counts the instances the model holds")
        self.check_feed(no)
        self.check_tags(no)
        if self.mnt and present:
            wrong = []
            for i in self.rng.sample(present, min(3, len(present))):
                path = os.path.join(self.mnt.mnt, "studies", i.study, "series", i.series, "instances", i.sop + ".dcm")
                try:
                    with open(path, "rb") as f:
                        sha = cl.hashlib.sha256(f.read()).hexdigest()
                except OSError as e:
                    sha = str(e)
                if sha != i.sha:
                    wrong.append(f"{i.sop}: {sha}")
            c.ok(not wrong, f"round {no}: instances read through the mount are byte-identical", "; ".join(wrong))
        for i in self.model.in_state("present", "absent", "deleted"):
            i.data = None

    def check_feed(self, no=0):
        c = self.c
        try:
            entries = cl.feed_after(self.srv, self.feed_seq)
        except RuntimeError as e:
            c.ok(False, f"round {no}: change feed readable", str(e))
            return
        seqs = [e["sequence"] for e in entries]
        c.eq(seqs, list(range(self.feed_seq + 1, self.feed_seq + 1 + len(seqs))),
             f"round {no}: the change feed goes on from {self.feed_seq} without gaps")
        if seqs:
            self.feed_seq = seqs[-1]
        for e in entries:
            self.feed_seen.setdefault(e["sopInstanceUid"], []).append(e["action"])
        wrong = []
        for i in self.model.in_state("present", "absent", "deleted"):
            seen = self.feed_seen.get(i.sop, [])
            want = {"present": ["create"], "absent": [], "deleted": ["create", "delete"]}[i.state]
            if seen != want:
                wrong.append(f"{i.sop} ({i.state}): {seen}")
        c.ok(not wrong, f"round {no}: the feed holds one create per stored instance and one delete per deleted one",
             "; ".join(wrong[:5]))
        unknown = [s for s in self.feed_seen if s not in self.model.inst]
        c.ok(not unknown, f"round {no}: the feed names only instances that were sent", "; ".join(unknown[:3]))

    def check_tags(self, no):
        c = self.c
        r = self.srv.get("/v2/extendedquerytags")
        listed = {t["path"]: t for t in (wu.json_body(r) or [])} if r.status == 200 else None
        if not c.ok(listed is not None, f"round {no}: extended query tags listed", wu.describe(r)):
            return
        wrong = []
        for path, state in self.tags.items():
            if state == "maybe":
                self.tags[path] = "present" if path in listed and listed[path]["status"] != "deleting" else \
                    "absent" if path not in listed else "maybe"
            elif (state == "present") != (path in listed):
                wrong.append(f"{path} is {state} but {'listed' if path in listed else 'not listed'}")
        c.ok(not wrong, f"round {no}: acknowledged tag adds are listed, acknowledged deletes are not", "; ".join(wrong))
        for path, t in listed.items():
            if t["status"] == "adding":
                self.stats["reindex_seen_running"] += 1
            if t["status"] == "ready" and t.get("queryStatus") == "enabled":
                self.check_tag_query(no, path)

    def check_tag_query(self, no, path):
        present = self.model.present()
        if path == "00180050":
            rounds = sorted({i.round for i in present if i.round > 0})
            if not rounds:
                return
            r0 = self.rng.choice(rounds)
            want = sorted(i.sop for i in present if i.round == r0)[:200]
            r = self.srv.get(f"/v2/instances?SliceThickness={r0}.5&limit=200", accept=cl.DJSON)
            got = sorted(tu.jget(o, "SOPInstanceUID") for o in (wu.json_body(r) or [])) if r.status == 200 else r.status
            what = f"SliceThickness={r0}.5"
        else:
            i = self.rng.choice(present)
            name = cl.protocol_of(i.series)
            want = sorted({j.series for j in present if cl.protocol_of(j.series) == name})
            r = self.srv.get(f"/v2/series?ProtocolName={name}", accept=cl.DJSON)
            got = sorted(tu.jget(o, "SeriesInstanceUID") for o in (wu.json_body(r) or [])) if r.status == 200 else r.status
            what = f"ProtocolName={name}"
        self.c.eq(got, want, f"round {no}: the ready extended query tag {path} finds exactly the instances with {what}")

    # ---- the run ---------------------------------------------------------------------

    def main(self, finish=True):
        t0 = time.time()
        try:
            self.seed_archive()
            self.kill_all()
            self.check(0)
            ran = 0
            for no in range(1, self.rounds + 1):
                self.one_round(no)
                ran = no
                if self.c.failed:
                    self.c.note(f"stopping after the first failed round; replay with CRASH_SEED={self.seed}")
                    break
            # let the reindex finish, then everything once more
            self.wait_reindex()
            self.kill_all()
            self.check(self.rounds + 1, full=True)
        finally:
            self.kill_all()
        dt = time.time() - t0
        s = self.stats
        self.c.note(f"{self.rounds} rounds in {dt:.1f} s ({dt / max(1, self.rounds):.2f} s a round); "
                    f"{len(self.model.present())} instances present at the end, {s['acks']} acknowledgements; "
                    f"{s['killed_rounds']} rounds killed with writers busy; writes cut by a kill: "
                    f"{s['maybe_stored']} stored anyway, {s['maybe_absent']} not stored, {s['ops_killed']} deletes "
                    f"resolved; {s['reindex_killed']} kills hit a running reindex (the next open resumes it), "
                    f"{s['reindex_seen_running']} checks found one still adding")
        self.c.ok(s["killed_rounds"] >= ran // 2, "at least half the rounds were killed while writers were busy",
                  f"{s['killed_rounds']} of {ran}")
        self.c.note(f"CRASH_SEED={self.seed}")
        if finish:
            self.c.finish()

    def wait_reindex(self):
        deadline = time.time() + 60
        while time.time() < deadline:
            r = self.srv.get("/v2/extendedquerytags")
            if all(t["status"] != "adding" for t in wu.json_body(r) or []):
                return
            time.sleep(0.05)


if __name__ == "__main__":
    Run().main()
