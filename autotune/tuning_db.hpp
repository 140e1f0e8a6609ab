// The tuning database: per kernel (its spec without tiles), GPU and sequence-length bucket, every
// candidate's measured median and the winner. Kept as human-readable JSON in the cache directory
// (runtime/tuning_file.hpp); this header is the in-memory form and its text.
//
// A record's key holds everything that can change a timing or make its tiles meaningless: the GPU's
// name, arch and driver, the NVRTC, library and template versions, the spec without tiles and the
// length bucket. Lookups compare all of it, so records from another version stay in the file but are
// never used.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "codegen/kernel_spec.hpp"

namespace dilatron::autotune {

// Bumped when the file's layout or a field's meaning changes.
inline constexpr int kTuningFormat = 1;

// The GPU a measurement was taken on.
struct TuningTarget {
  std::string device;  // cuDeviceGetName, e.g. "NVIDIA H100 80GB HBM3"
  int driver = 0;      // cuDriverGetVersion, e.g. 13000
  bool operator==(const TuningTarget&) const = default;
};

struct TuningKey {
  std::string device, arch;
  int driver = 0;
  std::string nvrtc, library, templates;
  std::string spec;  // untiled_spec()
  std::int64_t seq_len_bucket = 0;
  bool operator==(const TuningKey&) const = default;
};

// The smallest power of two >= seq_len (>= 1).
std::int64_t seq_len_bucket(std::int64_t seq_len);

// The spec's canonical text with its tiles zeroed: what a record is about, whatever tiles win.
std::string untiled_spec(codegen::KernelSpec spec);

// This build's key for `spec` on `target` at `seq_len`.
TuningKey tuning_key(const codegen::KernelSpec& spec, const TuningTarget& target, std::int64_t seq_len);

struct CandidateTiming {
  codegen::Tiles tiles;
  std::optional<double> median_us;  // empty: it failed to compile or launch (scored as infinity)
  std::string error;
};

struct TuningRecord {
  TuningKey key;
  std::vector<CandidateTiming> candidates;
  codegen::Tiles winner;  // the candidate with the smallest median
  std::string date;       // UTC, ISO 8601, of the latest measurement folded in
};

// The canonical spec of the record's winning kernel, as the kernel cache's entries name it.
std::string winner_spec(const TuningRecord& record);

// The fastest timed candidate (the earlier one on a tie), or none when every one failed.
std::optional<codegen::Tiles> fastest(const std::vector<CandidateTiming>& candidates);

class TuningDb {
 public:
  TuningDb() = default;
  explicit TuningDb(std::vector<TuningRecord> records) : records_(std::move(records)) {}

  // Throws dilatron::Error saying what is wrong (not JSON, another format, a missing or mistyped
  // field, a winner without a timing).
  static TuningDb parse(std::string_view json);
  // Pretty-printed JSON that parse() reads back.
  std::string dump() const;

  const std::vector<TuningRecord>& records() const noexcept { return records_; }
  const TuningRecord* find(const TuningKey& key) const;

  // Folds `record` into the one with its key, or adds it: its timings replace those of the same tiles,
  // other candidates' stay, and the winner is chosen again over all of them.
  const TuningRecord& merge(const TuningRecord& record);

  // The winners this build can load for `spec` (its tiles aside) on its arch, from any GPU, driver and
  // length: what `cache warm` compiles besides the default.
  std::vector<codegen::Tiles> winners_for(const codegen::KernelSpec& spec) const;

  // The records whose winner is one of these kernels (canonical specs): what `cache export` ships
  // with them.
  std::vector<TuningRecord> won_by(const std::vector<std::string>& kernel_specs) const;

 private:
  std::vector<TuningRecord> records_;
};

}  // namespace dilatron::autotune
