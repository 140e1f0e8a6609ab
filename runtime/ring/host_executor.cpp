#include "runtime/ring/host_executor.hpp"

#include <dilatron/error.hpp>

#include <fmt/format.h>

#include <cmath>
#include <map>
#include <vector>

#include "common/dtype.hpp"
#include "runtime/host_attention.hpp"
#include "runtime/problem.hpp"
#include "templates/dilatron/index.cuh"

namespace dilatron::ring {
namespace {

namespace ix = index;

// The rows of segment s (length w, dilation r) that offset o selects inside `part`, ascending.
std::vector<std::int64_t> selected_rows(std::int64_t s, std::int64_t w, std::int64_t o, std::int64_t r,
                                        RowRange part) {
  const ix::RowRun run = ix::selected_in(std::max(part.begin, s * w), std::min(part.end, (s + 1) * w), w, o, r);
  std::vector<std::int64_t> rows(std::size_t(run.count));
  for (std::int64_t j = 0; j < run.count; ++j) rows[std::size_t(j)] = run.first + j * r;  // one segment: r apart
  return rows;
}

class RankExecutor {
 public:
  RankExecutor(const RingPlan& plan, int rank, const TensorView& q, const TensorView& k, const TensorView& v)
      : plan_(plan),
        s_(plan.shape),
        rows_(plan.per_rank.at(std::size_t(rank)).rows),
        q_(q),
        k_(k),
        v_(v),
        scale_(plan.config.scale.value_or(1.0 / std::sqrt(double(s_.head_dim)))) {
    for (std::int64_t i = 0; i < s_.batch * s_.heads; ++i) acc_.emplace_back(rows_.size(), s_.head_dim);
  }

  // Step 0: every segment part this rank holds attends to itself, in every branch.
  void attend_local() {
    for (std::size_t i = 0; i < plan_.config.branches(); ++i) {
      const std::int64_t w = plan_.config.segments[i];
      for (std::int64_t s = rows_.begin / w; s * w < rows_.end; ++s) {
        const RowRange part{std::max(s * w, rows_.begin), std::min((s + 1) * w, rows_.end)};
        for (std::int64_t h = 0; h < s_.heads; ++h) {
          const std::int64_t o = offset(h, i);
          if (o < 0) continue;
          const std::vector<std::int64_t> rows = selected_rows(s, w, o, plan_.config.dilations[i], part);
          const std::int64_t kvh = ix::kv_head(h, s_.heads, s_.kv_heads);
          for (std::int64_t b = 0; b < s_.batch; ++b) {
            gather(k_, b, kvh, rows, keys_);
            gather(v_, b, kvh, rows, values_);
            attend(b, h, rows, keys_, values_, rows);
          }
        }
      }
    }
  }

  // Packs this rank's rows of `block` in the layout plan.hpp describes.
  std::vector<std::byte> pack(const Block& block) {
    std::vector<std::byte> bytes(std::size_t(block.bytes));
    walk(block, [&](std::int64_t b, std::int64_t kvh, std::int64_t row, std::size_t element) {
      for (std::int64_t d = 0; d < s_.head_dim; ++d) {
        store_element(bytes.data(), s_.dtype, std::int64_t(element) + d, load_element(k_.data, k_.dtype, k_.offset(b, row - rows_.begin, kvh, d)));
        store_element(bytes.data(), s_.dtype, std::int64_t(element) + s_.head_dim + d,
                      load_element(v_.data, v_.dtype, v_.offset(b, row - rows_.begin, kvh, d)));
      }
    });
    return bytes;
  }

  // This rank's queries of the block's segment attend to the block's rows.
  void attend_block(const Block& block, const std::vector<std::byte>& bytes) {
    const std::int64_t w = plan_.config.segments[std::size_t(block.branch)];
    const std::int64_t r = plan_.config.dilations[std::size_t(block.branch)];
    const RowRange mine{std::max(block.segment * w, rows_.begin), std::min((block.segment + 1) * w, rows_.end)};
    std::size_t element = 0;
    for (const Block::Part& part : block.parts) {
      std::vector<std::int64_t> key_rows(std::size_t(part.rows));
      for (std::int64_t j = 0; j < part.rows; ++j) key_rows[std::size_t(j)] = part.first_row + j * r;
      const std::vector<std::int64_t> queries = selected_rows(block.segment, w, part.offset, r, mine);
      for (std::int64_t b = 0; b < s_.batch; ++b) {
        keys_.resize(std::size_t(part.rows * s_.head_dim));
        values_.resize(keys_.size());
        for (std::int64_t j = 0; j < part.rows; ++j, element += std::size_t(2 * s_.head_dim)) {
          for (std::int64_t d = 0; d < s_.head_dim; ++d) {
            keys_[std::size_t(j * s_.head_dim + d)] = load_element(bytes.data(), s_.dtype, std::int64_t(element) + d);
            values_[std::size_t(j * s_.head_dim + d)] =
                load_element(bytes.data(), s_.dtype, std::int64_t(element) + s_.head_dim + d);
          }
        }
        for (std::int64_t h = 0; h < s_.heads; ++h) {
          if (ix::kv_head(h, s_.heads, s_.kv_heads) == part.kv_head && offset(h, std::size_t(block.branch)) == part.offset) {
            attend(b, h, queries, keys_, values_, key_rows);
          }
        }
      }
    }
  }

