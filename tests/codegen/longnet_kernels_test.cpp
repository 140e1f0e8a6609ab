// Every forward kernel of the LongNet configuration (segments 2048..32768, dilations 1,2,4,6,12) compiles
// for sm_80 and sm_90a, for head dims 64, 96, 128 and 256, bf16 and fp16, causal or not, with zero spill
// bytes; every backward kernel too, for head dims 64, 96 and 128.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <thread>

#include "autotune/required_kernels.hpp"
#include "codegen/compiler.hpp"

using namespace dilatron;

namespace {

// Compiles every spec (in parallel) and fails naming each one that spills, uses a stack frame or fails.
void expect_no_spills(const std::vector<codegen::KernelSpec>& specs) {
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

// The LongNet configuration's workloads over archs, head dims, dtypes and causality.
std::vector<autotune::Workload> longnet_workloads(std::initializer_list<int> head_dims) {
  std::vector<autotune::Workload> out;
  for (const char* arch : {"sm_80", "sm_90a"}) {
    for (int head_dim : head_dims) {
      for (DType dtype : {DType::bf16, DType::f16}) {
        for (bool causal : {false, true}) {
          autotune::Workload w;
          w.config.segments = {2048, 4096, 8192, 16384, 32768};
          w.config.dilations = {1, 2, 4, 6, 12};
          w.config.causal = causal;
          w.head_dim = head_dim;
          w.dtype = dtype;
          w.arch = arch;
          out.push_back(w);
        }
      }
    }
  }
  return out;
}

}  // namespace

TEST(LongNetKernels, CompileWithoutSpillsForSm80AndSm90a) {
  std::vector<codegen::KernelSpec> specs;
  for (const autotune::Workload& w : longnet_workloads({64, 96, 128, 256})) {
    for (auto& spec : autotune::forward_kernels(w)) specs.push_back(spec);
  }
  ASSERT_EQ(specs.size(), 2u * 4 * 2 * 2 * 6) << "partial, four merges and finish_output per variant";
  expect_no_spills(specs);
}

// The backward pass's kernels likewise, for the head dims it takes (64, 96, 128). gradient_prepare and
// finish_output do not depend on causality: listed once.
TEST(LongNetKernels, BackwardCompilesWithoutSpillsForSm80AndSm90a) {
  std::vector<codegen::KernelSpec> specs;
  for (const autotune::Workload& w : longnet_workloads({64, 96, 128})) {
    for (auto& spec : autotune::backward_kernels(w)) {
      if (std::find(specs.begin(), specs.end(), spec) == specs.end()) specs.push_back(spec);
    }
  }
  ASSERT_EQ(specs.size(), 2u * 3 * 2 * (2 + 2 * 5)) << "prepare, finish and five branches causal or not per variant";
  expect_no_spills(specs);
}
