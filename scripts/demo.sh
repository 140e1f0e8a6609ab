#!/usr/bin/env bash
# Set up, build only the CLI, and run the demo. Arguments go to `dilatron demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dilatron_cli
build/bin/dilatron demo "$@"
