#include "runtime/ring/host_executor.hpp"

#include <dilatron/error.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <span>
#include <vector>

#include "common/dtype.hpp"
#include "common/parallel.hpp"
#include "runtime/host_attention.hpp"
#include "runtime/problem.hpp"
#include "runtime/ring/partition.hpp"
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
    for (auto* per_head : {&dout_, &delta_, &lse_, &dq_}) per_head->resize(std::size_t(s_.batch * s_.heads));
    for (auto* per_kv_head : {&dk_, &dv_}) per_kv_head->resize(std::size_t(s_.batch * s_.kv_heads));
  }

  // Step 0: every segment part this rank holds attends to itself, in every branch.
  void attend_local() {
    for_each_local_segment([&](std::int64_t b, std::int64_t h, const std::vector<std::int64_t>& rows) {
      attend(b, h, rows, keys_, values_, rows);
    });
  }

  // Step 0 of the backward pass: the gradients of the local attention.
  void gradients_local() {
    for_each_local_segment([&](std::int64_t b, std::int64_t h, const std::vector<std::int64_t>& rows) {
      slots_of(rows, key_slots_);
      const std::size_t kv = std::size_t(b * s_.kv_heads + ix::kv_head(h, s_.heads, s_.kv_heads));
      gradients(b, h, rows, keys_, values_, rows, key_slots_, dk_[kv].data(), dv_[kv].data());
    });
  }

  // Calls f(b, h, rows) for every (segment part this rank holds, head, batch element), with keys_ and
  // values_ holding those rows of the head's kv head.
  template <class F>
  void for_each_local_segment(F&& f) {
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
            f(b, h, rows);
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
  void attend_block(const Block& block, std::span<const std::byte> bytes) {
    for_each_block_part(block, bytes, [&](const Block::Part& part, std::int64_t b, const std::vector<std::int64_t>& queries,
                                          const std::vector<std::int64_t>& key_rows) {
      for (std::int64_t h = 0; h < s_.heads; ++h) {
        if (reads(h, block, part)) attend(b, h, queries, keys_, values_, key_rows);
      }
    });
  }

  // The gradients of attend_block: dQ of this rank's queries here, and the block's dK and dV, which go
  // back to its owner in the block's layout (each row: dK, then dV), as gradient_dtype() values.
  std::vector<std::byte> gradients_block(const Block& block, std::span<const std::byte> bytes) {
    std::vector<std::byte> partial(gradient_bytes(block));
    std::int64_t element = 0;
    for_each_block_part(block, bytes, [&](const Block::Part& part, std::int64_t b, const std::vector<std::int64_t>& queries,
                                          const std::vector<std::int64_t>& key_rows) {
      const std::size_t count = key_rows.size() * std::size_t(s_.head_dim);
      block_dk_.assign(count, 0.0);
      block_dv_.assign(count, 0.0);
      key_slots_.resize(key_rows.size());
      for (std::size_t j = 0; j < key_rows.size(); ++j) key_slots_[j] = std::int64_t(j);
      for (std::int64_t h = 0; h < s_.heads; ++h) {
        if (reads(h, block, part)) {
          gradients(b, h, queries, keys_, values_, key_rows, key_slots_, block_dk_.data(), block_dv_.data());
        }
      }
      for (std::int64_t j = 0; j < part.rows; ++j, element += 2 * s_.head_dim) {
        for (std::int64_t d = 0; d < s_.head_dim; ++d) {
          store_element(partial.data(), gradient_dtype(), element + d, block_dk_[std::size_t(j * s_.head_dim + d)]);
          store_element(partial.data(), gradient_dtype(), element + s_.head_dim + d,
                        block_dv_[std::size_t(j * s_.head_dim + d)]);
        }
      }
    });
    return partial;
  }

  // The owner's side: a member's dK and dV of one of this rank's blocks, added to its own.
  void add_block_gradients(const Block& block, std::span<const std::byte> partial) {
    walk(block, [&](std::int64_t b, std::int64_t kvh, std::int64_t row, std::size_t element) {
      const std::size_t kv = std::size_t(b * s_.kv_heads + kvh), at = std::size_t((row - rows_.begin) * s_.head_dim);
      for (std::int64_t d = 0; d < s_.head_dim; ++d) {
        dk_[kv][at + std::size_t(d)] += load_element(partial.data(), gradient_dtype(), std::int64_t(element) + d);
        dv_[kv][at + std::size_t(d)] +=
            load_element(partial.data(), gradient_dtype(), std::int64_t(element) + s_.head_dim + d);
      }
    });
  }

  std::size_t gradient_bytes(const Block& block) const {
    return std::size_t(block.bytes) / dtype_size(s_.dtype) * dtype_size(gradient_dtype());
  }

  // What travelling dK and dV are carried in: float32 for 16-bit and float32 inputs (as on the GPU),
  // float64 for float64 inputs, so that a float64 ring is exact to rounding like one rank.
  DType gradient_dtype() const { return s_.dtype == DType::f64 ? DType::f64 : DType::f32; }

  // After the forward pass: dO (scaled as O was), delta = dO . O and the final LSE of every local row,
  // and zeroed gradients.
  void begin_backward(const TensorView& dout) {
    const double out_scale = output_scale(plan_.config);
    const std::size_t rows = std::size_t(rows_.size()), dim = std::size_t(s_.head_dim);
    for (std::int64_t b = 0; b < s_.batch; ++b) {
      for (std::int64_t h = 0; h < s_.heads; ++h) {
        const std::size_t bh = std::size_t(b * s_.heads + h);
        const Accumulator& acc = acc_[bh];
        dout_[bh].assign(rows * dim, 0.0);
        delta_[bh].assign(rows, 0.0);
        lse_[bh].assign(rows, 0.0);
        dq_[bh].assign(rows * dim, 0.0);
        for (std::size_t n = 0; n < rows; ++n) {
          for (std::size_t d = 0; d < dim; ++d) {
            const double g = out_scale * load_element(dout.data, dout.dtype, dout.offset(b, std::int64_t(n), h, std::int64_t(d)));
            dout_[bh][n * dim + d] = g;
            delta_[bh][n] += g * acc.out(std::int64_t(n))[d];
          }
          lse_[bh][n] = acc.lse(std::int64_t(n));
        }
      }
    }
    for (std::size_t kv = 0; kv < dk_.size(); ++kv) {
      dk_[kv].assign(rows * dim, 0.0);
      dv_[kv].assign(rows * dim, 0.0);
    }
  }

  void write_gradients(const TensorView& dq, const TensorView& dk, const TensorView& dv) const {
    const auto store = [&](const TensorView& t, std::int64_t b, std::int64_t head, const std::vector<double>& grad) {
      for (std::int64_t n = 0; n < rows_.size(); ++n) {
        for (std::int64_t d = 0; d < s_.head_dim; ++d) {
          store_element(t.data, t.dtype, t.offset(b, n, head, d), grad[std::size_t(n * s_.head_dim + d)]);
        }
      }
    };
    for (std::int64_t b = 0; b < s_.batch; ++b) {
      for (std::int64_t h = 0; h < s_.heads; ++h) store(dq, b, h, dq_[std::size_t(b * s_.heads + h)]);
      for (std::int64_t kvh = 0; kvh < s_.kv_heads; ++kvh) {
        store(dk, b, kvh, dk_[std::size_t(b * s_.kv_heads + kvh)]);
        store(dv, b, kvh, dv_[std::size_t(b * s_.kv_heads + kvh)]);
      }
    }
  }

  void write(const TensorView& out, const TensorView* lse) const {
    const double out_scale = output_scale(plan_.config);
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

  // Whether query head h reads the part: its kv head, and its offset in the block's branch.
  bool reads(std::int64_t h, const Block& block, const Block::Part& part) const {
    return ix::kv_head(h, s_.heads, s_.kv_heads) == part.kv_head && offset(h, std::size_t(block.branch)) == part.offset;
  }

  // For every part of the block and batch element, in layout order: decodes the part's rows into keys_
  // and values_, then calls f(part, b, this rank's query rows of the segment, the part's key rows).
  template <class F>
  void for_each_block_part(const Block& block, std::span<const std::byte> bytes, F&& f) {
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
        f(part, b, queries, key_rows);
      }
    }
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
    slots_of(query_rows, slots_);
    acc_[std::size_t(b * s_.heads + h)].attend(queries_, query_rows, slots_, keys, values, key_rows, scale_,
                                               plan_.config.causal);
  }

  void slots_of(const std::vector<std::int64_t>& rows, std::vector<std::int64_t>& slots) const {
    slots.resize(rows.size());
    for (std::size_t i = 0; i < rows.size(); ++i) slots[i] = rows[i] - rows_.begin;
  }

  // attend()'s gradients: into dQ of (b, h) and the key slots of dk, dv.
  void gradients(std::int64_t b, std::int64_t h, const std::vector<std::int64_t>& query_rows, const std::vector<double>& keys,
                 const std::vector<double>& values, const std::vector<std::int64_t>& key_rows,
                 const std::vector<std::int64_t>& key_slots, double* dk, double* dv) {
    if (query_rows.empty() || key_rows.empty()) return;
    gather(q_, b, h, query_rows, queries_);
    slots_of(query_rows, slots_);
    const std::size_t bh = std::size_t(b * s_.heads + h);
    attention_gradients({queries_, query_rows, slots_, dout_[bh].data(), delta_[bh].data(), lse_[bh].data(), dq_[bh].data()},
                        {keys, values, key_rows, key_slots, dk, dv}, s_.head_dim, scale_, plan_.config.causal);
  }

  const RingPlan& plan_;
  const Shape& s_;
  RowRange rows_;
  const TensorView &q_, &k_, &v_;
  double scale_;
  std::vector<Accumulator> acc_;  // per (batch, head), one slot per local row
  std::vector<double> queries_, keys_, values_;
  std::vector<std::int64_t> slots_, key_slots_;
  // The backward pass: per (batch, head) dO, delta, LSE and dQ of the local rows; per (batch, kv head)
  // dK and dV; one block's dK and dV on their way back.
  std::vector<std::vector<double>> dout_, delta_, lse_, dq_, dk_, dv_;
  std::vector<double> block_dk_, block_dv_;
};

