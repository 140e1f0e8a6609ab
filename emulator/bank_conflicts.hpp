// Shared-memory bank conflicts, counted as the hardware serves a warp's request: 32 banks of 4 bytes, a
// request split into phases of 128 bytes (32 lanes of 4-byte accesses, 16 lanes of 8, 8 lanes of 16: an
// ldmatrix .x4 is four phases, one per 8x8 matrix), each phase taking as many wavefronts as the most
// distinct 4-byte words any one bank holds among its accesses (the same word is a broadcast). A request is
// conflict-free when it takes no more wavefronts than its distinct bytes need. A speed check only: the
// emulator's results never depend on it.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

namespace dilatron::emulator {

enum class SharedOp { ldmatrix, st_shared, cp_async };
inline constexpr std::array<const char*, 3> kSharedOpNames{"ldmatrix", "st.shared", "cp.async"};

struct LaneAccess {
  int lane;  // 0..31; lanes that did not take part are simply absent
  std::uint32_t address;
  unsigned bytes;
};

struct Wavefronts {
  unsigned taken = 0, needed = 0;  // needed: the conflict-free minimum
  unsigned worst_way = 1;         // the most wavefronts any one phase took over its minimum
};
Wavefronts count_wavefronts(std::span<const LaneAccess> request);

struct BankCounts {
  std::uint64_t requests = 0, wavefronts = 0, needed = 0;
  unsigned worst_way = 1;
  void add(const Wavefronts& w);
  void add(const BankCounts& other);
  bool conflict_free() const { return wavefronts == needed; }
};
using BankProfile = std::array<BankCounts, 3>;  // indexed by SharedOp
void merge(BankProfile& into, const BankProfile& from);

// One warp's st.shared and cp.async requests between two points where the warp converges. Lanes run one
// after another on the emulator, so the k-th access of each lane since the last such point is taken as
// one warp-wide instruction: exact for the convergent loops of these kernels.
class WarpRequests {
 public:
  void add(SharedOp op, int lane, std::uint32_t address, unsigned bytes);
  void flush(BankProfile& into);

 private:
  std::array<std::array<std::vector<LaneAccess>, 32>, 3> lanes_;  // [op][lane] in program order
};

// Profiling is off unless DILATRON_EMULATOR_PROFILE=1 or set_bank_profiling(true). When the variable is
// set, the table of every kernel's counts is printed to stderr as the process exits. Any value other than
// "", "0" or "1" throws dilatron::Error naming it.
bool bank_profiling();
void set_bank_profiling(bool on);
void record_bank_profile(const std::string& kernel, const BankProfile& profile);
std::map<std::string, BankProfile> bank_profiles();  // kernel label -> counts so far
void reset_bank_profiles();
std::string bank_profile_table();

}  // namespace dilatron::emulator
