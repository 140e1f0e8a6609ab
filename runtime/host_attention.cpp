#include "runtime/host_attention.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

namespace dilatron {
namespace {

using Wide = long double;  // scores and LSEs past double's range: q, k near 1e160, scale near 1e308
constexpr Wide kNegInf = -std::numeric_limits<Wide>::infinity();

// log(exp(a) + exp(b)) without overflow, exact when either side is -inf, and NaN when either is NaN
// (a NaN score poisons its row's LSE as it does its O; -inf stays the mark of "no key selected").
Wide merge_lse(Wide a, Wide b) {
  if (std::isnan(a) || std::isnan(b)) return std::numeric_limits<Wide>::quiet_NaN();
  const Wide hi = std::max(a, b), lo = std::min(a, b);
  return hi == kNegInf ? kNegInf : hi + std::log1p(std::exp(lo - hi));
}

// A wide value as a double: beyond double's range is +-inf (a conversion out of range is undefined).
double narrow(Wide x) {
  if (x > Wide(std::numeric_limits<double>::max())) return std::numeric_limits<double>::infinity();
  if (x < -Wide(std::numeric_limits<double>::max())) return -std::numeric_limits<double>::infinity();
  return double(x);
}

}  // namespace

Accumulator::Accumulator(std::int64_t slots, std::int64_t dim)
    : dim_(dim), acc_(std::size_t(slots * dim)), lse_(std::size_t(slots)) {
  reset();
}

void Accumulator::reset() {
  std::fill(acc_.begin(), acc_.end(), 0.0);
  std::fill(lse_.begin(), lse_.end(), kNegInf);
}

double Accumulator::lse(std::int64_t slot) const { return narrow(lse_[std::size_t(slot)]); }

template <class Real>
void Accumulator::fold_row(const std::vector<Real>& scores, std::span<const double> values, std::size_t slot) {
  const std::size_t dim = std::size_t(dim_);
  Real max_score = -std::numeric_limits<Real>::infinity();
  for (const Real score : scores) max_score = std::max(max_score, score);  // skips a NaN: the sum gets it
  Real sum = 0;
  std::fill(row_.begin(), row_.end(), 0.0);
  for (std::size_t j = 0; j < scores.size(); ++j) {
    const Real weight = std::exp(scores[j] - max_score);
    sum += weight;
    for (std::size_t d = 0; d < dim; ++d) row_[d] += double(weight) * values[j * dim + d];
  }
  // Fold this partial (row_ / sum, lse) into the slot.
  // The weights of the old and the new part depend only on their LSEs' difference: 1/(1 + e^-d) and
  // 1/(1 + e^d), exact halves for a tie even where hi + log 2 rounds back to hi (LSEs near 1e300).
  const Wide lse = Wide(max_score) + std::log(Wide(sum)), before = lse_[slot], merged = merge_lse(before, lse);
  const Wide d = lse - before;  // +inf when nothing was there yet: keep 0, take all
  const double keep = before == kNegInf ? 0.0 : double(1 / (1 + std::exp(d)));
  const double take = double(1 / (1 + std::exp(-d)) / Wide(sum));
  double* acc = &acc_[slot * dim];
  for (std::size_t d = 0; d < dim; ++d) acc[d] = acc[d] * keep + row_[d] * take;
  lse_[slot] = merged;
}

std::int64_t Accumulator::attend(std::span<const double> queries, std::span<const std::int64_t> q_rows,
                                 std::span<const std::int64_t> slots, std::span<const double> keys,
                                 std::span<const double> values, std::span<const std::int64_t> k_rows, double scale,
                                 bool causal) {
  const std::size_t dim = std::size_t(dim_);
  row_.resize(dim);
  std::int64_t pairs = 0;
  for (std::size_t i = 0; i < q_rows.size(); ++i) {
    const std::size_t visible =
        causal ? std::size_t(std::upper_bound(k_rows.begin(), k_rows.end(), q_rows[i]) - k_rows.begin()) : k_rows.size();
    if (visible == 0) continue;
    pairs += std::int64_t(visible);
    const double* q = &queries[i * dim];
    // Scores in double; a row where one overflows (or is NaN) is scored again in the wider type, where
    // finite inputs give finite scores and the softmax of the math.
    scores_.resize(visible);
    bool finite = true;
    for (std::size_t j = 0; j < visible; ++j) {
      double dot = 0;
      for (std::size_t d = 0; d < dim; ++d) dot += q[d] * keys[j * dim + d];
      scores_[j] = dot * scale;
      finite = finite && std::isfinite(scores_[j]);
    }
    if (finite) {
      fold_row(scores_, values, std::size_t(slots[i]));
      continue;
    }
    wide_scores_.resize(visible);
    for (std::size_t j = 0; j < visible; ++j) {
      Wide dot = 0;
      for (std::size_t d = 0; d < dim; ++d) dot += Wide(q[d]) * Wide(keys[j * dim + d]);
      wide_scores_[j] = dot * Wide(scale);
    }
    fold_row(wide_scores_, values, std::size_t(slots[i]));
  }
  return pairs;
}

void attention_gradients(const GradientQueries& q, const GradientKeys& k, std::int64_t dim_, double scale, bool causal) {
  const std::size_t dim = std::size_t(dim_);
  for (std::size_t i = 0; i < q.rows.size(); ++i) {
    const std::size_t visible =
        causal ? std::size_t(std::upper_bound(k.rows.begin(), k.rows.end(), q.rows[i]) - k.rows.begin()) : k.rows.size();
    const std::size_t qs = std::size_t(q.slots[i]);
    const double *query = &q.values[i * dim], *g = &q.dout[qs * dim];
    const double lse = q.lse[qs], delta = q.delta[qs];
    double* dq = &q.dq[qs * dim];
    for (std::size_t j = 0; j < visible; ++j) {
      const double *key = &k.keys[j * dim], *value = &k.values[j * dim];
      double score = 0, dp = 0;
      for (std::size_t d = 0; d < dim; ++d) score += query[d] * key[d], dp += g[d] * value[d];
      const double weight = std::exp(score * scale - lse), ds = weight * (dp - delta) * scale;
      const std::size_t ks = std::size_t(k.slots[j]);
      double *dk = &k.dk[ks * dim], *dv = &k.dv[ks * dim];
      for (std::size_t d = 0; d < dim; ++d) {
        dq[d] += ds * key[d];
        dk[d] += ds * query[d];
        dv[d] += weight * g[d];
      }
    }
  }
}

}  // namespace dilatron
