// The GPU forward pass against the float64 host reference on random configurations: both modes, causal,
// partial segments, r not dividing w, GQA, float16 and bfloat16, head dims 64 and 128. Outputs are
// poisoned before every launch. Skipped without a GPU.
#include <gtest/gtest.h>

#include <dilatron/dilatron.hpp>

#include <cmath>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "runtime/device_buffer.hpp"
#include "runtime/driver.hpp"
#include "runtime/ring/device_sync.hpp"
#include "tests/support/device_case.hpp"

using namespace dilatron;
using namespace dilatron::test;

namespace {

class GpuForward : public GpuTest {};

// Runs the case on the GPU; lse == false runs without an LSE tensor (the call's own workspace).
GpuResult run_gpu(RandomCase& c, bool with_lse = true) {
  const DeviceCase device(c);
  const TensorView lse_view = device.lse();
  DilatedAttention attention(c.config);
  attention.forward(device.q(), device.k(), device.v(), device.out(), with_lse ? &lse_view : nullptr, nullptr);
  DILATRON_CU(cuCtxSynchronize());
  return device.result();
}

Reference reference(RandomCase& c) {
  std::vector<float> out(std::size_t(c.B * c.N * c.H * c.D)), lse(std::size_t(c.B * c.H * c.N));
  const auto o = TensorView::contiguous(out.data(), DType::f32, c.q_shape());
  const auto l = TensorView::contiguous(lse.data(), DType::f32, {c.B, c.H, c.N, 1});
  reference_forward(c.config, c.q_view(), c.k_view(), c.v_view(), o, &l);
  return {{out.begin(), out.end()}, {lse.begin(), lse.end()}};
}

}  // namespace

TEST_F(GpuForward, MatchesTheHostReferenceOnRandomConfigurations) {
  std::mt19937_64 rng(20261122);
  for (int trial = 0; trial < gpu_or_emulated(32, 8); ++trial) {  // 8: every head dim in both dtypes
    RandomCase c = gpu_case(rng, trial, {64, 128, 96, 256});
    SCOPED_TRACE(fmt::format("trial {}: {}", trial, c.describe()));
    expect_forward_close(run_gpu(c), reference(c), c.dtype);
  }
}

TEST_F(GpuForward, LongNetScheduleWithoutAnLseTensor) {
  std::mt19937_64 rng(5);
  RandomCase c;
  c.dtype = DType::bf16;
  const std::int64_t n = gpu_or_emulated(4096, 1024);
  c.B = 1, c.N = n + 77, c.H = 8, c.Hkv = 4, c.D = 128;
  c.config.segments = {n / 8, n / 4, n / 2, n};
  c.config.dilations = {1, 2, 6, 12};
  fill_inputs(c, rng);
  const GpuResult got = run_gpu(c, false);
  expect_forward_close(got, reference(c), c.dtype, false);
  // Four branches merge in fp32 and round once: no worse than one bf16 rounding of the result.
  EXPECT_LE(l2_relative(got.out, reference(c).out), 6e-3);
}

TEST_F(GpuForward, RejectsWhatTheKernelsCannotRun) {
  Config config;
  config.segments = {64};
  config.dilations = {1};
  DilatedAttention attention(config);
  DeviceBuffer buffer(1 << 20);
  const auto d32 = TensorView::contiguous(buffer.get(), DType::f16, {1, 64, 2, 32});
  EXPECT_THROW(attention.forward(d32, d32, d32, d32), Error);
  const auto f32 = TensorView::contiguous(buffer.get(), DType::f32, {1, 64, 2, 64});
  EXPECT_THROW(attention.forward(f32, f32, f32, f32), Error);
  TensorView strided = TensorView::contiguous(buffer.get(), DType::f16, {1, 64, 2, 64});
  strided.strides[1] = 2 * 64 + 4;  // rows no longer 16-byte aligned
  EXPECT_THROW(attention.forward(strided, strided, strided, strided), Error);
}

