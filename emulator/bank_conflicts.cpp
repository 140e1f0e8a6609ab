#include "emulator/bank_conflicts.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <set>

#include "common/env.hpp"

namespace dilatron::emulator {

Wavefronts count_wavefronts(std::span<const LaneAccess> request) {
  Wavefronts out;
  if (request.empty()) return out;
  unsigned widest = 4;
  for (const LaneAccess& a : request) widest = std::max(widest, a.bytes);
  const int lanes_per_phase = int(128 / std::min(widest, 16u));
  for (int first = 0; first < 32; first += lanes_per_phase) {
    std::set<std::uint32_t> words;  // distinct 4-byte words the phase touches
    for (const LaneAccess& a : request) {
      if (a.lane < first || a.lane >= first + lanes_per_phase) continue;
      for (std::uint32_t w = a.address / 4; w <= (a.address + std::max(a.bytes, 1u) - 1) / 4; ++w) words.insert(w);
    }
    if (words.empty()) continue;
    std::array<unsigned, 32> per_bank{};
    for (std::uint32_t w : words) ++per_bank[w % 32];
    const unsigned taken = *std::max_element(per_bank.begin(), per_bank.end());
    const unsigned needed = unsigned((words.size() + 31) / 32);
    out.taken += taken;
    out.needed += needed;
    out.worst_way = std::max(out.worst_way, (taken + needed - 1) / needed);
  }
  return out;
}

void BankCounts::add(const Wavefronts& w) {
  ++requests;
  wavefronts += w.taken;
  needed += w.needed;
  worst_way = std::max(worst_way, w.worst_way);
}

void BankCounts::add(const BankCounts& other) {
  requests += other.requests;
  wavefronts += other.wavefronts;
  needed += other.needed;
  worst_way = std::max(worst_way, other.worst_way);
}

void merge(BankProfile& into, const BankProfile& from) {
  for (std::size_t op = 0; op < into.size(); ++op) into[op].add(from[op]);
}

void WarpRequests::add(SharedOp op, int lane, std::uint32_t address, unsigned bytes) {
  lanes_[std::size_t(op)][std::size_t(lane)].push_back({lane, address, bytes});
}

void WarpRequests::flush(BankProfile& into) {
  for (std::size_t op = 0; op < lanes_.size(); ++op) {
    auto& per_lane = lanes_[op];
    std::size_t deepest = 0;
    for (const auto& l : per_lane) deepest = std::max(deepest, l.size());
    std::vector<LaneAccess> request;
    for (std::size_t k = 0; k < deepest; ++k) {
      request.clear();
      for (const auto& l : per_lane) {
        if (k < l.size()) request.push_back(l[k]);
      }
      into[op].add(count_wavefronts(request));
    }
    for (auto& l : per_lane) l.clear();
  }
}

namespace {

std::mutex profiles_mutex;
// Never destroyed: the table is printed from an atexit handler, after static destructors may have run.
std::map<std::string, BankProfile>& profiles() {
  static auto* all = new std::map<std::string, BankProfile>;
  return *all;
}

void print_at_exit() { std::fputs(bank_profile_table().c_str(), stderr); }

std::atomic<bool>& profiling() {
  static std::atomic<bool> on = [] {
    const bool set = env::emulator_profile();
    if (set) std::atexit(print_at_exit);
    return set;
  }();
  return on;
}

}  // namespace

bool bank_profiling() { return profiling().load(std::memory_order_relaxed); }
void set_bank_profiling(bool on) { profiling() = on; }

void record_bank_profile(const std::string& kernel, const BankProfile& profile) {
  const std::lock_guard lock(profiles_mutex);
  merge(profiles()[kernel], profile);
}

std::map<std::string, BankProfile> bank_profiles() {
  const std::lock_guard lock(profiles_mutex);
  return profiles();
}

void reset_bank_profiles() {
  const std::lock_guard lock(profiles_mutex);
  profiles().clear();
}

std::string bank_profile_table() {
  std::string out = "dilatron: emulator: shared-memory wavefronts per kernel (needed: the conflict-free minimum)\n";
  out += fmt::format("  {:<10} {:>12} {:>12} {:>12} {:>6} {:>6}  {}\n", "op", "requests", "wavefronts", "needed", "ratio",
                     "worst", "kernel");
  for (const auto& [kernel, profile] : bank_profiles()) {
    for (std::size_t op = 0; op < profile.size(); ++op) {
      const BankCounts& c = profile[op];
      if (c.requests == 0) continue;
      out += fmt::format("  {:<10} {:>12} {:>12} {:>12} {:>6.2f} {:>5}x  {}\n", kSharedOpNames[op], c.requests,
                         c.wavefronts, c.needed, double(c.wavefronts) / double(std::max<std::uint64_t>(c.needed, 1)),
                         c.worst_way, kernel);
    }
  }
  return out;
}

}  // namespace dilatron::emulator
