// `dilatron run --device cuda` keeps the cpu contract: same files in, same files out, results within the
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
    for (const char* device : {"cpu", "cuda"}) {
      const CliResult r = run_cli(dir, inputs + fmt::format(" --device {} --out '{}' --lse '{}'", device,
                                                            (dir / (std::string(device) + "_o.npy")).string(),
                                                            (dir / (std::string(device) + "_lse.npy")).string()));
      ASSERT_EQ(r.status, 0) << r.err;
    }
    const npy::Array cpu = npy::load(dir / "cpu_o.npy"), gpu = npy::load(dir / "cuda_o.npy");
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
    const npy::Array cpu_lse = npy::load(dir / "cpu_lse.npy"), gpu_lse = npy::load(dir / "cuda_lse.npy");
    ASSERT_EQ(gpu_lse.shape, cpu_lse.shape);
  }
}
