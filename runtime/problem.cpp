#include "runtime/problem.hpp"

#include <dilatron/error.hpp>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>
#include <cstdint>
#include <tuple>
#include <utility>

#include "templates/dilatron/index.cuh"

namespace dilatron {
namespace {

std::string shape_text(const Shape4& shape) { return fmt::format("[{}]", fmt::join(shape, ",")); }

void check_tensor(const char* name, const TensorView& t) {
  static constexpr const char* kDims[] = {"B (dim 0)", "N (dim 1)", "heads (dim 2)", "D (dim 3)"};
  for (int d = 0; d < 4; ++d) {
    if (t.shape[d] < 1) {
      throw Error(fmt::format("{} shape {}: {} must be >= 1", name, shape_text(t.shape), kDims[d]));
    }
  }
  if (t.data == nullptr) throw Error(fmt::format("{} has no data (null pointer)", name));
}

// Negative strides are legal for the host reference, but the GPU path refuses them: byte_range below (and
// so every overlap check) assumes a view lies above its data pointer.
void check_non_negative_strides(const char* name, const TensorView& t) {
  for (int d = 0; d < 4; ++d) {
    if (t.strides[d] < 0) {
      throw Error(fmt::format("{}: stride[{}] = {} is negative: the GPU path needs non-negative strides", name, d,
                              t.strides[d]));
    }
  }
}

// The bytes a view can touch: [data, data + extent). Strides must be non-negative.
std::pair<std::uintptr_t, std::uintptr_t> byte_range(const TensorView& t) {
  std::int64_t last = 0;
  for (int d = 0; d < 4; ++d) last += (t.shape[d] - 1) * t.strides[d];
  const auto begin = reinterpret_cast<std::uintptr_t>(t.data);
  return {begin, begin + std::uintptr_t(last + 1) * dtype_size(t.dtype)};
}

bool overlap(const TensorView& a, const TensorView& b) {
  const auto [a0, a1] = byte_range(a);
  const auto [b0, b1] = byte_range(b);
  return a0 < b1 && b0 < a1;
}

}  // namespace

std::string layout_problem(const TensorView& t) {
  if (t.strides[3] != 1) return fmt::format("the GPU path needs the innermost (D) stride to be 1, got {}", t.strides[3]);
  for (int d = 0; d < 3; ++d) {
    if (t.strides[d] % 8 != 0) return fmt::format("stride[{}] = {} is not a multiple of 8 elements (16 bytes)", d, t.strides[d]);
  }
  if (reinterpret_cast<std::uintptr_t>(t.data) % 16 != 0) return "data is not 16-byte aligned";
  return "";
}

void check_layout(const char* name, const TensorView& t) {
  if (const std::string problem = layout_problem(t); !problem.empty()) throw Error(fmt::format("{}: {}", name, problem));
}

void validate_config(const Config& config) {
  if (config.segments.empty()) throw Error("segments is empty: give at least one segment length");
  if (config.segments.size() != config.dilations.size()) {
    throw Error(fmt::format("segments has {} entries but dilations has {}: give one dilation per segment length",
                            config.segments.size(), config.dilations.size()));
  }
  for (std::size_t i = 0; i < config.segments.size(); ++i) {
    if (config.segments[i] < 1) {
      throw Error(fmt::format("segments[{}] = {}: segment lengths must be >= 1", i, config.segments[i]));
    }
    if (config.dilations[i] < 1) {
      throw Error(fmt::format("dilations[{}] = {}: dilation rates must be >= 1", i, config.dilations[i]));
    }
    constexpr std::int64_t kMax = std::int64_t(1) << 40;  // keeps every row product far from int64 overflow
    if (config.segments[i] > kMax || config.dilations[i] > kMax) {
      throw Error(fmt::format("segments[{}] = {} / dilations[{}] = {}: at most 2^40", i, config.segments[i], i,
                              config.dilations[i]));
    }
  }
  if (config.scale && !(std::isfinite(*config.scale) && *config.scale > 0)) {
    throw Error(fmt::format("scale = {}: the softmax scale must be finite and > 0", *config.scale));
  }
}

Problem validate(const Config& config, const TensorView& q, const TensorView& k, const TensorView& v,
                 const TensorView& out, const TensorView* lse) {
  validate_config(config);
  check_tensor("q", q);
  check_tensor("k", k);
  check_tensor("v", v);
  check_tensor("out", out);
  if (k.shape != v.shape) {
    throw Error(fmt::format("k shape {} and v shape {} differ", shape_text(k.shape), shape_text(v.shape)));
  }
  if (k.shape[0] != q.shape[0] || k.shape[1] != q.shape[1] || k.shape[3] != q.shape[3]) {
    throw Error(fmt::format("k shape {} does not match q shape {} in B, N or D", shape_text(k.shape),
                            shape_text(q.shape)));
  }
  if (k.dtype != q.dtype || v.dtype != q.dtype) {
    throw Error(fmt::format("q, k and v must share a dtype: q is {}, k is {}, v is {}", to_string(q.dtype),
                            to_string(k.dtype), to_string(v.dtype)));
  }
  const Problem p{q.shape[0], q.shape[1], q.shape[2], k.shape[2], q.shape[3],
                  config.scale.value_or(1.0 / std::sqrt(double(q.shape[3])))};
  if (p.heads % p.kv_heads != 0) {
    throw Error(fmt::format("q has {} heads and k/v have {}: the kv head count must divide the query head count",
                            p.heads, p.kv_heads));
  }
  const auto branches = std::int64_t(config.branches());
  if (config.mode == Mode::head_groups && p.heads < branches) {
    throw Error(fmt::format("head_groups mode needs at least one head per branch: {} heads, {} branches", p.heads,
                            branches));
  }
  if (out.shape != q.shape) {
    throw Error(fmt::format("out shape {} must equal q shape {}", shape_text(out.shape), shape_text(q.shape)));
  }
  if (lse) {
    check_tensor("lse", *lse);
    const Shape4 want{p.batch, p.heads, p.seq_len, 1};
    if (lse->shape != want || lse->dtype != DType::f32) {
      throw Error(fmt::format("lse must be float32 {} ([B,H,N]); got {} {}", shape_text(want), to_string(lse->dtype),
                              shape_text(lse->shape)));
    }
  }
  return p;
}

Problem validate_backward(const Config& config, const TensorView& q, const TensorView& k, const TensorView& v,
                          const TensorView& dout, const TensorView& dq, const TensorView& dk, const TensorView& dv) {
  const Problem p = validate(config, q, k, v, q, nullptr);  // q stands in for an output: dout is checked below
  for (const auto& [name, t, like, like_name] : {std::tuple{"dout", &dout, &q, "q"}, std::tuple{"dq", &dq, &q, "q"},
                                                 std::tuple{"dk", &dk, &k, "k"}, std::tuple{"dv", &dv, &k, "k"}}) {
    check_tensor(name, *t);
    if (t->shape != like->shape) {
      throw Error(fmt::format("{} shape {} must equal {} shape {}", name, shape_text(t->shape), like_name,
                              shape_text(like->shape)));
    }
  }
  return p;
}

namespace {

// What every attention pass asks of its inputs (and of the forward's out): the dtype and the head dim.
void check_dtype_and_head_dim(const Problem& p, const TensorView& q, const TensorView* out = nullptr) {
  if (q.dtype != DType::f16 && q.dtype != DType::bf16) {
    throw Error(fmt::format("the GPU path takes float16 or bfloat16 q/k/v, got {}", to_string(q.dtype)));
  }
  if (out && out->dtype != q.dtype) {
    throw Error(fmt::format("out is {} but q is {}: they must match on the GPU", to_string(out->dtype), to_string(q.dtype)));
  }
  if (p.head_dim != 64 && p.head_dim != 96 && p.head_dim != 128 && p.head_dim != 256) {
    throw Error(fmt::format("head dim {} is not supported by the GPU kernels (64, 96, 128 or 256)", p.head_dim));
  }
}

// The layout the kernels read q, k and v with.
void check_inputs_layout(const TensorView& q, const TensorView& k, const TensorView& v) {
  for (const auto& [name, t] : {std::pair{"q", &q}, std::pair{"k", &k}, std::pair{"v", &v}}) {
    check_non_negative_strides(name, *t);
    check_layout(name, *t);
  }
}

void check_inputs_for_gpu(const Problem& p, const TensorView& q, const TensorView& k, const TensorView& v) {
  check_dtype_and_head_dim(p, q);
  check_inputs_layout(q, k, v);
}

// The gradients of a GPU backward: q's dtype, the GPU layout, none overlapping what the pass reads
// (`read`) or another gradient.
void check_gradients_for_gpu(const Problem& p, const TensorView& q, const TensorView& dout, const TensorView& dq,
                             const TensorView& dk, const TensorView& dv,
                             std::initializer_list<std::pair<const char*, const TensorView*>> read) {
  if (p.head_dim == 256) throw Error("head dim 256 has no GPU backward kernel yet (64, 96 or 128)");
  for (const auto& [name, t] : {std::pair{"dout", &dout}, std::pair{"dq", &dq}, std::pair{"dk", &dk}, std::pair{"dv", &dv}}) {
    if (t->dtype != q.dtype) {
      throw Error(fmt::format("{} is {} but q is {}: they must match on the GPU", name, to_string(t->dtype), to_string(q.dtype)));
    }
    check_non_negative_strides(name, *t);
    check_layout(name, *t);
  }
  const std::pair<const char*, const TensorView*> written[] = {{"dq", &dq}, {"dk", &dk}, {"dv", &dv}};
  for (std::size_t i = 0; i < 3; ++i) {
    // Every gradient is written at the end, while the others are written and the inputs still read.
    for (const auto& [name, t] : read) {
      if (overlap(*written[i].second, *t)) {
        throw Error(fmt::format("{} overlaps {}: the GPU backward cannot run in place", written[i].first, name));
      }
    }
    for (std::size_t j = i + 1; j < 3; ++j) {
      if (overlap(*written[i].second, *written[j].second)) {
        throw Error(fmt::format("{} overlaps {}: each gradient needs its own memory", written[i].first, written[j].first));
      }
    }
  }
}

}  // namespace

void validate_for_gpu(const Problem& p, const TensorView& q, const TensorView& k, const TensorView& v,
                      const TensorView& out, const TensorView* lse) {
  check_dtype_and_head_dim(p, q, &out);
  validate_gpu_layout(q, k, v, out, lse);
}

void validate_gpu_layout(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                         const TensorView* lse) {
  check_inputs_layout(q, k, v);
  check_non_negative_strides("out", out);
  if (lse) check_non_negative_strides("lse", *lse);
  check_layout("out", out);
  for (const auto& [name, input] : {std::pair{"q", &q}, std::pair{"k", &k}, std::pair{"v", &v}}) {
    // Branches write O while later CTAs and launches still read Q, K and V.
    if (overlap(out, *input)) throw Error(fmt::format("out overlaps {}: the GPU forward cannot run in place", name));
  }
  if (lse && lse->strides != TensorView::contiguous(nullptr, DType::f32, lse->shape).strides) {
    throw Error("lse must be contiguous [B,H,N] on the GPU");
  }
  if (lse) {
    for (const auto& [name, tensor] : {std::pair{"q", &q}, std::pair{"k", &k}, std::pair{"v", &v}, std::pair{"out", &out}}) {
      // LSE is written by every branch, while Q, K and V are still read and O is written alongside.
      if (overlap(*lse, *tensor)) throw Error(fmt::format("lse overlaps {}: give the GPU forward a separate LSE buffer", name));
    }
  }
}

void validate_backward_for_gpu(const Problem& p, const TensorView& q, const TensorView& k, const TensorView& v,
                               const TensorView& out, const TensorView& lse, const TensorView& dout,
                               const TensorView& dq, const TensorView& dk, const TensorView& dv) {
  validate_for_gpu(p, q, k, v, out, &lse);
  check_gradients_for_gpu(p, q, dout, dq, dk, dv,
                          {{"q", &q}, {"k", &k}, {"v", &v}, {"out", &out}, {"lse", &lse}, {"dout", &dout}});
}

void validate_gradients_for_gpu(const Problem& p, const TensorView& q, const TensorView& k, const TensorView& v,
                                const TensorView& dout, const TensorView& dq, const TensorView& dk, const TensorView& dv) {
  check_inputs_for_gpu(p, q, k, v);
  check_gradients_for_gpu(p, q, dout, dq, dk, dv, {{"q", &q}, {"k", &k}, {"v", &v}, {"dout", &dout}});
}

void validate_cu_seqlens(const std::int32_t* cu_seqlens, std::int64_t count, std::int64_t total) {
  const std::span<const std::int32_t> cu(cu_seqlens, std::size_t(std::max<std::int64_t>(count, 0)));
  if (cu.size() < 2) {
    throw Error(fmt::format("cu_seqlens has {} entries: a packed batch of S sequences needs S + 1 offsets", cu.size()));
  }
  if (cu[0] != 0) throw Error(fmt::format("cu_seqlens[0] = {}: the first offset must be 0", cu[0]));
  for (std::size_t i = 1; i < cu.size(); ++i) {
    if (cu[i] < cu[i - 1]) {
      throw Error(fmt::format("cu_seqlens[{}] = {} is below cu_seqlens[{}] = {}: offsets never decrease", i, cu[i],
                              i - 1, cu[i - 1]));
    }
  }
  if (cu.back() != total) {
    throw Error(fmt::format("cu_seqlens ends at {} but the packed tensors hold {} rows", cu.back(), total));
  }
}

void validate_sequence_count(std::int64_t sequences) {
  if (sequences < 1 || sequences > kMaxPackedSequences) {
    throw Error(fmt::format("a packed batch holds 1 to {} sequences, not {}", kMaxPackedSequences, sequences));
  }
}

void validate_packed_batch(const TensorView& q) {
  if (q.shape[0] != 1) {
    throw Error(fmt::format("a packed batch is one batch element of all the sequences' rows: q has B = {}", q.shape[0]));
  }
}

void validate_packing(const TensorView& q, const PackedSequences& packing) {
  validate_packed_batch(q);
  validate_sequence_count(packing.sequences);
  if (packing.max_seqlen < 0 || packing.max_seqlen > q.shape[1]) {
    throw Error(fmt::format("max_seqlen = {} is outside [0, {}], the packing's rows (0: unknown)", packing.max_seqlen,
                            q.shape[1]));
  }
  if (packing.cu_seqlens == nullptr) throw Error("cu_seqlens is null");
  if (reinterpret_cast<std::uintptr_t>(packing.cu_seqlens) % alignof(std::int32_t) != 0) {
    throw Error("cu_seqlens is not 4-byte aligned");
  }
}

void validate_host_packing(const TensorView& q, std::span<const std::int32_t> cu_seqlens) {
  validate_packed_batch(q);
  validate_cu_seqlens(cu_seqlens.data(), std::int64_t(cu_seqlens.size()), q.shape[1]);
  validate_packing(q, {cu_seqlens.data(), std::int64_t(cu_seqlens.size()) - 1, 0});
}

std::vector<HeadBranch> head_branches(const Config& config, std::int64_t h, std::int64_t heads) {
  std::vector<HeadBranch> out;
  const auto branches = std::int64_t(config.branches());
  const int mode = config.mode == Mode::longnet ? index::kLongnet : index::kHeadGroups;
  for (std::int64_t i = 0; i < branches; ++i) {
    const std::int64_t r = config.dilations[i], offset = index::branch_offset(mode, h, heads, i, branches, r);
    if (offset >= 0) out.push_back({config.segments[i], r, offset, int(i)});
  }
  return out;
}

double output_scale(const Config& config) {
  return config.mode == Mode::head_groups ? 1.0 / double(config.branches()) : 1.0;
}

std::int64_t attended_pairs(const Config& config, std::int64_t seq_len, std::int64_t heads, int branch) {
  auto pairs = [&](std::int64_t rows) { return config.causal ? rows * (rows + 1) / 2 : rows * rows; };
  std::int64_t total = 0;
  for (std::int64_t h = 0; h < heads; ++h) {
    for (const HeadBranch& b : head_branches(config, h, heads)) {
      if (branch >= 0 && b.index != branch) continue;
      const std::int64_t full = seq_len / b.w, tail = seq_len % b.w;
      total += full * pairs(index::selected_count(b.w, b.offset, b.r)) +
               pairs(index::selected_count(tail, b.offset, b.r));
    }
  }
  return total;
}

std::int64_t attended_pairs(const Config& config, std::span<const std::int32_t> cu_seqlens, std::int64_t heads) {
  std::int64_t total = 0;
  for (std::size_t i = 1; i < cu_seqlens.size(); ++i) {
    total += attended_pairs(config, cu_seqlens[i] - cu_seqlens[i - 1], heads);
  }
  return total;
}

}  // namespace dilatron
