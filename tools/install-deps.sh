#!/usr/bin/env bash
# Installs the Debian packages dicomfs needs to build, run and test. Idempotent:
# it asks apt only for what is missing, so a second run costs a dpkg query.
set -euo pipefail

build=(build-essential cmake pkg-config
       libdcmtk-dev dcmtk libsqlite3-dev libfuse3-dev fuse3
       libcurl4-openssl-dev libjansson-dev libmicrohttpd-dev libjwt-dev
       libgnutls28-dev
       python3-pydicom curl) # the README's first examples: pydicom's sample files, curl
# orthanc, orthanc-dicomweb: tests/interop runs Orthanc's DICOMweb plugin as a client, from
# its own configuration on a free port (the system service is neither needed nor touched).
# chromium: tests/interop/ohif runs OHIF Viewer in it, headless, driven by playwright-core.
# openssl: tests/web_tls.py makes its certificates with it.
# e2fsprogs, mount: tests/crash/ makes, loop-mounts and checks small ext4 images.
# clang-14, libclang-rt-14-dev: tests/fuzz (make fuzz, fuzz-ci); the second holds libFuzzer
# (libclang_rt.fuzzer) and the sanitizer runtimes.
test=(sqlite3 rsync file libglib2.0-bin orthanc orthanc-dicomweb chromium openssl e2fsprogs mount clang-14
      libclang-rt-14-dev)
# make bench only (--bench = --test + these): linux-perf and strace for the profile step
# (perf record; strace -c for the fsync wait), numpy for the dataset generator.
bench=(linux-perf strace python3-numpy)

want=("${build[@]}")
[ "${1:-}" = "--bench" ] && want+=("${bench[@]}")
if [ "${1:-}" = "--test" ] || [ "${1:-}" = "--bench" ]; then
  want+=("${test[@]}")
  # newman (the Postman runner, pinned in tests/postman) and dicomweb-client (pinned in
  # tests/interop/dicomweb-client) need node and npm; any installation will do, Debian's
  # when there is none. The FHIR server of the dicomcast tests (tests/fhir, npm
  # @medplum/fhir-router 4.5.2) needs Node ^20.19 or >= 22.12: older ones fail its npm ci.
  command -v npm >/dev/null 2>&1 || want+=(nodejs npm)
fi

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
echo "installing: ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
