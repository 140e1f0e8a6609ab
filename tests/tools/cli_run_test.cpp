// `dilatron run` end to end as a user runs it: .npy files in, .npy files out, compared with the
// independent dense implementation of the definition; bad inputs fail cleanly and write nothing.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <random>

#include <nlohmann/json.hpp>

#include "codegen/templates.hpp"
#include "common/atomic_file.hpp"
#include "runtime/driver.hpp"
#include "tests/support/cli.hpp"
#include "tests/support/npy_files.hpp"
#include "tests/support/random_case.hpp"
#include "tests/support/temp_dir.hpp"
#include "tools/npy.hpp"

using namespace dilatron;
using namespace dilatron::test;

namespace {

// Writes q, k, v of the case into dir and returns the flags naming them and the config.
std::string write_inputs(const TempDir& dir, RandomCase& c) {
  save_npy(dir / "q.npy", c.dtype, {c.B, c.N, c.H, c.D}, c.q.data());
  save_npy(dir / "k.npy", c.dtype, {c.B, c.N, c.Hkv, c.D}, c.k.data());
  save_npy(dir / "v.npy", c.dtype, {c.B, c.N, c.Hkv, c.D}, c.v.data());
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
  fill_inputs(c, rng, 1.5);
  return c;
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
    EXPECT_LE(relative_error(npy_values(lse), want.lse, 1.0), 1e-5);
    if (c.dtype == DType::f32) {
      EXPECT_LE(relative_error(npy_values(o), want.out), 1e-5);
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
  save_npy(dir / "k3.npy", DType::f32, {1, 16, 3, 4}, c.q.data());
  save_npy(dir / "k_short.npy", DType::f32, {1, 15, 2, 4}, c.k.data());
  save_npy(dir / "empty.npy", DType::f32, {1, 0, 2, 4}, c.k.data());
  std::ofstream(dir / "corrupt.npy") << "\x93NUMPY garbage";
  const std::string base = fmt::format("run --q '{}' --out '{}' --lse '{}'", q, (dir / "o.npy").string(),
                                       (dir / "lse.npy").string());
  auto kv = [&](const char* k_name, const char* v_name) {
    return fmt::format(" --k '{}' --v '{}'", (dir / k_name).string(), (dir / v_name).string());
  };
  const std::string good_kv = kv("k.npy", "v.npy");
  struct Bad {
    std::string args, needle;
    int status;  // 2: the command line cannot run; 1: the inputs are wrong
  };
  const std::vector<Bad> bad = {
      {base + good_kv + " --segments 8,16 --dilations 1", "dilations has 1", 2},
      {base + good_kv + " --segments 0 --dilations 1", "segments[0] = 0", 2},
      {base + good_kv + " --segments 8 --dilations 0", "dilations[0] = 0", 2},
      {base + good_kv + " --segments 8,x --dilations 1,2", "--segments: 'x' is not an integer", 2},
      {base + good_kv + " --segments 8 --dilations 1.5", "--dilations: '1.5' is not an integer", 2},
      {base + good_kv + " --segments 8 --dilations 1 --scale 0", "scale", 2},
      {base + good_kv + " --segments 8 --dilations 1 --mode dense", "dense not in", 2},
      {base + good_kv + " --segments 8 --dilations 1 --device tpu", "--device", 2},
      {base + kv("missing.npy", "v.npy") + " --segments 8 --dilations 1", "missing.npy", 2},
      {base + " --v '" + (dir / "v.npy").string() + "' --segments 8 --dilations 1", "--k", 2},
      {base + kv("k.npy", "k_short.npy") + " --segments 8 --dilations 1", "differ", 1},
      {base + kv("k_short.npy", "k_short.npy") + " --segments 8 --dilations 1", "does not match q shape", 1},
      {base + kv("k3.npy", "k3.npy") + " --segments 8 --dilations 1", "must divide", 1},
      {base + kv("empty.npy", "empty.npy") + " --segments 8 --dilations 1", "N (dim 1) must be >= 1", 1},
      {base + kv("corrupt.npy", "v.npy") + " --segments 8 --dilations 1", "corrupt.npy", 1},
  };
  const auto before = std::distance(std::filesystem::directory_iterator(dir.path()), {});
  for (const Bad& b : bad) {
    SCOPED_TRACE(b.args);
    const CliResult r = run_cli(dir, b.args);
    EXPECT_EQ(r.status, b.status) << r.err;
    EXPECT_NE(r.err.find(b.needle), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "one line: " << r.err;
    EXPECT_TRUE(r.out.empty()) << r.out;
    EXPECT_FALSE(std::filesystem::exists(dir / "o.npy"));
    EXPECT_FALSE(std::filesystem::exists(dir / "lse.npy"));
    EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path()), {}), before) << "left a file behind";
  }
}

