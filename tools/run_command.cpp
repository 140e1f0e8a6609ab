// `dilatron run`: one forward pass over .npy tensors, and with --backward the gradients for a given dO.
// Flags and output paths are checked before any input is read; outputs are published atomically and
// only after everything succeeded.
#include <dilatron/reference.hpp>
#include <dilatron/ring.hpp>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <chrono>

#include "runtime/driver.hpp"
#include "runtime/problem.hpp"
#include "tools/commands.hpp"
#include "tools/gpu_forward.hpp"
#include "tools/npy.hpp"
#include "tools/outputs.hpp"
#include "tools/progress.hpp"

namespace dilatron::cli {
namespace {

struct RunOptions {
  std::string q, k, v, out, lse;
  std::string cu_seqlens;  // a packed batch's offsets
  Device device = Device::cpu;
  std::string dout, dq, dk, dv;  // --backward
  Config config;
  double scale = 0;
  int ranks = 1;
  bool scale_given = false, quiet = false, backward = false;
};

// --backward and its four files come together; the passes it cannot run yet are named before any work.
void check_backward_flags(const RunOptions& o) {
  const bool any_file = !(o.dout.empty() && o.dq.empty() && o.dk.empty() && o.dv.empty());
  if (!o.backward) {
    if (any_file) throw UsageError("--dout, --dq, --dk and --dv go with --backward");
    return;
  }
  std::vector<std::string> missing;
  for (const auto& [flag, path] : {std::pair{"--dout", &o.dout}, std::pair{"--dq", &o.dq}, std::pair{"--dk", &o.dk},
                                   std::pair{"--dv", &o.dv}}) {
    if (path->empty()) missing.push_back(flag);
  }
  if (!missing.empty()) {
    throw UsageError(fmt::format("--backward needs --dout, --dq, --dk and --dv; missing: {}", fmt::join(missing, ", ")));
  }
}

TensorView view_4d(const char* name, const std::string& path, npy::Array& a) {
  if (a.shape.size() != 4) {
    throw Error(fmt::format("{} ({}) has shape ({}): expected 4 dims [B, N, heads, D]", name, path,
                            fmt::join(a.shape, ", ")));
  }
  return TensorView::contiguous(a.data.data(), a.dtype, {a.shape[0], a.shape[1], a.shape[2], a.shape[3]});
}

void run(RunOptions o) {
  if (o.scale_given) o.config.scale = o.scale;
  check_config_flags(o.config);
  check_backward_flags(o);
  const bool packed = !o.cu_seqlens.empty();
  if (packed && o.ranks > 1) throw UsageError("--cu-seqlens runs on one rank: the ring does not split packed batches yet");
  std::vector<NamedPath> inputs{{"--q", o.q}, {"--k", o.k}, {"--v", o.v}}, outputs{{"--out", o.out}};
  if (packed) inputs.push_back({"--cu-seqlens", o.cu_seqlens});
  if (!o.lse.empty()) outputs.push_back({"--lse", o.lse});
  if (o.backward) {
    inputs.push_back({"--dout", o.dout});
    for (const auto& [flag, path] : {std::pair{"--dq", o.dq}, std::pair{"--dk", o.dk}, std::pair{"--dv", o.dv}}) {
      outputs.push_back({flag, path});
    }
  }
  Outputs files(inputs, outputs);
  if (o.device == Device::cuda) {
    const driver::Status gpu = driver::probe();
    if (gpu.devices.empty()) throw Error("--device cuda: " + gpu.problem, ErrorKind::cuda);
  }

  npy::Array qa = npy::load(o.q), ka = npy::load(o.k), va = npy::load(o.v);
  const TensorView q = view_4d("--q", o.q, qa), k = view_4d("--k", o.k, ka), v = view_4d("--v", o.v, va);
  std::vector<std::byte> out_bytes(std::size_t(q.numel()) * dtype_size(q.dtype));
  const TensorView out = TensorView::contiguous(out_bytes.data(), q.dtype, q.shape);
  std::vector<float> lse_values(o.lse.empty() ? 0 : std::size_t(q.shape[0] * q.shape[2] * q.shape[1]));
  const TensorView lse = TensorView::contiguous(lse_values.data(), DType::f32, {q.shape[0], q.shape[2], q.shape[1], 1});
  const TensorView* lse_arg = o.lse.empty() ? nullptr : &lse;
  const Problem p = validate(o.config, q, k, v, out, lse_arg);
  std::vector<std::int32_t> cu_seqlens;
  if (packed) {
    cu_seqlens = npy::load_offsets(o.cu_seqlens);
    try {
      validate_host_packing(q, cu_seqlens);
    } catch (const Error& e) {
      throw Error(fmt::format("--cu-seqlens {}: {}", o.cu_seqlens, e.what()));
    }
  }
  // The gradients: dO as read, dQ in Q's dtype, dK and dV in K's.
  npy::Array douta;
  std::vector<std::byte> dq_bytes, dk_bytes, dv_bytes;
  TensorView dout, dq, dk, dv;
  if (o.backward) {
    douta = npy::load(o.dout);
    dout = view_4d("--dout", o.dout, douta);
    dq_bytes.resize(out_bytes.size());
    dk_bytes.resize(std::size_t(k.numel()) * dtype_size(k.dtype));
    dv_bytes.resize(dk_bytes.size());
    dq = TensorView::contiguous(dq_bytes.data(), q.dtype, q.shape);
    dk = TensorView::contiguous(dk_bytes.data(), k.dtype, k.shape);
    dv = TensorView::contiguous(dv_bytes.data(), k.dtype, k.shape);
    validate_backward(o.config, q, k, v, dout, dq, dk, dv);
  }

  const auto start = std::chrono::steady_clock::now();
  if (o.ranks > p.seq_len) throw UsageError(fmt::format("--ranks {} exceeds the {} rows of the sequence", o.ranks, p.seq_len));
  if (o.device != Device::cpu) {
    const HostGradients gradients{dout, dq, dk, dv};
    o.ranks > 1 ? gpu_ring_forward(o.config, o.ranks, q, k, v, out, lse_arg, o.backward ? &gradients : nullptr)
                : gpu_forward(o.config, q, k, v, out, lse_arg, o.backward ? &gradients : nullptr,
                              packed ? &cu_seqlens : nullptr);
  } else {
    ProgressLine progress(o.backward ? "run (forward)" : "run", !o.quiet);
    const RingProgress report = [&](std::int64_t done, std::int64_t total) { progress.update(done, total); };
    if (packed) reference_forward_varlen(o.config, q, k, v, cu_seqlens, out, lse_arg, 0, report);
    else if (o.ranks > 1) ring_reference_forward(o.config, o.ranks, q, k, v, out, lse_arg, report);
    else reference_forward(o.config, q, k, v, out, lse_arg, 0, report);
    if (o.backward) {
      ProgressLine gradients("run (backward)", !o.quiet);
      const RingProgress report_gradients = [&](std::int64_t done, std::int64_t total) { gradients.update(done, total); };
      if (packed) reference_backward_varlen(o.config, q, k, v, cu_seqlens, dout, dq, dk, dv);
      else if (o.ranks > 1) ring_reference_backward(o.config, o.ranks, q, k, v, dout, dq, dk, dv, report_gradients);
      else reference_backward(o.config, q, k, v, dout, dq, dk, dv);
    }
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  npy::write(files.file(0), out.dtype, qa.shape, out_bytes.data());
  if (lse_arg) npy::write(files.file(1), DType::f32, {p.batch, p.heads, p.seq_len}, lse_values.data());
  if (o.backward) {
    const std::size_t first = lse_arg ? 2 : 1;
    npy::write(files.file(first), dq.dtype, qa.shape, dq_bytes.data());
    npy::write(files.file(first + 1), dk.dtype, ka.shape, dk_bytes.data());
    npy::write(files.file(first + 2), dv.dtype, ka.shape, dv_bytes.data());
  }
  files.commit();
  if (!o.quiet) {
    fmt::print("wrote {} [{}] {}{}{}: {} branch(es), {:.3g} query-key pairs, {:.2f} s on {}\n", o.out,
               fmt::join(qa.shape, ","), to_string(out.dtype), o.lse.empty() ? "" : " and " + o.lse,
               o.backward ? fmt::format(" and the gradients {}, {}, {}", o.dq, o.dk, o.dv) : "",
               o.config.branches(), double(packed ? attended_pairs(o.config, cu_seqlens, p.heads) : p.batch * attended_pairs(o.config, p.seq_len, p.heads)), seconds,
               o.device != Device::cpu
                   ? device_words() + (o.ranks > 1 ? fmt::format(" ({} ranks, Local transport)", o.ranks) : "")
               : o.ranks > 1 ? fmt::format("the CPU (float64 reference, {} ranks)", o.ranks)
                             : "the CPU (float64 reference)");
  }
}

}  // namespace

void add_run(CLI::App& app) {
  auto o = std::make_shared<RunOptions>();
  CLI::App* cmd = app.add_subcommand(
      "run", "Run dilated attention forward (and with --backward its gradients) on .npy tensors (float32, float16 or float64, C order)");
  cmd->add_option("--q", o->q, "queries [B,N,H,D]")->required()->check(CLI::ExistingFile);
  cmd->add_option("--k", o->k, "keys [B,N,Hkv,D], Hkv dividing H")->required()->check(CLI::ExistingFile);
  cmd->add_option("--v", o->v, "values [B,N,Hkv,D]")->required()->check(CLI::ExistingFile);
  add_int_list(cmd, "--segments", o->config.segments, "segment length per branch, e.g. 2048,4096")->required();
  add_int_list(cmd, "--dilations", o->config.dilations, "dilation rate per branch, e.g. 1,2")->required();
  add_mode(cmd, o->config.mode);
  cmd->add_flag("--causal", o->config.causal, "mask keys after the query row");
  CLI::Option* scale = cmd->add_option("--scale", o->scale, "softmax scale (default 1/sqrt(D))");
  add_device(cmd, o->device, true,
             "where to run: cpu (float64 host reference), cuda (float32 and float64 inputs run in bfloat16) or emulator "
             "(cuda's kernels on the emulated device: slow, for checking kernels without a GPU)");
  cmd->add_option("--ranks", o->ranks,
                  "split the sequence across P ranks exchanging only the dilated rows spanning segments need "
                  "(--device cpu: P ranks of this process stepped together on its threads; cuda or emulator: P ranks on one device)")
      ->capture_default_str()
      ->transform(positive_integer(std::numeric_limits<int>::max()));
  cmd->add_option("--cu-seqlens", o->cu_seqlens,
                  "a packed batch: S + 1 int32 or int64 row offsets (0 first, never decreasing, N last; .npy, 1-D) of S "
                  "sequences lying one after another in the N rows of --q/--k/--v [1,N,heads,D], each attended alone "
                  "(docs/SEMANTICS.md 'Packed sequences'); one rank only")
      ->check(CLI::ExistingFile);
  cmd->add_option("--out", o->out, "output O [B,N,H,D] in Q's dtype (a new file; never an input)")->required();
  cmd->add_option("--lse", o->lse, "also write the log-sum-exp, float32 [B,H,N]");
  cmd->add_flag("--backward", o->backward,
                "also compute the gradients of O for the upstream gradient --dout (cpu: exact in float64; cuda, emulator: one rank takes "
                "head dim 64, 96 or 128, the GPU ring (--ranks P) any multiple of 8 up to 512)");
  cmd->add_option("--dout", o->dout, "with --backward: dO [B,N,H,D], the gradient flowing into O")->check(CLI::ExistingFile);
  cmd->add_option("--dq", o->dq, "with --backward: write dQ [B,N,H,D] in Q's dtype (a new file)");
  cmd->add_option("--dk", o->dk, "with --backward: write dK [B,N,Hkv,D] in K's dtype (a new file)");
  cmd->add_option("--dv", o->dv, "with --backward: write dV [B,N,Hkv,D] in K's dtype (a new file)");
  cmd->add_flag("--quiet,-q", o->quiet, "no progress line and no summary");
  cmd->callback([o, scale] {
    o->scale_given = scale->count() > 0;
    run(*o);
  });
}

}  // namespace dilatron::cli
