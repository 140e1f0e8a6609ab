// `dilatron plan` as a user runs it, and the cost model behind it: per-rank figures are the plan's,
// FLOPs add up to the single-device count, and bad flags fail with one line and status 2.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <random>
#include <sstream>

#include <dilatron/kv_cache.hpp>

#include "runtime/problem.hpp"
#include "runtime/ring/plan.hpp"
#include "tests/support/cli.hpp"
#include "tests/support/ring_case.hpp"
#include "tests/support/temp_dir.hpp"
#include "tools/ring_model.hpp"

using namespace dilatron;
using namespace dilatron::test;
using namespace dilatron::cli;
using i64 = std::int64_t;

namespace {

std::string flags_of(const RingCase& a) {
  std::string s = fmt::format("plan --ranks {} --seq-len {} --heads {} --kv-heads {} --head-dim {} --batch {} --dtype {} "
                              "--segments {} --dilations {} --mode {}",
                              a.ranks, a.shape.seq_len, a.shape.heads, a.shape.kv_heads, a.shape.head_dim, a.shape.batch,
                              to_string(a.shape.dtype), fmt::join(a.config.segments, ","),
                              fmt::join(a.config.dilations, ","), to_string(a.config.mode));
  return a.config.causal ? s + " --causal" : s;
}

nlohmann::json run_json(const TempDir& dir, const std::string& args) {
  const CliResult r = run_cli(dir, args + " --json");
  EXPECT_EQ(r.status, 0) << args << "\n" << r.err;
  return nlohmann::json::parse(r.out);
}

// The pairs a rank attends: among its own rows, then with each block it receives.
double attended(const ring::Schedule& s, const ring::RankPlan& rp) {
  double pairs = local_pairs(s, rp.rows);
  for (const ring::Compute& c : rp.computes) pairs += c.pairs;
  return pairs;
}

}  // namespace

// Every attended pair is counted once across the ranks: locally or with exactly one received block.
TEST(RingModel, FlopsOfAllRanksAddUpToTheSingleDeviceCount) {
  std::mt19937_64 rng(17);
  for (int trial = 0; trial < 300; ++trial) {
    const RingCase a = random_ring_case(rng, 300, 12);
    const ring::RingPlan plan = ring::make_ring_plan(a.config, a.shape, a.ranks);
    double pairs = 0;
    for (const ring::RankPlan& rp : plan.per_rank) pairs += attended(plan, rp);
    ASSERT_EQ(pairs, double(attended_pairs(a.config, a.shape.seq_len, a.shape.heads))) << flags_of(a);
    double flops = 0;
    for (const RankCost& c : ring_costs(plan, {})) flops += c.flops;
    ASSERT_EQ(flops, 4.0 * double(a.shape.head_dim * a.shape.batch) * pairs) << flags_of(a);
  }
}

// A million ranks of 1024 rows (a billion tokens): the costs come one rank plan at a time from the schedule.
// With w = 3072 every segment is exactly three ranks, so each rank sends its rows to two peers and
// receives two blocks; a second branch of w = 5000 makes groups of every alignment, and still every
// pair is counted once and every byte sent is received.
TEST(RingModel, AMillionRanksCostWhatTheirSchedulesSay) {
  const int ranks = 3 * 333334;  // a whole number of three-rank segments
  const i64 n = i64(ranks) * 1024;
  Config aligned;
  aligned.segments = {3072};
  aligned.dilations = {1};
  const ring::Shape shape{1, n, 2, 1, 64, DType::bf16};
  const ring::Schedule one = ring::make_schedule(aligned, shape, ranks);
  EXPECT_EQ(one.steps, 2);
  const std::vector<RankCost> costs = ring_costs(one, {});
  ASSERT_EQ(costs.size(), std::size_t(ranks));
  const i64 block = 1024 * 2 * 64 * 2;  // rows x (K, V) x D x bf16, one kv head
  for (const RankCost& c : costs) {
    ASSERT_EQ(c.send_bytes, 2 * block) << "rank " << c.rank;
    ASSERT_EQ(c.recv_bytes, 2 * block) << "rank " << c.rank;
    ASSERT_EQ(c.steps, 2) << "rank " << c.rank;
    // Two heads each attend all 3072 x 3072 pairs of the segment, a third of them per rank.
    ASSERT_EQ(c.flops, 4.0 * 64 * 2 * 1024 * 3072) << "rank " << c.rank;
  }

  Config mixed = aligned;
  mixed.segments.push_back(5000);
  mixed.dilations.push_back(4);
  mixed.causal = true;
  const ring::Schedule two = ring::make_schedule(mixed, shape, ranks);
  double flops = 0;
  i64 sent = 0, received = 0;
  for (const RankCost& c : ring_costs(two, {})) flops += c.flops, sent += c.send_bytes, received += c.recv_bytes;
  EXPECT_EQ(flops, 4.0 * 64 * double(attended_pairs(mixed, n, 2)));
  EXPECT_EQ(sent, received);
  EXPECT_GT(sent, 0);
}

