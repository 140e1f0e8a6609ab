#include "autotune/required_kernels.hpp"

#include <algorithm>

#include "autotune/policy.hpp"

namespace dilatron::autotune {

std::vector<codegen::KernelSpec> required_kernels(const Workload& w) {
  std::vector<codegen::KernelSpec> specs;
  auto add = [&](codegen::KernelSpec spec) {
    spec = with_tiles(std::move(spec));
    spec.validate();
    if (std::find(specs.begin(), specs.end(), spec) == specs.end()) specs.push_back(std::move(spec));
  };
  const auto groups = int(w.config.branches());
  for (int i = 0; i < groups; ++i) {
    for (codegen::Op op : {codegen::Op::pack_rows, codegen::Op::unpack_rows}) {
      codegen::KernelSpec spec;
      spec.op = op;
      spec.dtype = w.dtype;
      spec.head_dim = w.head_dim;
      spec.branches = {{w.config.segments[std::size_t(i)], w.config.dilations[std::size_t(i)]}};
      spec.mode = w.config.mode;
      if (w.config.mode == Mode::head_groups) spec.group = i, spec.groups = groups;
      spec.arch = w.arch;
      add(std::move(spec));
    }
  }
  codegen::KernelSpec merge;
  merge.op = codegen::Op::merge_partials;
  merge.dtype = w.dtype;
  merge.head_dim = w.head_dim;
  merge.arch = w.arch;
  add(std::move(merge));
  return specs;
}

}  // namespace dilatron::autotune
