#!/usr/bin/env bash
# The current-PyTorch lane: the newest torch from PyPI in a virtual environment of its own
# (build/torch-venv, made on first use; --fresh makes it again), then the PyTorch op's and the ring's
# tests under it: torch.library.opcheck, torch.compile (aot_eager and inductor, dynamic shapes, no graph
# break) and the ring under compile run only on a torch that has them. Needs the build (scripts/setup.sh)
# and PyPI. ctest runs it as Python.CurrentTorch.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=build/torch-venv
if [[ ${1:-} == --fresh ]]; then rm -rf "$venv"; fi
if [[ ! -x $venv/bin/python ]] || ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
  start=$(date +%s)
  rm -rf "$venv"
  /usr/bin/python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade pip
  "$venv/bin/pip" install --quiet torch numpy
  echo "current-torch lane: $venv set up in $(( $(date +%s) - start )) s"
fi
"$venv/bin/python" -c "import torch; print('current-torch lane: torch', torch.__version__)"
export DILATRON_LIBRARY=${DILATRON_LIBRARY:-$PWD/build/lib/libdilatron_c.so} DILATRON_CLI=${DILATRON_CLI:-$PWD/build/bin/dilatron}
cd tests/python
"$PWD/../../$venv/bin/python" -m unittest -v test_torch_op test_torch_varlen test_torch_decode test_torch_ring
