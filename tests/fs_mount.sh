#!/bin/bash
# End-to-end: a real FUSE mount of an archive. Copy tools store files at close and report
# failures through close(); the tree shows what the store holds, byte for byte.
# Needs /dev/fuse (CI runs as root with it: there this test must run, not skip).
set -u
: "${DICOMFS:?DICOMFS must name the dicomfs binary}"
SCRATCH=${SCRATCH:-/tmp/dicomfs-test-fs_mount}
CORPUS=/usr/lib/python3/dist-packages/pydicom/data/test_files

if [ ! -e /dev/fuse ] || ! command -v fusermount3 >/dev/null; then
    if [ "${CI:-}" = true ]; then echo "FAIL /dev/fuse or fusermount3 missing on CI"; exit 1; fi
    echo "skipped: no /dev/fuse"; echo "0 passed, 0 failed"; exit 0
fi

fusermount3 -uz "$SCRATCH/mnt" 2>/dev/null
rm -rf "$SCRATCH" && mkdir -p "$SCRATCH/mnt" "$SCRATCH/src" || exit 1
A=$SCRATCH/archive M=$SCRATCH/mnt
pass=0 fails=0
ok() { pass=$((pass + 1)); echo "ok   $*"; }
fail() { fails=$((fails + 1)); echo "FAIL $*"; }
check() { local what=$1; shift; if "$@" >/dev/null 2>&1; then ok "$what"; else fail "$what"; fi; }
# close() gives the verdict; the commit follows within milliseconds and `sync DIR` (an
# fsync of a folder of the mount) waits for it, as on a disk file system
settle() { sync "$M/inbox"; }

"$DICOMFS" mount "$A" "$M" >"$SCRATCH/mount.log" 2>&1 &
PID=$!
cleanup() { fusermount3 -uz "$M" 2>/dev/null; kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; }
trap cleanup EXIT
for _ in $(seq 300); do mountpoint -q "$M" && break; sleep 0.1; done
check "the archive is mounted" mountpoint -q "$M"
check "the root lists inbox, studies and changes" test -d "$M/inbox" -a -d "$M/studies" -a -d "$M/changes"

# cp of one file
check "cp of a DICOM file into the inbox succeeds" cp "$CORPUS/CT_small.dcm" "$M/inbox/"
check "sync of the inbox succeeds" settle
check "the dropped name stays visible with its size" test "$(stat -c %s "$M/inbox/CT_small.dcm")" = "$(stat -c %s "$CORPUS/CT_small.dcm")"
check "and reads back as the stored bytes (a verifying copier sees them)" cmp "$M/inbox/CT_small.dcm" "$CORPUS/CT_small.dcm"
ST=1.3.6.1.4.1.5962.1.2.1.20040119072730.12322
SE=1.3.6.1.4.1.5962.1.3.1.1.20040119072730.12322
SOP=1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322
check "the instance reads back byte for byte" cmp "$M/studies/$ST/series/$SE/instances/$SOP.dcm" "$CORPUS/CT_small.dcm"
check "study metadata.json is the metadata command's output" \
    bash -c "cmp <(cat '$M/studies/$ST/metadata.json') <('$DICOMFS' metadata '$A' $ST | tr -d '\n')"

# a drop at the root
check "cp to the root of the mount succeeds" cp "$CORPUS/MR_small.dcm" "$M/"
settle
check "the root drop is stored" test -n "$("$DICOMFS" find "$A" StudyInstanceUID=1.3.6.1.4.1.5962.1.2.4.20040826185059.5457 | grep 0020000D)"

# a non-DICOM file fails at close, with a reason
out=$(cp "$CORPUS/README.txt" "$M/inbox/" 2>&1); rc=$?
check "cp of a non-DICOM file fails" test $rc -ne 0
check "cp reports the failure at close" grep -q "failed to close" <<<"$out"
check "NAME.error says why" grep -q "not a DICOM file" "$M/inbox/README.txt.error"

