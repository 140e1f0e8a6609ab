#include "emulator/launch.hpp"

#include <dilatron/error.hpp>

#include <fmt/format.h>

#include <boost/context/fiber.hpp>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

#include "emulator/bank_conflicts.hpp"
#include "emulator/numerics.hpp"
#include "emulator/racecheck.hpp"
#include "emulator/warp_ops.hpp"

namespace dilatron::emulator {
namespace {

namespace ctx = boost::context;
using u32 = std::uint32_t;

constexpr std::size_t kStackBytes = 256 * 1024;

// Fiber stacks, reused across the CTAs one host thread runs (fresh ones cost an mmap and page faults).
class StackPool {
 public:
  ctx::stack_context take() {
    if (free_.empty()) free_.push_back(std::make_unique<std::byte[]>(kStackBytes));
    std::byte* base = free_.back().release();
    free_.pop_back();
    ctx::stack_context sc;
    sc.size = kStackBytes;
    sc.sp = base + kStackBytes;
    return sc;
  }
  void give(ctx::stack_context& sc) {
    free_.push_back(std::unique_ptr<std::byte[]>(static_cast<std::byte*>(sc.sp) - kStackBytes));
  }

 private:
  std::vector<std::unique_ptr<std::byte[]>> free_;
};

struct PooledStack {
  StackPool* pool;
  ctx::stack_context allocate() { return pool->take(); }
  void deallocate(ctx::stack_context& sc) noexcept { pool->give(sc); }
};

enum class Wait { ready, barrier, collective, done };
enum class Collective { exchange, ldmatrix, mma };

struct LdmatrixLane {
  u32 address;
  bool trans;
};

struct PendingCopy {
  u32 shared;
  std::array<std::uint8_t, 16> bytes;
};

struct Thread {
  DilatronEmulatorThread ids{};
  ctx::fiber fiber, scheduler;
  Wait wait = Wait::ready;
  int site = 0;
  // A warp collective in progress: what this lane gives and where its result goes.
  Collective kind = Collective::exchange;
  const void* operand = nullptr;
  void* result = nullptr;
  unsigned bytes = 0;
  bool bf16 = false;
  std::vector<PendingCopy> open_group;
  std::deque<std::vector<PendingCopy>> committed;  // oldest first
};

class Cta;
thread_local Cta* current_cta = nullptr;
thread_local Thread* current = nullptr;

class Cta {
 public:
  Cta(const LaunchShape& shape, std::array<unsigned, 3> block, const std::string& label, StackPool& stacks, bool profile)
      : label_(label), shared_(shape.shared_bytes + 16, 0xff), races_(shape.shared_bytes), stacks_(stacks) {
    const unsigned count = shape.block[0] * shape.block[1] * shape.block[2];
    threads_.resize(count);
    for (unsigned i = 0; i < count; ++i) {
      DilatronEmulatorThread& ids = threads_[i].ids;
      ids.thread[0] = i % shape.block[0];
      ids.thread[1] = i / shape.block[0] % shape.block[1];
      ids.thread[2] = i / (shape.block[0] * shape.block[1]);
      std::copy(block.begin(), block.end(), ids.block);
      std::copy(shape.block.begin(), shape.block.end(), ids.block_dim);
      std::copy(shape.grid.begin(), shape.grid.end(), ids.grid_dim);
      ids.shared = shared_.data();
    }
    shared_size_ = shape.shared_bytes;
    warp_syncs_.assign((count + 31) / 32, 0);
    if (profile) warp_requests_.resize((count + 31) / 32);
  }

  // Bank-conflict counts of the CTA's shared-memory requests (empty unless profiling).
  const BankProfile& bank_profile() const { return banks_; }

