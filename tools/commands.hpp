// The `dilatron` subcommands; each file registers one on the CLI11 app. Errors are dilatron::Error,
// printed by main as one line; UsageError marks a bad command line (exit status 2, docs/CLI.md).
#pragma once

#include <CLI/CLI.hpp>

#include <dilatron/config.hpp>
#include <dilatron/error.hpp>
#include <dilatron/tensor.hpp>

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace dilatron::cli {

void add_run(CLI::App& app);
void add_info(CLI::App& app);
void add_demo(CLI::App& app);
void add_cache(CLI::App& app);
void add_gen(CLI::App& app);
void add_bench(CLI::App& app);
void add_plan(CLI::App& app);
void add_tune(CLI::App& app);

// A command line that cannot be run as given (a flag value out of range, a bad combination of flags);
// found before any work starts.
class UsageError : public Error {
 public:
  using Error::Error;
};

// Work that failed after the command already wrote its full report to stdout (with --json, a document
// that says what failed): main prints the error line on stderr and exits 1, adding no JSON of its own.
class ReportedFailure : public Error {
 public:
  using Error::Error;
};

// "--segments 2048,4096": one integer per comma-separated item.
CLI::Option* add_int_list(CLI::App* cmd, const std::string& name, std::vector<std::int64_t>& values,
                          const std::string& help);
// "--mode longnet|head_groups".
CLI::Option* add_mode(CLI::App* cmd, Mode& mode);
// "--dtype bf16|f16": the 16-bit types the GPU kernels take.
CLI::Option* add_gpu_dtype(CLI::App* cmd, DType& dtype);
// As --dtype takes it (for a value from a file): throws dilatron::Error saying why not.
DType parse_gpu_dtype(const std::string& text);

// Where a command runs its kernels: cpu, the float64 host reference (`run` only); cuda, this machine's GPU;
// emulator, the emulated device (docs/EMULATOR.md: slow, proves correctness, never speed).
enum class Device { cpu, cuda, emulator };
// "--device": `with_cpu` adds cpu to cuda and emulator. Choosing emulator selects the emulated device for
// the whole process as the flag is parsed, before any driver call or compile.
CLI::Option* add_device(CLI::App* cmd, Device& device, bool with_cpu, const std::string& help);
// For summaries: "the GPU" or "the emulated device", whichever runs the kernels (--device emulator or
// DILATRON_DEVICE=emulator).
std::string device_words();
// The note bench and tune print before timing on the emulated device (empty on a GPU).
std::string emulated_timing_note();

// A check for numeric flags that must be > 0, naming the value (CLI11's PositiveNumber quotes the
// largest double instead).
CLI::Validator positive();
// For integer flags, as ->transform(): digits only (no "1e18", no "64.5"), from low to high, the value
// quoted as given; it hands CLI11 the number in plain decimal ("010" is 10, not octal 8).
CLI::Validator integer_in(std::int64_t low, std::int64_t high);
CLI::Validator positive_integer(std::int64_t max = std::numeric_limits<std::int64_t>::max());  // integer_in(1, max)
// For model parameters: a finite number in [low, high].
CLI::Validator within(double low, double high);


// validate_config, reporting a bad flag value as a UsageError.
void check_config_flags(const Config& config);

}  // namespace dilatron::cli
