#!/bin/bash
# End-to-end: kill -9 during ingest, then reopen.
#
# 300 small DICOM files are generated with pydicom. In 8 rounds (fixed seed), `dicomfs
# ingest --json` is started on all of them into one archive and killed with SIGKILL after
# 0-300 ms (at most the time a whole uninterrupted ingest takes, measured first, so that
# the kill lands while instances are being written). From round 2 on, one study is deleted
# before the round so that every round has instances left to store; when fewer than 2
# rounds were killed before finishing (a fast machine), extra rounds kill at 0-5 ms until
# 2 were, so the test never depends on timing. After each round:
# every file reported "stored" (and not deleted since) must be present (dicomfs metadata
# exits 0 and lists it) and `dicomfs fsck` must exit 0 (opening the archive repairs what the
# crash left). Finally everything is ingested once more to completion: all 300 instances
# present exactly once, one create entry each for the live ones, fsck clean.
set -u

PY=/usr/bin/python3
: "${DICOMFS:?DICOMFS must name the dicomfs binary}"
TESTS=${TESTS:-$(cd "$(dirname "$0")" && pwd)}
SCRATCH=${SCRATCH:-/tmp/dicomfs-test-crash_recovery}
rm -rf "$SCRATCH" && mkdir -p "$SCRATCH" || exit 1
ARCHIVE=$SCRATCH/archive
FILES=$SCRATCH/files
N=300
ROUNDS=${CRASH_ROUNDS:-8}

fails=0
pass=0
ok()   { pass=$((pass + 1)); echo "ok   $*"; }
fail() { fails=$((fails + 1)); echo "FAIL $*"; }
check() { # check "what" command...
    local what=$1; shift
    if "$@"; then ok "$what"; else fail "$what"; fi
}

# ---- Generate the files: 10 studies x 3 series x 10 instances -------------------------
"$PY" - "$FILES" "$N" <<'EOF' || { echo "FAIL generating files"; exit 1; }
import os, sys
sys.path.insert(0, os.environ.get("TESTS", "."))
import testutil as tu
out, n = sys.argv[1], int(sys.argv[2])
root = "1.2.826.0.1.3680043.9.7777.77"
for i in range(n):
    st, se, inst = i // 30 + 1, (i // 10) % 3 + 1, i % 10 + 1
    study = f"{root}.{st}"
    series = f"{study}.{se}"
    ds = tu.make_dataset(study, series, f"{series}.{inst}", PatientName=f"Crash^Patient{st}",
                         PatientID=f"C{st:03d}", StudyDate="20240101", Modality="OT",
                         InstanceNumber=inst, StudyDescription="crash test " + "x" * (i % 50))
    ds.Rows = ds.Columns = 128  # 16 KB of pixels: small, but enough I/O to be killed mid-way
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = bytes((i + k) % 256 for k in range(128 * 128))
    tu.write_dicom(os.path.join(out, f"{i:03d}.dcm"), ds)
EOF
export TESTS
ok "generated $N DICOM files"

# Checks the archive against every "stored" line in the given outputs: metadata of each
# study must list each stored SOP; prints one line per check, exit 1 on a problem.
check_present() {
    "$PY" - "$DICOMFS" "$ARCHIVE" "$SCRATCH/deleted" "$@" <<'EOF'
import json, os, subprocess, sys
dicomfs, archive, deleted_file, outs = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
deletes = {}  # round -> [study deleted before that round started]
if os.path.exists(deleted_file):
    for line in open(deleted_file):
        r, st = line.split()
        deletes.setdefault(int(r), []).append(st)
stored = {}
for rnd, o in enumerate(outs, 1):
    for st in deletes.get(rnd, []):
        stored = {k: v for k, v in stored.items() if v[0] != st}
    for line in open(o, encoding="utf-8", errors="replace"):
        try:
            r = json.loads(line)
        except ValueError:
            continue  # a line cut by the kill
        if r.get("result") == "stored":
            stored[r["sopInstanceUid"]] = (r["studyInstanceUid"], r["seriesInstanceUid"])
by_study = {}
for sop, (st, se) in stored.items():
    by_study.setdefault(st, set()).add(sop)
missing = []
for st, sops in sorted(by_study.items()):
    p = subprocess.run([dicomfs, "metadata", archive, st], capture_output=True, text=True)
    have = set()
    if p.returncode == 0:
        for o in json.loads(p.stdout):
            have.add(o.get("00080018", {}).get("Value", [None])[0])
    missing += sorted(sops - have)
# and one instance-level lookup, as a client would do it
if stored:
    sop, (st, se) = sorted(stored.items())[-1]
    p = subprocess.run([dicomfs, "metadata", archive, st, se, sop], capture_output=True, text=True)
    if p.returncode != 0:
        missing.append(sop + " (instance-level metadata exit %d)" % p.returncode)
print(f"#    {len(stored)} instances reported stored and not deleted since, {len(missing)} missing")
for m in missing[:10]:
    print(f"#    missing: {m}")
sys.exit(1 if missing else 0)
EOF
}

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# How long does an uninterrupted ingest of everything take (into a throwaway archive)?
t0=$(now_ms)
"$DICOMFS" ingest "$SCRATCH/calibration" "$FILES" 2>/dev/null
t1=$(now_ms)
full=$((t1 - t0))
max_delay=$(( full < 300 ? full : 300 ))
[ $max_delay -lt 20 ] && max_delay=20
rm -rf "$SCRATCH/calibration"
echo "#    an uninterrupted ingest of $N files takes ${full} ms; kill delays 0-${max_delay} ms"

