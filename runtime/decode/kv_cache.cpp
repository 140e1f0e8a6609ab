// DilatedKVCache: on the device, DeviceDecode (device_decode.hpp) runs the step; on the host, the
// cache's blocks (cache_layout.hpp) live in host memory and the step runs in float64, written from the
// definition: a new row t of head h attends, in every branch it takes part
// in, the selected rows of its own segment up to itself, which are the cache's block for that branch
// (rows before the step) and the step's own rows; in longnet mode the branches' pairs form one softmax
// (the LSE merge), in head_groups mode its one branch is divided by G.
#include <dilatron/error.hpp>
#include <dilatron/kv_cache.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "common/dtype.hpp"
#include "common/parallel.hpp"
#include "runtime/decode/cache_layout.hpp"
#include "runtime/decode/device_decode.hpp"
#include "runtime/driver.hpp"
#include "runtime/problem.hpp"
#include "templates/dilatron/index.cuh"

namespace dilatron {

struct DilatedKVCache::Impl {
  Config config;
  KVCacheShape shape;
  decode::CacheLayout layout;
  double scale;
  std::vector<std::byte> data;          // on the host: batch rows of layout.row_bytes() each
  std::unique_ptr<decode::DeviceDecode> device;  // on the device
  std::vector<std::int64_t> positions;  // rows decoded so far, per batch row (the device keeps its own copy)

  Impl(Config c, const KVCacheShape& s)
      : config(std::move(c)), shape(s), layout(config, shape),
        scale(config.scale ? *config.scale : 1.0 / std::sqrt(double(s.head_dim))), positions(std::size_t(s.batch), 0) {
    if (shape.on_device) {
      driver::current_context();
      device = std::make_unique<decode::DeviceDecode>(config, shape, layout);
    } else {
      data.resize(std::size_t(s.batch) * layout.row_bytes());
    }
  }

