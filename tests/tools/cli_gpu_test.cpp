// `dilatron run --device cuda` (one GPU, and --ranks 3 on it) keeps the cpu contract: same files in, same files out, results within the
// GPU tolerance of the host reference. Skipped without a GPU; on the emulated device (DILATRON_DEVICE=emulator)
// the commands take `--device emulator` instead.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <random>

#include "autotune/required_kernels.hpp"
#include "runtime/tuning_file.hpp"
#include "common/atomic_file.hpp"
#include "common/env.hpp"
#include "runtime/driver.hpp"
#include "runtime/tuning.hpp"
#include "tests/support/cli.hpp"
#include "tests/support/npy_files.hpp"
#include "tests/support/random_case.hpp"
#include "tools/npy.hpp"

using namespace dilatron;
using namespace dilatron::test;

namespace {

// q, k and v of random values as q.npy, k.npy, v.npy in `dir`; returns the `run` flags that read them.
std::string write_inputs(const TempDir& dir, const std::vector<std::int64_t>& q_shape,
                         const std::vector<std::int64_t>& kv_shape, DType dtype, std::mt19937_64& rng) {
  for (const auto& [name, shape] : {std::pair{"q", q_shape}, std::pair{"k", kv_shape}, std::pair{"v", kv_shape}}) {
    const auto data = random_tensor(shape[0] * shape[1] * shape[2] * shape[3], dtype, 1.0, rng);
    AtomicFile file(dir / (std::string(name) + ".npy"));
    npy::write(file, dtype, shape, data.data());
    file.commit();
  }
  return fmt::format("run --q '{}' --k '{}' --v '{}'", (dir / "q.npy").string(), (dir / "k.npy").string(),
                     (dir / "v.npy").string());
}

// The --device value that runs the kernels here.
std::string gpu_device() { return env::emulated_device() ? "emulator" : "cuda"; }

// ||got - want|| / ||want|| over two .npy files of one shape.
double relative_l2(const std::filesystem::path& want_file, const std::filesystem::path& got_file) {
  const npy::Array want = npy::load(want_file), got = npy::load(got_file);
  EXPECT_EQ(got.shape, want.shape);
  double diff = 0, norm = 0;
  for (std::int64_t i = 0; i < want.numel(); ++i) {
    const double w = load_element(want.data.data(), want.dtype, i), g = load_element(got.data.data(), got.dtype, i);
    diff += (g - w) * (g - w);
    norm += w * w;
  }
  return std::sqrt(diff / norm);
}

}  // namespace

TEST(CliGpu, RunOnCudaMatchesRunOnCpu) {
  if (driver::probe().devices.empty()) GTEST_SKIP() << "no GPU";
  TempDir dir;
  std::mt19937_64 rng(8);
  for (DType dtype : {DType::f16, DType::f32}) {
    const std::string inputs =
        write_inputs(dir, {1, 300, 4, 64}, {1, 300, 2, 64}, dtype, rng) + " --segments 64,128,300 --dilations 1,3,5 --causal";
    // One GPU, then 3 ranks on it over the Local transport.
    for (const auto& [tag, device] : {std::pair{"cpu", std::string("cpu")}, std::pair{"cuda", gpu_device()},
                                      std::pair{"cuda3", gpu_device() + " --ranks 3"}}) {
      const CliResult r = run_cli(dir, inputs + fmt::format(" --device {} --out '{}' --lse '{}'", device,
                                                            (dir / (std::string(tag) + "_o.npy")).string(),
                                                            (dir / (std::string(tag) + "_lse.npy")).string()));
      ASSERT_EQ(r.status, 0) << device << ": " << r.err;
    }
    for (const char* tag : {"cuda", "cuda3"}) {
    SCOPED_TRACE(tag);
    EXPECT_EQ(npy::load(dir / (std::string(tag) + "_o.npy")).dtype, dtype);
    // float32 files run in bfloat16 on the GPU.
    EXPECT_LE(relative_l2(dir / "cpu_o.npy", dir / (std::string(tag) + "_o.npy")), dtype == DType::f16 ? 3e-3 : 1e-2)
        << to_string(dtype);
    const npy::Array cpu_lse = npy::load(dir / "cpu_lse.npy"), gpu_lse = npy::load(dir / (std::string(tag) + "_lse.npy"));
    ASSERT_EQ(gpu_lse.shape, cpu_lse.shape);
    double lse_diff = 0;
    for (std::int64_t i = 0; i < cpu_lse.numel(); ++i) {
      const double want = load_element(cpu_lse.data.data(), DType::f32, i), got = load_element(gpu_lse.data.data(), DType::f32, i);
      lse_diff = std::max(lse_diff, std::isinf(want) ? (got == want ? 0.0 : 1.0) : std::fabs(got - want) / std::max(1.0, std::fabs(want)));
    }
    EXPECT_LE(lse_diff, 1e-2);
    }
  }
}

