#include "runtime/host_attention.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

namespace dilatron {
namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

// log(exp(a) + exp(b)) without overflow, and exact when either side is -inf.
double merge_lse(double a, double b) {
  const double hi = std::max(a, b), lo = std::min(a, b);
  return hi == kNegInf ? kNegInf : hi + std::log1p(std::exp(lo - hi));
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
    scores_.resize(visible);
    double max_score = kNegInf;
    for (std::size_t j = 0; j < visible; ++j) {
      double dot = 0;
      for (std::size_t d = 0; d < dim; ++d) dot += q[d] * keys[j * dim + d];
      scores_[j] = dot * scale;
      max_score = std::max(max_score, scores_[j]);
    }
    double sum = 0;
    std::fill(row_.begin(), row_.end(), 0.0);
    for (std::size_t j = 0; j < visible; ++j) {
      const double weight = std::exp(scores_[j] - max_score);
      sum += weight;
      for (std::size_t d = 0; d < dim; ++d) row_[d] += weight * values[j * dim + d];
    }
    // Fold this partial (row_ / sum, lse) into the slot.
    const std::size_t slot = std::size_t(slots[i]);
    const double lse = max_score + std::log(sum), before = lse_[slot], merged = merge_lse(before, lse);
    const double keep = before == kNegInf ? 0.0 : std::exp(before - merged), take = std::exp(lse - merged) / sum;
    double* acc = &acc_[slot * dim];
    for (std::size_t d = 0; d < dim; ++d) acc[d] = acc[d] * keep + row_[d] * take;
    lse_[slot] = merged;
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
