// The host reference over packed variable-length batches: every sequence is a view of its rows, run
// through reference_forward and reference_backward alone, so a packed batch equals its sequences run one
// by one by construction; what is added here is the validation of the packing.
#include <dilatron/error.hpp>
#include <dilatron/reference.hpp>

#include <fmt/format.h>

#include "runtime/problem.hpp"
#include "runtime/ring/partition.hpp"

namespace dilatron {
namespace {

template <class Run>
void each_sequence(const std::vector<std::int32_t>& cu_seqlens, Run run) {
  for (std::size_t i = 0; i + 1 < cu_seqlens.size(); ++i) {
    if (cu_seqlens[i + 1] > cu_seqlens[i]) run(ring::RowRange{cu_seqlens[i], cu_seqlens[i + 1]});
  }
}

}  // namespace

void reference_forward_varlen(const Config& config, const TensorView& q, const TensorView& k, const TensorView& v,
                              const std::vector<std::int32_t>& cu_seqlens, const TensorView& out, const TensorView* lse,
                              unsigned threads, const Progress& progress) {
  const Problem p = validate(config, q, k, v, out, lse);
  validate_host_packing(q, cu_seqlens);
  const std::int64_t total = attended_pairs(config, cu_seqlens, p.heads);  // as reference_forward counts them
  std::int64_t done = 0;
  each_sequence(cu_seqlens, [&](ring::RowRange rows) {
    const TensorView lse_rows = lse ? ring::rows_of(*lse, rows, 2) : TensorView{};
    const Progress report = [&](std::int64_t sequence_done, std::int64_t) {
      if (progress) progress(done + sequence_done, total);
    };
    reference_forward(config, ring::rows_of(q, rows, 1), ring::rows_of(k, rows, 1), ring::rows_of(v, rows, 1),
                      ring::rows_of(out, rows, 1), lse ? &lse_rows : nullptr, threads, report);
    done += attended_pairs(config, rows.size(), p.heads);
  });
}

void reference_backward_varlen(const Config& config, const TensorView& q, const TensorView& k, const TensorView& v,
                               const std::vector<std::int32_t>& cu_seqlens, const TensorView& dout, const TensorView& dq,
                               const TensorView& dk, const TensorView& dv, unsigned threads) {
  validate_backward(config, q, k, v, dout, dq, dk, dv);
  validate_host_packing(q, cu_seqlens);
  each_sequence(cu_seqlens, [&](ring::RowRange rows) {
    const auto at = [&](const TensorView& t) { return ring::rows_of(t, rows, 1); };
    reference_backward(config, at(q), at(k), at(v), at(dout), at(dq), at(dk), at(dv), threads);
  });
}

}  // namespace dilatron
