// Float64 host reference. Per (batch, head) task: for each branch the head takes part in, walk the
// segments, gather the selected rows and let them attend to each other (runtime/host_attention.hpp),
// merging every branch into the head's (O, LSE). The index math is templates/dilatron/index.cuh, the
// same functions the kernels compile.
#include <dilatron/reference.hpp>

#include <atomic>
#include <vector>

#include "common/dtype.hpp"
#include "common/parallel.hpp"
#include "runtime/host_attention.hpp"
#include "runtime/problem.hpp"
#include "templates/dilatron/index.cuh"

namespace dilatron {
namespace {

namespace ix = index;

class HeadWorker {
 public:
  HeadWorker(const Config& config, const Problem& p, const TensorView& q, const TensorView& k, const TensorView& v)
      : config_(config), p_(p), q_(q), k_(k), v_(v), acc_(p.seq_len, p.head_dim) {}

  // `attended(pairs)` after each segment, with the query-key pairs it attended (for progress).
  template <class Attended>
  void run(std::int64_t b, std::int64_t h, const TensorView& out, const TensorView* lse, Attended&& attended) {
    acc_.reset();
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
        store_element(out.data, out.dtype, out.offset(b, n, h, d), acc_.out(n)[d] * out_scale);
      }
      if (lse) store_element(lse->data, DType::f32, lse->offset(b, h, n, 0), acc_.lse(n));
    }
  }

 private:
  void load_row(const TensorView& t, std::int64_t b, std::int64_t row, std::int64_t head, double* dst) const {
    for (std::int64_t d = 0; d < p_.head_dim; ++d) dst[d] = load_element(t.data, t.dtype, t.offset(b, row, head, d));
  }

  // The selected rows of segment s attend to each other; returns the pairs attended.
  std::int64_t attend_segment(std::int64_t b, std::int64_t h, std::int64_t kvh, const HeadBranch& br, std::int64_t s) {
    const std::int64_t begin = ix::segment_begin(s, br.w), end = ix::segment_end(s, br.w, p_.seq_len);
    const std::int64_t count = ix::selected_count(end - begin, br.offset, br.r), dim = p_.head_dim;
    rows_.resize(std::size_t(count));
    queries_.resize(std::size_t(count * dim));
    keys_.resize(std::size_t(count * dim));
    values_.resize(std::size_t(count * dim));
    for (std::int64_t j = 0; j < count; ++j) {
      const std::int64_t row = ix::selected_row(s, br.w, br.offset, br.r, j);
      rows_[std::size_t(j)] = row;  // the accumulator's slot is the row itself
      load_row(q_, b, row, h, &queries_[std::size_t(j * dim)]);
      load_row(k_, b, row, kvh, &keys_[std::size_t(j * dim)]);
      load_row(v_, b, row, kvh, &values_[std::size_t(j * dim)]);
    }
    return acc_.attend(queries_, rows_, rows_, keys_, values_, rows_, p_.scale, config_.causal);
  }

  const Config& config_;
  const Problem& p_;
  const TensorView &q_, &k_, &v_;
  Accumulator acc_;
  std::vector<std::int64_t> rows_;
  std::vector<double> queries_, keys_, values_;
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
        if (progress && pairs) progress(done += pairs, total);
      });
    };
  });
}

}  // namespace dilatron
