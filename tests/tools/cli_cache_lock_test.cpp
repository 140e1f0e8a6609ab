// Processes that warm one empty cache at once (the ranks of a job starting together) compile each
// kernel once between them: the rest wait on its lock file and then find it on disk.
#include <gtest/gtest.h>

#include <regex>
#include <thread>

#include "tests/support/cli.hpp"

using namespace dilatron::test;

TEST(CliCacheLock, ConcurrentWarmsCompileEachKernelOnceInTotal) {
  // Three kernels (attention for w64 r1, then the merging launches for w128 r2 and w256 r4), so the
  // processes meet on several keys.
  const std::string config = "--arch sm_80 --segments 64,128,256 --dilations 1,2,4 --head-dim 64 --dtype f16 --causal";
  constexpr int kProcesses = 4;
  TempDir tmp;
  const std::string cache = " --cache-dir '" + (tmp / "cache").string() + "'";
  // One dump directory per process: a dump is named after the kernel, so two processes compiling the
  // same kernel into one directory would leave one file and hide the duplicate.
  std::vector<CliResult> results(kProcesses, CliResult{-1, {}, {}});
  std::vector<std::unique_ptr<TempDir>> logs;
  for (int i = 0; i < kProcesses; ++i) logs.push_back(std::make_unique<TempDir>());
  std::vector<std::thread> processes;
  for (int i = 0; i < kProcesses; ++i) {
    const std::string dump = "DILATRON_JIT_DUMP='" + (tmp / ("dump" + std::to_string(i))).string() + "'";
    processes.emplace_back([&, i, dump] { results[i] = run_cli(*logs[i], "cache warm --jobs 1 " + config + cache, dump); });
  }
  for (std::thread& p : processes) p.join();

  int kernels = -1, compiled = 0, hits = 0;
  const std::regex summary(R"((\d+) kernels for sm_80 in .*: (\d+) compiled, (\d+) hits, 0 failed)");
  for (const CliResult& r : results) {
    ASSERT_EQ(r.status, 0) << r.err;
    std::smatch m;
    ASSERT_TRUE(std::regex_search(r.out, m, summary)) << r.out;
    kernels = std::stoi(m[1]);
    compiled += std::stoi(m[2]);
    hits += std::stoi(m[3]);
  }
  EXPECT_EQ(kernels, 4);  // three branches into the accumulator, then finish_output
  EXPECT_EQ(compiled, kernels) << "each kernel compiled by exactly one process";
  EXPECT_EQ(hits, kernels * (kProcesses - 1));

  int sources = 0;
  for (int i = 0; i < kProcesses; ++i) {
    const auto dump = tmp / ("dump" + std::to_string(i));
    if (!std::filesystem::exists(dump)) continue;
    for (const auto& item : std::filesystem::directory_iterator(dump)) sources += item.path().extension() == ".cu";
  }
  EXPECT_EQ(sources, kernels) << "one NVRTC compile per kernel across all processes";

  const CliResult verify = run_cli(tmp, "cache verify" + cache);
  EXPECT_EQ(verify.status, 0) << verify.err;
  for (const auto& item : std::filesystem::directory_iterator(tmp / "cache")) {
    EXPECT_EQ(item.path().extension(), ".kernel") << "left behind: " << item.path();
  }
}