  std::byte* row(std::int64_t b) { return data.data() + std::size_t(b) * layout.row_bytes(); }
  void check_row(std::int64_t row, const char* what) const {
    if (row < 0 || row >= shape.batch) throw Error(fmt::format("{}: batch row {} is outside [0, {})", what, row, shape.batch));
  }
  void check_step(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                  const TensorView* lse) const;
  void attend(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
              const TensorView* lse, std::int64_t b, std::int64_t h);
  void append(const TensorView& k, const TensorView& v, std::int64_t b);
};

namespace {

void check_shape(const KVCacheShape& s) {
  if (s.on_device && s.dtype != DType::f16 && s.dtype != DType::bf16) {
    throw Error(fmt::format("KV cache: a cache on the GPU holds float16 or bfloat16, not {}", to_string(s.dtype)));
  }
  if (s.on_device && s.batch > 65535) {
    throw Error(fmt::format("KV cache: a cache on the GPU holds at most 65535 batch rows (a grid dimension), not {}", s.batch));
  }
  if (s.on_device && (s.head_dim % 32 != 0 || s.head_dim > 512)) {
    throw Error(fmt::format("KV cache: head_dim = {}: the GPU decode takes multiples of 32 up to 512", s.head_dim));
  }
  for (const auto& [name, value] : {std::pair{"batch", s.batch}, std::pair{"heads", s.heads},
                                    std::pair{"kv_heads", s.kv_heads}, std::pair{"head_dim", s.head_dim},
                                    std::pair{"max_positions", s.max_positions}}) {
    if (value < 1) throw Error(fmt::format("KV cache: {} = {} must be >= 1", name, value));
  }
  if (s.heads % s.kv_heads != 0) {
    throw Error(fmt::format("KV cache: kv_heads = {} must divide heads = {}", s.kv_heads, s.heads));
  }
}

// The values of one row of a [B, N, heads, D] tensor, as doubles.
void load_row(const TensorView& t, std::int64_t b, std::int64_t n, std::int64_t head, std::int64_t dim, double* to) {
  for (std::int64_t d = 0; d < dim; ++d) to[d] = load_element(t.data, t.dtype, t.offset(b, n, head, d));
}

}  // namespace

void DilatedKVCache::Impl::check_step(const TensorView& q, const TensorView& k, const TensorView& v,
                                      const TensorView& out, const TensorView* lse) const {
  const Problem p = validate(config, q, k, v, out, lse);
  const auto expect = [](const char* what, std::int64_t got, std::int64_t want) {
    if (got != want) throw Error(fmt::format("decode: {} is {} but the cache holds {}", what, got, want));
  };
  expect("the batch (q's dim 0)", p.batch, shape.batch);
  expect("the number of query heads", p.heads, shape.heads);
  expect("the number of kv heads", p.kv_heads, shape.kv_heads);
  expect("the head dim", p.head_dim, shape.head_dim);
  if (q.dtype != shape.dtype) {
    throw Error(fmt::format("decode: q, k and v are {} but the cache holds {}", to_string(q.dtype), to_string(shape.dtype)));
  }
  if (device) {  // the kernels write out in the cache's dtype; the cache's shape has their head-dim rule
    if (out.dtype != shape.dtype) {
      throw Error(fmt::format("decode: out is {}; on the GPU it is the cache's {}", to_string(out.dtype), to_string(shape.dtype)));
    }
    validate_gpu_layout(q, k, v, out, lse);
  }
  for (std::int64_t b = 0; b < shape.batch; ++b) {
    const std::int64_t at = positions[std::size_t(b)];
    if (p.seq_len > shape.max_positions - at) {
      throw Error(fmt::format("decode: batch row {} is at position {}; {} more rows pass the cache's {} positions", b, at,
                              p.seq_len, shape.max_positions));
    }
  }
}

void DilatedKVCache::Impl::attend(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                                  const TensorView* lse, std::int64_t b, std::int64_t h) {
  const std::int64_t n = q.shape[1], dim = shape.head_dim, at = positions[std::size_t(b)];
  const std::int64_t g = index::kv_head(h, shape.heads, shape.kv_heads);
  const std::size_t row_bytes = std::size_t(dim) * dtype_size(shape.dtype);
  const std::byte* cached = data.data() + std::size_t(b) * layout.row_bytes();
  const std::size_t dims = std::size_t(dim);
  std::vector<double> query(dims), key(dims), value(dims), scores, values, o(dims);
  const double out_scale = output_scale(config);
  for (std::int64_t i = 0; i < n; ++i) {
    const std::int64_t t = at + i;  // the new row's position
    scores.clear();
    values.clear();
    load_row(q, b, i, h, dim, query.data());
    const auto take = [&](const double* k_row, const double* v_row) {
      double s = 0;
      for (std::int64_t d = 0; d < dim; ++d) s += query[std::size_t(d)] * k_row[d];
      scores.push_back(s * scale);
      values.insert(values.end(), v_row, v_row + dim);
    };
    for (const HeadBranch& br : head_branches(config, h, shape.heads)) {
      if (!index::is_selected(t, br.w, br.offset, br.r)) continue;
      const std::int64_t segment = t / br.w * br.w;
      if (at > segment) {  // the segment began before this step: its earlier rows are the cache's block
        const decode::CacheBlock& block = layout.block(br.index, g, br.offset);
        const std::int64_t count = index::selected_count(at - segment, br.offset, br.r);
        for (std::int64_t j = 0; j < count; ++j) {
          for (std::int64_t d = 0; d < dim; ++d) {
            key[std::size_t(d)] = load_element(cached + block.k_at + std::size_t(j) * row_bytes, shape.dtype, d);
            value[std::size_t(d)] = load_element(cached + block.v_at + std::size_t(j) * row_bytes, shape.dtype, d);
          }
          take(key.data(), value.data());
        }
      }
      // This step's rows of the segment, up to t.
      const std::int64_t from = std::max(at, segment);
      for (std::int64_t u = segment + br.offset; u <= t; u += br.r) {
        if (u < from) continue;
        load_row(k, b, u - at, g, dim, key.data());
        load_row(v, b, u - at, g, dim, value.data());
        take(key.data(), value.data());
      }
    }
    double lse_value = -std::numeric_limits<double>::infinity();
    std::fill(o.begin(), o.end(), 0.0);
    if (!scores.empty()) {
      const double top = *std::max_element(scores.begin(), scores.end());
      double sum = 0;
      for (std::size_t j = 0; j < scores.size(); ++j) {
        const double weight = std::exp(scores[j] - top);
        sum += weight;
        for (std::int64_t d = 0; d < dim; ++d) o[std::size_t(d)] += weight * values[j * std::size_t(dim) + std::size_t(d)];
      }
      for (double& x : o) x *= out_scale / sum;
      lse_value = top + std::log(sum);
    }
    for (std::int64_t d = 0; d < dim; ++d) store_element(out.data, out.dtype, out.offset(b, i, h, d), o[std::size_t(d)]);
    if (lse) store_element(lse->data, DType::f32, lse->offset(b, h, i, 0), lse_value);
  }
}

void DilatedKVCache::Impl::append(const TensorView& k, const TensorView& v, std::int64_t b) {
  const std::int64_t n = k.shape[1], at = positions[std::size_t(b)], end = at + n, dim = shape.head_dim;
  const std::size_t row_bytes = std::size_t(dim) * dtype_size(shape.dtype);
  std::byte* cached = row(b);
  for (const decode::CacheBlock& block : layout.blocks()) {
    const std::int64_t w = config.segments[std::size_t(block.branch)], r = config.dilations[std::size_t(block.branch)];
    // What later rows can read: the segment holding position `end`, from its start (a new segment
    // drops the rest, which its positions make unreachable) or from this step's first row.
    const std::int64_t segment = end / w * w;
    for (std::int64_t t = std::max(at, segment); t < end; ++t) {
      if (!index::is_selected(t, w, block.offset, r)) continue;
      const std::int64_t j = (t - segment - block.offset) / r;
      for (std::int64_t d = 0; d < dim; ++d) {
        store_element(cached + block.k_at + std::size_t(j) * row_bytes, shape.dtype, d,
                      load_element(k.data, k.dtype, k.offset(b, t - at, block.kv_head, d)));
        store_element(cached + block.v_at + std::size_t(j) * row_bytes, shape.dtype, d,
                      load_element(v.data, v.dtype, v.offset(b, t - at, block.kv_head, d)));
      }
    }
  }
  positions[std::size_t(b)] = end;
}

DilatedKVCache::DilatedKVCache(Config config, KVCacheShape shape) {
  validate_config(config);
  if (!config.causal) throw Error("a KV cache decodes causally: the config must be causal (a new row sees no later one)");
  check_shape(shape);
  impl_ = std::make_unique<Impl>(std::move(config), shape);
}

DilatedKVCache::~DilatedKVCache() = default;
DilatedKVCache::DilatedKVCache(DilatedKVCache&&) noexcept = default;
DilatedKVCache& DilatedKVCache::operator=(DilatedKVCache&&) noexcept = default;

void DilatedKVCache::decode(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                            const TensorView* lse, Stream stream) {
  Impl& m = *impl_;
  m.check_step(q, k, v, out, lse);
  if (m.device) {
    const bool fresh = std::all_of(m.positions.begin(), m.positions.end(), [](std::int64_t p) { return p == 0; });
    if (fresh && m.device->prefills_on_forward()) {
      m.device->prefill(q, k, v, out, lse, stream);
    } else {
      m.device->step(q, k, v, out, lse, stream);
    }
    for (std::int64_t& p : m.positions) p += q.shape[1];
    return;
  }
  parallel_for(m.shape.batch * m.shape.heads, 0, [&] {
    return [&](std::int64_t task) { m.attend(q, k, v, out, lse, task / m.shape.heads, task % m.shape.heads); };
  });
  for (std::int64_t b = 0; b < m.shape.batch; ++b) m.append(k, v, b);
}

void DilatedKVCache::reset_all(Stream stream) {
  if (impl_->device) impl_->device->clear_positions(stream);
  std::fill(impl_->positions.begin(), impl_->positions.end(), 0);
}

void DilatedKVCache::reset(std::int64_t row, Stream stream) {
  impl_->check_row(row, "reset");
  if (impl_->device) impl_->device->set_position(row, 0, stream);
  impl_->positions[std::size_t(row)] = 0;
}

void DilatedKVCache::fork(std::int64_t from, std::int64_t to, Stream stream) {
  impl_->check_row(from, "fork (from)");
  impl_->check_row(to, "fork (to)");
  if (from == to) return;
  if (impl_->device) impl_->device->copy_row(from, to, stream);
  else std::memcpy(impl_->row(to), impl_->row(from), impl_->layout.row_bytes());
  impl_->positions[std::size_t(to)] = impl_->positions[std::size_t(from)];
}

void DilatedKVCache::rewind(std::int64_t row, std::int64_t position, Stream stream) {
  Impl& m = *impl_;
  m.check_row(row, "rewind");
  const std::int64_t at = m.positions[std::size_t(row)];
  if (position < 0 || position > at) {
    throw Error(fmt::format("rewind: batch row {} is at position {}; it can go back to [0, {}], not {}", row, at, at, position));
  }
  for (std::size_t i = 0; i < m.config.branches(); ++i) {
    const std::int64_t segment = at / m.config.segments[i] * m.config.segments[i];
    if (position < segment) {
      throw Error(fmt::format("rewind: batch row {} to position {} needs rows before {}, where branch {} (w = {}) began "
                              "its current segment and the cache dropped the earlier ones",
                              row, position, segment, i, m.config.segments[i]));
    }
  }
  if (m.device) m.device->set_position(row, position, stream);
  m.positions[std::size_t(row)] = position;
}

std::int64_t DilatedKVCache::position(std::int64_t row) const {
  impl_->check_row(row, "position");
  return impl_->positions[std::size_t(row)];
}

std::size_t DilatedKVCache::bytes() const noexcept { return impl_->device ? impl_->device->bytes() : impl_->data.size(); }
const Config& DilatedKVCache::config() const noexcept { return impl_->config; }
const KVCacheShape& DilatedKVCache::shape() const noexcept { return impl_->shape; }

std::size_t DilatedKVCache::bytes_per_row(const Config& config, const KVCacheShape& shape) {
  validate_config(config);
  check_shape(shape);
  return decode::CacheLayout(config, shape).row_bytes();
}

}  // namespace dilatron
