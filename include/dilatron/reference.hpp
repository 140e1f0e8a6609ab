// The float64 host reference: the executable form of docs/SEMANTICS.md that every kernel is checked
// against. Slow by design (no tiling, no approximations); parallel over (batch, head).
#pragma once

#include <dilatron/config.hpp>
#include <dilatron/tensor.hpp>

namespace dilatron {

// q [B,N,H,D], k/v [B,N,Hkv,D] and out [B,N,H,D] in host memory, any supported dtype (out need not match
// q). lse, when given, is float32 [B,H,N,1]. threads == 0 uses every hardware thread. Validates first
// and throws dilatron::Error before touching out or lse.
void reference_forward(const Config& config, const TensorView& q, const TensorView& k, const TensorView& v,
                       const TensorView& out, const TensorView* lse = nullptr, unsigned threads = 0);

}  // namespace dilatron
