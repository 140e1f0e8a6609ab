#include "tools/bench_passes.hpp"

#include <dilatron/dilatron.hpp>
#include <dilatron/error.hpp>
#include <dilatron/ring.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <limits>

#include "common/dtype.hpp"
#include "common/parallel.hpp"
#include "runtime/driver.hpp"
#include "runtime/gpu_timer.hpp"
#include "runtime/kernel_bench.hpp"
#include "runtime/problem.hpp"
#include "runtime/ring/device_sync.hpp"
#include "runtime/ring/local_communicator.hpp"
#include "runtime/ring/partition.hpp"

namespace dilatron::cli {
namespace {

// The median of `iters` passes after `warmup`, each timed from a drained device to the pass's return.
double wall_median_ms(const std::function<void()>& pass, int warmup, int iters) {
  for (int i = 0; i < warmup; ++i) pass();
  std::vector<double> ms;
  for (int i = 0; i < iters; ++i) {
    DILATRON_CU(cuCtxSynchronize());
    const auto start = std::chrono::steady_clock::now();
    pass();
    DILATRON_CU(cuCtxSynchronize());
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
  }
  std::nth_element(ms.begin(), ms.begin() + iters / 2, ms.end());
  return ms[std::size_t(iters / 2)];
}

std::string pass_name(const BenchShape& shape) { return shape.backward ? " forward+backward" : ""; }

}  // namespace

BenchTensors::BenchTensors(const BenchShape& s) {
  const Shape4 q_shape{s.batch, s.seq_len, s.heads, s.head_dim}, kv_shape{s.batch, s.seq_len, s.kv_heads, s.head_dim};
  unsigned seed = 1;
  const auto make = [&](const Shape4& shape, DType dtype, bool random) {
    buffers_.push_back(std::make_unique<DeviceBuffer>(std::size_t(shape[0] * shape[1] * shape[2] * shape[3]) * dtype_size(dtype)));
    if (random) fill_random(*buffers_.back(), dtype, seed++);
    return TensorView::contiguous(buffers_.back()->get(), dtype, shape);
  };
  q = make(q_shape, s.dtype, true);
  k = make(kv_shape, s.dtype, true);
  v = make(kv_shape, s.dtype, true);
  out = make(q_shape, s.dtype, true);
  lse = make({s.batch, s.heads, s.seq_len, 1}, DType::f32, false);
  if (!s.backward) return;
  dout = make(q_shape, s.dtype, true);
  dq = make(q_shape, s.dtype, false);
  dk = make(kv_shape, s.dtype, false);
  dv = make(kv_shape, s.dtype, false);
}

void dilated_pass(DilatedAttention& attention, const BenchTensors& t, bool backward) {
  attention.forward(t.q, t.k, t.v, t.out, &t.lse, nullptr);
  if (backward) attention.backward(t.q, t.k, t.v, t.out, t.lse, t.dout, t.dq, t.dk, t.dv, nullptr);
}

std::size_t free_memory() {
  std::size_t free = 0, total = 0;
  DILATRON_CU(cuMemGetInfo(&free, &total));
  return free;
}

double pass_flops(const Config& config, const BenchShape& s) {
  const double forward = 4.0 * s.head_dim * double(s.batch) * double(attended_pairs(config, s.seq_len, s.heads));
  return s.backward ? 3.5 * forward : forward;
}

std::vector<Measurement> ring_measurements(const Config& config, const BenchShape& shape, int ranks, int warmup, int iters) {
  const CUcontext context = driver::current_context();
  const std::size_t free_before = free_memory();
  const BenchTensors t(shape);
  const std::size_t held = free_before - free_memory();
  const double flops = pass_flops(config, shape);
  const auto row = [&](std::string name, double ms) {
    return Measurement{std::move(name), ms, flops / (ms * 1e-3) / 1e12, held, std::numeric_limits<double>::quiet_NaN()};
  };

  DilatedAttention single(config);
  std::vector<Measurement> rows{row("DilatedAttention, host clock" + pass_name(shape),
                                    wall_median_ms([&] { dilated_pass(single, t, shape.backward); }, warmup, iters))};

  std::vector<int> sizes;
  for (int p = 1; p < ranks; p *= 2) sizes.push_back(p);
  sizes.push_back(ranks);
  for (const int p : sizes) {
    auto comms = ring::LocalCommunicator::group(p);
    std::vector<std::unique_ptr<RingDilatedAttention>> attention;
    for (auto& comm : comms) attention.push_back(std::make_unique<RingDilatedAttention>(config, *comm));
    // given: the backward takes the forward's O and LSE, as a training step keeps them; else it runs the
    // forward again (the row that shows what keeping them saves).
    const auto pass = [&](bool given) {
      parallel_for(p, unsigned(p), [&] {
        return [&](std::int64_t rank) {
          const ring::ContextScope scope(context);  // rank threads start with no current context
          const ring::RowRange rows = ring::shard(shape.seq_len, p, int(rank));
          const auto shard = [&](const TensorView& whole) { return ring::rows_of(whole, rows, 1); };
          const TensorView lse = ring::rows_of(t.lse, rows, 2);
          RingDilatedAttention& a = *attention[std::size_t(rank)];
          const CUstream stream = comms[std::size_t(rank)]->stream();
          a.forward(shape.seq_len, shard(t.q), shard(t.k), shard(t.v), shard(t.out), &lse, stream);
          if (shape.backward && given) {
            a.backward(shape.seq_len, shard(t.q), shard(t.k), shard(t.v), shard(t.out), lse, shard(t.dout), shard(t.dq),
                       shard(t.dk), shard(t.dv), stream);
          } else if (shape.backward) {
            a.backward(shape.seq_len, shard(t.q), shard(t.k), shard(t.v), shard(t.dout), shard(t.dq), shard(t.dk),
                       shard(t.dv), stream);
          }
        };
      });
    };
    const std::string name = fmt::format("ring P={} (Local, this GPU){}", p, pass_name(shape));
    rows.push_back(row(name, wall_median_ms([&] { pass(true); }, warmup, iters)));
    if (shape.backward && p > 1) {
      rows.push_back(row(name + ", forward again", wall_median_ms([&] { pass(false); }, warmup, iters)));
    }
  }
  return rows;
}

std::vector<Measurement> packed_measurements(const Config& config, const BenchShape& shape,
                                             const std::vector<std::int64_t>& lengths, int warmup, int iters) {
  std::vector<std::int32_t> cu{0};
  for (std::int64_t n : lengths) cu.push_back(std::int32_t(cu.back() + n));
  const std::int64_t sequences = std::int64_t(lengths.size()), longest = *std::max_element(lengths.begin(), lengths.end());
  DeviceBuffer offsets(cu.size() * sizeof(std::int32_t));
  offsets.upload(cu.data());
  const PackedSequences packing{static_cast<const std::int32_t*>(offsets.get()), sequences, longest};
  const double useful = 4.0 * shape.head_dim * double(attended_pairs(config, cu, shape.heads)) * (shape.backward ? 3.5 : 1.0);
  GpuTimer timer;
  std::vector<Measurement> rows;
  // Warmed up once before the memory is read, so plans, kernels and the pool's blocks are all counted.
  const auto measure = [&](std::string name, std::size_t free_before, const std::function<void()>& pass) {
    pass();
    DILATRON_CU(cuCtxSynchronize());
    const std::size_t held = free_before - free_memory();  // the timer's flush buffer predates free_before
    const double ms = timer.median_ms(pass, warmup, iters);
    rows.push_back({std::move(name) + pass_name(shape), ms, useful / (ms * 1e-3) / 1e12, held,
                    std::numeric_limits<double>::quiet_NaN()});
  };
  {
    const std::size_t free_before = free_memory();
    const BenchTensors t(shape);
    DilatedAttention attention(config);
    measure(fmt::format("packed: {} sequences, one call", sequences), free_before, [&] {
      attention.forward(t.q, t.k, t.v, packing, t.out, &t.lse);
      if (shape.backward) attention.backward(t.q, t.k, t.v, t.out, t.lse, t.dout, t.dq, t.dk, t.dv, packing);
    });
    // The loop's LSE per sequence, contiguous as a call takes it.
    std::vector<std::unique_ptr<DeviceBuffer>> lse;
    for (std::int64_t n : lengths) lse.push_back(std::make_unique<DeviceBuffer>(std::size_t(shape.heads * std::max<std::int64_t>(n, 1)) * 4));
    measure(fmt::format("loop: one call per sequence ({} calls)", sequences), free_before, [&] {
      for (std::size_t i = 0; i < lengths.size(); ++i) {
        if (lengths[i] == 0) continue;
        const ring::RowRange range{cu[i], cu[i + 1]};
        const auto at = [&](const TensorView& whole) { return ring::rows_of(whole, range, 1); };
        const TensorView l = TensorView::contiguous(lse[i]->get(), DType::f32, {1, shape.heads, lengths[i], 1});
        attention.forward(at(t.q), at(t.k), at(t.v), at(t.out), &l);
        if (shape.backward) attention.backward(at(t.q), at(t.k), at(t.v), at(t.out), l, at(t.dout), at(t.dq), at(t.dk), at(t.dv));
      }
    });
  }
  BenchShape padded = shape;
  padded.batch = sequences;
  padded.seq_len = longest;
  const std::size_t free_before = free_memory();
  const BenchTensors t(padded);
  DilatedAttention attention(config);
  measure(fmt::format("padded to the longest: B={} N={}", sequences, longest), free_before,
          [&] { dilated_pass(attention, t, shape.backward); });
  return rows;
}

}  // namespace dilatron::cli
