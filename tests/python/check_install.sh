#!/usr/bin/env bash
# The Python package as users get it: (1) `pip install ./python` into a fresh virtual environment (which
# sees the system's torch), then an op call from a directory outside the repository, using the library
# the install copied into the package; (2) the README's PyTorch example, run as written from the clone.
# Usage: check_install.sh PYTHON BUILD_LIB_DIR WORK_DIR
set -euo pipefail
python=$1 lib_dir=$2 work=$3
repo=$(cd "$(dirname "$0")/../.." && pwd)

rm -rf "$work" && mkdir -p "$work"
"$python" -m venv --system-site-packages "$work/venv"
cp -r "$repo/python" "$work/src"  # pip builds in place: keep the clone clean
DILATRON_LIBRARY="$lib_dir/libdilatron_c.so" \
  "$work/venv/bin/pip" install --quiet --no-deps --no-build-isolation --no-index "$work/src"
cd "$work"
env -u DILATRON_LIBRARY "$work/venv/bin/python" - <<'PY'
import os, torch, dilatron, dilatron.torch as dt
path = dilatron.library_path()
assert "site-packages" in path and os.path.isfile(path), f"the installed package should carry its library: {path}"
q = torch.randn(1, 64, 4, 16)
out = dt.dilated_attention(q, q, q, segments=[16, 64], dilations=[1, 4])
assert out.shape == q.shape and torch.isfinite(out).all()
print("installed package OK:", path, "version", dilatron.version())
PY

# The README's example: the block after the line "<!-- python example -->", run from the clone.
example=$(awk '/<!-- python example -->/{found=1; next} found && /^```python/{inside=1; next} inside && /^```/{exit} inside' "$repo/README.md")
[ -n "$example" ] || { echo "no python example found in README.md"; exit 1; }
cd "$repo"
PYTHONPATH="$repo/python" DILATRON_LIBRARY="$lib_dir/libdilatron_c.so" "$python" -c "$example"
echo "README example OK"
