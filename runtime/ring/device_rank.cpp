#include "runtime/ring/device_rank.hpp"

#include <dilatron/error.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <tuple>
#include <vector>

#include "autotune/required_kernels.hpp"
#include "cache/kernel_cache.hpp"
#include "common/dtype.hpp"
#include "runtime/driver.hpp"
#include "runtime/launch.hpp"
#include "runtime/loaded_kernels.hpp"
#include "runtime/problem.hpp"
#include "templates/dilatron/index.cuh"

namespace dilatron::ring {
namespace {

// Every ring kernel strides over its work, so grids are capped.
constexpr long long kMaxBlocks = 1 << 20;

RingKernel load(const codegen::KernelSpec& spec) {
  const auto entry = cache::KernelCache::global().get(spec).entry;
  return {launchable(LoadedKernels::global().kernel(*entry)), unsigned(spec.tiles.warps * 32)};
}

std::byte* element(const void* base, std::int64_t i, std::size_t size) {
  return static_cast<std::byte*>(const_cast<void*>(base)) + i * std::int64_t(size);
}

constexpr args::Tensor4 kNoTensor{nullptr, {0, 0, 0, 0}};

// Whether the tiled kernels can read these shards (cp.async copies 16-byte chunks of rows).
bool tiled_layout(const TensorView& t) { return layout_problem(t).empty(); }

// A part is [B, key_count, (K row, V row)]: key j of batch b at (b * key_count + j) * 2D elements, in the
// plan's dtype when packed and in fp32 when it is a partial of gradients.
std::pair<args::Tensor4, args::Tensor4> packed_keys(const void* base, const AttendLaunch& l, std::int64_t d, std::size_t size) {
  const args::Tensor4 keys{element(base, l.packed_element, size), {l.key_count * 2 * d, 2 * d, 0, 1}};
  args::Tensor4 values = keys;
  values.data = element(base, l.packed_element + d, size);
  return {keys, values};
}

}  // namespace

void RingKernel::launch(CUstream stream, long long work_items, long long per_block, long long grid_y, long long grid_z,
                        void* args) const {
  if (work_items <= 0) return;
  if (grid_y > 65535 || grid_z > 65535) {
    throw Error(fmt::format("ring launch of {} heads x {} batch elements exceeds the grid limit of 65535", grid_y, grid_z));
  }
  const unsigned grid_x = unsigned(std::min(index::ceil_div(work_items, per_block), kMaxBlocks));
  void* params[] = {args};
  DILATRON_CU(cuLaunchKernel(function, grid_x, unsigned(grid_y), unsigned(grid_z), threads, 1, 1, 0, stream, params, nullptr));
}

// The backward's device memory: O rounded, delta, the three fp32 accumulators, and dO.
struct DeviceRank::Gradients {
  BackwardKernels kernels;
  DeviceBuffer out, delta, dq, dk, dv;
  TensorView dout;
  std::vector<Launch> local;  // step 0's tiled launches; empty: ring_attend_backward does step 0
};

DeviceRank::DeviceRank(const RingPlan& plan, int rank, const TensorView& q, const TensorView& k, const TensorView& v,
                       CUstream stream)
    : plan_(plan),
      s_(plan.shape),
      rank_(rank),
      rows_(plan.per_rank.at(std::size_t(rank)).rows),
      q_(q),
      k_(k),
      v_(v),
      stream_(stream),
      o_acc_(std::size_t(s_.batch * rows_.size() * s_.heads * s_.head_dim) * sizeof(float)),
      lse_acc_(std::size_t(s_.batch * s_.heads * rows_.size()) * sizeof(float)),
      scale_(plan.config.scale.value_or(1.0 / std::sqrt(double(s_.head_dim)))) {
  const auto specs = autotune::ring_kernels(s_.dtype, int(s_.head_dim), driver::current_arch());
  kernels_ = {load(specs[0]), load(specs[1]), load(specs[2]), load(specs[3])};  // pack, attend, finish, clear
  tiled_ = tiled_layout(q) && tiled_layout(k) && tiled_layout(v);
  if (tiled_ && autotune::tiled_ring_head_dim(int(s_.head_dim))) local_ = prepare(autotune::ring_local_kernels(workload()));
}

autotune::Workload DeviceRank::workload() const {
  autotune::Workload w;
  w.config = plan_.config;
  w.dtype = s_.dtype;
  w.head_dim = int(s_.head_dim);
  w.arch = driver::current_arch();
  return w;
}

std::vector<Launch> DeviceRank::prepare(const std::vector<codegen::KernelSpec>& specs) const {
  const Problem shard{s_.batch, rows(), s_.heads, s_.kv_heads, s_.head_dim, scale_};
  std::vector<Launch> launches;
  for (const codegen::KernelSpec& spec : specs) {
    launches.push_back(prepare_launch(spec, *cache::KernelCache::global().get(spec).entry, shard, rows_.begin));
  }
  return launches;
}

DeviceRank::~DeviceRank() = default;

void DeviceRank::clear() {
  const args::Tensor4 acc{o_acc_.get(), {rows() * s_.heads * s_.head_dim, s_.heads * s_.head_dim, s_.head_dim, 1}};
  args::MergeArgs a{acc, acc, static_cast<float*>(lse_acc_.get()), static_cast<float*>(lse_acc_.get()), s_.batch, rows(), s_.heads};
  kernels_.clear.launch(stream_, s_.batch * rows() * s_.heads, kernels_.clear.threads / 32, 1, 1, &a);
}

void DeviceRank::attend_local() {
  if (local_.empty()) {
    for (const AttendLaunch& l : local_launches(plan_, rank_)) attend(l, tensor4(k_), tensor4(v_));
    return;
  }
  for (const Launch& l : local_) {
    args::AttentionArgs a{tensor4(q_), tensor4(k_), tensor4(v_), tensor4(q_), static_cast<float*>(o_acc_.get()),
                          static_cast<float*>(lse_acc_.get()), s_.batch, rows(), s_.heads, s_.kv_heads, l.head_begin,
                          float(scale_ * 1.4426950408889634), rows_.begin};
    enqueue(l, &a, stream_);
  }
}

void DeviceRank::pack(const Block& block, void* packed) {
  const std::vector<std::int64_t> elements = part_elements(block, s_);
  const std::int64_t r = plan_.config.dilations[std::size_t(block.branch)];
  for (std::size_t p = 0; p < block.parts.size(); ++p) {
    const Block::Part& part = block.parts[p];
    args::RingPackArgs a{tensor4(k_), tensor4(v_), element(packed, elements[p], dtype_size(s_.dtype)), s_.batch,
                         rows_.begin, part.kv_head, part.first_row, part.rows, r};
    kernels_.pack.launch(stream_, s_.batch * part.rows * s_.head_dim, kernels_.pack.threads, 1, 1, &a);
  }
}

void DeviceRank::attend_block(const Block& block, const void* packed) {
  for (const AttendLaunch& l : block_launches(plan_, rank_, block)) {
    const auto [keys, values] = packed_keys(packed, l, s_.head_dim, dtype_size(s_.dtype));
    attend(l, keys, values);
  }
}

void DeviceRank::finish(const TensorView& out, const TensorView* lse) {
  finish_into(out, static_cast<const float*>(o_acc_.get()), s_.heads, lse, float(output_scale(plan_.config)));
}

void DeviceRank::finish_into(const TensorView& to, const float* from, std::int64_t heads, const TensorView* lse,
                             float out_scale) {
  args::FinishArgs a{tensor4(to), lse ? tensor4(*lse) : kNoTensor, from, static_cast<const float*>(lse_acc_.get()),
                     s_.batch, rows(), heads, out_scale};
  kernels_.finish.launch(stream_, s_.batch * rows() * heads, kernels_.finish.threads / 32, 1, 1, &a);
}

args::RingAttendArgs DeviceRank::attend_args(const AttendLaunch& l, const args::Tensor4& keys,
                                             const args::Tensor4& values) const {
  return {tensor4(q_), keys, values, static_cast<float*>(o_acc_.get()), static_cast<float*>(lse_acc_.get()),
          s_.batch, rows(), s_.heads, s_.kv_heads, rows_.begin, l.w, l.r, l.offset, l.q_begin, l.q_end,
          l.key_first, l.key_count, l.head_begin, plan_.config.causal ? 1 : 0, float(scale_ * 1.4426950408889634)};
}

void DeviceRank::attend(const AttendLaunch& l, const args::Tensor4& keys, const args::Tensor4& values) {
  args::RingAttendArgs a = attend_args(l, keys, values);
  const long long queries = index::selected_in(l.q_begin, l.q_end, l.w, l.offset, l.r).count;
  kernels_.attend.launch(stream_, queries, kernels_.attend.threads / 32, l.head_end - l.head_begin, s_.batch, &a);
}

std::int64_t DeviceRank::gradient_bytes(const Block& block) const {
  return block.bytes / std::int64_t(dtype_size(s_.dtype)) * std::int64_t(sizeof(float));
}

void DeviceRank::begin_backward(const TensorView& dout) {
  const auto specs = autotune::ring_backward_kernels(s_.dtype, int(s_.head_dim), driver::current_arch());
  const std::size_t q_elements = std::size_t(s_.batch * rows() * s_.heads * s_.head_dim);
  const std::size_t kv_bytes = std::size_t(s_.batch * rows() * s_.kv_heads * s_.head_dim) * sizeof(float);
  gradients_ = std::unique_ptr<Gradients>(new Gradients{
      {load(specs[0]), load(specs[1]), load(specs[2])},  // gradient_prepare, ring_attend_backward, ring_unpack_add
      DeviceBuffer(q_elements * dtype_size(s_.dtype)),
      DeviceBuffer(std::size_t(s_.batch * s_.heads * rows()) * sizeof(float)),
      DeviceBuffer(q_elements * sizeof(float)),
      DeviceBuffer(kv_bytes),
      DeviceBuffer(kv_bytes),
      dout,
      {}});
  Gradients& g = *gradients_;
  if (tiled_ && tiled_layout(dout) && autotune::tiled_ring_backward_head_dim(int(s_.head_dim))) {
    g.local = prepare(autotune::ring_local_backward_kernels(workload()));
  }
  for (const DeviceBuffer* b : {&g.dq, &g.dk, &g.dv}) {
    DILATRON_CU(cuMemsetD8Async(reinterpret_cast<CUdeviceptr>(b->get()), 0, b->bytes(), stream_));
  }
  // delta from O as the caller would have stored it (rounded, divided by G in head_groups mode), as
  // the single-device backward takes it.
  const TensorView out = TensorView::contiguous(g.out.get(), s_.dtype, {s_.batch, rows(), s_.heads, s_.head_dim});
  finish(out, nullptr);
  args::GradientPrepareArgs a{tensor4(out), tensor4(dout), static_cast<float*>(g.delta.get()), s_.batch, rows(), s_.heads};
  g.kernels.prepare.launch(stream_, s_.batch * rows() * s_.heads, g.kernels.prepare.threads / 32, 1, 1, &a);
}

std::pair<args::Tensor4, args::Tensor4> DeviceRank::gradient_accumulators() const {
  const std::int64_t d = s_.head_dim;
  const args::Tensor4 dk{gradients_->dk.get(), {rows() * s_.kv_heads * d, s_.kv_heads * d, d, 1}};
  args::Tensor4 dv = dk;
  dv.data = gradients_->dv.get();
  return {dk, dv};
}

void DeviceRank::gradients_local() {
  const Gradients& g = *gradients_;
  if (g.local.empty()) {
    const auto [dk, dv] = gradient_accumulators();
    for (const AttendLaunch& l : local_launches(plan_, rank_)) attend_backward(l, tensor4(k_), tensor4(v_), dk, dv);
    return;
  }
  for (const Launch& l : g.local) {
    args::AttentionBackwardArgs a{tensor4(q_), tensor4(k_), tensor4(v_), tensor4(g.dout),
                                  static_cast<const float*>(lse_acc_.get()), static_cast<const float*>(g.delta.get()),
                                  static_cast<float*>(g.dq.get()), static_cast<float*>(g.dk.get()),
                                  static_cast<float*>(g.dv.get()), s_.batch, rows(), s_.heads, s_.kv_heads, l.head_begin,
                                  float(scale_ * 1.4426950408889634), float(scale_), rows_.begin};
    enqueue(l, &a, stream_);
  }
}

void DeviceRank::gradients_block(const Block& block, const void* packed, void* partial) {
  DILATRON_CU(cuMemsetD8Async(reinterpret_cast<CUdeviceptr>(partial), 0, std::size_t(gradient_bytes(block)), stream_));
  for (const AttendLaunch& l : block_launches(plan_, rank_, block)) {
    const auto [keys, values] = packed_keys(packed, l, s_.head_dim, dtype_size(s_.dtype));
    const auto [dk, dv] = packed_keys(partial, l, s_.head_dim, sizeof(float));
    attend_backward(l, keys, values, dk, dv);
  }
}

void DeviceRank::attend_backward(const AttendLaunch& l, const args::Tensor4& keys, const args::Tensor4& values,
                                 const args::Tensor4& dk, const args::Tensor4& dv) {
  const Gradients& g = *gradients_;
  args::RingAttendBackwardArgs a{attend_args(l, keys, values), tensor4(g.dout), dk, dv,
                                 static_cast<float*>(g.dq.get()), static_cast<const float*>(g.delta.get()), float(scale_),
                                 float(output_scale(plan_.config))};
  const long long queries = index::selected_in(l.q_begin, l.q_end, l.w, l.offset, l.r).count;
  g.kernels.attend.launch(stream_, queries, g.kernels.attend.threads / 32, l.head_end - l.head_begin, s_.batch, &a);
}

void DeviceRank::add_returned(const Block& block, const void* partial) {
  const Gradients& g = *gradients_;
  const auto [dk, dv] = gradient_accumulators();
  const std::vector<std::int64_t> elements = part_elements(block, s_);
  const std::int64_t r = plan_.config.dilations[std::size_t(block.branch)];
  for (std::size_t p = 0; p < block.parts.size(); ++p) {
    const Block::Part& part = block.parts[p];
    args::RingPackArgs a{dk, dv, element(partial, elements[p], sizeof(float)), s_.batch, rows_.begin, part.kv_head,
                         part.first_row, part.rows, r};
    g.kernels.unpack_add.launch(stream_, s_.batch * part.rows * s_.head_dim, g.kernels.unpack_add.threads, 1, 1, &a);
  }
}

void DeviceRank::finish_gradients(const TensorView& dq, const TensorView& dk, const TensorView& dv) {
  const Gradients& g = *gradients_;
  for (const auto& [to, from, heads] : {std::tuple{&dq, &g.dq, s_.heads}, std::tuple{&dk, &g.dk, s_.kv_heads},
                                        std::tuple{&dv, &g.dv, s_.kv_heads}}) {
    finish_into(*to, static_cast<const float*>(from->get()), heads, nullptr, 1.f);
  }
}

}  // namespace dilatron::ring
