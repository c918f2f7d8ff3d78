#!/usr/bin/env bash
# tools/bench/run.sh [BUILD_DIR] — the benchmark (`make bench`). Measures dicomfs against
# the machine's own limits, measured in the same run on the same disk, and prints a table
# (metric, dicomfs, limit/peer, ratio, goal, pass/fail); the same as JSON in
# BUILD_DIR/bench-results.json. A missed goal never fails: exit 0 unless a step crashed.
#
# Steps (each a function below; later issues add steps the same way):
#   dataset    gen_dataset.py: 125 studies x 4 series; 2,000 64x64 (~10 KB) and 500 512x512
#              (~525 KB) 16-bit instances, fixed seed; reused while the parameters and the
#              generator are unchanged.
#   limits     fsyncbench.c: the same files copied with open/write/fsync/close per file
#              (files/s, MB/s, per set), and one sequential write of the same bytes with a
#              single fdatasync (MB/s). Sources are read once first so both sides read
#              from the page cache; nothing is dropped from the cache (needs root).
#   ingest     `dicomfs ingest` of each set into a fresh archive: instances/s, MB/s, index
#              bytes/instance (index.db + -wal after a TRUNCATE checkpoint), and the peak
#              size of index.db-wal during the ingest.
#   queries    qlat.py: median and p95 of five typical study-level queries on the benchmark
#              archive (the small set's): in-process with `find --repeat N` (the query
#              alone), and as whole `find` processes minus the start-up of a trivial one.
#   web        web.py + webbench.c (a libcurl client, keep-alive, bodies built before timing):
#              DICOMweb over HTTP on 127.0.0.1, `dicomfs serve` against Orthanc with its
#              DICOMweb plugin (Debian orthanc, orthanc-dicomweb; installed here when missing;
#              run from a private config under BENCH_WORK/web, never the system service):
#              STOW-RS inst/s and MB/s (small/large set x 1/50 instances per request, 2
#              clients, fresh storage each time); QIDO-RS median/p95 of the five queries;
#              study metadata median (a 20-instance study); WADO-RS instance and study
#              retrieve MB/s with 1 and 2 clients, the better one also against the page-cache
#              read rate of dicomfs's object files
#              (and, for context, one loopback TCP connection's rate for the same files).
#              Ratios are dicomfs/Orthanc. STOW runs BENCH_REPS rounds (median shown), each with
#              two clients: webbench and curl (stowcurl.py: the curl command line, 2 processes,
#              keep-alive, --data-binary @prebuilt body); the goals are judged on curl's, and the
#              server's CPU per instance is shown for both. Every server gets a new directory,
#              all deleted at the end of the step (see limits_run). ~5 min.
#   profile    profile.py: CPU profile (perf record -e cpu-clock, DWARF stacks) of CLI ingest and of
#              STOW (50/request, 2 curl clients) of the small set: CPU ms per stored instance
#              (unprofiled run), split into parse, validation, metadata JSON, index values, SQLite,
#              file I/O (ext4 inode allocation apart), fsync CPU, HTTP + multipart, memory, other;
#              the fsync wait (strace -c -w); the top functions. Skipped without perf. ~40 s.
#   journal    limits, CLI ingest and STOW (curl; dicomfs and Orthanc) again on a journaled ext4
#              in a loop-mounted sparse image the step makes and removes (needs root and
#              /dev/loop-control; skipped with a message otherwise). ~3 min.
#   rss        rss.py: peak RSS (VmHWM) and its growth while `dicomfs ingest` and then
#              `dicomfs serve` (STOW 50/request, curl) store ~2.1 GB of large instances
#              (4,000, made once with another seed and kept), each into a fresh archive. ~2 min.
#   scales     gen_synth.py: N synthetic ~1 KB instances per BENCH_SCALES entry, ingested
#              once and kept (keyed by N, the generator and the index schema); the same
#              queries at each N and the growth from the smallest to the largest N.
#   xqt        xqt.py (issue 8): extended query tags and the change feed. Reindex: `dicomfs
#              tags ARCHIVE add JSON --wait` of one study-level tag (SeriesDate) and then one
#              instance-level tag (ContentDate), each timed (instances/s over the operation's
#              span, and against the same archive's ingest rate), on a copy of the benchmark
#              archive (the small set's, from the ingest step) and on each kept scale archive
#              (changed in place; the tags are deleted again at the end, timed); where `--wait`
#              gives up (it exits 1 after 1 s of reindex, as of this writing) the reindex is
#              timed over HTTP instead (POST /v2/extendedquerytags, GET /v2/operations/{id}).
#              Then `find --repeat N` of an equality query on each extended tag against the
#              same query on the core StudyDate it mirrors (study and instance level), goal
#              ratio <= 1.5. On the scale archives also the change feed over HTTP (`dicomfs
#              serve`, webbench's keep-alive client): the first, middle and last page of v1
#              (offset/limit 100) and of v2 (a time window holding the whole feed, offset,
#              limit 200), the last pages also without metadata, and the last 200 entries'
#              own v2 window: median and p95, and the growth from the smallest to the
#              largest scale (goal <= 1.5x). The feed holds one entry per instance of the
#              scale: 1M entries only with the 1M archive (BENCH_SCALES). Uses the archives
#              that exist: run it with (or after) ingest and scales. ~3 min at the default
#              scales once they are built.
#   mount      mountbench.py: the FUSE mount (`dicomfs mount`) against the same work on plain
#              files of the same disk and through a minimal passthrough FUSE (passthrough.c,
#              built here: the goals' anchor). Copy-in: `cp -r` of each set into a fresh
#              archive's mounted inbox/ + `sync DIR` vs the same into the passthrough FUSE
#              (the goal) and vs `cp -r` + `sync` into a plain directory: inst/s, MB/s; also
#              `--sync-close` vs the passthrough's fsync at close (the same durability per
#              close); BENCH_REPS rounds, the median shown; for context fsyncbench's copy with
#              an fsync per file. Reads: `find | xargs cat` of every instance through studies/
#              vs the passthrough FUSE over the same tree (the goal: a mirror of studies/ of
#              hard links to the objects) and over ARCHIVE/objects, and direct over
#              ARCHIVE/objects, warm (median of 5 passes) and cold (kernel caches dropped
#              before each pass, when /proc/sys/vm/drop_caches can be written). Listing:
#              `ls -l` of a 10,000-instance series (ms: the first run, cold; then the median
#              of 5 runs 1.2 s apart, when the mount's 1 s caches have expired, and of 5 back
#              to back; fewer when one run takes seconds) and `ls studies/`, in two archives:
#              that series plus 100 and plus 100,000 one-instance studies (synthetic ~1 KB
#              instances, built once with `dicomfs ingest` and kept: ~1 min the first time),
#              and the growth between them. Skipped without /dev/fuse. ~3-5 min.
#   report     report.py: the table and the JSON.
#
# Usage: run.sh [BUILD_DIR] [STEP...] — STEPs (default: all, or BENCH_STEPS) pick steps in
# the order above; setup and dataset always run (naming dataset is allowed); e.g. `tools/bench/run.sh build mount report`
# (BUILD_DIR may be left out when the first argument is a step: `run.sh mount report`).
#
# Environment:
#   BENCH_WORK=DIR          work dir (default BUILD_DIR/bench-work)
#   BENCH_QUICK=1           smoke run: 25 studies, scales "2000 20000", 10 query runs; mount:
#                           a 2,000-instance series with 100 and 10,000 studies, fewer passes
#   BENCH_STEPS="STEP ..."  the steps to run when none are given as arguments
#   BENCH_SCALES="N ..."    synthetic archive sizes (default "100000 1000000"; "" for none)
#   BENCH_QUERY_RUNS=N      runs per query (default 30)
#   BENCH_REPS=N            runs of each limit, dataset ingest and mount copy-in (default 3; the
#                           table shows the run with the median time)
#   BENCH_QUERY_MODE=M      auto|process|repeat: what the table's query figures are (see
#                           qlat.py; auto = `find --repeat N` when `find --help` has it)
#   BENCH_INGEST_ARGS="..." extra arguments for `dicomfs ingest` (e.g. "--jobs 2")
#   BENCH_WEB=0             skip the web step
#   BENCH_WEB_PEER=0        web step against dicomfs only (no Orthanc)
#   BENCH_WEB_CLIENTS="..." STOW clients (default "webbench curl"; the goals are judged on curl's)
#   BENCH_WEB_RUNS=N        timed QIDO passes and metadata runs (default 100; QUICK 30)
#   BENCH_WEB_WADO_RUNS=N   timed WADO passes (default 3; QUICK 2)
#   BENCH_PROFILE=0         skip the profile step (BENCH_PROFILE_FREQ=HZ, BENCH_PROFILE_KEEP=1: keep perf.data)
#   BENCH_JOURNAL=0         skip the journal step (BENCH_JOURNAL_GB: the image's size, default 8)
#   BENCH_RSS=0             skip the rss step (BENCH_RSS_STUDIES: x4 large instances, default 1000; QUICK 200)
#   BENCH_XQT=0             skip the xqt step
#   BENCH_XQT_REPEAT=N      xqt: `find --repeat N` per round, 3 rounds (default 200; QUICK 50)
#   BENCH_XQT_FEED_RUNS=N   xqt: timed passes over the change-feed pages (default 50; QUICK 20)
#   BENCH_MOUNT=0           skip the mount step
#   BENCH_MOUNT_SERIES=N    instances in the mount step's listed series (default 10000; QUICK 2000)
#   BENCH_MOUNT_STUDIES="FEW MANY"  one-instance studies beside it (default "100 100000";
#                           QUICK "100 10000")
#   BENCH_REBUILD=1         rebuild kept synthetic archives even if they look current
#   BENCH_KEEP_SYNTH_FILES=1 keep the synthetic source files after ingest (default: delete;
#                           they regenerate in seconds)
#
# Disk use (kept between runs, under BENCH_WORK): the dataset ~300 MB; synth-100000 ~0.8 GB;
# synth-1000000 ~8.3 GB (4 GB index, 4 GB objects at a 4 KB block each). While 1M is built,
# also ~4 GB of source files and, as of this writing, a WAL that peaked at ~15 GB: have ~30 GB
# free. Delete BENCH_WORK/synth-* to reclaim; they are rebuilt on the next run (1M: ~8 min).
# The mount step's listing archives, BENCH_WORK/mount/ls-*: ~0.9 GB at the default sizes
# (rebuilt in ~1 min); while it runs, also the two copy-in archives and a plain copy (~0.6 GB).
# The rss step's dataset, BENCH_WORK/rss-dataset-*: ~2.1 GB; stowcurl.py's request bodies,
# BENCH_WORK/stowcurl-cache: ~2.7 GB (both kept). While web runs, every STOW archive of the
# step (~7 GB at 3 rounds); while journal runs, its image (up to BENCH_JOURNAL_GB).
set -uo pipefail

