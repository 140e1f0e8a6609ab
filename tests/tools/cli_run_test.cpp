// `dilatron run` end to end as a user runs it: .npy files in, .npy files out, compared with the
// independent dense implementation of the definition; bad inputs fail cleanly and write nothing.
#include <gtest/gtest.h>

#include <fstream>
#include <random>

#include "common/atomic_file.hpp"
#include "tests/support/cli.hpp"
#include "tests/support/random_case.hpp"
#include "tests/support/temp_dir.hpp"
#include "tools/npy.hpp"

using namespace dilatron;
using namespace dilatron::test;

namespace {

void save(const std::filesystem::path& path, DType dtype, std::vector<std::int64_t> shape, const void* data) {
  AtomicFile file(path);
  npy::write(file, dtype, shape, data);
  file.commit();
}

// Writes q, k, v of the case into dir and returns the flags naming them and the config.
std::string write_inputs(const TempDir& dir, RandomCase& c) {
  save(dir / "q.npy", c.dtype, {c.B, c.N, c.H, c.D}, c.q.data());
  save(dir / "k.npy", c.dtype, {c.B, c.N, c.Hkv, c.D}, c.k.data());
  save(dir / "v.npy", c.dtype, {c.B, c.N, c.Hkv, c.D}, c.v.data());
  std::string args = fmt::format("run --q '{}' --k '{}' --v '{}' --segments {} --dilations {} --mode {}",
                                 (dir / "q.npy").string(), (dir / "k.npy").string(), (dir / "v.npy").string(),
                                 fmt::join(c.config.segments, ","), fmt::join(c.config.dilations, ","),
                                 to_string(c.config.mode));
  if (c.config.causal) args += " --causal";
  if (c.config.scale) args += fmt::format(" --scale {:.17g}", *c.config.scale);
  return args;
}

RandomCase make_case(std::uint64_t seed, std::int64_t B, std::int64_t N, std::int64_t H, std::int64_t Hkv,
                     std::int64_t D, DType dtype, Config config) {
  std::mt19937_64 rng(seed);
  RandomCase c;
  c.B = B, c.N = N, c.H = H, c.Hkv = Hkv, c.D = D, c.dtype = dtype, c.config = std::move(config);
  c.q = random_tensor(B * N * H * D, dtype, 1.5, rng);
  c.k = random_tensor(B * N * Hkv * D, dtype, 1.5, rng);
  c.v = random_tensor(B * N * Hkv * D, dtype, 1.0, rng);
  return c;
}

Config make_config(std::vector<std::int64_t> w, std::vector<std::int64_t> r, Mode mode, bool causal,
                   std::optional<double> scale = {}) {
  Config c;
  c.segments = std::move(w);
  c.dilations = std::move(r);
  c.mode = mode;
  c.causal = causal;
  c.scale = scale;
  return c;
}

std::vector<double> decode(const npy::Array& a) {
  std::vector<double> out(std::size_t(a.numel()));
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = load_element(a.data.data(), a.dtype, std::int64_t(i));
  return out;
}

}  // namespace

TEST(CliRun, AgreesWithTheDenseDefinition) {
  const std::vector<RandomCase> cases = {
      make_case(1, 2, 37, 4, 2, 8, DType::f32, make_config({8, 16, 37}, {1, 2, 4}, Mode::longnet, false)),
      make_case(2, 1, 41, 6, 3, 5, DType::f32, make_config({16, 12}, {6, 5}, Mode::longnet, true, 0.3)),
      make_case(3, 1, 29, 5, 5, 4, DType::f32, make_config({4, 8, 29}, {1, 3, 7}, Mode::head_groups, true)),
      make_case(4, 2, 23, 4, 1, 6, DType::f32, make_config({10, 3}, {4, 5}, Mode::head_groups, false, 0.7)),
      make_case(5, 1, 53, 8, 2, 16, DType::f16, make_config({16, 32, 53}, {1, 2, 6}, Mode::longnet, true)),
      make_case(6, 1, 31, 4, 4, 8, DType::f16, make_config({8, 31}, {3, 2}, Mode::head_groups, false)),
  };
  for (RandomCase c : cases) {
    SCOPED_TRACE(c.describe());
    TempDir dir;
    const std::string args = write_inputs(dir, c) + fmt::format(" --device cpu --out '{}' --lse '{}'",
                                                                 (dir / "o.npy").string(), (dir / "lse.npy").string());
    const CliResult r = run_cli(dir, args);
    ASSERT_EQ(r.status, 0) << r.err;
    const npy::Array o = npy::load(dir / "o.npy"), lse = npy::load(dir / "lse.npy");
    ASSERT_EQ(o.dtype, c.dtype) << "O must be in Q's dtype";
    ASSERT_EQ(o.shape, (std::vector<std::int64_t>{c.B, c.N, c.H, c.D}));
    ASSERT_EQ(lse.dtype, DType::f32);
    ASSERT_EQ(lse.shape, (std::vector<std::int64_t>{c.B, c.H, c.N}));
    const DenseResult want = dense_attention(c.config, c.dense());
    EXPECT_LE(relative_error(decode(lse), want.lse, 1.0), 1e-5);
    if (c.dtype == DType::f32) {
      EXPECT_LE(relative_error(decode(o), want.out), 1e-5);
    } else {
      // float16 O: every element is the float64 answer rounded to float16, within one unit in the last place.
      for (std::size_t i = 0; i < want.out.size(); ++i) {
        const int got = reinterpret_cast<const std::uint16_t*>(o.data.data())[i];
        const int expected = float_to_half_bits(float(want.out[i]));
        ASSERT_LE(std::abs(got - expected), 1) << "element " << i;
      }
    }
  }
}

