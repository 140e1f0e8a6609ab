// The shipped kernels, compiled for the host from the very source NVRTC compiles, run on the emulated
// device in the runtime's launch order (autotune's launch lists, runtime's grids and parameter blocks)
// against the float64 reference.
#include <gtest/gtest.h>

#include <dilatron/reference.hpp>

#include <cmath>
#include <cstdio>
#include <map>
#include <tuple>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "autotune/required_kernels.hpp"
#include "codegen/host_compile.hpp"
#include "emulator/bank_conflicts.hpp"
#include "emulator/emulated_kernel.hpp"
#include "emulator/numerics.hpp"
#include "runtime/launch.hpp"

using namespace dilatron;
using namespace dilatron::emulator;

namespace {

// One compiled object per spec for the whole run: a compile takes about half a second.
const EmulatedKernel& kernel_for(const codegen::KernelSpec& spec) {
  static std::map<std::string, std::unique_ptr<EmulatedKernel>> kernels;
  auto& k = kernels[spec.canonical()];
  if (!k) k = std::make_unique<EmulatedKernel>(codegen::compile_for_host(spec).object, spec.label());
  return *k;
}

void run(const codegen::KernelSpec& spec, const Problem& p, void* params) {
  const LaunchGrid g = launch_grid(spec, p);
  kernel_for(spec).launch(params, {{g.grid[0], g.grid[1], g.grid[2]}, {g.threads, 1, 1}, g.shared_bytes});
}

struct Case {
  Config config;
  DType dtype;
  std::int64_t batch, seq_len, heads, kv_heads, head_dim;

