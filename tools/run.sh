#!/bin/bash
# run.sh — what `make run` does: store what the inbox holds, then serve the archive over
# DICOMweb and, where FUSE is available, mount it too, until Ctrl-C (or SIGTERM).
#
#   tools/run.sh DICOMFS ARCHIVE INBOX MOUNT HOST:PORT [SERVE OR MOUNT OPTION...]
#
# Files the archive refuses (not DICOM, invalid) are reported and do not stop it: the
# inbox of a CD has its README. An archive that cannot be opened does stop it. A mount
# that a stopped dicomfs left at MOUNT ("Transport endpoint is not connected") is cleaned
# up; a live one (another `make run`) is left alone, and run.sh refuses to start.
set -u
if [ $# -lt 5 ]; then
    echo "usage: tools/run.sh DICOMFS ARCHIVE INBOX MOUNT HOST:PORT [MOUNT OPTION...]" >&2
    exit 2
fi
dicomfs=$1 archive=$2 inbox=$3 mnt=$4 http=$5
shift 5

say() { echo "make run: $*" >&2; }

# The type of the file system mounted at $1, "" when none. From the mount table, as
# stat of a mount whose process is gone fails.
mounted_type() {
    local dir
    dir=$(cd "$(dirname -- "$1")" 2>/dev/null && pwd -P) || return 0
    findmnt -n -o FSTYPE --mountpoint "$dir/$(basename -- "$1")" 2>/dev/null | head -n 1
}

# MOUNT must be a folder where nothing is mounted, or where only a dead mount is.
prepare_mount() {
    local type
    type=$(mounted_type "$mnt")
    if [ -n "$type" ] && stat -- "$mnt" >/dev/null 2>&1; then
        say "$mnt is in use: a $type file system is mounted there (another make run?)"
        say "stop it first (Ctrl-C where it runs, or fusermount3 -u $mnt), or mount elsewhere: make run MOUNT=DIR"
        return 1
    fi
    if [ -n "$type" ]; then
        case $type in
        fuse*) fusermount3 -uz "$mnt" ;;
        *) false ;;
        esac || { say "$mnt: a dead $type mount is there and cannot be removed (umount -l $mnt)"; return 1; }
        say "removed the dead mount a stopped dicomfs left at $mnt"
    fi
    mkdir -p -- "$mnt" || return 1
}

fuse=false
if [ -e /dev/fuse ]; then
    fuse=true
    prepare_mount || exit 1
fi

mkdir -p -- "$inbox" || exit 2
if [ -n "$(ls -A -- "$inbox")" ]; then
    "$dicomfs" ingest "$archive" "$inbox"
    rc=$?
    case $rc in
    0) ;;
    1) say "some files in $inbox were not stored (reasons above); serving the archive anyway" ;;
    *) exit $rc ;; # the archive cannot be opened: serving it would fail too
    esac
fi

# FHIR=URL (make run FHIR=...): dicomcast beside the server, following its change feed
# into that FHIR R4 server (state in $CAST_STATE), until the server stops. It starts once
# the HTTP port answers; Ctrl-C stops both (one process group).
if [ -n "${FHIR:-}" ]; then
    serve_pid=$$
    (
        for _ in $(seq 1 300); do
            (exec 3<>"/dev/tcp/${http%:*}/${http##*:}") 2>/dev/null && break
            sleep 0.1
        done
        # shellcheck disable=SC2086  # CAST_FLAGS: several options
        "${DICOMCAST:-$(dirname -- "$dicomfs")/dicomcast}" --dicomweb "http://$http" --fhir "$FHIR" \
            --state "${CAST_STATE:-./dicomcast.state.json}" --poll 5 ${CAST_FLAGS:-} &
        cast=$!
        while kill -0 "$serve_pid" 2>/dev/null && kill -0 "$cast" 2>/dev/null; do sleep 1; done
        kill "$cast" 2>/dev/null
        wait "$cast"
    ) &
    say "dicomcast: syncing http://$http to $FHIR"
fi

if $fuse; then
    exec "$dicomfs" serve "$archive" --http "$http" "$@" --mount "$mnt" "$@"
fi
exec "$dicomfs" serve "$archive" --http "$http" "$@"