void check_shard(const char* name, const TensorView& t, const Shape4& want) {
  if (t.shape != want) {
    throw Error(fmt::format("{} shard is [{},{},{},{}] but this rank's part of the plan is [{},{},{},{}]", name,
                            t.shape[0], t.shape[1], t.shape[2], t.shape[3], want[0], want[1], want[2], want[3]));
  }
}

}  // namespace

namespace {

// Checks this rank's shards against the plan, before any exchange.
void check_shards(const RingPlan& plan, Communicator& comm, const TensorView& q, const TensorView& k) {
  if (comm.size() != plan.ranks) {
    throw Error(fmt::format("the communicator has {} ranks but the plan {}", comm.size(), plan.ranks));
  }
  const Shape& s = plan.shape;
  const RowRange rows = plan.per_rank.at(std::size_t(comm.rank())).rows;
  check_shard("q", q, {s.batch, rows.size(), s.heads, s.head_dim});
  check_shard("k", k, {s.batch, rows.size(), s.kv_heads, s.head_dim});
  if (q.dtype != s.dtype) throw Error(fmt::format("q is {} but the plan is for {}", to_string(q.dtype), to_string(s.dtype)));
}

// The forward pass's steps: local attention, then every exchange and the attention to what arrived.
// With `keep`, the blocks received stay there by block index (the backward attends them again);
// without, each step's are dropped after it.
void forward_steps(const RingPlan& plan, Communicator& comm, RankExecutor& rank,
                   std::map<int, std::vector<std::byte>>* keep = nullptr) {
  rank.attend_local();
  const RankPlan& mine = plan.per_rank[std::size_t(comm.rank())];
  for (int step = 1; step <= plan.steps; ++step) {
    std::map<int, std::vector<std::byte>> received;
    std::vector<std::vector<std::byte>> sent;
    std::vector<Message> sends, receives;
    for (const Transfer& t : in_step(mine.sends, step)) sent.push_back(rank.pack(plan.blocks[std::size_t(t.block)]));
    std::size_t next = 0;
    for (const Transfer& t : in_step(mine.sends, step)) sends.push_back({t.peer, sent[next++]});
    for (const Transfer& t : in_step(mine.receives, step)) {
      auto& buffer = received[t.block] = std::vector<std::byte>(std::size_t(plan.blocks[std::size_t(t.block)].bytes));
      receives.push_back({t.peer, buffer});
    }
    comm.exchange(step, sends, receives);
    for (const Compute& c : in_step(mine.computes, step)) {
      rank.attend_block(plan.blocks[std::size_t(c.block)], received.at(c.block));
    }
    if (keep) keep->merge(received);
  }
}

// Every rank of a plan in this process, stepped together: step t of all ranks runs before step t + 1 of
// any, so the ranks need no threads of their own and no transport, and a pool of `threads` serves any
// number of them. What a block's owner sends in a step is packed once and read by its receiver; nothing
// outlives its step.
class Lockstep {
 public:
  Lockstep(const RingPlan& plan, const WholeTensors& t, unsigned threads, const RingProgress& progress)
      : plan_(plan), threads_(threads), progress_(progress), bytes_(plan.blocks.size()) {
    for (int p = 0; p < plan.ranks; ++p) {
      const RowRange rows = plan.per_rank[std::size_t(p)].rows;
      shards_.push_back({rows_of(t.q, rows, 1), rows_of(t.k, rows, 1), rows_of(t.v, rows, 1)});
    }
    for (int p = 0; p < plan.ranks; ++p) {
      const Shards& s = shards_[std::size_t(p)];
      ranks_.push_back(std::make_unique<RankExecutor>(plan, p, s.q, s.k, s.v));
    }
  }

