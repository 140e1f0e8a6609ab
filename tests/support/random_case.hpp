// Random dilated-attention problems that reach the corners of the definition: N smaller than w, prime N,
// r larger than w, r not dividing w, GQA, both modes, causal, custom scale, every host dtype.
#pragma once

#include <dilatron/config.hpp>
#include <dilatron/tensor.hpp>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <optional>
#include <utility>
#include <vector>

#include "common/dtype.hpp"
#include "tests/support/dense_reference.hpp"

namespace dilatron::test {

// A config from its fields, for tables of test cases.
inline Config make_config(std::vector<std::int64_t> segments, std::vector<std::int64_t> dilations, Mode mode, bool causal,
                          std::optional<double> scale = {}) {
  Config c;
  c.segments = std::move(segments);
  c.dilations = std::move(dilations);
  c.mode = mode;
  c.causal = causal;
  c.scale = scale;
  return c;
}

struct RandomCase {
  Config config;
  std::int64_t B = 1, N = 1, H = 1, Hkv = 1, D = 1;
  DType dtype = DType::f32;
  std::vector<std::byte> q, k, v;  // contiguous, in dtype

  Shape4 q_shape() const { return {B, N, H, D}; }
  Shape4 kv_shape() const { return {B, N, Hkv, D}; }
  TensorView q_view() { return TensorView::contiguous(q.data(), dtype, q_shape()); }
  TensorView k_view() { return TensorView::contiguous(k.data(), dtype, kv_shape()); }
  TensorView v_view() { return TensorView::contiguous(v.data(), dtype, kv_shape()); }

  // The inputs as the library reads them (already rounded to dtype), for the dense reference.
  Dense dense() const {
    auto decode = [&](const std::vector<std::byte>& raw) {
      std::vector<double> out(raw.size() / dtype_size(dtype));
      for (std::size_t i = 0; i < out.size(); ++i) out[i] = load_element(raw.data(), dtype, std::int64_t(i));
      return out;
    };
    return {B, N, H, Hkv, D, decode(q), decode(k), decode(v)};
  }

  std::string describe() const {
    return fmt::format("B={} N={} H={} Hkv={} D={} {} segments={} dilations={} mode={} causal={} scale={}", B, N, H,
                       Hkv, D, to_string(dtype), fmt::join(config.segments, ","), fmt::join(config.dilations, ","),
                       to_string(config.mode), config.causal, config.scale ? fmt::format("{}", *config.scale) : "default");
  }
};

inline std::vector<std::byte> random_tensor(std::int64_t count, DType dtype, double spread, std::mt19937_64& rng) {
  std::normal_distribution<double> normal(0.0, spread);
  std::vector<std::byte> raw(std::size_t(count) * dtype_size(dtype));
  for (std::int64_t i = 0; i < count; ++i) store_element(raw.data(), dtype, i, normal(rng));
  return raw;
}

// The case's inputs at its shapes and dtype: q and k from N(0, spread^2), then v from N(0, 1).
inline void fill_inputs(RandomCase& c, std::mt19937_64& rng, double spread = 1.0) {
  c.q = random_tensor(c.B * c.N * c.H * c.D, c.dtype, spread, rng);
  c.k = random_tensor(c.B * c.N * c.Hkv * c.D, c.dtype, spread, rng);
  c.v = random_tensor(c.B * c.N * c.Hkv * c.D, c.dtype, 1.0, rng);
}

inline RandomCase random_case(std::mt19937_64& rng) {
  auto uniform = [&](std::int64_t lo, std::int64_t hi) { return std::uniform_int_distribution<std::int64_t>(lo, hi)(rng); };
  auto chance = [&](double p) { return std::bernoulli_distribution(p)(rng); };
  static constexpr std::int64_t kPrimes[] = {2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71};
  RandomCase c;
  c.B = uniform(1, 2);
  c.N = chance(0.5) ? kPrimes[uniform(0, 19)] : uniform(1, 72);
  c.H = uniform(1, 8);
  std::vector<std::int64_t> divisors;
  for (std::int64_t d = 1; d <= c.H; ++d) {
    if (c.H % d == 0) divisors.push_back(d);
  }
  c.Hkv = divisors[std::size_t(uniform(0, std::int64_t(divisors.size()) - 1))];
  c.D = uniform(1, 12);
  const std::int64_t branches = uniform(1, 5);
  for (std::int64_t i = 0; i < branches; ++i) {
    const std::int64_t w = chance(0.2) ? uniform(c.N, c.N + 16) : uniform(1, std::max<std::int64_t>(1, c.N));
    const std::int64_t r = chance(0.25) ? uniform(w + 1, w + 4) : uniform(1, std::min<std::int64_t>(w, 8));
    c.config.segments.push_back(w);
    c.config.dilations.push_back(r);
  }
  c.config.mode = c.H >= branches && chance(0.4) ? Mode::head_groups : Mode::longnet;
  c.config.causal = chance(0.5);
  if (chance(0.3)) c.config.scale = std::uniform_real_distribution<double>(0.05, 2.0)(rng);
  static constexpr DType kTypes[] = {DType::f32, DType::f16, DType::bf16};
  c.dtype = kTypes[uniform(0, 2)];
  const double spread = std::uniform_real_distribution<double>(0.5, 3.0)(rng);  // flat to peaky softmax
  fill_inputs(c, rng, spread);
  return c;
}

// max |got - want| / max(max |want|, floor). -inf must match -inf exactly (NaN never matches); returns
// +inf when they disagree.
inline double relative_error(const std::vector<double>& got, const std::vector<double>& want, double floor = 1e-30) {
  double diff = 0, norm = floor;
  for (std::size_t i = 0; i < want.size(); ++i) {
    if (std::isinf(want[i]) || std::isinf(got[i]) || std::isnan(got[i])) {
      if (got[i] != want[i]) return std::numeric_limits<double>::infinity();
      continue;
    }
    diff = std::max(diff, std::fabs(got[i] - want[i]));
    norm = std::max(norm, std::fabs(want[i]));
  }
  return diff / norm;
}

}  // namespace dilatron::test
