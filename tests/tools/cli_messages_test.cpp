// What the command line says when it is given something it cannot use: numbers quoted as given, lists
// parsed strictly, one rule for exit statuses across subcommands, and plans that flag what cannot fit.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <fstream>

#include "runtime/driver.hpp"
#include "tests/support/cli.hpp"

using namespace dilatron::test;

namespace {

struct Case {
  std::string args, needle;
  int status;
};

void expect_all(const TempDir& dir, const std::vector<Case>& cases) {
  for (const Case& c : cases) {
    SCOPED_TRACE(c.args);
    const CliResult r = run_cli(dir, c.args);
    EXPECT_EQ(r.status, c.status) << r.err;
    EXPECT_NE(r.err.find(c.needle), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "one line: " << r.err;
  }
}

const std::string kPlan = "plan --ranks 2 --seq-len 1024 --heads 2 --head-dim 64 ";

}  // namespace

TEST(CliMessages, ListsAndIntegersAreParsedStrictlyAndQuotedAsGiven) {
  TempDir dir;
  expect_all(dir, {
      {kPlan + "--dilations 1 --segments ''", "--segments: the list is empty", 2},
      {kPlan + "--dilations 1 --segments 9223372036854775808", "'9223372036854775808' is out of range", 2},
      {kPlan + "--dilations 1 --segments 256,", "'256,' has an empty item", 2},
      {kPlan + "--dilations 1 --segments 256,,512", "'256,,512' has an empty item", 2},
      {kPlan + "--dilations 1 --segments 0x10", "'0x10' is not an integer", 2},
      {kPlan + "--segments 64 --dilations 1e2", "'1e2' is not an integer", 2},
      {"plan --ranks 2 --seq-len 1e18 --heads 2 --head-dim 64 --segments 64 --dilations 1", "got '1e18'", 2},
      {"plan --ranks 2.5 --seq-len 1024 --heads 2 --head-dim 64 --segments 64 --dilations 1", "got '2.5'", 2},
      {"plan --ranks 4294967298 --seq-len 1024 --heads 2 --head-dim 64 --segments 64 --dilations 1",
       "got '4294967298'", 2},
      {"bench --segments 64 --dilations 1 --heads 1e3", "got '1e3'", 2},
      {"cache warm --arch sm_80 --segments 64 --dilations 1 --head-dim 64.0", "got '64.0'", 2},
      // Counts with a range say it, and quote the value as given.
      {"bench --segments 64 --dilations 1 --iters 1.5", "--iters: must be a whole number from 1 to 10000, got '1.5'", 2},
      {"bench --segments 64 --dilations 1 --dense-limit -1", "--dense-limit: must be from 0 to", 2},
      {"bench --segments 64 --dilations 1 --ranks 0", "--ranks: must be from 1 to 64, got '0'", 2},
      {"bench --segments 64 --dilations 1 --ranks 65", "--ranks: must be from 1 to 64, got '65'", 2},
      {"bench --segments 8 --dilations 1 --seq-len 8 --ranks 9", "--ranks 9 exceeds --seq-len 8", 2},
      {"bench --segments 64 --dilations 1 --head-dim 256 --backward", "head dim 256 has no GPU backward kernel", 2},
      {"bench --segments 64 --dilations 1 --packed 4,-1", "--packed[1] = -1: a length is 0 to 2147483647", 2},
      {"bench --segments 64 --dilations 1 --packed 0,0", "--packed sums to 0 rows", 2},
      {"bench --segments 64 --dilations 1 --packed 2147483647,1", "--packed sums to 2147483648 rows", 2},
      {"bench --segments 64 --dilations 1 --packed 4,5 --ranks 2", "the ring does not split packed batches", 2},
      {"bench --segments 64 --dilations 1 --packed 4,5 --batch 2", "--packed is one batch element", 2},
      {"tune --arch sm_80 --dry-run --segments 64 --dilations 1 --iters 5", "--iters: must be from 20 to 10000, got '5'", 2},
      {"cache warm --arch sm_80 --segments 64 --dilations 1 --jobs 0", "--jobs: must be from 1 to 256, got '0'", 2},
      {"demo --heads 1e2", "--heads: must be a whole number from 1 to 256, got '1e2'", 2},
      {"demo --seed -1", "--seed: must be from 0 to", 2},
  });
}

TEST(CliMessages, CommonDtypeSpellingsGetTheNameMeant) {
  TempDir dir;
  const std::string gen = "gen --segments 64 --dilations 1 --dtype ";
  expect_all(dir, {
      {gen + "fp16", "did you mean f16?", 2},
      {gen + "float16", "did you mean f16?", 2},
      {gen + "half", "did you mean f16?", 2},
      {gen + "bfloat16", "did you mean bf16?", 2},
      {gen + "float32", "did you mean bf16 or f16", 2},
      {gen + "int8", "int8 not in {bf16,f16}", 2},
  });
  EXPECT_EQ(run_cli(dir, gen + "int8").err.find("did you mean"), std::string::npos);
}

TEST(CliMessages, HelpAndBackwardMessagesSayItOnce) {
  TempDir dir;
  EXPECT_NE(run_cli(dir, "run --help").out.find("float64"), std::string::npos);
  std::ofstream(dir / "x.npy") << "x";
  const std::string x = (dir / "x.npy").string();
  const CliResult r = run_cli(dir, fmt::format("run --q {0} --k {0} --v {0} --segments 8 --dilations 1 --out {1} "
                                               "--backward --dq {2}",
                                               x, (dir / "o.npy").string(), (dir / "dq.npy").string()));
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("--backward needs --dout, --dq, --dk and --dv; missing: --dout, --dk, --dv"), std::string::npos)
      << r.err;
}