  std::string describe() const {
    std::string s = fmt::format("{} D {} B {} N {} H {}/{} {}", to_string(dtype), head_dim, batch, seq_len, heads, kv_heads,
                                to_string(config.mode));
    for (std::size_t i = 0; i < config.branches(); ++i) s += fmt::format(" ({}, {})", config.segments[i], config.dilations[i]);
    return config.causal ? s + " causal" : s;
  }
};

// A tensor of 16-bit values and its view.
struct Tensor16 {
  std::vector<std::uint16_t> bits;
  TensorView view;
  Tensor16(DType dtype, Shape4 shape, std::mt19937& rng) : bits(std::size_t(shape[0] * shape[1] * shape[2] * shape[3])) {
    std::normal_distribution<float> normal;
    for (auto& b : bits) b = dtype == DType::bf16 ? float_to_bf16(normal(rng)) : float_to_half(normal(rng));
    view = TensorView::contiguous(bits.data(), dtype, shape);
  }
  float at(std::size_t i) const { return view.dtype == DType::bf16 ? bf16_to_float(bits[i]) : half_to_float(bits[i]); }
};

struct Floats {
  std::vector<float> values;
  TensorView view;
  Floats(Shape4 shape, float fill) : values(std::size_t(shape[0] * shape[1] * shape[2] * shape[3]), fill) {
    view = TensorView::contiguous(values.data(), DType::f32, shape);
  }
};

void expect_close(const Tensor16& got, const Floats& expected, double tolerance, const char* what) {
  double worst = 0;
  for (std::size_t i = 0; i < got.bits.size(); ++i) {
    const double e = expected.values[i], error = std::fabs(double(got.at(i)) - e);
    worst = std::max(worst, error / (1 + std::fabs(e)));
    ASSERT_LE(error, tolerance * (1 + std::fabs(e))) << what << " element " << i << ": " << got.at(i) << " vs " << e;
  }
  ::testing::Test::RecordProperty(std::string("worst_") + what, std::to_string(worst));
}

double tolerance(DType dtype) { return dtype == DType::bf16 ? 1e-2 : 2e-3; }

struct Inputs {
  Tensor16 q, k, v;
  Problem problem;
  Inputs(const Case& c, std::mt19937& rng)
      : q(c.dtype, {c.batch, c.seq_len, c.heads, c.head_dim}, rng),
        k(c.dtype, {c.batch, c.seq_len, c.kv_heads, c.head_dim}, rng),
        v(c.dtype, {c.batch, c.seq_len, c.kv_heads, c.head_dim}, rng),
        problem{c.batch, c.seq_len, c.heads, c.kv_heads, c.head_dim, 1 / std::sqrt(double(c.head_dim))} {}
};

autotune::Workload workload(const Case& c) {
  autotune::Workload w;
  w.config = c.config;
  w.dtype = c.dtype;
  w.head_dim = int(c.head_dim);
  w.arch = "sm_90a";
  return w;
}

// The forward pass as ForwardPlan launches it; O and LSE against reference_forward.
void check_forward(const Case& c) {
  SCOPED_TRACE(c.describe());
  std::mt19937 rng(7);
  Inputs in(c, rng);
  const Problem& p = in.problem;
  Tensor16 out(c.dtype, {c.batch, c.seq_len, c.heads, c.head_dim}, rng);  // random: every row must be written
  Floats lse({c.batch, c.heads, c.seq_len, 1}, std::nanf("")), acc({c.batch, c.seq_len, c.heads, c.head_dim}, std::nanf(""));
  ForwardParams params = forward_params(0, p, {in.q.view, in.k.view, in.v.view, out.view, lse.values.data(), acc.values.data()});
  for (const codegen::KernelSpec& spec : autotune::forward_kernels(workload(c))) {
    params.attention.head_begin = launch_grid(spec, p).head_begin;
    run(spec, p, params.for_spec(spec));
  }
  Floats expected(out.view.shape, 0), expected_lse(lse.view.shape, 0);
  reference_forward(c.config, in.q.view, in.k.view, in.v.view, expected.view, &expected_lse.view);
  expect_close(out, expected, tolerance(c.dtype), "out");
  for (std::size_t i = 0; i < lse.values.size(); ++i) {
    const double e = expected_lse.values[i];
    if (std::isinf(e)) {
      ASSERT_EQ(lse.values[i], e) << "lse " << i;
    } else {
      ASSERT_NEAR(lse.values[i], e, 1e-3 * (1 + std::fabs(e))) << "lse " << i;
    }
  }
}

// Rounds reference values to the 16-bit tensor the GPU pass would have produced.
Tensor16 rounded(DType dtype, const Floats& x, std::mt19937& rng) {
  Tensor16 t(dtype, x.view.shape, rng);
  for (std::size_t i = 0; i < t.bits.size(); ++i) {
    t.bits[i] = dtype == DType::bf16 ? float_to_bf16(x.values[i]) : float_to_half(x.values[i]);
  }
  return t;
}

// The backward pass as BackwardPlan launches it, from the forward's O and LSE; dQ, dK and dV against
// reference_backward.
void check_backward(const Case& c) {
  SCOPED_TRACE(c.describe());
  std::mt19937 rng(9);
  Inputs in(c, rng);
  const Problem& p = in.problem;
  const Shape4 q_shape{c.batch, c.seq_len, c.heads, c.head_dim}, kv_shape{c.batch, c.seq_len, c.kv_heads, c.head_dim};
  Floats o(q_shape, 0), lse({c.batch, c.heads, c.seq_len, 1}, 0);
  reference_forward(c.config, in.q.view, in.k.view, in.v.view, o.view, &lse.view);
  const Tensor16 out = rounded(c.dtype, o, rng), dout(c.dtype, q_shape, rng);
  Tensor16 dq(c.dtype, q_shape, rng), dk(c.dtype, kv_shape, rng), dv(c.dtype, kv_shape, rng);
  Floats delta({c.batch, c.heads, c.seq_len, 1}, std::nanf("")), dq_acc(q_shape, 0), dk_acc(kv_shape, 0), dv_acc(kv_shape, 0);
  for (const codegen::KernelSpec& spec : autotune::backward_kernels(workload(c))) {
    if (spec.op == codegen::Op::gradient_prepare) {
      args::GradientPrepareArgs a{tensor4(out.view), tensor4(dout.view), delta.values.data(), p.batch, p.seq_len, p.heads};
      run(spec, p, &a);
    } else if (spec.op == codegen::Op::attention_backward) {
      args::AttentionBackwardArgs a{tensor4(in.q.view), tensor4(in.k.view), tensor4(in.v.view), tensor4(dout.view),
                                    lse.values.data(), delta.values.data(), dq_acc.values.data(), dk_acc.values.data(),
                                    dv_acc.values.data(), p.batch, p.seq_len, p.heads, p.kv_heads,
                                    launch_grid(spec, p).head_begin, float(p.scale * 1.4426950408889634), float(p.scale), 0, 0, 0, nullptr};
      run(spec, p, &a);
    } else {
      for (auto [to, from, heads] : {std::tuple{&dq, &dq_acc, p.heads}, std::tuple{&dk, &dk_acc, p.kv_heads},
                                     std::tuple{&dv, &dv_acc, p.kv_heads}}) {
        args::FinishArgs a{tensor4(to->view), {nullptr, {0, 0, 0, 0}}, from->values.data(), nullptr, p.batch, p.seq_len, heads, 1.f};
        Problem rows = p;
        rows.heads = heads;
        run(spec, rows, &a);
      }
    }
  }
  Floats edq(q_shape, 0), edk(kv_shape, 0), edv(kv_shape, 0);
  reference_backward(c.config, in.q.view, in.k.view, in.v.view, dout.view, edq.view, edk.view, edv.view);
  expect_close(dq, edq, 2 * tolerance(c.dtype), "dq");
  expect_close(dk, edk, 2 * tolerance(c.dtype), "dk");
  expect_close(dv, edv, 2 * tolerance(c.dtype), "dv");
}

Config config(std::vector<std::int64_t> w, std::vector<std::int64_t> r, bool causal = false, Mode mode = Mode::longnet) {
  Config c;
  c.segments = std::move(w);
  c.dilations = std::move(r);
  c.causal = causal;
  c.mode = mode;
  return c;
}

}  // namespace