// Two threads, each on its own non-blocking stream, call one DilatedAttention with one shape (so one
// plan) and no LSE tensor, 20 times each without waiting. The {64, 128} / {1, 2} schedule makes the second
// branch merge into the LSE the first wrote in the same call, so calls sharing LSE scratch would read
// each other's rows (each thread has its own inputs); every call must match its own reference. Each
// call writes its own poisoned output, so a call that went wrong stays visible after later ones.
TEST_F(GpuForward, ConcurrentCallsFromTwoThreadsOnTheirOwnStreams) {
  constexpr int kThreads = 2, kInputs = 2;  // a thread's calls alternate over its 2 inputs
  const int kCalls = gpu_or_emulated(20, 4);
  Config config;
  config.segments = {64, 128};
  config.dilations = {1, 2};
  std::mt19937_64 rng(424242);
  std::vector<RandomCase> cases(kThreads * kInputs);  // thread t's input i: cases[t * kInputs + i]
  for (RandomCase& c : cases) {
    c.config = config;
    c.dtype = DType::bf16;
    c.B = 1, c.N = gpu_or_emulated(2048, 256) + 40, c.H = 8, c.Hkv = 4, c.D = 64;  // a partial last segment in both branches
    fill_inputs(c, rng);
  }
  const CUcontext context = driver::current_context();
  std::vector<std::unique_ptr<DeviceCase>> inputs;
  for (const RandomCase& c : cases) inputs.push_back(std::make_unique<DeviceCase>(c));
  const std::size_t out_bytes = cases[0].q.size();
  const std::vector<std::uint16_t> poison(out_bytes / 2, DeviceCase::kPoison);
  std::vector<std::unique_ptr<DeviceBuffer>> outs;  // thread t's call i: outs[t * kCalls + i]
  for (int i = 0; i < kThreads * kCalls; ++i) {
    outs.push_back(std::make_unique<DeviceBuffer>(out_bytes));
    outs.back()->upload(poison.data());
  }

  DilatedAttention attention(config);
  std::vector<std::string> errors(kThreads);
  auto worker = [&](int t) {
    try {
      // Worker threads have no current context; the first call of either builds the plan while the
      // other waits on the plan cache, so both then enqueue their calls at the same time.
      const ring::ContextScope scope(context);
      const ring::Stream stream;  // cuStreamCreate(CU_STREAM_NON_BLOCKING)
      for (int call = 0; call < kCalls; ++call) {
        const DeviceCase& in = *inputs[std::size_t(t * kInputs + call % kInputs)];
        const auto out = TensorView::contiguous(outs[std::size_t(t * kCalls + call)]->get(), DType::bf16, cases[0].q_shape());
        attention.forward(in.q(), in.k(), in.v(), out, nullptr, stream.get());
      }
      DILATRON_CU(cuStreamSynchronize(stream.get()));
    } catch (const std::exception& e) {
      errors[std::size_t(t)] = e.what();
    }
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) threads.emplace_back(worker, t);
  for (std::thread& thread : threads) thread.join();
  for (int t = 0; t < kThreads; ++t) ASSERT_EQ(errors[std::size_t(t)], "") << "thread " << t;

  std::vector<Reference> want;
  for (RandomCase& c : cases) want.push_back(reference(c));
  for (int t = 0; t < kThreads; ++t) {
    for (int call = 0; call < kCalls; ++call) {
      SCOPED_TRACE(fmt::format("thread {} call {}", t, call));
      std::vector<std::uint16_t> raw(out_bytes / 2);
      outs[std::size_t(t * kCalls + call)]->download(raw.data());
      GpuResult got;
      for (std::size_t i = 0; i < raw.size(); ++i) got.out.push_back(load_element(raw.data(), DType::bf16, std::int64_t(i)));
      expect_forward_close(got, want[std::size_t(t * kInputs + call % kInputs)], DType::bf16, false);
    }
  }
}
