// The runtime's side of autotuning: which GPU a plan runs on, the database's tiles for it, tuning on
// first use (DILATRON_AUTOTUNE=1), and the hooks that compile candidates through the kernel cache and
// time them on the current GPU (shared with `dilatron tune`).
#pragma once

#include <optional>

#include "autotune/required_kernels.hpp"
#include "autotune/tuner.hpp"
#include "cache/kernel_cache.hpp"
#include "runtime/kernel_bench.hpp"
#include "runtime/problem.hpp"

namespace dilatron {

// The GPU behind the current context, as the tuning database names it.
autotune::TuningTarget current_target();

// Where a plan for `workload` at `problem`'s size takes its tiles from: none with DILATRON_AUTOTUNE=0,
// else the process's database for the current GPU and length. With DILATRON_AUTOTUNE=1 the attention
// kernels the database lacks are tuned first and stored; a tune that fails is reported as a warning and
// the heuristic runs instead.
std::optional<autotune::TunedFor> tuned_for(autotune::Workload workload, const Problem& problem);

// Candidates built through `cache` (ptxas's report from the entry) and timed alone by `bench`, or not
// timed (a dry run) when `bench` is null.
autotune::TuneHooks tune_hooks(cache::KernelCache& cache, KernelBench* bench, const TimingOptions& timing);

}  // namespace dilatron
