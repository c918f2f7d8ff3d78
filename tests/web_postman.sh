#!/bin/bash
# End-to-end: the Postman collection tests/postman/dicomfs.postman_collection.json, run by
# newman (pinned in tests/postman/package-lock.json) against `dicomfs serve` on a fresh
# archive. Every request's tests must pass; the exit status is newman's.
#
#   DICOMFS  the dicomfs binary        SCRATCH  a private directory (emptied here)
#   TESTS    the tests source directory
#
# Needs node and npm (Debian: nodejs, npm) and pydicom (python3-pydicom). newman is
# installed into tests/postman/node_modules by `npm ci` the first time.
set -u

PY=/usr/bin/python3
: "${DICOMFS:?DICOMFS must name the dicomfs binary}"
TESTS=${TESTS:-$(cd "$(dirname "$0")" && pwd)}
SCRATCH=${SCRATCH:-/tmp/dicomfs-test-web_postman}
POSTMAN=$TESTS/postman
rm -rf "$SCRATCH" && mkdir -p "$SCRATCH" || exit 1
DATA=$SCRATCH/data
ARCHIVE=$SCRATCH/archive

die() { echo "web_postman: $*" >&2; exit 1; }

# ---- newman ---------------------------------------------------------------------------
command -v node >/dev/null && command -v npm >/dev/null ||
    die "node and npm are needed to run newman; install them (Debian: apt-get install nodejs npm)"
NEWMAN=$POSTMAN/node_modules/.bin/newman
if [ ! -x "$NEWMAN" ]; then
    # A lock directory keeps two concurrent runs (ctest -j) from installing at once.
    lock=$POSTMAN/.npm-ci.lock
    for _ in $(seq 300); do mkdir "$lock" 2>/dev/null && break; sleep 1; done
    if [ ! -x "$NEWMAN" ]; then
        (cd "$POSTMAN" && npm ci --no-audit --no-fund --loglevel=error >"$SCRATCH/npm-ci.log" 2>&1)
        rc=$?
        rmdir "$lock" 2>/dev/null
        [ $rc -eq 0 ] || { cat "$SCRATCH/npm-ci.log" >&2; die "npm ci in $POSTMAN failed"; }
    else
        rmdir "$lock" 2>/dev/null
    fi
fi
[ -x "$NEWMAN" ] || die "newman is missing from $POSTMAN/node_modules after npm ci"

# ---- The request bodies -----------------------------------------------------------------
"$PY" "$POSTMAN/make_data.py" "$DATA" || die "generating the DICOM files failed"

# ---- The server -------------------------------------------------------------------------
SERVER_PID=
SERVER_RC=0
stop_server() {
    [ -n "$SERVER_PID" ] || return 0
    if kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null
        for _ in $(seq 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$SERVER_PID" 2>/dev/null && kill -KILL "$SERVER_PID" 2>/dev/null
    fi
    wait "$SERVER_PID" 2>/dev/null
    SERVER_RC=$?
    SERVER_PID=
}
trap stop_server EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM

# --strict: the collection checks the reference service's exact answers, refusals included.
"$DICOMFS" serve "$ARCHIVE" --http 127.0.0.1:0 --strict >"$SCRATCH/serve.out" 2>"$SCRATCH/serve.err" &
SERVER_PID=$!
URL=
for _ in $(seq 300); do
    URL=$(sed -n 's/^dicomfs: serving .* at \(http:\/\/[0-9.]*:[0-9]*\)$/\1/p' "$SCRATCH/serve.out")
    [ -n "$URL" ] && break
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
done
if [ -z "$URL" ]; then
    cat "$SCRATCH/serve.out" "$SCRATCH/serve.err" >&2
    die "dicomfs serve did not start"
fi
echo "# dicomfs serve at $URL, bodies in $DATA"

# ---- newman -----------------------------------------------------------------------------
# newman runs in a few seconds; the timeout only keeps a hung run from holding ctest for
# its full 600 s.
timeout -k 5 120 "$NEWMAN" run "$POSTMAN/dicomfs.postman_collection.json" \
    --environment "$POSTMAN/dicomfs.postman_environment.json" \
    --env-var "baseUrl=$URL" \
    --working-dir "$DATA" --no-insecure-file-read \
    --reporters cli --disable-unicode --color off \
    --timeout-request 30000
status=$?
[ $status -eq 124 ] && echo "web_postman: newman did not finish within 120 s" >&2

# A server that died during the run (a crash, a sanitizer report) or that does not stop
# cleanly on SIGTERM fails the test too.
died=false
kill -0 "$SERVER_PID" 2>/dev/null || died=true
stop_server
if $died || [ $SERVER_RC -ne 0 ]; then
    if $died; then
        echo "web_postman: dicomfs serve exited during the run (status $SERVER_RC):" >&2
    else
        echo "web_postman: dicomfs serve exited with status $SERVER_RC on SIGTERM:" >&2
    fi
    cat "$SCRATCH/serve.err" >&2
    [ $status -eq 0 ] && status=1
fi
exit $status
