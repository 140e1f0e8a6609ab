#include "runtime/ring/device_executor.hpp"

#include <dilatron/error.hpp>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <vector>

#include "runtime/device_buffer.hpp"
#include "runtime/driver.hpp"
#include "runtime/problem.hpp"
#include "runtime/ring/device_rank.hpp"
#include "runtime/ring/device_sync.hpp"

namespace dilatron::ring {
namespace {

void check_shard(const char* name, const TensorView& t, const Shape4& want) {
  if (t.shape != want) {
    throw Error(fmt::format("{} shard is [{},{},{},{}] but this rank's part of the plan is [{},{},{},{}]", name,
                            t.shape[0], t.shape[1], t.shape[2], t.shape[3], want[0], want[1], want[2], want[3]));
  }
  if (t.strides[3] != 1) throw Error(fmt::format("{} must have a contiguous last dimension on the GPU", name));
}

// The shards' shapes against the plan (the GPU checks of problem.hpp follow).
void check_shards(const RingPlan& plan, int rank, const TensorView& q, const TensorView& k, const TensorView& v) {
  const Shape& s = plan.shape;
  const std::int64_t rows = plan.per_rank.at(std::size_t(rank)).rows.size();
  check_shard("q", q, {s.batch, rows, s.heads, s.head_dim});
  check_shard("k", k, {s.batch, rows, s.kv_heads, s.head_dim});
  check_shard("v", v, {s.batch, rows, s.kv_heads, s.head_dim});
  if (q.dtype != s.dtype) throw Error(fmt::format("q is {} but the plan is for {}", to_string(q.dtype), to_string(s.dtype)));
}

void check_communicator(const RingPlan& plan, const Communicator& comm) {
  if (comm.size() != plan.ranks) {
    throw Error(fmt::format("the communicator has {} ranks but the plan {}", comm.size(), plan.ranks));
  }
}

// One step's messages, carved out of the step's arena: packed sends, then receive buffers.
struct StepMessages {
  std::vector<Message> sends, receives;
  std::vector<std::pair<int, std::byte*>> received;  // (block, buffer)
};

// Bytes a step sends and receives.
std::int64_t step_bytes(const RingPlan& plan, const RankPlan& mine, int step) {
  std::int64_t bytes = 0;
  for (const auto* list : {&mine.sends, &mine.receives}) {
    for (const Transfer& t : *list) bytes += t.step == step ? plan.blocks[std::size_t(t.block)].bytes : 0;
  }
  return bytes;
}

// The most any one step sends and receives.
std::int64_t max_step_bytes(const RingPlan& plan, const RankPlan& mine) {
  std::int64_t bytes = 0;
  for (int step = 1; step <= plan.steps; ++step) bytes = std::max(bytes, step_bytes(plan, mine, step));
  return bytes;
}

// Queues the packing of step `step`'s sends on the rank's stream and lays out its receive buffers.
StepMessages prepare(const RingPlan& plan, const RankPlan& mine, int step, DeviceRank& rank, std::byte* arena) {
  StepMessages m;
  for (const Transfer& t : mine.sends) {
    if (t.step != step) continue;
    const Block& block = plan.blocks[std::size_t(t.block)];
    rank.pack(block, arena);
    m.sends.push_back({t.peer, {arena, std::size_t(block.bytes)}});
    arena += block.bytes;
  }
  for (const Transfer& t : mine.receives) {
    if (t.step != step) continue;
    const std::int64_t bytes = plan.blocks[std::size_t(t.block)].bytes;
    m.receives.push_back({t.peer, {arena, std::size_t(bytes)}});
    m.received.emplace_back(t.block, arena);
    arena += bytes;
  }
  return m;
}

// Where step `step` received `block`.
const std::byte* received(const StepMessages& m, int step, int block) {
  const auto it = std::find_if(m.received.begin(), m.received.end(), [&](const auto& r) { return r.first == block; });
  if (it == m.received.end()) throw Error(fmt::format("step {}: block {} is computed but was not received", step, block));
  return it->second;
}

void attend_received(const RingPlan& plan, const RankPlan& mine, int step, const StepMessages& m, DeviceRank& rank) {
  for (const Compute& c : in_step(mine.computes, step)) {
    rank.attend_block(plan.blocks[std::size_t(c.block)], received(m, step, c.block));
  }
}

// Steps 1..steps, each step's transfer queued before the kernels of the step before it, so that a
// stream-ordered transport (NCCL) moves step s + 1 while step s's kernels run, and a blocking one
// completes it first. enqueue orders a step after everything on the stream (its packing, and the
// kernels of step s - 1 that read the memory it reuses); make_wait orders the stream's next kernels
// after the steps queued. Step s's messages are laid out at arena(s); what each step received is
// returned, for the backward to attend again. Without `attend` the blocks only travel (a backward given
// the forward's O and LSE).
template <class Arena>
std::vector<StepMessages> ring_steps(const RingPlan& plan, const RankPlan& mine, Communicator& comm, DeviceRank& rank,
                                     CUstream stream, Arena arena, bool attend = true) {
  std::vector<StepMessages> steps;
  const auto queue = [&](int step) {
    steps.push_back(prepare(plan, mine, step, rank, arena(step)));
    comm.enqueue(step, steps.back().sends, steps.back().receives, stream);
  };
  if (plan.steps >= 1) queue(1);
  if (attend) rank.attend_local();
  for (int step = 1; step <= plan.steps; ++step) {
    comm.make_wait(stream);
    if (step < plan.steps) queue(step + 1);
    if (attend) attend_received(plan, mine, step, steps[std::size_t(step) - 1], rank);
  }
  comm.wait();  // every step completed, or an error naming the one that did not
  return steps;
}

}  // namespace

void validate_forward_output(const Config& config, const TensorView& q, const TensorView& k, const TensorView& v,
                             const ForwardOutput& forward) {
  const auto& [out, lse] = forward;
  const Problem p = validate(config, q, k, v, out, &lse);
  if (out.dtype != q.dtype) {
    throw Error(fmt::format("out is {}: the forward's output is in q's dtype ({})", to_string(out.dtype), to_string(q.dtype)));
  }
  check_layout("out", out);
  // Copied row by row ([B, H] rows of N floats) into the backward's own layout.
  const Shape4& st = lse.strides;
  if (st[2] != 1 || st[1] < p.seq_len || st[0] < p.heads * st[1]) {
    throw Error(fmt::format("lse strides [{}]: the ring's backward reads rows of {} floats with innermost stride 1, "
                            "rows apart (e.g. this rank's slice of a whole [B, H, N])",
                            fmt::join(st, ", "), p.seq_len));
  }
}

void device_ring_forward(const RingPlan& plan, Communicator& comm, const TensorView& q, const TensorView& k,
                         const TensorView& v, const TensorView& out, const TensorView* lse, CUstream stream) {
  check_communicator(plan, comm);
  // The LSE shard is a strided slice of [B, H, N]: finish_output writes it element by element.
  validate_for_gpu(validate(plan.config, q, k, v, out, lse), q, k, v, out, nullptr);
  check_shards(plan, comm.rank(), q, k, v);
  const RankPlan& mine = plan.per_rank[std::size_t(comm.rank())];

  DeviceRank rank(plan, comm.rank(), q, k, v, stream);
  // Double buffering: step s packs into and receives into arena s % 2, each as large as the most one
  // step moves, so step s + 1's transfer never writes what step s's kernels still read.
  const std::int64_t arena_bytes = max_step_bytes(plan, mine);
  const DeviceBuffer arenas[2] = {DeviceBuffer(std::size_t(arena_bytes)), DeviceBuffer(std::size_t(arena_bytes))};
  auto arena = [&](int step) { return static_cast<std::byte*>(arenas[step % 2].get()); };
  const Drain drain{stream};  // declared after the arenas: destroyed first
  rank.clear();
  ring_steps(plan, mine, comm, rank, stream, arena);
  rank.finish(out, lse);
  DILATRON_CU(cuStreamSynchronize(stream));
}

void device_ring_backward(const RingPlan& plan, Communicator& comm, const TensorView& q, const TensorView& k,
                          const TensorView& v, const TensorView& dout, const TensorView& dq, const TensorView& dk,
                          const TensorView& dv, CUstream stream, const ForwardOutput* forward) {
  check_communicator(plan, comm);
  validate_gradients_for_gpu(validate_backward(plan.config, q, k, v, dout, dq, dk, dv), q, k, v, dout, dq, dk, dv);
  if (forward) validate_forward_output(plan.config, q, k, v, *forward);
  check_shards(plan, comm.rank(), q, k, v);
  const RankPlan& mine = plan.per_rank[std::size_t(comm.rank())];

  DeviceRank rank(plan, comm.rank(), q, k, v, stream, !forward);
  // Every step's messages keep their own memory: the backward attends to the blocks received again.
  std::vector<std::int64_t> step_offset(std::size_t(plan.steps) + 2, 0);
  for (int step = 1; step <= plan.steps; ++step) {
    step_offset[std::size_t(step) + 1] = step_offset[std::size_t(step)] + step_bytes(plan, mine, step);
  }
  // The return leg of a step moves the step's blocks back as fp32 partials: the partials sent back, then
  // those coming back, in block order; two steps' worth, used in turn.
  const DeviceBuffer kept{std::size_t(step_offset.back())};
  const std::size_t return_bytes = std::size_t(max_step_bytes(plan, mine)) / dtype_size(plan.shape.dtype) * sizeof(float);
  const DeviceBuffer returns{2 * return_bytes};  // two halves in turn
  const Drain drain{stream};
  if (!forward) rank.clear();
  const std::vector<StepMessages> steps = ring_steps(
      plan, mine, comm, rank, stream,
      [&](int step) { return static_cast<std::byte*>(kept.get()) + step_offset[std::size_t(step)]; }, !forward);

  rank.begin_backward(dout, forward ? &forward->out : nullptr, forward ? &forward->lse : nullptr);
  rank.gradients_local();
  // The return leg: step t's partials go back tagged steps + t from returns[t % 2] while the next step's
  // partials are computed into the other half; the owner adds step t's arrivals after make_wait, queued
  // behind step t + 1's partials. Reusing a half two steps later is ordered by the stream: its add came
  // after a make_wait covering that step's transfer.
  struct Returned {
    int step = 0;
    std::vector<Message> receives;
  } pending;
  const auto add_returned = [&](const Returned& r) {
    const std::span<const Transfer> lent = in_step(mine.sends, r.step);
    for (std::size_t i = 0; i < lent.size(); ++i) {
      rank.add_returned(plan.blocks[std::size_t(lent[i].block)], r.receives[i].data.data());
    }
  };
  for (int step = 1; step <= plan.steps; ++step) {
    std::byte* at = static_cast<std::byte*>(returns.get()) + (step % 2) * return_bytes;
    std::vector<Message> sends, receives;
    for (const Transfer& from : in_step(mine.receives, step)) {  // a block received is a block computed
      const Block& block = plan.blocks[std::size_t(from.block)];
      rank.gradients_block(block, received(steps[std::size_t(step) - 1], step, from.block), at);
      sends.push_back({from.peer, {at, std::size_t(rank.gradient_bytes(block))}});
      at += rank.gradient_bytes(block);
    }
    for (const Transfer& to : in_step(mine.sends, step)) {
      receives.push_back({to.peer, {at, std::size_t(rank.gradient_bytes(plan.blocks[std::size_t(to.block)]))}});
      at += receives.back().data.size();
    }
    comm.make_wait(stream);  // the step before has arrived
    comm.enqueue(plan.steps + step, sends, receives, stream);
    if (pending.step > 0) add_returned(pending);
    pending = {step, std::move(receives)};
  }
  comm.make_wait(stream);
  if (pending.step > 0) add_returned(pending);
  comm.wait();
  rank.finish_gradients(dq, dk, dv);
  DILATRON_CU(cuStreamSynchronize(stream));
}

}  // namespace dilatron::ring
