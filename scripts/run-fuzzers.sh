#!/usr/bin/env bash
# Runs every libFuzzer target of a fuzz build for a bounded time.
#
#   scripts/run-fuzzers.sh BUILD_DIR SECONDS      (e.g. build/fuzz 15, after `cmake --preset fuzz`)
#
# Each target fuzz_<name> starts from the seeds in tests/fuzz/corpus/<name>/, copied to a scratch
# corpus under BUILD_DIR/fuzz-runs/<name>/ so the repository is never modified. Crash inputs and
# logs stay there too. Prints one line per target; exits non-zero when any target fails.
set -uo pipefail

if [[ $# -ne 2 || ! "$2" =~ ^[0-9]+$ ]]; then
  echo "usage: $0 BUILD_DIR SECONDS" >&2
  exit 2
fi
build_dir=$(cd "$1" 2>/dev/null && pwd) || { echo "$0: no build directory $1" >&2; exit 2; }
seconds=$2
root=$(cd "$(dirname "$0")/.." && pwd)

mapfile -t targets < <(find "$build_dir/tests/fuzz" -maxdepth 1 -type f -name 'fuzz_*' \
                         -executable 2>/dev/null | sort)
if [[ ${#targets[@]} -eq 0 ]]; then
  echo "$0: no fuzz_* targets in $build_dir/tests/fuzz (build with: cmake --preset fuzz &&" \
       "cmake --build build/fuzz)" >&2
  exit 2
fi

export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

failed=0
for target in "${targets[@]}"; do
  name=$(basename "$target")
  short=${name#fuzz_}
  work="$build_dir/fuzz-runs/$short"
  corpus="$work/corpus"
  artifacts="$work/artifacts"
  log="$work/fuzz.log"
  rm -rf "$corpus" "$artifacts"
  mkdir -p "$corpus" "$artifacts"
  seeds="$root/tests/fuzz/corpus/$short"
  if [[ -d "$seeds" ]]; then
    cp -R "$seeds/." "$corpus/"
  fi
  seed_count=$(find "$corpus" -type f | wc -l)

  "$target" "$corpus" \
    -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 \
    -artifact_prefix="$artifacts/" -print_final_stats=1 >"$log" 2>&1
  status=$?

  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2)
  found=$(find "$artifacts" -type f | sort)
  if [[ $status -eq 0 && -z "$found" ]]; then
    printf '%-16s ok      %s runs in %ss, coverage %s, corpus %s seeds -> %s inputs\n' \
      "$name" "${runs:-?}" "$seconds" "${cov:-?}" "$seed_count" "$(find "$corpus" -type f | wc -l)"
  else
    failed=1
    kind=$(grep -m1 -oE 'ERROR: (AddressSanitizer|UndefinedBehaviorSanitizer|libFuzzer): [a-z-]+' \
             "$log" | sed 's/^ERROR: //')
    [[ -z "$kind" ]] && kind=$(grep -m1 -oE 'runtime error: .*' "$log")
    printf '%-16s FAILED  %s (exit %s); input: %s; log: %s\n' \
      "$name" "${kind:-see log}" "$status" "${found:-none saved}" "$log"
  fi
done
exit $failed
