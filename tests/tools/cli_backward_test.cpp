// `dilatron run --backward` as an operator meets it: gradients written next to O, equal to finite
// differences of the dense definition, and command lines that cannot run refused before any work.
#include <gtest/gtest.h>

#include <random>

#include "common/atomic_file.hpp"
#include "common/dtype.hpp"
#include "tests/support/cli.hpp"
#include "tests/support/npy_files.hpp"
#include "tests/support/finite_differences.hpp"
#include "tests/support/random_case.hpp"
#include "tools/npy.hpp"

using namespace dilatron;
using namespace dilatron::test;

namespace {

void write_npy(const std::filesystem::path& path, const std::vector<std::int64_t>& shape, const std::vector<std::byte>& data,
               DType dtype = DType::f32) {
  save_npy(path, dtype, shape, data.data());
}

std::string flags_of(const RandomCase& c) {
  std::string text = fmt::format(" --segments {} --dilations {} --mode {}", fmt::join(c.config.segments, ","),
                                 fmt::join(c.config.dilations, ","), to_string(c.config.mode));
  if (c.config.causal) text += " --causal";
  if (c.config.scale) text += fmt::format(" --scale {:.17g}", *c.config.scale);
  return text;
}

}  // namespace

TEST(CliBackward, GradientsEqualFiniteDifferencesOfTheDefinition) {
  TempDir dir;
  std::mt19937_64 rng(33);
  for (int trial = 0; trial < 9; ++trial) {
    RandomCase c = random_case(rng);
    if (c.dtype != DType::f32 || c.B * c.N * c.H * c.D > 240 || c.N > 30) {
      --trial;
      continue;
    }
    SCOPED_TRACE(fmt::format("trial {}: {}", trial, c.describe()));
    const std::vector<std::int64_t> qs{c.B, c.N, c.H, c.D}, ks{c.B, c.N, c.Hkv, c.D};
    const std::vector<std::byte> dout = random_tensor(c.B * c.N * c.H * c.D, DType::f32, 1.0, rng);
    write_npy(dir / "q.npy", qs, c.q);
    write_npy(dir / "k.npy", ks, c.k);
    write_npy(dir / "v.npy", ks, c.v);
    write_npy(dir / "do.npy", qs, dout);
    for (const char* name : {"o.npy", "dq.npy", "dk.npy", "dv.npy"}) std::filesystem::remove(dir / name);
    // One rank, then the ring over the Host transport.
    const int ranks = int(std::min<std::int64_t>(1 + trial % 3, c.N));
    const CliResult r = run_cli(dir, fmt::format("run --q {0}/q.npy --k {0}/k.npy --v {0}/v.npy --out {0}/o.npy --backward "
                                                 "--dout {0}/do.npy --dq {0}/dq.npy --dk {0}/dk.npy --dv {0}/dv.npy --ranks {1}",
                                                 dir.path().string(), ranks) +
                                         flags_of(c));
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_NE(r.out.find("and the gradients"), std::string::npos) << r.out;
    EXPECT_EQ(npy::load(dir / "dk.npy").shape, ks);
    const Dense x = c.dense();
    std::vector<double> g(std::size_t(c.B * c.N * c.H * c.D));
    for (std::size_t i = 0; i < g.size(); ++i) g[i] = load_element(dout.data(), DType::f32, std::int64_t(i));
    EXPECT_LE(relative_error(npy_values(dir / "dq.npy"), finite_differences(c.config, x, &Dense::q, g), kFiniteDifferenceFloor), 1e-4);
    EXPECT_LE(relative_error(npy_values(dir / "dk.npy"), finite_differences(c.config, x, &Dense::k, g), kFiniteDifferenceFloor), 1e-4);
    EXPECT_LE(relative_error(npy_values(dir / "dv.npy"), finite_differences(c.config, x, &Dense::v, g), kFiniteDifferenceFloor), 1e-4);
  }
}

TEST(CliBackward, CommandLinesThatCannotRunAreRefusedFirst) {
  TempDir dir;
  std::mt19937_64 rng(1);
  const std::vector<std::byte> q = random_tensor(1 * 16 * 2 * 8, DType::f32, 1.0, rng);
  const std::vector<std::byte> small = random_tensor(1 * 16 * 1 * 8, DType::f32, 1.0, rng);
  write_npy(dir / "q.npy", {1, 16, 2, 8}, q);
  write_npy(dir / "k.npy", {1, 16, 2, 8}, q);
  write_npy(dir / "do.npy", {1, 16, 2, 8}, q);
  write_npy(dir / "bad_do.npy", {1, 16, 1, 8}, small);
  const std::string d = dir.path().string();
  const std::string base = fmt::format("run --q {0}/q.npy --k {0}/k.npy --v {0}/k.npy --out {0}/o.npy --segments 8 --dilations 2", d);
  const std::string grads = fmt::format(" --dq {0}/dq.npy --dk {0}/dk.npy --dv {0}/dv.npy", d);
  struct Case {
    std::string args;
    const char* says;
  };
  for (const Case& c : {Case{fmt::format(" --backward --dout {}/do.npy --dq {}/dq.npy", d, d), "missing: --dk, --dv"},
                        Case{" --dq " + d + "/dq.npy", "go with --backward"},
                        Case{fmt::format(" --backward --dout {0}/do.npy --dq {0}/o.npy --dk {0}/dk.npy --dv {0}/dv.npy", d), "--dq"}}) {
    const CliResult r = run_cli(dir, base + c.args);
    EXPECT_EQ(r.status, 2) << c.args << ": " << r.err;
    EXPECT_NE(r.err.find(c.says), std::string::npos) << c.args << ": " << r.err;
  }
  const CliResult wrong = run_cli(dir, base + fmt::format(" --backward --dout {}/bad_do.npy", d) + grads);
  EXPECT_EQ(wrong.status, 1);
  EXPECT_NE(wrong.err.find("dout shape [1,16,1,8] must equal q shape [1,16,2,8]"), std::string::npos) << wrong.err;
  for (const char* name : {"o.npy", "dq.npy", "dk.npy", "dv.npy"}) {
    EXPECT_FALSE(std::filesystem::exists(dir / name)) << name << ": a failed run writes nothing";
  }
}
