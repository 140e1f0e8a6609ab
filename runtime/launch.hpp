// One kernel launch of the forward pass: its grid from the spec and the problem, its arguments from
// the call's tensors. ForwardPlan strings these together; the autotuner times them one at a time.
#pragma once

#include <cuda.h>

#include <dilatron/dilatron.hpp>
#include <dilatron/tensor.hpp>

#include <array>

#include "cache/entry.hpp"
#include "codegen/kernel_spec.hpp"
#include "runtime/problem.hpp"
#include "templates/dilatron/args.cuh"

namespace dilatron {

struct Launch {
  codegen::KernelSpec spec;
  CUkernel kernel;
  unsigned grid[3];
  unsigned threads;
  unsigned shared_bytes;
  long long head_begin;
};

// What a launch reads and writes: the call's tensors, its LSE (the caller's or the workspace's) and,
// with several branches, the fp32 [B, N, H, D] accumulator; with `packing` the tensors are a packed
// batch (B = 1) and the attention kernels walk its sequences.
struct LaunchTensors {
  TensorView q, k, v, out;
  float* lse;
  float* accumulator;
  const PackedSequences* packing = nullptr;
};

// A view as the kernels' parameter blocks take it.
inline args::Tensor4 tensor4(const TensorView& t) {
  return {t.data, {t.strides[0], t.strides[1], t.strides[2], t.strides[3]}};
}

// A launch's shape for `problem`: attention kernels one CTA per query (forward) or key (backward) tile,
// head and batch element; row kernels a capped grid of warps striding over (b, n, h) rows. Throws
// dilatron::Error when a grid exceeds the launch limits.
struct LaunchGrid {
  unsigned grid[3];
  unsigned threads;
  unsigned shared_bytes;
  long long head_begin;
};
// `origin`: the sequence row of the tensors' row 0 (a ring rank's shard; index.cuh).
LaunchGrid launch_grid(const codegen::KernelSpec& spec, const Problem& problem, long long origin = 0);

// The grid of `launch` over a packed batch of `problem`'s rows: an attention kernel's z walks the
// sequences and its x the tiles of the longest (max_seqlen, or all the rows when it is unknown); the
// row kernels keep theirs, which cover every row of the packing.
std::array<unsigned, 3> packed_grid(const Launch& launch, const Problem& problem, const PackedSequences& packing);

// Loads the entry's kernel into the current context and sizes its grid (launch_grid).
Launch prepare_launch(const codegen::KernelSpec& spec, const cache::Entry& entry, const Problem& problem,
                      long long origin = 0);

// The parameter blocks of the forward pass's launches; each launch reads the one its spec names.
struct ForwardParams {
  args::AttentionArgs attention;
  args::MergeArgs clear_accumulator, clear_output;  // clear_output<float> empties the accumulator
  args::FinishArgs finish;
  void* for_spec(const codegen::KernelSpec& spec);
};
ForwardParams forward_params(long long head_begin, const Problem& problem, const LaunchTensors& tensors);

// Enqueues `launch` on `stream` with the forward pass's arguments.
void enqueue(const Launch& launch, const Problem& problem, const LaunchTensors& tensors, CUstream stream);

// Enqueues `launch` on `stream` with a filled parameter block (an args:: struct), on its own grid or
// on `grid`.
void enqueue(const Launch& launch, void* params, CUstream stream);
void enqueue(const Launch& launch, const std::array<unsigned, 3>& grid, void* params, CUstream stream);

}  // namespace dilatron