# the same file again is a success (nothing changes); other bytes under the same UIDs fail
head=$("$DICOMFS" changes "$A" --offset 0 --limit 100 --no-metadata | grep -o '"sequence":[0-9]*' | tail -1)
check "copying an identical instance again succeeds" cp "$CORPUS/CT_small.dcm" "$M/inbox/again.dcm"
check "and adds no change" test "$("$DICOMFS" changes "$A" --offset 0 --limit 100 --no-metadata | grep -o '"sequence":[0-9]*' | tail -1)" = "$head"
cp "$CORPUS/CT_small.dcm" "$SCRATCH/src/other.dcm" && dcmodify -q -nb -m "(0010,0010)=Other^Bytes" "$SCRATCH/src/other.dcm"
out=$(cp "$SCRATCH/src/other.dcm" "$M/inbox/other.dcm" 2>&1); rc=$?
check "the same UIDs with other bytes fail with File exists" test $rc -ne 0 -a -n "$(grep -i 'file exists' <<<"$out")"
check "and other.dcm.error says it is stored with other content" grep -q "other content" "$M/inbox/other.dcm.error"

# cp -r of a CD-like folder: images stored, DICOMDIR skipped, README files fail alone
cp -r "$CORPUS/dicomdirtests" "$M/inbox/" 2>"$SCRATCH/cpr.err"
settle
check "cp -r reports only the non-DICOM files" test "$(grep -c 'failed to close' "$SCRATCH/cpr.err")" = 2
check "DICOMDIR files are skipped silently" test -z "$(grep DICOMDIR "$SCRATCH/cpr.err")"
n=$("$DICOMFS" find "$A" --level instance limit=200 | grep -o '"00080018"' | wc -l)
check "every image of the folder is stored ($n instances)" test "$n" -ge 40

# a folder copied to the root of the mount (not into inbox/) is a drop like any other
cp "$CORPUS/CT_small.dcm" "$SCRATCH/src/rootdir.dcm" && dcmodify -q -nb -m "(0008,0018)=1.2.3.98.3" "$SCRATCH/src/rootdir.dcm"
check "mkdir at the root and a copy into it succeed" bash -c "mkdir '$M/rootfolder' && cp '$SCRATCH/src/rootdir.dcm' '$M/rootfolder/'"
settle
check "and the copy is stored" test -n "$("$DICOMFS" find "$A" --level instance SOPInstanceUID=1.2.3.98.3 | grep 00080018)"

# removing a file while it is being written cancels it (nothing stored, no hidden name left)
cp "$CORPUS/CT_small.dcm" "$SCRATCH/src/cancel.dcm" && dcmodify -q -nb -m "(0008,0018)=1.2.3.98.4" "$SCRATCH/src/cancel.dcm"
/usr/bin/python3 - "$SCRATCH/src/cancel.dcm" "$M/inbox/cancel.dcm" <<'EOF2' >/dev/null 2>&1
import os, sys
data = open(sys.argv[1], "rb").read()
f = open(sys.argv[2], "wb")
f.write(data[:1000]); f.flush()
os.unlink(sys.argv[2])
try:
    f.write(data[1000:]); f.close()
except OSError:
    pass
EOF2
settle
check "a file removed while written is not stored" test -z "$("$DICOMFS" find "$A" --level instance SOPInstanceUID=1.2.3.98.4 | grep 00080018)"
check "and leaves no hidden name in the inbox" test -z "$(ls -A "$M/inbox" | grep fuse_hidden)"

# folders nested deeper than the archive's own tree
D="$M/inbox/a/b/c/d/e/f/g/h/i"
check "mkdir -p of 10 levels in the inbox succeeds" mkdir -p "$D"
check "and a copy into the deepest one succeeds" cp "$CORPUS/MR_small.dcm" "$D/"

# rsync (temp name, then rename), tar, mv from another file system
cp "$CORPUS/rtplan.dcm" "$CORPUS/JPEG-lossy.dcm" "$SCRATCH/src/"
check "rsync -a into the mount succeeds" rsync -a "$SCRATCH/src/rtplan.dcm" "$M/inbox/"
check "rsync's final name is visible" test -f "$M/inbox/rtplan.dcm"
check "tar -x into the mount succeeds" bash -c "tar cf - -C '$SCRATCH/src' JPEG-lossy.dcm | tar xf - -C '$M/inbox'"
cp "$CORPUS/waveform_ecg.dcm" "$SCRATCH/src/ecg.dcm"
check "mv from another file system succeeds" mv "$SCRATCH/src/ecg.dcm" "$M/inbox/"
settle
check "rtplan, JPEG-lossy and ecg are stored" test "$("$DICOMFS" find "$A" --level instance SOPInstanceUID=1.2.777.777.77.7.7777.7777.20030903150023,1.3.6.1.4.1.5962.1.1.8.1.5.20040826185059.5457,1.3.6.1.4.1.20029.40.20130125105919.5407.1.1 | grep -o '"00080018"' | wc -l)" = 3

