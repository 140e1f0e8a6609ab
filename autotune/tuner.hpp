// Tuning one attention kernel: the candidate space, pruned statically, compiled in parallel, pruned by
// ptxas, then timed one at a time. Compiling and timing are hooks (the kernel cache and a GPU timer in
// the product, deterministic stand-ins in tests), so the selection logic runs anywhere.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "autotune/tuning_db.hpp"
#include "codegen/compiler.hpp"
#include "codegen/kernel_spec.hpp"

namespace dilatron::autotune {

struct TuneHooks {
  // Builds a candidate and returns ptxas's report; throws when it cannot be built.
  std::function<codegen::PtxasReport(const codegen::KernelSpec&)> compile;
  // A built candidate's median time in microseconds; throws when it cannot launch. Empty: a dry run,
  // which stops after pruning.
  std::function<double(const codegen::KernelSpec&)> time;
  // Called after each candidate of a phase ("compile", "time") with how many are done of how many.
  std::function<void(std::string_view phase, std::size_t done, std::size_t total)> progress;
  unsigned jobs = 1;  // parallel compilations
};

struct CandidateReport {
  codegen::Tiles tiles;
  bool is_default = false;
  std::string pruned;  // why it was not timed; empty for the timed (and the failed)
  std::optional<codegen::PtxasReport> ptxas;
  int ctas_per_sm = 0;              // by shared memory, and registers once compiled
  std::optional<double> median_us;  // timed; empty when pruned, failed or a dry run
  std::string error;                // a compile or launch failure: scored as infinity, never fatal
};

struct TuneResult {
  codegen::KernelSpec spec;  // with the default tiles
  std::vector<CandidateReport> candidates;  // the default first
  std::optional<codegen::Tiles> winner;     // the fastest timed candidate; none in a dry run or when all failed

  const CandidateReport& default_candidate() const { return candidates.front(); }
};

// Tunes `spec` (an attention kernel; its tiles are ignored). `only`, when not empty, restricts the space
// to those tiles; the default tiles always take part and are never pruned, as the reference. Failures
// of single candidates are recorded in their reports; nothing here throws for them.
TuneResult tune(const codegen::KernelSpec& spec, const std::vector<codegen::Tiles>& only, const TuneHooks& hooks);

// The database record of a finished tune under `key`: every timed or failed candidate, the winner and
// today's date. Empty when nothing was timed successfully.
std::optional<TuningRecord> to_record(const TuneResult& result, const TuningKey& key);

}  // namespace dilatron::autotune
