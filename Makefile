# The two commands of the README, and a few conveniences. CMake does the real build.
BUILD   ?= build
ARCHIVE ?= ./archive
INBOX   ?= ./inbox
JOBS    ?= $(shell nproc)

.PHONY: all deps test-deps build run test bench asan clean

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
run: build
	@tools/run.sh '$(BUILD)/dicomfs' '$(ARCHIVE)' '$(INBOX)' '$(MOUNT)' '$(HTTP)' $(MOUNT_FLAGS) $(SERVE_FLAGS)

test: test-deps build
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS)
	@$(MAKE) --no-print-directory asan

# The same suite under AddressSanitizer and UndefinedBehaviorSanitizer; any report fails it.
asan: test-deps
	@cmake -S . -B $(BUILD)-asan -DCMAKE_BUILD_TYPE=Debug -DDICOMFS_SANITIZE=ON >/dev/null
	@cmake --build $(BUILD)-asan -j $(JOBS)
	@cd $(BUILD)-asan && ctest --output-on-failure -j $(JOBS) -L sanitize

bench: test-deps build
	@tools/bench/run.sh $(BUILD)

clean:
	rm -rf $(BUILD) $(BUILD)-asan
