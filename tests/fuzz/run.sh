#!/usr/bin/env bash
# run.sh — builds and runs the libFuzzer targets of tests/fuzz (README.md there).
#   run.sh build BUILD               configure BUILD with clang-14 (-DDICOMFS_FUZZ=ON), build them
#   run.sh fuzz BUILD SECONDS [T..]  each target (or T..) SECONDS in turn, niced: new inputs go to
#                                    BUILD/fuzz-work/<name>/, crashes to BUILD/fuzz-crashes/<name>/
#   run.sh ci BUILD [SECONDS]        replay every regression, then each target SECONDS (default 30)
#                                    on the stored corpus, two at a time; any crash fails
#   run.sh merge BUILD [T..]         add the work corpus' inputs with new coverage to
#                                    tests/fuzz/corpus/<name>/ (-merge=1)
#   run.sh seed BUILD RAW            minimise raw seeds (seeds.py RAW) into tests/fuzz/corpus/
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
targets=(multipart mediatype params jwt qido ingest xqt fspath)
# DCMTK allocates an element's declared length before reading it: a 5 KB file that declares
# 3 GB costs address space that is never touched (RSS stays ~20 MB; `dicomfs ingest` fails it
# cleanly). libFuzzer's malloc limit (the RSS limit, 2 GB, by default) would call that an
# out-of-memory; the RSS limit still catches memory really used.
limits=(-rss_limit_mb=2048 -malloc_limit_mb=8192)
# CI runs a fixed number of inputs per target (10-25 s each on a quiet 2-core machine), from
# a fixed seed. The targets are not quite deterministic (timestamps, the store's commit
# thread), so coverage, and with it the mutations, drift a little between runs: a red CI can
# be a new finding.
# It is a real bug all the same: fix it and keep the input as a regression.
ci_runs() {
  case $1 in
    multipart) echo 900000 ;; mediatype) echo 1800000 ;; params) echo 16000 ;; jwt) echo 45000 ;;
    qido) echo 12000 ;; ingest) echo 18000 ;; xqt) echo 120000 ;; fspath) echo 150000 ;; *) echo 30000 ;;
  esac
}
mode=${1:?mode}
build=${2:?build directory}
case "$build" in /*) ;; *) build="$src/$build" ;; esac
bin="$build/tests/fuzz"

export ASAN_OPTIONS="detect_leaks=1:allocator_may_return_null=1:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
export LSAN_OPTIONS="suppressions=$src/tests/lsan.supp"

# The last status line of a libFuzzer log: "execs N cov N ft N corpus N/size exec/s N".
summary() {
  local log=$1 name=$2 line execs
  line=$(grep -a -E '^#[0-9]+' "$log" | tail -1)
  execs=$(grep -a 'stat::number_of_executed_units' "$log" | awk '{print $2}')
  printf '%-10s execs %s %s\n' "$name" "${execs:-?}" \
    "$(sed -E 's/^#[0-9]+[[:space:]]+[A-Z]+[[:space:]]+//; s/ lim: [0-9]+//; s/ rss: .*//' <<<"$line")"
}

case "$mode" in
build)
  cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDICOMFS_FUZZ=ON \
    -DCMAKE_C_COMPILER=clang-14 -DCMAKE_CXX_COMPILER=clang++-14 >/dev/null || exit 1
  cmake --build "$build" -j "${JOBS:-$(nproc)}" --target fuzz_all 2>&1 | grep -E 'error|Error' ; exit "${PIPESTATUS[0]}"
  ;;
fuzz)
  secs=${3:?seconds}; shift 3
  [ $# -gt 0 ] && targets=("$@")
  rc=0
  for t in "${targets[@]}"; do
    mkdir -p "$build/fuzz-work/$t" "$build/fuzz-crashes/$t" "$build/fuzz-logs"
    log="$build/fuzz-logs/$t.log"
    nice -n 10 "$bin/fuzz_$t" "${limits[@]}" -max_total_time="$secs" -timeout=30 -print_final_stats=1 \
      -artifact_prefix="$build/fuzz-crashes/$t/" "$build/fuzz-work/$t" "$here/corpus/$t" \
      $( [ -d "$here/regressions/$t" ] && echo "$here/regressions/$t" ) >"$log" 2>&1 || rc=1
    summary "$log" "$t"
    ls "$build/fuzz-crashes/$t" | sed "s|^|  crash: $build/fuzz-crashes/$t/|"
  done
  exit $rc
  ;;
ci)
  secs=${3:-30}
  rc=0
  for t in "${targets[@]}"; do # regressions first: each must now pass
    [ -d "$here/regressions/$t" ] || continue
    if ! "$bin/fuzz_$t" "${limits[@]}" -runs=1 "$here/regressions/$t"/* >"$build/fuzz-ci-$t-replay.log" 2>&1; then
      echo "fuzz $t: a regression input fails again:"; tail -30 "$build/fuzz-ci-$t-replay.log"; rc=1
    fi
  done
  run_one() {
    local t=$1 work="$build/fuzz-ci/$t" log="$build/fuzz-ci-$t.log"
    rm -rf "$work" && mkdir -p "$work/new" "$work/crashes"
    # A fixed seed and a fixed number of runs (ci_runs); SECONDS only bounds a slow machine.
    # make fuzz explores afresh each time.
    "$bin/fuzz_$t" "${limits[@]}" -seed=1 -runs="$(ci_runs "$t")" -max_total_time="$((secs * 3))" -timeout=20 \
      -print_final_stats=1 -artifact_prefix="$work/crashes/" \
      "$work/new" "$here/corpus/$t" $( [ -d "$here/regressions/$t" ] && echo "$here/regressions/$t" ) >"$log" 2>&1
    local r=$?
    if [ $r -ne 0 ]; then
      echo "fuzz $t: FAILED (log $log):"; grep -a -A25 -m1 -E 'ERROR|invariant|SUMMARY' "$log"
      ls "$work/crashes" | sed "s|^|  input: $work/crashes/|"
      echo "  add the input to tests/fuzz/regressions/$t/ once fixed"
    else
      summary "$log" "$t"
    fi
    return $r
  }
  pids=()
  for t in "${targets[@]}"; do
    run_one "$t" & pids+=($!)
    if [ ${#pids[@]} -eq 2 ]; then
      wait "${pids[0]}" || rc=1; pids=("${pids[1]}")
    fi
  done
  for p in "${pids[@]}"; do wait "$p" || rc=1; done
  exit $rc
  ;;
merge)
  shift 2
  [ $# -gt 0 ] && targets=("$@")
  for t in "${targets[@]}"; do
    [ -d "$build/fuzz-work/$t" ] || continue
    mkdir -p "$here/corpus/$t"
    "$bin/fuzz_$t" -merge=1 "$here/corpus/$t" "$build/fuzz-work/$t" 2>&1 | grep -a 'MERGE-OUTER: [0-9]* new files'
  done
  ;;
seed)
  raw=${3:?raw seed directory}
  for t in "${targets[@]}"; do
    mkdir -p "$here/corpus/$t"
    "$bin/fuzz_$t" -merge=1 "$here/corpus/$t" "$raw/$t" 2>&1 | grep -a 'MERGE-OUTER: [0-9]* new files'
  done
  ;;
*) echo "usage: see the top of $0" >&2; exit 2 ;;
esac
