// The ring's forward pass for one rank on device memory: the Host executor's walk of the RingPlan
// (host_executor.cpp), step by step, with JIT-built kernels (templates/dilatron/ring.cuh) in place of
// the float64 loops.
#pragma once

#include <cuda.h>

#include <dilatron/config.hpp>
#include <dilatron/tensor.hpp>

#include "runtime/ring/communicator.hpp"
#include "runtime/ring/plan.hpp"

namespace dilatron::ring {

// q, k, v, out: this rank's device shards [B, rows, H|Hkv, D] in the plan's dtype (f16 or bf16, D a
// multiple of 8 up to 512, innermost stride 1); lse float32 [B, H, rows, 1] (any strides, e.g. this rank's slice of a whole [B, H, N, 1]), or null.
// The messages handed to `comm` wrap device pointers of the current context.
//
// Steps use two arenas in turn (double buffering). Over NCCL, step s + 1's transfer is queued on the
// communicator's stream while this stream attends to step s's blocks (and step 1's while it attends to
// its own rows), ordered by events only. Over any other transport, which blocks in exchange(), each
// step synchronizes the stream first, so transfer and compute do not overlap there. Returns after the
// stream has drained.
// Throws dilatron::Error for tensors that do not fit the plan, before any exchange.
void device_ring_forward(const RingPlan& plan, Communicator& comm, const TensorView& q, const TensorView& k,
                         const TensorView& v, const TensorView& out, const TensorView* lse, CUstream stream);

// The forward's results for this rank's shard, which spare the backward the forward's attention: out
// like q (the layout device_ring_forward writes), lse float32 [B, H, rows, 1] with innermost stride 1
// (e.g. this rank's slice of a whole [B, H, N, 1]).
struct ForwardOutput {
  TensorView out, lse;
};

// Throws dilatron::Error unless `forward` fits q, k, v as device_ring_forward's outputs would.
void validate_forward_output(const Config& config, const TensorView& q, const TensorView& k, const TensorView& v,
                             const ForwardOutput& forward);

// The gradients of this rank's shards: dout like q in, dq like q and dk, dv like k out, all in the plan's
// dtype with innermost stride 1. The Host executor's backward (host_ring_backward) on the device: the
// forward steps again, keeping every block received (over any transport, each step blocks in
// exchange()), then per step the received blocks' dK and dV go back to their owners as fp32 partials
// (exchanges tagged steps + t) and are added there. Given `forward`, the blocks still travel (the
// backward attends to them) but nothing is attended to on the way. Returns after the stream has drained.
void device_ring_backward(const RingPlan& plan, Communicator& comm, const TensorView& q, const TensorView& k,
                          const TensorView& v, const TensorView& dout, const TensorView& dq, const TensorView& dk,
                          const TensorView& dv, CUstream stream, const ForwardOutput* forward = nullptr);

}  // namespace dilatron::ring