  void run(KernelEntry entry, const void* args) {
    for (Thread& t : threads_) {
      t.fiber = ctx::fiber(std::allocator_arg, PooledStack{&stacks_}, [this, &t, entry, args](ctx::fiber&& scheduler) {
        t.scheduler = std::move(scheduler);
        try {
          entry(args);
        } catch (const ctx::detail::forced_unwind&) {
          throw;
        } catch (...) {
          if (!error_) error_ = std::current_exception();
        }
        finish(t);
        return std::move(t.scheduler);
      });
    }
    current_cta = this;
    for (;;) {
      bool ran = false;
      for (Thread& t : threads_) {
        while (t.wait == Wait::ready && !error_) {
          current = &t;
          t.fiber = std::move(t.fiber).resume();
          ran = true;
        }
        if (error_) break;
      }
      if (error_) break;
      if (std::all_of(threads_.begin(), threads_.end(), [](const Thread& t) { return t.wait == Wait::done; })) break;
      if (!ran) fail(deadlock());
    }
    current_cta = nullptr;
    current = nullptr;
    if (error_) std::rethrow_exception(error_);
    for (WarpRequests& w : warp_requests_) w.flush(banks_);
  }

  // --- services for the current thread ---
  void barrier(int site) {
    Thread& me = *current;
    me.wait = Wait::barrier;
    me.site = site;
    std::size_t waiting = 0;
    for (const Thread& t : threads_) {
      if (t.wait == Wait::done) fail(fmt::format("{} waits at __syncthreads on line {} but {} has exited", who(me), site, who(t)));
      if (t.wait != Wait::barrier) continue;
      ++waiting;
      if (t.site != site) {
        fail(fmt::format("{} waits at __syncthreads on line {} while {} waits at the one on line {}", who(me), site,
                         who(t), t.site));
      }
    }
    if (waiting == threads_.size()) {
      ++barriers_;
      for (WarpRequests& w : warp_requests_) w.flush(banks_);
      for (Thread& t : threads_) {
        if (t.wait == Wait::barrier) t.wait = Wait::ready;
      }
      return;
    }
    yield(me);
  }

  void collective(Collective kind, int site, const void* operand, void* result, unsigned bytes, bool bf16 = false) {
    Thread& me = *current;
    me.wait = Wait::collective;
    me.kind = kind;
    me.site = site;
    me.operand = operand;
    me.result = result;
    me.bytes = bytes;
    me.bf16 = bf16;
    Thread* const lanes = warp_of(me);
    for (int l = 0; l < 32; ++l) {
      const Thread& t = lanes[l];
      if (t.wait == Wait::done) {
        fail(fmt::format("{} reaches a warp-collective operation on line {} but lane {} of its warp has exited", who(me),
                         site, l));
      }
      if (t.wait != Wait::collective) return yield(me);
      if (t.site != site || t.kind != kind || t.bytes != bytes) {
        fail(fmt::format("{} is in the warp-collective operation on line {} while lane {} of its warp is in the one on "
                         "line {}", who(me), site, l, t.site));
      }
    }
    complete(lanes, kind);
  }

  unsigned shared_address(const void* pointer) {
    const auto* p = static_cast<const std::uint8_t*>(pointer);
    if (p < shared_.data() || p > shared_.data() + shared_size_) {
      fail(fmt::format("{} takes the shared address of a pointer outside the CTA's {} bytes of shared memory", who(*current),
                       shared_size_));
    }
    return u32(p - shared_.data());
  }

  std::uint8_t* shared_at(u32 address, unsigned size, const char* what) {
    if (std::size_t(address) + size > shared_size_) {
      fail(fmt::format("{} {} {} bytes at shared address {}, past the CTA's {} bytes of shared memory", who(*current), what,
                       size, address, shared_size_));
    }
    return shared_.data() + address;
  }

  void store_shared(u32 address, const void* bytes, unsigned size) {
    std::uint8_t* to = shared_at(address, size, "stores");
    check(races_.write(address, size, now(*current)), *current, "stores to (st.shared)");
    request(SharedOp::st_shared, address, size);
    if (bytes) std::memcpy(to, bytes, size);
    else std::memset(to, 0, size);
  }

