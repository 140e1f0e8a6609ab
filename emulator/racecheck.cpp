#include "emulator/racecheck.hpp"

namespace dilatron::emulator {

bool RaceCheck::ordered(int thread, std::uint32_t barriers, std::uint32_t syncs, const AccessTime& now) {
  return thread == now.thread || barriers < now.barriers || (thread / 32 == now.thread / 32 && syncs < now.warp_syncs);
}

std::optional<Race> RaceCheck::read(std::uint32_t address, std::uint32_t bytes, const AccessTime& now) {
  for (std::uint32_t i = address / 4; i < (address + bytes + 3) / 4 && i < words_.size(); ++i) {
    Word& w = words_[i];
    if (w.writer != kNobody && !ordered(w.writer, w.write_barriers, w.write_syncs, now)) return Race{i * 4, w.writer, true};
    if (w.last_reader == kNobody || w.read_barriers < now.barriers) {
      w.first_reader = now.thread;
      w.reader_warp = now.thread / 32;
    } else if (w.reader_warp != now.thread / 32) {
      w.reader_warp = -1;
    }
    w.last_reader = now.thread;
    w.read_barriers = now.barriers;
    w.read_syncs = now.warp_syncs;
  }
  return std::nullopt;
}

std::optional<Race> RaceCheck::write(std::uint32_t address, std::uint32_t bytes, const AccessTime& now) {
  for (std::uint32_t i = address / 4; i < (address + bytes + 3) / 4 && i < words_.size(); ++i) {
    Word& w = words_[i];
    if (w.writer != kNobody && !ordered(w.writer, w.write_barriers, w.write_syncs, now)) return Race{i * 4, w.writer, true};
    if (w.last_reader != kNobody) {
      // Every read since the last barrier must be this thread's, or its warp's before a __syncwarp.
      const int other = w.last_reader != now.thread ? w.last_reader : w.first_reader;
      const bool reads_ordered = w.read_barriers < now.barriers ||
                                 (w.first_reader == now.thread && w.last_reader == now.thread) ||
                                 (w.reader_warp == now.thread / 32 && w.read_syncs < now.warp_syncs);
      if (!reads_ordered) return Race{i * 4, other, false};
    }
    w = Word{now.thread, now.barriers, now.warp_syncs};
  }
  return std::nullopt;
}

}  // namespace dilatron::emulator