TEST(EmulatedKernels, BackwardMatchesTheReference) {
  const Case cases[] = {
      {config({128}, {2}), DType::bf16, 1, 256, 4, 2, 64},
      {config({96}, {3}, true), DType::f16, 2, 200, 2, 1, 64},
      {config({64, 128}, {1, 2}), DType::bf16, 1, 256, 4, 4, 128},
      {config({64, 160}, {2, 5}, true), DType::f16, 1, 224, 2, 2, 96},
      {config({64, 128}, {1, 2}, false, Mode::head_groups), DType::bf16, 1, 256, 4, 2, 64},
  };
  for (const Case& c : cases) {
    check_backward(c);
    if (HasFatalFailure()) return;
  }
}

TEST(EmulatedKernels, ForwardMatchesTheReference) {
  const Case cases[] = {
      // One branch with r > 1 (clear_output, then attention_forward), GQA.
      {config({128}, {2}), DType::bf16, 1, 256, 4, 2, 64},
      // Causal, r not dividing w, a partial last segment, two batch elements.
      {config({96}, {3}, true), DType::f16, 2, 200, 2, 1, 64},
      // Several longnet branches: attention_partial (r = 1), attention_partial_merge, finish_output.
      {config({64, 128, 256}, {1, 2, 4}), DType::bf16, 1, 256, 4, 4, 128},
      {config({64, 160}, {2, 5}, true), DType::f16, 1, 224, 2, 2, 96},
      // No r = 1 branch: clear_output<float> empties the accumulator first.
      {config({128, 256}, {2, 4}, true), DType::bf16, 1, 256, 4, 1, 64},
      // head_groups: one branch per group of heads, each writing O directly.
      {config({64, 128}, {1, 2}, false, Mode::head_groups), DType::bf16, 1, 256, 4, 2, 64},
      {config({128}, {1}), DType::f16, 1, 128, 1, 1, 256},
  };
  for (const Case& c : cases) {
    check_forward(c);
    if (HasFatalFailure()) return;
  }
}

// Every shared-memory request of the forward and backward kernels (cp.async tiles, ldmatrix fragments,
// st.shared) takes the conflict-free minimum of wavefronts, for each head dimension's tiles. The table
// printed is bench/NOTES.md's.
TEST(EmulatedKernels, SharedMemoryRequestsHaveNoBankConflicts) {
  struct Profiling {
    Profiling() { set_bank_profiling(true), reset_bank_profiles(); }
    ~Profiling() { set_bank_profiling(false); }
  } profiling;
  for (const int d : {64, 96, 128, 256}) {
    const Case c{config({64, 128}, {1, 2}, true), d == 96 ? DType::f16 : DType::bf16, 1, 128, 2, 1, d};
    check_forward(c);
    if (d != 256) check_backward(c);
    if (HasFatalFailure()) return;
  }
  const auto profiles = bank_profiles();
  ASSERT_GE(profiles.size(), 8u);
  std::uint64_t ldmatrix = 0, copies = 0;
  for (const auto& [kernel, profile] : profiles) {
    for (std::size_t op = 0; op < profile.size(); ++op) {
      EXPECT_TRUE(profile[op].conflict_free()) << kernel << " " << kSharedOpNames[op] << ": " << profile[op].wavefronts
                                               << " wavefronts where " << profile[op].needed << " would do";
    }
    ldmatrix += profile[std::size_t(SharedOp::ldmatrix)].requests;
    copies += profile[std::size_t(SharedOp::cp_async)].requests;
  }
  EXPECT_GT(ldmatrix, 0u);
  EXPECT_GT(copies, 0u);
  std::printf("%s", bank_profile_table().c_str());
}