  void cp_async_16(u32 shared, const void* global, bool valid) {
    std::uint8_t* to = shared_at(shared, 16, "copies (cp.async)");
    check(races_.write(shared, 16, now(*current)), *current, "copies (cp.async) to");
    request(SharedOp::cp_async, shared, 16);
    PendingCopy copy{shared, {}};
    if (valid) std::memcpy(copy.bytes.data(), global, 16);
    std::memset(to, 0xff, 16);  // until the wait_group that covers it
    current->open_group.push_back(copy);
  }
  void cp_async_commit() {
    current->committed.push_back(std::move(current->open_group));
    current->open_group.clear();
  }
  void cp_async_wait(int pending) {
    while (current->committed.size() > std::size_t(std::max(pending, 0))) {
      for (const PendingCopy& c : current->committed.front()) {
        check(races_.write(c.shared, 16, now(*current)), *current, "completes a cp.async (wait_group) to");
        std::memcpy(shared_.data() + c.shared, c.bytes.data(), 16);
      }
      current->committed.pop_front();
    }
  }

  const std::string& label() const { return label_; }

  [[noreturn]] void fail(const std::string& what) { throw Error(fmt::format("emulator: {}: {}", label_, what)); }

 private:
  // CUDA allows __syncthreads only where the whole CTA reaches it: a thread exiting while others wait at
  // one (or before they reach it) is a divergent barrier, which the GPU may hang on or pass silently.
  void finish(Thread& t) {
    t.wait = Wait::done;
    const auto waiting = std::find_if(threads_.begin(), threads_.end(), [](const Thread& x) { return x.wait == Wait::barrier; });
    if (waiting != threads_.end() && !error_) {
      error_ = std::make_exception_ptr(Error(fmt::format("emulator: {}: {} exits while {} waits at __syncthreads on line {}",
                                                         label_, who(t), who(*waiting), waiting->site)));
    }
  }

  void yield(Thread& me) { me.scheduler = std::move(me.scheduler).resume(); }

  void request(SharedOp op, u32 address, unsigned bytes) {
    if (warp_requests_.empty()) return;
    const std::size_t index = std::size_t(current - threads_.data());
    warp_requests_[index / 32].add(op, int(index % 32), address, bytes);
  }

  AccessTime now(const Thread& t) const {
    const int index = int(&t - threads_.data());
    return {index, barriers_, warp_syncs_[std::size_t(index) / 32]};
  }

  // racecheck: `me` `does` the word of `race`, which another thread touched with nothing ordering the two.
  void check(const std::optional<Race>& race, const Thread& me, const char* does) {
    if (!race) return;
    fail(fmt::format("racecheck: {} {} shared address {}, which {} {} since the last __syncthreads (no barrier orders "
                     "the two)", who(me), does, race->address, who(threads_[std::size_t(race->other)]),
                     race->other_wrote ? "wrote" : "read"));
  }

  Thread* warp_of(const Thread& t) {
    const std::size_t index = std::size_t(&t - threads_.data());
    if (threads_.size() % 32 != 0) fail(fmt::format("warp-collective operations need whole warps; the block has {} threads",
                                                    threads_.size()));
    return threads_.data() + index / 32 * 32;
  }

