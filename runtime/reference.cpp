// Float64 host reference. Forward, per (batch, head) task: for each branch the head takes part in, walk
// the segments, gather the selected rows and let them attend to each other (runtime/host_attention.hpp),
// merging every branch into the head's (O, LSE). Backward, per (batch, kv head) task: the same forward
// per head, then the gradients segment by segment against the final LSE. The index math is templates/dilatron/index.cuh, the
// same functions the kernels compile.
#include <dilatron/reference.hpp>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <vector>

#include "common/dtype.hpp"
#include "common/parallel.hpp"
#include "runtime/host_attention.hpp"
#include "runtime/problem.hpp"
#include "templates/dilatron/index.cuh"

namespace dilatron {
namespace {

namespace ix = index;

// The rows branch `br` selects in segment s for one head, ascending, with their q, k and v values.
struct SegmentRows {
  std::vector<std::int64_t> rows;
  std::vector<double> q, k, v;  // count x dim each

  void gather(const Problem& p, const TensorView& q_t, const TensorView& k_t, const TensorView& v_t, std::int64_t b,
              std::int64_t h, std::int64_t kvh, const HeadBranch& br, std::int64_t s) {
    const std::int64_t begin = ix::segment_begin(s, br.w), end = ix::segment_end(s, br.w, p.seq_len);
    const std::int64_t count = ix::selected_count(end - begin, br.offset, br.r), dim = p.head_dim;
    rows.resize(std::size_t(count));
    q.resize(std::size_t(count * dim));
    k.resize(std::size_t(count * dim));
    v.resize(std::size_t(count * dim));
    for (std::int64_t j = 0; j < count; ++j) {
      const std::int64_t row = ix::selected_row(s, br.w, br.offset, br.r, j);
      rows[std::size_t(j)] = row;
      load(q_t, b, row, h, dim, &q[std::size_t(j * dim)]);
      load(k_t, b, row, kvh, dim, &k[std::size_t(j * dim)]);
      load(v_t, b, row, kvh, dim, &v[std::size_t(j * dim)]);
    }
  }

  static void load(const TensorView& t, std::int64_t b, std::int64_t row, std::int64_t head, std::int64_t dim,
                   double* dst) {
    for (std::int64_t d = 0; d < dim; ++d) dst[d] = load_element(t.data, t.dtype, t.offset(b, row, head, d));
  }
};

// One head's (O, LSE) over every branch it takes part in, in an accumulator indexed by row.
class HeadForward {
 public:
  HeadForward(const Config& config, const Problem& p, const TensorView& q, const TensorView& k, const TensorView& v)
      : config_(config), p_(p), q_(q), k_(k), v_(v), acc_(p.seq_len, p.head_dim) {}

  // `attended(pairs)` after each segment, with the query-key pairs it attended (for progress).
  template <class Attended>
  const Accumulator& run(std::int64_t b, std::int64_t h, Attended&& attended) {
    acc_.reset();
    const std::int64_t kvh = ix::kv_head(h, p_.heads, p_.kv_heads);
    for (const HeadBranch& branch : head_branches(config_, h, p_.heads)) {
      for (std::int64_t s = 0; s < ix::num_segments(p_.seq_len, branch.w); ++s) {
        seg_.gather(p_, q_, k_, v_, b, h, kvh, branch, s);
        attended(acc_.attend(seg_.q, seg_.rows, seg_.rows, seg_.k, seg_.v, seg_.rows, p_.scale, config_.causal));
      }
    }
    return acc_;
  }

 private:
  const Config& config_;
  const Problem& p_;
  const TensorView &q_, &k_, &v_;
  Accumulator acc_;
  SegmentRows seg_;
};

// The gradients of one (batch, kv head): every query head reading that kv head recomputes its (O, LSE),
// then, per branch and segment, the gradients against the final LSE (attention_gradients): exact, the
// path through the longnet branch weights included (docs/SEMANTICS.md, "Gradients").
class KvHeadBackward {
 public:
  KvHeadBackward(const Config& config, const Problem& p, const TensorView& q, const TensorView& k, const TensorView& v,
                 const TensorView& dout)
      : config_(config), p_(p), q_(q), k_(k), v_(v), dout_t_(dout), forward_(config, p, q, k, v),
        dq_(std::size_t(p.seq_len * p.head_dim)), dk_(dq_.size()), dv_(dq_.size()), dout_(dq_.size()),
        delta_(std::size_t(p.seq_len)), lse_(delta_.size()) {}