# ---- Kill rounds -------------------------------------------------------------------
RANDOM=20240607  # fixed seed: the same delays every run
outs=()
round=0
while :; do
    round=$((round + 1))
    # A fast machine may finish some rounds before their kill: then extra rounds with
    # kills at 0-5 ms (before or during the start) until 2 rounds were really killed.
    nkilled=$(cat "$SCRATCH/killed_rounds" 2>/dev/null | wc -l)
    [ "$round" -gt "$ROUNDS" ] && { [ "$nkilled" -ge 2 ] || [ "$round" -gt $((ROUNDS + 20)) ]; } && break
    if [ "$round" -le "$ROUNDS" ]; then delay=$((RANDOM % (max_delay + 1))); else delay=$((RANDOM % 6)); fi
    if [ "$round" -ge 2 ]; then
        # delete one study, so that this round has work left whatever the earlier ones did
        st="1.2.826.0.1.3680043.9.7777.77.$(( (round * 3) % 10 + 1 ))"
        "$DICOMFS" delete "$ARCHIVE" "$st" >/dev/null 2>&1
        echo "$round $st" >>"$SCRATCH/deleted"
    fi
    out=$SCRATCH/round$round.jsonl
    "$DICOMFS" ingest --json "$ARCHIVE" "$FILES" >"$out" 2>"$SCRATCH/round$round.err" &
    pid=$!
    sleep "$(printf '0.%03d' "$delay")"
    kill -9 "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    rc=$?
    outs+=("$out")
    nstored=$(grep -c '"result":"stored"' "$out" || true)
    if [ $rc -eq 137 ]; then echo "$round" >>"$SCRATCH/killed_rounds"; fi
    echo "#    round $round: killed after ${delay} ms (exit $rc), $nstored stored lines this round"
    check "round $round: every instance reported stored so far is present" check_present "${outs[@]}"
    fsck_out=$("$DICOMFS" fsck "$ARCHIVE" 2>&1)
    frc=$?
    if [ ! -e "$ARCHIVE/index.db" ] && [ "$nstored" = 0 ]; then
        # killed while creating it: nothing was acknowledged; the next ingest creates it
        ok "round $round: killed before the archive was created (fsck exit $frc)"
        continue
    fi
    if [ $frc -eq 0 ]; then ok "round $round: fsck exits 0 after reopening"; else
        fail "round $round: fsck exits 0 after reopening (exit $frc)"; echo "$fsck_out" | tail -n 10 | sed 's/^/     /'; fi
    echo "#    $(echo "$fsck_out" | tail -n 1)"
done

# ---- Complete ingest ---------------------------------------------------------------
final=$SCRATCH/final.jsonl
"$DICOMFS" ingest --json "$ARCHIVE" "$FILES" >"$final" 2>"$SCRATCH/final.err"
rc=$?
echo "#    final ingest exit $rc: $(tail -n 1 "$SCRATCH/final.err")"
check "final ingest exits 0 or 1 (1 only for files already stored)" test $rc -le 1
nkilled=$(cat "$SCRATCH/killed_rounds" 2>/dev/null | wc -l)
echo "#    $nkilled of $((round - 1)) rounds were killed before their ingest finished"
check "at least 2 rounds were killed before their ingest finished" test "$nkilled" -ge 2
"$PY" - "$DICOMFS" "$ARCHIVE" "$N" "$final" <<'EOF'
import json, os, subprocess, sys
sys.path.insert(0, os.environ["TESTS"])
import testutil as tu
dicomfs, archive, n, final = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
c = tu.Checker("crash_recovery final")
res = [json.loads(l) for l in open(final) if l.strip()]
c.eq(len(res), n, "final ingest reports every file")
bad = [r for r in res if not (r.get("result") == "stored" or
                              (r.get("result") == "failed" and r.get("failureReason") == 45070))]
c.eq(bad, [], "final ingest: each file stored now or already stored (45070)")
sops = []
for off in (0, 200):
    rc, data, err = tu.find(archive, "limit=200", f"offset={off}", level="instance")
    c.eq(rc, 0, f"find --level instance limit=200 offset={off} exits 0")
    sops += [tu.jget(o, "SOPInstanceUID") for o in data or []]
c.eq(len(sops), n, f"find lists {n} instances")
c.eq(len(set(sops)), n, "each instance exactly once")
feed, err = tu.all_changes(archive)
c.ok(err is None, "change feed readable", err or "")
creates = [e.get("sopInstanceUid") for e in feed if e.get("action") == "create" and e.get("state") == "current"]
c.eq(len(creates), n, "one current create entry per instance in the change feed")
c.eq(len(set(creates)), n, "no instance has two current create entries")
seqs = [e.get("sequence") for e in feed]
c.ok(all(a < b for a, b in zip(seqs, seqs[1:])), "change-feed sequences strictly increasing")
p = tu.fsck(archive)
c.eq(p.returncode, 0, "final fsck exits 0")
print("#    " + (p.stdout.strip().splitlines() or [""])[-1])
c.ok(f"fsck: {n} instances, {n} objects, 0 missing, 0 orphans, 0 index errors" in p.stdout,
     f"fsck reports {n} instances and objects, nothing missing or orphaned")
leftovers = os.listdir(os.path.join(archive, "tmp")) if os.path.isdir(os.path.join(archive, "tmp")) else []
c.eq(leftovers, [], "no temp files left in ARCHIVE/tmp")
c.finish()
EOF
prc=$?
if [ $prc -eq 0 ]; then ok "final state checks"; else fail "final state checks"; fi

echo "crash_recovery: $pass checks passed, $fails failed"
[ $fails -eq 0 ]
