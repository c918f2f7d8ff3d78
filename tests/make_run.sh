#!/bin/bash
# End-to-end: what `make run` runs (tools/run.sh). It stores what the inbox holds and
# serves even when some files are refused; it starts again with the same inbox (the
# files are already stored); a mount that a killed dicomfs left behind is cleaned up; a
# live mount (another `make run`) is never touched, and run.sh refuses to start.
set -u
: "${DICOMFS:?DICOMFS must name the dicomfs binary}"
TESTS=${TESTS:-$(cd "$(dirname "$0")" && pwd)}
ROOT=$(cd "$TESTS/.." && pwd)
RUN=$ROOT/tools/run.sh
SCRATCH=${SCRATCH:-/tmp/dicomfs-test-make_run}
CORPUS=/usr/lib/python3/dist-packages/pydicom/data/test_files
CT_STUDY=1.3.6.1.4.1.5962.1.2.1.20040119072730.12322

for m in "$SCRATCH/mnt" "$SCRATCH/mnt2"; do fusermount3 -uz "$m" 2>/dev/null; done
rm -rf "$SCRATCH" && mkdir -p "$SCRATCH/inbox" || exit 1
S=$SCRATCH
pass=0 fails=0
ok() { pass=$((pass + 1)); echo "ok   $*"; }
fail() { fails=$((fails + 1)); echo "FAIL $*"; }
check() { local what=$1; shift; if "$@" >/dev/null 2>&1; then ok "$what"; else fail "$what"; fi; }

fuse=false
if [ -e /dev/fuse ] && command -v fusermount3 >/dev/null; then fuse=true
elif [ "${CI:-}" = true ]; then fail "/dev/fuse or fusermount3 missing on CI"; fi

PID=
cleanup() {
    [ -n "$PID" ] && kill "$PID" 2>/dev/null
    for m in "$S/mnt" "$S/mnt2"; do fusermount3 -uz "$m" 2>/dev/null; done
}
trap cleanup EXIT

# Starts run.sh as make run does (port 0: any free one) with the mount at $1; returns once
# it serves or has exited. LOG holds its output.
start() {
    LOG=$S/run$((++runs)).log
    "$RUN" "$DICOMFS" "$S/archive" "$S/inbox" "$1" 127.0.0.1:0 >"$LOG" 2>&1 &
    PID=$!
    for _ in $(seq 600); do
        grep -q "^dicomfs: serving" "$LOG" && return 0
        kill -0 "$PID" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}
# Ctrl-C's SIGINT is ignored by a background job: SIGTERM stops it the same way.
stop() { kill -TERM "$PID" 2>/dev/null; wait "$PID"; local rc=$?; PID=; return $rc; }
runs=0

if command -v make >/dev/null; then
    check "make run runs tools/run.sh" bash -c "make -n -C '$ROOT' run BUILD=/nonexistent | grep -q 'tools/run.sh'"
fi

# ---- a fresh archive, an inbox with a CD's README among the images -------------------
cp "$CORPUS/CT_small.dcm" "$CORPUS/README.txt" "$S/inbox/"
if start "$S/mnt"; then ok "run 1: serves although the inbox holds a file that is not DICOM"; else
    fail "run 1: serves although the inbox holds a file that is not DICOM"; sed 's/^/     /' "$LOG"; fi
check "run 1: the refused file is reported" grep -q "README.txt: failed (272)" "$LOG"
check "run 1: and run.sh says it serves anyway" grep -q "were not stored.*serving the archive anyway" "$LOG"
check "run 1: the image is stored" test -n "$("$DICOMFS" find "$S/archive" StudyInstanceUID=$CT_STUDY | grep 0020000D)"
if $fuse; then
    check "run 1: the archive is mounted, the image under studies/" test -d "$S/mnt/studies/$CT_STUDY"
fi
check "run 1: stops cleanly on SIGTERM" stop
if $fuse; then check "run 1: and unmounts" bash -c "! mountpoint -q '$S/mnt'"; fi

# ---- the same inbox again: its image is already stored, which is no failure ----------
if start "$S/mnt"; then ok "run 2: starts again with the same inbox"; else
    fail "run 2: starts again with the same inbox"; sed 's/^/     /' "$LOG"; fi
check "run 2: the image counts as already stored" grep -q "^ingest: 1 stored (1 already stored), 0 skipped, 1 failed" "$LOG"
stop
rm "$S/inbox/README.txt"
"$DICOMFS" ingest "$S/archive" "$S/inbox" 2>"$S/ingest.err"
check "dicomfs ingest of files already stored with the same bytes exits 0" test $? -eq 0
check "and says they were already stored" grep -q "^ingest: 1 stored (1 already stored), 0 skipped, 0 failed" "$S/ingest.err"

if $fuse; then
    # ---- a mount left behind by a killed dicomfs ("Transport endpoint is not connected")
    mkdir -p "$S/mnt"
    "$DICOMFS" mount "$S/archive2" "$S/mnt" >"$S/mount.log" 2>&1 &
    M=$!
    for _ in $(seq 100); do mountpoint -q "$S/mnt" && break; sleep 0.1; done
    kill -9 $M; wait $M 2>/dev/null
    check "a killed mount leaves a dead mount point" bash -c "! stat '$S/mnt'"
    if start "$S/mnt"; then ok "run 3: starts on the dead mount point"; else
        fail "run 3: starts on the dead mount point"; sed 's/^/     /' "$LOG"; fi
    check "run 3: says it removed the dead mount" grep -q "removed the dead mount" "$LOG"
    check "run 3: and mounts the archive there" test -d "$S/mnt/studies/$CT_STUDY"
    stop

    # ---- a live mount: another make run is serving there -----------------------------
    mkdir -p "$S/mnt2"
    "$DICOMFS" mount "$S/archive2" "$S/mnt2" --daemon >/dev/null 2>&1
    check "a live mount at mnt2" mountpoint -q "$S/mnt2"
    out=$(timeout 60 "$RUN" "$DICOMFS" "$S/archive" "$S/inbox" "$S/mnt2" 127.0.0.1:0 2>&1)
    rc=$?
    check "run 4: refuses to start where a live dicomfs is mounted (exit $rc)" test $rc -ne 0 -a $rc -ne 124
    check "run 4: says the mount point is in use and what to do" bash -c "grep -q 'is in use' <<<'$out' && grep -q 'MOUNT=' <<<'$out'"
    check "run 4: serves nothing" bash -c "! grep -q '^dicomfs: serving' <<<'$out'"
    check "run 4: the live mount is untouched" bash -c "mountpoint -q '$S/mnt2' && test -d '$S/mnt2/studies'"
    fusermount3 -u "$S/mnt2"
fi

echo "make_run: $pass passed, $fails failed"
[ $fails -eq 0 ]
