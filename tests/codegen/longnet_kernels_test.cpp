// Every forward kernel of the LongNet configuration (segments 2048..32768, dilations 1,2,4,6,12) compiles
// for sm_80 and sm_90a, for head dims 64, 96, 128 and 256, bf16 and fp16, causal or not, with zero spill bytes.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <atomic>
#include <mutex>
#include <thread>

#include "autotune/required_kernels.hpp"
#include "codegen/compiler.hpp"

using namespace dilatron;

TEST(LongNetKernels, CompileWithoutSpillsForSm80AndSm90a) {
  std::vector<codegen::KernelSpec> specs;
  for (const char* arch : {"sm_80", "sm_90a"}) {
    for (int head_dim : {64, 96, 128, 256}) {
      for (DType dtype : {DType::bf16, DType::f16}) {
        for (bool causal : {false, true}) {
          autotune::Workload w;
          w.config.segments = {2048, 4096, 8192, 16384, 32768};
          w.config.dilations = {1, 2, 4, 6, 12};
          w.config.causal = causal;
          w.head_dim = head_dim;
          w.dtype = dtype;
          w.arch = arch;
          for (auto& spec : autotune::forward_kernels(w)) specs.push_back(spec);
        }
      }
    }
  }
  ASSERT_EQ(specs.size(), 2u * 4 * 2 * 2 * 6) << "partial, four merges and finish_output per variant";
  std::atomic<std::size_t> next{0};
  std::mutex mutex;
  std::vector<std::string> failures;
  auto worker = [&] {
    for (std::size_t i = next++; i < specs.size(); i = next++) {
      std::string problem;
      try {
        const codegen::CompiledKernel k = codegen::compile(specs[i]);
        if (k.report.spill_bytes != 0 || k.report.stack_bytes != 0 || k.report.registers == 0) {
          problem = fmt::format("{} registers, {} spill bytes, {} stack bytes", k.report.registers, k.report.spill_bytes,
                                k.report.stack_bytes);
        }
      } catch (const std::exception& e) {
        problem = e.what();
      }
      if (!problem.empty()) {
        std::lock_guard lock(mutex);
        failures.push_back(specs[i].canonical() + ": " + problem);
      }
    }
  };
  std::vector<std::thread> pool;
  for (unsigned t = 1; t < std::max(2u, std::thread::hardware_concurrency()); ++t) pool.emplace_back(worker);
  worker();
  for (std::thread& t : pool) t.join();
  for (const std::string& f : failures) ADD_FAILURE() << f;
}
