// `dilatron run --device cuda` (one GPU, and --ranks 3 on it) keeps the cpu contract: same files in, same files out, results within the
// GPU tolerance of the host reference. Skipped without a GPU.
#include <gtest/gtest.h>

#include <random>

#include "common/atomic_file.hpp"
#include "runtime/driver.hpp"
#include "tests/support/cli.hpp"
#include "tests/support/random_case.hpp"
#include "tools/npy.hpp"

using namespace dilatron;
using namespace dilatron::test;

TEST(CliGpu, RunOnCudaMatchesRunOnCpu) {
  if (driver::probe().devices.empty()) GTEST_SKIP() << "no GPU";
  TempDir dir;
  std::mt19937_64 rng(8);
  for (DType dtype : {DType::f16, DType::f32}) {
    const std::vector<std::int64_t> q_shape{1, 300, 4, 64}, kv_shape{1, 300, 2, 64};
    for (const auto& [name, shape] : {std::pair{"q", q_shape}, std::pair{"k", kv_shape}, std::pair{"v", kv_shape}}) {
      const auto data = random_tensor(shape[0] * shape[1] * shape[2] * shape[3], dtype, 1.0, rng);
      AtomicFile file(dir / (std::string(name) + ".npy"));
      npy::write(file, dtype, shape, data.data());
      file.commit();
    }
    const std::string inputs = fmt::format("run --q '{}' --k '{}' --v '{}' --segments 64,128,300 --dilations 1,3,5 --causal",
                                           (dir / "q.npy").string(), (dir / "k.npy").string(), (dir / "v.npy").string());
    // One GPU, then 3 ranks on it over the Local transport.
    for (const char* device : {"cpu", "cuda", "cuda --ranks 3"}) {
      const std::string tag = std::string(device).substr(0, 4) + (std::string(device).size() > 4 ? "3" : "");
      const CliResult r = run_cli(dir, inputs + fmt::format(" --device {} --out '{}' --lse '{}'", device,
                                                            (dir / (tag + "_o.npy")).string(),
                                                            (dir / (tag + "_lse.npy")).string()));
      ASSERT_EQ(r.status, 0) << device << ": " << r.err;
    }
    for (const char* tag : {"cuda", "cuda3"}) {
    SCOPED_TRACE(tag);
    const npy::Array cpu = npy::load(dir / "cpu_o.npy"), gpu = npy::load(dir / (std::string(tag) + "_o.npy"));
    ASSERT_EQ(gpu.dtype, dtype);
    ASSERT_EQ(gpu.shape, cpu.shape);
    double diff = 0, norm = 0;
    for (std::int64_t i = 0; i < cpu.numel(); ++i) {
      const double want = load_element(cpu.data.data(), cpu.dtype, i), got = load_element(gpu.data.data(), gpu.dtype, i);
      diff += (got - want) * (got - want);
      norm += want * want;
    }
    // float32 files run in bfloat16 on the GPU.
    EXPECT_LE(std::sqrt(diff / norm), dtype == DType::f16 ? 3e-3 : 1e-2) << to_string(dtype);
    const npy::Array cpu_lse = npy::load(dir / "cpu_lse.npy"), gpu_lse = npy::load(dir / (std::string(tag) + "_lse.npy"));
    ASSERT_EQ(gpu_lse.shape, cpu_lse.shape);
    double lse_diff = 0;
    for (std::int64_t i = 0; i < cpu_lse.numel(); ++i) {
      const double want = load_element(cpu_lse.data.data(), DType::f32, i), got = load_element(gpu_lse.data.data(), DType::f32, i);
      lse_diff = std::max(lse_diff, std::isinf(want) ? (got == want ? 0.0 : 1.0) : std::fabs(got - want) / std::max(1.0, std::fabs(want)));
    }
    EXPECT_LE(lse_diff, 1e-2);
    }
  }
}