  void complete(Thread* lanes, Collective kind) {
    if (!warp_requests_.empty()) warp_requests_[std::size_t(lanes - threads_.data()) / 32].flush(banks_);
    switch (kind) {
      case Collective::exchange:
        if (lanes[0].bytes == 0) ++warp_syncs_[std::size_t(lanes - threads_.data()) / 32];  // __syncwarp
        for (int l = 0; l < 32; ++l) {
          for (int k = 0; k < 32 && lanes[l].bytes > 0; ++k) {
            std::memcpy(static_cast<std::uint8_t*>(lanes[l].result) + std::size_t(k) * lanes[l].bytes, lanes[k].operand,
                        lanes[l].bytes);
          }
        }
        break;
      case Collective::ldmatrix: {
        std::array<u32, 32> addresses{};
        const bool trans = static_cast<const LdmatrixLane*>(lanes[0].operand)->trans;
        for (int l = 0; l < 32; ++l) {
          const auto* x = static_cast<const LdmatrixLane*>(lanes[l].operand);
          if (x->trans != trans) fail("lanes of one ldmatrix disagree on .trans");
          addresses[std::size_t(l)] = x->address;
        }
        std::array<std::array<u32, 4>, 32> r{};
        try {
          r = ldmatrix_x4({shared_.data(), shared_size_}, addresses, trans);
        } catch (const std::out_of_range& e) {
          fail(fmt::format("block ({}, {}, {}) warp {}: {}", lanes[0].ids.block[0], lanes[0].ids.block[1],
                           lanes[0].ids.block[2], (lanes - threads_.data()) / 32, e.what()));
        }
        if (!warp_requests_.empty()) {
          std::array<LaneAccess, 32> request;
          for (int l = 0; l < 32; ++l) request[std::size_t(l)] = {l, addresses[std::size_t(l)], 16};
          banks_[std::size_t(SharedOp::ldmatrix)].add(count_wavefronts(request));
        }
        for (int l = 0; l < 32; ++l) {
          check(races_.read(addresses[std::size_t(l)], 16, now(lanes[l])), lanes[l], "reads (ldmatrix)");
          std::memcpy(lanes[l].result, r[std::size_t(l)].data(), 16);
        }
        break;
      }
      case Collective::mma: {
        std::array<MmaLane, 32> in{};
        for (int l = 0; l < 32; ++l) {
          if (lanes[l].bf16 != lanes[0].bf16) fail("lanes of one mma disagree on the element type");
          in[std::size_t(l)] = *static_cast<const MmaLane*>(lanes[l].operand);
        }
        const auto d = mma_16816(lanes[0].bf16, in);
        for (int l = 0; l < 32; ++l) std::memcpy(lanes[l].result, d[std::size_t(l)].data(), 16);
        break;
      }
    }
    for (int l = 0; l < 32; ++l) lanes[l].wait = Wait::ready;
  }

  std::string who(const Thread& t) const {
    const DilatronEmulatorThread& i = t.ids;
    return fmt::format("block ({}, {}, {}) thread ({}, {}, {})", i.block[0], i.block[1], i.block[2], i.thread[0],
                       i.thread[1], i.thread[2]);
  }

  std::string deadlock() const {
    std::string out = "the CTA can make no progress:";
    for (std::size_t i = 0; i < threads_.size(); i += 32) {
      const Thread& t = threads_[i];
      const char* state = t.wait == Wait::done ? "exited" : t.wait == Wait::barrier ? "at __syncthreads" : "at a warp collective";
      out += fmt::format(" warp {} lane 0 {}{};", i / 32, state, t.wait == Wait::done ? "" : fmt::format(" (line {})", t.site));
      if (out.size() > 600) break;
    }
    return out;
  }