// The other kernel families through the CLI: head_groups, head dims 96, 128 and 256, partial last segments,
// r not dividing w, both dtypes (float32 files run in bfloat16), with and without GQA and causality.
TEST(CliGpu, RunMatchesTheCpuOverModesAndHeadDims) {
  if (driver::probe().devices.empty()) GTEST_SKIP() << "no GPU";
  TempDir dir;
  std::mt19937_64 rng(13);
  struct Case {
    std::int64_t n, heads, kv_heads, head_dim;
    DType dtype;
    const char* flags;
  };
  for (const Case& c : {Case{200, 4, 4, 96, DType::f32, "--segments 64,200 --dilations 3,2 --mode head_groups"},
                        Case{150, 4, 1, 128, DType::f16, "--segments 32,100 --dilations 1,3 --causal"},
                        Case{130, 2, 2, 256, DType::f32, "--segments 48,130 --dilations 2,5 --causal --mode head_groups"}}) {
    SCOPED_TRACE(c.flags);
    const std::string inputs = write_inputs(dir, {1, c.n, c.heads, c.head_dim}, {1, c.n, c.kv_heads, c.head_dim}, c.dtype, rng) +
                               " " + c.flags;
    for (const std::string& device : {std::string("cpu"), gpu_device()}) {
      const CliResult r = run_cli(dir, inputs + fmt::format(" --device {} --out '{}'", device, (dir / (device + "_o.npy")).string()));
      ASSERT_EQ(r.status, 0) << device << ": " << r.err;
    }
    EXPECT_LE(relative_l2(dir / "cpu_o.npy", dir / (gpu_device() + "_o.npy")), c.dtype == DType::f16 ? 3e-3 : 1e-2);
  }
}

