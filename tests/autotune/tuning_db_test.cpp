// The tuning database: its JSON, keys and versions, merging, and what the policy and `cache warm` take from it.
#include <gtest/gtest.h>

#include <dilatron/version.hpp>

#include <random>

#include "autotune/candidates.hpp"
#include "autotune/policy.hpp"
#include "autotune/required_kernels.hpp"
#include "tests/support/expect_error.hpp"

using namespace dilatron;
using namespace dilatron::autotune;
using codegen::Tiles;

namespace {

const TuningTarget kGpu{"NVIDIA H100 80GB HBM3", 13000};

codegen::KernelSpec branch_kernel(std::int64_t w = 4096, std::int64_t r = 2) {
  Workload workload;
  workload.config.segments = {w};
  workload.config.dilations = {r};
  return forward_kernels(workload).back();  // attention_forward after the clear
}

TuningRecord record(const codegen::KernelSpec& spec, std::vector<CandidateTiming> candidates,
                    std::int64_t seq_len = 32768, TuningTarget target = kGpu) {
  TuningRecord r{tuning_key(spec, target, seq_len), std::move(candidates), {}, "2026-11-23T00:00:00Z"};
  r.winner = *fastest(r.candidates);
  return r;
}

}  // namespace

TEST(AutotuneDb, BucketsArePowersOfTwo) {
  EXPECT_EQ(seq_len_bucket(1), 1);
  EXPECT_EQ(seq_len_bucket(2), 2);
  EXPECT_EQ(seq_len_bucket(3), 4);
  EXPECT_EQ(seq_len_bucket(32768), 32768);
  EXPECT_EQ(seq_len_bucket(32769), 65536);
  EXPECT_EQ(seq_len_bucket(1000000), 1 << 20);
}

TEST(AutotuneDb, TheKeyIsTheSpecWithoutTilesAndThisBuildsVersions) {
  codegen::KernelSpec a = branch_kernel(), b = a;
  b.tiles = {64, 64, 4, 2};
  EXPECT_EQ(tuning_key(a, kGpu, 30000), tuning_key(b, kGpu, 32768)) << "tiles and N within a bucket do not matter";
  EXPECT_NE(tuning_key(a, kGpu, 30000), tuning_key(a, kGpu, 40000));
  EXPECT_NE(tuning_key(a, kGpu, 30000), tuning_key(a, {kGpu.device, 12080}, 30000)) << "the driver is part of it";
  b = a;
  b.causal = true;
  EXPECT_NE(tuning_key(a, kGpu, 1), tuning_key(b, kGpu, 1));
  const TuningKey key = tuning_key(a, kGpu, 1);
  EXPECT_EQ(key.library, kVersion);
  EXPECT_EQ(key.arch, "sm_90a");
  EXPECT_EQ(key.spec.find("tiles=128"), std::string::npos) << key.spec;
  // The canonical text of the winning kernel, as cache entries name it.
  const TuningRecord r = record(a, {{{64, 64, 4, 2}, 10.0, ""}});
  b = a;
  b.tiles = {64, 64, 4, 2};
  EXPECT_EQ(winner_spec(r), b.canonical());
}

TEST(AutotuneDb, JsonRoundTripsEveryField) {
  std::mt19937 rng(5);
  TuningDb db;
  for (int i = 0; i < 8; ++i) {
    std::vector<CandidateTiming> candidates;
    for (const Tiles& t : candidate_tiles()) {
      if (rng() % 3 == 0) continue;
      if (rng() % 5 == 0) {
        candidates.push_back({t, std::nullopt, "launch: CUDA_ERROR_OUT_OF_RESOURCES \"quoted\"\nnewline"});
      } else {
        candidates.push_back({t, 1.0 + double(rng() % 100000) / 7, ""});
      }
    }
    candidates.push_back({{128, 32, 4, 3}, 0.5, ""});
    db.merge(record(branch_kernel(1024 << (i % 4), 1 + i), candidates, 1 << (10 + i)));
  }
  const TuningDb again = TuningDb::parse(db.dump());
  ASSERT_EQ(again.records().size(), db.records().size());
  for (std::size_t i = 0; i < db.records().size(); ++i) {
    const TuningRecord &a = db.records()[i], &b = again.records()[i];
    EXPECT_EQ(a.key, b.key);
    EXPECT_EQ(a.winner, b.winner);
    EXPECT_EQ(a.date, b.date);
    ASSERT_EQ(a.candidates.size(), b.candidates.size());
    for (std::size_t j = 0; j < a.candidates.size(); ++j) {
      EXPECT_EQ(a.candidates[j].tiles, b.candidates[j].tiles);
      EXPECT_EQ(a.candidates[j].median_us, b.candidates[j].median_us);
      EXPECT_EQ(a.candidates[j].error, b.candidates[j].error);
    }
  }
  EXPECT_EQ(again.dump(), db.dump());
  EXPECT_NE(db.dump().find("\"median_us\": null"), std::string::npos) << "a failure is stored as null, not infinity";
}

