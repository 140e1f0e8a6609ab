// The tuning database on disk: one file that tuners in several processes add to, never lost or
// half-written, and the switch that tells the runtime how to use it.
#include <gtest/gtest.h>

#include <sys/stat.h>

#include <cstdlib>
#include <fstream>
#include <thread>

#include "autotune/required_kernels.hpp"
#include "runtime/tuning_file.hpp"
#include "tests/support/expect_error.hpp"
#include "tests/support/temp_dir.hpp"

using namespace dilatron;
using namespace dilatron::autotune;

namespace {

codegen::KernelSpec branch_kernel(std::int64_t w = 4096) {
  Workload workload;
  workload.config.segments = {w};
  workload.config.dilations = {2};
  return forward_kernels(workload).back();
}

TuningRecord record(const codegen::KernelSpec& spec, std::vector<CandidateTiming> candidates) {
  TuningRecord r{tuning_key(spec, {"NVIDIA H100 80GB HBM3", 13000}, 32768), std::move(candidates), {}, "2026-11-23T00:00:00Z"};
  r.winner = *fastest(r.candidates);
  return r;
}

}  // namespace

TEST(AutotuneFile, StoresMergeUnderALockAndNeverLoseRecords) {
  test::TempDir tmp;
  const auto dir = tmp / "cache";
  EXPECT_TRUE(read_tuning(dir).records().empty()) << "no file: an empty database";
  std::vector<std::thread> writers;
  for (int i = 0; i < 8; ++i) {
    writers.emplace_back([&, i] { store_tuning(dir, {record(branch_kernel(1024 << i), {{{128, 32, 4, 3}, 1.0 + i, ""}})}); });
  }
  for (std::thread& t : writers) t.join();
  const TuningDb db = read_tuning(dir);
  EXPECT_EQ(db.records().size(), 8u);
  struct stat st {};
  ASSERT_EQ(stat(tuning_path(dir).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_FALSE(std::filesystem::exists(dir / "tuning.lock")) << "the lock file goes with its holder";
}

TEST(AutotuneFile, ADamagedFileIsReportedAndNeverOverwritten) {
  test::TempDir tmp;
  const auto dir = tmp / "cache";
  store_tuning(dir, {record(branch_kernel(), {{{128, 32, 4, 3}, 1.0, ""}})});
  std::string text;
  {
    std::ifstream in(tuning_path(dir));
    text.assign(std::istreambuf_iterator<char>(in), {});
  }
  const std::string damaged = text.substr(0, text.size() / 2);
  std::ofstream(tuning_path(dir), std::ios::trunc) << damaged;
  test::expect_error([&] { read_tuning(dir); }, {"tuning database", "tuning.json"});
  test::expect_error([&] { store_tuning(dir, {record(branch_kernel(64), {{{128, 64, 4, 3}, 1.0, ""}})}); },
                     {"nothing was written"});
  std::ifstream in(tuning_path(dir));
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(in), {}), damaged);
}

TEST(AutotuneFile, TheEnvironmentChoosesTheMode) {
  const char* saved = std::getenv("DILATRON_AUTOTUNE");
  const std::string restore = saved ? saved : "";
  unsetenv("DILATRON_AUTOTUNE");
  EXPECT_EQ(autotune_mode(), AutotuneMode::database);
  setenv("DILATRON_AUTOTUNE", "0", 1);
  EXPECT_EQ(autotune_mode(), AutotuneMode::off);
  setenv("DILATRON_AUTOTUNE", "1", 1);
  EXPECT_EQ(autotune_mode(), AutotuneMode::tune_missing);
  setenv("DILATRON_AUTOTUNE", "yes", 1);
  test::expect_error([] { autotune_mode(); }, {"DILATRON_AUTOTUNE='yes'"});
  if (saved) {
    setenv("DILATRON_AUTOTUNE", restore.c_str(), 1);
  } else {
    unsetenv("DILATRON_AUTOTUNE");
  }
}
