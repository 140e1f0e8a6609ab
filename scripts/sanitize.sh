#!/usr/bin/env bash
# Builds everything with AddressSanitizer and UndefinedBehaviorSanitizer in build-sanitize/ (warnings are
# errors, any report stops the process) and runs every CPU test there, the Python op's included. Extra
# arguments go to ctest. DILATRON_SANITIZE picks other sanitizers (e.g. "thread").
set -euo pipefail
cd "$(dirname "$0")/.."
sanitizers=${DILATRON_SANITIZE:-address,undefined}
export DILATRON_BUILD_DIR=build-sanitize
export DILATRON_CMAKE_ARGS="-DCMAKE_BUILD_TYPE=RelWithDebInfo -DDILATRON_SANITIZE=$sanitizers"
bash scripts/setup.sh
# Leaks are errors; reports print a stack with file and line.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:strict_string_checks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
ctest --test-dir build-sanitize --output-on-failure -L cpu -j "$(nproc)" "$@"
