#!/usr/bin/env bash
# `pip install .` from the repository root, as a Python user runs it: into a fresh virtual environment
# (which sees the system's torch), building the C library through CMake (scikit-build-core, from PyPI),
# then an op and a one-rank ring from outside the clone with the library the wheel carries. Then the
# sdist: built, and holding every tracked file the build reads, so `pip install dilatron-*.tar.gz`
# builds the same sources (a second full build is not repeated here).
# Usage: check_root_install.sh PYTHON WORK_DIR
set -euo pipefail
python=$1 work=$2
repo=$(cd "$(dirname "$0")/../.." && pwd)

rm -rf "$work" && mkdir -p "$work"
"$python" -m venv --system-site-packages "$work/venv"
start=$(date +%s)
"$work/venv/bin/pip" install --quiet "$repo"
echo "pip install . built and installed in $(( $(date +%s) - start )) s"
cd "$work"
env -u DILATRON_LIBRARY "$work/venv/bin/python" - <<'PY'
import os, tempfile, torch, torch.distributed as dist, dilatron, dilatron.torch as dt
path = dilatron.library_path()
assert "site-packages/dilatron/lib/libdilatron_c.so" in path and os.path.isfile(path), path
q = torch.randn(1, 64, 4, 16, dtype=torch.float64)
out = dt.dilated_attention(q, q, q, segments=[16, 64], dilations=[1, 4])
dist.init_process_group("gloo", init_method="file://" + tempfile.mktemp(), rank=0, world_size=1)
torch.testing.assert_close(dt.ring_dilated_attention(q, q, q, [16, 64], [1, 4]), out, rtol=0, atol=1e-12)
print("root install OK:", path)
PY

"$work/venv/bin/pip" install --quiet build
"$work/venv/bin/python" -m build --sdist --outdir "$work/dist" "$repo" > "$work/sdist.log"
tar tzf "$work"/dist/dilatron-*.tar.gz | sed 's|^[^/]*/||' | sort > "$work/sdist.files"
git -C "$repo" ls-files CMakeLists.txt pyproject.toml cmake include runtime codegen cache autotune common templates \
  emulator python | sort > "$work/needed.files"
missing=$(comm -23 "$work/needed.files" "$work/sdist.files")
[ -z "$missing" ] || { echo "the sdist lacks files the build reads:"; echo "$missing"; exit 1; }
echo "sdist OK: $(wc -l < "$work/sdist.files") files"
