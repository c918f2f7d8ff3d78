#!/bin/bash
# End-to-end: two `dicomfs ingest` processes write different file sets into one (new)
# archive at the same time, while two reader loops run `dicomfs find` and `dicomfs
# changes`. Checks: no errors anywhere, every file stored, change-feed sequences strictly
# increasing and unique (within each read, across reads, and in the final feed), fsck clean.
set -u

PY=/usr/bin/python3
: "${DICOMFS:?DICOMFS must name the dicomfs binary}"
TESTS=${TESTS:-$(cd "$(dirname "$0")" && pwd)}
export TESTS
SCRATCH=${SCRATCH:-/tmp/dicomfs-test-concurrency}
rm -rf "$SCRATCH" && mkdir -p "$SCRATCH" || exit 1
ARCHIVE=$SCRATCH/archive
PER_SET=${CONCURRENCY_FILES:-200}

fails=0
pass=0
ok()   { pass=$((pass + 1)); echo "ok   $*"; }
fail() { fails=$((fails + 1)); echo "FAIL $*"; }

# ---- Two file sets, different studies ------------------------------------------------
"$PY" - "$SCRATCH" "$PER_SET" <<'EOF' || { echo "FAIL generating files"; exit 1; }
import os, sys
sys.path.insert(0, os.environ["TESTS"])
import testutil as tu
out, n = sys.argv[1], int(sys.argv[2])
for s, name in enumerate(("A", "B")):
    root = f"1.2.826.0.1.3680043.9.7777.88.{s + 1}"
    for i in range(n):
        study = f"{root}.{i // 20 + 1}"
        series = f"{study}.{i // 5 % 4 + 1}"
        ds = tu.make_dataset(study, series, f"{series}.{i % 5 + 1}",
                             PatientName=f"Conc^{name}{i // 20}", PatientID=f"{name}{i // 20:03d}",
                             StudyDate=f"2023{i % 12 + 1:02d}15", Modality="CT" if s == 0 else "MR",
                             InstanceNumber=i % 5 + 1)
        ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = 128, 128, 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = bytes((i + k) % 256 for k in range(128 * 128 * 2))
        # set A in parts of 50: writer A ingests part by part (see below)
        tu.write_dicom(os.path.join(out, "set" + name, f"part{i // 50}", f"{i:03d}.dcm"), ds)
EOF
ok "generated 2 x $PER_SET DICOM files"

