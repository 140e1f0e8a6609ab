// What the GPU path refuses before touching the device: checked on the host, no GPU needed.
#include <gtest/gtest.h>

#include <dilatron/error.hpp>

#include <fmt/format.h>

#include "runtime/problem.hpp"

using namespace dilatron;

namespace {

alignas(16) std::uint16_t storage[5][1 << 16];  // q, k, v, out, lse: disjoint unless a test says otherwise

TensorView view(int i, DType dtype = DType::bf16, std::int64_t d = 64) {
  return TensorView::contiguous(storage[i], dtype, {1, 128, 2, d});
}

void expect_refused(const char* needle, TensorView q, TensorView k, TensorView v, TensorView out,
                    const TensorView* lse = nullptr) {
  const Problem p{q.shape[0], q.shape[1], q.shape[2], k.shape[2], q.shape[3], 0.125};
  try {
    validate_for_gpu(p, q, k, v, out, lse);
    ADD_FAILURE() << "accepted; expected an error containing " << needle;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

// A float32 [B,H,N,1] LSE for view()'s shape, `offset` 2-byte elements into storage[i].
TensorView lse_at(int i, std::ptrdiff_t offset = 0) {
  return TensorView::contiguous(storage[i] + offset, DType::f32, {1, 2, 128, 1});
}

}  // namespace

TEST(ValidateForGpu, AcceptsTheSupportedLayouts) {
  const Problem p{1, 128, 2, 2, 64, 0.125};
  EXPECT_NO_THROW(validate_for_gpu(p, view(0), view(1), view(2), view(3), nullptr));
  // q, k, v as strided slices of one fused [B, N, 3, H, D] buffer: fine, as long as out is elsewhere.
  TensorView fused = TensorView::contiguous(storage[0], DType::f16, {1, 128, 2, 64});
  fused.strides = {128 * 3 * 2 * 64, 3 * 2 * 64, 64, 1};
  TensorView k = fused, v = fused;
  k.data = storage[0] + 2 * 64;
  v.data = storage[0] + 4 * 64;
  EXPECT_NO_THROW(validate_for_gpu(p, fused, k, v, view(3, DType::f16), nullptr));
}

TEST(ValidateForGpu, RefusesWhatTheKernelsCannotRun) {
  expect_refused("float16 or bfloat16", view(0, DType::f32), view(1, DType::f32), view(2, DType::f32), view(3, DType::f32));
  expect_refused("out is f16 but q is bf16", view(0), view(1), view(2), view(3, DType::f16));
  expect_refused("head dim 32", view(0, DType::bf16, 32), view(1, DType::bf16, 32), view(2, DType::bf16, 32),
                 view(3, DType::bf16, 32));
  TensorView odd = view(1);
  odd.strides[1] = 2 * 64 + 4;
  expect_refused("stride[1] = 132", view(0), odd, view(2), view(3));
  TensorView transposed = view(2);
  transposed.strides[3] = 2;
  expect_refused("innermost (D) stride", view(0), view(1), transposed, view(3));
  TensorView unaligned = view(0);
  unaligned.data = storage[0] + 1;
  expect_refused("16-byte aligned", unaligned, view(1), view(2), view(3));
  TensorView lse = lse_at(4);
  lse.strides[2] = 2;
  expect_refused("lse must be contiguous", view(0), view(1), view(2), view(3, DType::bf16), &lse);
}

TEST(ValidateForGpu, RefusesAnOutputOverlappingAnInput) {
  expect_refused("out overlaps q", view(0), view(1), view(2), view(0));
  TensorView tail = view(1);
  tail.data = storage[1] + 8000;  // starts inside k
  expect_refused("out overlaps k", view(0), view(1), view(2), tail);
}

TEST(ValidateForGpu, RefusesNegativeStridesNamingTheTensor) {
  // Each of q, k, v and out in turn walks backwards along one dimension (a flipped sequence, a reversed
  // batch): the message names the tensor and the stride.
  const char* names[] = {"q", "k", "v", "out"};
  for (int t = 0; t < 4; ++t) {
    for (int d = 0; d < 3; ++d) {
      TensorView views[] = {view(0), view(1), view(2), view(3)};
      views[t].strides[d] = -views[t].strides[d];
      SCOPED_TRACE(fmt::format("{} stride[{}]", names[t], d));
      expect_refused(fmt::format("{}: stride[{}] = {} is negative", names[t], d, views[t].strides[d]).c_str(), views[0],
                     views[1], views[2], views[3]);
    }
  }
  TensorView reversed_d = view(2);
  reversed_d.strides[3] = -1;  // named as negative, not as a non-unit innermost stride
  expect_refused("v: stride[3] = -1 is negative", view(0), view(1), reversed_d, view(3));
  TensorView lse = lse_at(4);
  lse.strides[2] = -1;
  expect_refused("lse: stride[2] = -1 is negative", view(0), view(1), view(2), view(3), &lse);
}

TEST(ValidateForGpu, RefusesAnLseOverlappingAnyTensor) {
  const TensorView into_q = lse_at(0), into_k = lse_at(1, 4096), into_v = lse_at(2, 16384 - 8);
  expect_refused("lse overlaps q", view(0), view(1), view(2), view(3), &into_q);
  expect_refused("lse overlaps k", view(0), view(1), view(2), view(3), &into_k);
  expect_refused("lse overlaps v", view(0), view(1), view(2), view(3), &into_v);  // starts inside v's last row
  const TensorView into_out = lse_at(3, 16384 - 2);  // only its first float shares out's last bytes
  expect_refused("lse overlaps out", view(0), view(1), view(2), view(3), &into_out);
}

TEST(ValidateForGpu, AcceptsAnLseBesideTheOtherTensors) {
  const Problem p{1, 128, 2, 2, 64, 0.125};
  const TensorView separate = lse_at(4);
  EXPECT_NO_THROW(validate_for_gpu(p, view(0), view(1), view(2), view(3), &separate));
  const TensorView adjacent = lse_at(3, 16384);  // starts at out's first byte past the end
  EXPECT_NO_THROW(validate_for_gpu(p, view(0), view(1), view(2), view(3), &adjacent));
}

TEST(ValidateForGpu, TheBackwardRefusesWhatItsKernelsCannotRun) {
  alignas(16) static std::uint16_t grads[4][1 << 14];  // dout, dq, dk, dv
  const auto grad = [](int i, DType dtype = DType::bf16, std::int64_t d = 64) {
    return TensorView::contiguous(grads[i], dtype, {1, 128, 2, d});
  };
  const Problem p{1, 128, 2, 2, 64, 0.125};
  const TensorView lse = lse_at(4);
  EXPECT_NO_THROW(validate_backward_for_gpu(p, view(0), view(1), view(2), view(3), lse, grad(0), grad(1), grad(2), grad(3)));
  const auto refused = [&](const char* needle, const TensorView& dout, const TensorView& dq, const TensorView& dk,
                           const TensorView& dv, const Problem& problem) {
    try {
      validate_backward_for_gpu(problem, view(0), view(1), view(2), view(3), lse, dout, dq, dk, dv);
      ADD_FAILURE() << "accepted; expected an error containing " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  refused("dq is f16 but q is bf16", grad(0), grad(1, DType::f16), grad(2), grad(3), p);
  refused("dk overlaps q", grad(0), grad(1), view(0), grad(3), p);
  refused("dq overlaps dout", grad(0), grad(0), grad(2), grad(3), p);
  refused("dk overlaps dv", grad(0), grad(1), grad(2), grad(2), p);
  TensorView strided = grad(3);
  strided.strides[3] = 2;
  refused("dv: the GPU path needs the innermost (D) stride to be 1", grad(0), grad(1), grad(2), strided, p);
  const Problem wide{1, 128, 2, 2, 256, 0.125};
  refused("head dim 256 has no GPU backward kernel yet", grad(0, DType::bf16, 256), grad(1, DType::bf16, 256),
          grad(2, DType::bf16, 256), grad(3, DType::bf16, 256), wide);
}