# gio copy (the engine of GNOME Files): create, 1 MiB writes, close, then chmod/utimens
if command -v gio >/dev/null; then
    cp "$CORPUS/rtstruct.dcm" "$SCRATCH/src/gio.dcm"
    check "gio copy into the mount succeeds" gio copy "$SCRATCH/src/gio.dcm" "$M/inbox/"
    settle
    check "gio's copy is stored" test -n "$("$DICOMFS" find "$A" --level instance SOPInstanceUID=1.2.826.0.1.3680043.8.498.2010020400001 | grep 00080018)"
    "$DICOMFS" delete "$A" 1.2.826.0.1.3680043.8.498.2010020400001.1 >/dev/null # the feed test below stores it again
    out=$(gio copy "$CORPUS/README.txt" "$M/inbox/gio-readme.txt" 2>&1); rc=$?
    check "gio copy of a non-DICOM file fails with the reason's errno" test $rc -ne 0 -a -n "$(grep -i 'bad message' <<<"$out")"
    check "and NAME.error explains it" grep -q "not a DICOM file" "$M/inbox/gio-readme.txt.error"
else
    fail "gio is missing (libglib2.0-bin; tools/install-deps.sh --test installs it)"
fi

# fsync() of a dropped file returns once it is durable: stored before dd exits
check "dd conv=fsync into the mount succeeds" dd if="$CORPUS/JPEG2000.dcm" of="$M/inbox/dd.dcm" bs=1M conv=fsync status=none
check "and the instance is in the archive when fsync returns" \
    test -n "$("$DICOMFS" find "$A" --level instance SOPInstanceUID=$(dcmdump +P 0008,0018 "$CORPUS/JPEG2000.dcm" | sed 's/.*\[\(.*\)\].*/\1/') | grep 00080018)"

# a shell's "> FILE" (open, dup2, close: a flush before any data) stores the file too
cp "$CORPUS/CT_small.dcm" "$SCRATCH/src/redir.dcm" && dcmodify -q -nb -m "(0008,0018)=1.2.3.98.1" "$SCRATCH/src/redir.dcm"
check "cat FILE > mount/inbox/NAME succeeds" bash -c "cat '$SCRATCH/src/redir.dcm' > '$M/inbox/redirected.dcm'"
settle
check "and the redirected file is stored" test -n "$("$DICOMFS" find "$A" --level instance SOPInstanceUID=1.2.3.98.1 | grep 00080018)"

# a truncated copy stores nothing
head -c 20000 "$CORPUS/CT_small.dcm" >"$SCRATCH/src/cut.dcm"
"$DICOMFS" delete "$A" $ST >/dev/null
cp "$SCRATCH/src/cut.dcm" "$M/inbox/cut.dcm" 2>/dev/null
check "a truncated file is not stored" test -z "$("$DICOMFS" find "$A" StudyInstanceUID=$ST | grep 0020000D)"

# parallel copies
mkdir -p "$SCRATCH/par"
for i in $(seq 1 20); do
    cp "$CORPUS/CT_small.dcm" "$SCRATCH/par/$i.dcm"
    dcmodify -q -nb -m "(0008,0018)=1.2.3.99.$i" -m "(0020,000D)=1.2.3.99" -m "(0020,000E)=1.2.3.99.1" "$SCRATCH/par/$i.dcm"
done
cps=()
for i in $(seq 1 20); do cp "$SCRATCH/par/$i.dcm" "$M/inbox/p$i.dcm" & cps+=($!); done
wait "${cps[@]}" # not a bare wait: the mount runs in the background too
settle
check "20 parallel copies are all stored" test "$(ls "$M/studies/1.2.3.99/series/1.2.3.99.1/instances" | wc -l)" = 20

# the tree is read-only where writing makes no sense
check "writing under studies/ is refused" bash -c "! cp '$CORPUS/CT_small.dcm' '$M/studies/x.dcm' 2>/dev/null"
check "deleting a stored instance through the mount is refused" bash -c "! rm -f '$M/studies/1.2.3.99/series/1.2.3.99.1/instances/1.2.3.99.1.dcm' 2>/dev/null"
check "changes/latest.json is the newest change" grep -q '"sequence"' "$M/changes/latest.json"
check "find over the mount sees every stored instance" \
    test "$(find "$M/studies" -name '*.dcm' | wc -l)" = "$("$DICOMFS" find "$A" --level instance limit=200 | grep -o '"00080018"' | wc -l)"

