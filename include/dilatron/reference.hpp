// The float64 host reference: the executable form of docs/SEMANTICS.md that every kernel is checked
// against. Slow by design (no tiling, no approximations); parallel over (batch, head).
#pragma once

#include <dilatron/config.hpp>
#include <dilatron/tensor.hpp>

#include <cstdint>
#include <functional>
#include <vector>

namespace dilatron {

// q [B,N,H,D], k/v [B,N,Hkv,D] and out [B,N,H,D] in host memory, any supported dtype (out need not match
// q). lse, when given, is float32 [B,H,N,1]. threads == 0 uses every hardware thread. Validates first
// and throws dilatron::Error before touching out or lse.
// `progress`, when set, is called from the worker threads as work completes, with the query-key pairs
// attended so far and in all (the cost is proportional to pairs); it must be thread-safe and cheap.
using Progress = std::function<void(std::int64_t done, std::int64_t total)>;
void reference_forward(const Config& config, const TensorView& q, const TensorView& k, const TensorView& v,
                       const TensorView& out, const TensorView* lse = nullptr, unsigned threads = 0,
                       const Progress& progress = {});

// Gradients of reference_forward's O for an upstream gradient dout [B,N,H,D]: dq [B,N,H,D] and dk, dv
// [B,N,Hkv,D], in host memory, any supported dtype each. Exact, the path through the longnet combine's
// LSE weights included (docs/SEMANTICS.md, "Gradients"); O and LSE are recomputed, not taken. Validates
// first and throws dilatron::Error before writing anything.
void reference_backward(const Config& config, const TensorView& q, const TensorView& k, const TensorView& v,
                        const TensorView& dout, const TensorView& dq, const TensorView& dk, const TensorView& dv,
                        unsigned threads = 0);

// Packed variable-length batches (docs/SEMANTICS.md, "Packed sequences"): the sequences lie one after
// another in the rows of q [1,total,H,D], k/v [1,total,Hkv,D] and out [1,total,H,D] (lse [1,H,total,1]),
// sequence i in rows [cu_seqlens[i], cu_seqlens[i + 1]); each is attended alone, its segments and
// dilation residues counted from its first row. cu_seqlens: at least two offsets, the first 0, never
// decreasing, the last `total` (an empty sequence is allowed and has no rows). Validates everything
// first and throws dilatron::Error before writing anything.
// `progress` as reference_forward's, over the pairs of every sequence.
void reference_forward_varlen(const Config& config, const TensorView& q, const TensorView& k, const TensorView& v,
                              const std::vector<std::int32_t>& cu_seqlens, const TensorView& out,
                              const TensorView* lse = nullptr, unsigned threads = 0, const Progress& progress = {});
void reference_backward_varlen(const Config& config, const TensorView& q, const TensorView& k, const TensorView& v,
                               const std::vector<std::int32_t>& cu_seqlens, const TensorView& dout, const TensorView& dq,
                               const TensorView& dk, const TensorView& dv, unsigned threads = 0);

}  // namespace dilatron
