// The C++ API from an installed package, in C++17: the host reference on a case whose answer is known
// in closed form, and a bad configuration that must be refused.
#include <dilatron/dilatron.hpp>
#include <dilatron/version.hpp>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

int main() {
  if (std::strcmp(dilatron::kVersion, EXPECTED_VERSION) != 0) {
    std::printf("version header says %s, the package %s\n", dilatron::kVersion, EXPECTED_VERSION);
    return 1;
  }
  // Every key row is the same, so each query spreads its weight evenly: O = mean of V over the
  // segment and LSE = log(N) + scale * q.k.
  const std::int64_t N = 6, H = 2, D = 4;
  std::vector<float> q(N * H * D), k(N * D), v(N * D), out(N * H * D), lse(H * N);
  for (std::size_t i = 0; i < q.size(); ++i) q[i] = float(std::sin(0.7 * double(i)));
  for (std::int64_t n = 0; n < N; ++n) {
    for (std::int64_t d = 0; d < D; ++d) {
      k[n * D + d] = 0.25f * float(d + 1);
      v[n * D + d] = float(n * 10 + d);
    }
  }
  dilatron::Config config;
  config.segments = {N};
  config.dilations = {1};
  auto view = [](std::vector<float>& data, dilatron::Shape4 shape) {
    return dilatron::TensorView::contiguous(data.data(), dilatron::DType::f32, shape);
  };
  const dilatron::TensorView lse_view = view(lse, {1, H, N, 1});
  dilatron::reference_forward(config, view(q, {1, N, H, D}), view(k, {1, N, 1, D}), view(v, {1, N, 1, D}),
                              view(out, {1, N, H, D}), &lse_view);
  for (std::int64_t n = 0; n < N; ++n) {
    for (std::int64_t h = 0; h < H; ++h) {
      double dot = 0;
      for (std::int64_t d = 0; d < D; ++d) {
        const double mean_v = 10.0 * double(N - 1) / 2.0 + double(d);
        const double got = out[(n * H + h) * D + d];
        if (std::fabs(got - mean_v) > 1e-4 * std::fabs(mean_v) + 1e-5) {
          std::printf("O[%ld,%ld,%ld] = %f, want %f\n", long(n), long(h), long(d), got, mean_v);
          return 1;
        }
        dot += double(q[(n * H + h) * D + d]) * double(k[d]);
      }
      const double want_lse = std::log(double(N)) + dot / std::sqrt(double(D));
      if (std::fabs(lse[h * N + n] - want_lse) > 1e-5) {
        std::printf("LSE[%ld,%ld] = %f, want %f\n", long(h), long(n), double(lse[h * N + n]), want_lse);
        return 1;
      }
    }
  }
  config.dilations = {0};
  try {
    dilatron::DilatedAttention attention(config);
    std::printf("a dilation of 0 was accepted\n");
    return 1;
  } catch (const dilatron::Error& e) {
    if (!std::strstr(e.what(), "dilations[0]")) {
      std::printf("unhelpful error: %s\n", e.what());
      return 1;
    }
  }
  std::printf("C++ consumer: dilatron %s OK\n", dilatron::kVersion);
  return 0;
}
