#include "runtime/ring/device_executor.hpp"

#include <dilatron/error.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

#include "autotune/required_kernels.hpp"
#include "cache/kernel_cache.hpp"
#include "common/dtype.hpp"
#include "runtime/device_buffer.hpp"
#include "runtime/driver.hpp"
#include "runtime/launch.hpp"
#include "runtime/loaded_kernels.hpp"
#include "runtime/problem.hpp"
#include "runtime/ring/device_launches.hpp"
#include "runtime/ring/nccl_communicator.hpp"
#include "templates/dilatron/args.cuh"
#include "templates/dilatron/index.cuh"

namespace dilatron::ring {
namespace {

using codegen::Op;

// Every ring kernel strides over its work, so grids are capped.
constexpr long long kMaxBlocks = 1 << 20;

struct Kernel {
  CUfunction function;
  unsigned threads;

  void launch(CUstream stream, long long work_items, long long per_block, long long grid_y, long long grid_z,
              void* args) const {
    if (work_items <= 0) return;
    if (grid_y > 65535 || grid_z > 65535) {
      throw Error(fmt::format("ring launch of {} heads x {} batch elements exceeds the grid limit of 65535", grid_y, grid_z));
    }
    const unsigned grid_x = unsigned(std::min(index::ceil_div(work_items, per_block), kMaxBlocks));
    void* params[] = {args};
    DILATRON_CU(cuLaunchKernel(function, grid_x, unsigned(grid_y), unsigned(grid_z), threads, 1, 1, 0, stream, params,
                               nullptr));
  }
};

Kernel load(const codegen::KernelSpec& spec) {
  const auto entry = cache::KernelCache::global().get(spec).entry;
  return {launchable(LoadedKernels::global().kernel(*entry)), unsigned(spec.tiles.warps * 32)};
}

struct RingKernels {
  Kernel pack, attend, finish, clear;
};

RingKernels load_ring_kernels(DType dtype, int head_dim) {
  const auto specs = autotune::ring_kernels(dtype, head_dim, driver::current_arch());  // pack, attend, finish, clear
  return {load(specs[0]), load(specs[1]), load(specs[2]), load(specs[3])};
}

void check_shard(const char* name, const TensorView& t, const Shape4& want) {
  if (t.shape != want) {
    throw Error(fmt::format("{} shard is [{},{},{},{}] but this rank's part of the plan is [{},{},{},{}]", name,
                            t.shape[0], t.shape[1], t.shape[2], t.shape[3], want[0], want[1], want[2], want[3]));
  }
  if (t.strides[3] != 1) throw Error(fmt::format("{} must have a contiguous last dimension on the GPU", name));
}

void check_tensors(const RingPlan& plan, int rank, const TensorView& q, const TensorView& k, const TensorView& v,
                   const TensorView& out, const TensorView* lse) {
  const Shape& s = plan.shape;
  const std::int64_t rows = plan.per_rank.at(std::size_t(rank)).rows.size();
  validate(plan.config, q, k, v, out, lse);
  check_shard("q", q, {s.batch, rows, s.heads, s.head_dim});
  check_shard("k", k, {s.batch, rows, s.kv_heads, s.head_dim});
  check_shard("v", v, {s.batch, rows, s.kv_heads, s.head_dim});
  check_shard("out", out, {s.batch, rows, s.heads, s.head_dim});
  if (q.dtype != s.dtype) throw Error(fmt::format("q is {} but the plan is for {}", to_string(q.dtype), to_string(s.dtype)));
  if (s.dtype != DType::f16 && s.dtype != DType::bf16) {
    throw Error(fmt::format("the GPU ring takes float16 or bfloat16 q/k/v, got {}", to_string(s.dtype)));
  }
  if (out.dtype != q.dtype) throw Error(fmt::format("out is {} but q is {}: they must match on the GPU", to_string(out.dtype), to_string(q.dtype)));
  if (s.head_dim % 8 != 0 || s.head_dim > 512) {
    throw Error(fmt::format("head dim {} is not supported by the GPU ring (a multiple of 8 up to 512)", s.head_dim));
  }
}

// One rank's kernels and its fp32 (O, LSE) accumulator, [B, rows, H, D] and [B, H, rows].
class DeviceRank {
 public:
  DeviceRank(const RingPlan& plan, int rank, const TensorView& q, const TensorView& k, const TensorView& v,
             CUstream stream)
      : plan_(plan),
        s_(plan.shape),
        rank_(rank),
        rows_(plan.per_rank.at(std::size_t(rank)).rows),
        q_(q),
        k_(k),
        v_(v),
        stream_(stream),
        kernels_(load_ring_kernels(s_.dtype, int(s_.head_dim))),
        o_acc_(std::size_t(s_.batch * rows_.size() * s_.heads * s_.head_dim) * sizeof(float)),
        lse_acc_(std::size_t(s_.batch * s_.heads * rows_.size()) * sizeof(float)),
        scale_log2_(float(plan.config.scale.value_or(1.0 / std::sqrt(double(s_.head_dim))) * 1.4426950408889634)) {}

