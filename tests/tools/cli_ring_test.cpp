// `dilatron run --ranks P` on the CPU as users run it: float64 gradients equal one rank's to rounding,
// many ranks run on the machine's threads, and a terminal sees the progress line.
#include <gtest/gtest.h>

#include <random>

#include "tests/support/cli.hpp"
#include "tests/support/npy_files.hpp"
#include "tests/support/random_case.hpp"

using namespace dilatron;
using namespace dilatron::test;

namespace {

// q, k, v, dO of [1, n, 2, 8] in dtype; returns the run command without --ranks and outputs.
std::string inputs(const TempDir& dir, std::int64_t n, DType dtype, const std::string& segments, double spread) {
  std::mt19937_64 rng{std::uint64_t(n)};
  for (const char* name : {"q", "k", "v", "do"}) {
    save_npy(dir / (std::string(name) + ".npy"), dtype, {1, n, 2, 8},
         random_tensor(n * 16, dtype, std::string(name) == "do" ? spread : 1.0, rng).data());
  }
  return fmt::format("run --q {0}/q.npy --k {0}/k.npy --v {0}/v.npy --segments {1} --dilations 1,2 --backward "
                     "--dout {0}/do.npy",
                     dir.path().string(), segments);
}

std::string outputs(const TempDir& dir, const std::string& tag) {
  return fmt::format(" --out {0}/o{1}.npy --dq {0}/dq{1}.npy --dk {0}/dk{1}.npy --dv {0}/dv{1}.npy", dir.path().string(), tag);
}

}  // namespace

// float64 in, float64 out: the travelling dK and dV are float64 too, also where float32 would overflow.
TEST(CliRing, Float64RanksEqualOneRankTo1e12) {
  for (const double spread : {1.0, 1e44}) {
    SCOPED_TRACE(spread);
    TempDir dir;
    const std::string run = inputs(dir, 96, DType::f64, "32,96", spread);
    ASSERT_EQ(run_cli(dir, run + " --ranks 1 -q" + outputs(dir, "1")).status, 0);
    for (const int ranks : {2, 3, 7}) {
      SCOPED_TRACE(ranks);
      const CliResult r = run_cli(dir, run + fmt::format(" --ranks {} -q", ranks) + outputs(dir, "p"));
      ASSERT_EQ(r.status, 0) << r.err;
      for (const char* name : {"o", "dq", "dk", "dv"}) {
        const std::vector<double> got = npy_values(dir / fmt::format("{}p.npy", name)), want = npy_values(dir / fmt::format("{}1.npy", name));
        for (double x : got) ASSERT_TRUE(std::isfinite(x)) << name;
        EXPECT_LE(relative_error(got, want), 1e-12) << name;
      }
    }
  }
}

TEST(CliRing, ManyRanksRunOnTheMachinesThreads) {
  TempDir dir;
  const std::string run = inputs(dir, 600, DType::f32, "600,300", 1.0);
  ASSERT_EQ(run_cli(dir, run + " --ranks 1 -q" + outputs(dir, "1")).status, 0);
  const CliResult r = run_cli(dir, run + " --ranks 600 -q" + outputs(dir, "p"));
  ASSERT_EQ(r.status, 0) << r.err;
  for (const char* name : {"o", "dq", "dk", "dv"}) {
    EXPECT_LE(relative_error(npy_values(dir / fmt::format("{}p.npy", name)), npy_values(dir / fmt::format("{}1.npy", name))), 1e-5)
        << name;
  }
}

// On a terminal (here a pseudo-terminal from script(1)) the ring draws the same progress line as one rank.
TEST(CliRing, ATerminalSeesTheProgressLine) {
  if (std::system("command -v script >/dev/null 2>&1") != 0) GTEST_SKIP() << "script(1) is not installed";
  TempDir dir;
  const std::string run = inputs(dir, 256, DType::f32, "256,128", 1.0);
  const std::string command = fmt::format("'{}' {} --ranks 4{}", cli_path(), run, outputs(dir, "p"));
  const std::string log = (dir / "tty.log").string();
  ASSERT_EQ(std::system(fmt::format("script -qec \"{}\" /dev/null >'{}' 2>&1", command, log).c_str()), 0) << slurp(log);
  const std::string seen = slurp(log);
  EXPECT_NE(seen.find("run (forward): 100%"), std::string::npos) << seen;
  EXPECT_NE(seen.find("run (backward): 100%"), std::string::npos) << seen;
}