STOP=$SCRATCH/stop
DONE=$SCRATCH/writers_done
# A reader's count of finished calls, written whole (a rename), so a read of it never
# sees the file empty or half written.
set_progress() { echo "$2" >"$SCRATCH/reader_$1.progress.tmp" && mv -f "$SCRATCH/reader_$1.progress.tmp" "$SCRATCH/reader_$1.progress"; }
# Reader 1: find at every level; every call must exit 0 and print a JSON array.
reader_find() {
    local n=0 bad=0 started=0 during=0
    local levels=(study series instance)
    while [ ! -e "$STOP" ]; do
        lvl=${levels[$((n % 3))]}
        out=$("$DICOMFS" find "$ARCHIVE" --level "$lvl" limit=50 2>&1)
        rc=$?
        if [ $started -eq 0 ]; then
            # before the first success the archive may still be being created
            [ $rc -eq 0 ] && started=1 || { sleep 0.02; continue; }
        fi
        n=$((n + 1))
        [ -e "$DONE" ] || during=$((during + 1))
        set_progress find $n
        if [ $rc -ne 0 ] || ! printf '%s' "$out" | "$PY" -c 'import json,sys; d=json.load(sys.stdin); assert isinstance(d, list)' 2>/dev/null; then
            bad=$((bad + 1))
            echo "find --level $lvl exit $rc: ${out:0:300}" >>"$SCRATCH/reader_find.errors"
        fi
    done
    echo "$n $bad $during" >"$SCRATCH/reader_find.count"
}
# Reader 2: the change feed; sequences strictly increasing within a read and the first
# window never shrinks between reads (entries never disappear).
reader_changes() {
    local n=0 bad=0 started=0 prev=0 during=0
    while [ ! -e "$STOP" ]; do
        out=$("$DICOMFS" changes "$ARCHIVE" --offset 0 --limit 100 --no-metadata 2>&1)
        rc=$?
        if [ $started -eq 0 ]; then
            [ $rc -eq 0 ] && started=1 || { sleep 0.02; continue; }
        fi
        n=$((n + 1))
        [ -e "$DONE" ] || during=$((during + 1))
        set_progress changes $n
        cnt=$(printf '%s' "$out" | "$PY" -c '
import json, sys
d = json.load(sys.stdin)
s = [e["sequence"] for e in d]
assert all(isinstance(x, int) for x in s), "non-integer sequence"
assert all(a < b for a, b in zip(s, s[1:])), "not strictly increasing: %s" % s
assert len(set(s)) == len(s), "duplicate sequence"
print(len(s))' 2>&1)
        prc=$?
        if [ $rc -ne 0 ] || [ $prc -ne 0 ]; then
            bad=$((bad + 1))
            echo "changes exit $rc: ${out:0:200} / ${cnt:0:300}" >>"$SCRATCH/reader_changes.errors"
        elif [ "$cnt" -lt "$prev" ]; then
            bad=$((bad + 1))
            echo "changes window shrank from $prev to $cnt entries" >>"$SCRATCH/reader_changes.errors"
        else
            prev=$cnt
        fi
    done
    echo "$n $bad $during" >"$SCRATCH/reader_changes.count"
}

reader_find &
rf=$!
reader_changes &
rcg=$!

# ---- Two writers at once, on an archive that does not exist yet ------------------------
# Writer A ingests its set part by part and, after each part, waits until both readers
# have finished another call: each reader then finishes at least one call per part
# before the writers are done, however fast or slow this machine is (no timeouts; a
# reader that died ends the wait, and the overlap check below fails).
progress() { local v; v=$(cat "$SCRATCH/reader_$1.progress" 2>/dev/null); echo "${v:-0}"; }
advanced() { [ "$(progress "$1")" -gt "$2" ] || ! kill -0 "$3" 2>/dev/null; }
writer_a() {
    local rc=0 part f0 c0
    for part in "$SCRATCH"/setA/part*; do
        f0=$(progress find); c0=$(progress changes)
        "$DICOMFS" ingest --json "$ARCHIVE" "$part" >>"$SCRATCH/A.jsonl" 2>>"$SCRATCH/A.err" || rc=$?
        until advanced find "$f0" "$rf" && advanced changes "$c0" "$rcg"; do sleep 0.01; done
    done
    return $rc
}
nparts=$(ls -d "$SCRATCH"/setA/part* | wc -l)
writer_a &
pa=$!
"$DICOMFS" ingest --json "$ARCHIVE" "$SCRATCH/setB" >"$SCRATCH/B.jsonl" 2>"$SCRATCH/B.err" &
pb=$!
wait $pa; rca=$?
wait $pb; rcb=$?
touch "$DONE"
# let each reader see the final state once more
f0=$(progress find); c0=$(progress changes)
until advanced find "$f0" "$rf" && advanced changes "$c0" "$rcg"; do sleep 0.01; done
touch "$STOP"
wait $rf $rcg

if [ $rca -eq 0 ]; then ok "writer A exits 0"; else fail "writer A exits 0 (exit $rca): $(tail -n 3 "$SCRATCH/A.err")"; fi
if [ $rcb -eq 0 ]; then ok "writer B exits 0"; else fail "writer B exits 0 (exit $rcb): $(tail -n 3 "$SCRATCH/B.err")"; fi
echo "#    A: $(grep -h "^ingest:" "$SCRATCH/A.err" | tr "\n" " ")"
echo "#    B: $(tail -n 1 "$SCRATCH/B.err")"
for r in find changes; do
    read -r n bad during <"$SCRATCH/reader_$r.count" || { n=0; bad=0; during=0; }
    if [ "$n" -gt 0 ] && [ "$bad" -eq 0 ]; then ok "reader $r: $n calls ($during while the writers ran), no errors"; else
        fail "reader $r: $n calls ($during while the writers ran), $bad errors"
        head -n 5 "$SCRATCH/reader_$r.errors" 2>/dev/null | sed 's/^/     /'
    fi
done
d1=0 d2=0
read -r _ _ d1 <"$SCRATCH/reader_find.count"; read -r _ _ d2 <"$SCRATCH/reader_changes.count"
if [ "${d1:-0}" -ge "$nparts" ] && [ "${d2:-0}" -ge "$nparts" ]; then
    ok "each reader finished a call during each of writer A's $nparts parts ($d1 + $d2 calls while the writers ran)"
else
    fail "each reader finished a call during each of writer A's $nparts parts ($d1 + $d2 calls while the writers ran)"
fi

"$PY" - "$ARCHIVE" "$PER_SET" "$SCRATCH/A.jsonl" "$SCRATCH/B.jsonl" <<'EOF'
import json, os, sys
sys.path.insert(0, os.environ["TESTS"])
import testutil as tu
archive, n = sys.argv[1], int(sys.argv[2])
c = tu.Checker("concurrency final")
total = 0
for name, path in zip("AB", sys.argv[3:5]):
    res, bad = tu.parse_json_lines(open(path).read())
    c.eq(bad, [], f"writer {name}: JSON lines only")
    c.eq(len(res), n, f"writer {name}: one line per file")
    c.eq([r for r in res if r.get("result") != "stored" or "warningReason" in r], [],
         f"writer {name}: every file stored without warning")
    total += n
sops = []
for off in range(0, total, 200):
    rc, data, err = tu.find(archive, "limit=200", f"offset={off}", level="instance")
    c.eq(rc, 0, f"find --level instance offset={off} exits 0")
    sops += [tu.jget(o, "SOPInstanceUID") for o in data or []]
c.eq((len(sops), len(set(sops))), (total, total), f"find lists all {total} instances, each once")
rc, data, err = tu.find(archive, "limit=200", "ModalitiesInStudy=MR")
c.eq(len(data or []), n // 20, "set B's studies found by ModalitiesInStudy=MR")
feed, err = tu.all_changes(archive)
c.ok(err is None, "change feed readable", err or "")
seqs = [e.get("sequence") for e in feed]
c.ok(all(isinstance(s, int) for s in seqs) and all(a < b for a, b in zip(seqs, seqs[1:])),
     "change-feed sequences strictly increasing")
c.eq(len(set(seqs)), len(seqs), "change-feed sequences unique")
creates = [e.get("sopInstanceUid") for e in feed if e.get("action") == "create"]
c.eq((len(creates), len(set(creates))), (total, total), f"one create entry for each of the {total} instances")
p = tu.fsck(archive)
c.eq(p.returncode, 0, "fsck exits 0")
print("#    " + (p.stdout.strip().splitlines() or [""])[-1])
c.finish()
EOF
if [ $? -eq 0 ]; then ok "final state checks"; else fail "final state checks"; fi

echo "concurrency: $pass checks passed, $fails failed"
[ $fails -eq 0 ]
