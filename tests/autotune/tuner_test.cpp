// Tuning with deterministic stand-ins for the compiler and the GPU timer: which candidates are compiled,
// pruned, timed and chosen, and that failures score infinity without stopping the tune.
#include <gtest/gtest.h>

#include <dilatron/error.hpp>

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <set>

#include "autotune/candidates.hpp"
#include "autotune/policy.hpp"
#include "autotune/tuner.hpp"

using namespace dilatron;
using namespace dilatron::autotune;
using codegen::Tiles;

namespace {

codegen::KernelSpec kernel() {
  codegen::KernelSpec s;
  s.op = codegen::Op::attention_partial_merge;
  s.branches = {{8192, 4}};
  s.causal = true;
  return s;
}

// Cost model: a deterministic "time" per shape, so the winner is known in advance.
double cost(const Tiles& t) { return 1000.0 / (t.block_m * t.block_n) * (t.stages == 3 ? 0.9 : 1.0) + t.warps; }

struct Recorder {
  std::mutex mutex;
  std::vector<Tiles> compiled, timed;
  std::map<std::string, std::size_t> progress_total;
  std::size_t progress_calls = 0;

  TuneHooks hooks(bool time = true) {
    TuneHooks h;
    h.compile = [this](const codegen::KernelSpec& spec) {
      std::lock_guard lock(mutex);
      compiled.push_back(spec.tiles);
      return codegen::PtxasReport{200, 0, 0, 0};
    };
    if (time) {
      h.time = [this](const codegen::KernelSpec& spec) {
        std::lock_guard lock(mutex);
        timed.push_back(spec.tiles);
        return cost(spec.tiles);
      };
    }
    h.progress = [this](std::string_view phase, std::size_t done, std::size_t total) {
      std::lock_guard lock(mutex);
      ++progress_calls;
      EXPECT_LE(done, total);
      progress_total[std::string(phase)] = total;
    };
    h.jobs = 3;
    return h;
  }
};

const CandidateReport& report_of(const TuneResult& r, const Tiles& t) {
  const auto it = std::find_if(r.candidates.begin(), r.candidates.end(), [&](const CandidateReport& c) { return c.tiles == t; });
  EXPECT_NE(it, r.candidates.end()) << tiles_text(t);
  return *it;
}

}  // namespace

TEST(AutotuneTuner, TimesEveryCandidateThatSurvivesPruningAndPicksTheFastest) {
  Recorder rec;
  const TuneResult r = tune(kernel(), {}, rec.hooks());
  EXPECT_EQ(r.spec.tiles, default_tiles(kernel()));
  ASSERT_FALSE(r.candidates.empty());
  EXPECT_TRUE(r.default_candidate().is_default);
  EXPECT_EQ(r.default_candidate().tiles, r.spec.tiles);
  EXPECT_EQ(r.candidates.size(), candidate_tiles().size()) << "the default is one of the space, listed once";

  std::set<std::string> statically_fine, compiled, timed;
  for (const CandidateReport& c : r.candidates) {
    codegen::KernelSpec s = kernel();
    s.tiles = c.tiles;
    if (c.is_default || static_pruning(s).empty()) statically_fine.insert(tiles_text(c.tiles));
  }
  for (const Tiles& t : rec.compiled) compiled.insert(tiles_text(t));
  for (const Tiles& t : rec.timed) timed.insert(tiles_text(t));
  EXPECT_EQ(compiled, statically_fine) << "exactly the statically valid candidates are compiled";
  EXPECT_EQ(rec.compiled.size(), compiled.size()) << "each once";
  EXPECT_EQ(timed, compiled) << "no ptxas pruning with a clean report";
  EXPECT_EQ(rec.progress_total["compile"], compiled.size());
  EXPECT_EQ(rec.progress_total["time"], timed.size());
  EXPECT_EQ(rec.progress_calls, compiled.size() + timed.size());

  // The independent answer: the smallest cost among the timed.
  std::string best;
  for (const std::string& t : timed) {
    if (best.empty() || cost(parse_tiles(t)) < cost(parse_tiles(best))) best = t;
  }
  ASSERT_TRUE(r.winner);
  EXPECT_EQ(tiles_text(*r.winner), best);
  for (const CandidateReport& c : r.candidates) {
    EXPECT_EQ(c.median_us.has_value(), timed.count(tiles_text(c.tiles)) == 1) << tiles_text(c.tiles);
    if (c.median_us) {
      EXPECT_DOUBLE_EQ(*c.median_us, cost(c.tiles));
    }
    if (!c.pruned.empty()) {
      EXPECT_FALSE(c.ptxas) << "pruned statically: never compiled";
    }
  }
}

