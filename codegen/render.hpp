// render(spec): the translation unit NVRTC compiles for one kernel. It is a few lines: a comment with
// the canonical spec, the template header, and an explicit instantiation with the spec's values as
// template arguments. The instantiated name doubles as NVRTC's name expression.
#pragma once

#include <string>

#include "codegen/kernel_spec.hpp"

namespace dilatron::codegen {

struct RenderedKernel {
  std::string source;
  std::string name_expression;  // e.g. dilatron::merge_partials<dilatron::bf16, 128, 128>
  // What a launch asks for beyond the static shared memory ptxas reports (KernelSpec::shared_bytes());
  // only the JIT dump records it, so a static check of the binary sees the kernel's whole footprint.
  int dynamic_shared_bytes = 0;
};

// Validates the spec first.
RenderedKernel render(const KernelSpec& spec);

}  // namespace dilatron::codegen