  void forward(int passes) {
    each_rank([&](int, RankExecutor& rank) { rank.attend_local(); });
    report(1, passes);
    for (int step = 1; step <= plan_.steps; ++step) {
      pack(step);
      each_rank([&](int p, RankExecutor& rank) {
        for (const Compute& c : in_step(plan_.per_rank[std::size_t(p)].computes, step)) {
          rank.attend_block(plan_.blocks[std::size_t(c.block)], bytes_[std::size_t(c.block)]);
        }
      });
      release(step);
      report(step + 1, passes);
    }
  }

  void write(const TensorView& out, const TensorView* lse) {
    each_rank([&](int p, RankExecutor& rank) {
      const RowRange rows = plan_.per_rank[std::size_t(p)].rows;
      const TensorView lse_shard = lse ? rows_of(*lse, rows, 2) : TensorView{};
      rank.write(rows_of(out, rows, 1), lse ? &lse_shard : nullptr);
    });
  }

  // After forward(2): the blocks of each step packed again (the owners' K and V have not changed), their
  // gradients at the receivers, then added at the owners.
  void backward(const WholeGradients& g) {
    each_rank([&](int p, RankExecutor& rank) {
      rank.begin_backward(rows_of(g.dout, plan_.per_rank[std::size_t(p)].rows, 1));
      rank.gradients_local();
    });
    report(plan_.steps + 2, 2);
    for (int step = 1; step <= plan_.steps; ++step) {
      pack(step);
      each_rank([&](int p, RankExecutor& rank) {
        for (const Transfer& from : in_step(plan_.per_rank[std::size_t(p)].receives, step)) {
          const Block& block = plan_.blocks[std::size_t(from.block)];
          bytes_[std::size_t(from.block)] = rank.gradients_block(block, bytes_[std::size_t(from.block)]);
        }
      });
      each_rank([&](int p, RankExecutor& rank) {
        for (const Transfer& to : in_step(plan_.per_rank[std::size_t(p)].sends, step)) {
          rank.add_block_gradients(plan_.blocks[std::size_t(to.block)], bytes_[std::size_t(to.block)]);
        }
      });
      release(step);
      report(plan_.steps + 2 + step, 2);
    }
    each_rank([&](int p, RankExecutor& rank) {
      const RowRange rows = plan_.per_rank[std::size_t(p)].rows;
      rank.write_gradients(rows_of(g.dq, rows, 1), rows_of(g.dk, rows, 1), rows_of(g.dv, rows, 1));
    });
  }

