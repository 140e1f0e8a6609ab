// `dilatron tune`: for each attention kernel a configuration launches, every candidate tile shape is
// pruned, compiled in parallel through the cache, timed alone on this GPU at the given size, and the
// results are folded into the tuning database in the cache directory, which the runtime then reads.
// --dry-run stops after compiling: it lists the pruned space and needs no GPU.
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <memory>
#include <optional>

#include "autotune/candidates.hpp"
#include "autotune/tuner.hpp"
#include "common/env.hpp"
#include "runtime/tuning_file.hpp"
#include "runtime/driver.hpp"
#include "runtime/tuning.hpp"
#include "tools/commands.hpp"
#include "tools/text.hpp"
#include "tools/progress.hpp"
#include "tools/workload_flags.hpp"

namespace dilatron::cli {
namespace {

struct TuneOptions {
  WorkloadFlags workload;
  std::int64_t batch = 1, seq_len = 32768, heads = 16, kv_heads = 0;
  std::vector<std::string> tiles;
  TimingOptions timing;
  unsigned jobs = 0;
  std::string cache_dir;
  bool dry_run = false, json = false;
  Device device = Device::cuda;

  std::int64_t kv() const { return kv_heads ? kv_heads : heads; }
};

// One attention kernel to tune, and the branch it computes (for its FLOP count).
struct KernelToTune {
  autotune::Workload workload;
  codegen::KernelSpec spec;
  int branch;
};

std::vector<KernelToTune> kernels_to_tune(const std::vector<autotune::Workload>& workloads) {
  std::vector<KernelToTune> out;
  for (const autotune::Workload& w : workloads) {
    for (const codegen::KernelSpec& spec : autotune::forward_kernels(w)) {
      const auto same = [&](const KernelToTune& k) { return autotune::untiled_spec(k.spec) == autotune::untiled_spec(spec); };
      if (!codegen::is_attention(spec.op) || std::any_of(out.begin(), out.end(), same)) continue;
      int branch = spec.group;  // head_groups: the group is the branch; longnet: the first with its (w, r)
      if (spec.mode == Mode::longnet) {
        for (branch = 0; w.config.segments[std::size_t(branch)] != spec.branches[0].w ||
                         w.config.dilations[std::size_t(branch)] != spec.branches[0].r;) {
          ++branch;
        }
      }
      out.push_back({w, spec, branch});
    }
  }
  return out;
}

// The flags' problems, all found before any GPU is looked for or anything compiles.
std::vector<codegen::Tiles> check_flags(const TuneOptions& o) {
  if (o.heads % o.kv() != 0) throw UsageError(fmt::format("--kv-heads {} does not divide --heads {}", o.kv(), o.heads));
  WorkloadFlags flags = o.workload;
  if (!o.dry_run && flags.arch.empty()) flags.arch = "sm_90a";  // a stand-in: the GPU decides later
  for (const autotune::Workload& w : workloads(flags)) {
    if (w.config.mode == Mode::head_groups && o.heads < std::int64_t(w.config.branches())) {
      throw UsageError(fmt::format("head_groups needs at least one head per branch: --heads {}, {} branches", o.heads,
                                   w.config.branches()));
    }
  }
  std::vector<codegen::Tiles> only;
  for (const std::string& text : o.tiles) {
    try {
      only.push_back(autotune::parse_tiles(text));
    } catch (const Error& e) {
      throw UsageError(fmt::format("--tiles: {}", e.what()));
    }
  }
  return only;
}

// This machine's GPU, or the error saying a tune needs one.
void require_gpu(const TuneOptions& o) {
  const driver::Status status = driver::probe();
  if (status.devices.empty()) {
    throw Error(fmt::format("tune times candidates on a GPU and this machine has none ({}); --dry-run lists and compiles "
                            "the candidate space without one (with --arch)",
                            status.problem),
                ErrorKind::cuda);
  }
  driver::current_context();
  if (const std::string note = emulated_timing_note(); !note.empty()) fmt::print(stderr, "{}\n", note);
  if (!o.workload.arch.empty() && o.workload.arch != driver::current_arch()) {
    throw UsageError(fmt::format("--arch {}: this GPU is {}, and a tune times this GPU (--arch goes with --dry-run)",
                                 o.workload.arch, driver::current_arch()));
  }
}

std::string count(std::size_t kernels) { return fmt::format("{} kernel{}", kernels, kernels == 1 ? "" : "s"); }

struct Tuned {
  KernelToTune kernel;
  autotune::TuneResult result;
  double flops;
};

std::string status_of(const autotune::CandidateReport& c, const std::optional<codegen::Tiles>& winner) {
  if (!c.error.empty()) return "failed: " + c.error;
  if (!c.pruned.empty()) return "pruned: " + c.pruned;
  std::string s = c.median_us ? "timed" : "compiled";
  if (c.is_default) s += ", default";
  if (winner && *winner == c.tiles) s += ", winner";
  return s;
}

nlohmann::json to_json(const Tuned& t) {
  const autotune::TuneResult& r = t.result;
  const std::optional<double> reference = r.default_candidate().median_us;
  nlohmann::json candidates = nlohmann::json::array();
  for (const autotune::CandidateReport& c : r.candidates) {
    nlohmann::json j = {{"tiles", autotune::tiles_text(c.tiles)}, {"default", c.is_default}, {"status", status_of(c, r.winner)}};
    if (c.ptxas) {
      j["registers"] = c.ptxas->registers;
      j["spill_bytes"] = c.ptxas->spill_bytes;
      j["ctas_per_sm"] = c.ctas_per_sm;
    }
    if (c.median_us) {
      j["median_us"] = *c.median_us;
      j["tflops"] = t.flops / (*c.median_us * 1e-6) / 1e12;
      if (reference) j["vs_default"] = *reference / *c.median_us;
    }
    candidates.push_back(std::move(j));
  }
  nlohmann::json j = {{"kernel", r.spec.label()},
                      {"spec", autotune::untiled_spec(r.spec)},
                      {"default", autotune::tiles_text(r.spec.tiles)},
                      {"candidates", std::move(candidates)}};
  if (r.winner) j["winner"] = autotune::tiles_text(*r.winner);
  return j;
}

void print_table(const Tuned& t) {
  const autotune::TuneResult& r = t.result;
  const std::optional<double> reference = r.default_candidate().median_us;
  fmt::print("\n{}\n", r.spec.label());
  fmt::print("  {:<14} {:>5} {:>6} {:>7} {:>11} {:>8} {:>8}  {}\n", "candidate", "regs", "spill", "CTAs/SM", "median us",
             "TFLOP/s", "vs dflt", "status");
  for (const autotune::CandidateReport& c : r.candidates) {
    const std::string regs = c.ptxas ? std::to_string(c.ptxas->registers) : "-";
    const std::string spill = c.ptxas ? std::to_string(c.ptxas->spill_bytes) : "-";
    const std::string ctas = c.ptxas || c.pruned.empty() ? std::to_string(c.ctas_per_sm) : "-";
    std::string median = "-", tflops = "-", versus = "-";
    if (c.median_us) {
      median = fmt::format("{:.1f}", *c.median_us);
      tflops = fmt::format("{:.1f}", t.flops / (*c.median_us * 1e-6) / 1e12);
      if (reference) versus = fmt::format("{:.2f}x", *reference / *c.median_us);
    }
    fmt::print("  {:<14} {:>5} {:>6} {:>7} {:>11} {:>8} {:>8}  {}\n", autotune::tiles_text(c.tiles), regs, spill, ctas,
               median, tflops, versus, status_of(c, r.winner));
  }
}

void tune(const TuneOptions& o) {
  const std::vector<codegen::Tiles> only = check_flags(o);
  WorkloadFlags flags = o.workload;
  std::optional<autotune::TuningTarget> target;
  if (!o.dry_run) {
    require_gpu(o);
    flags.arch = driver::current_arch();
    target = current_target();
  }
  const std::vector<KernelToTune> kernels = kernels_to_tune(workloads(flags));

  cache::CacheOptions options = cache::CacheOptions::from_environment(o.cache_dir);
  if (o.jobs) options.compile_jobs = o.jobs;
  cache::KernelCache cache(options);
  std::vector<Tuned> done;
  std::vector<std::string> without_winner;
  std::optional<KernelBench> bench;  // one per (dtype, head dim): the kernels of one workload share it
  std::pair<DType, std::int64_t> bench_for{DType::f32, 0};
  for (const KernelToTune& k : kernels) {
    const Problem problem{o.batch, o.seq_len, o.heads, o.kv(), k.workload.head_dim, 1.0 / std::sqrt(double(k.workload.head_dim))};
    if (!o.dry_run && (!bench || bench_for != std::pair{k.workload.dtype, problem.head_dim})) {
      bench.reset();  // the previous size's buffers go first
      bench.emplace(problem, k.workload.dtype);
      bench_for = {k.workload.dtype, problem.head_dim};
    }
    autotune::TuneHooks hooks = tune_hooks(cache, bench ? &*bench : nullptr, o.timing);
    std::unique_ptr<ProgressLine> line;
    std::string phase_shown;
    hooks.progress = [&](std::string_view phase, std::size_t n, std::size_t total) {
      if (phase != phase_shown) {
        line = std::make_unique<ProgressLine>(fmt::format("{} {} candidates of {}", phase == "compile" ? "compiling" : "timing",
                                                          total, k.spec.label()),
                                              true);
        phase_shown = phase;
      }
      line->update(std::int64_t(n), std::int64_t(total));
    };
    Tuned t{k, autotune::tune(k.spec, only, hooks), 0};
    line.reset();
    t.flops = 4.0 * problem.head_dim * double(o.batch) *
              double(attended_pairs(k.workload.config, o.seq_len, o.heads, k.branch));
    if (!o.dry_run) {
      // Stored kernel by kernel, so an interrupted tune keeps what it finished.
      const auto record = autotune::to_record(t.result, autotune::tuning_key(k.spec, *target, o.seq_len));
      if (record) {
        store_tuning(cache.disk().dir(), {*record});
      } else {
        without_winner.push_back(k.spec.label());
      }
    }
    if (!o.json) print_table(t);
    done.push_back(std::move(t));
  }

  const std::string database = tuning_path(cache.disk().dir()).string();
  if (o.json) {
    nlohmann::json out = {{"dry_run", o.dry_run},
                          {"arch", flags.arch},
                          {"problem", {{"batch", o.batch}, {"seq_len", o.seq_len}, {"heads", o.heads}, {"kv_heads", o.kv()}}},
                          {"database", database},
                          {"kernels", nlohmann::json::array()}};
    if (target) out["device"] = target->device, out["driver"] = target->driver, out["iters"] = o.timing.iters;
    if (target) out["emulated"] = env::emulated_device();
    for (const Tuned& t : done) out["kernels"].push_back(to_json(t));
    if (!without_winner.empty()) out["without_winner"] = without_winner;
    fmt::print("{}\n", json_text(out));
  } else if (o.dry_run) {
    fmt::print("\ndry run: nothing timed or stored ({} for {})\n", count(done.size()), flags.arch);
  } else {
    fmt::print("\n{} on {}, B={} N={} H={} Hkv={}, median of {} runs each after an L2 flush; stored in {} (bucket N<={})\n",
               count(done.size()), target->device, o.batch, o.seq_len,
               o.heads, o.kv(), o.timing.iters, database, autotune::seq_len_bucket(o.seq_len));
  }
  if (!without_winner.empty()) {
    throw ReportedFailure(fmt::format("no candidate ran for {}, which keep their default tiles: {}",
                                      count(without_winner.size()), fmt::join(without_winner, "; ")));
  }
}

}  // namespace

void add_tune(CLI::App& app) {
  auto o = std::make_shared<TuneOptions>();
  CLI::App* cmd = app.add_subcommand(
      "tune",
      "Time every candidate tile shape of a configuration's attention kernels on this GPU and remember the fastest "
      "(the runtime and `cache warm` use it)");
  add_workload_flags(cmd, o->workload, ArchFlag::local_gpu, false);
  cmd->add_option("--seq-len", o->seq_len, "sequence length N to time at (tuned per power-of-two bucket of N)")
      ->capture_default_str()
      ->transform(positive_integer());
  cmd->add_option("--batch", o->batch, "batch size B")->capture_default_str()->transform(positive_integer());
  cmd->add_option("--heads", o->heads, "query heads H")->capture_default_str()->transform(positive_integer());
  cmd->add_option("--kv-heads", o->kv_heads, "key/value heads, dividing H (default: H)")->transform(positive_integer());
  cmd->add_option("--tiles", o->tiles,
                  "only these candidates, BLOCK_MxBLOCK_NxWARPSxSTAGES, e.g. 128x64x4x3,64x64x4x2 (their timings are "
                  "added to what the database holds; default: the whole space)")
      ->delimiter(',')
      ->type_name("MxNxWxS,...");
  cmd->add_option("--iters", o->timing.iters, "timed runs per candidate (the median counts)")
      ->capture_default_str()
      ->transform(integer_in(20, 10000));
  cmd->add_option("--warmup", o->timing.warmup, "untimed runs per candidate first")->capture_default_str()->transform(integer_in(1, 1000));
  cmd->add_option("--jobs", o->jobs, "parallel compilations (default: $DILATRON_COMPILE_JOBS, else hardware threads)")
      ->transform(integer_in(1, 256));
  cmd->add_option("--cache-dir", o->cache_dir,
                  "cache directory holding kernels and tuning.json (default: $DILATRON_CACHE_DIR, else "
                  "$XDG_CACHE_HOME/dilatron, else ~/.cache/dilatron)");
  add_device(cmd, o->device, false,
             "cuda (this machine's GPU) or emulator (every candidate runs on the CPU: proves they all compute; the "
             "winners are stored for the emulated device only, and its times mean nothing)");
  cmd->add_flag("--dry-run", o->dry_run, "list, prune and compile the candidates without timing or storing anything (no GPU needed)");
  cmd->add_flag("--json", o->json, "machine-readable output");
  cmd->callback([o] { tune(*o); });
}

}  // namespace dilatron::cli
