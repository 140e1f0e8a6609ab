// One rank's kernels on device memory, the GPU counterpart of the Host executor's RankExecutor: the
// forward pass's fp32 (O, LSE) accumulator, and for the backward pass the fp32 dQ, dK and dV
// accumulators. device_executor.cpp walks the RingPlan and calls these in step order; every method only
// queues work on the rank's stream.
#pragma once

#include <cuda.h>

#include <dilatron/tensor.hpp>

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "runtime/device_buffer.hpp"
#include "runtime/launch.hpp"
#include "autotune/required_kernels.hpp"
#include "runtime/ring/device_launches.hpp"
#include "runtime/ring/plan.hpp"
#include "templates/dilatron/args.cuh"

namespace dilatron::ring {

// A ring kernel that strides over its work (grids are capped).
struct RingKernel {
  CUfunction function = nullptr;
  unsigned threads = 0;

  void launch(CUstream stream, long long work_items, long long per_block, long long grid_y, long long grid_z,
              void* args) const;
};

class DeviceRank {
 public:
  // q, k, v: this rank's shards, checked by the caller against the plan and for the GPU kernels. Without
  // `attends`, for a backward given the forward's O and LSE, the rank holds no O accumulator and must
  // not attend (clear, attend_local, attend_block, finish).
  DeviceRank(const RingPlan& plan, int rank, const TensorView& q, const TensorView& k, const TensorView& v,
             CUstream stream, bool attends = true);
  ~DeviceRank();
  DeviceRank(const DeviceRank&) = delete;
  DeviceRank& operator=(const DeviceRank&) = delete;

  // The forward pass.
  void clear();         // O = 0, LSE = -inf
  // Step 0: the rank's own rows, attention_partial_merge per branch on views of the shard starting at
  // its first row.
  void attend_local();
  // Packs this rank's rows of `block` into `packed` (block.bytes of device memory).
  void pack(const Block& block, void* packed);
  // A block received: attention_block per part, reading the packed keys in place.
  void attend_block(const Block& block, const void* packed);
  void finish(const TensorView& out, const TensorView* lse);   // O (and LSE) from the accumulator

  // The backward pass, after every forward step: O rounded to the plan's dtype, delta = dO . O, and
  // zeroed gradient accumulators. Given the forward's O and LSE of this shard (lse: innermost stride 1),
  // the backward takes those instead, and needs no forward step.
  void begin_backward(const TensorView& dout, const TensorView* out = nullptr, const TensorView* lse = nullptr);
  // Step 0's gradients: attention_backward per branch, as attend_local.
  void gradients_local();
  // The gradients of attend_block (attention_block_backward): dQ here, the block's dK and dV into
  // `partial` (gradient_bytes(block) of device memory, fp32 in the block's packed layout), which goes
  // back to the block's owner.
  void gradients_block(const Block& block, const void* packed, void* partial);
  // The owner's side: a peer's partial of one of this rank's blocks added to the dK and dV here.
  void add_returned(const Block& block, const void* partial);
  void finish_gradients(const TensorView& dq, const TensorView& dk, const TensorView& dv);

  std::int64_t gradient_bytes(const Block& block) const;

 private:
  struct Gradients;  // the backward's kernels and buffers

  // The kernels of one pass over the shard: step 0's launches per branch (grids sized for the shard),
  // and per branch the block kernel, whose grid each block launch sets.
  struct Attention {
    std::vector<Launch> local, block;
  };
  Attention prepare(const std::vector<codegen::KernelSpec>& specs) const;
  Launch block_grid(const Launch& kernel, const AttendLaunch& l, bool backward) const;
  args::AttentionArgs forward_args(const args::Tensor4& k, const args::Tensor4& v, std::int64_t head_begin) const;
  args::AttentionBackwardArgs backward_args(const args::Tensor4& k, const args::Tensor4& v, float* dk, float* dv,
                                            std::int64_t head_begin) const;
  void finish_into(const TensorView& to, const float* from, std::int64_t heads, const TensorView* lse, float out_scale);
  void copy_lse(const TensorView& lse);  // the caller's LSE into the accumulator's layout
  std::pair<args::Tensor4, args::Tensor4> gradient_accumulators() const;  // dK, dV: [B, rows, Hkv, D] fp32
  std::int64_t rows() const { return rows_.size(); }
  autotune::Workload workload() const;

  const RingPlan& plan_;
  const Shape& s_;
  int rank_;
  RowRange rows_;
  const TensorView &q_, &k_, &v_;
  CUstream stream_;
  RingKernel pack_, finish_, clear_;
  Attention attention_;
  DeviceBuffer o_acc_, lse_acc_;
  double scale_;  // the softmax scale
  std::unique_ptr<Gradients> gradients_;
};

}  // namespace dilatron::ring
