// Gradients of the dense definition by central finite differences: the independent check of every
// backward pass. L = sum(G * O) for an upstream gradient G, so dL/dx is what a backward pass returns.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include "tests/support/dense_reference.hpp"

namespace dilatron::test {

inline double dense_loss(const Config& config, const Dense& x, const std::vector<double>& g) {
  const DenseResult r = dense_attention(config, x);
  double sum = 0;
  for (std::size_t i = 0; i < g.size(); ++i) sum += g[i] * r.out[i];
  return sum;
}

// dL/dx for every element of one input (&Dense::q, &Dense::k or &Dense::v).
inline std::vector<double> finite_differences(const Config& config, Dense x, std::vector<double> Dense::*input,
                                              const std::vector<double>& g) {
  std::vector<double> grad((x.*input).size());
  for (std::size_t i = 0; i < grad.size(); ++i) {
    const double keep = (x.*input)[i], step = 1e-6 * std::max(1.0, std::fabs(keep));
    (x.*input)[i] = keep + step;
    const double up = dense_loss(config, x, g);
    (x.*input)[i] = keep - step;
    const double down = dense_loss(config, x, g);
    (x.*input)[i] = keep;
    grad[i] = (up - down) / (2 * step);
  }
  return grad;
}

// The floor for relative_error against finite differences: their own noise where a gradient is exactly
// zero (a row whose softmax has one key has dq = dk = 0).
inline constexpr double kFiniteDifferenceFloor = 1e-4;

}  // namespace dilatron::test
