#include "autotune/required_kernels.hpp"

#include <dilatron/error.hpp>

#include <algorithm>
#include <initializer_list>
#include <utility>

#include "common/log.hpp"

namespace dilatron::autotune {
namespace {

using codegen::KernelSpec;
using codegen::Op;

KernelSpec spec_for(const Workload& w, Op op, int branch) {
  KernelSpec spec;
  spec.op = op;
  spec.dtype = w.dtype;
  spec.head_dim = w.head_dim;
  spec.arch = w.arch;
  if (branch >= 0) {
    spec.branches = {{w.config.segments[std::size_t(branch)], w.config.dilations[std::size_t(branch)]}};
    spec.mode = w.config.mode;
    if (w.config.mode == Mode::head_groups) spec.group = branch, spec.groups = int(w.config.branches());
    spec.causal = codegen::is_tiled_attention(op) && !codegen::is_block_attention(op) && w.config.causal;
  }
  spec = with_tiles(std::move(spec), w.tuned);
  spec.validate();
  return spec;
}

// Kernels without branches, in the given (op, dtype) order, tiles from the policy.
std::vector<KernelSpec> plain_kernels(std::initializer_list<std::pair<Op, DType>> ops, int head_dim, const std::string& arch) {
  std::vector<KernelSpec> specs;
  for (const auto& [op, type] : ops) {
    KernelSpec spec;
    spec.op = op;
    spec.dtype = type;
    spec.head_dim = head_dim;
    spec.arch = arch;
    spec = with_tiles(std::move(spec));
    spec.validate();
    specs.push_back(std::move(spec));
  }
  return specs;
}

// The `op` kernel of every branch, in config order.
std::vector<KernelSpec> branch_kernels(const Workload& w, Op op) {
  std::vector<KernelSpec> launches;
  for (int i = 0; i < int(w.config.branches()); ++i) launches.push_back(spec_for(w, op, i));
  return launches;
}

}  // namespace

std::vector<KernelSpec> decode_kernels(const Workload& w) {
  std::vector<KernelSpec> launches = branch_kernels(w, Op::decode_partial);
  for (KernelSpec& spec : plain_kernels({{Op::decode_combine, w.dtype}, {Op::decode_append, w.dtype}}, w.head_dim, w.arch)) {
    launches.push_back(std::move(spec));
  }
  return launches;
}

std::vector<KernelSpec> forward_kernels(const Workload& w) {
  const auto& r = w.config.dilations;
  const int branches = int(w.config.branches());
  const auto accumulator_cleared = [&] {
    KernelSpec clear = spec_for(w, Op::clear_output, -1);
    clear.dtype = DType::f32;
    return clear;
  };
  std::vector<KernelSpec> launches;
  if (w.config.mode == Mode::longnet && branches > 1) {
    const auto full = std::find(r.begin(), r.end(), 1);
    const int first = full == r.end() ? -1 : int(full - r.begin());
    launches.push_back(first >= 0 ? spec_for(w, Op::attention_partial, first) : accumulator_cleared());
    for (int i = 0; i < branches; ++i) {
      if (i != first) launches.push_back(spec_for(w, Op::attention_partial_merge, i));
    }
    launches.push_back(spec_for(w, Op::finish_output, -1));
  } else {  // one branch per row: longnet with one branch, or head_groups
    if (std::any_of(r.begin(), r.end(), [](std::int64_t d) { return d > 1; })) {
      launches.push_back(spec_for(w, Op::clear_output, -1));
    }
    for (int i = 0; i < branches; ++i) launches.push_back(spec_for(w, Op::attention_forward, i));
  }
  return launches;
}

std::vector<KernelSpec> backward_kernels(const Workload& w) {
  std::vector<KernelSpec> launches{spec_for(w, Op::gradient_prepare, -1)};
  for (int i = 0; i < int(w.config.branches()); ++i) launches.push_back(spec_for(w, Op::attention_backward, i));
  launches.push_back(spec_for(w, Op::finish_output, -1));
  return launches;
}

std::vector<KernelSpec> required_kernels(const Workload& w) {
  std::vector<KernelSpec> specs;
  auto add = [&](KernelSpec spec) {
    if (std::find(specs.begin(), specs.end(), spec) == specs.end()) specs.push_back(std::move(spec));
  };
  for (const KernelSpec& spec : forward_kernels(w)) {
    add(spec);
    if (!w.warm_winners || !codegen::is_attention(spec.op)) continue;
    for (const codegen::Tiles& tiles : w.warm_winners->winners_for(spec)) {
      KernelSpec tuned = spec;
      tuned.tiles = tiles;
      try {
        tuned.validate();
        add(std::move(tuned));
      } catch (const Error& e) {  // a hand-edited database: the default still gets built
        log::write(log::Level::warn, "skipping tuned tiles from the database: {}", e.what());
      }
    }
  }
  if (w.backward) {
    for (KernelSpec& spec : backward_kernels(w)) add(std::move(spec));
  }
  if (w.ranks > 1) {
    for (KernelSpec& spec : ring_kernels(w)) add(std::move(spec));
    if (w.backward) {
      for (KernelSpec& spec : ring_backward_kernels(w)) add(std::move(spec));
    }
  }
  if (w.decode) {
    for (KernelSpec& spec : decode_kernels(w)) add(std::move(spec));
  }
  return specs;
}

std::vector<KernelSpec> ring_kernels(const Workload& w) {
  std::vector<KernelSpec> specs =
      plain_kernels({{Op::ring_pack, w.dtype}, {Op::finish_output, w.dtype}, {Op::clear_output, DType::f32}}, w.head_dim, w.arch);
  for (Op op : {Op::attention_partial_merge, Op::attention_block}) {
    for (KernelSpec& spec : branch_kernels(w, op)) specs.push_back(std::move(spec));
  }
  return specs;
}

std::vector<KernelSpec> ring_backward_kernels(const Workload& w) {
  std::vector<KernelSpec> specs =
      plain_kernels({{Op::gradient_prepare, w.dtype}, {Op::ring_unpack_add, DType::f32}}, w.head_dim, w.arch);
  for (Op op : {Op::attention_backward, Op::attention_block_backward}) {
    for (KernelSpec& spec : branch_kernels(w, op)) specs.push_back(std::move(spec));
  }
  return specs;
}

}  // namespace dilatron::autotune