// Over several ranks the ring adds its memory-bound passes (clearing and finishing its fp32
// accumulator) at --hbm-gbs; one rank is DilatedAttention's call and adds none.
TEST(RingModel, TheRingsOwnPassesCostTheirBytesAtMemoryBandwidth) {
  Config config;
  config.segments = {64};
  config.dilations = {1};
  const ring::Shape shape{2, 256, 4, 2, 64, DType::bf16};
  for (const int ranks : {1, 4}) {  // segments of 64 rows never span shards of 64: nothing moves
    const ring::Schedule s = ring::make_schedule(config, shape, ranks);
    for (const double hbm : {1000.0, 2000.0}) {
      LinkModel model;
      model.hbm_gbs = hbm;
      for (const RankCost& c : ring_costs(s, model)) {
        const double accumulator = 2.0 * 64 * 4 * (64 + 1) * 4, finish = 2.0 * 64 * 4 * (64 * 2 + 4);
        const double bytes = ranks == 1 ? 0 : 2 * accumulator + finish;
        const double want = c.flops / (model.tflops * 1e9) + bytes / (hbm * 1e6);
        EXPECT_NEAR(c.predicted_ms, want, 1e-9 * want) << ranks << " ranks";
        EXPECT_EQ(c.send_bytes, 0);
      }
    }
  }
}

TEST(CliPlan, JsonPerRankFiguresAreThePlans) {
  TempDir dir;
  std::mt19937_64 rng(23);
  for (int trial = 0; trial < 8; ++trial) {
    const RingCase a = random_ring_case(rng, 300, 12);
    SCOPED_TRACE(flags_of(a));
    const nlohmann::json j = run_json(dir, flags_of(a));
    const ring::RingPlan plan = ring::make_ring_plan(a.config, a.shape, a.ranks);
    EXPECT_EQ(j.at("ranks"), a.ranks);
    EXPECT_EQ(j.at("steps"), plan.steps);
    ASSERT_EQ(j.at("per_rank").size(), std::size_t(a.ranks));
    i64 moved = 0;
    double slowest = 0;
    for (const ring::RankPlan& rp : plan.per_rank) {
      const nlohmann::json& r = j.at("per_rank").at(std::size_t(rp.rank));
      EXPECT_EQ(r.at("rank"), rp.rank);
      EXPECT_EQ(r.at("rows"), rp.rows.size());
      EXPECT_EQ(r.at("send_bytes"), rp.send_bytes);
      EXPECT_EQ(r.at("recv_bytes"), rp.recv_bytes);
      EXPECT_EQ(r.at("memory_bytes"), rp.memory_bytes);
      EXPECT_EQ(r.at("backward_memory_bytes"), rp.backward_memory_bytes);
      EXPECT_EQ(r.at("backward_fits_gpu_memory"), double(rp.backward_memory_bytes) <= 80e9);
      EXPECT_EQ(r.at("flops").get<double>(), 4.0 * double(a.shape.head_dim * a.shape.batch) * attended(plan, rp));
      moved += rp.send_bytes;
      slowest = std::max(slowest, r.at("predicted_ms").get<double>());
      const nlohmann::json& g = j.at("all_gather").at("per_rank").at(std::size_t(rp.rank));
      const i64 kv_row = a.shape.kv_heads * a.shape.head_dim * 2 * 2 * a.shape.batch;
      EXPECT_EQ(g.at("recv_bytes"), (a.shape.seq_len - rp.rows.size()) * kv_row);
      EXPECT_EQ(g.at("flops"), r.at("flops"));
    }
    EXPECT_EQ(j.at("bytes_moved"), moved);
    EXPECT_EQ(j.at("predicted_ms"), slowest);
    EXPECT_EQ(j.at("model").at("tflops"), 300.0);
    EXPECT_EQ(j.at("model").at("gpus_per_node"), 8);
  }
}

