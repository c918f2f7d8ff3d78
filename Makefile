# The two commands of the README, and a few conveniences. CMake does the real build.
BUILD   ?= build
ARCHIVE ?= ./archive
INBOX   ?= ./inbox
JOBS    ?= $(shell nproc)

.PHONY: all deps test-deps build run test bench asan crashtest load fuzz fuzz-ci clean

all: build

deps:
	@tools/install-deps.sh

test-deps:
	@tools/install-deps.sh --test

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

HTTP    ?= 127.0.0.1:8080
MOUNT   ?= ./mnt
# e.g. MOUNT_FLAGS=--allow-delete; SERVE_FLAGS="--auth auth/auth.json" (any serve option)
MOUNT_FLAGS ?=
SERVE_FLAGS ?=

# Stores what is in $(INBOX) (if anything; refused files are reported, not fatal), then
# serves the archive over DICOMweb and, where FUSE is available, as a folder at $(MOUNT),
# until Ctrl-C. tools/run.sh holds the steps (tests/make_run.sh tests them).
# FHIR=URL runs dicomcast beside it into that FHIR R4 server (CAST_STATE, CAST_FLAGS).
FHIR ?=
CAST_STATE ?= ./dicomcast.state.json
CAST_FLAGS ?=
run: build
	@FHIR='$(FHIR)' CAST_STATE='$(CAST_STATE)' CAST_FLAGS='$(CAST_FLAGS)' DICOMCAST='$(BUILD)/dicomcast' tools/run.sh '$(BUILD)/dicomfs' '$(ARCHIVE)' '$(INBOX)' '$(MOUNT)' '$(HTTP)' $(MOUNT_FLAGS) $(SERVE_FLAGS)

test: test-deps build
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS)
	@$(MAKE) --no-print-directory asan
	@$(MAKE) --no-print-directory fuzz-ci

# The same suite under AddressSanitizer and UndefinedBehaviorSanitizer; any report fails it.
asan: test-deps
	@cmake -S . -B $(BUILD)-asan -DCMAKE_BUILD_TYPE=Debug -DDICOMFS_SANITIZE=ON >/dev/null
	@cmake --build $(BUILD)-asan -j $(JOBS)
	@cd $(BUILD)-asan && ctest --output-on-failure -j $(JOBS) -L sanitize

# The full crash runs (tests/crash/): 1,000 rounds of SIGKILL during STOW, copy-in, delete
# and reindex (CRASH_ROUNDS, CRASH_SEED to replay), 200 power cuts on each of ext4 with and
# without a journal, and the full/read-only/damaged disk tests. `make test` runs them
# CI-sized (ctest -L crash); here they run without ctest's time limit.
CRASH_ROUNDS ?= 1000
POWERLOSS_ROUNDS ?= 200
crashtest: test-deps build
	@set -e; for t in crash disk_full disk_readonly disk_damage crash_powerloss; do \
		echo "== tests/crash/$$t.py"; \
		DICOMFS=$(abspath $(BUILD))/dicomfs TESTS=$(CURDIR)/tests SCRATCH=$(abspath $(BUILD))/scratch/crashtest-$$t \
		CRASH_ROUNDS=$(CRASH_ROUNDS) POWERLOSS_ROUNDS=$(POWERLOSS_ROUNDS) /usr/bin/python3 tests/crash/$$t.py; \
	done

# The full load run (tests/load/): 50 concurrent loopback clients (STOW, QIDO, WADO, delete)
# and a mount of the same archive for LOAD_TIME seconds; a table of requests/s and latency
# per route, server RSS and descriptors over time; fails on errors, lost data or leaks.
# `make test` runs it CI-sized (ctest -R '^load$$', 60 s). LOAD_SEED replays a mix.
LOAD_TIME ?= 600
load: test-deps build
	@DICOMFS=$(abspath $(BUILD))/dicomfs LOADGEN=$(abspath $(BUILD))/tests/loadgen TESTS=$(CURDIR)/tests \
		SCRATCH=$(abspath $(BUILD))/scratch/load-full LOAD_TIME=$(LOAD_TIME) /usr/bin/python3 tests/load/load.py

# libFuzzer targets (tests/fuzz/README.md), built with clang-14 in $(FUZZ_BUILD). `make fuzz`
# runs each FUZZ_TIME seconds in turn (FUZZ_TARGETS: some of them), keeping new inputs in
# $(FUZZ_BUILD)/fuzz-work/; `make fuzz-ci` (part of `make test`) replays the regressions and
# runs a fixed number of inputs per target (seed 1, 10-25 s each on a quiet 2-core machine;
# FUZZ_CI_TIME x 3 bounds a slow one) from the stored corpus, two at a time: nearly the same
# inputs every run.
FUZZ_BUILD   ?= $(BUILD)-fuzz
FUZZ_TIME    ?= 600
FUZZ_CI_TIME ?= 25
FUZZ_TARGETS ?=
fuzz: test-deps
	@tests/fuzz/run.sh build $(FUZZ_BUILD)
	@tests/fuzz/run.sh fuzz $(FUZZ_BUILD) $(FUZZ_TIME) $(FUZZ_TARGETS)

fuzz-ci: test-deps
	@tests/fuzz/run.sh build $(FUZZ_BUILD)
	@tests/fuzz/run.sh ci $(FUZZ_BUILD) $(FUZZ_CI_TIME)

bench: build
	@tools/install-deps.sh --bench
	@tools/bench/run.sh $(BUILD)

clean:
	rm -rf $(BUILD) $(BUILD)-asan $(BUILD)-fuzz
