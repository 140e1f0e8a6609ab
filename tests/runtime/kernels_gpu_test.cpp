// The JIT-built row-moving and merge kernels on a real GPU against host computations. Skipped without a
// GPU. Inputs are random, outputs poisoned before every launch.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

#include "autotune/policy.hpp"
#include "cache/kernel_cache.hpp"
#include "common/dtype.hpp"
#include "common/dynlib.hpp"
#include "common/env.hpp"
#include "runtime/device_buffer.hpp"
#include "runtime/driver.hpp"
#include "runtime/loaded_kernels.hpp"
#include "templates/dilatron/args.cuh"
#include "templates/dilatron/index.cuh"
#include "tests/support/temp_dir.hpp"

using namespace dilatron;

namespace {

constexpr std::uint16_t kPoison = 0x7fff;  // a NaN in both f16 and bf16

class GpuKernels : public ::testing::Test {
 protected:
  void SetUp() override {
    const driver::Status status = driver::probe();
    if (status.devices.empty()) GTEST_SKIP() << "no GPU: " << status.problem;
    arch_ = driver::arch_name(status.devices.front().cc_major, status.devices.front().cc_minor);
    cache::CacheOptions o;
    o.dir = dir_ / "cache";
    o.max_bytes = 1 << 30;
    o.compile_jobs = 2;
    cache_ = std::make_unique<cache::KernelCache>(o);
  }

  std::shared_ptr<const cache::Entry> entry(codegen::KernelSpec spec) {
    spec.arch = arch_;
    return cache_->get(autotune::with_tiles(spec)).entry;
  }

  CUfunction function(const codegen::KernelSpec& spec) { return launchable(LoadedKernels::global().kernel(*entry(spec))); }

  static void launch(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned threads, void* args) {
    void* params[] = {args};
    DILATRON_CU(cuLaunchKernel(f, gx, gy, gz, threads, 1, 1, 0, nullptr, params, nullptr));
    DILATRON_CU(cuCtxSynchronize());
  }

  test::TempDir dir_;
  std::string arch_;
  std::unique_ptr<cache::KernelCache> cache_;
};

std::vector<std::uint16_t> random_bits(std::size_t n, DType dtype, std::mt19937_64& rng) {
  std::normal_distribution<float> normal;
  std::vector<std::uint16_t> out(n);
  for (auto& x : out) x = dtype == DType::f16 ? float_to_half_bits(normal(rng)) : float_to_bf16_bits(normal(rng));
  return out;
}

}  // namespace

TEST_F(GpuKernels, PackThenUnpackMovesExactlyTheSelectedRows) {
  std::mt19937_64 rng(42);
  for (int trial = 0; trial < 12; ++trial) {
    const long long B = 2, N = 200 + trial * 37, H = 8, Hkv = trial % 2 ? 2 : 8, D = trial % 3 ? 128 : 64;
    const long long w = std::vector<long long>{16, 48, 64, 100}[trial % 4], r = trial % 5 + 1;
    const bool head_groups = trial % 3 == 2;
    const long long groups = head_groups ? 2 : 1, group = head_groups ? trial % 2 : 0;
    const DType dtype = trial % 2 ? DType::bf16 : DType::f16;
    const long long row_begin = trial * 5, row_end = N - trial * 3;
    SCOPED_TRACE(::testing::Message() << "trial " << trial << " N=" << N << " w=" << w << " r=" << r);

    codegen::KernelSpec spec;
    spec.op = codegen::Op::pack_rows;
    spec.dtype = dtype;
    spec.head_dim = int(D);
    spec.branches = {{w, r}};
    if (head_groups) spec.mode = Mode::head_groups, spec.group = int(group), spec.groups = int(groups);
    const CUfunction pack = function(spec);
    spec.op = codegen::Op::unpack_rows;
    const CUfunction unpack = function(spec);

    const auto kv = random_bits(std::size_t(B * N * Hkv * D), dtype, rng);
    const long long rows_per_head = N;
    DeviceBuffer kv_dev(kv.size() * 2), packed_dev(std::size_t(B * H * rows_per_head * D) * 2),
        full_dev(std::size_t(B * N * H * D) * 2);
    kv_dev.upload(kv.data());
    std::vector<std::uint16_t> packed(packed_dev.bytes() / 2, kPoison), full(full_dev.bytes() / 2, kPoison);
    packed_dev.upload(packed.data());
    full_dev.upload(full.data());

    args::PackArgs a{{kv_dev.get(), {N * Hkv * D, Hkv * D, D, 1}}, packed_dev.get(), B, H, Hkv, row_begin, row_end,
                     rows_per_head};
    launch(pack, 4, unsigned(H), unsigned(B), 128, &a);
    packed_dev.download(packed.data());
    args::PackArgs u{{full_dev.get(), {N * H * D, H * D, D, 1}}, packed_dev.get(), B, H, H, row_begin, row_end,
                     rows_per_head};
    launch(unpack, 4, unsigned(H), unsigned(B), 128, &u);
    full_dev.download(full.data());

    const int mode = head_groups ? index::kHeadGroups : index::kLongnet;
    for (long long b = 0; b < B; ++b) {
      for (long long h = 0; h < H; ++h) {
        const long long o = index::branch_offset(mode, h, H, group, groups, r), kvh = index::kv_head(h, H, Hkv);
        long long j = 0;
        for (long long n = 0; n < N; ++n) {
          const bool moved = o >= 0 && n >= row_begin && n < row_end && index::is_selected(n, w, o, r);
          for (long long d = 0; d < D; ++d) {
            const std::uint16_t expected = moved ? kv[std::size_t(((b * N + n) * Hkv + kvh) * D + d)] : kPoison;
            ASSERT_EQ(full[std::size_t(((b * N + n) * H + h) * D + d)], expected) << "b" << b << " h" << h << " n" << n;
            if (moved) {
              ASSERT_EQ(packed[std::size_t(((b * H + h) * rows_per_head + j) * D + d)], expected);
            }
          }
          j += moved;
        }
        for (; j < rows_per_head; ++j) {  // nothing written past the rows this head packs
          ASSERT_EQ(packed[std::size_t(((b * H + h) * rows_per_head + j) * D)], kPoison);
        }
      }
    }
  }
}