// One branch over the sequence with dilation r, every kv head read at one offset: the ring moves each
// rank's rows to every other rank as the all-gather does, but only 1 in r of them.
// When a rank does not fit --gpu-memory-gb, plan names the smallest P at which every rank does, for the
// forward and for the backward: the first P, counting up, whose ranks all fit.
TEST(CliPlan, NamesTheSmallestRankCountThatFits) {
  TempDir dir;
  Config config;
  config.segments = {2048, 8192};
  config.dilations = {1, 4};
  const ring::Shape shape{1, 32768, 4, 2, 64, DType::bf16};
  const auto most = [&](int ranks) {
    const ring::RingPlan plan = ring::make_ring_plan(config, shape, ranks);
    std::pair<i64, i64> m{0, 0};
    for (const ring::RankPlan& rp : plan.per_rank) {
      m.first = std::max(m.first, rp.memory_bytes), m.second = std::max(m.second, rp.backward_memory_bytes);
    }
    return m;
  };
  const double limit = double(most(7).first);  // fits the forward at 7 ranks, not the backward
  int forward = 0, backward = 0;
  for (int p = 3; !forward || !backward; ++p) {
    if (!forward && double(most(p).first) <= limit) forward = p;
    if (!backward && double(most(p).second) <= limit) backward = p;
  }
  const std::string flags = fmt::format("plan --ranks 2 --seq-len 32768 --heads 4 --kv-heads 2 --head-dim 64 "
                                        "--segments 2048,8192 --dilations 1,4 --gpu-memory-gb {}", limit / 1e9);
  const nlohmann::json j = run_json(dir, flags);
  EXPECT_EQ(j.at("ranks_over_gpu_memory"), 2);
  EXPECT_EQ(j.at("smallest_fitting_ranks").at("forward"), forward);
  EXPECT_EQ(j.at("smallest_fitting_ranks").at("backward"), backward);
  EXPECT_GT(backward, forward);
  const CliResult text = run_cli(dir, flags);
  ASSERT_EQ(text.status, 0) << text.err;
  EXPECT_NE(text.out.find(fmt::format("for the forward, 2 rank(s) of the ring need more than the {:.4g} GB", limit / 1e9)),
            std::string::npos) << text.out;
  EXPECT_NE(text.out.find(fmt::format("the smallest P at which every rank fits is {}", backward)), std::string::npos)
      << text.out;
  // Enough memory: nothing to say, and the given P is the one to use.
  const nlohmann::json roomy = run_json(dir, "plan --ranks 2 --seq-len 32768 --heads 4 --head-dim 64 --segments 2048 "
                                             "--dilations 1 --gpu-memory-gb 80");
  EXPECT_EQ(roomy.at("smallest_fitting_ranks").at("forward"), 2);
  EXPECT_EQ(roomy.at("ranks_over_gpu_memory_backward"), 0);
}

TEST(CliPlan, AllGatherMovesRTimesMoreForOneDilatedBranch) {
  TempDir dir;
  for (const auto& [ranks, r] : {std::pair{4, 2}, std::pair{8, 4}, std::pair{16, 3}}) {
    const i64 n = i64(ranks) * r * 64;
    const nlohmann::json j = run_json(
        dir, fmt::format("plan --ranks {} --seq-len {} --heads {} --head-dim 128 --segments {} --dilations {}", ranks, n,
                         2 * r, n, r));
    const nlohmann::json& gather = j.at("all_gather");
    EXPECT_GT(j.at("bytes_moved").get<i64>(), 0);
    EXPECT_EQ(gather.at("bytes_moved").get<i64>(), r * j.at("bytes_moved").get<i64>()) << ranks << " ranks, r = " << r;
    for (int p = 0; p < ranks; ++p) {
      EXPECT_EQ(gather.at("per_rank")[std::size_t(p)].at("recv_bytes").get<i64>(),
                r * j.at("per_rank")[std::size_t(p)].at("recv_bytes").get<i64>());
    }
  }
}