# the change feed as a growing file: one line per change, and tail -f follows it
lines=$(wc -l <"$M/changes/feed.jsonl")
last=$(tail -n 1 "$M/changes/feed.jsonl" | grep -o '"sequence":[0-9]*' | cut -d: -f2)
check "feed.jsonl has one line per change, 1..$last" test "$lines" = "$last"
check "its lines are the change feed's entries" bash -c "grep -q '\"sequence\":1,' '$M/changes/feed.jsonl' && grep -c '\"action\":\"delete\"' '$M/changes/feed.jsonl' | grep -qv '^0$'"
timeout 20 tail -n 0 -f "$M/changes/feed.jsonl" >"$SCRATCH/tail.out" 2>/dev/null &
TAIL=$!
# wait until tail has the file open (it reads from the end it sees then)
for _ in $(seq 100); do ls -l /proc/$TAIL/fd 2>/dev/null | grep -q feed.jsonl && break; sleep 0.1; done
sleep 0.2

# an instance stored by another process appears in the mount, and in the feed
"$DICOMFS" ingest "$A" "$CORPUS/rtstruct.dcm" >/dev/null 2>&1
# caches last a second and tail polls every second: allow a few, slower under sanitizers
for _ in $(seq 100); do grep -q '"sopInstanceUid":"1.2.826.0.1.3680043.8.498.2010020400001"' "$SCRATCH/tail.out" && break; sleep 0.1; done
check "an instance stored by another process appears" test -d "$M/studies/1.2.826.0.1.3680043.8.498.2010020400001.1"
check "tail -f of feed.jsonl shows the new change" grep -q '"sopInstanceUid":"1.2.826.0.1.3680043.8.498.2010020400001"' "$SCRATCH/tail.out"
kill "$TAIL" 2>/dev/null; wait "$TAIL" 2>/dev/null

