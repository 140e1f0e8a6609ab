#!/usr/bin/env bash
# On the development machine, no GPU needed: everything bench/device_run.sh needs on a GPU machine, in
# build-gpu/, to carry there (a device call takes at most 64 MiB along):
#   bin/            dilatron, test_gpu and dilatron_jit_bench from a portable Release build (build-portable/:
#                   libstdc++ and libgcc linked in, so nothing depends on that machine's)
#   lib/            libdilatron_c.so and the one shared library a binary needs beyond the system's
#   COMMIT          the commit built (with -dirty for uncommitted changes), for the result rows
#   kernels.bundle  the kernels for sm_90a (`cache export`), so the GPU's minutes run kernels instead of
#                   compiling them: every kernel the GPU tests compile at the GPU's sizes, and every
#                   configuration the bench part runs
# First it rehearses the GPU tests at the GPU's sizes on the emulated device (DILATRON_TEST_SIZES=gpu,
# docs/EMULATOR.md; about 10 minutes on 2 cores, less when its cache in build-portable/ is warm;
# REHEARSE=0 skips it): a case that fails there would fail on the GPU, so it stops here, and the
# rehearsal's kernel cache lists the kernels those cases compile.
# Then carry build-gpu and run: DILATRON_BUILD=build-gpu bash bench/device_run.sh tests (then bench, tune).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/cuda/bin:$PATH
ARCH=${ARCH:-sm_90a}
REHEARSAL=build-portable/gpu-size-kernel-cache
LIMIT_MIB=60  # of the 64 MiB a call carries, with room for the working tree

cmake -S . -B build-portable -G Ninja -DDILATRON_PORTABLE=ON -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build-portable --target dilatron_cli test_gpu dilatron_c dilatron_jit_bench
if [[ ${REHEARSE:-1} != 0 ]]; then
  echo "rehearsing the GPU tests at the GPU's sizes on the emulated device"
  if ! DILATRON_TEST_SIZES=gpu DILATRON_DEVICE=emulator DILATRON_CACHE_DIR=$REHEARSAL \
       DILATRON_CLI=$PWD/build-portable/bin/dilatron build-portable/bin/test_gpu --gtest_brief=1; then
    echo "the GPU tests fail at the GPU's sizes on the emulated device: fix that before spending GPU time" >&2
    exit 1
  fi
elif [[ ! -d $REHEARSAL ]]; then
  echo "REHEARSE=0 with no earlier rehearsal in $REHEARSAL: the GPU tests' kernels will compile on the GPU" >&2
fi

rm -rf build-gpu
mkdir -p build-gpu/bin build-gpu/lib
cp build-portable/bin/{dilatron,test_gpu,dilatron_jit_bench} build-gpu/bin/
cp -P build-portable/lib/libdilatron_c.so* build-gpu/lib/
benchmark=$(ldd build-portable/bin/dilatron_jit_bench | awk '/libbenchmark/ {print $3}')
cp -L "$benchmark" build-gpu/lib/
strip --strip-unneeded build-gpu/bin/* build-gpu/lib/*
# The commit built, for the result rows: a device machine's copy of the tree has no git history.
echo "$(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo -dirty)" >build-gpu/COMMIT

dilatron=build-gpu/bin/dilatron
cache=$(mktemp -d)
trap 'rm -rf "$cache"' EXIT
# The summary and any failure of each warm, without its line per kernel.
warm() { "$dilatron" cache warm --arch "$ARCH" --cache-dir "$cache" "$@" 2>&1 | grep -v '^\[[0-9]*/[0-9]*\]'; }
if [[ -d $REHEARSAL ]]; then
  "$dilatron" cache ls --specs --cache-dir "$REHEARSAL" >build-gpu/test-kernels.txt
  warm --kernels build-gpu/test-kernels.txt
fi
LONGNET=(--segments 2048,4096,8192,16384,32768 --dilations 1,2,4,6,12)
for causal in "" --causal; do
  warm "${LONGNET[@]}" $causal --backward --decode
  for n in 8192 16384 32768; do warm --segments $n --dilations 1 $causal --backward; done
done
warm "${LONGNET[@]}" --ranks 6 --backward
warm --segments 32768 --dilations 1 --ranks 4 --backward
"$dilatron" cache export build-gpu/kernels.bundle --cache-dir "$cache"

mib=$(du -sm build-gpu | cut -f1)
echo "build-gpu: ${mib} MiB (carry at most ${LIMIT_MIB})"
du -sh build-gpu/bin/* build-gpu/lib/* build-gpu/kernels.bundle
((mib <= LIMIT_MIB)) || { echo "build-gpu is over ${LIMIT_MIB} MiB: it cannot travel with a device call" >&2; exit 1; }