TEST_F(GpuKernels, MergeMatchesTheHostLseMerge) {
  std::mt19937_64 rng(7);
  for (DType dtype : {DType::f16, DType::bf16}) {
    const long long B = 2, N = 333, H = 6, D = 128;
    codegen::KernelSpec spec;
    spec.dtype = dtype;
    spec.head_dim = int(D);
    const CUfunction merge = function(spec);
    auto out = random_bits(std::size_t(B * N * H * D), dtype, rng), other = random_bits(out.size(), dtype, rng);
    std::vector<float> lse(std::size_t(B * H * N)), other_lse(lse.size());
    std::uniform_real_distribution<float> u(-3, 3);
    const float inf = std::numeric_limits<float>::infinity();
    for (std::size_t i = 0; i < lse.size(); ++i) {
      lse[i] = i % 7 == 0 ? -inf : u(rng);  // rows missing on one side, both sides, or neither
      other_lse[i] = i % 5 == 0 ? -inf : u(rng);
    }
    for (long long b = 0; b < B; ++b) {  // a row with no keys anywhere holds O = 0 on both sides
      for (long long n = 0; n < N; ++n) {
        for (long long h = 0; h < H; ++h) {
          if (!std::isinf(lse[std::size_t((b * H + h) * N + n)]) || !std::isinf(other_lse[std::size_t((b * H + h) * N + n)])) continue;
          for (long long d = 0; d < D; ++d) out[std::size_t(((b * N + n) * H + h) * D + d)] = other[std::size_t(((b * N + n) * H + h) * D + d)] = 0;
        }
      }
    }
    DeviceBuffer out_dev(out.size() * 2), other_dev(out.size() * 2), lse_dev(lse.size() * 4), other_lse_dev(lse.size() * 4);
    out_dev.upload(out.data());
    other_dev.upload(other.data());
    lse_dev.upload(lse.data());
    other_lse_dev.upload(other_lse.data());
    args::MergeArgs a{{out_dev.get(), {N * H * D, H * D, D, 1}},
                      {other_dev.get(), {N * H * D, H * D, D, 1}},
                      static_cast<float*>(lse_dev.get()),
                      static_cast<const float*>(other_lse_dev.get()),
                      B, N, H};
    const long long rows = B * N * H, rows_per_block = 4;
    launch(merge, unsigned((rows + rows_per_block - 1) / rows_per_block), 1, 1, 128, &a);
    std::vector<std::uint16_t> got(out.size());
    std::vector<float> got_lse(lse.size());
    out_dev.download(got.data());
    lse_dev.download(got_lse.data());

    double max_err = 0, max_ref = 0;
    for (long long b = 0; b < B; ++b) {
      for (long long n = 0; n < N; ++n) {
        for (long long h = 0; h < H; ++h) {
          const std::size_t li = std::size_t((b * H + h) * N + n);
          const double la = lse[li], lb = other_lse[li], hi = std::max(la, lb), lo = std::min(la, lb);
          const double merged = std::isinf(hi) ? hi : hi + std::log1p(std::exp(lo - hi));
          if (std::isinf(merged)) {
            ASSERT_TRUE(std::isinf(got_lse[li]) && got_lse[li] < 0);
          } else {
            ASSERT_NEAR(got_lse[li], merged, 1e-5 * std::max(1.0, std::fabs(merged)));
          }
          for (long long d = 0; d < D; ++d) {
            const std::size_t i = std::size_t(((b * N + n) * H + h) * D + d);
            const double wa = std::isinf(merged) ? 0 : std::exp(la - merged), wb = std::isinf(merged) ? 0 : std::exp(lb - merged);
            const double want = wa * load_element(out.data(), dtype, std::int64_t(i)) + wb * load_element(other.data(), dtype, std::int64_t(i));
            const double value = load_element(got.data(), dtype, std::int64_t(i));
            ASSERT_FALSE(std::isnan(value)) << "element " << i;
            max_err = std::max(max_err, std::fabs(value - want));
            max_ref = std::max(max_ref, std::fabs(want));
          }
        }
      }
    }
    EXPECT_LE(max_err / max_ref, dtype == DType::bf16 ? 1e-2 : 3e-3) << to_string(dtype);
  }
}

