// `dilatron bench`: GPU forward (and with --backward forward + backward) timings with CUDA events
// (warm-up, L2 flushed before every timed run, median of --iters), TFLOP/s at 4 * D per attended
// query-key pair (3.5 times that for forward + backward), the device memory the run holds, host time per
// call, and a baseline measured in the same run: dense attention (one branch, w = N, r = 1) on the same
// kernels when N is small enough for it to finish, else none. --ranks P adds the ring over the Local
// transport on this GPU (bench_passes.hpp) against DilatedAttention timed the same way; --packed adds a
// packed batch against a loop of per-sequence calls and against padding (bench_passes.hpp).
#include <dilatron/dilatron.hpp>
#include <dilatron/error.hpp>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <limits>

#include "common/env.hpp"
#include "runtime/driver.hpp"
#include "runtime/kernel_bench.hpp"
#include "runtime/problem.hpp"
#include "tools/commands.hpp"
#include "tools/bench_passes.hpp"
#include "tools/text.hpp"
#include "tools/workload_flags.hpp"

namespace dilatron::cli {
namespace {

struct BenchOptions {
  WorkloadFlags workload;
  std::int64_t batch = 1, seq_len = 32768, heads = 16, kv_heads = 0;
  int iters = 20, warmup = 5;
  std::int64_t dense_limit = 65536;
  int ranks = 0;  // > 0: the ring's rows too
  std::vector<std::int64_t> packed;  // sequence lengths: the packed batch's rows too
  bool backward = false, json = false;
  Device device = Device::cuda;
};

BenchShape shape_of(const BenchOptions& o, DType dtype, int head_dim) {
  return {o.batch, o.seq_len, o.heads, o.kv_heads ? o.kv_heads : o.heads, head_dim, dtype, o.backward};
}

Measurement measure(const std::string& name, const Config& config, const BenchOptions& o, DType dtype, int head_dim) {
  const std::size_t free_before = free_memory();
  const BenchShape shape = shape_of(o, dtype, head_dim);
  const BenchTensors t(shape);
  GpuTimer timer;

  DilatedAttention attention(config);
  const auto pass = [&] { dilated_pass(attention, t, o.backward); };
  for (int i = 0; i < o.warmup; ++i) pass();  // JIT and module load land here
  const std::size_t held = free_before - free_memory();
  // Few enough that the launch queue never blocks the host. The emulated device runs each launch before
  // forward() returns, so there one call says as much.
  const int host_calls = env::emulated_device() ? 1 : 50;
  DILATRON_CU(cuCtxSynchronize());
  const auto host_start = std::chrono::steady_clock::now();
  for (int i = 0; i < host_calls; ++i) pass();
  const double host_us =
      std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - host_start).count() / host_calls;
  DILATRON_CU(cuCtxSynchronize());
  const double ms = timer.median_ms(pass, 0, o.iters);
  return {name, ms, pass_flops(config, shape) / (ms * 1e-3) / 1e12, held - timer.flush_bytes(), host_us};
}

// Everything about the command line that can be wrong, found before looking for a GPU.
void check_flags(const BenchOptions& o) {
  if (!o.workload.config_file.empty()) throw UsageError("bench takes --segments/--dilations, not --config");
  const autotune::Workload w = workloads(o.workload).front();  // checks config, head dim, dtype
  const std::int64_t kv_heads = o.kv_heads ? o.kv_heads : o.heads;
  if (o.heads % kv_heads != 0) {
    throw UsageError(fmt::format("--kv-heads {} does not divide --heads {}", kv_heads, o.heads));
  }
  if (w.config.mode == Mode::head_groups && o.heads < std::int64_t(w.config.branches())) {
    throw UsageError(fmt::format("head_groups needs at least one head per branch: --heads {}, {} branches", o.heads,
                                 w.config.branches()));
  }
  if (o.backward && w.head_dim == 256) throw UsageError("--backward: head dim 256 has no GPU backward kernel yet (64, 96 or 128)");
  if (!o.packed.empty()) {
    if (o.ranks > 0) throw UsageError("--packed and --ranks: the ring does not split packed batches yet");
    if (o.batch != 1) throw UsageError(fmt::format("--packed is one batch element of all the sequences: --batch {}", o.batch));
    if (std::ssize(o.packed) > kMaxPackedSequences) {
      throw UsageError(fmt::format("--packed has {} sequences; a packed batch holds at most {}", o.packed.size(), kMaxPackedSequences));
    }
  }
  if (o.ranks > o.seq_len) throw UsageError(fmt::format("--ranks {} exceeds --seq-len {}: every rank needs a row", o.ranks, o.seq_len));
}

void bench(BenchOptions o) {
  if (!o.packed.empty()) {
    // The packing's rows are the sequence the other rows run whole; offsets are int32.
    constexpr std::int64_t kMaxRows = std::numeric_limits<std::int32_t>::max();
    o.seq_len = 0;
    for (std::size_t i = 0; i < o.packed.size(); ++i) {
      if (o.packed[i] < 0 || o.packed[i] > kMaxRows) {
        throw UsageError(fmt::format("--packed[{}] = {}: a length is 0 to {}", i, o.packed[i], kMaxRows));
      }
      o.seq_len += o.packed[i];
    }
    if (o.seq_len < 1 || o.seq_len > kMaxRows) {
      throw UsageError(fmt::format("--packed sums to {} rows: 1 to {} (int32 offsets)", o.seq_len, kMaxRows));
    }
  }
  check_flags(o);
  driver::current_context();  // names the missing driver or GPU
  if (const std::string note = emulated_timing_note(); !note.empty()) fmt::print(stderr, "{}\n", note);
  WorkloadFlags flags = o.workload;
  flags.arch = driver::current_arch();
  const autotune::Workload w = cli::workloads(flags).front();
  const std::string pass = o.backward ? " forward+backward" : "";
  std::vector<Measurement> rows{measure("dilatron" + pass, w.config, o, w.dtype, w.head_dim)};
  if (o.seq_len <= o.dense_limit) {
    Config dense;
    dense.segments = {o.seq_len};
    dense.dilations = {1};
    dense.causal = w.config.causal;
    rows.push_back(measure("dense (same kernels, w=N r=1)" + pass, dense, o, w.dtype, w.head_dim));
  }
  if (!o.packed.empty()) {
    for (Measurement& m : packed_measurements(w.config, shape_of(o, w.dtype, w.head_dim), o.packed, o.warmup, o.iters)) {
      rows.push_back(std::move(m));
    }
  }
  const std::size_t ring_rows = rows.size();
  if (o.ranks > 0) {
    for (Measurement& m : ring_measurements(w.config, shape_of(o, w.dtype, w.head_dim), o.ranks, o.warmup, o.iters)) {
      rows.push_back(std::move(m));
    }
  }
  if (o.json) {
    nlohmann::json out = nlohmann::json::array();
    for (const Measurement& m : rows) {
      out.push_back({{"name", m.name},
                     {"ms", m.ms},
                     {"tflops", m.tflops},
                     {"memory_bytes", m.memory_bytes},
                     {"host_us", m.host_us},
                     {"emulated", env::emulated_device()}});
    }
    fmt::print("{}\n", json_text(out));
    return;
  }
  fmt::print("B={} N={} H={} Hkv={} D={} {} on {}{} ({} timed runs, median, L2 flushed)\n", o.batch, o.seq_len, o.heads,
             o.kv_heads ? o.kv_heads : o.heads, w.head_dim, to_string(w.dtype), driver::current_arch(),
             env::emulated_device() ? " emulated (times meaningless)" : "", o.iters);
  // Ring rows compare with the first of them (DilatedAttention timed as the ring is), the others with the first row.
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const Measurement& m = rows[i];
    const Measurement& base = i < ring_rows ? rows.front() : rows[ring_rows];
    const std::string host = std::isnan(m.host_us) ? "     -" : fmt::format("{:>6.1f}", m.host_us);
    fmt::print("{:<48} {:>9.3f} ms {:>8.1f} TFLOP/s {:>9.1f} MiB {} us host/call  x{:.2f} vs {}\n", m.name, m.ms, m.tflops,
               double(m.memory_bytes) / (1 << 20), host, base.ms / m.ms, i < ring_rows ? "first row" : "its baseline");
  }
}

}  // namespace

