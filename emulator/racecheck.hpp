// The emulator's racecheck: two threads of one CTA touching the same shared-memory word with nothing
// ordering them, at least one of them writing. Accesses are ordered by a __syncthreads between them, by
// being the same thread's, or, for two lanes of one warp, by a __syncwarp between them. Every shared
// access of these kernels goes through the PTX layer (cp.async, st.shared, ldmatrix), which reports it
// here, word by word (4 bytes).
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

namespace dilatron::emulator {

// When an access happens: its thread (index in the CTA) and the barrier counts at that moment.
struct AccessTime {
  int thread = 0;
  std::uint32_t barriers = 0;    // __syncthreads the CTA has passed
  std::uint32_t warp_syncs = 0;  // __syncwarp the thread's warp has passed
};

// The earlier access an access races with.
struct Race {
  std::uint32_t address;  // of the word
  int other;              // the other thread's index
  bool other_wrote;
};

class RaceCheck {
 public:
  explicit RaceCheck(std::size_t shared_bytes) : words_((shared_bytes + 3) / 4) {}

  std::optional<Race> read(std::uint32_t address, std::uint32_t bytes, const AccessTime& now);
  std::optional<Race> write(std::uint32_t address, std::uint32_t bytes, const AccessTime& now);

 private:
  static constexpr int kNobody = -1;
  struct Word {
    int writer = kNobody;
    std::uint32_t write_barriers = 0, write_syncs = 0;
    // The reads since the last barrier: the first and latest reader, the warp of them all (-1: several).
    int first_reader = kNobody, last_reader = kNobody, reader_warp = -1;
    std::uint32_t read_barriers = 0, read_syncs = 0;  // of the latest read
  };
  static bool ordered(int thread, std::uint32_t barriers, std::uint32_t syncs, const AccessTime& now);
  std::vector<Word> words_;
};

}  // namespace dilatron::emulator