// The tuned path on hardware: `dilatron tune` times real candidates and stores winners, and a run in
// that cache launches tuned tiles (here a non-default shape stored for this GPU) and still matches the
// host reference.
TEST(AutotuneGpu, TuneStoresWinnersAndTunedTilesRunCorrectly) {
  if (driver::probe().devices.empty()) GTEST_SKIP() << "no GPU";
  TempDir dir;
  const std::string cache = " --cache-dir '" + (dir / "cache").string() + "'";
  const CliResult tuned = run_cli(dir, fmt::format("tune --segments 256,512 --dilations 1,2 --head-dim 64 --dtype f16 "
                                                   "--seq-len {} --heads 4 --tiles 64x64x4x2,128x32x4x2 --json --device {}",
                                                   env::emulated_device() ? 512 : 2048, gpu_device()) + cache);
  ASSERT_EQ(tuned.status, 0) << tuned.err;
  const nlohmann::json out = nlohmann::json::parse(tuned.out);
  EXPECT_FALSE(out["device"].get<std::string>().empty());
  EXPECT_EQ(out["emulated"], env::emulated_device());
  ASSERT_EQ(out["kernels"].size(), 2u);
  for (const auto& kernel : out["kernels"]) {
    ASSERT_TRUE(kernel.contains("winner")) << kernel.dump();
    const auto& reference = kernel["candidates"][0];
    ASSERT_TRUE(reference.contains("median_us")) << "the default is always timed: " << kernel.dump();
    for (const auto& c : kernel["candidates"]) {
      if (!c.contains("median_us")) continue;
      EXPECT_GT(c["median_us"].get<double>(), 0);
      if (c["tiles"] == kernel["winner"]) {
        EXPECT_LE(c["median_us"].get<double>(), reference["median_us"].get<double>());
      }
    }
  }
  EXPECT_EQ(read_tuning(dir / "cache").records().size(), 2u);

  // Store a non-default winner for N = 300 (bucket 512) on this GPU, then run there.
  driver::current_context();
  autotune::Workload w;
  w.config.segments = {64, 128};
  w.config.dilations = {1, 2};
  w.head_dim = 64;
  w.dtype = DType::f16;
  w.arch = driver::current_arch();
  std::vector<autotune::TuningRecord> records;
  const codegen::Tiles chosen{64, 64, 4, 2};
  for (const codegen::KernelSpec& spec : autotune::forward_kernels(w)) {
    if (!codegen::is_attention(spec.op)) continue;
    ASSERT_NE(spec.tiles, chosen) << "the stored winner must differ from the default";
    records.push_back({autotune::tuning_key(spec, current_target(), 300), {{chosen, 1.0, ""}}, chosen, "2026-11-23T00:00:00Z"});
  }
  store_tuning(dir / "cache", records);
  std::mt19937_64 rng(11);
  const std::string inputs = write_inputs(dir, {1, 300, 4, 64}, {1, 300, 4, 64}, DType::f16, rng) +
                             " --segments 64,128 --dilations 1,2 --out '" + (dir / "{}_o.npy").string() + "'";
  const CliResult cpu = run_cli(dir, fmt::format(fmt::runtime(inputs), "cpu") + " --device cpu");
  ASSERT_EQ(cpu.status, 0) << cpu.err;
  const std::string env = "DILATRON_LOG=info DILATRON_CACHE_DIR='" + (dir / "cache").string() + "'";
  const CliResult gpu = run_cli(dir, fmt::format(fmt::runtime(inputs), "cuda") + " --device " + gpu_device(), env);
  ASSERT_EQ(gpu.status, 0) << gpu.err;
  EXPECT_NE(gpu.err.find("tile 64x64 4w 2s sm_"), std::string::npos) << gpu.err;
  EXPECT_NE(gpu.err.find("(tuned tiles)"), std::string::npos) << gpu.err;
  EXPECT_LE(relative_l2(dir / "cpu_o.npy", dir / "cuda_o.npy"), 3e-3);
  const CliResult heuristic =
      run_cli(dir, fmt::format(fmt::runtime(inputs), "cuda") + " --device " + gpu_device(), env + " DILATRON_AUTOTUNE=0");
  ASSERT_EQ(heuristic.status, 0) << heuristic.err;
  EXPECT_EQ(heuristic.err.find("(tuned tiles)"), std::string::npos) << "DILATRON_AUTOTUNE=0 ignores the database";
}

