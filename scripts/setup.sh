#!/usr/bin/env bash
# Installs what the build needs from Debian packages (only what is missing), then configures build/ and
# builds the given targets (all of them when none is named). The CUDA toolkit (headers and NVRTC) must
# already be installed. demo.sh and test.sh configure build/ identically, so running one after the
# other rebuilds nothing they share. DILATRON_BUILD_DIR and DILATRON_CMAKE_ARGS (space-separated) select
# another build tree and configuration (scripts/sanitize.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

# python3-venv: bench/sass_check.py (and its ctest) installs nvdisasm from PyPI into a venv on first use.
# python3-torch, -numpy, -setuptools, -wheel: the PyTorch op (python/) and its tests under Debian's python3.
# libboost-context-dev: the emulated device's fibers (emulator/).
packages=(cmake ninja-build g++ pkg-config libfmt-dev libgtest-dev libgmock-dev libcli11-dev nlohmann-json3-dev
          libxxhash-dev libbenchmark-dev libboost-context-dev python3 python3-venv python3-torch python3-numpy python3-setuptools
          python3-wheel)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then export PATH=/usr/local/cuda/bin:$PATH; fi
build=${DILATRON_BUILD_DIR:-build}
read -r -a extra <<<"${DILATRON_CMAKE_ARGS:-}"
cmake -S . -B "$build" -G Ninja -DDILATRON_WERROR=ON "${extra[@]}" >/dev/null
targets=()
for t in "$@"; do targets+=(--target "$t"); done
cmake --build "$build" -j "$(nproc)" "${targets[@]}"