TEST(AutotuneDb, ParseSaysWhatIsWrong) {
  test::expect_error([] { TuningDb::parse("not json"); }, {"parse"});
  test::expect_error([] { TuningDb::parse("[]"); }, {"expected a JSON object"});
  test::expect_error([] { TuningDb::parse(R"({"format": 2, "records": []})"); }, {"format 2", "reads format 1"});
  TuningDb db;
  db.merge(record(branch_kernel(), {{{128, 32, 4, 3}, 5.0, ""}}));
  const std::string good = db.dump();
  auto edited = [&](const std::string& from, const std::string& to) {
    std::string text = good;
    text.replace(text.find(from), from.size(), to);
    return text;
  };
  test::expect_error([&] { TuningDb::parse(edited("\"device\"", "\"devise\"")); }, {"record 0", "device"});
  test::expect_error([&] { TuningDb::parse(edited("\"winner\": \"128x32x4x3\"", "\"winner\": \"64x64x4x2\"")); },
                     {"record 0", "winner 64x64x4x2 has no timing"});
  test::expect_error([&] { TuningDb::parse(edited("\"tiles\": \"128x32x4x3\"", "\"tiles\": \"big\"")); },
                     {"record 0", "tiles 'big'"});
  EXPECT_TRUE(TuningDb::parse(R"({"format": 1, "records": []})").records().empty());
}

TEST(AutotuneDb, MergingKeepsEveryCandidateAndChoosesTheWinnerAgain) {
  const codegen::KernelSpec spec = branch_kernel();
  TuningDb db;
  db.merge(record(spec, {{{128, 32, 4, 3}, 100.0, ""}, {{64, 64, 4, 2}, 90.0, ""}, {{64, 32, 4, 2}, std::nullopt, "boom"}}));
  EXPECT_EQ(db.find(tuning_key(spec, kGpu, 32768))->winner, (Tiles{64, 64, 4, 2}));
  // A later tune of one new candidate, and a re-timing of another.
  TuningRecord later = record(spec, {{{128, 64, 8, 2}, 95.0, ""}, {{64, 64, 4, 2}, 120.0, ""}});
  later.date = "2026-12-01T00:00:00Z";
  const TuningRecord& merged = db.merge(later);
  EXPECT_EQ(db.records().size(), 1u);
  EXPECT_EQ(merged.candidates.size(), 4u) << "adding a candidate throws nothing away";
  EXPECT_EQ(merged.winner, (Tiles{128, 64, 8, 2})) << "95 us beats 100 and the re-timed 120";
  EXPECT_EQ(merged.date, "2026-12-01T00:00:00Z");
  const auto failed = std::find_if(merged.candidates.begin(), merged.candidates.end(),
                                   [](const CandidateTiming& c) { return c.tiles == Tiles{64, 32, 4, 2}; });
  ASSERT_NE(failed, merged.candidates.end());
  EXPECT_FALSE(failed->median_us);
  EXPECT_EQ(failed->error, "boom");
  // Another bucket is another record.
  db.merge(record(spec, {{{128, 32, 4, 3}, 1.0, ""}}, 1024));
  EXPECT_EQ(db.records().size(), 2u);
}

