#!/usr/bin/env bash
# Runs every libFuzzer target of a fuzz build for a bounded time.
#
#   scripts/run-fuzzers.sh BUILD_DIR SECONDS      (e.g. build/fuzz 15, after `cmake --preset fuzz`)
#
# Each target fuzz_<name> starts from the seeds in tests/fuzz/corpus/<name>/, copied to a scratch
# corpus under BUILD_DIR/fuzz-runs/<name>/ so the repository is never modified. Crash inputs and
# logs stay there too. Prints one line per target; exits non-zero when any target fails.
#
# A timeout is confirmed by running its input again on its own: on a loaded machine a single slow
# run is not a hang. One that does not reproduce is noted, and fuzzing resumes for the time left.
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

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

# Runs one input alone; succeeds when it finishes within the timeout.
reproduces_timeout() {
  local target=$1 input=$2 try
  for try in 1 2; do
    if ! "$target" -timeout=10 -rss_limit_mb=2048 -runs=1 "$input" >/dev/null 2>&1; then
      return 0
    fi
  done
  return 1
}

failed=0
for target in "${targets[@]}"; do
  name=$(basename "$target")
  short=${name#fuzz_}
  work="$build_dir/fuzz-runs/$short"
  corpus="$work/corpus"
  artifacts="$work/artifacts"
  slow="$work/slow"
  log="$work/fuzz.log"
  rm -rf "$corpus" "$artifacts" "$slow"
  mkdir -p "$corpus" "$artifacts" "$slow"
  : >"$log"
  seeds="$root/tests/fuzz/corpus/$short"
  if [[ -d "$seeds" ]]; then
    cp -R "$seeds/." "$corpus/"
  fi
  seed_count=$(find "$corpus" -type f | wc -l)

  start=$SECONDS
  runs_total=0
  problem=""
  status=0
  notes=""
  while true; do
    left=$((seconds - (SECONDS - start)))
    ((left < 1)) && break
    "$target" "$corpus" \
      -max_total_time="$left" -rss_limit_mb=2048 -timeout=10 \
      -artifact_prefix="$artifacts/" -print_final_stats=1 >>"$log" 2>&1
    status=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    runs_total=$((runs_total + ${runs:-0}))
    [[ $status -eq 0 ]] && break

    mapfile -t found < <(find "$artifacts" -type f | sort)
    if [[ ${#found[@]} -eq 1 && $(basename "${found[0]}") == timeout-* ]] &&
       ! reproduces_timeout "$target" "${found[0]}"; then
      mv "${found[0]}" "$slow/"
      notes+="; a slow input did not reproduce as a timeout (kept in $slow)"
      status=0
      continue
    fi
    problem=$(grep -oE 'ERROR: (AddressSanitizer|UndefinedBehaviorSanitizer|LeakSanitizer|libFuzzer): [a-z-]+' \
                "$log" | tail -n 1 | sed 's/^ERROR: //')
    [[ -z "$problem" ]] && problem=$(grep -oE 'runtime error: .*' "$log" | tail -n 1)
    break
  done

  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2)
  found=$(find "$artifacts" -type f | sort | tr '\n' ' ' | sed 's/ $//')
  if [[ $status -eq 0 && -z "$found" ]]; then
    printf '%-16s ok      %s runs in %ss, coverage %s, corpus %s seeds -> %s inputs%s\n' \
      "$name" "$runs_total" "$seconds" "${cov:-?}" "$seed_count" \
      "$(find "$corpus" -type f | wc -l)" "$notes"
  else
    failed=1
    printf '%-16s FAILED  %s (exit %s); input: %s; log: %s\n' \
      "$name" "${problem:-see log}" "$status" "${found:-none saved}" "$log"
  fi
done
exit $failed
