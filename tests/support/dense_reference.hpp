// Brute-force dilated attention built straight from docs/SEMANTICS.md: an N x N mask per (head, branch),
// plain softmax over it, then the combine rule. Shares no code with the library (not even the index
// math), so it can catch mistakes in both.
#pragma once

#include <dilatron/config.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

namespace dilatron::test {

struct Dense {
  std::int64_t B, N, H, Hkv, D;
  std::vector<double> q, k, v;  // contiguous [B,N,H,D] and [B,N,Hkv,D]
};

struct DenseResult {
  std::vector<double> out;  // [B,N,H,D]
  std::vector<double> lse;  // [B,H,N]
};

// (branch, offset) pairs head h uses.
inline std::vector<std::pair<std::size_t, std::int64_t>> dense_head_branches(const Config& c, std::int64_t h,
                                                                              std::int64_t H) {
  std::vector<std::pair<std::size_t, std::int64_t>> uses;
  const std::size_t G = c.segments.size();
  if (c.mode == Mode::longnet) {
    for (std::size_t i = 0; i < G; ++i) {
      const std::int64_t r = c.dilations[i], heads_per_offset = (H + r - 1) / r;
      uses.emplace_back(i, h / heads_per_offset);
    }
    return uses;
  }
  std::int64_t first = 0;  // walk the groups: sizes H/G, the first H%G one larger
  for (std::size_t g = 0; g < G; ++g) {
    const std::int64_t size = H / std::int64_t(G) + (std::int64_t(g) < H % std::int64_t(G) ? 1 : 0);
    if (h >= first && h < first + size) {
      uses.emplace_back(g, std::int64_t(g) % c.dilations[g]);
      return uses;
    }
    first += size;
  }
  return uses;
}

// segment id of every row the branch selects for this offset, -1 for rows it does not select.
inline std::vector<std::int64_t> dense_selection(std::int64_t N, std::int64_t w, std::int64_t r, std::int64_t o) {
  std::vector<std::int64_t> segment(std::size_t(N), -1);
  for (std::int64_t s = 0; s * w < N; ++s) {
    const std::int64_t end = std::min((s + 1) * w, N);
    for (std::int64_t row = s * w + o; row < end; row += r) segment[std::size_t(row)] = s;
  }
  return segment;
}

inline DenseResult dense_attention(const Config& c, const Dense& x) {
  const double inf = std::numeric_limits<double>::infinity();
  const double scale = c.scale ? *c.scale : 1.0 / std::sqrt(double(x.D));
  const auto G = double(c.segments.size());
  DenseResult result{std::vector<double>(std::size_t(x.B * x.N * x.H * x.D), 0.0),
                     std::vector<double>(std::size_t(x.B * x.H * x.N), -inf)};
  for (std::int64_t b = 0; b < x.B; ++b) {
    for (std::int64_t h = 0; h < x.H; ++h) {
      const std::int64_t kvh = h * x.Hkv / x.H;
      auto qv = [&](std::int64_t n, std::int64_t d) { return x.q[std::size_t(((b * x.N + n) * x.H + h) * x.D + d)]; };
      auto kv = [&](const std::vector<double>& t, std::int64_t n, std::int64_t d) {
        return t[std::size_t(((b * x.N + n) * x.Hkv + kvh) * x.D + d)];
      };
      // Per row: the (lse_i, O_i) of every branch that selects it.
      std::vector<std::vector<std::pair<double, std::vector<double>>>> parts(std::size_t(x.N));
      for (auto [i, o] : dense_head_branches(c, h, x.H)) {
        const auto seg = dense_selection(x.N, c.segments[i], c.dilations[i], o);
        for (std::int64_t qi = 0; qi < x.N; ++qi) {
          if (seg[std::size_t(qi)] < 0) continue;
          std::vector<double> score(std::size_t(x.N), -inf);
          double m = -inf;
          for (std::int64_t ki = 0; ki < x.N; ++ki) {
            const bool allowed = seg[std::size_t(ki)] == seg[std::size_t(qi)] && (!c.causal || ki <= qi);
            if (!allowed) continue;
            double dot = 0;
            for (std::int64_t d = 0; d < x.D; ++d) dot += qv(qi, d) * kv(x.k, ki, d);
            score[std::size_t(ki)] = dot * scale;
            m = std::max(m, score[std::size_t(ki)]);
          }
          double sum = 0;
          std::vector<double> o_row(std::size_t(x.D), 0.0);
          for (std::int64_t ki = 0; ki < x.N; ++ki) {
            if (score[std::size_t(ki)] == -inf) continue;
            const double p = std::exp(score[std::size_t(ki)] - m);
            sum += p;
            for (std::int64_t d = 0; d < x.D; ++d) o_row[std::size_t(d)] += p * kv(x.v, ki, d);
          }
          for (double& value : o_row) value /= sum;
          parts[std::size_t(qi)].emplace_back(m + std::log(sum), std::move(o_row));
        }
      }
      for (std::int64_t n = 0; n < x.N; ++n) {
        const auto& row_parts = parts[std::size_t(n)];
        if (row_parts.empty()) continue;
        double m = -inf, sum = 0;
        for (const auto& part : row_parts) m = std::max(m, part.first);
        for (const auto& part : row_parts) sum += std::exp(part.first - m);
        const double lse = m + std::log(sum);
        result.lse[std::size_t((b * x.H + h) * x.N + n)] = lse;
        for (const auto& [part_lse, o_row] : row_parts) {
          // longnet: LSE-weighted sum; head_groups: the single branch, divided by G.
          const double weight = c.mode == Mode::longnet ? std::exp(part_lse - lse) : 1.0 / G;
          for (std::int64_t d = 0; d < x.D; ++d) {
            result.out[std::size_t(((b * x.N + n) * x.H + h) * x.D + d)] += weight * o_row[std::size_t(d)];
          }
        }
      }
    }
  }
  return result;
}

}  // namespace dilatron::test