TEST(CliMessages, ConfigFileValuesAreTakenAsWritten) {
  TempDir dir;
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"({"segments": [64], "dilations": [1], "head_dim": 4294967360})", "head_dim = 4294967360: out of range"},
      {R"({"segments": [64], "dilations": [1], "head_dim": 64.9})", "head_dim = 64.9: not an integer"},
      {R"({"segments": [64.7], "dilations": [1]})", "segments[0] = 64.7: not an integer"},
      {R"({"segments": [1e300], "dilations": [1]})", "segments[0] = 1e+300: not an integer"},
      {R"({"segments": [64], "dilations": [18446744073709551615]})", "dilations[0] = 18446744073709551615: out of range"},
      {R"({"segments": 64, "dilations": [1]})", "segments = 64: expected a list"},
      // The element type as --dtype takes it: no silent aliases, no f32 for the GPU kernels.
      {R"({"segments": [64], "dilations": [1], "dtype": "fp16"})", "dtype fp16 not in {bf16,f16}; did you mean f16?"},
      {R"({"segments": [64], "dilations": [1], "dtype": "f32"})", "dtype f32 not in {bf16,f16}; did you mean bf16 or f16"},
  };
  for (const auto& [text, needle] : cases) {
    SCOPED_TRACE(text);
    std::ofstream(dir / "c.json") << text;
    const CliResult r = run_cli(dir, "gen --config " + (dir / "c.json").string());
    EXPECT_EQ(r.status, 1) << "a file's contents are the work's input: " << r.err;
    EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
  }
}

TEST(CliMessages, AMisspeltLogLevelIsWarnedAbout) {
  TempDir dir;
  const std::string plan = kPlan + "--segments 64 --dilations 1";
  const CliResult bad = run_cli(dir, plan, "DILATRON_LOG=verbose");
  EXPECT_EQ(bad.status, 0) << bad.err;
  EXPECT_EQ(bad.err, "dilatron warning: DILATRON_LOG=verbose: expected warn, info or debug; using warn\n");
  for (const char* level : {"warn", "info", "debug", ""}) {
    const CliResult good = run_cli(dir, plan, std::string("DILATRON_LOG=") + level);
    EXPECT_EQ(good.status, 0);
    EXPECT_EQ(good.err, "") << level;
  }
}