TEST(AutotuneTuner, FailuresScoreInfinityAndNeverStopTheTune) {
  Recorder rec;
  TuneHooks hooks = rec.hooks();
  const Tiles broken_build{64, 64, 4, 2}, broken_launch{128, 64, 8, 2}, spilling{64, 32, 4, 2};
  const auto compile = hooks.compile;
  hooks.compile = [&, compile](const codegen::KernelSpec& spec) {
    if (spec.tiles == broken_build) throw Error("NVRTC says no");
    if (spec.tiles == spilling) return codegen::PtxasReport{255, 48, 0, 16};
    return compile(spec);
  };
  const auto time = hooks.time;
  hooks.time = [&, time](const codegen::KernelSpec& spec) {
    if (spec.tiles == broken_launch) throw Error("CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES");
    return time(spec);
  };
  const std::vector<Tiles> only{broken_build, broken_launch, spilling, {64, 128, 4, 2}};
  const TuneResult r = tune(kernel(), only, hooks);
  ASSERT_EQ(r.candidates.size(), 5u) << "the default plus the four asked for";
  EXPECT_NE(report_of(r, broken_build).error.find("NVRTC says no"), std::string::npos);
  EXPECT_FALSE(report_of(r, broken_build).median_us);
  EXPECT_NE(report_of(r, broken_launch).error.find("OUT_OF_RESOURCES"), std::string::npos);
  EXPECT_FALSE(report_of(r, broken_launch).median_us);
  EXPECT_NE(report_of(r, spilling).pruned.find("48 bytes of spill"), std::string::npos);
  EXPECT_FALSE(report_of(r, spilling).median_us);
  ASSERT_TRUE(r.winner);
  const Tiles default_tiles_now = r.spec.tiles;
  const Tiles faster = cost({64, 128, 4, 2}) < cost(default_tiles_now) ? Tiles{64, 128, 4, 2} : default_tiles_now;
  EXPECT_EQ(*r.winner, faster);

  const auto stored = to_record(r, tuning_key(kernel(), {"gpu", 1}, 4096));
  ASSERT_TRUE(stored);
  EXPECT_EQ(stored->winner, *r.winner);
  EXPECT_EQ(stored->candidates.size(), 4u) << "timed and failed ones are kept; the pruned one was never measured";
  for (const CandidateTiming& c : stored->candidates) EXPECT_EQ(c.median_us.has_value(), c.error.empty());
}

TEST(AutotuneTuner, TheDefaultIsAlwaysTimedAsTheReference) {
  Recorder rec;
  TuneHooks hooks = rec.hooks();
  hooks.compile = [](const codegen::KernelSpec&) { return codegen::PtxasReport{255, 8, 0, 8}; };  // spills everywhere
  const TuneResult r = tune(kernel(), {{64, 64, 4, 2}}, hooks);
  EXPECT_TRUE(r.default_candidate().pruned.empty());
  EXPECT_TRUE(r.default_candidate().median_us);
  EXPECT_FALSE(report_of(r, {64, 64, 4, 2}).median_us);
  EXPECT_EQ(r.winner, r.spec.tiles);
}

TEST(AutotuneTuner, WhenNothingRunsThereIsNoWinnerAndNoRecord) {
  Recorder rec;
  TuneHooks hooks = rec.hooks();
  hooks.time = [](const codegen::KernelSpec&) -> double { throw Error("no GPU after all"); };
  const TuneResult r = tune(kernel(), {{64, 64, 4, 2}}, hooks);
  EXPECT_FALSE(r.winner);
  EXPECT_FALSE(to_record(r, tuning_key(kernel(), {"gpu", 1}, 4096)));
}

TEST(AutotuneTuner, ADryRunCompilesAndPrunesButTimesNothing) {
  Recorder rec;
  const TuneResult r = tune(kernel(), {}, rec.hooks(false));
  EXPECT_TRUE(rec.timed.empty());
  EXPECT_FALSE(r.winner);
  EXPECT_FALSE(rec.compiled.empty());
  for (const CandidateReport& c : r.candidates) {
    EXPECT_FALSE(c.median_us);
    EXPECT_EQ(c.ptxas.has_value(), c.pruned.empty()) << tiles_text(c.tiles);
    if (c.ptxas) {
      EXPECT_GT(c.ctas_per_sm, 0);
    }
  }
}
