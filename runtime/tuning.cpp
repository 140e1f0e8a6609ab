#include "runtime/tuning.hpp"

#include <dilatron/error.hpp>

#include <algorithm>

#include "runtime/tuning_file.hpp"
#include "common/log.hpp"
#include "runtime/driver.hpp"

namespace dilatron {
namespace {

// Tunes the attention kernels of `workload` that the database lacks; returns their records.
std::vector<autotune::TuningRecord> tune_missing(autotune::Workload workload, const autotune::TunedFor& tuned,
                                                 const Problem& problem) {
  workload.tuned = tuned;
  std::vector<autotune::TuningRecord> records;
  std::optional<KernelBench> bench;
  for (const codegen::KernelSpec& spec : autotune::forward_kernels(workload)) {
    const autotune::TuningKey key = autotune::tuning_key(spec, tuned.target, problem.seq_len);
    const auto done = [&](const autotune::TuningRecord& r) { return r.key == key; };
    if (!codegen::is_attention(spec.op) || tuned.db->find(key) || std::any_of(records.begin(), records.end(), done)) {
      continue;
    }
    if (!bench) bench.emplace(problem, workload.dtype);
    log::write(log::Level::warn, "DILATRON_AUTOTUNE=1: tuning {} for N={} on {} (once; `dilatron tune` does it ahead)",
               spec.label(), problem.seq_len, tuned.target.device);
    const autotune::TuneResult result = autotune::tune(spec, {}, tune_hooks(cache::KernelCache::global(), &*bench, {}));
    if (auto record = autotune::to_record(result, key)) {
      records.push_back(std::move(*record));
    } else {
      log::write(log::Level::warn, "no candidate of {} ran; it keeps the heuristic tiles", spec.label());
    }
  }
  return records;
}

}  // namespace

autotune::TuningTarget current_target() {
  int version = 0;
  DILATRON_CU(cuDriverGetVersion(&version));
  return {driver::current_device_name(), version};
}

std::optional<autotune::TunedFor> tuned_for(autotune::Workload workload, const Problem& problem) {
  const AutotuneMode mode = autotune_mode();
  if (mode == AutotuneMode::off) return std::nullopt;
  autotune::TunedFor tuned{process_tuning(), current_target(), problem.seq_len};
  if (mode == AutotuneMode::tune_missing) {
    try {
      const std::vector<autotune::TuningRecord> records = tune_missing(std::move(workload), tuned, problem);
      if (!records.empty()) {
        publish_tuning(records);
        tuned.db = process_tuning();
      }
    } catch (const Error& e) {
      log::write(log::Level::warn, "tuning on first use failed, running with the tiles known so far: {}", e.what());
    }
  }
  return tuned;
}

autotune::TuneHooks tune_hooks(cache::KernelCache& cache, KernelBench* bench, const TimingOptions& timing) {
  autotune::TuneHooks hooks;
  hooks.compile = [&cache](const codegen::KernelSpec& spec) {
    const cache::EntryMeta& m = cache.get(spec).entry->meta;
    return codegen::PtxasReport{m.registers, m.spill_bytes, m.shared_bytes - spec.shared_bytes(), m.stack_bytes};
  };
  if (bench) {
    hooks.time = [&cache, bench, timing](const codegen::KernelSpec& spec) {
      return bench->median_us(spec, *cache.get(spec).entry, timing);
    };
  }
  hooks.jobs = cache.options().compile_jobs;
  return hooks;
}

}  // namespace dilatron
