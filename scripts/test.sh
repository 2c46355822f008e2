#!/usr/bin/env bash
# Builds postseal three ways and runs every test:
#   build/        the release build operators run: unit + integration tests
#   build-asan/   AddressSanitizer + UBSan: unit + integration tests
#   build-fuzz/   clang + libFuzzer: each fuzz target briefly over its corpus
# Prints one closing line "N passed, N failed" over all three.
set -uo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)
total_pass=0
total_fail=0
status=0

# run_suite NAME BUILD_DIR CMAKE_ARGS...: configure, build, ctest.
run_suite() {
  local name=$1 dir=$2
  shift 2
  echo "=== $name: configure and build ($dir)"
  if ! cmake -S . -B "$dir" "$@" >"$dir.configure.log" 2>&1; then
    cat "$dir.configure.log"
    echo "=== $name: configure FAILED"
    total_fail=$((total_fail + 1))
    status=1
    return
  fi
  if ! cmake --build "$dir" -j "$jobs" >"$dir.build.log" 2>&1; then
    tail -n 60 "$dir.build.log"
    echo "=== $name: build FAILED"
    total_fail=$((total_fail + 1))
    status=1
    return
  fi
  echo "=== $name: ctest"
  local log="$dir/ctest.log"
  ctest --test-dir "$dir" --output-on-failure -j "$jobs" 2>&1 | tee "$log"
  local line pass fail
  line=$(grep -E 'tests passed, [0-9]+ tests failed out of' "$log" | tail -n 1)
  if [ -z "$line" ]; then
    echo "=== $name: ctest ran no tests"
    total_fail=$((total_fail + 1))
    status=1
    return
  fi
  fail=$(echo "$line" | sed -E 's/.* ([0-9]+) tests failed out of ([0-9]+).*/\1/')
  all=$(echo "$line" | sed -E 's/.* ([0-9]+) tests failed out of ([0-9]+).*/\2/')
  pass=$((all - fail))
  total_pass=$((total_pass + pass))
  total_fail=$((total_fail + fail))
  [ "$fail" = 0 ] || status=1
}

run_suite release build -DCMAKE_BUILD_TYPE=RelWithDebInfo
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  run_suite sanitizers build-asan -DCMAKE_BUILD_TYPE=Debug -DPOSTSEAL_SANITIZE=ON
CC=clang run_suite fuzz build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPOSTSEAL_FUZZ=ON

echo "tests: $total_pass passed, $total_fail failed"
exit $status