  void run(std::int64_t b, std::int64_t kvh, const TensorView& dq, const TensorView& dk, const TensorView& dv) {
    const std::int64_t dim = p_.head_dim, group = p_.heads / p_.kv_heads;
    std::fill(dk_.begin(), dk_.end(), 0.0);
    std::fill(dv_.begin(), dv_.end(), 0.0);
    for (std::int64_t h = kvh * group; h < (kvh + 1) * group; ++h) {
      const Accumulator& acc = forward_.run(b, h, [](std::int64_t) {});
      const double out_scale = output_scale(config_);
      for (std::int64_t n = 0; n < p_.seq_len; ++n) {
        double* g = &dout_[std::size_t(n * dim)];
        SegmentRows::load(dout_t_, b, n, h, dim, g);
        delta_[std::size_t(n)] = 0;
        for (std::int64_t d = 0; d < dim; ++d) {
          g[d] *= out_scale;
          delta_[std::size_t(n)] += g[d] * acc.out(n)[d];
        }
        lse_[std::size_t(n)] = acc.lse(n);
      }
      std::fill(dq_.begin(), dq_.end(), 0.0);
      for (const HeadBranch& branch : head_branches(config_, h, p_.heads)) {
        for (std::int64_t s = 0; s < ix::num_segments(p_.seq_len, branch.w); ++s) {
          seg_.gather(p_, q_, k_, v_, b, h, kvh, branch, s);
          // Slots are global rows on both sides.
          attention_gradients({seg_.q, seg_.rows, seg_.rows, dout_.data(), delta_.data(), lse_.data(), dq_.data()},
                              {seg_.k, seg_.v, seg_.rows, seg_.rows, dk_.data(), dv_.data()}, dim, p_.scale,
                              config_.causal);
        }
      }
      store(dq, b, h, dq_);
    }
    store(dk, b, kvh, dk_);
    store(dv, b, kvh, dv_);
  }

 private:
  void store(const TensorView& t, std::int64_t b, std::int64_t head, const std::vector<double>& grad) const {
    for (std::int64_t n = 0; n < p_.seq_len; ++n) {
      for (std::int64_t d = 0; d < p_.head_dim; ++d) {
        store_element(t.data, t.dtype, t.offset(b, n, head, d), grad[std::size_t(n * p_.head_dim + d)]);
      }
    }
  }

  const Config& config_;
  const Problem& p_;
  const TensorView &q_, &k_, &v_, &dout_t_;
  HeadForward forward_;
  SegmentRows seg_;
  std::vector<double> dq_, dk_, dv_, dout_, delta_, lse_;  // per row: [N, D], delta and lse [N]
};

}  // namespace

void reference_forward(const Config& config, const TensorView& q, const TensorView& k, const TensorView& v,
                       const TensorView& out, const TensorView* lse, unsigned threads, const Progress& progress) {
  const Problem p = validate(config, q, k, v, out, lse);
  const std::int64_t total = progress ? p.batch * attended_pairs(config, p.seq_len, p.heads) : 0;
  std::atomic<std::int64_t> done{0};
  const double out_scale = output_scale(config);
  parallel_for(p.batch * p.heads, threads, [&] {
    return [&, worker = HeadForward(config, p, q, k, v)](std::int64_t task) mutable {
      const std::int64_t b = task / p.heads, h = task % p.heads;
      const Accumulator& acc = worker.run(b, h, [&](std::int64_t pairs) {
        if (progress && pairs) progress(done += pairs, total);
      });
      for (std::int64_t n = 0; n < p.seq_len; ++n) {
        for (std::int64_t d = 0; d < p.head_dim; ++d) {
          store_element(out.data, out.dtype, out.offset(b, n, h, d), acc.out(n)[d] * out_scale);
        }
        if (lse) store_element(lse->data, DType::f32, lse->offset(b, h, n, 0), acc.lse(n));
      }
    };
  });
}

void reference_backward(const Config& config, const TensorView& q, const TensorView& k, const TensorView& v,
                        const TensorView& dout, const TensorView& dq, const TensorView& dk, const TensorView& dv,
                        unsigned threads) {
  const Problem p = validate_backward(config, q, k, v, dout, dq, dk, dv);
  // One task per (batch, kv head): the heads sharing a kv head add into the same dK and dV.
  parallel_for(p.batch * p.kv_heads, threads, [&] {
    return [&, worker = KvHeadBackward(config, p, q, k, v, dout)](std::int64_t task) mutable {
      worker.run(task / p.kv_heads, task % p.kv_heads, dq, dk, dv);
    };
  });
}

}  // namespace dilatron