 private:
  struct Shards {
    TensorView q, k, v;
  };

  template <class F>
  void each_rank(F&& f) {
    parallel_for(plan_.ranks, threads_, [&] { return [&](std::int64_t p) { f(int(p), *ranks_[std::size_t(p)]); }; });
  }

  // The blocks sent in `step`, each packed by its owner.
  void pack(int step) {
    each_rank([&](int p, RankExecutor& rank) {
      for (const Transfer& t : in_step(plan_.per_rank[std::size_t(p)].sends, step)) {
        bytes_[std::size_t(t.block)] = rank.pack(plan_.blocks[std::size_t(t.block)]);
      }
    });
  }

  void release(int step) {
    for (const RankPlan& rp : plan_.per_rank) {
      for (const Transfer& t : in_step(rp.sends, step)) std::vector<std::byte>().swap(bytes_[std::size_t(t.block)]);
    }
  }

  void report(int done, int passes) {
    if (progress_) progress_(done, std::int64_t(passes) * (plan_.steps + 1));
  }

  const RingPlan& plan_;
  unsigned threads_;
  const RingProgress& progress_;
  std::vector<Shards> shards_;
  std::vector<std::unique_ptr<RankExecutor>> ranks_;
  std::vector<std::vector<std::byte>> bytes_;  // by block: packed K/V, then (backward) its dK/dV
};

}  // namespace