// `run --backward --device cuda`, on one rank and on the GPU ring: the same files as on the CPU,
// gradients within the GPU tolerance.
TEST(CliGpu, BackwardOnCudaMatchesTheCpu) {
  if (driver::probe().devices.empty()) GTEST_SKIP() << "no GPU";
  TempDir dir;
  std::mt19937_64 rng(12);
  const std::string inputs = write_inputs(dir, {1, 300, 4, 64}, {1, 300, 2, 64}, DType::f16, rng) +
                             " --segments 64,128,300 --dilations 1,3,5 --causal";
  {
    const auto dout = random_tensor(300 * 4 * 64, DType::f16, 1.0, rng);
    AtomicFile file(dir / "do.npy");
    npy::write(file, DType::f16, {1, 300, 4, 64}, dout.data());
    file.commit();
  }
  // The ring twice: its backward running the forward again, and (with --lse) given the forward's O and LSE.
  for (const auto& [run, flags] : {std::pair{"cpu", std::string("--device cpu")}, std::pair{"cuda", "--device " + gpu_device()},
                                   std::pair{"ring", "--device " + gpu_device() + " --ranks 3"},
                                   std::pair{"ring_lse", "--device " + gpu_device() + " --ranks 3 --lse '" +
                                                             (dir / "ring_lse.npy").string() + "'"}}) {
    const CliResult r = run_cli(dir, inputs + fmt::format(" {0} --out '{1}/{2}_o.npy' --backward --dout '{1}/do.npy' "
                                                          "--dq '{1}/{2}_dq.npy' --dk '{1}/{2}_dk.npy' --dv '{1}/{2}_dv.npy'",
                                                          flags, dir.path().string(), run));
    ASSERT_EQ(r.status, 0) << flags << ": " << r.err;
  }
  for (const char* run : {"cuda", "ring", "ring_lse"}) {
    for (const char* name : {"o", "dq", "dk", "dv"}) {
      EXPECT_LE(relative_l2(dir / fmt::format("cpu_{}.npy", name), dir / fmt::format("{}_{}.npy", run, name)), 5e-3)
          << run << " " << name;
    }
  }
}

// A packed batch through the CLI: the kernels (offsets uploaded, max_seqlen from them) against the CPU's
// packed reference, forward and gradients.
TEST(CliGpu, PackedRunMatchesTheCpu) {
  if (driver::probe().devices.empty()) GTEST_SKIP() << "no GPU";
  TempDir dir;
  std::mt19937_64 rng(18);
  const std::string inputs = write_inputs(dir, {1, 300, 4, 64}, {1, 300, 2, 64}, DType::f16, rng) +
                             " --segments 32,128 --dilations 1,3 --causal";
  save_offsets_npy<std::int32_t>(dir / "cu.npy", {0, 1, 20, 20, 173, 300});
  {
    const auto dout = random_tensor(300 * 4 * 64, DType::f16, 1.0, rng);
    AtomicFile file(dir / "do.npy");
    npy::write(file, DType::f16, {1, 300, 4, 64}, dout.data());
    file.commit();
  }
  for (const auto& [run, device] : {std::pair{"cpu", std::string("cpu")}, std::pair{"gpu", gpu_device()}}) {
    const CliResult r = run_cli(dir, inputs + fmt::format(" --device {0} --cu-seqlens '{1}/cu.npy' --out '{1}/{2}_o.npy' "
                                                          "--backward --dout '{1}/do.npy' --dq '{1}/{2}_dq.npy' "
                                                          "--dk '{1}/{2}_dk.npy' --dv '{1}/{2}_dv.npy'",
                                                          device, dir.path().string(), run));
    ASSERT_EQ(r.status, 0) << device << ": " << r.err;
  }
  for (const char* name : {"o", "dq", "dk", "dv"}) {
    EXPECT_LE(relative_l2(dir / fmt::format("cpu_{}.npy", name), dir / fmt::format("gpu_{}.npy", name)), 5e-3) << name;
  }
}

