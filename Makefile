# The two commands of the README: `make dev` and `make test`. Each installs missing Debian
# packages first (scripts/install-deps.sh) and builds what it needs.

PRESET ?= dev
BUILD_DIR := build/$(PRESET)
JOBS ?= $(shell nproc)
FUZZ_SECONDS ?= 15
FUZZ_LONG_SECONDS ?= 600

.PHONY: all deps configure build dev test unit fuzz-build fuzz-smoke fuzz bench asan tsan format clean

all: build

deps:
	@./scripts/install-deps.sh

configure: deps
	@cmake --preset $(PRESET) >/dev/null

build: configure
	@cmake --build $(BUILD_DIR) -j $(JOBS)

# Builds, then runs orgd on the embedded default: nats-server (JetStream) as a child, local
# providers, HTTP on 127.0.0.1:8080. Ctrl-C stops both.
dev: build
	@exec $(BUILD_DIR)/daemon/orgd --config config/orgd.dev.yaml

# The whole suite: a short bounded fuzz run of every parser, then unit, integration and e2e
# tests (ctest) against real nats-server processes.
test: build fuzz-smoke
	@cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) --timeout 300

unit: build
	@cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) -L unit

fuzz-build: deps
	@cmake --preset fuzz >/dev/null
	@cmake --build build/fuzz -j $(JOBS)

fuzz-smoke: fuzz-build
	@./scripts/run-fuzzers.sh build/fuzz $(FUZZ_SECONDS)

# The longer fuzz run (FUZZ_LONG_SECONDS per target).
fuzz: fuzz-build
	@./scripts/run-fuzzers.sh build/fuzz $(FUZZ_LONG_SECONDS)

bench: deps
	@cmake --preset release >/dev/null
	@cmake --build build/release -j $(JOBS) --target benchmarks
	@./scripts/run-bench.sh build/release

asan:
	@$(MAKE) --no-print-directory test PRESET=asan

tsan:
	@$(MAKE) --no-print-directory test PRESET=tsan

format:
	@clang-format -i $$(git ls-files '*.cpp' '*.hpp')

clean:
	@rm -rf build
