#!/usr/bin/env bash
# On a GPU machine, in parts that each fit one device call:
#   tests  the GPU tests (4 shards at once), the PyTorch op's tests, the demo, compute-sanitizer's memcheck
#          and racecheck over a small filter, and the GPU against the emulator and the float64 reference
#          on the same small cases (bench/agreement.py)
#   bench  the JIT's costs on this machine (cold compile, disk hit, lookup), `dilatron bench` and the
#          PyTorch comparison (forward, backward and the op; default tiles), a packed batch against
#          per-document calls and padding (`bench --packed`), decoding with the KV cache against dense SDPA
#          (bench/compare_decode.py), and the ring on this GPU over the Local transport (`bench --ranks`);
#          NCCL rows need several GPUs and one process per GPU, which this script does not launch
#   tune   a tune of the LongNet configuration, then its forward pass with and without the winners
#   all    the three in order (the default)
# Prepare on the development machine, no GPU needed: `bash bench/device_prepare.sh` fills build-gpu/ (a
# portable build and a kernel bundle for sm_90a, under 64 MiB), then carry build-gpu and run
#   DILATRON_BUILD=build-gpu bash bench/device_run.sh tests
# Every step runs under a time limit, and the part under DEVICE_RUN_SECONDS (default 540) in all, so a
# hung or slow step costs its own minutes only. What comes back (at most 8 files, in $OUT, default
# bench-out/): steps.log (each step: ok or FAILED, seconds), info.log, one log per part, results.md
# (the PyTorch comparison's rows), decode.md and agreement.md.
set -uo pipefail
cd "$(dirname "$0")/.."
part=${1:-all}
case $part in tests|bench|tune|all) ;; *) echo "usage: $0 [tests|bench|tune|all]" >&2; exit 2 ;; esac
OUT=${OUT:-bench-out}
BUILD=${DILATRON_BUILD:-build}
mkdir -p "$OUT"
[[ -d /usr/local/cuda/bin ]] && export PATH=$PATH:/usr/local/cuda/bin  # compute-sanitizer
export PYTHONUNBUFFERED=1 LD_LIBRARY_PATH=$PWD/$BUILD/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export DILATRON_CLI=$PWD/$BUILD/bin/dilatron DILATRON_LIBRARY=$PWD/$BUILD/lib/libdilatron_c.so
# One kernel cache for all parts, so a later part on a still-warm machine reuses what an earlier compiled.
export DILATRON_CACHE_DIR=${DILATRON_CACHE_DIR:-/tmp/dilatron-device-cache}
LONGNET=(--segments 2048,4096,8192,16384,32768 --dilations 1,2,4,6,12 --seq-len 262144 --heads 16)
deadline=$((SECONDS + ${DEVICE_RUN_SECONDS:-540}))
status=0

# step LOG LIMIT NAME COMMAND: COMMAND (shell text) with its output appended to $OUT/LOG, stopped after
# LIMIT seconds or at the part's deadline; its outcome and time go to steps.log.
step() {
  local log=$1 limit=$2 name=$3 command=$4 start=$SECONDS rc
  ((limit > deadline - SECONDS - 5)) && limit=$((deadline - SECONDS - 5))
  if ((limit < 10)); then
    printf '%-30s skipped: the part is out of time\n' "$name" | tee -a "$OUT/steps.log"
    status=1
    return
  fi
  echo "=== $name: $command" >>"$OUT/$log"
  timeout --kill-after=10 "$limit" bash -c "$command" 2>&1 | tee -a "$OUT/$log"
  rc=${PIPESTATUS[0]}
  printf '%-30s %-12s %4d s\n' "$name" "$( ((rc == 0)) && echo ok || { ((rc == 124)) && echo "TIMED OUT" || echo "FAILED ($rc)"; })" \
    $((SECONDS - start)) | tee -a "$OUT/steps.log"
  ((rc == 0)) || status=1
}

# The GPU tests in four processes at once: compiling the kernels the bundle lacks is most of their
# time, and it overlaps. Each shard's log follows the others', also when the step's time runs out (then
# the last test a shard started is the one that hung or was slow).
gpu_tests() {
  local dir rc=0 i
  dir=$(mktemp -d)
  show() { for i in 0 1 2 3; do echo "--- shard $i"; cat "$dir/$i.log"; done; }
  trap 'show; exit 124' TERM
  for i in 0 1 2 3; do
    GTEST_TOTAL_SHARDS=4 GTEST_SHARD_INDEX=$i "$BUILD/bin/test_gpu" >"$dir/$i.log" 2>&1 &
  done
  for i in 0 1 2 3; do wait -n || rc=1; done
  show
  return $rc
}
export -f gpu_tests
export BUILD

