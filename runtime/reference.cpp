// Float64 host reference. Per (batch, head) task: for each branch the head takes part in, walk the
// segments, gather the selected K/V rows, run exact softmax attention among them, and merge the
// branch's (O, LSE) into the head's accumulator. The index math is templates/dilatron/index.cuh, the
// same functions the kernels compile.
#include <dilatron/reference.hpp>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <vector>

#include "common/dtype.hpp"
#include "common/parallel.hpp"
#include "runtime/problem.hpp"
#include "templates/dilatron/index.cuh"

namespace dilatron {
namespace {

namespace ix = index;
constexpr double kNegInf = -std::numeric_limits<double>::infinity();

// log(exp(a) + exp(b)) without overflow, and exact when either side is -inf.
double merge_lse(double a, double b) {
  const double hi = std::max(a, b), lo = std::min(a, b);
  return hi == kNegInf ? kNegInf : hi + std::log1p(std::exp(lo - hi));
}

class HeadWorker {
 public:
  HeadWorker(const Config& config, const Problem& p, const TensorView& q, const TensorView& k, const TensorView& v)
      : config_(config), p_(p), q_(q), k_(k), v_(v), acc_(p.seq_len * p.head_dim), lse_(p.seq_len) {}

  // `attended(pairs)` after each segment, with the query-key pairs it attended (for progress).
  template <class Attended>
  void run(std::int64_t b, std::int64_t h, const TensorView& out, const TensorView* lse, Attended&& attended) {
    std::fill(acc_.begin(), acc_.end(), 0.0);
    std::fill(lse_.begin(), lse_.end(), kNegInf);
    const std::int64_t kvh = ix::kv_head(h, p_.heads, p_.kv_heads);
    for (const HeadBranch& branch : head_branches(config_, h, p_.heads)) {
      for (std::int64_t s = 0; s < ix::num_segments(p_.seq_len, branch.w); ++s) {
        attended(attend_segment(b, h, kvh, branch, s));
      }
    }
    // head_groups averages over the G branches; longnet's accumulator already is the merged O.
    const double out_scale = config_.mode == Mode::head_groups ? 1.0 / double(config_.branches()) : 1.0;
    for (std::int64_t n = 0; n < p_.seq_len; ++n) {
      for (std::int64_t d = 0; d < p_.head_dim; ++d) {
        store_element(out.data, out.dtype, out.offset(b, n, h, d), acc_[n * p_.head_dim + d] * out_scale);
      }
      if (lse) store_element(lse->data, DType::f32, lse->offset(b, h, n, 0), lse_[n]);
    }
  }

 private:
  void load_row(const TensorView& t, std::int64_t b, std::int64_t row, std::int64_t head, double* dst) const {
    for (std::int64_t d = 0; d < p_.head_dim; ++d) dst[d] = load_element(t.data, t.dtype, t.offset(b, row, head, d));
  }

  // Returns the query-key pairs attended.
  std::int64_t attend_segment(std::int64_t b, std::int64_t h, std::int64_t kvh, const HeadBranch& br, std::int64_t s) {
    const std::int64_t begin = ix::segment_begin(s, br.w), end = ix::segment_end(s, br.w, p_.seq_len);
    const std::int64_t count = ix::selected_count(end - begin, br.offset, br.r), dim = p_.head_dim;
    if (count == 0) return 0;
    keys_.resize(count * dim);
    values_.resize(count * dim);
    scores_.resize(count);
    query_.resize(dim);
    out_.resize(dim);
    for (std::int64_t j = 0; j < count; ++j) {
      const std::int64_t row = ix::selected_row(s, br.w, br.offset, br.r, j);
      load_row(k_, b, row, kvh, &keys_[j * dim]);
      load_row(v_, b, row, kvh, &values_[j * dim]);
    }
    for (std::int64_t i = 0; i < count; ++i) {
      const std::int64_t row = ix::selected_row(s, br.w, br.offset, br.r, i);
      load_row(q_, b, row, h, query_.data());
      // Causal: selected rows ascend with j, so key j <= query i is key row <= query row.
      const std::int64_t keys = config_.causal ? i + 1 : count;
      double max_score = kNegInf;
      for (std::int64_t j = 0; j < keys; ++j) {
        double dot = 0;
        for (std::int64_t d = 0; d < dim; ++d) dot += query_[d] * keys_[j * dim + d];
        scores_[j] = dot * p_.scale;
        max_score = std::max(max_score, scores_[j]);
      }
      double sum = 0;
      std::fill(out_.begin(), out_.end(), 0.0);
      for (std::int64_t j = 0; j < keys; ++j) {
        const double weight = std::exp(scores_[j] - max_score);
        sum += weight;
        for (std::int64_t d = 0; d < dim; ++d) out_[d] += weight * values_[j * dim + d];
      }
      merge_row(row, max_score + std::log(sum), 1.0 / sum);
    }
    return config_.causal ? count * (count + 1) / 2 : count * count;
  }

  // Folds this branch's normalized row (out_ * inv_sum, lse) into the accumulator.
  void merge_row(std::int64_t row, double lse, double inv_sum) {
    double* acc = &acc_[row * p_.head_dim];
    const double merged = merge_lse(lse_[row], lse);
    const double keep = lse_[row] == kNegInf ? 0.0 : std::exp(lse_[row] - merged);
    const double take = std::exp(lse - merged) * inv_sum;
    for (std::int64_t d = 0; d < p_.head_dim; ++d) acc[d] = acc[d] * keep + out_[d] * take;
    lse_[row] = merged;
  }

  const Config& config_;
  const Problem& p_;
  const TensorView &q_, &k_, &v_;
  std::vector<double> acc_, lse_, keys_, values_, scores_, query_, out_;
};

}  // namespace

void reference_forward(const Config& config, const TensorView& q, const TensorView& k, const TensorView& v,
                       const TensorView& out, const TensorView* lse, unsigned threads, const Progress& progress) {
  const Problem p = validate(config, q, k, v, out, lse);
  const std::int64_t total = progress ? p.batch * attended_pairs(config, p.seq_len, p.heads) : 0;
  std::atomic<std::int64_t> done{0};
  parallel_for(p.batch * p.heads, threads, [&] {
    return [&, worker = HeadWorker(config, p, q, k, v)](std::int64_t task) mutable {
      worker.run(task / p.heads, task % p.heads, out, lse, [&](std::int64_t pairs) {
        if (progress) progress(done += pairs, total);
      });
    };
  });
}

}  // namespace dilatron
