// The ring's forward and backward passes for one rank on host memory, in float64: what the Host
// transport runs in CI, and the oracle the GPU executor is held to. Walks the RingPlan exactly as every
// transport does.
#pragma once

#include <dilatron/ring.hpp>
#include <dilatron/tensor.hpp>

#include <cstdint>
#include <functional>

#include "runtime/ring/communicator.hpp"
#include "runtime/ring/plan.hpp"

namespace dilatron::ring {

// q, k, v, out: this rank's shards [B, rows, H|Hkv, D] (rows = plan.per_rank[comm.rank()].rows), in
// the plan's dtype for q/k/v (out any dtype); lse float32 [B, H, rows, 1] or null. Throws
// dilatron::Error for tensors that do not fit the plan, before any exchange.
void host_ring_forward(const RingPlan& plan, Communicator& comm, const TensorView& q, const TensorView& k,
                       const TensorView& v, const TensorView& out, const TensorView* lse);

// The gradients on this rank's shards (dout, dq: [B, rows, H, D]; dk, dv: [B, rows, Hkv, D]; any dtype
// each): the forward pass again, then the same blocks attended against the final statistics, with the
// blocks' dK and dV sent back to their owners and added there, in float32 (float64 for float64 inputs,
// so that a float64 ring equals reference_backward to rounding).
void host_ring_backward(const RingPlan& plan, Communicator& comm, const TensorView& q, const TensorView& k,
                        const TensorView& v, const TensorView& dout, const TensorView& dq, const TensorView& dk,
                        const TensorView& dv);

// Whole tensors [B, N, ...] of a ring run in one process.
struct WholeTensors {
  TensorView q, k, v;
};
struct WholeGradients {
  TensorView dout, dq, dk, dv;
};

// Every rank of `plan` in this process on whole host tensors, stepped together by a pool of `threads`
// (0: every hardware thread) whatever the number of ranks; the same arithmetic, block for block, as
// host_ring_forward/backward over a transport. Inputs were validated by the caller.
void lockstep_ring_forward(const RingPlan& plan, const WholeTensors& t, const TensorView& out, const TensorView* lse,
                           unsigned threads = 0, const RingProgress& progress = {});
void lockstep_ring_backward(const RingPlan& plan, const WholeTensors& t, const WholeGradients& g, unsigned threads = 0,
                            const RingProgress& progress = {});

}  // namespace dilatron::ring