# unmount while busy: lazily, and the process ends
exec 9<"$M/changes/latest.json"
fusermount3 -uz "$M"
for _ in $(seq 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
exec 9<&-
for _ in $(seq 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
check "the mount process ends after an unmount" bash -c "! kill -0 $PID 2>/dev/null"
wait "$PID"; rc=$?
check "and exits 0" test $rc -eq 0
check "the archive is consistent" "$DICOMFS" fsck "$A"

# the inbox forgets stored files after --inbox-keep (and folders they leave empty);
# failures stay until removed. With --sync-close, close() returns once the file is durable.
"$DICOMFS" mount "$A" "$M" --inbox-keep 1 --sync-close >"$SCRATCH/mount2.log" 2>&1 &
PID=$!
for _ in $(seq 300); do mountpoint -q "$M" && break; sleep 0.1; done
cp "$CORPUS/CT_small.dcm" "$SCRATCH/src/syncclose.dcm" && dcmodify -q -nb -m "(0008,0018)=1.2.3.98.2" "$SCRATCH/src/syncclose.dcm"
cp "$SCRATCH/src/syncclose.dcm" "$M/inbox/"
check "--sync-close: the instance is in the archive when cp returns" \
    test -n "$("$DICOMFS" find "$A" --level instance SOPInstanceUID=1.2.3.98.2 | grep 00080018)"
mkdir -p "$M/inbox/cd/sub"
cp "$CORPUS/MR_small.dcm" "$M/inbox/cd/sub/" && cp "$CORPUS/README.txt" "$M/inbox/cd/" 2>/dev/null
for _ in $(seq 100); do [ ! -e "$M/inbox/cd/sub" ] && break; ls "$M/inbox" >/dev/null; sleep 0.1; done
check "a stored file and its emptied folder leave the inbox after --inbox-keep" test ! -e "$M/inbox/cd/sub"
check "a failed file and its reason stay" test -f "$M/inbox/cd/README.txt" -a -f "$M/inbox/cd/README.txt.error"
fusermount3 -u "$M"
wait "$PID"

# close() gives the verdict for every file of a folder copy, also for those that share
# UIDs with another file of the same copy (pydicom's corpus: MR_small*.dcm, JPEG2000*.dcm,
# SC_rgb_rle*.dcm): a file whose close() succeeded is stored, one that is not stored
# failed its close() (DICOMDIR files are skipped), and `sync DIR` has no late failure to report.
A2=$SCRATCH/archive2
"$DICOMFS" mount "$A2" "$M" >"$SCRATCH/mount3.log" 2>&1 &
PID=$!
for _ in $(seq 300); do mountpoint -q "$M" && break; sleep 0.1; done
for run in 1 2; do # 2: the same files again, now against what run 1 stored
    cp -r "$CORPUS" "$M/inbox/corpus$run" 2>"$SCRATCH/corpus$run.err"
    check "run $run: sync of the inbox after cp -r of the corpus succeeds (no late failure)" sync "$M/inbox"
    sed -n "s|^cp: failed to close '$M/inbox/corpus$run/\(.*\)': .*|\1|p" "$SCRATCH/corpus$run.err" | sort >"$SCRATCH/cpfail$run"
    (cd "$M/inbox/corpus$run" && find . -name '*.error' | sed 's|^\./||; s|\.error$||' | sort) >"$SCRATCH/errfiles$run"
    check "run $run: cp -r fails exactly for the files with a .error ($(wc -l <"$SCRATCH/cpfail$run") cp errors, $(wc -l <"$SCRATCH/errfiles$run") .error files)" \
        cmp "$SCRATCH/cpfail$run" "$SCRATCH/errfiles$run"
    notstored=$(cd "$CORPUS" && find . -type f ! -name 'DICOMDIR*' | sed 's|^\./||' | sort | comm -23 - "$SCRATCH/cpfail$run" |
        while read -r f; do cmp -s "$CORPUS/$f" "$M/inbox/corpus$run/$f" || echo "$f"; done)
    check "run $run: every file whose close() succeeded reads back as stored bytes${notstored:+ (not: $notstored)}" test -z "$notstored"
done
check "a duplicate's .error says its UIDs were stored with other bytes" \
    grep -q "same UIDs.*other bytes" "$M/inbox/corpus1/MR_small_RLE.dcm.error"
check "a validation failure's .error says its reason once" \
    test "$(grep -c "PatientID is missing" "$M/inbox/corpus1/ExplVR_BigEnd.dcm.error")" = 1
# two copies at once of one instance with other bytes: one is stored, the other's close() fails
for i in 1 2 3 4 5; do
    cp "$CORPUS/CT_small.dcm" "$SCRATCH/src/x$i.dcm" && dcmodify -q -nb -m "(0008,0018)=1.2.3.97.$i" "$SCRATCH/src/x$i.dcm"
    cp "$SCRATCH/src/x$i.dcm" "$SCRATCH/src/y$i.dcm" && dcmodify -q -nb -m "(0010,0010)=Other^Bytes" "$SCRATCH/src/y$i.dcm"
    cp "$SCRATCH/src/x$i.dcm" "$M/inbox/x$i.dcm" 2>/dev/null & cx=$!
    cp "$SCRATCH/src/y$i.dcm" "$M/inbox/y$i.dcm" 2>/dev/null & cy=$!
    wait $cx; rx=$?; wait $cy; ry=$?
    [ $rx -eq 0 ] && loser=y$i || loser=x$i
    check "round $i: of two concurrent cp of the same UIDs with other bytes exactly one fails (x $rx, y $ry)" \
        test $((rx == 0)) -ne $((ry == 0))
    check "round $i: and $loser.dcm.error says the same UIDs have other bytes" grep -q "other bytes" "$M/inbox/$loser.dcm.error"
done
check "sync after the concurrent copies succeeds" sync "$M/inbox"
# rm -r of a folder with failures, in one go (NAME, then NAME.error, then the folder)
check "rm -r of an inbox folder with failed files succeeds at once" rm -r "$M/inbox/corpus1"
check "and the folder is gone" test ! -e "$M/inbox/corpus1"
check "rm of a failed file and its .error succeeds" bash -c "rm '$M/inbox/corpus2/README.txt' '$M/inbox/corpus2/README.txt.error'"
fusermount3 -u "$M"
wait "$PID"
check "the second archive is consistent" "$DICOMFS" fsck "$A2"

echo "fs_mount: $pass passed, $fails failed"
echo "$pass passed, $fails failed"
[ $fails -eq 0 ]
