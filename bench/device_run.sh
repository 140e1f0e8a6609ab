#!/usr/bin/env bash
# On a GPU machine, in parts that each fit one device call (logs under $OUT, default bench-out/):
#   tests  the GPU tests, the PyTorch op's tests, the demo
#   bench  `dilatron bench` and the PyTorch comparison (forward, backward and the op; default tiles), a
#          packed batch against per-document calls and padding (`bench --packed`), decoding with the KV
#          cache against dense SDPA (bench/compare_decode.py), and the ring on this GPU over the Local
#          transport (`bench --ranks`); NCCL rows need several GPUs and one process per GPU, which this
#          script does not launch
#   tune   a tune of the LongNet configuration, then its forward pass with and without the winners
#   all    the three in order (the default)
# Build on the development machine and carry build/:
#   cmake -S . -B build -G Ninja -DDILATRON_PORTABLE=ON && cmake --build build
# (DILATRON_PORTABLE links libstdc++ statically, so the binaries do not depend on the GPU machine's).
set -uo pipefail
cd "$(dirname "$0")/.."
part=${1:-all}
case $part in tests|bench|tune|all) ;; *) echo "usage: $0 [tests|bench|tune|all]" >&2; exit 2 ;; esac
OUT=${OUT:-bench-out}
mkdir -p "$OUT"
# One kernel cache for all parts, so a later part on a still-warm machine reuses what an earlier compiled.
export DILATRON_CACHE_DIR=${DILATRON_CACHE_DIR:-$PWD/build/device-cache} DILATRON_CLI=$PWD/build/bin/dilatron
LONGNET=(--segments 2048,4096,8192,16384,32768 --dilations 1,2,4,6,12 --seq-len 262144 --heads 16)
status=0
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  build/bin/dilatron info
} 2>&1 | tee "$OUT/info.log"

if [[ $part == tests || $part == all ]]; then
  build/bin/test_gpu --gtest_brief=1 2>&1 | tee "$OUT/gpu_tests.log" || status=1
  (cd tests/python && DILATRON_LIBRARY=$PWD/../../build/lib/libdilatron_c.so python3 -m unittest -v test_torch_op test_torch_varlen test_torch_decode) 2>&1 |
    tee "$OUT/torch_op_tests.log" || status=1
  build/bin/dilatron demo 2>&1 | tee "$OUT/demo.log" || status=1
fi
if [[ $part == bench || $part == all ]]; then
  # Default tiles, whatever a tune of an earlier run left in the cache.
  DILATRON_AUTOTUNE=0 build/bin/dilatron bench "${LONGNET[@]}" 2>&1 | tee "$OUT/cli_bench.log" || status=1
  DILATRON_AUTOTUNE=0 python3 bench/compare_torch.py --backward --torch-op --out "$OUT/results.md" 2>&1 |
    tee "$OUT/bench.log" || status=1
  # The ring over the Local transport on this GPU against DilatedAttention timed the same way (host clock):
  # P = 1, 2, 4, 6 on LongNet (P = 6 cuts segments: 50 blocks travel) and P = 1, 2, 4 on dense attention
  # (w = N: every step after the first attends a whole shard received), forward, then forward + backward.
  # A packed batch of 15 documents (1K..64K rows, 256K in all) on the LongNet preset: the packed call
  # against a loop of per-document calls and against padding to the longest, forward and forward + backward.
  PACKED=(--segments 2048,4096,8192,16384,32768 --dilations 1,2,4,6,12 --heads 16 --dense-limit 0
          --packed 65536,65536,32768,32768,16384,16384,8192,8192,4096,4096,2048,2048,1024,1024,2048)
  for pass in "" --backward; do
    DILATRON_AUTOTUNE=0 build/bin/dilatron bench "${PACKED[@]}" $pass 2>&1 | tee -a "$OUT/packed_bench.log" || status=1
  done
  # Generation: tokens/s of one layer after 32K and 1M cached tokens, the bounded cache against dense SDPA
  # over the whole cache and against re-gathering the history every step (torchscale's way).
  DILATRON_LIBRARY=$PWD/build/lib/libdilatron_c.so python3 bench/compare_decode.py --out "$OUT/decode.md" 2>&1 |
    tee "$OUT/decode.log" || status=1
  DENSE_RING=(--segments 32768 --dilations 1 --seq-len 32768 --heads 16 --dense-limit 0)
  for pass in "" --backward; do
    DILATRON_AUTOTUNE=0 build/bin/dilatron bench "${LONGNET[@]}" --dense-limit 0 --ranks 6 $pass 2>&1 |
      tee -a "$OUT/ring_bench.log" || status=1
    DILATRON_AUTOTUNE=0 build/bin/dilatron bench "${DENSE_RING[@]}" --ranks 4 $pass 2>&1 |
      tee -a "$OUT/ring_bench.log" || status=1
  done
fi
if [[ $part == tune || $part == all ]]; then
  # Every candidate of the five kernels, then default and tuned forward passes back to back.
  build/bin/dilatron tune "${LONGNET[@]}" 2>&1 | tee "$OUT/tune.log" || status=1
  for tiles in default tuned; do
    [ $tiles = default ] && export DILATRON_AUTOTUNE=0 || unset DILATRON_AUTOTUNE
    build/bin/dilatron bench "${LONGNET[@]}" 2>&1 | tee "$OUT/bench_$tiles.log" || status=1
  done
fi
exit $status
