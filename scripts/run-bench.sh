#!/usr/bin/env bash
# Runs orgd's benchmarks from a build directory and prints their figures (baseline and orgd side
# by side, with the ratio). Used by `make bench` on the release preset.
#
#   scripts/run-bench.sh BUILD_DIR
#
# Tuning goes through the environment, e.g. ORGD_BENCH_MESSAGES=100000 or ORGD_BENCH_RUNS=5 (see
# each benchmark's --help; a flag two benchmarks share, like ORGD_BENCH_REPOS, applies to both).
# Exits non-zero if a benchmark fails or loses messages.
set -euo pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: $0 BUILD_DIR" >&2
  exit 2
fi
build_dir=$1
bench_dir=$build_dir/bench
benches=(bench_health_ingest bench_status_rtt bench_config_load bench_startup bench_deploy bench_https_put bench_secret_sync)

for b in "${benches[@]}"; do
  if [[ ! -x $bench_dir/$b ]]; then
    echo "$0: $bench_dir/$b not found: build the benchmarks first (make bench)" >&2
    exit 2
  fi
done

echo "orgd benchmarks: $(git -C "$(dirname "$0")/.." describe --always --dirty 2>/dev/null || echo unknown)," \
     "build $(grep -m1 '^CMAKE_BUILD_TYPE:' "$build_dir/CMakeCache.txt" 2>/dev/null | cut -d= -f2 || echo '?')," \
     "$(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(nats-server --version 2>/dev/null || echo 'nats-server ?')"
echo

status=0
for b in "${benches[@]}"; do
  if ! "$bench_dir/$b"; then
    echo "$0: $b failed" >&2
    status=1
  fi
  echo
done
exit $status
