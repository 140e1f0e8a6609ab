// The arithmetic of the host reference, shared by the single-device reference and the ring's Host
// executor: exact softmax attention of some query rows to some key rows of one head in float64, folded
// into a running (O, LSE) per query row with the overflow-safe LSE merge. Partial results merge in any
// order to the same answer, which is what lets the ring attend to key blocks as they arrive.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace dilatron {

class Accumulator {
 public:
  // `slots` rows of `dim` values each; O = 0 and LSE = -inf until something is attended.
  Accumulator(std::int64_t slots, std::int64_t dim);
  void reset();

  // Query i (its values at queries[i * dim], global row q_rows[i], accumulator slot slots[i]) attends
  // to the keys: k_rows ascending, values at keys/values[j * dim]. With `causal`, query i sees key j
  // only when k_rows[j] <= q_rows[i]. Returns the query-key pairs attended.
  std::int64_t attend(std::span<const double> queries, std::span<const std::int64_t> q_rows,
                      std::span<const std::int64_t> slots, std::span<const double> keys,
                      std::span<const double> values, std::span<const std::int64_t> k_rows, double scale, bool causal);

  const double* out(std::int64_t slot) const { return &acc_[std::size_t(slot * dim_)]; }
  // NaN when a NaN entered the slot's scores; +inf when the true LSE lies beyond double's range.
  double lse(std::int64_t slot) const;

 private:
  // Folds one query row, given its scores against the visible keys, into the slot.
  template <class Real>
  void fold_row(const std::vector<Real>& scores, std::span<const double> values, std::size_t slot);

  std::int64_t dim_;
  std::vector<double> acc_, scores_, row_;
  std::vector<long double> lse_, wide_scores_;  // LSEs kept wide: a partial's may exceed double's range
};

// The gradients of attention against final statistics (docs/SEMANTICS.md, "Gradients"). Query i:
// values at values[i * dim], global row rows[i], slot slots[i] into the per-slot arrays (dout and dq:
// dim values per slot; delta and lse: one). Key j: values at keys/values[j * dim], global rows
// ascending, slot slots[j] into dk and dv. With `causal`, query i sees key j only when
// k.rows[j] <= q.rows[i]. Adds to dq, dk and dv.
struct GradientQueries {
  std::span<const double> values;
  std::span<const std::int64_t> rows, slots;
  const double *dout, *delta, *lse;
  double* dq;
};
struct GradientKeys {
  std::span<const double> keys, values;
  std::span<const std::int64_t> rows, slots;
  double *dk, *dv;
};
void attention_gradients(const GradientQueries& q, const GradientKeys& k, std::int64_t dim, double scale, bool causal);

}  // namespace dilatron
