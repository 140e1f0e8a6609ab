#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <cstdlib>
#include <functional>
#include <utility>

#include "common/env.hpp"
#include "runtime/problem.hpp"
#include "tools/commands.hpp"

namespace dilatron::cli {
namespace {

template <class Enum>
using Names = std::vector<std::pair<std::string, Enum>>;
using Spellings = std::vector<std::pair<std::string, std::string>>;  // a common other spelling -> the name meant

// Why `text` is none of the names, or empty when it is one.
template <class Enum>
std::string name_problem(const std::string& text, const Names<Enum>& names, const Spellings& spellings) {
  std::vector<std::string> keys;
  for (const auto& [key, _] : names) keys.push_back(key);
  if (std::find(keys.begin(), keys.end(), text) != keys.end()) return {};
  for (const auto& [other, meant] : spellings) {
    if (other == text) return fmt::format("{} not in {{{}}}; did you mean {}?", text, fmt::join(keys, ","), meant);
  }
  return fmt::format("{} not in {{{}}}", text, fmt::join(keys, ","));
}

// The names, and only them (CLI11's CheckedTransformer also takes the enum's integers); `then` sees each
// value given.
template <class Enum>
CLI::Option* add_enum(CLI::App* cmd, const std::string& name, Enum& value, const Names<Enum>& names,
                      const std::string& help, const Spellings& spellings = {},
                      std::function<void(Enum)> then = nullptr) {
  std::vector<std::string> keys;
  for (const auto& [key, _] : names) keys.push_back(key);
  auto assign = [&value, names, then](const std::string& text) {
    for (const auto& [key, e] : names) {
      if (key == text) value = e;
    }
    if (then) then(value);
  };
  auto check = [names, spellings](std::string& text) { return name_problem(text, names, spellings); };
  return cmd->add_option_function<std::string>(name, assign, help)
      ->check(CLI::Validator(check, ""))
      ->type_name(fmt::format("{}", fmt::join(keys, "|")))
      ->default_str(std::find_if(names.begin(), names.end(), [&](const auto& n) { return n.second == value; })->first);
}

const Names<DType> kGpuDtypes = {{"bf16", DType::bf16}, {"f16", DType::f16}};
const Spellings kGpuDtypeSpellings = {{"fp16", "f16"}, {"float16", "f16"}, {"half", "f16"}, {"bfloat16", "bf16"},
                                      {"fp32", "bf16 or f16 (the GPU kernels take 16-bit types)"},
                                      {"float32", "bf16 or f16 (the GPU kernels take 16-bit types)"},
                                      {"float", "bf16 or f16 (the GPU kernels take 16-bit types)"},
                                      {"f32", "bf16 or f16 (the GPU kernels take 16-bit types)"}};

// Why `text` is not an int64 as written, or empty when it is one (stored in `value`).
std::string integer_problem(const std::string& text, std::int64_t& value) {
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error == std::errc::result_out_of_range) {
    return fmt::format("'{}' is out of range (at most {})", text, std::numeric_limits<std::int64_t>::max());
  }
  if (error != std::errc() || end != text.data() + text.size()) return fmt::format("'{}' is not an integer", text);
  return {};
}

// "2048,4096" -> {2048, 4096}; every item an integer as written, none empty. Returns why not, quoting the
// item as given, or empty.
std::string int_list_problem(const std::string& text, std::vector<std::int64_t>& values) {
  if (text.empty()) return "the list is empty; give integers such as 2048,4096";
  values.clear();
  for (std::size_t begin = 0;;) {
    const std::size_t comma = std::min(text.find(',', begin), text.size());
    const std::string item = text.substr(begin, comma - begin);
    if (item.empty()) return fmt::format("'{}' has an empty item (a stray comma?)", text);
    if (std::string problem = integer_problem(item, values.emplace_back()); !problem.empty()) return problem;
    if (comma == text.size()) return {};
    begin = comma + 1;
  }
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

CLI::Validator integer_in(std::int64_t low, std::int64_t high) {
  return CLI::Validator(
      [low, high](std::string& text) -> std::string {
        std::int64_t value = 0;
        const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
        if (error == std::errc() && end == text.data() + text.size() && value >= low && value <= high) {
          text = std::to_string(value);  // as read here: CLI11 would take "010" as octal 8
          return {};
        }
        if (error == std::errc::invalid_argument || end != text.data() + text.size()) {
          return fmt::format("must be a whole number from {} to {}, got '{}' (write it out in digits)", low, high, text);
        }
        return fmt::format("must be from {} to {}, got '{}'", low, high, text);
      },
      high == std::numeric_limits<std::int64_t>::max() ? fmt::format(">= {}", low) : fmt::format("{}..{}", low, high));
}

CLI::Validator positive_integer(std::int64_t max) { return integer_in(1, max); }

CLI::Validator within(double low, double high) {
  return CLI::Validator(
      [low, high](std::string& text) -> std::string {
        char* end = nullptr;
        const double value = std::strtod(text.c_str(), &end);
        if (end == text.c_str() || *end != '\0' || !(value >= low && value <= high)) {
          return fmt::format("must be a number from {:g} to {:g}, got '{}'", low, high, text);
        }
        return {};
      },
      fmt::format("{:g}..{:g}", low, high));
}

CLI::Option* add_int_list(CLI::App* cmd, const std::string& name, std::vector<std::int64_t>& values,
                          const std::string& help) {
  auto check = [](std::string& text) {
    std::vector<std::int64_t> ignored;
    return int_list_problem(text, ignored);
  };
  auto assign = [&values](const std::string& text) { int_list_problem(text, values); };
  return cmd->add_option_function<std::string>(name, assign, help)
      ->check(CLI::Validator(check, ""))
      ->type_name("N,N,...")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);  // a later flag overrides, as for other flags
}

CLI::Option* add_mode(CLI::App* cmd, Mode& mode) {
  return add_enum<Mode>(cmd, "--mode", mode, {{"longnet", Mode::longnet}, {"head_groups", Mode::head_groups}},
                        "how branches combine: longnet (LSE-weighted merge) or head_groups (docs/SEMANTICS.md)");
}

CLI::Option* add_device(CLI::App* cmd, Device& device, bool with_cpu, const std::string& help) {
  Names<Device> names{{"cuda", Device::cuda}, {"emulator", Device::emulator}};
  if (with_cpu) names.insert(names.begin(), {"cpu", Device::cpu});
  return add_enum<Device>(cmd, "--device", device, names, help, {{"gpu", "cuda"}, {"emu", "emulator"}}, [](Device d) {
    if (d == Device::emulator) env::select_emulated_device();
  });
}

std::string device_words() { return env::emulated_device() ? "the emulated device" : "the GPU"; }

std::string emulated_timing_note() {
  return env::emulated_device() ? "note: the emulated device runs kernels on this CPU, one fiber per CUDA thread; its "
                                  "times measure the emulator and say nothing about a GPU's speed"
                                : "";
}

CLI::Option* add_gpu_dtype(CLI::App* cmd, DType& dtype) {
  return add_enum<DType>(cmd, "--dtype", dtype, kGpuDtypes, "element type of Q, K, V and O on the GPU",
                         kGpuDtypeSpellings);
}

DType parse_gpu_dtype(const std::string& text) {
  if (const std::string problem = name_problem(text, kGpuDtypes, kGpuDtypeSpellings); !problem.empty()) {
    throw Error("dtype " + problem);
  }
  return std::find_if(kGpuDtypes.begin(), kGpuDtypes.end(), [&](const auto& n) { return n.first == text; })->second;
}

void check_config_flags(const Config& config) {
  try {
    validate_config(config);
  } catch (const Error& e) {
    throw UsageError(e.what());
  }
}

}  // namespace dilatron::cli