// Two ranks of two rows, one dense branch, every figure 1: each rank attends 4 pairs locally and 4
// with the 8-byte block it receives (16 FLOPs each at D = 1). At 1000 FLOP/s and 1000 B/s across
// nodes: ring = 16 ms + max(16, 8) ms; all-gather = 8 ms transfer + 32 ms compute.
TEST(CliPlan, PredictedTimesFollowTheStatedModel) {
  TempDir dir;  // --hbm-gbs 1e9: the ring's memory-bound passes cost nothing here (their own test above)
  const nlohmann::json j = run_json(dir,
                                    "plan --ranks 2 --seq-len 4 --heads 1 --head-dim 1 --dtype f16 --segments 4 "
                                    "--dilations 1 --tflops 1e-9 --hbm-gbs 1e9 --gpus-per-node 1 --network-gbs 1e-6 --nvlink-gbs 1");
  for (int p = 0; p < 2; ++p) {
    EXPECT_EQ(j.at("per_rank")[p].at("recv_bytes"), 8);
    EXPECT_DOUBLE_EQ(j.at("per_rank")[p].at("flops").get<double>(), 32);
    EXPECT_NEAR(j.at("per_rank")[p].at("predicted_ms").get<double>(), 32, 1e-9);
    EXPECT_NEAR(j.at("all_gather").at("per_rank")[p].at("predicted_ms").get<double>(), 40, 1e-9);
  }
  EXPECT_NEAR(j.at("predicted_ms").get<double>(), 32, 1e-9);
  // On one node the same 8 bytes move at 1 GB/s: compute alone sets the pace.
  const nlohmann::json fast = run_json(dir,
                                       "plan --ranks 2 --seq-len 4 --heads 1 --head-dim 1 --dtype f16 --segments 4 "
                                       "--dilations 1 --tflops 1e-9 --hbm-gbs 1e9 --gpus-per-node 2 --network-gbs 1e-6 --nvlink-gbs 1");
  EXPECT_NEAR(fast.at("predicted_ms").get<double>(), 32, 1e-9);
  EXPECT_NEAR(fast.at("all_gather").at("predicted_ms").get<double>(), 32 + 8e-6, 1e-9);
}

TEST(CliPlan, TextIsATablePerRankWithTotals) {
  TempDir dir;
  const CliResult r = run_cli(dir, "plan --ranks 4 --seq-len 4096 --heads 8 --kv-heads 2 --head-dim 64 "
                                   "--segments 1024,4096 --dilations 1,4 --causal");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.err, "");
  std::istringstream lines(r.out);
  std::string line;
  int rank_rows = 0;
  while (std::getline(lines, line)) {
    std::istringstream fields(line);
    int rank = -1;
    i64 rows = 0;
    if (fields >> rank >> rows && rows == 1024) ++rank_rows;
  }
  EXPECT_EQ(rank_rows, 4) << r.out;
  EXPECT_NE(r.out.find("3 exchange step(s)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("total: the ring moves"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("bytes moved, ring / all-gather = 0.25 (the all-gather moves 4x more)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("max(step compute, step transfer)"), std::string::npos) << r.out;
}