  std::string label_;
  std::vector<std::uint8_t> shared_;
  std::size_t shared_size_ = 0;
  RaceCheck races_;
  std::uint32_t barriers_ = 0;           // __syncthreads passed
  std::vector<std::uint32_t> warp_syncs_;  // __syncwarp passed, per warp
  std::vector<Thread> threads_;
  std::vector<WarpRequests> warp_requests_;  // per warp, when profiling bank conflicts
  BankProfile banks_{};
  StackPool& stacks_;
  std::exception_ptr error_;
};

// --- the table's functions: each acts for the fiber now running on this host thread ---
struct Services {
  static const DilatronEmulatorThread* self() { return &current->ids; }
  static void barrier(int site) { current_cta->barrier(site); }
  static void warp_exchange(int site, unsigned mask, const void* mine, unsigned bytes, void* all) {
    if (mask != 0xffffffffu) current_cta->fail(fmt::format("partial warp masks (0x{:08x}) are not emulated", mask));
    current_cta->collective(Collective::exchange, site, mine, all, bytes);
  }
  static unsigned shared_address(const void* pointer) { return current_cta->shared_address(pointer); }
  static void store_shared(unsigned address, const void* bytes, unsigned size) { current_cta->store_shared(address, bytes, size); }
  static void cp_async_16(unsigned shared, const void* global, int valid) { current_cta->cp_async_16(shared, global, valid != 0); }
  static void cp_async_commit() { current_cta->cp_async_commit(); }
  static void cp_async_wait(int pending) { current_cta->cp_async_wait(pending); }
  static void ldmatrix_x4(unsigned address, unsigned* r, int trans) {
    const LdmatrixLane lane{address, trans != 0};
    current_cta->collective(Collective::ldmatrix, -1, &lane, r, 16);
  }
  static void mma_16816(int bf16, float* d, const unsigned* a, unsigned b0, unsigned b1) {
    MmaLane lane{{a[0], a[1], a[2], a[3]}, {b0, b1}, {d[0], d[1], d[2], d[3]}};
    current_cta->collective(Collective::mma, -1, &lane, d, 16, bf16 != 0);
  }
  static float ex2(float x) { return ex2_ftz(x); }
  static float half_to_float(unsigned short bits) { return emulator::half_to_float(bits); }
  static unsigned short float_to_16(int bf16, float x) { return bf16 ? float_to_bf16(x) : float_to_half(x); }
  static float atomic_add_f32(float* address, float value) { return std::atomic_ref<float>(*address).fetch_add(value); }
};

}  // namespace

const DilatronEmulatorApi& api_table() {
  static const DilatronEmulatorApi table = {
      &Services::self,          &Services::barrier,       &Services::warp_exchange, &Services::shared_address,
      &Services::store_shared,  &Services::cp_async_16,   &Services::cp_async_commit, &Services::cp_async_wait,
      &Services::ldmatrix_x4,   &Services::mma_16816,     &Services::ex2,           &Services::half_to_float,
      &Services::float_to_16,   &Services::atomic_add_f32};
  return table;
}

bool describe_running_thread(char* text, std::size_t size) noexcept {
  if (!current_cta || !current) return false;
  const DilatronEmulatorThread& i = current->ids;
  std::snprintf(text, size, "%s: block (%u, %u, %u) thread (%u, %u, %u)", current_cta->label().c_str(), i.block[0],
                i.block[1], i.block[2], i.thread[0], i.thread[1], i.thread[2]);
  return true;
}

void launch(KernelEntry entry, const void* args, const LaunchShape& shape, const LaunchOptions& options) {
  const std::size_t ctas = std::size_t(shape.grid[0]) * shape.grid[1] * shape.grid[2];
  const std::size_t threads = std::size_t(shape.block[0]) * shape.block[1] * shape.block[2];
  if (ctas == 0 || threads == 0 || threads > 1024) {
    throw Error(fmt::format("emulator: {}: grid ({}, {}, {}) of blocks ({}, {}, {}): need at least one CTA of 1 to 1024 "
                            "threads", options.label, shape.grid[0], shape.grid[1], shape.grid[2], shape.block[0],
                            shape.block[1], shape.block[2]));
  }
  if (shape.shared_bytes > 227 * 1024) {
    throw Error(fmt::format("emulator: {}: {} bytes of shared memory per CTA; the emulated sm_90 has 227 KiB",
                            options.label, shape.shared_bytes));
  }
  const bool profile = bank_profiling();
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  const std::size_t workers = std::min<std::size_t>(ctas, options.host_threads > 0 ? unsigned(options.host_threads) : cores);
  std::atomic<std::size_t> next{0};
  std::atomic<bool> failed{false};
  std::exception_ptr first;
  std::mutex first_mutex;
  auto work = [&] {
    StackPool stacks;
    BankProfile banks{};
    for (std::size_t i; !failed && (i = next++) < ctas;) {
      const std::array<unsigned, 3> block{unsigned(i % shape.grid[0]), unsigned(i / shape.grid[0] % shape.grid[1]),
                                          unsigned(i / (std::size_t(shape.grid[0]) * shape.grid[1]))};
      try {
        Cta cta(shape, block, options.label, stacks, profile);
        cta.run(entry, args);
        merge(banks, cta.bank_profile());
      } catch (...) {
        const std::lock_guard lock(first_mutex);
        if (!first) first = std::current_exception();
        failed = true;
      }
    }
    if (profile && !failed) record_bank_profile(options.label, banks);
  };
  {
    std::vector<std::jthread> pool;
    for (std::size_t w = 1; w < workers; ++w) pool.emplace_back(work);
    work();
  }
  if (first) std::rethrow_exception(first);
}

}  // namespace dilatron::emulator
