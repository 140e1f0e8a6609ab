#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>
#include <cstdlib>
#include <utility>

#include "runtime/problem.hpp"
#include "tools/commands.hpp"

namespace dilatron::cli {
namespace {

// The names, and only them (CLI11's CheckedTransformer also takes the enum's integers).
template <class Enum>
CLI::Option* add_enum(CLI::App* cmd, const std::string& name, Enum& value,
                      const std::vector<std::pair<std::string, Enum>>& names, const std::string& help) {
  std::vector<std::string> keys;
  for (const auto& [key, _] : names) keys.push_back(key);
  auto assign = [&value, names](const std::string& text) {
    for (const auto& [key, e] : names) {
      if (key == text) value = e;
    }
  };
  return cmd->add_option_function<std::string>(name, assign, help)
      ->check(CLI::IsMember(keys).description(""))
      ->type_name(fmt::format("{}", fmt::join(keys, "|")))
      ->default_str(std::string(to_string(value)));
}

}  // namespace

// CLI11's PositiveNumber quotes the largest double in its message; this one names the value.
CLI::Validator positive() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        char* end = nullptr;
        const double value = std::strtod(text.c_str(), &end);
        if (end == text.c_str() || *end != '\0' || !std::isfinite(value) || value <= 0) {
          return fmt::format("must be a finite number > 0, got '{}'", text);
        }
        return {};
      },
      "> 0");
}

CLI::Option* add_int_list(CLI::App* cmd, const std::string& name, std::vector<std::int64_t>& values,
                          const std::string& help) {
  return cmd->add_option(name, values, help)->delimiter(',')->type_name("N,N,...");
}

CLI::Option* add_mode(CLI::App* cmd, Mode& mode) {
  return add_enum<Mode>(cmd, "--mode", mode, {{"longnet", Mode::longnet}, {"head_groups", Mode::head_groups}},
                        "how branches combine: longnet (LSE-weighted merge) or head_groups (docs/SEMANTICS.md)");
}

CLI::Option* add_gpu_dtype(CLI::App* cmd, DType& dtype) {
  return add_enum<DType>(cmd, "--dtype", dtype, {{"bf16", DType::bf16}, {"f16", DType::f16}},
                         "element type of Q, K, V and O on the GPU");
}

void check_config_flags(const Config& config) {
  try {
    validate_config(config);
  } catch (const Error& e) {
    throw UsageError(e.what());
  }
}

}  // namespace dilatron::cli
