// Which tiles a kernel runs with: the tuning database's winner for this GPU and length when it has one,
// else a per-head-dim heuristic. The runtime and `cache warm` both ask here.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>

#include "autotune/tuning_db.hpp"
#include "codegen/kernel_spec.hpp"

namespace dilatron::autotune {

// The heuristic tiles for the spec's op, head dim and arch (no database).
codegen::Tiles default_tiles(const codegen::KernelSpec& spec);

// Where tuned tiles come from: a database and the GPU and length a call runs with.
struct TunedFor {
  std::shared_ptr<const TuningDb> db;
  TuningTarget target;
  std::int64_t seq_len = 0;
};

// The spec with its tiles filled in (its other fields kept): for an attention kernel, the database's
// winner under the key `tuned` gives when there is one, else default_tiles().
codegen::KernelSpec with_tiles(codegen::KernelSpec spec, const std::optional<TunedFor>& tuned = std::nullopt);

}  // namespace dilatron::autotune
