// `dilatron plan`: the ring schedule for a shape over P ranks, per rank, next to an all-gather of dense
// K/V, with times predicted by the model in tools/ring_model.hpp. Needs no GPU.
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>
#include <memory>
#include <optional>
#include <utility>

#include "runtime/driver.hpp"
#include "runtime/ring/plan.hpp"
#include "tools/commands.hpp"
#include "tools/plan_decode.hpp"
#include "tools/text.hpp"
#include "tools/ring_model.hpp"

namespace dilatron::cli {
namespace {

// Far beyond any machine, and it keeps the plan's O(P) figures (two per rank) within a few GB.
constexpr int kMaxRanks = 1 << 24;

struct PlanOptions {
  Config config;
  ring::Shape shape;
  int ranks = 0;
  LinkModel model;
  double gpu_memory_gb = 0;  // 0: this machine's first GPU's, else 80
  bool json = false;
};

double gpu_memory_bytes(const PlanOptions& o) { return o.gpu_memory_gb * 1e9; }

double default_gpu_memory_gb() {
  const driver::Status gpu = driver::probe();
  return gpu.devices.empty() ? 80 : double(gpu.devices.front().memory_bytes) / 1e9;
}

bool fits(const PlanOptions& o, std::int64_t bytes) { return double(bytes) <= gpu_memory_bytes(o); }

int ranks_over_memory(const PlanOptions& o, const std::vector<RankCost>& costs, bool backward = false) {
  return int(std::count_if(costs.begin(), costs.end(), [&](const RankCost& c) {
    return !fits(o, backward ? c.backward_memory_bytes : c.memory_bytes);
  }));
}

// The costs walk every message, g(g - 1) in a group of g ranks: a schedule with more than this many is
// refused before any work (a billion take about a minute on two cores).
constexpr double kMaxMessages = 1e9;

double messages(const ring::Schedule& plan) {
  double count = 0;
  for (const ring::Group& g : plan.groups) count += double(g.size) * double(g.size - 1);
  return count;
}

// The search for a P that fits walks schedules up to this many messages (about a second on two cores).
constexpr double kMaxSearchMessages = 1e7;

// Whether every rank of the ring over `ranks` fits the GPU's memory, for the forward and the backward;
// nullopt when that schedule is too large to search.
std::optional<std::pair<bool, bool>> every_rank_fits(const PlanOptions& o, int ranks) {
  const ring::Schedule s = ring::make_schedule(o.config, o.shape, ranks);
  if (messages(s) > kMaxSearchMessages) return std::nullopt;
  ring::RankPlanner planner(s);
  std::pair<bool, bool> all{true, true};
  for (int p = 0; p < ranks; ++p) {
    const ring::RankPlan& rp = planner.plan(p);
    all.first = all.first && fits(o, rp.memory_bytes);
    all.second = all.second && fits(o, rp.backward_memory_bytes);
  }
  return all;
}

// The smallest P above the given one at which every rank fits (for the forward, or the backward),
// found by doubling P, then bisecting: a rank's shards and blocks shrink as P grows, so its memory does.
struct Fitting {
  bool needed = false;  // some rank does not fit at the given P
  int ranks = 0;        // the smallest P that fits; 0: none found
  int searched_to = 0;  // the largest P tried
  bool too_large = false;  // the search stopped at a schedule too costly to walk
};

Fitting smallest_fitting_ranks(const PlanOptions& o, bool backward) {
  const std::int64_t most = std::min<std::int64_t>(o.shape.seq_len, kMaxRanks);
  Fitting f{true};
  auto ok = [&](int ranks) {
    f.searched_to = std::max(f.searched_to, ranks);
    const auto fit = every_rank_fits(o, ranks);
    f.too_large = !fit;
    return fit && (backward ? fit->second : fit->first);
  };
  int low = o.ranks;  // does not fit
  for (std::int64_t p = std::int64_t(o.ranks) * 2; !f.ranks; p *= 2) {
    const int ranks = int(std::min(p, most));
    if (ok(ranks)) f.ranks = ranks;
    else if (f.too_large || ranks == most) return f;
    else low = ranks;
  }
  while (f.ranks - low > 1) {
    const int mid = low + (f.ranks - low) / 2;
    (ok(mid) ? f.ranks : low) = mid;
  }
  f.too_large = false;
  return f;
}

// For the forward and the backward.
std::pair<Fitting, Fitting> fitting_ranks(const PlanOptions& o, const std::vector<RankCost>& ring) {
  auto one = [&](bool backward) { return ranks_over_memory(o, ring, backward) ? smallest_fitting_ranks(o, backward) : Fitting{}; };
  return {one(false), one(true)};
}

// What the text and JSON say about it.
std::string fitting_text(const Fitting& f) {
  if (f.ranks) return fmt::format("the smallest P at which every rank fits is {}", f.ranks);
  if (f.too_large) return fmt::format("none up to P = {} fits, and larger schedules are too costly to search", f.searched_to);
  return fmt::format("no P up to {} fits: use a smaller shape", f.searched_to);
}

constexpr const char* kTimeModel =
    "ring: its clear, finish and packing passes at HBM bandwidth (none on one rank) + local compute + sum over steps "
    "of max(step compute, step transfer), transfers overlapping attention; "
    "all-gather: transfer, then compute; the slowest rank counts";

ring::Schedule build(const PlanOptions& o) {
  check_config_flags(o.config);
  try {
    return ring::make_schedule(o.config, o.shape, o.ranks);
  } catch (const Error& e) {
    throw UsageError(e.what());  // every input came from a flag
  }
}

double slowest(const std::vector<RankCost>& costs) {
  double ms = 0;
  for (const RankCost& c : costs) ms = std::max(ms, c.predicted_ms);
  return ms;
}

std::int64_t moved(const std::vector<RankCost>& costs) {
  std::int64_t bytes = 0;
  for (const RankCost& c : costs) bytes += c.send_bytes;
  return bytes;
}

// One rank per line, printed as it goes: a million ranks never become one document in memory (and
// fmt's shortest round-trip doubles are valid JSON numbers).
void print_json_ranks(const PlanOptions& o, const std::vector<RankCost>& costs, std::string_view indent,
                      bool with_backward) {
  fmt::print("[");
  for (std::size_t p = 0; p < costs.size(); ++p) {
    const RankCost& c = costs[p];
    const std::string backward = with_backward ? fmt::format("\"backward_memory_bytes\":{},\"backward_fits_gpu_memory\":{},",
                                                             c.backward_memory_bytes, fits(o, c.backward_memory_bytes))
                                               : "";
    fmt::print("{}\n{}  {{\"rank\":{},\"rows\":{},\"send_bytes\":{},\"recv_bytes\":{},\"memory_bytes\":{},"
               "\"fits_gpu_memory\":{},{}\"steps\":{},\"flops\":{},\"predicted_ms\":{}}}",
               p == 0 ? "" : ",", indent, c.rank, c.rows, c.send_bytes, c.recv_bytes, c.memory_bytes,
               fits(o, c.memory_bytes), backward, c.steps, c.flops, c.predicted_ms);
  }
  fmt::print("\n{}]", indent);
}

// An object's text (indented by two) without its closing line, for more members to follow.
std::string open_object(const nlohmann::json& members) {
  std::string text = json_text(members, 2);
  text.resize(text.size() - 2);  // "\n}"
  return text;
}

// The table's rows: every rank of a small plan; of a large one the first and last few, and the ranks
// with the most memory and the longest predicted time, in rank order.
std::vector<std::size_t> shown_ranks(const std::vector<RankCost>& ring) {
  constexpr std::size_t kEnds = 8;
  std::vector<std::size_t> rows;
  if (ring.size() <= 4 * kEnds) {
    for (std::size_t p = 0; p < ring.size(); ++p) rows.push_back(p);
    return rows;
  }
  for (std::size_t p = 0; p < kEnds; ++p) rows.insert(rows.end(), {p, ring.size() - 1 - p});
  auto most = [&](auto field) {
    return std::size_t(std::max_element(ring.begin(), ring.end(), [&](const RankCost& a, const RankCost& b) {
                         return field(a) < field(b);
                       }) - ring.begin());
  };
  rows.push_back(most([](const RankCost& c) { return double(c.memory_bytes); }));
  rows.push_back(most([](const RankCost& c) { return c.predicted_ms; }));
  std::sort(rows.begin(), rows.end());
  rows.erase(std::unique(rows.begin(), rows.end()), rows.end());
  return rows;
}

void print_text(const PlanOptions& o, const ring::Schedule& plan, const std::vector<RankCost>& ring,
                const std::vector<RankCost>& gather, const std::pair<Fitting, Fitting>& fitting) {
  const ring::Shape& s = plan.shape;
  fmt::print("ring plan: N={} over {} ranks, B={} H={} Hkv={} D={} {}, {} mode, segments {} dilations {}{}\n", s.seq_len,
             plan.ranks, s.batch, s.heads, s.kv_heads, s.head_dim, to_string(s.dtype), to_string(o.config.mode),
             fmt::join(o.config.segments, ","), fmt::join(o.config.dilations, ","), o.config.causal ? ", causal" : "");
  fmt::print("{} exchange step(s) after the local step 0, {} block(s) of segments spanning ranks\n\n", plan.steps,
             plan.block_count);
  // A memory figure above --gpu-memory-gb is marked '!'; times in fixed width whatever the model's figures.
  auto memory = [&](std::int64_t bytes) {
    return size_text(double(bytes)) + (double(bytes) > gpu_memory_bytes(o) ? "!" : " ");
  };
  fmt::print("{:>5} {:>12} {:>11} {:>11} {:>12} {:>12} {:>5} {:>9} {:>10} | {:>11} {:>12} {:>10}\n", "rank", "rows",
             "sent", "received", "memory ", "bwd memory ", "steps", "TFLOP", "ms", "AG received", "AG memory ", "AG ms");
  std::size_t shown = 0;
  for (const std::size_t p : shown_ranks(ring)) {
    if (p > shown) fmt::print("{:>5} ({} ranks not shown; --json lists every rank)\n", "...", p - shown);
    const RankCost &r = ring[p], &g = gather[p];
    fmt::print("{:>5} {:>12} {:>11} {:>11} {:>12} {:>12} {:>5} {:>9.3g} {:>10.4g} | {:>11} {:>12} {:>10.4g}\n", r.rank,
               r.rows, size_text(double(r.send_bytes)), size_text(double(r.recv_bytes)), memory(r.memory_bytes),
               memory(r.backward_memory_bytes), r.steps, r.flops / 1e12, r.predicted_ms, size_text(double(g.recv_bytes)),
               memory(g.memory_bytes), g.predicted_ms);
    shown = p + 1;
  }
  if (shown < ring.size()) fmt::print("{:>5} ({} ranks not shown; --json lists every rank)\n", "...", ring.size() - shown);
  const std::int64_t ring_bytes = moved(ring), gather_bytes = moved(gather);
  fmt::print("\ntotal: the ring moves {} and is predicted at {:.4g} ms; an all-gather (AG) of K/V moves {} in {:.4g} ms; ",
             size_text(double(ring_bytes)), slowest(ring), size_text(double(gather_bytes)), slowest(gather));
  if (gather_bytes == 0) {
    fmt::print("nothing moves on one rank\n");
  } else if (ring_bytes == 0) {
    fmt::print("bytes moved, ring / all-gather = 0\n");
  } else {
    fmt::print("bytes moved, ring / all-gather = {:.3g} (the all-gather moves {:.3g}x more)\n",
               double(ring_bytes) / double(gather_bytes), double(gather_bytes) / double(ring_bytes));
  }
  fmt::print("model: {:.4g} TFLOP/s and HBM {:.4g} GB/s per GPU, {} GPUs per node, NVLink {:.4g} GB/s, network {:.4g} "
             "GB/s per GPU and direction; {}\n", o.model.tflops, o.model.hbm_gbs, o.model.gpus_per_node, o.model.nvlink_gbs,
             o.model.network_gbs, kTimeModel);
  for (const bool backward : {false, true}) {
    const int over = ranks_over_memory(o, ring, backward);
    if (over == 0) continue;
    fmt::print("warning: for the {}, {} rank(s) of the ring need more than the {:.4g} GB of one GPU (--gpu-memory-gb), "
               "marked '!'; {}\n", backward ? "backward" : "forward", over, o.gpu_memory_gb,
               fitting_text(backward ? fitting.second : fitting.first));
  }
}

void print_json(const PlanOptions& o, const ring::Schedule& plan, const std::vector<RankCost>& ring,
                const std::vector<RankCost>& gather, const std::pair<Fitting, Fitting>& fitting) {
  // The P to suggest: this one when it fits, null when none was found.
  auto smallest = [&](const Fitting& f) {
    return !f.needed ? nlohmann::json(plan.ranks) : f.ranks ? nlohmann::json(f.ranks) : nlohmann::json();
  };
  const nlohmann::json head = {
      {"ranks", plan.ranks},
      {"steps", plan.steps},
      {"blocks", plan.block_count},
      {"shape", {{"batch", o.shape.batch}, {"seq_len", o.shape.seq_len}, {"heads", o.shape.heads},
                 {"kv_heads", o.shape.kv_heads}, {"head_dim", o.shape.head_dim}, {"dtype", to_string(o.shape.dtype)}}},
      {"config", {{"segments", o.config.segments}, {"dilations", o.config.dilations},
                  {"mode", to_string(o.config.mode)}, {"causal", o.config.causal}}},
      {"gpu_memory_bytes", gpu_memory_bytes(o)},
      {"ranks_over_gpu_memory", ranks_over_memory(o, ring)},
      {"ranks_over_gpu_memory_backward", ranks_over_memory(o, ring, true)},
      {"smallest_fitting_ranks", {{"forward", smallest(fitting.first)}, {"backward", smallest(fitting.second)}}},
      {"bytes_moved", moved(ring)},
      {"predicted_ms", slowest(ring)},
      {"model", {{"tflops", o.model.tflops}, {"hbm_gbs", o.model.hbm_gbs}, {"gpus_per_node", o.model.gpus_per_node},
                 {"nvlink_gbs", o.model.nvlink_gbs}, {"network_gbs", o.model.network_gbs}, {"time", kTimeModel}}},
  };
  fmt::print("{},\n  \"per_rank\": ", open_object(head));
  print_json_ranks(o, ring, "  ", true);
  fmt::print(",\n  \"all_gather\": {{\n    \"bytes_moved\": {},\n    \"predicted_ms\": {},\n    \"per_rank\": ",
             moved(gather), json_text(slowest(gather), -1));
  print_json_ranks(o, gather, "    ", false);
  fmt::print("\n  }}\n}}\n");
}

void check_size(const ring::Schedule& plan) {
  if (messages(plan) <= kMaxMessages) return;
  int largest = 0;
  for (const ring::Group& g : plan.groups) largest = std::max(largest, g.size);
  throw UsageError(fmt::format("plan: segments spanning up to {} ranks make {:.3g} messages; at most {:.0e} are costed: "
                               "use fewer ranks or shorter segments", largest, messages(plan), kMaxMessages));
}

void plan_command(const PlanOptions& o) {
  const ring::Schedule plan = build(o);
  check_size(plan);
  const std::vector<RankCost> ring = ring_costs(plan, o.model), gather = all_gather_costs(plan, o.model, ring);
  const std::pair<Fitting, Fitting> fitting = fitting_ranks(o, ring);
  if (o.json) return print_json(o, plan, ring, gather, fitting);
  print_text(o, plan, ring, gather, fitting);
}

}  // namespace

void add_plan(CLI::App& app) {
  auto o = std::make_shared<PlanOptions>();
  o->shape.kv_heads = 0;
  auto decode = std::make_shared<bool>(false);
  CLI::App* cmd = app.add_subcommand("plan", "Show the ring schedule over P ranks: bytes, memory and predicted time per "
                                             "rank (or with --decode the KV cache's bytes for generation)");
  cmd->add_option("--ranks", o->ranks, "ranks P (GPUs) sharing the sequence, at most 2^24 (required without --decode)")
      ->transform(positive_integer(kMaxRanks));
  cmd->add_flag("--decode", *decode,
                "instead of the ring: the bytes of the KV cache generation keeps (DilatedKVCache) per batch row and for "
                "--batch rows, at a context of --seq-len rows, against a window of the largest segment and the whole "
                "history (needs --causal)");
  cmd->add_option("--seq-len", o->shape.seq_len, "sequence length N")->required()->transform(positive_integer());
  cmd->add_option("--heads", o->shape.heads, "query heads H")->required()->transform(positive_integer());
  cmd->add_option("--kv-heads", o->shape.kv_heads, "key/value heads, dividing H (default: H)")->transform(positive_integer());
  cmd->add_option("--head-dim", o->shape.head_dim, "head dimension D, at most 512 (the GPU ring runs 64, 96, 128 and 256)")->required()->transform(positive_integer(512));
  add_gpu_dtype(cmd, o->shape.dtype);
  cmd->add_option("--batch", o->shape.batch, "batch size B")->capture_default_str()->transform(positive_integer());
  add_int_list(cmd, "--segments", o->config.segments, "segment length per branch, e.g. 2048,4096")->required();
  add_int_list(cmd, "--dilations", o->config.dilations, "dilation rate per branch, e.g. 1,2")->required();
  cmd->add_flag("--causal", o->config.causal, "causal masking");
  add_mode(cmd, o->config.mode);
  cmd->add_option("--tflops", o->model.tflops, "model: sustained attention TFLOP/s per GPU of the tiled kernels")
      ->capture_default_str()->check(within(1e-9, 1e9));
  cmd->add_option("--hbm-gbs", o->model.hbm_gbs,
                  "model: GB/s of one GPU's memory, for the ring's clear, finish and packing passes")
      ->capture_default_str()->check(within(1e-9, 1e9));
  cmd->add_option("--gpus-per-node", o->model.gpus_per_node, "model: GPUs per node (ranks r and q share a node when r / G == q / G)")
      ->capture_default_str()->transform(positive_integer(1 << 20));
  cmd->add_option("--nvlink-gbs", o->model.nvlink_gbs, "model: GB/s per GPU and direction within a node")
      ->capture_default_str()->check(within(1e-9, 1e9));
  cmd->add_option("--network-gbs", o->model.network_gbs, "model: GB/s per GPU and direction across nodes")
      ->capture_default_str()->check(within(1e-9, 1e9));
  cmd->add_option("--gpu-memory-gb", o->gpu_memory_gb,
                  "memory of one GPU in GB (1e9 bytes; default this machine's first GPU's, else 80): ranks needing more "
                  "are flagged, with the smallest P that fits")
      ->check(within(1e-3, 1e9));
  cmd->add_flag("--json", o->json, "machine-readable output");
  cmd->callback([o, decode] {
    PlanOptions options = *o;
    if (options.shape.kv_heads == 0) options.shape.kv_heads = options.shape.heads;
    if (*decode) {
      if (options.ranks > 0) throw UsageError("--decode sizes one GPU's cache: drop --ranks");
      return print_decode_plan(options.config, options.shape, options.json);
    }
    if (options.ranks == 0) throw UsageError("plan needs --ranks P (or --decode)");
    if (options.gpu_memory_gb == 0) options.gpu_memory_gb = default_gpu_memory_gb();
    plan_command(options);
  });
}

}  // namespace dilatron::cli
