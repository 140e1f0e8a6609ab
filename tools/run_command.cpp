// `dilatron run`: one forward pass over .npy tensors. Outputs are published atomically and only after
// everything succeeded, so a failed run leaves no file behind.
#include <dilatron/error.hpp>
#include <dilatron/reference.hpp>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <optional>

#include "common/atomic_file.hpp"
#include "runtime/problem.hpp"
#include "tools/commands.hpp"
#include "tools/gpu_forward.hpp"
#include "tools/npy.hpp"

namespace dilatron::cli {
namespace {

struct RunOptions {
  std::string q, k, v, out, lse, segments, dilations, mode = "longnet", device = "cpu";
  bool causal = false;
  double scale = 0;
  bool scale_given = false;
};

TensorView view_4d(const char* name, const std::string& path, npy::Array& a) {
  if (a.shape.size() != 4) {
    throw Error(fmt::format("{} ({}) has shape ({}): expected 4 dims [B, N, heads, D]", name, path,
                            fmt::join(a.shape, ", ")));
  }
  return TensorView::contiguous(a.data.data(), a.dtype, {a.shape[0], a.shape[1], a.shape[2], a.shape[3]});
}

void run(const RunOptions& o) {
  Config config;
  config.segments = parse_int_list("--segments", o.segments);
  config.dilations = parse_int_list("--dilations", o.dilations);
  config.mode = parse_mode(o.mode);
  config.causal = o.causal;
  if (o.scale_given) config.scale = o.scale;
  validate_config(config);  // before reading possibly large files

  npy::Array qa = npy::load(o.q), ka = npy::load(o.k), va = npy::load(o.v);
  const TensorView q = view_4d("--q", o.q, qa), k = view_4d("--k", o.k, ka), v = view_4d("--v", o.v, va);
  std::vector<std::byte> out_bytes(std::size_t(q.numel()) * dtype_size(q.dtype));
  const TensorView out = TensorView::contiguous(out_bytes.data(), q.dtype, q.shape);
  std::vector<float> lse_values(o.lse.empty() ? 0 : std::size_t(q.shape[0] * q.shape[2] * q.shape[1]));
  const TensorView lse = TensorView::contiguous(lse_values.data(), DType::f32, {q.shape[0], q.shape[2], q.shape[1], 1});
  const TensorView* lse_arg = o.lse.empty() ? nullptr : &lse;
  validate(config, q, k, v, out, lse_arg);

  if (o.device == "cuda") {
    gpu_forward(config, q, k, v, out, lse_arg);
  } else {
    reference_forward(config, q, k, v, out, lse_arg);
  }

  AtomicFile out_file(o.out);
  npy::write(out_file, out.dtype, qa.shape, out_bytes.data());
  std::optional<AtomicFile> lse_file;
  if (lse_arg) {
    lse_file.emplace(o.lse);
    npy::write(*lse_file, DType::f32, {q.shape[0], q.shape[2], q.shape[1]}, lse_values.data());
  }
  out_file.commit();
  if (lse_file) {
    try {
      lse_file->commit();
    } catch (...) {
      std::filesystem::remove(o.out);  // both outputs or neither
      throw;
    }
  }
}

}  // namespace

void add_run(CLI::App& app) {
  auto options = std::make_shared<RunOptions>();
  CLI::App* cmd = app.add_subcommand("run", "Run dilated attention forward on .npy tensors (float32/float16, C order)");
  cmd->add_option("--q", options->q, "queries [B,N,H,D]")->required();
  cmd->add_option("--k", options->k, "keys [B,N,Hkv,D], Hkv dividing H")->required();
  cmd->add_option("--v", options->v, "values [B,N,Hkv,D]")->required();
  cmd->add_option("--segments", options->segments, "segment length per branch, e.g. 2048,4096")->required();
  cmd->add_option("--dilations", options->dilations, "dilation rate per branch, e.g. 1,2")->required();
  cmd->add_option("--mode", options->mode, "how branches combine: longnet (LSE-weighted merge) or head_groups")
      ->capture_default_str();
  cmd->add_flag("--causal", options->causal, "mask keys after the query row");
  CLI::Option* scale = cmd->add_option("--scale", options->scale, "softmax scale (default 1/sqrt(D))");
  cmd->add_option("--device", options->device, "where to run: cpu (float64 host reference) or cuda (float32 inputs run in bfloat16)")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
  cmd->add_option("--out", options->out, "output O [B,N,H,D] in Q's dtype")->required();
  cmd->add_option("--lse", options->lse, "also write the log-sum-exp, float32 [B,H,N]");
  cmd->callback([options, scale] {
    options->scale_given = scale->count() > 0;
    run(*options);
  });
}

}  // namespace dilatron::cli
