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
  // q, k, v: this rank's shards, checked by the caller against the plan.
  DeviceRank(const RingPlan& plan, int rank, const TensorView& q, const TensorView& k, const TensorView& v,
             CUstream stream);
  ~DeviceRank();
  DeviceRank(const DeviceRank&) = delete;
  DeviceRank& operator=(const DeviceRank&) = delete;

  // The forward pass.
  void clear();         // O = 0, LSE = -inf
  // Step 0: the rank's own rows, on the tiled forward kernels (attention_partial_merge per branch, on
  // views of the shard starting at its first row) when the head dim and layout allow, else ring_attend.
  void attend_local();
  // Packs this rank's rows of `block` into `packed` (block.bytes of device memory).
  void pack(const Block& block, void* packed);
  void attend_block(const Block& block, const void* packed);  // a block received
  void finish(const TensorView& out, const TensorView* lse);   // O (and LSE) from the accumulator

  // The backward pass, after every forward step: O rounded to the plan's dtype, delta = dO . O, and
  // zeroed gradient accumulators.
  void begin_backward(const TensorView& dout);
  // Step 0's gradients: attention_backward per branch where the head dim and layout allow (as
  // attend_local), else ring_attend_backward.
  void gradients_local();
  // The gradients of attend_block: dQ here, the block's dK and dV into `partial` (gradient_bytes(block)
  // of device memory, fp32 in the block's packed layout), which goes back to the block's owner.
  void gradients_block(const Block& block, const void* packed, void* partial);
  // The owner's side: a peer's partial of one of this rank's blocks added to the dK and dV here.
  void add_returned(const Block& block, const void* partial);
  void finish_gradients(const TensorView& dq, const TensorView& dk, const TensorView& dv);

  std::int64_t gradient_bytes(const Block& block) const;

 private:
  struct Kernels {
    RingKernel pack, attend, finish, clear;
  };
  struct BackwardKernels {
    RingKernel prepare, attend, unpack_add;
  };
  struct Gradients;  // the backward's buffers

  void attend(const AttendLaunch& l, const args::Tensor4& keys, const args::Tensor4& values);
  void attend_backward(const AttendLaunch& l, const args::Tensor4& keys, const args::Tensor4& values,
                       const args::Tensor4& dk, const args::Tensor4& dv);
  args::RingAttendArgs attend_args(const AttendLaunch& l, const args::Tensor4& keys, const args::Tensor4& values) const;
  std::pair<args::Tensor4, args::Tensor4> gradient_accumulators() const;  // dK, dV: [B, rows, Hkv, D] fp32
  void finish_into(const TensorView& to, const float* from, std::int64_t heads, const TensorView* lse, float out_scale);
  std::int64_t rows() const { return rows_.size(); }

  const RingPlan& plan_;
  const Shape& s_;
  int rank_;
  RowRange rows_;
  const TensorView &q_, &k_, &v_;
  CUstream stream_;
  autotune::Workload workload() const;
  // Launches of the tiled kernels on the shard (a view starting at the rank's first row).
  std::vector<Launch> prepare(const std::vector<codegen::KernelSpec>& specs) const;

  Kernels kernels_;
  bool tiled_ = false;         // the shards suit the tiled kernels (16-byte rows)
  std::vector<Launch> local_;  // step 0's tiled launches; empty: ring_attend does step 0
  DeviceBuffer o_acc_, lse_acc_;
  double scale_;  // the softmax scale
  std::unique_ptr<Gradients> gradients_;
};

}  // namespace dilatron::ring