# The commit measured, for every result row: the one device_prepare.sh built, else git's.
DILATRON_COMMIT=$(cat "$BUILD/COMMIT" 2>/dev/null || git rev-parse --short HEAD 2>/dev/null || echo unknown)
export DILATRON_COMMIT
{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  echo "commit $DILATRON_COMMIT"
  "$BUILD/bin/dilatron" info
} 2>&1 | tee "$OUT/info.log"
# NCCL for the NCCL transport's test: the toolkit's, else the one PyTorch's wheels bring.
if [[ -z ${DILATRON_NCCL_LIBRARY:-} ]] && ! ldconfig -p | grep -q libnccl.so.2; then
  nccl=$(python3 -c 'import glob, site; print(next(iter(sorted(f for d in site.getsitepackages() for f in glob.glob(d + "/nvidia/nccl*/lib/libnccl.so.2"))), ""))' 2>/dev/null)
  [[ -n $nccl ]] && export DILATRON_NCCL_LIBRARY=$nccl
fi
# The kernels device_prepare.sh compiled for this arch, once per machine.
if [[ -f $BUILD/kernels.bundle && ! -d $DILATRON_CACHE_DIR ]]; then
  step info.log 120 "cache import" "'$BUILD/bin/dilatron' cache import '$BUILD/kernels.bundle'"
fi

if [[ $part == tests || $part == all ]]; then
  step tests.log 240 "gpu tests" gpu_tests
  step tests.log 120 "torch op tests" "cd tests/python && python3 -m unittest -v test_torch_op test_torch_varlen test_torch_decode"
  step tests.log 60 "demo" "'$BUILD/bin/dilatron' demo"
  # Small cases of every kernel family; the sanitizer's own error count decides the step.
  SMALL='GpuForward.LongNetScheduleWithoutAnLseTensor:GpuBackward.LongNetScheduleWithGqa:GpuVarlen.KernelsSkipASequenceWithBadOffsets:GpuDecode.PromptThenTokensEqualTheHostCache:GpuRing.EveryStepRunsOnTheTiledKernels'
  for tool in memcheck racecheck; do
    step tests.log 120 "compute-sanitizer $tool" \
      "compute-sanitizer --tool $tool --error-exitcode 1 '$BUILD/bin/test_gpu' --gtest_brief=1 --gtest_filter='$SMALL'"
  done
  step tests.log 150 "gpu vs emulator vs cpu" "python3 bench/agreement.py --out '$OUT/agreement.md'"
fi
if [[ $part == bench || $part == all ]]; then
  step bench.log 60 "jit costs" "'$BUILD/bin/dilatron_jit_bench' --benchmark_min_time=0.2"
  # Default tiles, whatever a tune of an earlier run left in the cache.
  export DILATRON_AUTOTUNE=0
  step bench.log 60 "cli bench longnet" "'$BUILD/bin/dilatron' bench ${LONGNET[*]}"
  step bench.log 180 "compare torch" \
    "python3 bench/compare_torch.py --lib '$DILATRON_LIBRARY' --backward --torch-op --out '$OUT/results.md'"
  # A packed batch of 15 documents (1K..64K rows, 256K in all) on the LongNet preset: the packed call
  # against a loop of per-document calls and against padding to the longest, forward and forward + backward.
  PACKED="--segments 2048,4096,8192,16384,32768 --dilations 1,2,4,6,12 --heads 16 --dense-limit 0
          --packed 65536,65536,32768,32768,16384,16384,8192,8192,4096,4096,2048,2048,1024,1024,2048"
  for pass in "" --backward; do
    step bench.log 60 "packed bench $pass" "'$BUILD/bin/dilatron' bench $PACKED $pass"
  done
  # Generation: tokens/s of one layer after 32K and 1M cached tokens, the bounded cache against dense SDPA
  # over the whole cache and against re-gathering the history every step (torchscale's way).
  step bench.log 90 "compare decode" "python3 bench/compare_decode.py --out '$OUT/decode.md'"
  # The ring over the Local transport on this GPU against DilatedAttention timed the same way (host clock):
  # P = 1, 2, 4, 6 on LongNet (P = 6 cuts segments: 50 blocks travel) and P = 1, 2, 4 on dense attention
  # (w = N: every step after the first attends a whole shard received), forward, then forward + backward.
  for pass in "" --backward; do
    step bench.log 60 "ring bench longnet $pass" "'$BUILD/bin/dilatron' bench ${LONGNET[*]} --dense-limit 0 --ranks 6 $pass"
    step bench.log 60 "ring bench dense $pass" \
      "'$BUILD/bin/dilatron' bench --segments 32768 --dilations 1 --seq-len 32768 --heads 16 --dense-limit 0 --ranks 4 $pass"
  done
  unset DILATRON_AUTOTUNE
fi
if [[ $part == tune || $part == all ]]; then
  # Every candidate of the five kernels, then default and tuned forward passes back to back.
  step tune.log 300 "tune longnet" "'$BUILD/bin/dilatron' tune ${LONGNET[*]}"
  step tune.log 60 "bench default tiles" "DILATRON_AUTOTUNE=0 '$BUILD/bin/dilatron' bench ${LONGNET[*]}"
  step tune.log 60 "bench tuned tiles" "'$BUILD/bin/dilatron' bench ${LONGNET[*]}"
fi
echo "--- steps"
cat "$OUT/steps.log"
exit $status
