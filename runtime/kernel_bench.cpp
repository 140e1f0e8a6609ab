#include "runtime/kernel_bench.hpp"

#include <random>
#include <vector>

#include "common/half.hpp"
#include "runtime/driver.hpp"
#include "runtime/launch.hpp"

namespace dilatron {
namespace {

std::size_t elements(const Problem& p, std::int64_t heads) { return std::size_t(p.batch * p.seq_len * heads * p.head_dim); }

}  // namespace

void fill_random(DeviceBuffer& buffer, DType dtype, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<std::uint16_t> block(std::min(std::size_t(1) << 22, buffer.bytes() / 2));
  for (auto& x : block) x = dtype == DType::f16 ? float_to_half_bits(normal(rng)) : float_to_bf16_bits(normal(rng));
  buffer.fill_repeating(block.data(), block.size() * 2);
}

KernelBench::KernelBench(const Problem& problem, DType dtype)
    : problem_(problem),
      dtype_(dtype),
      q_(elements(problem, problem.heads) * 2),
      k_(elements(problem, problem.kv_heads) * 2),
      v_(elements(problem, problem.kv_heads) * 2),
      out_(elements(problem, problem.heads) * 2),
      lse_(std::size_t(problem.batch * problem.heads * problem.seq_len) * 4),
      accumulator_(elements(problem, problem.heads) * 4) {
  fill_random(q_, dtype, 1);
  fill_random(k_, dtype, 2);
  fill_random(v_, dtype, 3);
  // Zero bits: a finite LSE and accumulator for the kernels that fold into them.
  DILATRON_CU(cuMemsetD8Async(reinterpret_cast<CUdeviceptr>(lse_.get()), 0, lse_.bytes(), nullptr));
  DILATRON_CU(cuMemsetD8Async(reinterpret_cast<CUdeviceptr>(accumulator_.get()), 0, accumulator_.bytes(), nullptr));
}

double KernelBench::median_us(const codegen::KernelSpec& spec, const cache::Entry& entry, const TimingOptions& options) {
  const Problem& p = problem_;
  const Shape4 q_shape{p.batch, p.seq_len, p.heads, p.head_dim}, kv_shape{p.batch, p.seq_len, p.kv_heads, p.head_dim};
  const LaunchTensors tensors{TensorView::contiguous(q_.get(), dtype_, q_shape),
                              TensorView::contiguous(k_.get(), dtype_, kv_shape),
                              TensorView::contiguous(v_.get(), dtype_, kv_shape),
                              TensorView::contiguous(out_.get(), dtype_, q_shape), static_cast<float*>(lse_.get()),
                              static_cast<float*>(accumulator_.get())};
  const Launch launch = prepare_launch(spec, entry, p);
  return 1e3 * timer_.median_ms([&] { enqueue(launch, p, tensors, nullptr); }, options.warmup, options.iters);
}

}  // namespace dilatron
