// What a dilated attention layer computes: docs/SEMANTICS.md defines every field exactly.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

namespace dilatron {

enum class Mode {
  longnet,      // every head in every branch, branches merged by their LSE (LongNet eq. 9-10)
  head_groups,  // head group i runs branch i only; O divided by the number of branches
};

struct Config {
  std::vector<std::int64_t> segments;   // w_i >= 1, one per branch
  std::vector<std::int64_t> dilations;  // r_i >= 1, one per branch
  Mode mode = Mode::longnet;
  bool causal = false;
  std::optional<double> scale;  // softmax scale; 1/sqrt(D) when unset

  std::size_t branches() const noexcept { return segments.size(); }
};

std::string_view to_string(Mode mode) noexcept;
// Throws dilatron::Error naming the text when it is neither "longnet" nor "head_groups".
Mode parse_mode(std::string_view text);

}  // namespace dilatron