void add_bench(CLI::App& app) {
  auto o = std::make_shared<BenchOptions>();
  CLI::App* cmd = app.add_subcommand("bench", "Time the GPU forward pass against a baseline measured in the same run");
  add_workload_flags(cmd, o->workload, ArchFlag::none);
  cmd->add_option("--batch", o->batch, "batch size B")->capture_default_str()->transform(positive_integer());
  cmd->add_option("--seq-len", o->seq_len, "sequence length N")->capture_default_str()->transform(positive_integer());
  cmd->add_option("--heads", o->heads, "query heads H")->capture_default_str()->transform(positive_integer());
  cmd->add_option("--kv-heads", o->kv_heads, "key/value heads, dividing H (default: H)")->transform(positive_integer());
  cmd->add_option("--iters", o->iters, "timed runs (median reported)")->capture_default_str()->transform(integer_in(1, 10000));
  cmd->add_option("--warmup", o->warmup, "untimed runs first")->capture_default_str()->transform(integer_in(1, 1000));
  cmd->add_flag("--backward", o->backward, "time forward + backward (head dims 64, 96, 128)");
  cmd->add_option("--ranks", o->ranks,
                  "also the ring over P ranks on this GPU (Local transport), with P = 1, 2, 4, ... up to P, against "
                  "DilatedAttention timed the same way")
      ->transform(positive_integer(kMaxBenchRanks));
  add_int_list(cmd, "--packed", o->packed,
               "also a packed batch of sequences of these lengths (e.g. 65536,32768,1024; --seq-len becomes their sum): "
               "one packed call, one call per sequence, and the sequences padded to the longest");
  cmd->add_option("--dense-limit", o->dense_limit, "largest N for the dense baseline (0: none)")
      ->capture_default_str()
      ->transform(integer_in(0, std::int64_t(1) << 40));
  add_device(cmd, o->device, false,
             "cuda (this machine's GPU) or emulator (the same kernels on the CPU: checks the bench runs; its times mean "
             "nothing, so pass small sizes)");
  cmd->add_flag("--json", o->json, "machine-readable output (each row's \"emulated\" says where it ran)");
  cmd->callback([o] { bench(*o); });
}

}  // namespace dilatron::cli