TEST(CliRun, NeverOverwritesAnInputOrLosesAnOutput) {
  TempDir dir;
  RandomCase c = make_case(11, 1, 16, 2, 2, 4, DType::f32, make_config({8}, {1}, Mode::longnet, false));
  const std::string args = write_inputs(dir, c);
  std::filesystem::create_directory(dir / "sub");
  std::filesystem::create_symlink(dir / "q.npy", dir / "sub" / "link.npy");
  std::filesystem::create_hard_link(dir / "k.npy", dir / "hard.npy");
  const std::string q_before = slurp(dir / "q.npy"), k_before = slurp(dir / "k.npy");
  auto path = [&](const char* name) { return fmt::format("'{}'", (dir / name).string()); };
  const std::vector<std::pair<std::string, std::string>> refused = {
      {" --out " + path("q.npy"), "--out " + (dir / "q.npy").string() + " is the input given as --q"},
      {" --out " + path("sub/../v.npy"), "is the input given as --v"},
      {" --out " + path("sub/link.npy"), "is the input given as --q"},
      {" --out " + path("hard.npy"), "is the input given as --k"},
      {" --out " + path("o.npy") + " --lse " + path("k.npy"), "--lse"},
      {" --out " + path("o.npy") + " --lse " + path("sub/../o.npy"), "--out and --lse name the same file"},
      {" --out " + path("sub"), "is a directory"},
      {" --out " + path("nowhere/o.npy"), "does not exist"},
      {" --out " + path("q.npy/o.npy"), "does not exist"},
  };
  for (const auto& [outputs, needle] : refused) {
    SCOPED_TRACE(outputs);
    const CliResult r = run_cli(dir, args + outputs);
    EXPECT_EQ(r.status, 2) << r.err;
    EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
    EXPECT_EQ(slurp(dir / "q.npy"), q_before);
    EXPECT_EQ(slurp(dir / "k.npy"), k_before);
    EXPECT_FALSE(std::filesystem::exists(dir / "o.npy"));
  }
}

TEST(CliRun, ChecksOutputsBeforeReadingAnyInput) {
  // The inputs here are broken too, so an error about the output proves it was found first.
  TempDir dir;
  std::ofstream(dir / "q.npy") << "\x93NUMPY garbage";
  const std::string inputs = fmt::format(" --q '{0}' --k '{0}' --v '{0}' --segments 8 --dilations 1", (dir / "q.npy").string());
  const CliResult missing_dir = run_cli(dir, "run" + inputs + " --out '" + (dir / "no/o.npy").string() + "'");
  EXPECT_EQ(missing_dir.status, 2);
  EXPECT_NE(missing_dir.err.find("does not exist"), std::string::npos) << missing_dir.err;
  // Not writable even for root: the kernel's own /proc.
  const CliResult unwritable = run_cli(dir, "run" + inputs + " --out /proc/o.npy");
  EXPECT_EQ(unwritable.status, 1);
  EXPECT_NE(unwritable.err.find("cannot create a temporary file for /proc/o.npy"), std::string::npos) << unwritable.err;
}

