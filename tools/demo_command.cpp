// `dilatron demo`: a small LongNet layer end to end, explaining what it computes and what it cost.
#include <dilatron/reference.hpp>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <chrono>
#include <cmath>
#include <limits>
#include <random>
#include <set>
#include <thread>

#include "common/dtype.hpp"
#include "common/env.hpp"
#include "runtime/driver.hpp"
#include "runtime/problem.hpp"
#include "templates/dilatron/index.cuh"
#include "tools/commands.hpp"
#include "tools/gpu_forward.hpp"
#include "tools/progress.hpp"

namespace dilatron::cli {
namespace {

struct DemoOptions {
  std::int64_t seq_len = 4096, heads = 8, kv_heads = 2, head_dim = 64;
  bool causal = false, quiet = false;
  std::uint64_t seed = 1;
  Device device = Device::cuda;
};

std::vector<std::uint16_t> random_half(std::int64_t count, std::mt19937_64& rng) {
  std::normal_distribution<float> normal;
  std::vector<std::uint16_t> values(static_cast<std::size_t>(count));
  for (auto& x : values) x = float_to_half_bits(normal(rng));
  return values;
}

void demo(const DemoOptions& o) {
  if (o.heads % o.kv_heads != 0) throw UsageError(fmt::format("--kv-heads {} does not divide --heads {}", o.kv_heads, o.heads));
  Config config;
  // LongNet's schedule, scaled down: segment lengths double while dilations double, so every branch
  // attends about the same number of rows per segment and the cost stays linear in N.
  for (int i = 0; i < 4; ++i) {
    config.segments.push_back(o.seq_len >> (3 - i));
    config.dilations.push_back(std::int64_t(1) << i);
  }
  config.causal = o.causal;
  const driver::Status gpu = driver::probe();
  fmt::print("Dilatron demo: a LongNet dilated attention layer on the float64 host reference\n");
  fmt::print("  ({}: {})\n\n", env::emulated_device() ? "checked on" : "GPU",
             gpu.devices.empty() ? gpu.problem : gpu.devices.front().name + ", checked below");

  std::mt19937_64 rng(o.seed);
  const Shape4 q_shape{1, o.seq_len, o.heads, o.head_dim}, kv_shape{1, o.seq_len, o.kv_heads, o.head_dim};
  auto q_data = random_half(o.seq_len * o.heads * o.head_dim, rng);
  auto k_data = random_half(o.seq_len * o.kv_heads * o.head_dim, rng);
  auto v_data = random_half(o.seq_len * o.kv_heads * o.head_dim, rng);
  std::vector<std::uint16_t> out_data(q_data.size());
  std::vector<float> lse_data(std::size_t(o.heads * o.seq_len));
  const auto q = TensorView::contiguous(q_data.data(), DType::f16, q_shape);
  const auto k = TensorView::contiguous(k_data.data(), DType::f16, kv_shape);
  const auto v = TensorView::contiguous(v_data.data(), DType::f16, kv_shape);
  const auto out = TensorView::contiguous(out_data.data(), DType::f16, q_shape);
  const auto lse = TensorView::contiguous(lse_data.data(), DType::f32, {1, o.heads, o.seq_len, 1});
  const Problem p = validate(config, q, k, v, out, &lse);

  fmt::print("input    q [1,{},{},{}], k and v [1,{},{},{}] float16, random normal (seed {}); {} query heads share each kv head\n",
             o.seq_len, o.heads, o.head_dim, o.seq_len, o.kv_heads, o.head_dim, o.seed, o.heads / o.kv_heads);
  fmt::print("config   segments {}  dilations {}  mode longnet  causal {}  scale 1/sqrt({})\n",
             fmt::join(config.segments, ","), fmt::join(config.dilations, ","), o.causal ? "yes" : "no", o.head_dim);
  for (std::size_t i = 0; i < config.branches(); ++i) {
    const std::int64_t w = config.segments[i], r = config.dilations[i];
    std::set<std::int64_t> offsets;
    for (std::int64_t h = 0; h < o.heads; ++h) offsets.insert(index::longnet_offset(h, o.heads, r));
    fmt::print("branch {} w={:<6} r={:<3} {} segment(s); each head attends {} rows per segment; head offsets {{{}}}\n", i, w,
               r, index::num_segments(o.seq_len, w), index::selected_count(w, 0, r), fmt::join(offsets, ","));
  }

  const auto start = std::chrono::steady_clock::now();
  {
    ProgressLine progress("forward", !o.quiet);
    reference_forward(config, q, k, v, out, &lse, 0,
                      [&](std::int64_t done, std::int64_t total) { progress.update(done, total); });
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  const std::int64_t pairs = attended_pairs(config, o.seq_len, o.heads);
  const double dense_pairs = double(o.heads) * double(o.seq_len) * double(o.causal ? (o.seq_len + 1) / 2.0 : o.seq_len);
  fmt::print("\nwork     {} query-key pairs ({:.1f}% of dense attention), {:.2f} GFLOP at 4*D per pair\n", pairs,
             100.0 * double(pairs) / dense_pairs, 4.0 * double(p.head_dim) * double(pairs) * 1e-9);
  fmt::print("forward  {:.2f} s on {} host threads in float64\n", seconds, std::max(1u, std::thread::hardware_concurrency()));

  double abs_sum = 0;
  for (std::uint16_t x : out_data) abs_sum += std::fabs(half_bits_to_float(x));
  float lo = std::numeric_limits<float>::infinity(), hi = -lo;
  std::int64_t unselected = 0;
  for (float x : lse_data) {
    if (std::isinf(x)) {
      ++unselected;
      continue;
    }
    lo = std::min(lo, x);
    hi = std::max(hi, x);
  }
  fmt::print("output   mean |O| {:.4f}; LSE in [{:.3f}, {:.3f}]; {} (head, row) pairs selected by no branch\n",
             abs_sum / double(out_data.size()), lo, hi, unselected);
  if (!gpu.devices.empty()) {
    std::vector<std::uint16_t> gpu_out(out_data.size());
    std::vector<float> gpu_lse(lse_data.size());
    const auto gpu_out_view = TensorView::contiguous(gpu_out.data(), DType::f16, q_shape);
    const auto gpu_lse_view = TensorView::contiguous(gpu_lse.data(), DType::f32, lse.shape);
    const auto gpu_start = std::chrono::steady_clock::now();
    gpu_forward(config, q, k, v, gpu_out_view, &gpu_lse_view);
    const double gpu_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - gpu_start).count();
    double diff = 0, norm = 0;
    for (std::size_t i = 0; i < out_data.size(); ++i) {
      const double want = half_bits_to_float(out_data[i]), got = half_bits_to_float(gpu_out[i]);
      diff += (got - want) * (got - want);
      norm += want * want;
    }
    fmt::print("{} {} ({}): {:.1f} ms including JIT, transfers and module load; relative error vs the "
               "reference {:.2e}\n",
               env::emulated_device() ? "emulated" : "GPU     ", gpu.devices.front().name,
               driver::arch_name(gpu.devices.front().cc_major, gpu.devices.front().cc_minor),
               gpu_seconds * 1e3, std::sqrt(diff / norm));
  }
  fmt::print("\nNext: `dilatron run --device cpu|cuda|emulator` on your own .npy tensors; `dilatron bench`; `dilatron info`.\n");
}

}  // namespace

void add_demo(CLI::App& app) {
  auto options = std::make_shared<DemoOptions>();
  CLI::App* cmd = app.add_subcommand("demo", "Run a small LongNet configuration end to end and explain it");
  cmd->add_option("--seq-len", options->seq_len,
                  "sequence length N; the branches have segments N/8, N/4, N/2, N and dilations 1, 2, 4, 8")
      ->capture_default_str()
      ->transform(integer_in(8, std::int64_t(1) << 20));
  cmd->add_option("--heads", options->heads, "query heads H")->capture_default_str()->transform(integer_in(1, 256));
  cmd->add_option("--kv-heads", options->kv_heads, "key/value heads (divides H)")->capture_default_str()
      ->transform(integer_in(1, 256));
  cmd->add_option("--head-dim", options->head_dim, "head dimension D")->capture_default_str()->transform(positive_integer(512));
  cmd->add_flag("--causal", options->causal, "causal masking");
  cmd->add_option("--seed", options->seed, "random seed")
      ->capture_default_str()
      ->transform(integer_in(0, std::numeric_limits<std::int64_t>::max()));
  add_device(cmd, options->device, false,
             "where the kernels check the reference: cuda (this machine's GPU, when it has one) or emulator (the same "
             "kernels on the CPU, slow: try --seq-len 512)");
  cmd->add_flag("--quiet,-q", options->quiet, "no progress line");
  cmd->callback([options] { demo(*options); });
}

}  // namespace dilatron::cli