  void write(const TensorView& out, const TensorView* lse) const {
    // head_groups averages over the G branches; longnet's accumulator already is the merged O.
    const double out_scale = plan_.config.mode == Mode::head_groups ? 1.0 / double(plan_.config.branches()) : 1.0;
    for (std::int64_t b = 0; b < s_.batch; ++b) {
      for (std::int64_t h = 0; h < s_.heads; ++h) {
        const Accumulator& acc = acc_[std::size_t(b * s_.heads + h)];
        for (std::int64_t n = 0; n < rows_.size(); ++n) {
          for (std::int64_t d = 0; d < s_.head_dim; ++d) {
            store_element(out.data, out.dtype, out.offset(b, n, h, d), acc.out(n)[d] * out_scale);
          }
          if (lse) store_element(lse->data, DType::f32, lse->offset(b, h, n, 0), acc.lse(n));
        }
      }
    }
  }

 private:
  std::int64_t offset(std::int64_t h, std::size_t branch) const {
    const int mode = plan_.config.mode == Mode::longnet ? ix::kLongnet : ix::kHeadGroups;
    return ix::branch_offset(mode, h, s_.heads, std::int64_t(branch), std::int64_t(plan_.config.branches()),
                             plan_.config.dilations[branch]);
  }

  // Calls f(b, kv_head, row, first element) for every packed row of the block, in layout order.
  template <class F>
  void walk(const Block& block, F&& f) const {
    const std::int64_t r = plan_.config.dilations[std::size_t(block.branch)];
    std::size_t element = 0;
    for (const Block::Part& part : block.parts) {
      for (std::int64_t b = 0; b < s_.batch; ++b) {
        for (std::int64_t j = 0; j < part.rows; ++j, element += std::size_t(2 * s_.head_dim)) {
          f(b, part.kv_head, part.first_row + j * r, element);
        }
      }
    }
  }

  void gather(const TensorView& t, std::int64_t b, std::int64_t head, const std::vector<std::int64_t>& rows,
              std::vector<double>& dst) const {
    dst.resize(rows.size() * std::size_t(s_.head_dim));
    for (std::size_t j = 0; j < rows.size(); ++j) {
      for (std::int64_t d = 0; d < s_.head_dim; ++d) {
        dst[j * std::size_t(s_.head_dim) + std::size_t(d)] = load_element(t.data, t.dtype, t.offset(b, rows[j] - rows_.begin, head, d));
      }
    }
  }

  void attend(std::int64_t b, std::int64_t h, const std::vector<std::int64_t>& query_rows, const std::vector<double>& keys,
              const std::vector<double>& values, const std::vector<std::int64_t>& key_rows) {
    if (query_rows.empty() || key_rows.empty()) return;
    gather(q_, b, h, query_rows, queries_);
    slots_.resize(query_rows.size());
    for (std::size_t i = 0; i < query_rows.size(); ++i) slots_[i] = query_rows[i] - rows_.begin;
    acc_[std::size_t(b * s_.heads + h)].attend(queries_, query_rows, slots_, keys, values, key_rows, scale_,
                                               plan_.config.causal);
  }

  const RingPlan& plan_;
  const Shape& s_;
  RowRange rows_;
  const TensorView &q_, &k_, &v_;
  double scale_;
  std::vector<Accumulator> acc_;  // per (batch, head), one slot per local row
  std::vector<double> queries_, keys_, values_;
  std::vector<std::int64_t> slots_;
};

void check_shard(const char* name, const TensorView& t, const Shape4& want) {
  if (t.shape != want) {
    throw Error(fmt::format("{} shard is [{},{},{},{}] but this rank's part of the plan is [{},{},{},{}]", name,
                            t.shape[0], t.shape[1], t.shape[2], t.shape[3], want[0], want[1], want[2], want[3]));
  }
}

}  // namespace

void host_ring_forward(const RingPlan& plan, Communicator& comm, const TensorView& q, const TensorView& k,
                       const TensorView& v, const TensorView& out, const TensorView* lse) {
  if (comm.size() != plan.ranks) {
    throw Error(fmt::format("the communicator has {} ranks but the plan {}", comm.size(), plan.ranks));
  }
  const Shape& s = plan.shape;
  const RowRange rows = plan.per_rank.at(std::size_t(comm.rank())).rows;
  validate(plan.config, q, k, v, out, lse);
  check_shard("q", q, {s.batch, rows.size(), s.heads, s.head_dim});
  check_shard("k", k, {s.batch, rows.size(), s.kv_heads, s.head_dim});
  if (q.dtype != s.dtype) throw Error(fmt::format("q is {} but the plan is for {}", to_string(q.dtype), to_string(s.dtype)));

  RankExecutor rank(plan, comm.rank(), q, k, v);
  rank.attend_local();
  const RankPlan& mine = plan.per_rank[std::size_t(comm.rank())];
  for (int step = 1; step <= plan.steps; ++step) {
    std::vector<std::vector<std::byte>> sent;
    std::vector<Message> sends, receives;
    std::map<int, std::vector<std::byte>> received;  // by block
    for (const Transfer& t : mine.sends) {
      if (t.step == step) sent.push_back(rank.pack(plan.blocks[std::size_t(t.block)]));
    }
    std::size_t next = 0;
    for (const Transfer& t : mine.sends) {
      if (t.step == step) sends.push_back({t.peer, sent[next++]});
    }
    for (const Transfer& t : mine.receives) {
      if (t.step != step) continue;
      auto& buffer = received[t.block] = std::vector<std::byte>(std::size_t(plan.blocks[std::size_t(t.block)].bytes));
      receives.push_back({t.peer, buffer});
    }
    comm.exchange(step, sends, receives);
    for (const Compute& c : mine.computes) {
      if (c.step == step) rank.attend_block(plan.blocks[std::size_t(c.block)], received.at(c.block));
    }
  }
  rank.write(out, lse);
}

}  // namespace dilatron::ring
