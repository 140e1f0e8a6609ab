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
constexpr double kLog2e = 1.4426950408889634;

// A part is [B, key_count, (K row, V row)]: key j of batch b at (b * key_count + j) * 2D elements, in the
// plan's dtype when packed and in fp32 when it is a partial of gradients. The tiled kernels read it as
// a tensor of one kv head (stride 0) whose rows are 2D elements apart.
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

// The backward's kernels and device memory: O rounded, delta, the three fp32 accumulators, and dO.
struct DeviceRank::Gradients {
  RingKernel prepare, unpack_add;
  Attention attention;
  DeviceBuffer out, delta, dq, dk, dv;
  TensorView dout;
};

DeviceRank::DeviceRank(const RingPlan& plan, int rank, const TensorView& q, const TensorView& k, const TensorView& v,
                       CUstream stream, bool attends)
    : plan_(plan),
      s_(plan.shape),
      rank_(rank),
      rows_(plan.per_rank.at(std::size_t(rank)).rows),
      q_(q),
      k_(k),
      v_(v),
      stream_(stream),
      o_acc_(attends ? std::size_t(s_.batch * rows_.size() * s_.heads * s_.head_dim) * sizeof(float) : 0),
      lse_acc_(std::size_t(s_.batch * s_.heads * rows_.size()) * sizeof(float)),
      scale_(plan.config.scale.value_or(1.0 / std::sqrt(double(s_.head_dim)))) {
  const std::vector<codegen::KernelSpec> specs = autotune::ring_kernels(workload());
  pack_ = load(specs[0]);
  finish_ = load(specs[1]);
  clear_ = load(specs[2]);
  attention_ = prepare({specs.begin() + 3, specs.end()});
}

autotune::Workload DeviceRank::workload() const {
  autotune::Workload w;
  w.config = plan_.config;
  w.dtype = s_.dtype;
  w.head_dim = int(s_.head_dim);
  w.arch = driver::current_arch();
  return w;
}

DeviceRank::Attention DeviceRank::prepare(const std::vector<codegen::KernelSpec>& specs) const {
  // Step 0's kernel per branch, then the block kernel per branch.
  const Problem shard{s_.batch, rows(), s_.heads, s_.kv_heads, s_.head_dim, scale_};
  const std::size_t branches = plan_.config.branches();
  Attention a;
  for (std::size_t i = 0; i < specs.size(); ++i) {
    (i < branches ? a.local : a.block)
        .push_back(prepare_launch(specs[i], *cache::KernelCache::global().get(specs[i]).entry, shard, rows_.begin));
  }
  return a;
}

// The kernel's grid for one block launch: CTAs over the rank's query tiles of the block's segment
// (forward) or over the block's key tiles (backward), the launch's heads, and the batch.
Launch DeviceRank::block_grid(const Launch& kernel, const AttendLaunch& l, bool backward) const {
  Launch launch = kernel;
  const std::int64_t tiles =
      backward ? index::ceil_div(l.key_count, kernel.spec.tiles.block_n)
               : index::ceil_div(index::selected_in(l.q_begin, l.q_end, l.w, l.offset, l.r).count, kernel.spec.tiles.block_m);
  launch.grid[0] = unsigned(tiles);
  launch.grid[1] = unsigned(l.head_end - l.head_begin);
  launch.head_begin = l.head_begin;
  return launch;
}

args::AttentionArgs DeviceRank::forward_args(const args::Tensor4& k, const args::Tensor4& v, std::int64_t head_begin) const {
  return {tensor4(q_), k, v, tensor4(q_), static_cast<float*>(o_acc_.get()), static_cast<float*>(lse_acc_.get()),
          s_.batch, rows(), s_.heads, s_.kv_heads, head_begin, float(scale_ * kLog2e), rows_.begin, 0, 0, nullptr};
}

args::AttentionBackwardArgs DeviceRank::backward_args(const args::Tensor4& k, const args::Tensor4& v, float* dk, float* dv,
                                                      std::int64_t head_begin) const {
  const Gradients& g = *gradients_;
  return {tensor4(q_), k, v, tensor4(g.dout), static_cast<const float*>(lse_acc_.get()),
          static_cast<const float*>(g.delta.get()), static_cast<float*>(g.dq.get()), dk, dv, s_.batch, rows(), s_.heads,
          s_.kv_heads, head_begin, float(scale_ * kLog2e), float(scale_), rows_.begin, 0, 0, nullptr};
}

DeviceRank::~DeviceRank() = default;

void DeviceRank::clear() {
  const args::Tensor4 acc{o_acc_.get(), {rows() * s_.heads * s_.head_dim, s_.heads * s_.head_dim, s_.head_dim, 1}};
  args::MergeArgs a{acc, acc, static_cast<float*>(lse_acc_.get()), static_cast<float*>(lse_acc_.get()), s_.batch, rows(), s_.heads};
  clear_.launch(stream_, s_.batch * rows() * s_.heads, clear_.threads / 32, 1, 1, &a);
}

void DeviceRank::attend_local() {
  for (const Launch& l : attention_.local) {
    args::AttentionArgs a = forward_args(tensor4(k_), tensor4(v_), l.head_begin);
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
    pack_.launch(stream_, s_.batch * part.rows * s_.head_dim, pack_.threads, 1, 1, &a);
  }
}

void DeviceRank::attend_block(const Block& block, const void* packed) {
  for (const AttendLaunch& l : block_launches(plan_, rank_, block)) {
    const auto [keys, values] = packed_keys(packed, l, s_.head_dim, dtype_size(s_.dtype));
    args::AttentionArgs a = forward_args(keys, values, l.head_begin);
    a.block_segment = l.segment;
    a.block_keys = l.key_count;
    enqueue(block_grid(attention_.block[std::size_t(block.branch)], l, false), &a, stream_);
  }
}

