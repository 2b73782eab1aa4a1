# The two commands of the README: `make dev` and `make test`. Each installs missing Debian
# packages first (scripts/install-deps.sh) and builds what it needs.

PRESET ?= dev
BUILD_DIR := build/$(PRESET)
JOBS ?= $(shell nproc)
FUZZ_SECONDS ?= 15
FUZZ_LONG_SECONDS ?= 600
# ccache, when installed, makes rebuilds and a second preset of the same sources cheap.
CCACHE := $(shell command -v ccache 2>/dev/null)
LAUNCHER := $(if $(CCACHE),-DCMAKE_C_COMPILER_LAUNCHER=$(CCACHE) -DCMAKE_CXX_COMPILER_LAUNCHER=$(CCACHE))

.PHONY: all deps configure build dev test test-asan test-tsan ctest unit fuzz-build fuzz-smoke \
        fuzz bench asan tsan format clean

all: build

deps:
	@./scripts/install-deps.sh

configure: deps
	@cmake --preset $(PRESET) $(LAUNCHER) >/dev/null

# Everything of the preset: daemon, CLI, tests, benchmarks.
build: configure
	@cmake --build $(BUILD_DIR) -j $(JOBS)

# Builds orgd and orgctl only, then runs orgd on the embedded default: nats-server (JetStream)
# as a child, local providers, HTTP on 127.0.0.1:8080. Ctrl-C stops both.
dev: configure
	@cmake --build $(BUILD_DIR) -j $(JOBS) --target orgd orgctl
	@exec $(BUILD_DIR)/daemon/orgd --config config/orgd.dev.yaml

# The whole suite: unit, integration and e2e tests (ctest) against real nats-server processes,
# then, once they pass, a short bounded fuzz run of every parser.
test:
	@$(MAKE) --no-print-directory ctest
	@$(MAKE) --no-print-directory fuzz-smoke

# The tests under AddressSanitizer + UndefinedBehaviorSanitizer, and under ThreadSanitizer (no
# fuzzing: the fuzz build has its own sanitizers).
test-asan:
	@$(MAKE) --no-print-directory ctest PRESET=asan

test-tsan:
	@$(MAKE) --no-print-directory ctest PRESET=tsan

asan: test-asan
tsan: test-tsan

# The test binaries of $(PRESET) (with orgd and orgctl), then ctest.
ctest: configure
	@cmake --build $(BUILD_DIR) -j $(JOBS) --target orgd_tests
	@cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) --timeout 300

unit: configure
	@cmake --build $(BUILD_DIR) -j $(JOBS) --target orgd_unit_tests
	@cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) -L unit

fuzz-build: deps
	@cmake --preset fuzz $(LAUNCHER) >/dev/null
	@cmake --build build/fuzz -j $(JOBS)

fuzz-smoke: fuzz-build
	@./scripts/run-fuzzers.sh build/fuzz $(FUZZ_SECONDS)

# The longer fuzz run (FUZZ_LONG_SECONDS per target).
fuzz: fuzz-build
	@./scripts/run-fuzzers.sh build/fuzz $(FUZZ_LONG_SECONDS)

bench: deps
	@cmake --preset release $(LAUNCHER) >/dev/null
	@cmake --build build/release -j $(JOBS) --target benchmarks
	@./scripts/run-bench.sh build/release

format:
	@clang-format -i $$(git ls-files '*.cpp' '*.hpp')

clean:
	@rm -rf build
