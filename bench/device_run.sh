#!/usr/bin/env bash
# One call on a GPU machine: the GPU tests, the PyTorch op's tests, the CLI on the GPU, the PyTorch
# comparison (default tiles, backward and the op), then a tune of the LongNet configuration and the forward pass timed with and without it. Logs go
# under $OUT (default bench-out/). Build on the development machine and carry build/:
#   cmake -S . -B build -G Ninja -DDILATRON_PORTABLE=ON && cmake --build build
# (DILATRON_PORTABLE links libstdc++ statically, so the binaries do not depend on the GPU machine's).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench-out}
mkdir -p "$OUT"
export DILATRON_CACHE_DIR=$(mktemp -d)/cache DILATRON_CLI=$PWD/build/bin/dilatron
status=0
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  build/bin/dilatron info
} 2>&1 | tee "$OUT/info.log"
build/bin/test_gpu --gtest_brief=1 2>&1 | tee "$OUT/gpu_tests.log" || status=1
(cd tests/python && DILATRON_LIBRARY=$PWD/../../build/lib/libdilatron_c.so python3 -m unittest -v test_torch_op) 2>&1 |
  tee "$OUT/torch_op_tests.log" || status=1
build/bin/dilatron demo 2>&1 | tee "$OUT/demo.log" || status=1
LONGNET=(--segments 2048,4096,8192,16384,32768 --dilations 1,2,4,6,12 --seq-len 262144 --heads 16)
build/bin/dilatron bench "${LONGNET[@]}" 2>&1 | tee "$OUT/cli_bench.log" || status=1
python3 bench/compare_torch.py --backward --torch-op --out "$OUT/results.md" 2>&1 | tee "$OUT/bench.log" || status=1
# Tuning: every candidate of the five kernels, then default and tuned forward passes back to back.
build/bin/dilatron tune "${LONGNET[@]}" 2>&1 | tee "$OUT/tune.log" || status=1
for tiles in default tuned; do
  [ $tiles = default ] && export DILATRON_AUTOTUNE=0 || unset DILATRON_AUTOTUNE
  build/bin/dilatron bench "${LONGNET[@]}" 2>&1 | tee "$OUT/bench_$tiles.log" || status=1
done
exit $status
