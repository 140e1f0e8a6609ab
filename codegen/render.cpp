#include "codegen/render.hpp"

#include <fmt/format.h>

namespace dilatron::codegen {
namespace {

std::string_view element_type(DType dtype) {
  switch (dtype) {
    case DType::f32: return "float";
    case DType::f16: return "dilatron::f16";
    case DType::bf16: return "dilatron::bf16";
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
      const int mode = s.mode == Mode::longnet ? 0 : 1;
      return {"dilatron/pack.cuh", "dilatron::args::PackArgs",
              fmt::format("dilatron::move_rows<{}, {}, {}LL, {}LL, {}, {}, {}, {}, {}>", element_type(s.dtype), s.head_dim,
                          s.branches[0].w, s.branches[0].r, mode, s.group, s.groups,
                          s.op == Op::pack_rows ? "true" : "false", threads)};
    }
    case Op::merge_partials:
      return {"dilatron/merge.cuh", "dilatron::args::MergeArgs",
              fmt::format("dilatron::merge_partials<{}, {}, {}>", element_type(s.dtype), s.head_dim, threads)};
  }
  return {};
}

}  // namespace

RenderedKernel render(const KernelSpec& spec) {
  spec.validate();
  const Instantiation k = instantiation(spec);
  return {fmt::format("// {}\n#include \"{}\"\ntemplate __global__ void {}({});\n", spec.canonical(), k.header, k.name,
                      k.args_type),
          k.name};
}

}  // namespace dilatron::codegen
