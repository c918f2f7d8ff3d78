#!/bin/bash
# End-to-end: the dicomfs command's own rules. Every command that opens an archive opens
# an existing one; those that may create one (ingest, serve, mount) do so only in a
# missing or empty folder, so that swapped arguments never fill a CD's folder with
# index.db, objects/ and tmp/; a missing input is "No such file", not FailureReason 272;
# the messages say what to do. And `dicomfs --version`, and what the docs promise.
set -u
: "${DICOMFS:?DICOMFS must name the dicomfs binary}"
TESTS=${TESTS:-$(cd "$(dirname "$0")" && pwd)}
SCRATCH=${SCRATCH:-/tmp/dicomfs-test-cli}
CORPUS=/usr/lib/python3/dist-packages/pydicom/data/test_files
rm -rf "$SCRATCH" && mkdir -p "$SCRATCH/cd" "$SCRATCH/empty" "$SCRATCH/mnt" || exit 1
S=$SCRATCH
pass=0 fails=0
ok() { pass=$((pass + 1)); echo "ok   $*"; }
fail() { fails=$((fails + 1)); echo "FAIL $*"; }
check() { local what=$1; shift; if "$@" >/dev/null 2>&1; then ok "$what"; else fail "$what"; fi; }
# run CMD...: sets rc and out (stdout and stderr)
run() { out=$("$@" 2>&1); rc=$?; }

# ---- --version ------------------------------------------------------------------------
version=$(sed -n 's/^project(dicomfs VERSION \([0-9.]*\).*/\1/p' "$TESTS/../CMakeLists.txt")
run "$DICOMFS" --version
check "dicomfs --version prints 'dicomfs $version' and exits 0" test $rc -eq 0 -a "$out" = "dicomfs $version"
run "$DICOMFS" version
check "dicomfs version prints the same" test $rc -eq 0 -a "$out" = "dicomfs $version"
check "the command list names version" bash -c "'$DICOMFS' --help | grep -q '^  version'"

# ---- a CD's folder is never taken for an archive --------------------------------------
cp "$CORPUS/CT_small.dcm" "$CORPUS/README.txt" "$S/cd/"
before=$(ls -A "$S/cd")
untouched() { test "$(ls -A "$S/cd")" = "$before"; }

run "$DICOMFS" ingest "$S/cd" "$S/archive" # swapped, and the archive does not exist yet
check "ingest CD ARCHIVE (swapped): exit 2" test $rc -eq 2
check "ingest CD ARCHIVE (swapped): says the missing path does not exist" grep -q "archive: No such file or directory" <<<"$out"
check "ingest CD ARCHIVE (swapped): the CD folder is untouched" untouched

mkdir -p "$S/other" && cp "$CORPUS/MR_small.dcm" "$S/other/"
run "$DICOMFS" ingest "$S/cd" "$S/other" # swapped, both exist
check "ingest CD FOLDER: exit 2" test $rc -eq 2
check "ingest CD FOLDER: says it is not an archive and not empty" grep -q "is not a dicomfs archive (no index.db) and not empty" <<<"$out"
check "ingest CD FOLDER: says what to do" grep -q "the archive comes first; name a new or empty folder" <<<"$out"
check "ingest CD FOLDER: the CD folder is untouched" untouched
check "ingest CD FOLDER: nothing reported as FailureReason 272" bash -c "! grep -q 272 <<<'$out'"

for cmd in find changes fsck "metadata 1.2.3" "delete 1.2.3"; do
    set -- $cmd
    run "$DICOMFS" "$1" "$S/cd" "${@:2}"
    check "$1 CD: exit 2, 'not a dicomfs archive', and how to make one" \
        bash -c "test $rc -eq 2 && grep -q 'not a dicomfs archive' <<<'$out' && grep -q 'create an archive in a new or empty folder' <<<'$out'"
    check "$1 CD: the CD folder is untouched" untouched
    run "$DICOMFS" "$1" "$S/nothing" "${@:2}"
    check "$1 MISSING: exit 2 and says No such file or directory" \
        bash -c "test $rc -eq 2 && grep -q 'nothing: No such file or directory' <<<'$out'"
    check "$1 MISSING: creates nothing" test ! -e "$S/nothing"
done
run timeout 60 "$DICOMFS" serve "$S/cd" --http 127.0.0.1:0
check "serve CD: exit 2 with the reason" bash -c "test $rc -eq 2 && grep -q 'not empty' <<<'$out'"
check "serve CD: the CD folder is untouched" untouched
run timeout 60 "$DICOMFS" mount "$S/cd" "$S/mnt"
check "mount CD MNT: exit 2 with the reason" bash -c "test $rc -eq 2 && grep -q 'not empty' <<<'$out'"
check "mount CD MNT: the CD folder is untouched" untouched

# ---- a missing input is a missing file ----------------------------------------------
run "$DICOMFS" ingest "$S/archive" "$S/cd/CT_small.dcm" "$S/no-such.dcm"
check "ingest ARCHIVE MISSING: exit 2" test $rc -eq 2
check "ingest ARCHIVE MISSING: 'No such file or directory', no FailureReason" \
    bash -c "grep -q 'no-such.dcm: No such file or directory' <<<'$out' && ! grep -q 272 <<<'$out'"
check "ingest ARCHIVE MISSING: stores nothing and creates no archive" test ! -e "$S/archive"

# ---- archives are made in a missing or empty folder, and opened when they exist ---------
run "$DICOMFS" ingest "$S/archive" "$S/cd/CT_small.dcm"
check "ingest into a missing folder creates the archive" test $rc -eq 0 -a -f "$S/archive/index.db"
run "$DICOMFS" ingest "$S/empty" "$S/cd/CT_small.dcm"
check "ingest into an empty folder creates the archive" test $rc -eq 0 -a -f "$S/empty/index.db"
run "$DICOMFS" ingest "$S/archive" "$S/other/MR_small.dcm"
check "ingest into an existing archive adds to it" test $rc -eq 0
run "$DICOMFS" find "$S/archive"
check "find opens the existing archive: 2 studies" test $rc -eq 0 -a "$(grep -o '"0020000D"' <<<"$out" | wc -l)" = 2
run "$DICOMFS" fsck "$S/archive"
check "fsck opens it" test $rc -eq 0
if [ -e /dev/fuse ] && command -v fusermount3 >/dev/null; then
    run "$DICOMFS" mount "$S/archive" "$S/mnt" --daemon
    check "mount opens an existing archive" test $rc -eq 0
    check "and shows its studies" test "$(ls "$S/mnt/studies" | wc -l)" = 2
    fusermount3 -u "$S/mnt"
fi

# ---- what the docs promise ---------------------------------------------------------
ROOT=$TESTS/..
check "README does not promise that everything written for the Azure service works" \
    bash -c "! grep -q 'Everything written against the Azure DICOM service works' '$ROOT/README.md'"
check "README says what is not served yet" grep -q "Not yet served: workitems" "$ROOT/README.md"
check "docs/CLI.md documents find's limit (1 to 200) and --version" \
    bash -c "grep -q 'is 1 to 200' '$ROOT/docs/CLI.md' && grep -q 'dicomfs --version' '$ROOT/docs/CLI.md'"

echo "cli: $pass passed, $fails failed"
[ $fails -eq 0 ]
