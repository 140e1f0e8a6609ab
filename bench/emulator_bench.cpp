// The emulated device's own speed on this machine (docs/EMULATOR.md): a warp-collective mma.sync per
// second, a __syncthreads per second, and compiling a kernel for the host. It proves kernels correct;
// these figures say how large a case a test can afford, nothing about a GPU.
#include <benchmark/benchmark.h>

#include <string>
#include <vector>

#include "codegen/host_compile.hpp"
#include "emulator/emulated_kernel.hpp"

using namespace dilatron;

namespace {

const char* kKernels = R"(
#include "dilatron/ptx.cuh"
struct Args {
  float* out;
  int steps;
};

// Each warp chains `steps` bf16 m16n8k16 MMAs.
__global__ void mma_chain(Args a) {
  unsigned frag[4] = {0x3f803f80u, 0x3f803f80u, 0x3f803f80u, 0x3f803f80u};
  float d[4] = {0, 0, 0, 0};
  for (int s = 0; s < a.steps; ++s) dilatron::ptx::mma_16816<dilatron::bf16>(d, frag, frag[0], frag[1]);
  a.out[blockIdx.x * blockDim.x + threadIdx.x] = d[0];
}

// Every thread of the CTA meets `steps` barriers.
__global__ void barrier_chain(Args a) {
  for (int s = 0; s < a.steps; ++s) __syncthreads();
  a.out[blockIdx.x * blockDim.x + threadIdx.x] = float(a.steps);
}
)";

struct Args {
  float* out;
  int steps;
};

emulator::EmulatedKernel load(const std::string& name) {
  return emulator::EmulatedKernel(codegen::compile_host_unit(codegen::host_unit(kKernels, name), name).object, name);
}

// 64 CTAs of 4 warps (the shape of a forward tile), on every core.
void run_chain(benchmark::State& state, const char* kernel, std::int64_t per_warp_items) {
  const emulator::EmulatedKernel k = load(kernel);
  constexpr unsigned kCtas = 64, kThreads = 128;
  std::vector<float> out(kCtas * kThreads);
  const Args args{out.data(), int(state.range(0))};
  for (auto _ : state) k.launch(&args, {{kCtas, 1, 1}, {kThreads, 1, 1}, 0});
  state.SetItemsProcessed(state.iterations() * kCtas * (kThreads / 32) * per_warp_items);
}

void BM_EmulatedMma(benchmark::State& state) { run_chain(state, "mma_chain", state.range(0)); }
BENCHMARK(BM_EmulatedMma)->Arg(256)->Unit(benchmark::kMillisecond)->UseRealTime();

// Items: one barrier of one warp (a CTA's barrier counts 4).
void BM_EmulatedBarrier(benchmark::State& state) { run_chain(state, "barrier_chain", state.range(0)); }
BENCHMARK(BM_EmulatedBarrier)->Arg(256)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_HostCompile(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(load("mma_chain"));
}
BENCHMARK(BM_HostCompile)->Unit(benchmark::kMillisecond)->Iterations(3);

}  // namespace

BENCHMARK_MAIN();
