#include <dilatron/error.hpp>

#include <fmt/format.h>

#include <charconv>

#include "tools/commands.hpp"

namespace dilatron::cli {

std::vector<std::int64_t> parse_int_list(std::string_view flag, std::string_view text) {
  std::vector<std::int64_t> values;
  while (true) {
    const std::size_t comma = text.find(',');
    const std::string_view item = text.substr(0, comma);
    std::int64_t value = 0;
    const auto [end, ec] = std::from_chars(item.data(), item.data() + item.size(), value);
    if (item.empty() || ec != std::errc{} || end != item.data() + item.size()) {
      throw Error(fmt::format("{}: '{}' is not an integer (expected a comma-separated list such as 2048,4096)", flag,
                              item));
    }
    values.push_back(value);
    if (comma == std::string_view::npos) return values;
    text.remove_prefix(comma + 1);
  }
}

}  // namespace dilatron::cli
