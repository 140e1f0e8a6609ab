#include "runtime/launch.hpp"

#include <dilatron/error.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <limits>

#include "runtime/driver.hpp"
#include "runtime/loaded_kernels.hpp"
#include "templates/dilatron/index.cuh"

namespace dilatron {
namespace {

// Row-wise kernels stride over rows, so their grid is capped; attention grids are exact.
constexpr long long kMaxRowBlocks = 1 << 20;

unsigned checked_grid(long long blocks, long long limit, const char* what, const codegen::KernelSpec& spec) {
  if (blocks > limit) {
    throw Error(fmt::format("{}: {} {} exceed the launch limit of {}", spec.label(), blocks, what, limit));
  }
  return unsigned(blocks);
}

}  // namespace

LaunchGrid launch_grid(const codegen::KernelSpec& spec, const Problem& problem, long long origin) {
  LaunchGrid g{{1, 1, 1}, unsigned(spec.tiles.warps * 32), unsigned(spec.shared_bytes()), 0};
  if (codegen::is_tiled_attention(spec.op)) {
    // Forward CTAs own query tiles of block_m rows, backward ones key tiles of block_n.
    const int rows = codegen::is_attention(spec.op) ? spec.tiles.block_m : spec.tiles.block_n;
    const long long tiles = index::query_tile_count(problem.seq_len, spec.branches[0].w, spec.branches[0].r, rows, origin);
    long long heads = problem.heads;
    if (spec.mode == Mode::head_groups) {
      g.head_begin = index::head_group_begin(spec.group, problem.heads, spec.groups);
      heads = index::head_group_begin(spec.group + 1, problem.heads, spec.groups) - g.head_begin;
    }
    g.grid[0] = checked_grid(tiles, std::numeric_limits<int>::max(), "tiles", spec);
    g.grid[1] = checked_grid(heads, 65535, "heads", spec);
    g.grid[2] = checked_grid(problem.batch, 65535, "batch elements", spec);
  } else {  // clear_output, finish_output, gradient_prepare: warps stride over (b, n, h) rows
    const long long rows = problem.batch * problem.seq_len * problem.heads;
    g.grid[0] = unsigned(std::min(index::ceil_div(rows, spec.tiles.warps), kMaxRowBlocks));
  }
  return g;
}

std::array<unsigned, 3> packed_grid(const Launch& l, const Problem& problem, const PackedSequences& packing) {
  if (!codegen::is_tiled_attention(l.spec.op)) return {l.grid[0], l.grid[1], l.grid[2]};
  Problem sequences = problem;
  sequences.batch = packing.sequences;
  if (packing.max_seqlen > 0) sequences.seq_len = packing.max_seqlen;
  const LaunchGrid g = launch_grid(l.spec, sequences);
  return {g.grid[0], g.grid[1], g.grid[2]};
}

Launch prepare_launch(const codegen::KernelSpec& spec, const cache::Entry& entry, const Problem& problem,
                      long long origin) {
  const LaunchGrid g = launch_grid(spec, problem, origin);
  Launch l{spec, LoadedKernels::global().kernel(entry), {g.grid[0], g.grid[1], g.grid[2]}, g.threads, g.shared_bytes,
           g.head_begin};
  if (l.shared_bytes > 48 * 1024) allow_dynamic_shared(l.kernel, int(l.shared_bytes));
  return l;
}

ForwardParams forward_params(long long head_begin, const Problem& p, const LaunchTensors& t) {
  // The accumulator as a contiguous [B, N, H, D] float32 tensor.
  const args::Tensor4 acc{t.accumulator, {p.seq_len * p.heads * p.head_dim, p.heads * p.head_dim, p.head_dim, 1}};
  return {{tensor4(t.q), tensor4(t.k), tensor4(t.v), tensor4(t.out), t.accumulator, t.lse, p.batch, p.seq_len, p.heads,
           p.kv_heads, head_begin, float(p.scale * 1.4426950408889634), 0, 0, 0,
           t.packing ? t.packing->cu_seqlens : nullptr},
          {acc, acc, t.lse, t.lse, p.batch, p.seq_len, p.heads},
          {tensor4(t.out), tensor4(t.out), t.lse, t.lse, p.batch, p.seq_len, p.heads},
          {tensor4(t.out), {nullptr, {0, 0, 0, 0}}, t.accumulator, t.lse, p.batch, p.seq_len, p.heads, 1.f}};
}

void* ForwardParams::for_spec(const codegen::KernelSpec& spec) {
  if (codegen::is_attention(spec.op)) return &attention;
  if (spec.op == codegen::Op::finish_output) return &finish;
  return spec.dtype == DType::f32 ? &clear_accumulator : &clear_output;  // clear_output
}

void enqueue(const Launch& l, const Problem& p, const LaunchTensors& t, CUstream stream) {
  ForwardParams params = forward_params(l.head_begin, p, t);
  if (t.packing) enqueue(l, packed_grid(l, p, *t.packing), params.for_spec(l.spec), stream);
  else enqueue(l, params.for_spec(l.spec), stream);
}

void enqueue(const Launch& l, void* params, CUstream stream) {
  enqueue(l, {l.grid[0], l.grid[1], l.grid[2]}, params, stream);
}

void enqueue(const Launch& l, const std::array<unsigned, 3>& grid, void* params, CUstream stream) {
  void* list[] = {params};
  DILATRON_CU(cuLaunchKernel(launchable(l.kernel), grid[0], grid[1], grid[2], l.threads, 1, 1, l.shared_bytes, stream,
                             list, nullptr));
}

}  // namespace dilatron
