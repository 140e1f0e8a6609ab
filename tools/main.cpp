// The `dilatron` entry point: exit status 0 on success, 1 when the work failed, 2 for a command line
// that cannot run (docs/CLI.md). Every error is one line on stderr; with --json, stdout also carries
// {"error": {...}} so scripts reading JSON always get JSON.
#include <dilatron/error.hpp>
#include <dilatron/version.hpp>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <optional>
#include <string_view>

#include "common/atomic_file.hpp"
#include "common/log.hpp"
#include "tools/commands.hpp"
#include "tools/text.hpp"

namespace {

std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] != b[j - 1])});
      diagonal = above;
    }
  }
  return row[b.size()];
}

// CLI11 reports a mistyped subcommand as an unexpected argument; name it as what it is, with the
// closest real one.
std::optional<std::string> unknown_subcommand(const CLI::App& app, int argc, char** argv) {
  const CLI::App* level = &app;
  for (int i = 1; i < argc; ++i) {
    const std::string_view token = argv[i];
    const auto commands = level->get_subcommands(std::function<bool(const CLI::App*)>{});
    if (token.empty() || token.front() == '-' || commands.empty()) return std::nullopt;
    const auto match = std::find_if(commands.begin(), commands.end(), [&](const CLI::App* c) { return c->get_name() == token; });
    if (match != commands.end()) {
      level = *match;
      continue;
    }
    std::string names, closest;
    std::size_t best = 3;  // suggest only near misses
    for (const CLI::App* c : commands) {
      names += (names.empty() ? "" : ", ") + c->get_name();
      if (const std::size_t d = edit_distance(token, c->get_name()); d < best) best = d, closest = c->get_name();
    }
    const std::string where = level == &app ? "dilatron" : "dilatron " + level->get_name();
    return fmt::format("unknown subcommand '{}' for {}{} (expected one of: {})", token, where,
                       closest.empty() ? "" : fmt::format("; did you mean '{}'?", closest), names);
  }
  return std::nullopt;
}

}  // namespace

int main(int argc, char** argv) {
  dilatron::remove_temporaries_on_signals();  // Ctrl-C leaves no half-written .tmp files behind
  dilatron::log::level();                     // a bad DILATRON_LOG is said at once, whatever the command
  CLI::App app{fmt::format("dilatron {}: LongNet-style dilated attention, JIT-compiled for NVIDIA GPUs", dilatron::kVersion),
               "dilatron"};
  app.require_subcommand(1);
  app.set_version_flag("--version", dilatron::kVersion);
  app.footer("Exit status: 0 success, 1 the work failed, 2 bad command line. `dilatron COMMAND --help` for each command.");
  dilatron::cli::add_run(app);
  dilatron::cli::add_demo(app);
  dilatron::cli::add_cache(app);
  dilatron::cli::add_gen(app);
  dilatron::cli::add_tune(app);
  dilatron::cli::add_bench(app);
  dilatron::cli::add_plan(app);
  dilatron::cli::add_info(app);

  const bool json = std::any_of(argv + 1, argv + argc, [](const char* a) { return std::string_view(a) == "--json"; });
  auto fail = [&](int status, const char* kind, const std::string& message) {
    fmt::print(stderr, "dilatron: error: {}\n", dilatron::cli::printable(message, true));
    if (json) {
      const nlohmann::json error = {{"error", {{"kind", kind}, {"message", message}, {"exit_status", status}}}};
      fmt::print("{}\n", dilatron::cli::json_text(error));
    }
    return status;
  };
  if (const auto unknown = unknown_subcommand(app, argc, argv)) return fail(2, "usage", *unknown);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    return fail(2, "usage", fmt::format("{} (see --help)", e.what()));
  } catch (const dilatron::cli::UsageError& e) {
    return fail(2, "usage", e.what());
  } catch (const dilatron::cli::ReportedFailure& e) {
    fmt::print(stderr, "dilatron: error: {}\n", e.what());
    return 1;
  } catch (const dilatron::Error& e) {
    const char* kind = e.kind() == dilatron::ErrorKind::cuda        ? "cuda"
                       : e.kind() == dilatron::ErrorKind::transport ? "transport"
                                                                   : "invalid";
    return fail(1, kind, e.what());
  } catch (const std::exception& e) {
    return fail(1, "internal", e.what());
  }
  return 0;
}