TEST(CliMessages, PlanModelFlagsAreBoundedAndRanksThatDoNotFitAreFlagged) {
  TempDir dir;
  expect_all(dir, {
      {kPlan + "--segments 64 --dilations 1 --network-gbs 1e-300", "--network-gbs: must be a number from 1e-09 to 1e+09, got '1e-300'", 2},
      {kPlan + "--segments 64 --dilations 1 --tflops 1e300", "--tflops", 2},
      {"plan --ranks 2 --seq-len 1024 --heads 2 --head-dim 1000000000 --segments 64 --dilations 1",
       "--head-dim: must be from 1 to 512", 2},
  });
  const CliResult slow = run_cli(dir, kPlan + "--segments 64 --dilations 1 --network-gbs 1e-9 --nvlink-gbs 1e-9 --tflops 1e-9");
  ASSERT_EQ(slow.status, 0) << slow.err;
  for (std::size_t begin = 0, end; (end = slow.out.find('\n', begin)) != std::string::npos; begin = end + 1) {
    EXPECT_LT(end - begin, 400u) << "a bounded line: " << slow.out.substr(begin, end - begin);
  }
  // 2^30 rows of 64 heads x 512 over 2 ranks: terabytes per rank.
  const std::string big = "plan --ranks 2 --seq-len 1073741824 --heads 64 --head-dim 512 --segments 1073741824 --dilations 1";
  const CliResult text = run_cli(dir, big);
  ASSERT_EQ(text.status, 0) << text.err;
  EXPECT_NE(text.out.find("warning: for the forward, 2 rank(s) of the ring need more than the 80 GB of one GPU"),
            std::string::npos) << text.out;
  // The backward keeps the whole spanning segment's blocks, whatever P: no P fits.
  EXPECT_NE(text.out.find("warning: for the backward, 2 rank(s)"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("larger schedules are too costly to search"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("TiB!"), std::string::npos) << text.out;
  const nlohmann::json j = nlohmann::json::parse(run_cli(dir, big + " --json").out);
  EXPECT_EQ(j.at("ranks_over_gpu_memory"), 2);
  EXPECT_FALSE(j.at("per_rank").at(0).at("fits_gpu_memory").get<bool>());
  const nlohmann::json roomy = nlohmann::json::parse(run_cli(dir, big + " --json --gpu-memory-gb 1e9").out);
  EXPECT_EQ(roomy.at("ranks_over_gpu_memory"), 0);
  const nlohmann::json small = nlohmann::json::parse(run_cli(dir, kPlan + "--segments 64 --dilations 1 --json").out);
  EXPECT_EQ(small.at("ranks_over_gpu_memory"), 0);
  const nlohmann::json decimal = nlohmann::json::parse(
      run_cli(dir, "plan --ranks 2 --seq-len 1024 --heads 010 --head-dim 64 --segments 64 --dilations 1 --json").out);
  EXPECT_EQ(decimal.at("shape").at("heads"), 10) << "digits are decimal, never octal";
  EXPECT_TRUE(small.at("per_rank").at(0).at("fits_gpu_memory").get<bool>());
}

// docs/CLI.md: 2 when the command line cannot run as given (checked before any work, files included:
// a missing input, an output that is a directory or in a missing directory); 1 when the work fails (a
// file that exists but holds the wrong thing, no GPU, a failed compile). No GPU is kind "cuda".
TEST(CliMessages, OneExitStatusRuleAcrossSubcommands) {
  TempDir dir;
  std::ofstream(dir / "bad.npy") << "not a numpy file";
  std::ofstream(dir / "bad.bundle") << "not a bundle";
  std::filesystem::create_directory(dir / "cache");
  std::filesystem::permissions(dir / "cache", std::filesystem::perms::owner_all);
  const std::string bad = (dir / "bad.npy").string(), missing = (dir / "missing.npy").string();
  const std::string cache = " --cache-dir " + (dir / "cache").string();
  const std::string run = fmt::format("run --segments 8 --dilations 1 --out {} ", (dir / "o.npy").string());
  expect_all(dir, {
      {run + fmt::format("--q {0} --k {0} --v {0}", missing), "missing.npy", 2},
      {run + fmt::format("--q {0} --k {0} --v {0}", bad), "bad magic", 1},
      {fmt::format("run --segments 8 --dilations 1 --q {0} --k {0} --v {0} --out {1}/no/o.npy", bad, dir.path().string()),
       "does not exist", 2},
      {"plan --ranks 2 --seq-len 1024 --heads 2 --head-dim 64 --segments 64", "--dilations", 2},
      {"gen --segments 64 --dilations 1 --kernel none_such", "matches none", 2},
      {"cache warm --arch sm_12 --segments 64 --dilations 1" + cache, "sm_12 is older than sm_80", 2},
      {"cache export " + dir.path().string() + cache, "is a directory", 2},
      {"cache export " + (dir / "no/b.bundle").string() + cache, "does not exist", 2},
      {"cache import " + (dir / "missing.bundle").string() + cache, "missing.bundle", 2},
      {"cache import " + (dir / "bad.bundle").string() + cache, "not a Dilatron cache bundle", 1},
      {"info --bogus", "--bogus", 2},
      {"demo --seq-len 0", "--seq-len", 2},
      {"tune --segments 64 --dilations 1 --batch 0", "--batch", 2},
      {"bench --segments 64 --dilations 1 --iters 0", "--iters", 2},
  });
  if (!dilatron::driver::probe().devices.empty()) GTEST_SKIP() << "the rest needs a machine without a GPU";
  for (const std::string& args : {std::string("tune --segments 64 --dilations 1 --head-dim 64 --json"),
                                  std::string("bench --segments 64 --dilations 1 --seq-len 128 --head-dim 64 --json"),
                                  fmt::format("run --device cuda --segments 8 --dilations 1 --q {0} --k {0} --v {0} "
                                              "--out {1}", bad, (dir / "o.npy").string())}) {
    SCOPED_TRACE(args);
    const CliResult r = run_cli(dir, args);
    EXPECT_EQ(r.status, 1) << r.err;
    if (args.starts_with("run")) {
      EXPECT_NE(r.err.find("--device cuda"), std::string::npos) << r.err;
      continue;  // run has no --json: the stderr line is the report
    }
    const nlohmann::json j = nlohmann::json::parse(r.out);
    EXPECT_EQ(j.at("error").at("kind"), "cuda") << r.out;
    EXPECT_EQ(j.at("error").at("exit_status"), 1);
  }
}