ALL_STEPS="limits ingest queries web profile journal rss scales xqt mount dicomcast report"
is_step() { case " $ALL_STEPS " in *" $1 "*) return 0 ;; esac; return 1; }
BUILD=build
if [ $# -gt 0 ] && ! { is_step "$1" && [ ! -d "$1" ]; }; then BUILD=$1; shift; fi
STEPS=${*:-${BENCH_STEPS:-$ALL_STEPS}}
for step_name in $STEPS; do [ "$step_name" = dataset ] || is_step "$step_name" || { echo "bench: unknown step $step_name (steps: $ALL_STEPS)" >&2; exit 2; }; done
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
BUILD_ARG=$BUILD
BUILD=$(cd "$BUILD" 2>/dev/null && pwd) || { echo "bench: no build dir $BUILD_ARG" >&2; exit 2; }
PY=/usr/bin/python3
WORK=${BENCH_WORK:-$BUILD/bench-work}
BIN=$WORK/bin/dicomfs # a copy of BUILD/dicomfs, made by step_setup
RESULTS=$WORK/results.jsonl
LOGS=$WORK/logs
OUT_JSON=$BUILD/bench-results.json
QUICK=${BENCH_QUICK:-0}
if [ "$QUICK" = 1 ]; then
    DS_ARGS=(--studies 25 --series 4 --small 4 --large 1 --seed 1)
    SCALES=${BENCH_SCALES-2000 20000}
    RUNS=${BENCH_QUERY_RUNS:-10}
else
    DS_ARGS=(--studies 125 --series 4 --small 4 --large 1 --seed 1)
    SCALES=${BENCH_SCALES-100000 1000000}
    RUNS=${BENCH_QUERY_RUNS:-30}
fi
QMODE=${BENCH_QUERY_MODE:-auto}
REPS=${BENCH_REPS:-3}
read -r -a INGEST_ARGS <<<"${BENCH_INGEST_ARGS:-}"
CRASHED=0
LATER_RM=()

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
now_ns() { date +%s%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.6f", (b - a) / 1e9 }'; }
hash_of() { cat "$@" | sha256sum | cut -c1-12; }

# record KEY=VALUE... appends one JSON object to RESULTS (numbers stay numbers;
# KEY:=JSON inserts raw JSON).
record() {
    "$PY" -c '
import json, sys
TEXT = {"loadavg", "date", "host", "kernel", "cpu", "fs", "device", "work", "dicomfs_rev", "binary_sha",
        "ingest_args", "set", "step", "message", "archive", "path", "dir"}
o = {}
for a in sys.argv[1:]:
    k, _, v = a.partition("=")
    if k.endswith(":"):
        o[k[:-1]] = json.loads(v)
        continue
    o[k] = v
    if k not in TEXT:
        for conv in (int, float):
            try:
                o[k] = conv(v)
                break
            except ValueError:
                pass
print(json.dumps(o))' "$@" >>"$RESULTS"
}

fail() { # STEP MESSAGE: a crash-class failure; the run goes on where it can
    CRASHED=1
    log "ERROR in $1: $2"
    record kind=error step="$1" message="$2"
}

warm() { find "$@" -type f -print0 | xargs -0 -r cat >/dev/null; }

# ingest_archive LABEL ARCHIVE SRC... — fresh archive, timed; records kind=ingest.
ingest_archive() {
    local label=$1 arch=$2; shift 2
    local files bytes t0 t1 rc line stored skipped failed idx
    rm -rf "$arch"
    files=$(find "$@" -type f | wc -l)
    bytes=$(find "$@" -type f -printf '%s\n' | awk '{ s += $1 } END { printf "%.0f\n", s }')
    warm "$@"
    sync
    log "ingest $label${RUN:+ ($RUN/$REPS)}: $files files, $((bytes / 1048576)) MB"
    t0=$(now_ns)
    "$BIN" ingest "${INGEST_ARGS[@]}" "$arch" "$@" >/dev/null 2>"$LOGS/ingest-$label.log" &
    local pid=$! sampler wal wal_samples
    # The WAL's peak size while ingesting (a stat every 0.2 s, in the background): it shows
    # whether checkpoints keep up or the WAL grows with the whole ingest.
    # Also the process's peak RSS (VmHWM; the last value read before it exits).
    (
        peak=0 samples=0 hwm=0
        while kill -0 "$pid" 2>/dev/null; do
            w=$(stat -c %s "$arch/index.db-wal" 2>/dev/null || echo 0)
            [ "$w" -gt "$peak" ] && peak=$w
            h=$(awk '/^VmHWM:/ { print $2 }' "/proc/$pid/status" 2>/dev/null)
            [ -n "$h" ] && hwm=$h
            samples=$((samples + 1))
            sleep 0.2
        done
        echo "$peak $samples $hwm" >"$WORK/wal-peak"
    ) &
    sampler=$!
    wait "$pid"
    rc=$?
    t1=$(now_ns)
    wait "$sampler"
    local hwm
    read -r wal wal_samples hwm <"$WORK/wal-peak" || wal=0 wal_samples=0 hwm=0
    line=$(grep -E '^ingest: [0-9]+ stored' "$LOGS/ingest-$label.log" | tail -n1)
    stored=$(sed -nE 's/^ingest: ([0-9]+) stored.*/\1/p' <<<"$line")
    skipped=$(sed -nE 's/.* ([0-9]+) skipped.*/\1/p' <<<"$line")
    failed=$(sed -nE 's/.* ([0-9]+) failed.*/\1/p' <<<"$line")
    if [ "$rc" -ge 2 ] || [ -z "$line" ]; then
        fail "ingest $label" "dicomfs ingest exited $rc; last stderr: $(tail -n3 "$LOGS/ingest-$label.log" | tr '\n' ' ')"
    elif [ "$rc" -ne 0 ] || [ "${failed:-0}" -ne 0 ]; then
        log "ingest $label: $failed failed (see $LOGS/ingest-$label.log)"
    fi
    idx=0
    if [ -f "$arch/index.db" ]; then
        sqlite3 "$arch/index.db" 'PRAGMA wal_checkpoint(TRUNCATE)' >/dev/null 2>&1 ||
            log "checkpoint of $arch/index.db failed"
        idx=$(stat -c %s "$arch/index.db" "$arch/index.db-wal" 2>/dev/null | awk '{ s += $1 } END { printf "%.0f\n", s }')
    fi
    record kind=ingest set="$label" run="${RUN:-1}" files="$files" bytes="$bytes" seconds="$(secs "$t0" "$t1")" \
        exit="$rc" stored="${stored:-0}" skipped="${skipped:-0}" failed="${failed:-0}" \
        peak_wal_bytes="$wal" wal_samples="$wal_samples" peak_rss_kb="${hwm:-0}" index_bytes="$idx" archive_bytes="$(du -sb "$arch" 2>/dev/null | cut -f1)"
}

# query_latency LABEL ARCHIVE QUERIES INSTANCES — records kind=query.
# qlat.py times each query in-process with `find --repeat N` when dicomfs has it (and
# parses its stderr summary), and always as whole processes minus a trivial find's start-up.
query_latency() {
    local label=$1 arch=$2 queries=$3 n=$4 out
    log "queries on $label ($n instances): $RUNS runs each, mode $QMODE"
    if out=$("$PY" "$HERE/qlat.py" --bin "$BIN" --archive "$arch" --queries "$queries" \
        --baseline-archive "$WORK/empty-archive" --runs "$RUNS" --mode "$QMODE" --label "$label"); then
        record kind=query archive="$label" instances="$n" result:="$out"
    else
        fail "queries $label" "qlat.py failed"
    fi
}

# ---- steps --------------------------------------------------------------------------

step_setup() {
    [ -x "$BUILD/dicomfs" ] || { echo "bench: $BUILD/dicomfs not found; build first" >&2; exit 2; }
    mkdir -p "$WORK" "$LOGS" "$WORK/bin"
    : >"$RESULTS"
    local fs
    fs=$(findmnt -n -o FSTYPE -T "$WORK" 2>/dev/null || stat -f -c %T "$WORK")
    record kind=env date="$(date -Is)" host="$(hostname)" kernel="$(uname -r)" \
        cpus="$(nproc)" loadavg="$(cut -d' ' -f1-3 /proc/loadavg)" cpu="$(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n1)" \
        mem_kb="$(awk '/MemTotal/ { print $2 }' /proc/meminfo)" fs="$fs" \
        device="$(df --output=source "$WORK" | tail -n1)" work="$WORK" quick="$QUICK" \
        dicomfs_rev="$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null)$(git -C "$REPO" diff --quiet HEAD 2>/dev/null || echo +dirty)" \
        binary_sha="$(sha256sum "$BUILD/dicomfs" | cut -c1-12)" query_runs="$RUNS" ingest_args="${BENCH_INGEST_ARGS:-}"
    # Measure a private copy: a rebuild during the run must not swap binaries under us.
    cp "$BUILD/dicomfs" "$WORK/bin/dicomfs.tmp" && mv -f "$WORK/bin/dicomfs.tmp" "$BIN" ||
        { echo "bench: cannot copy $BUILD/dicomfs" >&2; exit 2; }
    if [ ! -x "$WORK/bin/fsyncbench" ] || [ "$HERE/fsyncbench.c" -nt "$WORK/bin/fsyncbench" ]; then
        cc -O2 -Wall -o "$WORK/bin/fsyncbench" "$HERE/fsyncbench.c" || { echo "bench: cannot build fsyncbench" >&2; exit 2; }
    fi
    # The baseline archive for process start-up, and the current index schema (a kept
    # synthetic archive with another schema is rebuilt).
    rm -rf "$WORK/empty-archive" "$WORK/empty-dir"
    mkdir -p "$WORK/empty-dir"
    "$BIN" ingest "$WORK/empty-archive" "$WORK/empty-dir" >/dev/null 2>"$LOGS/empty.log"
    local rc=$?
    if [ "$rc" -ge 2 ] || [ ! -f "$WORK/empty-archive/index.db" ]; then
        fail setup "cannot create an empty archive with dicomfs ingest (exit $rc)"
        SCHEMA=unknown
    else
        SCHEMA=$(sqlite3 "$WORK/empty-archive/index.db" .schema | hash_of /dev/stdin)
    fi
}

# py_deps — gen_dataset.py needs numpy, which tools/install-deps.sh does not install
# (python3-pydicom only recommends it, and recommends are left out there).
py_deps() {
    "$PY" -c 'import numpy, pydicom' 2>/dev/null && return 0
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    log "dataset: installing python3-numpy python3-pydicom"
    $sudo apt-get update -qq >"$LOGS/py-apt.log" 2>&1 &&
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends python3-numpy \
            python3-pydicom >>"$LOGS/py-apt.log" 2>&1
}

step_dataset() {
    local key="${DS_ARGS[*]} gen=$(hash_of "$HERE/gen_dataset.py")"
    DS=$WORK/dataset-$(echo "$key" | sha256sum | cut -c1-12)
    if [ -f "$DS/manifest.json" ] && [ "$(cat "$DS/key" 2>/dev/null)" = "$key" ]; then
        log "dataset: reusing $DS"
    else
        log "dataset: generating into $DS (${DS_ARGS[*]})"
        py_deps || log "dataset: cannot install python3-numpy (see $LOGS/py-apt.log)"
        rm -rf "$DS" "$DS.tmp"
        local t0; t0=$(now_ns)
        "$PY" "$HERE/gen_dataset.py" "$DS.tmp" "${DS_ARGS[@]}" >/dev/null || { echo "bench: gen_dataset.py failed" >&2; exit 2; }
        echo "$key" >"$DS.tmp/key"
        mv "$DS.tmp" "$DS"
        log "dataset: generated in $(secs "$t0" "$(now_ns)") s"
    fi
    record kind=dataset dir="$DS" manifest:="$(cat "$DS/manifest.json")"
}

# limits_run SUFFIX DIR — the limits of each set on the file system holding DIR (records
# kind=limit set=small$SUFFIX, large$SUFFIX). Each copy goes to a new directory; all are
# deleted at the end: on ext4 without a journal a new inode is allocated after scanning past
# the inodes deleted in the last 30 s, so a copy made right after deleting the previous one
# pays for each deleted file (the ingest runs are treated the same way).
limits_run() {
    local sfx=$1 dir=$2 set list out r
    mkdir -p "$dir"
    for set in small large; do
        list=$WORK/list-$set.txt
        find "$DS/$set" -type f | sort >"$list"
        warm "$DS/$set"
        for r in $(seq "$REPS"); do
            mkdir -p "$dir/limit-copy-$set-$r"
            sync
            log "limits $set$sfx ($r/$REPS): copy with fsync per file"
            out=$("$WORK/bin/fsyncbench" copy "$dir/limit-copy-$set-$r" "$list") &&
                record kind=limit set="$set$sfx" run="$r" result:="$out" || fail "limits $set$sfx" "fsyncbench copy failed"
            sync
            log "limits $set$sfx ($r/$REPS): sequential write, one fdatasync"
            out=$("$WORK/bin/fsyncbench" seq "$dir/limit-seq-$set-$r.bin" "$list") &&
                record kind=limit set="$set$sfx" run="$r" result:="$out" || fail "limits $set$sfx" "fsyncbench seq failed"
            sync
        done
    done
    rm -rf "$dir"/limit-copy-* "$dir"/limit-seq-*
}

step_limits() { limits_run "" "$WORK/limits"; }

# ingest_runs SUFFIX DIR — REPS ingests of each set, each into a new archive under DIR
# (records kind=ingest set=small$SUFFIX, large$SUFFIX); deleted at the end (see limits_run).
ingest_runs() {
    local sfx=$1 dir=$2 r
    mkdir -p "$dir"
    for r in $(seq "$REPS"); do
        RUN=$r ingest_archive "small$sfx" "$dir/small-$r" "$DS/small"
        RUN=$r ingest_archive "large$sfx" "$dir/large-$r" "$DS/large"
    done
}

step_ingest() {
    ingest_runs "" "$WORK/ingest-runs"
    # The last small archive stays: it is the query archive.
    rm -rf "$WORK/archive-small"
    mv "$WORK/ingest-runs/small-$REPS" "$WORK/archive-small" 2>/dev/null
    rm -rf "$WORK/ingest-runs"
}

step_queries() {
    local n
    n=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["sets"]["small"]["files"])' "$DS/manifest.json")
    query_latency bench "$WORK/archive-small" "$DS/queries.json" "$n"
}

# web_deps — the web step's own install check: Orthanc and its DICOMweb plugin (the peer)
# and libcurl's headers (webbench.c). Not in tools/install-deps.sh: dicomfs does not need
# them. On a machine with an init system the orthanc package also enables its system service
# (ports 8042/4242); the bench neither uses nor touches it.
web_deps() {
    local p missing=() sudo=""
    for p in orthanc orthanc-dicomweb libcurl4-openssl-dev; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    log "web: installing ${missing[*]}"
    $sudo apt-get update -qq >"$LOGS/web-apt.log" 2>&1 &&
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" \
            >>"$LOGS/web-apt.log" 2>&1
}

# synth_key N — what a kept WORK/synth-N/ready must hold for the archive to be reused.
synth_key() { echo "n=$1 gen=$(hash_of "$HERE/gen_synth.py") schema=$SCHEMA"; }

# synth_archive N — builds (or reuses) WORK/synth-N/archive; records kind=ingest.
synth_archive() {
    local n=$1 dir=$WORK/synth-$1
    local key; key=$(synth_key "$n")
    if [ "${BENCH_REBUILD:-0}" != 1 ] && [ -f "$dir/ready" ] && [ "$(cat "$dir/ready")" = "$key" ]; then
        log "scale $n: reusing $dir/archive (built $(stat -c %y "$dir/ready" | cut -d. -f1))"
        "$PY" -c 'import json,sys; o=json.load(open(sys.argv[1])); o["reused"]=True; print(json.dumps(o))' \
            "$dir/ingest.json" >>"$RESULTS"
        return 0
    fi
    local need_kb=$((n * 10)) avail_kb
    avail_kb=$(df --output=avail -k "$WORK" | tail -n1)
    if [ "$avail_kb" -lt "$need_kb" ]; then
        fail "scale $n" "needs ~$((need_kb / 1048576)) GB free, have $((avail_kb / 1048576)) GB"
        return 1
    fi
    rm -rf "$dir" && mkdir -p "$dir"
    log "scale $n: generating $n synthetic instances"
    local t0; t0=$(now_ns)
    "$PY" "$HERE/gen_synth.py" "$dir" "$n" >/dev/null || { fail "scale $n" "gen_synth.py failed"; return 1; }
    log "scale $n: generated in $(secs "$t0" "$(now_ns)") s"
    local before; before=$(wc -l <"$RESULTS")
    ingest_archive "synth-$n" "$dir/archive" "$dir/files"
    tail -n +"$((before + 1))" "$RESULTS" | grep '"kind": "ingest"' | tail -n1 >"$dir/ingest.json"
    # Deleting a million files takes minutes on this disk (mounted with discard): done at
    # the end of the run, out of the way of the measurements.
    [ "${BENCH_KEEP_SYNTH_FILES:-0}" = 1 ] || LATER_RM+=("$dir/files")
    if grep -q '"kind": "error"' <(tail -n +"$((before + 1))" "$RESULTS"); then
        return 1
    fi
    echo "$key" >"$dir/ready"
}

# step_profile — profile.py: a CPU profile (perf record -e cpu-clock, DWARF call graphs) of
# CLI ingest and of STOW (50/request, 2 curl clients) of the small set, split into buckets
# (parse, validation, metadata JSON, index values, SQLite, file I/O, fsync, HTTP, ...), with
# the unprofiled CPU per instance and the fsync wait (strace -c -w). Needs perf (linux-perf);
# skipped with a message without it. BENCH_PROFILE_FREQ (default 1000 Hz), BENCH_PROFILE_KEEP=1
# keeps WORK/profile/*.perf.data for `perf report -i`.
step_profile() {
    if [ "${BENCH_PROFILE:-1}" = 0 ]; then
        log "profile: skipped (BENCH_PROFILE=0)"
        return 0
    fi
    if ! command -v perf >/dev/null || ! perf record -q -e cpu-clock -o /dev/null -- true >/dev/null 2>&1; then
        log "profile: skipped (perf missing or not allowed: apt-get install linux-perf; perf_event_paranoid)"
        record kind=profile result:='{"skipped": "perf missing or not allowed"}'
        return 0
    fi
    local out=$WORK/profile-result.json rc keep=()
    [ "${BENCH_PROFILE_KEEP:-0}" = 1 ] && keep=(--keep-data)
    rm -rf "$WORK/profile"
    log "profile: CLI ingest and STOW (curl, 50/request) of the small set under perf"
    "$PY" "$HERE/profile.py" --bin "$BIN" --dataset "$DS" --work "$WORK/profile" --logs "$LOGS" \
        --freq "${BENCH_PROFILE_FREQ:-1000}" "${keep[@]}" >"$out"
    rc=$?
    if [ -s "$out" ]; then
        "$PY" -c 'import json, sys; print(json.dumps({"kind": "profile", "result": json.load(open(sys.argv[1]))}))' \
            "$out" >>"$RESULTS" || fail profile "profile.py printed no JSON"
    fi
    [ "$rc" = 0 ] || fail profile "profile.py exited $rc (see $LOGS/profile-*.log)"
}

# journal_cleanup — unmounts and removes the journal step's loop-mounted image.
journal_cleanup() {
    local jd=$WORK/journal
    if mountpoint -q "$jd/mnt" 2>/dev/null; then
        umount "$jd/mnt" 2>/dev/null || umount -l "$jd/mnt"
    fi
    rm -f "$jd/ext4.img"
}

# step_journal — the limits, CLI ingest and STOW (curl, dicomfs and Orthanc) again on a
# journaled ext4 (mkfs.ext4 defaults: has_journal, data=ordered) in a loop-mounted sparse image
# under WORK/journal (made here, removed at the end; BENCH_JOURNAL_GB, default 8), as most
# users' disks are: the machine's root may run without a journal (its new inodes then pay
# for every inode deleted in the last 30 s). Records set=small-journal/large-journal and
# kind=web_journal. Skipped with a message without root, losetup or mkfs.ext4. The image
# lives on the root disk, so its syncs end as syncs of the image file there.
step_journal() {
    if [ "${BENCH_JOURNAL:-1}" = 0 ]; then
        log "journal: skipped (BENCH_JOURNAL=0)"
        return 0
    fi
    local jd=$WORK/journal why="" out=$WORK/web-journal-result.json rc servers="dicomfs orthanc"
    if [ "$(id -u)" -ne 0 ]; then why="not root"
    elif ! command -v mkfs.ext4 >/dev/null || ! command -v losetup >/dev/null; then why="no mkfs.ext4 or losetup"
    elif [ ! -e /dev/loop-control ]; then why="no /dev/loop-control"
    fi
    if [ -z "$why" ]; then
        journal_cleanup
        mkdir -p "$jd/mnt"
        truncate -s "${BENCH_JOURNAL_GB:-8}G" "$jd/ext4.img" &&
            mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$jd/ext4.img" >"$LOGS/journal-mkfs.log" 2>&1 &&
            mount -o loop "$jd/ext4.img" "$jd/mnt" 2>>"$LOGS/journal-mkfs.log" || why="cannot make or loop-mount an ext4 image (see $LOGS/journal-mkfs.log)"
    fi
    if [ -n "$why" ]; then
        log "journal: skipped ($why)"
        record kind=journal skipped="$why"
        journal_cleanup
        return 0
    fi
    trap journal_cleanup EXIT
    record kind=journal fs="$(findmnt -n -o FSTYPE,OPTIONS "$jd/mnt")" \
        features="$(dumpe2fs -h "$jd/ext4.img" 2>/dev/null | sed -n 's/^Filesystem features: *//p')"
    log "journal: journaled ext4 at $jd/mnt ($(findmnt -n -o OPTIONS "$jd/mnt"))"
    limits_run -journal "$jd/mnt/limits"
    ingest_runs -journal "$jd/mnt/ingest"
    rm -rf "$jd/mnt/ingest"
    if [ "${BENCH_WEB:-1}" != 0 ]; then
        [ "${BENCH_WEB_PEER:-1}" = 0 ] && servers=dicomfs
        { [ ! -x /usr/sbin/Orthanc ] || [ ! -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so ]; } && servers=dicomfs
        log "journal: STOW-RS with curl, servers: $servers"
        "$PY" "$HERE/web.py" --bin "$BIN" --client "$WORK/bin/webbench" --dataset "$DS" --work "$jd/mnt/web" \
            --logs "$LOGS" --servers "$servers" --stow-reps "$REPS" --stow-clients curl --stow-only \
            --curl-cache "$WORK/stowcurl-cache" >"$out"
        rc=$?
        if [ -s "$out" ]; then
            "$PY" -c 'import json, sys; print(json.dumps({"kind": "web_journal", "result": json.load(open(sys.argv[1]))}))' \
                "$out" >>"$RESULTS" || fail journal "web.py printed no JSON"
        fi
        [ "$rc" = 0 ] || fail journal "web.py exited $rc (see $LOGS/web-*.log)"
    fi
    journal_cleanup
    trap - EXIT
}

# step_rss — peak RSS while storing ~2 GB: a set of 4,000 large instances (~2.1 GB; made once
# by gen_dataset.py with another seed, kept under WORK/rss-dataset-*) ingested with
# `dicomfs ingest` into a fresh archive, then STOWed (50/request, 2 curl clients) into a fresh
# `dicomfs serve`. The process's VmHWM is read every 0.2 s; growth = the peak over the run
# minus the value after the first 10% of the instances (ingest: after start-up, the first
# sample; STOW: before the first request). Goal: growth < 64 MB. BENCH_RSS_STUDIES (default
# 1000; QUICK 200) x 4 series x 1 large instance.
step_rss() {
    if [ "${BENCH_RSS:-1}" = 0 ]; then
        log "rss: skipped (BENCH_RSS=0)"
        return 0
    fi
    local studies key dir out=$WORK/rss-result.json rc
    if [ "$QUICK" = 1 ]; then studies=${BENCH_RSS_STUDIES:-200}; else studies=${BENCH_RSS_STUDIES:-1000}; fi
    key="studies=$studies gen=$(hash_of "$HERE/gen_dataset.py")"
    dir=$WORK/rss-dataset-$(echo "$key" | sha256sum | cut -c1-12)
    if [ ! -f "$dir/manifest.json" ] || [ "$(cat "$dir/key" 2>/dev/null)" != "$key" ]; then
        rm -rf "$WORK"/rss-dataset-*
        log "rss: generating $((studies * 4)) large instances into $dir"
        "$PY" "$HERE/gen_dataset.py" "$dir.tmp" --studies "$studies" --series 4 --small 0 --large 1 --seed 2 \
            >/dev/null || { fail rss "gen_dataset.py failed"; rm -rf "$dir.tmp"; return 1; }
        echo "$key" >"$dir.tmp/key"
        mv "$dir.tmp" "$dir"
    fi
    log "rss: peak RSS of dicomfs ingest and dicomfs serve (STOW) storing $(du -sh "$dir/large" | cut -f1) of large instances"
    "$PY" "$HERE/rss.py" --bin "$BIN" --src "$dir/large" --work "$WORK/rss" --logs "$LOGS" \
        --curl-cache "$WORK/stowcurl-cache" >"$out"
    rc=$?
    if [ -s "$out" ]; then
        "$PY" -c 'import json, sys; print(json.dumps({"kind": "rss", "result": json.load(open(sys.argv[1]))}))' \
            "$out" >>"$RESULTS" || fail rss "rss.py printed no JSON"
    fi
    [ "$rc" = 0 ] || fail rss "rss.py exited $rc (see $LOGS/rss-*.log)"
}

step_scales() {
    local n
    for n in $SCALES; do
        synth_archive "$n" || continue
        query_latency "synth-$n" "$WORK/synth-$n/archive" "$WORK/synth-$n/queries.json" "$n"
    done
}

# build_webbench — WORK/bin/webbench from webbench.c (libcurl) when missing or older.
build_webbench() {
    if [ ! -x "$WORK/bin/webbench" ] || [ "$HERE/webbench.c" -nt "$WORK/bin/webbench" ]; then
        cc -O2 -Wall -o "$WORK/bin/webbench" "$HERE/webbench.c" -lcurl -lpthread 2>"$LOGS/webbench-cc.log"
    fi
}

step_web() {
    if [ "${BENCH_WEB:-1}" = 0 ]; then
        log "web: skipped (BENCH_WEB=0)"
        return 0
    fi
    local servers="dicomfs orthanc" runs wruns out=$WORK/web-result.json rc
    [ "${BENCH_WEB_PEER:-1}" = 0 ] && servers=dicomfs
    if ! web_deps; then
        fail web "cannot install orthanc, orthanc-dicomweb, libcurl4-openssl-dev (see $LOGS/web-apt.log)"
        dpkg-query -W -f='${Status}' libcurl4-openssl-dev 2>/dev/null | grep -q "install ok installed" || return 1
        servers=dicomfs
    fi
    if [ "$servers" != dicomfs ] && { [ ! -x /usr/sbin/Orthanc ] || [ ! -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so ]; }; then
        fail web "Orthanc or its DICOMweb plugin is missing; measuring dicomfs alone"
        servers=dicomfs
    fi
    build_webbench || { fail web "cannot build webbench.c"; return 1; }
    if [ "$QUICK" = 1 ]; then runs=${BENCH_WEB_RUNS:-30} wruns=${BENCH_WEB_WADO_RUNS:-2}; else
        runs=${BENCH_WEB_RUNS:-100} wruns=${BENCH_WEB_WADO_RUNS:-3}; fi
    log "web: DICOMweb over HTTP, servers: $servers"
    "$PY" "$HERE/web.py" --bin "$BIN" --client "$WORK/bin/webbench" --dataset "$DS" --work "$WORK/web" \
        --logs "$LOGS" --servers "$servers" --qido-runs "$runs" --meta-runs "$runs" --wado-runs "$wruns" \
        --stow-reps "$REPS" --stow-clients "${BENCH_WEB_CLIENTS:-webbench curl}" \
        --curl-cache "$WORK/stowcurl-cache" >"$out"
    rc=$?
    # Appended from the file, not through record's argv (per-request times can be long).
    if [ -s "$out" ]; then
        "$PY" -c 'import json, sys; print(json.dumps({"kind": "web", "result": json.load(open(sys.argv[1]))}))' \
            "$out" >>"$RESULTS" || fail web "web.py printed no JSON"
    fi
    [ "$rc" = 0 ] || fail web "web.py exited $rc (see above and $LOGS/web-*.log)"
}

step_xqt() {
    if [ "${BENCH_XQT:-1}" = 0 ]; then
        log "xqt: skipped (BENCH_XQT=0)"
        return 0
    fi
    local args=() n dir client="" repeat fruns out=$WORK/xqt-result.json rc copy=$WORK/xqt/archive-small
    rm -rf "$WORK/xqt" && mkdir -p "$WORK/xqt"
    if [ -f "$WORK/archive-small/index.db" ]; then
        # A copy: the ingest step's archive stays as the queries step measured it.
        n=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["sets"]["small"]["files"])' "$DS/manifest.json")
        if cp -a "$WORK/archive-small" "$copy" 2>"$LOGS/xqt-copy.log"; then
            rm -f "$copy/lock" "$copy/reindex.lock"
            args+=(--archive "small:bench:$n:$copy")
        else
            fail xqt "cannot copy $WORK/archive-small (see $LOGS/xqt-copy.log)"
        fi
    else
        log "xqt: no benchmark archive ($WORK/archive-small): run the ingest step first"
    fi
    for n in $SCALES; do
        dir=$WORK/synth-$n
        if [ -f "$dir/ready" ] && [ "$(cat "$dir/ready")" = "$(synth_key "$n")" ]; then
            args+=(--archive "synth-$n:synth:$n:$dir/archive:$dir/ingest.json")
        else
            log "xqt: no current scale archive for $n (run the scales step first)"
        fi
    done
    if [ ${#args[@]} -eq 0 ]; then
        log "xqt: no archive to measure"
        return 0
    fi
    if build_webbench; then client=$WORK/bin/webbench; else
        log "xqt: cannot build webbench.c (see $LOGS/webbench-cc.log); the change feed is timed with Python's http.client"
    fi
    if [ "$QUICK" = 1 ]; then repeat=${BENCH_XQT_REPEAT:-50} fruns=${BENCH_XQT_FEED_RUNS:-20}; else
        repeat=${BENCH_XQT_REPEAT:-200} fruns=${BENCH_XQT_FEED_RUNS:-50}; fi
    log "xqt: reindex, QIDO on extended tags, change feed ($((${#args[@]} / 2)) archives)"
    "$PY" "$HERE/xqt.py" --bin "$BIN" --work "$WORK/xqt" --logs "$LOGS" --client "$client" \
        --repeat "$repeat" --feed-runs "$fruns" "${args[@]}" >"$out"
    rc=$?
    if [ -s "$out" ]; then
        "$PY" -c 'import json, sys; print(json.dumps({"kind": "xqt", "result": json.load(open(sys.argv[1]))}))' \
            "$out" >>"$RESULTS" || fail xqt "xqt.py printed no JSON"
    fi
    [ "$rc" = 0 ] || fail xqt "xqt.py exited $rc (see above and $LOGS/xqt-*.log)"
    rm -rf "$WORK/xqt"
}

# mount_cleanup — unmounts whatever the mount step left mounted (mountbench.py unmounts
# its own mounts; this is for a run that was killed).
mount_cleanup() {
    local mp
    for mp in "$WORK"/mount/mp; do
        if mountpoint -q "$mp" 2>/dev/null; then
            log "mount: unmounting a leftover mount at $mp"
            fusermount3 -u "$mp" 2>/dev/null || fusermount3 -uz "$mp"
        fi
    done
}

step_mount() {
    if [ "${BENCH_MOUNT:-1}" = 0 ]; then
        log "mount: skipped (BENCH_MOUNT=0)"
        return 0
    fi
    if [ ! -c /dev/fuse ] || ! command -v fusermount3 >/dev/null; then
        log "mount: skipped (no /dev/fuse or no fusermount3)"
        return 0
    fi
    local series studies passes cold lsruns out=$WORK/mount-result.json rc
    if [ "$QUICK" = 1 ]; then
        series=${BENCH_MOUNT_SERIES:-2000} studies=${BENCH_MOUNT_STUDIES:-100 10000} passes=3 cold=1 lsruns=3
    else
        series=${BENCH_MOUNT_SERIES:-10000} studies=${BENCH_MOUNT_STUDIES:-100 100000} passes=5 cold=3 lsruns=5
    fi
    mount_cleanup
    trap mount_cleanup EXIT
    log "mount: copy-in, reads, listing (series $series, studies $studies)"
    # The anchor: a minimal passthrough FUSE (same libfuse, same options), built here.
    local pt=()
    if [ ! -x "$WORK/bin/passthrough" ] || [ "$HERE/passthrough.c" -nt "$WORK/bin/passthrough" ]; then
        cc -O2 -Wall -o "$WORK/bin/passthrough" "$HERE/passthrough.c" $(pkg-config --cflags --libs fuse3) \
            2>"$LOGS/passthrough-cc.log" || log "mount: cannot build passthrough.c (see $LOGS/passthrough-cc.log)"
    fi
    [ -x "$WORK/bin/passthrough" ] && pt=(--passthrough "$WORK/bin/passthrough")
    "$PY" "$HERE/mountbench.py" --bin "$BIN" --dataset "$DS" --work "$WORK/mount" --logs "$LOGS" \
        --schema "$SCHEMA" --reps "$REPS" --read-passes "$passes" --cold-passes "$cold" --ls-runs "$lsruns" \
        --series "$series" --studies "$studies" --fsyncbench "$WORK/bin/fsyncbench" "${pt[@]}" \
        $([ "${BENCH_REBUILD:-0}" = 1 ] && echo --rebuild) >"$out"
    rc=$?
    mount_cleanup
    trap - EXIT
    if [ -s "$out" ]; then
        "$PY" -c 'import json, sys; print(json.dumps({"kind": "mount", "result": json.load(open(sys.argv[1]))}))' \
            "$out" >>"$RESULTS" || fail mount "mountbench.py printed no JSON"
    fi
    [ "$rc" = 0 ] || fail mount "mountbench.py exited $rc (see above and $LOGS/mount-*.log)"
}

# step_dicomcast — dicomcast.py (issue 10): the sync rate (entries/s) of `dicomcast --once`
# over the small set against the FHIR R4 server of tests/fhir (npm @medplum/fhir-router in
# memory; `npm ci` there the first time), and the lag from STOW to the ImagingStudy being
# visible (p50/p95) while STOW runs at half that rate. No goal in the issue: figures only.
# BENCH_DICOMCAST=0 skips it; needs node and npm. ~2 min at the default size.
step_dicomcast() {
    if [ "${BENCH_DICOMCAST:-1}" = 0 ]; then
        log "dicomcast: skipped (BENCH_DICOMCAST=0)"
        return 0
    fi
    [ -x "$BUILD/dicomcast" ] || { fail dicomcast "no $BUILD/dicomcast (build the dicomcast target)"; return 1; }
    local out=$WORK/dicomcast-result.json rc
    log "dicomcast: sync rate and STOW-to-FHIR lag"
    "$PY" "$HERE/dicomcast.py" --dicomfs "$BIN" --dicomcast "$BUILD/dicomcast" --dataset "$DS" \
        --work "$WORK/dicomcast" >"$out" 2>"$LOGS/dicomcast.log"
    rc=$?
    if [ -s "$out" ]; then
        "$PY" -c 'import json, sys; print(json.dumps({"kind": "dicomcast", "result": json.load(open(sys.argv[1]))}))' \
            "$out" >>"$RESULTS" || fail dicomcast "dicomcast.py printed no JSON"
    fi
    [ "$rc" = 0 ] || fail dicomcast "dicomcast.py exited $rc (see $LOGS/dicomcast.log)"
}

step_report() {
    local d
    for d in "$WORK"/dataset-* "$WORK"/archive-small "$WORK"/synth-*/archive "$WORK"/mount/ls-*/archive; do
        [ -e "$d" ] && record kind=disk path="$d" bytes="$(du -s -B1 "$d" | cut -f1)"
    done
    "$PY" "$HERE/report.py" "$RESULTS" "$OUT_JSON" || CRASHED=1
}

step_setup
step_dataset
for step_name in $ALL_STEPS; do # in this order, whatever the order asked
    case " $STEPS " in *" $step_name "*) "step_$step_name" ;; esac
done
if [ ${#LATER_RM[@]} -gt 0 ]; then
    log "removing synthetic source files: ${LATER_RM[*]}"
    rm -rf "${LATER_RM[@]}"
fi
[ "$CRASHED" = 0 ] || { log "a step crashed; see above and $LOGS"; exit 1; }
exit 0
