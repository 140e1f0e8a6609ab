// Which tiles a kernel runs with. Today: per-op defaults. The tuning database (`dilatron tune`) will
// be consulted here first, so the runtime and `cache warm` keep asking one place.
#pragma once

#include "codegen/kernel_spec.hpp"

namespace dilatron::autotune {

// The spec with its tiles filled in; the spec's other fields are kept.
codegen::KernelSpec with_tiles(codegen::KernelSpec spec);

}  // namespace dilatron::autotune