TEST(AutotuneDb, RecordsOfOtherVersionsAndGpusAreNeverUsed) {
  const codegen::KernelSpec spec = branch_kernel();
  TuningDb db;
  for (int field = 0; field < 6; ++field) {
    TuningRecord r = record(spec, {{{64, 64, 4, 2}, 1.0, ""}});
    if (field == 0) r.key.library = "0.0.1";
    if (field == 1) r.key.nvrtc = "12.4";
    if (field == 2) r.key.templates = "0123";
    if (field == 3) r.key.device = "NVIDIA A100-SXM4-80GB";
    if (field == 4) r.key.driver = 12080;
    if (field == 5) r.key.arch = "sm_80";
    db.merge(r);
  }
  EXPECT_EQ(db.records().size(), 6u);
  const auto db_ptr = std::make_shared<const TuningDb>(db);
  EXPECT_EQ(with_tiles(spec, TunedFor{db_ptr, kGpu, 32768}).tiles, default_tiles(spec));
  // `cache warm` compiles other GPUs' winners (the target may be one), never other builds'.
  EXPECT_EQ(db.winners_for(spec), std::vector<Tiles>{(Tiles{64, 64, 4, 2})});
  TuningDb other_builds;
  for (int i = 0; i < 3; ++i) other_builds.merge(db.records()[std::size_t(i == 2 ? 5 : i)]);
  EXPECT_TRUE(other_builds.winners_for(spec).empty());
  // The same record under this build's key is used, for this GPU, driver and bucket only.
  TuningDb ours = db;
  ours.merge(record(spec, {{{64, 64, 4, 2}, 1.0, ""}}));
  const auto ours_ptr = std::make_shared<const TuningDb>(ours);
  EXPECT_EQ(with_tiles(spec, TunedFor{ours_ptr, kGpu, 20000}).tiles, (Tiles{64, 64, 4, 2}));
  EXPECT_EQ(with_tiles(spec, TunedFor{ours_ptr, kGpu, 70000}).tiles, default_tiles(spec)) << "another bucket";
  EXPECT_EQ(with_tiles(spec, TunedFor{ours_ptr, {"NVIDIA H200", 13000}, 20000}).tiles, default_tiles(spec));
  EXPECT_EQ(with_tiles(spec, std::nullopt).tiles, default_tiles(spec));
  EXPECT_EQ(ours.winners_for(spec), std::vector<Tiles>{(Tiles{64, 64, 4, 2})});
}

TEST(AutotuneDb, ATunedWinnerTheKernelRefusesFallsBackToTheHeuristic) {
  const codegen::KernelSpec spec = branch_kernel();
  TuningDb db;
  db.merge(record(spec, {{{128, 128, 4, 3}, 1.0, ""}}));  // a hand-edited winner: too many registers at D = 128
  EXPECT_EQ(with_tiles(spec, TunedFor{std::make_shared<const TuningDb>(db), kGpu, 32768}).tiles, default_tiles(spec));
}

TEST(AutotuneDb, WarmListsTunedWinnersBesideTheDefaults) {
  Workload w;
  w.config.segments = {2048, 4096};
  w.config.dilations = {1, 2};
  const std::vector<codegen::KernelSpec> plain = required_kernels(w);
  ASSERT_EQ(plain.size(), 3u);
  TuningDb db;
  db.merge(record(plain[1], {{{64, 64, 4, 2}, 1.0, ""}}, 1 << 20));
  db.merge(record(plain[1], {{{128, 64, 8, 2}, 1.0, ""}}, 1 << 20, {"NVIDIA H200", 13000}));
  db.merge(record(plain[1], {{{128, 32, 4, 3}, 1.0, ""}}, 1 << 10));  // the default: listed once
  w.warm_winners = std::make_shared<const TuningDb>(db);
  const std::vector<codegen::KernelSpec> warmed = required_kernels(w);
  ASSERT_EQ(warmed.size(), 5u);
  EXPECT_EQ(warmed[2].tiles, (Tiles{64, 64, 4, 2}));
  EXPECT_EQ(warmed[3].tiles, (Tiles{128, 64, 8, 2}));
  EXPECT_EQ(warmed[4].op, codegen::Op::finish_output);
  // A plan tuned for one GPU and length launches its winner.
  w.warm_winners = nullptr;
  w.tuned = TunedFor{std::make_shared<const TuningDb>(db), {"NVIDIA H200", 13000}, 1000000};
  EXPECT_EQ(forward_kernels(w)[1].tiles, (Tiles{128, 64, 8, 2}));
  EXPECT_EQ(forward_kernels(w)[0].tiles, default_tiles(plain[0])) << "the first branch was never tuned";
}

TEST(AutotuneDb, WonByPicksTheRecordsOfExportedKernels) {
  const codegen::KernelSpec a = branch_kernel(4096, 2), b = branch_kernel(8192, 4);
  TuningDb db;
  db.merge(record(a, {{{64, 64, 4, 2}, 1.0, ""}}));
  db.merge(record(b, {{{128, 32, 4, 3}, 1.0, ""}}));
  codegen::KernelSpec exported = a;
  exported.tiles = {64, 64, 4, 2};
  const auto shipped = db.won_by({exported.canonical(), b.canonical()});
  ASSERT_EQ(shipped.size(), 2u);
  exported.tiles = {128, 32, 4, 3};  // a's default, not its winner
  EXPECT_TRUE(db.won_by({exported.canonical()}).empty());
}
