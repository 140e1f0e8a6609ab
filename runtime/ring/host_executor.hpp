// The ring's forward pass for one rank on host memory, in float64: what the Host transport runs in CI,
// and the oracle the GPU executor will be held to. Walks the RingPlan exactly as every transport does.
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

}  // namespace dilatron::ring