// `bench` and `demo` run the kernels: bench's rows say where they ran, demo's error against the host
// reference is within the 16-bit tolerance.
TEST(CliGpu, BenchAndDemoRunTheKernels) {
  if (driver::probe().devices.empty()) GTEST_SKIP() << "no GPU";
  TempDir dir;
  const CliResult bench = run_cli(dir, "bench --device " + gpu_device() + " --segments 64,128 --dilations 1,2 --causal "
                                       "--seq-len 256 --heads 2 --kv-heads 1 --head-dim 64 --iters 1 --warmup 1 --json");
  ASSERT_EQ(bench.status, 0) << bench.err;
  const auto rows = nlohmann::json::parse(bench.out);
  ASSERT_EQ(rows.size(), 2u) << bench.out;  // dilatron, and the dense baseline (N within --dense-limit)
  for (const auto& row : rows) {
    EXPECT_GT(row["ms"].get<double>(), 0) << row;
    EXPECT_EQ(row["emulated"], env::emulated_device()) << row;
  }
  EXPECT_EQ(bench.err.find("emulated device") != std::string::npos, env::emulated_device()) << bench.err;
  // --ranks and --backward: forward + backward rows, then DilatedAttention and the ring at P = 1, 2 and 3
  // over the Local transport, timed by the host's clock.
  const CliResult ring = run_cli(dir, "bench --device " + gpu_device() + " --segments 64,128 --dilations 1,2 --causal "
                                      "--seq-len 256 --heads 2 --kv-heads 1 --head-dim 64 --iters 1 --warmup 1 --json "
                                      "--ranks 3 --backward");
  ASSERT_EQ(ring.status, 0) << ring.err;
  const auto ring_rows = nlohmann::json::parse(ring.out);
  const std::vector<std::string> names{"dilatron forward+backward", "dense (same kernels, w=N r=1) forward+backward",
                                       "DilatedAttention, host clock forward+backward",
                                       "ring P=1 (Local, this GPU) forward+backward",
                                       "ring P=2 (Local, this GPU) forward+backward",
                                       "ring P=2 (Local, this GPU) forward+backward, forward again",
                                       "ring P=3 (Local, this GPU) forward+backward",
                                       "ring P=3 (Local, this GPU) forward+backward, forward again"};
  ASSERT_EQ(ring_rows.size(), names.size()) << ring.out;
  for (std::size_t i = 0; i < names.size(); ++i) {
    EXPECT_EQ(ring_rows[i]["name"], names[i]);
    EXPECT_GT(ring_rows[i]["ms"].get<double>(), 0) << ring_rows[i];
    EXPECT_EQ(ring_rows[i]["host_us"].is_null(), i >= 2) << "the ring's rows have no per-call host time";
  }

  // --packed: the whole row, then the packed call, the per-sequence loop and the padded batch.
  const CliResult packed = run_cli(dir, "bench --device " + gpu_device() + " --segments 64,128 --dilations 1,2 --causal "
                                        "--packed 100,0,1,155 --heads 2 --kv-heads 1 --head-dim 64 --iters 1 --warmup 1 "
                                        "--json --dense-limit 0");
  ASSERT_EQ(packed.status, 0) << packed.err;
  const auto packed_rows = nlohmann::json::parse(packed.out);
  const std::vector<std::string> packed_names{"dilatron", "packed: 4 sequences, one call",
                                              "loop: one call per sequence (4 calls)",
                                              "padded to the longest: B=4 N=155"};
  ASSERT_EQ(packed_rows.size(), packed_names.size()) << packed.out;
  for (std::size_t i = 0; i < packed_names.size(); ++i) {
    EXPECT_EQ(packed_rows[i]["name"], packed_names[i]);
    EXPECT_GT(packed_rows[i]["ms"].get<double>(), 0) << packed_rows[i];
    EXPECT_GT(packed_rows[i]["memory_bytes"].get<std::int64_t>(), 0) << packed_rows[i];
  }

  const CliResult demo = run_cli(dir, "demo --device " + gpu_device() + " --seq-len 256 --heads 2 --kv-heads 1 -q");
  ASSERT_EQ(demo.status, 0) << demo.err;
  const std::string marker = "relative error vs the reference ";
  const std::size_t at = demo.out.find(marker);
  ASSERT_NE(at, std::string::npos) << demo.out;
  EXPECT_LE(std::stod(demo.out.substr(at + marker.size())), 5e-3) << demo.out;
}