TEST(CliRun, SummarizesUnlessQuiet) {
  TempDir dir;
  RandomCase c = make_case(12, 1, 24, 2, 1, 4, DType::f16, make_config({8, 24}, {1, 2}, Mode::longnet, true));
  const std::string args = write_inputs(dir, c) + " --out '" + (dir / "o.npy").string() + "'";
  const CliResult loud = run_cli(dir, args);
  ASSERT_EQ(loud.status, 0) << loud.err;
  EXPECT_NE(loud.out.find("wrote " + (dir / "o.npy").string() + " [1,24,2,4] f16: 2 branch(es)"), std::string::npos)
      << loud.out;
  EXPECT_EQ(std::count(loud.out.begin(), loud.out.end(), '\n'), 1) << loud.out;
  EXPECT_TRUE(loud.err.empty()) << "no progress line without a terminal: " << loud.err;
  const std::string first = slurp(dir / "o.npy");
  const CliResult quiet = run_cli(dir, args + " --quiet");
  ASSERT_EQ(quiet.status, 0) << quiet.err;
  EXPECT_TRUE(quiet.out.empty() && quiet.err.empty()) << quiet.out << quiet.err;
  EXPECT_EQ(slurp(dir / "o.npy"), first) << "an existing output is replaced whole";
}

TEST(CliRun, CudaDeviceExplainsWhatIsMissing) {
  TempDir dir;
  RandomCase c = make_case(10, 1, 8, 2, 2, 4, DType::f32, make_config({8}, {1}, Mode::longnet, false));
  const CliResult r = run_cli(dir, write_inputs(dir, c) + " --device cuda --out '" + (dir / "o.npy").string() + "'");
  EXPECT_NE(r.status, 0);
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_FALSE(std::filesystem::exists(dir / "o.npy"));
}

