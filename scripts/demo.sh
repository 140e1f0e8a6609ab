#!/usr/bin/env bash
# Set up, build, and run the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
build/bin/dilatron demo "$@"
