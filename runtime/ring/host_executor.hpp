// The ring's forward and backward passes for one rank on host memory, in float64: what the Host
// transport runs in CI, and the oracle the GPU executor is held to. Walks the RingPlan exactly as every
// transport does.
#pragma once

#include <dilatron/tensor.hpp>

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
// blocks' dK and dV sent back to their owners in float32 and added there. Equals reference_backward up
// to that float32 transfer.
void host_ring_backward(const RingPlan& plan, Communicator& comm, const TensorView& q, const TensorView& k,
                        const TensorView& v, const TensorView& dout, const TensorView& dq, const TensorView& dk,
                        const TensorView& dv);

}  // namespace dilatron::ring
