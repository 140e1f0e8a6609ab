#!/usr/bin/env bash
# Set up, build with warnings as errors, and run the test suite (GPU tests skip without a GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
DILATRON_WERROR=ON bash scripts/setup.sh
ctest --test-dir build --output-on-failure -j "$(nproc)" "$@"
