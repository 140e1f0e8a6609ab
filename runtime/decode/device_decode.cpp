#include "runtime/decode/device_decode.hpp"

#include <dilatron/error.hpp>

#include <algorithm>
#include <cmath>

#include "autotune/required_kernels.hpp"
#include "cache/kernel_cache.hpp"
#include "runtime/driver.hpp"
#include "runtime/loaded_kernels.hpp"
#include "runtime/problem.hpp"
#include "runtime/stream_workspace.hpp"
#include "templates/dilatron/index.cuh"

namespace dilatron::decode {
namespace {

// The partials of one launch group stay under this many bytes: a long prompt decodes in groups of new
// rows (they all read the step's rows from q, k and v; only the cache update waits for the whole step).
constexpr std::size_t kPartialBytes = std::size_t(64) << 20;
constexpr std::int64_t kMaxGridZ = 65535;

Launch load(const codegen::KernelSpec& spec) {
  Launch l{spec, LoadedKernels::global().kernel(*cache::KernelCache::global().get(spec).entry), {1, 1, 1},
           unsigned(spec.tiles.warps * 32), unsigned(spec.shared_bytes()), 0};
  return l;
}

// Row kernels stride over their work; a capped grid of warps or threads covers any size.
unsigned row_blocks(std::int64_t items, std::int64_t per_block) {
  return unsigned(std::clamp<std::int64_t>(index::ceil_div(items, per_block), 1, 1 << 20));
}

}  // namespace

DeviceDecode::DeviceDecode(const Config& config, const KVCacheShape& shape, const CacheLayout& layout)
    : config_(config), shape_(shape), row_bytes_(layout.row_bytes()), forward_(config),
      cache_(std::size_t(shape.batch) * layout.row_bytes()),
      blocks_(std::int64_t(layout.blocks().size())),
      positions_{DeviceBuffer(std::size_t(shape.batch) * 8), DeviceBuffer(std::size_t(shape.batch) * 8)} {
  autotune::Workload w;
  w.config = config;
  w.dtype = shape.dtype;
  w.head_dim = int(shape.head_dim);
  w.arch = driver::current_arch();
  const std::vector<codegen::KernelSpec> specs = autotune::decode_kernels(w);
  for (std::size_t i = 0; i < config.branches(); ++i) {
    partials_.push_back(load(specs[i]));
    const std::int64_t keys = index::ceil_div(config.segments[i], config.dilations[i]);  // offset 0 selects the most
    splits_.push_back(int(index::ceil_div(keys, specs[i].tiles.block_n)));
    total_splits_ += splits_.back();
  }
  combine_ = load(specs[config.branches()]);
  append_ = load(specs[config.branches() + 1]);

  // decode_append's table, and decode_partial's K offsets per (kv head, offset) of each branch.
  std::vector<std::int64_t> table, offsets;
  for (std::size_t i = 0; i < config.branches(); ++i) {
    offsets_at_.push_back(offsets.size());
    offsets.resize(offsets.size() + std::size_t(shape.kv_heads * config.dilations[i]), -1);
  }
  for (const CacheBlock& b : layout.blocks()) {
    const auto branch = std::size_t(b.branch);
    const std::int64_t w = config.segments[branch], r = config.dilations[branch];
    table.insert(table.end(), {w, r, b.offset, b.kv_head, std::int64_t(b.k_at), std::int64_t(b.v_at)});
    offsets[offsets_at_[branch] + std::size_t(b.kv_head * r + b.offset)] = std::int64_t(b.k_at);
  }
  offsets_ = std::make_unique<DeviceBuffer>(offsets.size() * sizeof(std::int64_t));
  offsets_->upload(offsets.data());
  table_ = std::make_unique<DeviceBuffer>(table.size() * sizeof(std::int64_t));
  table_->upload(table.data());
  clear_positions(nullptr);
}

void DeviceDecode::step(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                        const TensorView* lse, CUstream stream) {
  const std::int64_t batch = shape_.batch, rows = q.shape[1], heads = shape_.heads, dim = shape_.head_dim;
  const auto* positions = static_cast<const args::i64*>(positions_[current_].get());
  const std::size_t per_query = std::size_t(batch * heads * total_splits_ * (2 + dim)) * sizeof(float);
  // Grid z walks (batch row, new row) pairs: at most 65535 of them per launch group.
  const std::int64_t group = std::clamp<std::int64_t>(std::min<std::int64_t>(std::int64_t(kPartialBytes / per_query),
                                                                             kMaxGridZ / batch), 1, rows);
  const StreamWorkspace workspace(per_query * std::size_t(group), stream);
  auto* partials = static_cast<float*>(workspace.get());
  for (std::int64_t first = 0; first < rows; first += group) {
    const std::int64_t queries = std::min(group, rows - first);
    int split_base = 0;
    for (std::size_t i = 0; i < partials_.size(); ++i) {
      args::DecodeArgs a{tensor4(q), tensor4(k), tensor4(v), cache_.get(),
                         static_cast<const args::i64*>(offsets_->get()) + offsets_at_[i], positions, partials, batch,
                         heads, shape_.kv_heads, first, queries, std::int64_t(row_bytes_), split_base, total_splits_,
                         float(config_.scale ? *config_.scale : 1.0 / std::sqrt(double(dim)))};
      enqueue(partials_[i], {unsigned(splits_[i]), unsigned(heads), unsigned(batch * queries)}, &a, stream);
      split_base += splits_[i];
    }
    args::DecodeCombineArgs c{partials, tensor4(out), lse ? static_cast<float*>(lse->data) : nullptr, batch, rows, heads,
                              total_splits_, first, queries, float(output_scale(config_))};
    enqueue(combine_, {row_blocks(batch * queries * heads, combine_.spec.tiles.warps), 1, 1}, &c, stream);
  }
  append(k, v, stream);
}

bool DeviceDecode::prefills_on_forward() const noexcept {
  const std::int64_t d = shape_.head_dim;
  return d == 64 || d == 96 || d == 128 || d == 256;
}

void DeviceDecode::prefill(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                           const TensorView* lse, CUstream stream) {
  forward_.forward(q, k, v, out, lse, stream);
  append(k, v, stream);
}

void DeviceDecode::append(const TensorView& k, const TensorView& v, CUstream stream) {
  const std::int64_t batch = shape_.batch, rows = k.shape[1];
  args::DecodeAppendArgs a{tensor4(k), tensor4(v), cache_.get(), static_cast<const args::i64*>(table_->get()),
                           static_cast<const args::i64*>(positions_[current_].get()),
                           static_cast<args::i64*>(positions_[1 - current_].get()), batch, rows, blocks_,
                           std::int64_t(row_bytes_)};
  enqueue(append_, {row_blocks(batch * rows * blocks_ * shape_.head_dim, append_.threads), 1, 1}, &a, stream);
  current_ = 1 - current_;
}

void DeviceDecode::set_position(std::int64_t row, std::int64_t position, CUstream stream) {
  const auto at = reinterpret_cast<CUdeviceptr>(static_cast<std::int64_t*>(positions_[current_].get()) + row);
  const auto bits = static_cast<std::uint64_t>(position);
  DILATRON_CU(cuMemsetD32Async(at, unsigned(bits & 0xffffffffu), 1, stream));
  DILATRON_CU(cuMemsetD32Async(at + 4, unsigned(bits >> 32), 1, stream));
}

void DeviceDecode::clear_positions(CUstream stream) {
  DILATRON_CU(cuMemsetD8Async(reinterpret_cast<CUdeviceptr>(positions_[current_].get()), 0, positions_[current_].bytes(),
                              stream));
}

void DeviceDecode::copy_row(std::int64_t from, std::int64_t to, CUstream stream) {
  const auto cache = reinterpret_cast<CUdeviceptr>(cache_.get());
  DILATRON_CU(cuMemcpyDtoDAsync(cache + to * row_bytes_, cache + from * row_bytes_, row_bytes_, stream));
  const auto positions = reinterpret_cast<CUdeviceptr>(positions_[current_].get());
  DILATRON_CU(cuMemcpyDtoDAsync(positions + to * 8, positions + from * 8, 8, stream));
}

}  // namespace dilatron::decode
