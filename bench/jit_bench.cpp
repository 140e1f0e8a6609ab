// JIT pipeline costs on the host: cold NVRTC compile per kernel, a disk hit (read + verify), and an
// in-memory lookup. Targets: lookup <= 1 us, disk hit <= 2 ms, cold compile <= 1.5 s per kernel.
#include <benchmark/benchmark.h>

#include <filesystem>
#include <random>

#include "autotune/required_kernels.hpp"
#include "cache/kernel_cache.hpp"
#include "codegen/compiler.hpp"

using namespace dilatron;

namespace {

std::filesystem::path scratch_dir() {
  static const std::filesystem::path dir = [] {
    auto d = std::filesystem::temp_directory_path() / ("dilatron-bench-" + std::to_string(std::random_device{}()));
    std::filesystem::create_directories(d);
    return d;
  }();
  return dir;
}

// The LongNet configuration's forward kernels, as `cache warm` would build them.
const std::vector<codegen::KernelSpec>& longnet_kernels() {
  static const std::vector<codegen::KernelSpec> specs = [] {
    autotune::Workload w;
    w.config.segments = {2048, 4096, 8192, 16384, 32768};
    w.config.dilations = {1, 2, 4, 6, 12};
    return autotune::required_kernels(w);
  }();
  return specs;
}

cache::CacheOptions options() {
  cache::CacheOptions o;
  o.dir = scratch_dir();
  o.max_bytes = 1 << 30;
  o.compile_jobs = 1;
  return o;
}

void BM_ColdCompile(benchmark::State& state) {
  const codegen::KernelSpec& spec = longnet_kernels()[std::size_t(state.range(0))];
  state.SetLabel(spec.label());
  for (auto _ : state) benchmark::DoNotOptimize(codegen::compile(spec));
}
BENCHMARK(BM_ColdCompile)->DenseRange(0, 4)->Unit(benchmark::kMillisecond)->Iterations(3);

void BM_DiskHit(benchmark::State& state) {
  const codegen::KernelSpec& spec = longnet_kernels().front();
  cache::KernelCache(options()).get(spec);  // make sure it is on disk
  for (auto _ : state) {
    cache::KernelCache fresh(options());  // an empty memory layer each time
    const cache::Lookup found = fresh.get(spec);
    if (found.source != cache::Source::disk) state.SkipWithError("expected a disk hit");
  }
}
BENCHMARK(BM_DiskHit)->Unit(benchmark::kMicrosecond);

void BM_MemoryLookup(benchmark::State& state) {
  cache::KernelCache cache(options());
  const codegen::KernelSpec& spec = longnet_kernels().front();
  cache.get(spec);
  for (auto _ : state) benchmark::DoNotOptimize(cache.get(spec));
}
BENCHMARK(BM_MemoryLookup)->Unit(benchmark::kNanosecond);

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  std::filesystem::remove_all(scratch_dir());
}
