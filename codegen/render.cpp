#include "codegen/render.hpp"

#include <fmt/format.h>

namespace dilatron::codegen {
namespace {

std::string_view element_type(DType dtype) {
  switch (dtype) {
    case DType::f32: return "float";
    case DType::f16: return "dilatron::f16";
    case DType::bf16: return "dilatron::bf16";
    case DType::f64: return "double";  // refused by validate(): no GPU kernel takes it
  }
  return "?";
}

struct Instantiation {
  std::string_view header, args_type;
  std::string name;
};

Instantiation instantiation(const KernelSpec& s) {
  const int threads = s.tiles.warps * 32;
  switch (s.op) {
    case Op::pack_rows:
    case Op::unpack_rows: {
      const int mode = s.mode == Mode::longnet ? 0 : 1;  // index::kLongnet, index::kHeadGroups
      return {"dilatron/pack.cuh", "dilatron::args::PackArgs",
              fmt::format("dilatron::move_rows<{}, {}, {}LL, {}LL, {}, {}, {}, {}, {}>", element_type(s.dtype), s.head_dim,
                          s.branches[0].w, s.branches[0].r, mode, s.group, s.groups,
                          s.op == Op::pack_rows ? "true" : "false", threads)};
    }
    case Op::merge_partials:
    case Op::clear_output:
      return {"dilatron/merge.cuh", "dilatron::args::MergeArgs",
              fmt::format("dilatron::{}<{}, {}, {}>", to_string(s.op), element_type(s.dtype), s.head_dim, threads)};
    case Op::finish_output:
      return {"dilatron/merge.cuh", "dilatron::args::FinishArgs",
              fmt::format("dilatron::finish_output<{}, {}, {}>", element_type(s.dtype), s.head_dim, threads)};
    case Op::attention_forward:
    case Op::attention_partial:
    case Op::attention_partial_merge:
    case Op::attention_block: {
      const char* epilogue = s.op == Op::attention_forward   ? "dilatron::args::kWriteOutput"
                             : s.op == Op::attention_partial ? "dilatron::args::kWriteAccumulator"
                                                             : "dilatron::args::kMergeAccumulator";
      return {"dilatron/attention.cuh", "dilatron::args::AttentionArgs",
              fmt::format("dilatron::attention_forward<{}, {}, {}, {}, {}, {}, {}, {}LL, {}LL, {}, {}, {}, {}, {}>",
                          element_type(s.dtype), s.head_dim, s.tiles.block_m, s.tiles.block_n, s.tiles.warps,
                          s.tiles.stages, s.causal ? "true" : "false", s.branches[0].w, s.branches[0].r,
                          s.mode == Mode::longnet ? 0 : 1, s.group, s.groups, epilogue,
                          s.op == Op::attention_block ? "true" : "false")};
    }
    case Op::gradient_prepare:
      return {"dilatron/attention_backward.cuh", "dilatron::args::GradientPrepareArgs",
              fmt::format("dilatron::gradient_prepare<{}, {}, {}>", element_type(s.dtype), s.head_dim, threads)};
    case Op::attention_backward:
    case Op::attention_block_backward:
      return {"dilatron/attention_backward.cuh", "dilatron::args::AttentionBackwardArgs",
              fmt::format("dilatron::attention_backward<{}, {}, {}, {}, {}, {}, {}, {}LL, {}LL, {}, {}, {}, {}>",
                          element_type(s.dtype), s.head_dim, s.tiles.block_m, s.tiles.block_n, s.tiles.warps,
                          s.tiles.stages, s.causal ? "true" : "false", s.branches[0].w, s.branches[0].r,
                          s.mode == Mode::longnet ? 0 : 1, s.group, s.groups,
                          s.op == Op::attention_block_backward ? "true" : "false")};
    case Op::ring_pack:
      return {"dilatron/ring.cuh", "dilatron::args::RingPackArgs",
              fmt::format("dilatron::ring_pack<{}, {}, {}>", element_type(s.dtype), s.head_dim, threads)};
    case Op::ring_unpack_add:
      return {"dilatron/ring.cuh", "dilatron::args::RingPackArgs",
              fmt::format("dilatron::ring_unpack_add<{}, {}>", s.head_dim, threads)};
    case Op::decode_partial:
      return {"dilatron/decode.cuh", "dilatron::args::DecodeArgs",
              fmt::format("dilatron::decode_partial<{}, {}, {}, {}LL, {}LL, {}, {}, {}>", element_type(s.dtype),
                          s.head_dim, s.tiles.block_n, s.branches[0].w, s.branches[0].r,
                          s.mode == Mode::longnet ? 0 : 1, s.group, s.groups)};
    case Op::decode_combine:
      return {"dilatron/decode.cuh", "dilatron::args::DecodeCombineArgs",
              fmt::format("dilatron::decode_combine<{}, {}, {}>", element_type(s.dtype), s.head_dim, threads)};
    case Op::decode_append:
      return {"dilatron/decode.cuh", "dilatron::args::DecodeAppendArgs",
              fmt::format("dilatron::decode_append<{}, {}, {}>", element_type(s.dtype), s.head_dim, threads)};
  }
  return {};
}

}  // namespace

RenderedKernel render(const KernelSpec& spec) {
  spec.validate();
  const Instantiation k = instantiation(spec);
  return {fmt::format("// {}\n#include \"{}\"\ntemplate __global__ void {}({});\n", spec.canonical(), k.header, k.name,
                      k.args_type),
          k.name, spec.shared_bytes()};
}

}  // namespace dilatron::codegen
