// The host reference over packed variable-length batches: every sequence is a view of its rows, run
// through reference_forward and reference_backward alone, so a packed batch equals its sequences run one
// by one by construction; what is added here is the validation of the packing.
#include <dilatron/dilatron.hpp>
#include <dilatron/error.hpp>
#include <dilatron/reference.hpp>

#include <fmt/format.h>

#include "runtime/problem.hpp"
#include "runtime/ring/partition.hpp"

namespace dilatron {
namespace {

// The shapes a packed call needs (B = 1, the rows of the packing), checked before any sequence runs.
void check_packing(const TensorView& q, const std::vector<std::int32_t>& cu_seqlens) {
  validate_cu_seqlens(cu_seqlens.data(), std::int64_t(cu_seqlens.size()), q.shape[1]);
  validate_packing(q, {cu_seqlens.data(), std::int64_t(cu_seqlens.size()) - 1, 0});
}

template <class Run>
void each_sequence(const std::vector<std::int32_t>& cu_seqlens, Run run) {
  for (std::size_t i = 0; i + 1 < cu_seqlens.size(); ++i) {
    if (cu_seqlens[i + 1] > cu_seqlens[i]) run(ring::RowRange{cu_seqlens[i], cu_seqlens[i + 1]});
  }
}

}  // namespace

void reference_forward_varlen(const Config& config, const TensorView& q, const TensorView& k, const TensorView& v,
                              const std::vector<std::int32_t>& cu_seqlens, const TensorView& out, const TensorView* lse,
                              unsigned threads) {
  validate(config, q, k, v, out, lse);
  check_packing(q, cu_seqlens);
  each_sequence(cu_seqlens, [&](ring::RowRange rows) {
    const TensorView lse_rows = lse ? ring::rows_of(*lse, rows, 2) : TensorView{};
    reference_forward(config, ring::rows_of(q, rows, 1), ring::rows_of(k, rows, 1), ring::rows_of(v, rows, 1),
                      ring::rows_of(out, rows, 1), lse ? &lse_rows : nullptr, threads);
  });
}

void reference_backward_varlen(const Config& config, const TensorView& q, const TensorView& k, const TensorView& v,
                               const std::vector<std::int32_t>& cu_seqlens, const TensorView& dout, const TensorView& dq,
                               const TensorView& dk, const TensorView& dv, unsigned threads) {
  validate_backward(config, q, k, v, dout, dq, dk, dv);
  check_packing(q, cu_seqlens);
  each_sequence(cu_seqlens, [&](ring::RowRange rows) {
    const auto at = [&](const TensorView& t) { return ring::rows_of(t, rows, 1); };
    reference_backward(config, at(q), at(k), at(v), at(dout), at(dq), at(dk), at(dv), threads);
  });
}

}  // namespace dilatron