TEST(CliRun, BadInputsFailWithOneLineAndWriteNothing) {
  TempDir dir;
  RandomCase c = make_case(9, 1, 16, 4, 2, 4, DType::f32, make_config({8}, {2}, Mode::longnet, false));
  write_inputs(dir, c);
  const auto q = (dir / "q.npy").string();
  save(dir / "k3.npy", DType::f32, {1, 16, 3, 4}, c.q.data());
  save(dir / "k_short.npy", DType::f32, {1, 15, 2, 4}, c.k.data());
  save(dir / "empty.npy", DType::f32, {1, 0, 2, 4}, c.k.data());
  std::ofstream(dir / "corrupt.npy") << "\x93NUMPY garbage";
  const std::string base = fmt::format("run --q '{}' --out '{}' --lse '{}'", q, (dir / "o.npy").string(),
                                       (dir / "lse.npy").string());
  auto kv = [&](const char* k_name, const char* v_name) {
    return fmt::format(" --k '{}' --v '{}'", (dir / k_name).string(), (dir / v_name).string());
  };
  const std::string good_kv = kv("k.npy", "v.npy");
  const std::vector<std::pair<std::string, std::string>> bad = {
      {base + good_kv + " --segments 8,16 --dilations 1", "dilations has 1"},
      {base + good_kv + " --segments 0 --dilations 1", "segments[0] = 0"},
      {base + good_kv + " --segments 8 --dilations 0", "dilations[0] = 0"},
      {base + good_kv + " --segments 8,x --dilations 1,2", "'x' is not an integer"},
      {base + good_kv + " --segments 8 --dilations 1.5", "'1.5' is not an integer"},
      {base + good_kv + " --segments 8 --dilations 1 --scale 0", "scale"},
      {base + good_kv + " --segments 8 --dilations 1 --mode dense", "'dense'"},
      {base + good_kv + " --segments 8 --dilations 1 --device tpu", "--device"},
      {base + kv("k.npy", "k_short.npy") + " --segments 8 --dilations 1", "differ"},
      {base + kv("k_short.npy", "k_short.npy") + " --segments 8 --dilations 1", "does not match q shape"},
      {base + kv("k3.npy", "k3.npy") + " --segments 8 --dilations 1", "must divide"},
      {base + kv("empty.npy", "empty.npy") + " --segments 8 --dilations 1", "N (dim 1) must be >= 1"},
      {base + kv("corrupt.npy", "v.npy") + " --segments 8 --dilations 1", "corrupt.npy"},
      {base + kv("missing.npy", "v.npy") + " --segments 8 --dilations 1", "missing.npy"},
      {base + " --v '" + (dir / "v.npy").string() + "' --segments 8 --dilations 1", "--k"},
  };
  const auto before = std::distance(std::filesystem::directory_iterator(dir.path()), {});
  for (const auto& [args, needle] : bad) {
    SCOPED_TRACE(args);
    const CliResult r = run_cli(dir, args);
    EXPECT_NE(r.status, 0);
    EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "one line: " << r.err;
    EXPECT_FALSE(std::filesystem::exists(dir / "o.npy"));
    EXPECT_FALSE(std::filesystem::exists(dir / "lse.npy"));
    EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path()), {}), before) << "left a file behind";
  }
}

TEST(CliRun, CudaDeviceExplainsWhatIsMissing) {
  TempDir dir;
  RandomCase c = make_case(10, 1, 8, 2, 2, 4, DType::f32, make_config({8}, {1}, Mode::longnet, false));
  const CliResult r = run_cli(dir, write_inputs(dir, c) + " --device cuda --out '" + (dir / "o.npy").string() + "'");
  EXPECT_NE(r.status, 0);
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_FALSE(std::filesystem::exists(dir / "o.npy"));
}

TEST(Cli, InfoDemoAndHelpRunOnAnyMachine) {
  TempDir dir;
  const CliResult info = run_cli(dir, "info");
  ASSERT_EQ(info.status, 0) << info.err;
  EXPECT_NE(info.out.find("NVRTC"), std::string::npos) << info.out;
  EXPECT_NE(info.out.find("cache dir"), std::string::npos) << info.out;
  const CliResult demo = run_cli(dir, "demo --seq-len 256 --heads 4 --kv-heads 2 --head-dim 16");
  ASSERT_EQ(demo.status, 0) << demo.err;
  EXPECT_NE(demo.out.find("segments 32,64,128,256"), std::string::npos) << demo.out;
  const CliResult help = run_cli(dir, "run --help");
  EXPECT_EQ(help.status, 0);
  EXPECT_NE(help.out.find("--segments"), std::string::npos);
  EXPECT_NE(run_cli(dir, "").status, 0) << "a subcommand is required";
}