  void clear() {
    const args::Tensor4 acc{o_acc(), {rows_.size() * s_.heads * s_.head_dim, s_.heads * s_.head_dim, s_.head_dim, 1}};
    args::MergeArgs a{acc, acc, lse_acc(), lse_acc(), s_.batch, rows_.size(), s_.heads};
    kernels_.clear.launch(stream_, s_.batch * rows_.size() * s_.heads, kernels_.clear.threads / 32, 1, 1, &a);
  }

  void attend_local() {
    for (const AttendLaunch& l : local_launches(plan_, rank_)) attend(l, tensor4(k_), tensor4(v_));
  }

  // Packs this rank's rows of `block` into `packed` (block.bytes of device memory).
  void pack(const Block& block, void* packed) {
    const std::vector<std::int64_t> elements = part_elements(block, s_);
    const std::int64_t r = plan_.config.dilations[std::size_t(block.branch)];
    for (std::size_t p = 0; p < block.parts.size(); ++p) {
      const Block::Part& part = block.parts[p];
      args::RingPackArgs a{tensor4(k_), tensor4(v_), element(packed, elements[p]), s_.batch, rows_.begin, part.kv_head,
                           part.first_row, part.rows, r};
      kernels_.pack.launch(stream_, s_.batch * part.rows * s_.head_dim, kernels_.pack.threads, 1, 1, &a);
    }
  }

  void attend_block(const Block& block, void* packed) {
    const std::int64_t d = s_.head_dim;
    for (const AttendLaunch& l : block_launches(plan_, rank_, block)) {
      // A part is [B, key_count, (K row, V row)]: key j of batch b at (b * key_count + j) * 2D.
      const args::Tensor4 keys{element(packed, l.packed_element), {l.key_count * 2 * d, 2 * d, 0, 1}};
      args::Tensor4 values = keys;
      values.data = element(packed, l.packed_element + d);
      attend(l, keys, values);
    }
  }

  void finish(const TensorView& out, const TensorView* lse) {
    // head_groups averages over the G branches; longnet's accumulator already is the merged O.
    const float out_scale = plan_.config.mode == Mode::head_groups ? 1.f / float(plan_.config.branches()) : 1.f;
    args::FinishArgs a{tensor4(out), lse ? tensor4(*lse) : args::Tensor4{nullptr, {0, 0, 0, 0}}, o_acc(), lse_acc(),
                           s_.batch, rows_.size(), s_.heads, out_scale};
    kernels_.finish.launch(stream_, s_.batch * rows_.size() * s_.heads, kernels_.finish.threads / 32, 1, 1, &a);
  }

 private:
  void attend(const AttendLaunch& l, const args::Tensor4& keys, const args::Tensor4& values) {
    const long long queries = index::selected_in(l.q_begin, l.q_end, l.w, l.offset, l.r).count;
    args::RingAttendArgs a{tensor4(q_), keys, values, o_acc(), lse_acc(), s_.batch, rows_.size(), s_.heads, s_.kv_heads,
                           rows_.begin, l.w, l.r, l.offset, l.q_begin, l.q_end, l.key_first, l.key_count,
                           l.head_begin, plan_.config.causal ? 1 : 0, scale_log2_};
    kernels_.attend.launch(stream_, queries, kernels_.attend.threads / 32, l.head_end - l.head_begin, s_.batch, &a);
  }

