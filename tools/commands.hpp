// The `dilatron` subcommands; each file registers one on the CLI11 app. Errors are dilatron::Error,
// printed by main as one line.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace dilatron::cli {

void add_run(CLI::App& app);
void add_info(CLI::App& app);
void add_demo(CLI::App& app);
void add_cache(CLI::App& app);
void add_gen(CLI::App& app);
void add_bench(CLI::App& app);

// "2048,4096" -> {2048, 4096}; names the flag and the bad item otherwise.
std::vector<std::int64_t> parse_int_list(std::string_view flag, std::string_view text);

}  // namespace dilatron::cli
