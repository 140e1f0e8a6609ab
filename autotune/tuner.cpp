#include "autotune/tuner.hpp"

#include <fmt/chrono.h>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <mutex>

#include "autotune/candidates.hpp"
#include "autotune/policy.hpp"
#include "common/log.hpp"
#include "common/parallel.hpp"

namespace dilatron::autotune {
namespace {

codegen::KernelSpec with(codegen::KernelSpec spec, const codegen::Tiles& tiles) {
  spec.tiles = tiles;
  return spec;
}

std::vector<CandidateReport> candidate_reports(const codegen::KernelSpec& spec, const std::vector<codegen::Tiles>& only) {
  std::vector<CandidateReport> out{{spec.tiles, true, {}, {}, ctas_per_sm(spec), {}, {}}};
  for (const codegen::Tiles& tiles : only.empty() ? candidate_tiles() : only) {
    const auto seen = [&](const CandidateReport& c) { return c.tiles == tiles; };
    if (std::any_of(out.begin(), out.end(), seen)) continue;
    const codegen::KernelSpec candidate = with(spec, tiles);
    const std::string pruned = static_pruning(candidate);
    out.push_back({tiles, false, pruned, {}, pruned.empty() ? ctas_per_sm(candidate) : 0, {}, {}});
  }
  return out;
}

}  // namespace

TuneResult tune(const codegen::KernelSpec& base, const std::vector<codegen::Tiles>& only, const TuneHooks& hooks) {
  TuneResult result{with_tiles(base), {}, {}};
  result.candidates = candidate_reports(result.spec, only);
  std::vector<CandidateReport*> live;
  for (CandidateReport& c : result.candidates) {
    if (c.pruned.empty()) live.push_back(&c);
  }

  std::mutex mutex;
  std::size_t done = 0;
  const auto step = [&](std::string_view phase, std::size_t total) {
    std::lock_guard lock(mutex);
    ++done;
    if (hooks.progress) hooks.progress(phase, done, total);
  };
  parallel_for(std::int64_t(live.size()), hooks.jobs, [&] {
    return [&](std::int64_t i) {
      CandidateReport& c = *live[std::size_t(i)];
      const codegen::KernelSpec candidate = with(result.spec, c.tiles);
      try {
        c.ptxas = hooks.compile(candidate);
        c.ctas_per_sm = ctas_per_sm(candidate, c.ptxas->registers);
        if (!c.is_default) c.pruned = ptxas_pruning(candidate, *c.ptxas);
      } catch (const std::exception& e) {
        c.error = fmt::format("compile: {}", e.what());
        log::write(log::Level::warn, "tune: {} does not build: {}", candidate.label(), e.what());
      }
      step("compile", live.size());
    };
  });
  if (!hooks.time) return result;

  std::erase_if(live, [](const CandidateReport* c) { return !c->pruned.empty() || !c->error.empty(); });
  done = 0;
  for (CandidateReport* c : live) {
    const codegen::KernelSpec candidate = with(result.spec, c->tiles);
    try {
      c->median_us = hooks.time(candidate);
    } catch (const std::exception& e) {
      c->error = fmt::format("launch: {}", e.what());
      log::write(log::Level::warn, "tune: {} fails to run: {}", candidate.label(), e.what());
    }
    step("time", live.size());
  }
  std::vector<CandidateTiming> timings;
  for (const CandidateReport& c : result.candidates) timings.push_back({c.tiles, c.median_us, c.error});
  result.winner = fastest(timings);
  return result;
}

std::optional<TuningRecord> to_record(const TuneResult& result, const TuningKey& key) {
  if (!result.winner) return std::nullopt;
  TuningRecord record{key, {}, *result.winner,
                      fmt::format("{:%Y-%m-%dT%H:%M:%SZ}", fmt::gmtime(std::chrono::system_clock::now()))};
  for (const CandidateReport& c : result.candidates) {
    if (c.median_us || !c.error.empty()) record.candidates.push_back({c.tiles, c.median_us, c.error});
  }
  return record;
}

}  // namespace dilatron::autotune