void DeviceRank::finish(const TensorView& out, const TensorView* lse) {
  finish_into(out, static_cast<const float*>(o_acc_.get()), s_.heads, lse, float(output_scale(plan_.config)));
}

void DeviceRank::finish_into(const TensorView& to, const float* from, std::int64_t heads, const TensorView* lse,
                             float out_scale) {
  args::FinishArgs a{tensor4(to), lse ? tensor4(*lse) : kNoTensor, from, static_cast<const float*>(lse_acc_.get()),
                     s_.batch, rows(), heads, out_scale};
  finish_.launch(stream_, s_.batch * rows() * heads, finish_.threads / 32, 1, 1, &a);
}

void DeviceRank::copy_lse(const TensorView& lse) {
  // [B, H, rows] rows apart in the caller's tensor (a slice of a whole LSE), packed in the accumulator.
  const std::size_t row_bytes = std::size_t(rows()) * sizeof(float);
  for (std::int64_t b = 0; b < s_.batch; ++b) {
    CUDA_MEMCPY2D copy{};
    copy.srcMemoryType = copy.dstMemoryType = CU_MEMORYTYPE_DEVICE;
    copy.srcDevice = reinterpret_cast<CUdeviceptr>(static_cast<const float*>(lse.data) + b * lse.strides[0]);
    copy.srcPitch = std::size_t(lse.strides[1]) * sizeof(float);
    copy.dstDevice = reinterpret_cast<CUdeviceptr>(static_cast<float*>(lse_acc_.get()) + b * s_.heads * rows());
    copy.dstPitch = row_bytes;
    copy.WidthInBytes = row_bytes;
    copy.Height = std::size_t(s_.heads);
    DILATRON_CU(cuMemcpy2DAsync(&copy, stream_));
  }
}

std::int64_t DeviceRank::gradient_bytes(const Block& block) const {
  return block.bytes / std::int64_t(dtype_size(s_.dtype)) * std::int64_t(sizeof(float));
}

void DeviceRank::begin_backward(const TensorView& dout, const TensorView* given_out, const TensorView* given_lse) {
  autotune::Workload w = workload();
  w.backward = true;
  const std::vector<codegen::KernelSpec> specs = autotune::ring_backward_kernels(w);
  const std::size_t q_elements = std::size_t(s_.batch * rows() * s_.heads * s_.head_dim);
  const std::size_t kv_bytes = std::size_t(s_.batch * rows() * s_.kv_heads * s_.head_dim) * sizeof(float);
  gradients_ = std::unique_ptr<Gradients>(new Gradients{
      load(specs[0]),  // gradient_prepare
      load(specs[1]),  // ring_unpack_add
      prepare({specs.begin() + 2, specs.end()}),
      DeviceBuffer(given_out ? 0 : q_elements * dtype_size(s_.dtype)),
      DeviceBuffer(std::size_t(s_.batch * s_.heads * rows()) * sizeof(float)),
      DeviceBuffer(q_elements * sizeof(float)),
      DeviceBuffer(kv_bytes),
      DeviceBuffer(kv_bytes),
      dout});
  Gradients& g = *gradients_;
  for (const DeviceBuffer* b : {&g.dq, &g.dk, &g.dv}) {
    DILATRON_CU(cuMemsetD8Async(reinterpret_cast<CUdeviceptr>(b->get()), 0, b->bytes(), stream_));
  }
  // delta from O as the caller stores it (rounded, divided by G in head_groups mode), as the
  // single-device backward takes it: the forward's own, or the accumulator's rounded here.
  const TensorView out =
      given_out ? *given_out : TensorView::contiguous(g.out.get(), s_.dtype, {s_.batch, rows(), s_.heads, s_.head_dim});
  if (given_lse) {
    copy_lse(*given_lse);
  } else {
    finish(out, nullptr);
  }
  args::GradientPrepareArgs a{tensor4(out), tensor4(dout), static_cast<float*>(g.delta.get()), s_.batch, rows(), s_.heads};
  g.prepare.launch(stream_, s_.batch * rows() * s_.heads, g.prepare.threads / 32, 1, 1, &a);
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
  for (const Launch& l : g.attention.local) {
    args::AttentionBackwardArgs a = backward_args(tensor4(k_), tensor4(v_), static_cast<float*>(g.dk.get()),
                                                  static_cast<float*>(g.dv.get()), l.head_begin);
    enqueue(l, &a, stream_);
  }
}

void DeviceRank::gradients_block(const Block& block, const void* packed, void* partial) {
  const Gradients& g = *gradients_;
  DILATRON_CU(cuMemsetD8Async(reinterpret_cast<CUdeviceptr>(partial), 0, std::size_t(gradient_bytes(block)), stream_));
  for (const AttendLaunch& l : block_launches(plan_, rank_, block)) {
    const auto [keys, values] = packed_keys(packed, l, s_.head_dim, dtype_size(s_.dtype));
    const auto [dk, dv] = packed_keys(partial, l, s_.head_dim, sizeof(float));
    args::AttentionBackwardArgs a =
        backward_args(keys, values, static_cast<float*>(dk.data), static_cast<float*>(dv.data), l.head_begin);
    a.block_segment = l.segment;
    a.block_keys = l.key_count;
    enqueue(block_grid(g.attention.block[std::size_t(block.branch)], l, true), &a, stream_);
  }
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
    g.unpack_add.launch(stream_, s_.batch * part.rows * s_.head_dim, g.unpack_add.threads, 1, 1, &a);
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