namespace {

// Contexts of the test's own making: the library never creates one, so these calls are not in its table.
#define TEST_CONTEXT_CALLS(X) \
  X(cuCtxCreate)              \
  X(cuCtxDestroy)
struct ContextApi {
  TEST_CONTEXT_CALLS(DILATRON_TABLE_MEMBER)
};

// Poisons O and LSE of a [B,N,H,D] problem, launches clear_output in the current context and checks
// every row came back O = 0, LSE = -inf.
void expect_clear_works(CUkernel kernel, unsigned dynamic_shared, std::mt19937_64& rng) {
  const long long B = 2, N = 100 + static_cast<long long>(rng() % 200), H = 3, D = 64;
  std::vector<std::uint16_t> out(std::size_t(B * N * H * D));
  for (auto& x : out) x = std::uint16_t(rng() | 1);
  std::vector<float> lse(std::size_t(B * H * N), 1.5f);
  DeviceBuffer out_dev(out.size() * 2), lse_dev(lse.size() * 4);
  out_dev.upload(out.data());
  lse_dev.upload(lse.data());
  const args::Tensor4 o{out_dev.get(), {N * H * D, H * D, D, 1}};
  args::MergeArgs a{o, o, static_cast<float*>(lse_dev.get()), static_cast<const float*>(lse_dev.get()), B, N, H};
  void* params[] = {&a};
  DILATRON_CU(cuLaunchKernel(launchable(kernel), unsigned((B * N * H + 3) / 4), 1, 1, 128, 1, 1, dynamic_shared,
                             nullptr, params, nullptr));
  DILATRON_CU(cuCtxSynchronize());
  out_dev.download(out.data());
  lse_dev.download(lse.data());
  for (std::size_t i = 0; i < out.size(); ++i) ASSERT_EQ(out[i], 0) << "element " << i;
  for (std::size_t i = 0; i < lse.size(); ++i) ASSERT_TRUE(std::isinf(lse[i]) && lse[i] < 0) << "row " << i;
}

}  // namespace

TEST_F(GpuKernels, OneLoadedKernelRunsInContextsCreatedAndDestroyedAfterIt) {
  // What this checks is libcuda's: context-independent kernel handles across contexts of its making.
  if (env::emulated_device()) GTEST_SKIP() << "needs libcuda's contexts; the emulated device has one context";
  const auto ctx = load_table<ContextApi>({{"libcuda.so.1"}, "the CUDA driver", ""},
                                          DILATRON_BIND_CALLS(TEST_CONTEXT_CALLS));
  if (!ctx.error.empty()) GTEST_SKIP() << ctx.error;
  codegen::KernelSpec spec;
  spec.op = codegen::Op::clear_output;
  spec.dtype = DType::f16;
  spec.head_dim = 64;
  const auto clear = entry(spec);
  ASSERT_EQ(autotune::with_tiles(spec).tiles.warps, 4) << "expect_clear_works launches 4 warps per block";

  std::mt19937_64 rng(99);
  const CUcontext primary = driver::current_context();
  const CUkernel kernel = LoadedKernels::global().kernel(*clear);
  ASSERT_NO_FATAL_FAILURE(expect_clear_works(kernel, 0, rng));
  allow_dynamic_shared(kernel, 64 << 10);  // beyond the default 48 KiB: refused at launch unless raised
  ASSERT_NO_FATAL_FAILURE(expect_clear_works(kernel, 64 << 10, rng));

  CUdevice device;
  DILATRON_CU(cuCtxGetDevice(&device));
  for (int round = 0; round < 3; ++round) {
    SCOPED_TRACE(::testing::Message() << "context " << round);
    CUcontext fresh = nullptr;
    driver::check(ctx.api.cuCtxCreate(&fresh, nullptr, 0, device), "cuCtxCreate");
    EXPECT_EQ(LoadedKernels::global().kernel(*clear), kernel) << "loaded once per process, not per context";
    allow_dynamic_shared(kernel, 64 << 10);
    ASSERT_NO_FATAL_FAILURE(expect_clear_works(kernel, 64 << 10, rng));
    driver::check(ctx.api.cuCtxDestroy(fresh), "cuCtxDestroy");
    DILATRON_CU(cuCtxSetCurrent(primary));
  }
  ASSERT_NO_FATAL_FAILURE(expect_clear_works(kernel, 0, rng));  // the primary context still runs it
}