void host_ring_forward(const RingPlan& plan, Communicator& comm, const TensorView& q, const TensorView& k,
                       const TensorView& v, const TensorView& out, const TensorView* lse) {
  validate(plan.config, q, k, v, out, lse);
  check_shards(plan, comm, q, k);
  RankExecutor rank(plan, comm.rank(), q, k, v);
  forward_steps(plan, comm, rank);
  rank.write(out, lse);
}

void host_ring_backward(const RingPlan& plan, Communicator& comm, const TensorView& q, const TensorView& k,
                        const TensorView& v, const TensorView& dout, const TensorView& dq, const TensorView& dk,
                        const TensorView& dv) {
  validate_backward(plan.config, q, k, v, dout, dq, dk, dv);
  check_shards(plan, comm, q, k);
  RankExecutor rank(plan, comm.rank(), q, k, v);
  std::map<int, std::vector<std::byte>> received;
  forward_steps(plan, comm, rank, &received);
  rank.begin_backward(dout);
  rank.gradients_local();
  // Each step's blocks are attended again against the final statistics; their dK and dV go back to
  // their owners in an exchange of their own, tagged after the forward steps.
  const RankPlan& mine = plan.per_rank[std::size_t(comm.rank())];
  for (int step = 1; step <= plan.steps; ++step) {
    std::vector<std::vector<std::byte>> partials, returned;
    std::vector<Message> sends, receives;
    for (const Transfer& from : in_step(mine.receives, step)) {  // a block received is a block computed
      partials.push_back(rank.gradients_block(plan.blocks[std::size_t(from.block)], received.at(from.block)));
    }
    std::size_t next = 0;
    for (const Transfer& from : in_step(mine.receives, step)) sends.push_back({from.peer, partials[next++]});
    const std::span<const Transfer> lent = in_step(mine.sends, step);
    for (const Transfer& to : lent) returned.emplace_back(rank.gradient_bytes(plan.blocks[std::size_t(to.block)]));
    for (std::size_t i = 0; i < lent.size(); ++i) receives.push_back({lent[i].peer, returned[i]});
    comm.exchange(plan.steps + step, sends, receives);
    for (std::size_t i = 0; i < lent.size(); ++i) rank.add_block_gradients(plan.blocks[std::size_t(lent[i].block)], returned[i]);
  }
  rank.write_gradients(dq, dk, dv);
}

void lockstep_ring_forward(const RingPlan& plan, const WholeTensors& t, const TensorView& out, const TensorView* lse,
                           unsigned threads, const RingProgress& progress) {
  Lockstep ring(plan, t, threads, progress);
  ring.forward(1);
  ring.write(out, lse);
}

void lockstep_ring_backward(const RingPlan& plan, const WholeTensors& t, const WholeGradients& g, unsigned threads,
                            const RingProgress& progress) {
  Lockstep ring(plan, t, threads, progress);
  ring.forward(2);
  ring.backward(g);
}

}  // namespace dilatron::ring