  void* element(void* packed, std::int64_t i) const {
    return static_cast<std::byte*>(packed) + i * std::int64_t(dtype_size(s_.dtype));
  }
  float* o_acc() const { return static_cast<float*>(o_acc_.get()); }
  float* lse_acc() const { return static_cast<float*>(lse_acc_.get()); }

  const RingPlan& plan_;
  const Shape& s_;
  int rank_;
  RowRange rows_;
  const TensorView &q_, &k_, &v_;
  CUstream stream_;
  RingKernels kernels_;
  DeviceBuffer o_acc_, lse_acc_;
  float scale_log2_;
};

// Drains the stream before the buffers it may still read are freed, on every way out. Unchecked: a
// destructor cannot throw, and on the way out through an error that error is the one to report.
struct Drain {
  CUstream stream;
  ~Drain() { driver::api().cuStreamSynchronize(stream); }
};

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

void attend_received(const RingPlan& plan, const RankPlan& mine, int step, const StepMessages& m, DeviceRank& rank) {
  for (const Compute& c : mine.computes) {
    if (c.step != step) continue;
    const auto it = std::find_if(m.received.begin(), m.received.end(), [&](const auto& r) { return r.first == c.block; });
    if (it == m.received.end()) throw Error(fmt::format("step {}: block {} is computed but was not received", step, c.block));
    rank.attend_block(plan.blocks[std::size_t(c.block)], it->second);
  }
}

}  // namespace

void device_ring_forward(const RingPlan& plan, Communicator& comm, const TensorView& q, const TensorView& k,
                         const TensorView& v, const TensorView& out, const TensorView* lse, CUstream stream) {
  if (comm.size() != plan.ranks) {
    throw Error(fmt::format("the communicator has {} ranks but the plan {}", comm.size(), plan.ranks));
  }
  check_tensors(plan, comm.rank(), q, k, v, out, lse);
  const RankPlan& mine = plan.per_rank[std::size_t(comm.rank())];

  DeviceRank rank(plan, comm.rank(), q, k, v, stream);
  // Double buffering: step s packs into and receives into arena s % 2, each as large as the most one
  // step moves, so step s + 1's transfer never writes what step s's kernels still read.
  std::int64_t arena_bytes = 1;
  for (int step = 1; step <= plan.steps; ++step) arena_bytes = std::max(arena_bytes, step_bytes(plan, mine, step));
  const DeviceBuffer arenas[2] = {DeviceBuffer(std::size_t(arena_bytes)), DeviceBuffer(std::size_t(arena_bytes))};
  auto arena = [&](int step) { return static_cast<std::byte*>(arenas[step % 2].get()); };
  const Drain drain{stream};  // declared after the arenas: destroyed first
  rank.clear();

  if (auto* nccl = dynamic_cast<NcclCommunicator*>(&comm)) {
    // Overlapped: step s + 1's transfer runs while the stream attends to step s's blocks. enqueue
    // orders a step after everything on the stream (its packing, and the kernels of step s - 1 that
    // read the arena it reuses); make_wait orders the stream's next kernels after the steps queued.
    StepMessages now = plan.steps >= 1 ? prepare(plan, mine, 1, rank, arena(1)) : StepMessages{};
    if (plan.steps >= 1) nccl->enqueue(1, now.sends, now.receives, stream);
    rank.attend_local();
    for (int step = 1; step <= plan.steps; ++step) {
      nccl->make_wait(stream);
      StepMessages after = step < plan.steps ? prepare(plan, mine, step + 1, rank, arena(step + 1)) : StepMessages{};
      if (step < plan.steps) nccl->enqueue(step + 1, after.sends, after.receives, stream);
      attend_received(plan, mine, step, now, rank);
      now = std::move(after);
    }
    nccl->wait();  // the watchdog: every step completed, or an error naming the one that did not
  } else {
    // Any other transport blocks in exchange(): it must find the sends packed, and the previous step's
    // kernels must be done with the arena being reused.
    rank.attend_local();
    for (int step = 1; step <= plan.steps; ++step) {
      const StepMessages m = prepare(plan, mine, step, rank, arena(step));
      DILATRON_CU(cuStreamSynchronize(stream));
      comm.exchange(step, m.sends, m.receives);
      attend_received(plan, mine, step, m, rank);
    }
  }
  rank.finish(out, lse);
  DILATRON_CU(cuStreamSynchronize(stream));
}

}  // namespace dilatron::ring