// `--device emulator` runs the GPU kernels on the CPU against the host reference; with
// DILATRON_TEMPLATES_DIR they come from an editable copy of the templates, read at every run, so an edit
// shows on the next run without rebuilding anything.
TEST(CliRun, EmulatorRunsTheKernelsFromAnEditableTemplateCopy) {
  TempDir dir;
  for (const codegen::TemplateFile& f : codegen::embedded_template_files()) {
    std::filesystem::create_directories((dir / "templates" / std::string(f.name)).parent_path());
    std::ofstream(dir / "templates" / std::string(f.name), std::ios::binary) << f.text;
  }
  const std::string env = fmt::format("DILATRON_CACHE_DIR='{}' DILATRON_TEMPLATES_DIR='{}'", (dir / "cache").string(),
                                      (dir / "templates").string());
  RandomCase c = make_case(14, 1, 96, 4, 2, 64, DType::f16, make_config({32, 96}, {1, 2}, Mode::longnet, true));
  const std::string args = write_inputs(dir, c);
  auto run = [&](const std::string& device, const std::string& out) {
    return run_cli(dir, args + " --device " + device + " --out '" + (dir / out).string() + "'", env);
  };
  ASSERT_EQ(run("cpu", "cpu.npy").status, 0);
  const CliResult emulated = run("emulator", "emu.npy");
  ASSERT_EQ(emulated.status, 0) << emulated.err;
  EXPECT_NE(emulated.out.find("on the emulated device"), std::string::npos) << emulated.out;
  const std::vector<double> want = npy_values(dir / "cpu.npy"), got = npy_values(dir / "emu.npy");
  double diff = 0, norm = 0;
  for (std::size_t i = 0; i < want.size(); ++i) diff += (got[i] - want[i]) * (got[i] - want[i]), norm += want[i] * want[i];
  EXPECT_LE(std::sqrt(diff / norm), 3e-3);

  const auto attention = dir / "templates/dilatron/attention.cuh";
  const std::string original = slurp(attention);
  std::ofstream(attention, std::ios::app) << "\n#error this attention.cuh was edited\n";
  const CliResult broken = run("emulator", "broken.npy");
  EXPECT_EQ(broken.status, 1);
  EXPECT_NE(broken.err.find("this attention.cuh was edited"), std::string::npos) << broken.err;
  EXPECT_FALSE(std::filesystem::exists(dir / "broken.npy"));
  std::ofstream(attention, std::ios::binary | std::ios::trunc) << original;
  ASSERT_EQ(run("emulator", "again.npy").status, 0);
  EXPECT_EQ(slurp(dir / "again.npy"), slurp(dir / "emu.npy"));

  const CliResult typo = run("gpu", "typo.npy");
  EXPECT_EQ(typo.status, 2);
  EXPECT_NE(typo.err.find("did you mean cuda?"), std::string::npos) << typo.err;
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

TEST(Cli, ExitStatusSaysWhoseFaultItIs) {
  TempDir dir;
  const CliResult typo = run_cli(dir, "runn --q x");
  EXPECT_EQ(typo.status, 2);
  EXPECT_NE(typo.err.find("unknown subcommand 'runn' for dilatron; did you mean 'run'?"), std::string::npos) << typo.err;
  const CliResult nested = run_cli(dir, "cache lss");
  EXPECT_EQ(nested.status, 2);
  EXPECT_NE(nested.err.find("unknown subcommand 'lss' for dilatron cache; did you mean 'ls'?"), std::string::npos)
      << nested.err;
  EXPECT_EQ(run_cli(dir, "").status, 2) << "a subcommand is required";
  EXPECT_EQ(run_cli(dir, "run --bogus").status, 2);
  EXPECT_EQ(run_cli(dir, "--version").status, 0);
  const CliResult help = run_cli(dir, "--help");
  EXPECT_EQ(help.status, 0);
  EXPECT_NE(help.out.find("Exit status"), std::string::npos) << help.out;

  // bench checks its flags before it looks for a GPU, so these are usage errors on any machine.
  const std::string bench = "bench --segments 64 --dilations 1 --seq-len 128";
  for (const auto& [flags, needle] : std::vector<std::pair<std::string, std::string>>{
           {" --heads 16 --kv-heads 3", "--kv-heads 3 does not divide --heads 16"},
           {" --head-dim 32", "head_dim 32"},
           {" --dtype f32", "f32 not in"},
           {" --iters 0", "--iters"},
           {" --mode head_groups --segments 64,128 --dilations 1,2 --heads 1", "at least one head per branch"}}) {
    const CliResult r = run_cli(dir, bench + flags);
    EXPECT_EQ(r.status, 2) << flags << ": " << r.err;
    EXPECT_NE(r.err.find(needle), std::string::npos) << flags << ": " << r.err;
  }
}

TEST(Cli, JsonOutputStaysJsonOnError) {
  TempDir dir;
  const nlohmann::json info = nlohmann::json::parse(run_cli(dir, "info --json").out);
  for (const char* key : {"version", "nvrtc", "driver", "devices", "cache_dir", "tuning"}) EXPECT_TRUE(info.contains(key)) << key;
  EXPECT_EQ(info["nvrtc"]["available"], true) << "the toolkit's NVRTC is on this machine: " << info.dump();

  const CliResult usage = run_cli(dir, "cache ls --json --cache-dir ''");
  EXPECT_EQ(usage.status, 2);
  const nlohmann::json usage_error = nlohmann::json::parse(usage.out);
  EXPECT_EQ(usage_error["error"]["kind"], "usage");
  EXPECT_EQ(usage_error["error"]["exit_status"], 2);
  EXPECT_NE(usage_error["error"]["message"].get<std::string>().find("--cache-dir"), std::string::npos);

  if (dilatron::driver::probe().devices.empty()) {
    const CliResult no_gpu = run_cli(dir, "bench --json --segments 64 --dilations 1 --seq-len 128");
    EXPECT_EQ(no_gpu.status, 1);
    EXPECT_EQ(nlohmann::json::parse(no_gpu.out)["error"]["kind"], "cuda") << no_gpu.out;
    EXPECT_EQ(std::count(no_gpu.err.begin(), no_gpu.err.end(), '\n'), 1) << no_gpu.err;
  }
}

TEST(CliRun, RanksSplitTheSequenceAndAgreeWithOneRank) {
  TempDir dir;
  RandomCase c = make_case(13, 2, 45, 4, 2, 8, DType::f32, make_config({8, 32, 64}, {1, 2, 4}, Mode::longnet, true));
  const std::string args = write_inputs(dir, c);
  auto run = [&](const std::string& extra, const char* out, const char* lse) {
    return run_cli(dir, args + extra + " --quiet --out '" + (dir / out).string() + "' --lse '" + (dir / lse).string() + "'");
  };
  ASSERT_EQ(run("", "o1.npy", "l1.npy").status, 0);
  for (int ranks : {2, 3, 7}) {
    SCOPED_TRACE(ranks);
    const CliResult r = run(fmt::format(" --ranks {}", ranks), "on.npy", "ln.npy");
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_LE(relative_error(npy_values(npy::load(dir / "on.npy")), npy_values(npy::load(dir / "o1.npy"))), 1e-6);
    EXPECT_LE(relative_error(npy_values(npy::load(dir / "ln.npy")), npy_values(npy::load(dir / "l1.npy")), 1.0), 1e-6);
  }
  for (const auto& [extra, needle] : std::vector<std::pair<std::string, std::string>>{
           {" --ranks 0", "--ranks"}, {" --ranks 46", "--ranks 46 exceeds the 45 rows"}}) {
    const CliResult r = run(extra, "bad.npy", "bad_lse.npy");
    EXPECT_EQ(r.status, 2) << extra << ": " << r.err;
    EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
    EXPECT_FALSE(std::filesystem::exists(dir / "bad.npy"));
  }
}

// A packed batch (--cu-seqlens, int64 as numpy saves by default) equals each sequence run alone, O, LSE
// and the gradients; sequences of 1 row, fewer than the smallest segment, an empty one and one longer
// than the largest segment.
TEST(CliRun, PackedBatchEqualsEverySequenceRunAlone) {
  TempDir dir;
  const std::vector<std::int64_t> cu{0, 1, 6, 6, 40};
  RandomCase c = make_case(14, 1, cu.back(), 4, 2, 8, DType::f32, make_config({8, 16}, {1, 3}, Mode::longnet, true));
  const std::string args = write_inputs(dir, c);
  save_offsets_npy(dir / "cu.npy", cu);
  std::mt19937_64 rng(15);
  const auto dout = random_tensor(c.N * c.H * c.D, DType::f32, 1.0, rng);
  save_npy(dir / "do.npy", DType::f32, {1, c.N, c.H, c.D}, dout.data());
  const auto outputs = [&](const std::string& tag) {
    return fmt::format(" --quiet --out '{0}/{1}o.npy' --lse '{0}/{1}l.npy' --backward --dout '{0}/{1}do.npy' --dq "
                       "'{0}/{1}dq.npy' --dk '{0}/{1}dk.npy' --dv '{0}/{1}dv.npy'",
                       dir.path().string(), tag);
  };
  std::filesystem::copy_file(dir / "do.npy", dir / "packed_do.npy");
  const CliResult packed = run_cli(dir, args + fmt::format(" --cu-seqlens '{}'", (dir / "cu.npy").string()) + outputs("packed_"));
  ASSERT_EQ(packed.status, 0) << packed.err;
  const auto rows_of = [](const std::vector<double>& t, std::int64_t row, std::int64_t begin, std::int64_t end) {
    return std::vector<double>(t.begin() + begin * row, t.begin() + end * row);
  };
  for (std::size_t s = 0; s + 1 < cu.size(); ++s) {
    const std::int64_t begin = cu[s], end = cu[s + 1];
    if (begin == end) continue;
    SCOPED_TRACE(fmt::format("sequence [{}, {})", begin, end));
    RandomCase alone = c;
    alone.N = end - begin;
    const std::size_t q_row = std::size_t(c.H * c.D) * 4, kv_row = std::size_t(c.Hkv * c.D) * 4;
    alone.q.assign(c.q.begin() + std::ptrdiff_t(begin * q_row), c.q.begin() + std::ptrdiff_t(end * q_row));
    alone.k.assign(c.k.begin() + std::ptrdiff_t(begin * kv_row), c.k.begin() + std::ptrdiff_t(end * kv_row));
    alone.v.assign(c.v.begin() + std::ptrdiff_t(begin * kv_row), c.v.begin() + std::ptrdiff_t(end * kv_row));
    TempDir one;
    const std::string one_args = write_inputs(one, alone);
    save_npy(one / "alone_do.npy", DType::f32, {1, alone.N, c.H, c.D}, dout.data() + begin * q_row);
    const CliResult r = run_cli(one, one_args + fmt::format(" --quiet --out '{0}/alone_o.npy' --lse '{0}/alone_l.npy' "
                                                            "--backward --dout '{0}/alone_do.npy' --dq '{0}/alone_dq.npy' "
                                                            "--dk '{0}/alone_dk.npy' --dv '{0}/alone_dv.npy'",
                                                            one.path().string()));
    ASSERT_EQ(r.status, 0) << r.err;
    for (const auto& [name, row] : {std::pair{"o", c.H * c.D}, std::pair{"dq", c.H * c.D}, std::pair{"dk", c.Hkv * c.D},
                                    std::pair{"dv", c.Hkv * c.D}}) {
      EXPECT_LE(relative_error(rows_of(npy_values(dir / fmt::format("packed_{}.npy", name)), row, begin, end),
                               npy_values(one / fmt::format("alone_{}.npy", name))),
                1e-6)
          << name;
    }
    const std::vector<double> lse = npy_values(dir / "packed_l.npy"), want = npy_values(one / "alone_l.npy");
    for (std::int64_t h = 0; h < c.H; ++h) {
      for (std::int64_t n = 0; n < alone.N; ++n) {
        EXPECT_NEAR(lse[std::size_t(h * c.N + begin + n)], want[std::size_t(h * alone.N + n)], 1e-6);
      }
    }
  }
}

// Every bad packing is one line, exit 1 (bad data) or 2 (a command line that cannot run), and no file.
TEST(CliRun, BadPackingsFailWithOneLineAndWriteNothing) {
  TempDir dir;
  RandomCase c = make_case(16, 1, 20, 2, 2, 4, DType::f32, make_config({8}, {1}, Mode::longnet, false));
  const std::string args = write_inputs(dir, c);
  save_offsets_npy<std::int32_t>(dir / "down.npy", {0, 12, 9, 20});
  save_offsets_npy<std::int32_t>(dir / "short.npy", {0, 12, 19});
  save_offsets_npy<std::int32_t>(dir / "late.npy", {3, 12, 20});
  save_offsets_npy<std::int32_t>(dir / "one.npy", {0});
  save_offsets_npy<std::int64_t>(dir / "huge.npy", {0, std::int64_t(1) << 40, 20});
  save_offsets_npy<std::int32_t>(dir / "square.npy", {0, 10, 10, 20}, {2, 2});
  save_npy(dir / "float.npy", DType::f32, {1, 1, 1, 3}, c.q.data());
  RandomCase two = make_case(17, 2, 10, 2, 2, 4, DType::f32, c.config);
  TempDir batched;
  const std::string two_args = write_inputs(batched, two);
  save_offsets_npy<std::int32_t>(dir / "good.npy", {0, 10, 20});
  const auto packed = [&](const std::string& base, const char* file) {
    return base + fmt::format(" --cu-seqlens '{}' --out '{}'", (dir / file).string(), (dir / "o.npy").string());
  };
  const std::vector<std::tuple<std::string, std::string, int>> bad = {
      {packed(args, "down.npy"), "cu_seqlens[2] = 9 is below cu_seqlens[1] = 12", 1},
      {packed(args, "short.npy"), "cu_seqlens ends at 19 but the packed tensors hold 20 rows", 1},
      {packed(args, "late.npy"), "cu_seqlens[0] = 3", 1},
      {packed(args, "one.npy"), "cu_seqlens has 1 entries", 1},
      {packed(args, "huge.npy"), "entry 1 = 1099511627776 does not fit the int32", 1},
      {packed(args, "square.npy"), "offsets are one dimension", 1},
      {packed(args, "float.npy"), "expected little-endian int32 '<i4' or int64 '<i8'", 1},
      {packed(args, "missing.npy"), "--cu-seqlens", 2},
      {packed(two_args, "good.npy"), "q has B = 2", 1},
      {packed(args, "good.npy") + " --ranks 2", "the ring does not split packed batches", 2},
  };
  const auto before = std::distance(std::filesystem::directory_iterator(dir.path()), {});
  for (const auto& [command, needle, status] : bad) {
    SCOPED_TRACE(command);
    const CliResult r = run_cli(dir, command);
    EXPECT_EQ(r.status, status) << r.err;
    EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "one line: " << r.err;
    EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path()), {}), before) << "left a file behind";
  }
  const CliResult over = run_cli(dir, args + fmt::format(" --cu-seqlens '{0}' --out '{0}'", (dir / "good.npy").string()));
  EXPECT_EQ(over.status, 2) << over.err;
  EXPECT_NE(over.err.find("refusing to overwrite an input"), std::string::npos) << over.err;
}