// --decode: the KV cache's bytes are what a DilatedKVCache of the shape allocates; for the LongNet
// preset (H = 16, D = 128, bf16) 90.7 MiB per batch row, as docs/CLI.md states, at any context.
TEST(CliPlan, DecodeSizesTheKVCacheAsItAllocates) {
  TempDir dir;
  const std::string preset = "plan --decode --causal --segments 2048,4096,8192,16384,32768 --dilations 1,2,4,6,12 "
                             "--heads 16 --head-dim 128 --batch 2";
  Config config;
  config.segments = {2048, 4096, 8192, 16384, 32768};
  config.dilations = {1, 2, 4, 6, 12};
  config.causal = true;
  for (const auto& [kv_heads, mib] : {std::pair{16, 90.7}, std::pair{4, 33.3}}) {
    SCOPED_TRACE(kv_heads);
    const DilatedKVCache cache(config, {2, 16, kv_heads, 128, DType::bf16});
    for (const i64 context : {1000, 1 << 20}) {
      const nlohmann::json j = run_json(dir, preset + fmt::format(" --kv-heads {} --seq-len {}", kv_heads, context));
      EXPECT_EQ(j["cache_bytes"].get<i64>(), i64(cache.bytes()));
      EXPECT_EQ(j["cache_bytes_per_row"].get<i64>(), i64(cache.bytes() / 2));
      EXPECT_NEAR(double(cache.bytes() / 2) / (1 << 20), mib, 0.05);
      EXPECT_EQ(j["full_history_bytes_per_row"].get<i64>(), 2 * kv_heads * 128 * 2 * context);
      EXPECT_EQ(j["largest_segment_window_bytes_per_row"].get<i64>(), 2 * kv_heads * 128 * 2 * 32768);
    }
  }
  const CliResult text = run_cli(dir, preset + " --seq-len 1048576");
  ASSERT_EQ(text.status, 0) << text.err;
  EXPECT_NE(text.out.find("90.7 MiB per batch row, 181.3 MiB for 2 row(s)"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("8.0 GiB per batch row (90.3x)"), std::string::npos) << text.out;
  for (const auto& [args, needle] : {std::pair{std::string("plan --decode --seq-len 10 --heads 4 --head-dim 8 --segments 4 "
                                                           "--dilations 1"), "add --causal"},
                                     std::pair{std::string("plan --decode --causal --ranks 2 --seq-len 10 --heads 4 "
                                                           "--head-dim 8 --segments 4 --dilations 1"), "drop --ranks"},
                                     std::pair{std::string("plan --decode --causal --seq-len 10 --heads 4 --kv-heads 3 "
                                                           "--head-dim 8 --segments 4 --dilations 1"), "does not divide"},
                                     std::pair{std::string("plan --decode --causal --seq-len 10 --heads 4 --head-dim 8 "
                                                           "--segments 4,8 --dilations 1"), "dilations has 1"}}) {
    const CliResult r = run_cli(dir, args);
    EXPECT_EQ(r.status, 2) << args << "\n" << r.err;
    EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
  }
}

TEST(CliPlan, BadFlagsExitTwoWithOneLine) {
  TempDir dir;
  const std::string shape = "--seq-len 10 --heads 4 --head-dim 64";
  const std::pair<std::string, std::string> cases[] = {
      {"plan --ranks 0 " + shape + " --segments 4 --dilations 1", "--ranks"},
      {"plan --ranks 11 " + shape + " --segments 4 --dilations 1", "ranks = 11"},
      {"plan --ranks 2 " + shape + " --kv-heads 3 --segments 4 --dilations 1", "kv_heads = 3"},
      {"plan --ranks 2 " + shape + " --segments 4,8 --dilations 1", "dilations has 1"},
      {"plan --ranks 2 " + shape + " --segments 0 --dilations 1", "segments[0] = 0"},
      {"plan --ranks 2 " + shape + " --segments 4 --dilations 1 --dtype f32", "--dtype"},
      {"plan --ranks 2 " + shape + " --segments 4 --dilations 1 --mode sideways", "--mode"},
      {"plan --ranks 2 " + shape + " --segments 4 --dilations 1 --tflops 0", "--tflops"},
      {"plan --ranks 2 " + shape + " --segments 4 --dilations 1 --network-gbs nan", "--network-gbs"},
      {"plan " + shape + " --segments 4 --dilations 1", "--ranks"},
      {"plan --ranks 2 --seq-len 10 --heads 2 --head-dim 8 --segments 4,4,4 --dilations 1,2,3 --mode head_groups",
       "2 heads, 3 branches"},
      {"plan --ranks 16777217 --seq-len 99999999 --heads 1 --head-dim 8 --segments 4 --dilations 1", "--ranks"},
      // One segment over a million ranks: a trillion messages, refused before any is costed.
      {"plan --ranks 1000000 --seq-len 1000000 --heads 1 --head-dim 8 --segments 1000000 --dilations 1",
       "segments spanning up to 1000000 ranks"},
  };
  for (const auto& [args, needle] : cases) {
    const CliResult r = run_cli(dir, args);
    EXPECT_EQ(r.status, 2) << args << "\n" << r.err;
    EXPECT_EQ(r.out, "") << args;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << args << "\n" << r.err;
    EXPECT_EQ(r.err.rfind("dilatron: error: ", 0), 0u) << r.err;
    EXPECT_NE(r.err.find(needle), std::string::npos) << args << "\n" << r.err;
    const CliResult j = run_cli(dir, args + " --json");
    EXPECT_EQ(j.status, 2);
    EXPECT_EQ(nlohmann::json::parse(j.out).at("error").at("exit_status"), 2) << j.out;
  }
}
