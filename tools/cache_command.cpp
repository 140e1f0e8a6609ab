// `dilatron cache ...`: pre-warm, inspect, check and ship the kernel cache. Only `warm` and `import`
// create the cache directory; the read-only subcommands describe a missing one as empty.
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <optional>
#include <set>

#include "cache/bundle.hpp"
#include "runtime/tuning_file.hpp"
#include "cache/kernel_cache.hpp"
#include "common/parallel.hpp"
#include "tools/commands.hpp"
#include "tools/text.hpp"
#include "tools/outputs.hpp"
#include "tools/workload_flags.hpp"

namespace dilatron::cli {
namespace {

struct CacheFlags {
  std::string dir;
  bool json = false;

  std::filesystem::path path() const { return cache::CacheOptions::from_environment(dir).dir; }
  cache::DiskCache create() const { return cache::DiskCache(path()); }
  std::optional<cache::DiskCache> existing() const { return cache::DiskCache::open_existing(path()); }
};

CLI::App* subcommand(CLI::App* parent, const char* name, const char* help, CacheFlags& flags) {
  CLI::App* cmd = parent->add_subcommand(name, help);
  cmd->add_option("--cache-dir", flags.dir,
                  "cache directory (default: $DILATRON_CACHE_DIR, else $XDG_CACHE_HOME/dilatron, else "
                  "~/.cache/dilatron)")
      ->check(CLI::Validator([](std::string& s) { return s.empty() ? std::string("the path is empty") : ""; },
                             "DIR", "non-empty"));
  return cmd;
}

// The tuning database, or none after a warning naming the file and its repair: a damaged database costs
// the tuned tiles, never the command.
autotune::TuningDb tuning_or_warn(const std::filesystem::path& dir, const char* going_on) {
  try {
    return read_tuning(dir);
  } catch (const Error& e) {
    fmt::print(stderr, "dilatron warning: {}; {}\n", printable(e.what()), going_on);
    return {};
  }
}

// A canonical spec is a few hundred characters; reading stops one past this, so a file without line
// breaks (/dev/zero, a binary) is refused without being held in memory.
constexpr std::size_t kMaxSpecLine = 4096;

// The next line into `line` (at most kMaxSpecLine + 1 characters of it); false at the end of input.
bool read_line(std::istream& in, std::string& line) {
  line.clear();
  for (int c; (c = in.get()) != std::char_traits<char>::eof();) {
    if (c == '\n') return true;
    line.push_back(char(c));
    if (line.size() > kMaxSpecLine) return true;
  }
  return !line.empty();
}

// The kernels a --kernels file names: one canonical spec per line (as `cache ls --specs` prints them;
// blank lines and '#' comments skipped), each built for `arch` when one is given. Every line is read and
// checked before anything compiles.
std::vector<codegen::KernelSpec> listed_kernels(const std::string& file, const std::string& arch) {
  if (!arch.empty()) {
    try {
      codegen::arch_number(arch);
    } catch (const Error& e) {
      throw UsageError(fmt::format("--arch: {}", e.what()));
    }
  }
  std::ifstream stream_file;
  if (file != "-") {
    stream_file.open(file);
    if (!stream_file) throw Error(fmt::format("cannot read {}", file));
  }
  std::istream& in = file == "-" ? std::cin : stream_file;
  const std::string name = file == "-" ? "standard input" : file;
  std::vector<codegen::KernelSpec> specs;
  std::string line;
  for (int number = 1; read_line(in, line); ++number) {
    if (line.size() > kMaxSpecLine) {
      throw Error(fmt::format("{}:{}: a line of over {} characters is no kernel spec", name, number, kMaxSpecLine));
    }
    if (line.empty() || line.front() == '#') continue;
    try {
      codegen::KernelSpec spec = codegen::KernelSpec::parse(line);
      if (!arch.empty()) spec.arch = arch;
      spec.validate();
      if (std::find(specs.begin(), specs.end(), spec) == specs.end()) specs.push_back(std::move(spec));
    } catch (const Error& e) {
      throw Error(fmt::format("{}:{}: {}", name, number, printable(e.what())));
    }
  }
  if (in.bad()) throw Error(fmt::format("cannot read {}", name));
  if (specs.empty()) throw Error(fmt::format("{} names no kernel (one canonical spec per line, as `dilatron cache ls --specs` prints)", name));
  return specs;
}

std::string arch_names(const std::vector<codegen::KernelSpec>& specs) {
  std::set<std::string> archs;
  for (const codegen::KernelSpec& spec : specs) archs.insert(spec.arch);
  std::string text;
  for (const std::string& arch : archs) text += (text.empty() ? "" : ", ") + arch;
  return text;
}

void warm(const WorkloadFlags& wf, const std::string& kernels_file, const CacheFlags& cf, unsigned jobs) {
  cache::CacheOptions options = cache::CacheOptions::from_environment(cf.dir);
  std::vector<codegen::KernelSpec> specs;
  if (!kernels_file.empty()) {
    specs = listed_kernels(kernels_file, wf.arch);
  } else {
    std::vector<autotune::Workload> configs = workloads(wf);
    // The tuned winners too, for whichever GPU and length they were tuned: the target machine's runs
    // will ask for them.
    const auto tuning = std::make_shared<const autotune::TuningDb>(
        tuning_or_warn(options.dir, "warming the heuristic tiles only"));
    for (autotune::Workload& w : configs) w.warm_winners = tuning;
    specs = kernels_of(configs);
  }
  if (jobs) options.compile_jobs = jobs;
  cache::KernelCache kernels(options);
  const bool tty = isatty(STDERR_FILENO);
  std::mutex mutex;
  std::size_t done = 0, compiled = 0, hits = 0, repaired = 0;
  std::uint64_t config_bytes = 0;
  std::map<std::string, std::string> label_of_key;  // this configuration's kernels
  std::vector<std::string> failures, evicted;
  const auto start = std::chrono::steady_clock::now();
  parallel_for(std::int64_t(specs.size()), options.compile_jobs, [&] {
    return [&](std::int64_t i) {
      const codegen::KernelSpec& spec = specs[std::size_t(i)];
      std::string status;
      try {
        const cache::Lookup found = kernels.get(spec);
        const std::size_t bytes = cache::encode(*found.entry).size();
        std::lock_guard lock(mutex);
        status = found.source == cache::Source::compiled ? "compiled" : "hit";
        (found.source == cache::Source::compiled ? compiled : hits) += 1;
        repaired += !found.repaired.empty();
        config_bytes += bytes;
        label_of_key[found.entry->key()] = spec.label();
        evicted.insert(evicted.end(), found.evicted.begin(), found.evicted.end());
      } catch (const std::exception& e) {
        std::lock_guard lock(mutex);
        status = "FAILED";
        failures.push_back(fmt::format("{}: {}", spec.label(), e.what()));
      }
      std::lock_guard lock(mutex);
      ++done;
      fmt::print(stderr, "{}[{}/{}] {:<8} {}{}", tty ? "\r\033[K" : "", done, specs.size(), status, spec.label(),
                 tty ? "" : "\n");
    };
  });
  if (tty) fmt::print(stderr, "\n");
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::vector<std::string> lost;  // this configuration's kernels the size cap pushed out again
  for (const std::string& key : evicted) {
    if (label_of_key.count(key)) lost.push_back(label_of_key[key]);
  }
  fmt::print("{} kernels for {} in {}: {} compiled, {} hits, {} failed{}{} ({:.2f} s)\n", specs.size(),
             arch_names(specs), kernels.disk().dir().string(), compiled, hits, failures.size(),
             repaired ? fmt::format(", {} bad entries replaced", repaired) : "",
             evicted.empty() ? "" : fmt::format(", {} evicted by the size cap ({} of them this configuration's)",
                                                evicted.size(), lost.size()),
             seconds);
  for (const std::string& label : lost) fmt::print(stderr, "evicted again: {}\n", label);
  if (config_bytes > kernels.disk().max_bytes()) {
    fmt::print(stderr,
               "dilatron warning: this configuration's kernels take {:.1f} MiB but the cache cap is {:.1f} MiB, so they "
               "cannot all stay cached: raise DILATRON_CACHE_MAX_BYTES\n",
               double(config_bytes) / (1 << 20), double(kernels.disk().max_bytes()) / (1 << 20));
  }
  for (const std::string& f : failures) fmt::print(stderr, "failed: {}\n", f);
  if (!failures.empty()) throw Error(fmt::format("{} of {} kernels failed to build", failures.size(), specs.size()));
}

nlohmann::json describe(const cache::DiskCache::Listed& listed) {
  nlohmann::json j = {{"file", listed.path.filename().string()}, {"bytes", listed.bytes}};
  if (!listed.entry) {
    j["problem"] = listed.problem;
    return j;
  }
  const cache::EntryMeta& m = listed.entry->meta;
  j.update(nlohmann::json(m));
  j.erase("material");
  j["arch"] = m.material.arch;
  j["spec"] = m.material.spec;
  j["nvrtc"] = m.material.nvrtc;
  j["usable"] = cache::usable_here(m.material);
  return j;
}

std::vector<cache::DiskCache::Listed> scan(const std::optional<cache::DiskCache>& disk) {
  return disk ? disk->scan() : std::vector<cache::DiskCache::Listed>{};
}

std::string where(const CacheFlags& cf, const std::optional<cache::DiskCache>& disk) {
  return disk ? cf.path().string() : cf.path().string() + " (does not exist yet)";
}

void ls(const CacheFlags& cf, bool specs) {
  const auto disk = cf.existing();
  const auto listed = scan(disk);
  if (specs) {
    // Input for `cache warm --kernels`: the kernels this build's runs asked for, each once, whichever
    // compiler built them; entries of older templates name kernels nothing runs any more.
    std::set<std::string> lines;
    for (const auto& l : listed) {
      if (l.entry && cache::same_kernel_source(l.entry->meta.material)) lines.insert(l.entry->meta.material.spec);
    }
    for (const std::string& line : lines) fmt::print("{}\n", line);
    return;
  }
  if (cf.json) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& l : listed) out.push_back(describe(l));
    fmt::print("{}\n", json_text(out));
    return;
  }
  fmt::print("{:<12} {:>5} {:>6} {:>7} {:>9} {:>8}  {}\n", "key", "regs", "spill", "smem", "compile", "bytes", "kernel");
  for (const auto& l : listed) {
    if (!l.entry) {
      fmt::print("{:<12} BAD: {}\n", printable(l.path.filename().string().substr(0, 12)), printable(l.problem));
      continue;
    }
    const cache::EntryMeta& m = l.entry->meta;
    fmt::print("{:<12} {:>5} {:>6} {:>7} {:>7.0f}ms {:>8}  {}{}\n", m.key.substr(0, 12), m.registers, m.spill_bytes,
               m.shared_bytes, m.compile_ms, l.bytes, printable(m.kernel),
               cache::usable_here(m.material) ? "" : "  (other build)");
  }
  fmt::print("{} entries in {}\n", listed.size(), where(cf, disk));
}

void stats(const CacheFlags& cf) {
  const auto disk = cf.existing();
  const auto listed = scan(disk);
  std::map<std::string, std::size_t> by_arch;
  std::size_t bad = 0, foreign = 0;
  std::uint64_t bytes = 0;
  for (const auto& l : listed) {
    bytes += l.bytes;
    if (!l.entry) {
      ++bad;
      continue;
    }
    ++by_arch[l.entry->meta.material.arch];
    foreign += !cache::usable_here(l.entry->meta.material);
  }
  const std::uint64_t cap = cache::max_bytes_from_environment();
  if (cf.json) {
    fmt::print("{}\n", json_text(nlohmann::json{{"directory", cf.path().string()},
                                      {"exists", disk.has_value()},
                                      {"entries", listed.size()},
                                      {"bad", bad},
                                      {"other_builds", foreign},
                                      {"bytes", bytes},
                                      {"max_bytes", cap},
                                      {"by_arch", by_arch}}));
    return;
  }
  fmt::print("directory   {}\n", where(cf, disk));
  fmt::print("entries     {} ({} bad, {} from other builds)\n", listed.size(), bad, foreign);
  fmt::print("size        {:.1f} MiB of a {:.1f} MiB cap (DILATRON_CACHE_MAX_BYTES)\n", double(bytes) / (1 << 20),
             double(cap) / (1 << 20));
  for (const auto& [arch, count] : by_arch) fmt::print("{:<11} {} entries\n", arch, count);
}

void verify(const CacheFlags& cf) {
  const auto disk = cf.existing();
  const auto listed = scan(disk);
  std::vector<std::string> bad;
  for (const auto& l : listed) {
    if (!l.entry) bad.push_back(fmt::format("{}: {}", l.path.string(), l.problem));
  }
  for (const std::string& b : bad) fmt::print(stderr, "bad entry {}\n", printable(b));
  std::string tuning = "no tuning database";
  try {
    if (disk && std::filesystem::exists(tuning_path(disk->dir()))) {
      tuning = fmt::format("a tuning database of {} records", read_tuning(disk->dir()).records().size());
    }
  } catch (const Error& e) {
    fmt::print(stderr, "bad {}\n", printable(e.what()));
    if (bad.empty()) throw Error(fmt::format("the tuning database in {} is bad", cf.path().string()));
    tuning = "a bad tuning database";
  }
  if (!bad.empty()) {
    throw Error(fmt::format("{} of {} entries in {} are bad (the next warm or run replaces them){}", bad.size(),
                            listed.size(), cf.path().string(), tuning == "a bad tuning database" ? ", and so is " + tuning : ""));
  }
  fmt::print("{} entries and {} in {} verified\n", listed.size(), tuning, where(cf, disk));
}

}  // namespace

void add_cache(CLI::App& app) {
  CLI::App* group = app.add_subcommand("cache", "Pre-warm, inspect, verify and ship the compiled-kernel cache");
  group->require_subcommand(1);

  auto wf = std::make_shared<WorkloadFlags>();
  auto flags = std::make_shared<CacheFlags>();
  auto jobs = std::make_shared<unsigned>(0);
  CLI::App* warm_cmd = subcommand(group, "warm",
                                  "Compile every kernel a configuration needs into the cache (works without a GPU "
                                  "given --arch)",
                                  *flags);
  add_workload_flags(warm_cmd, *wf, ArchFlag::local_gpu);
  warm_cmd->add_option("--jobs", *jobs, "parallel compilations (default: $DILATRON_COMPILE_JOBS, else hardware threads)")
      ->transform(integer_in(1, 256));
  auto kernels_file = std::make_shared<std::string>();
  CLI::Option* kernels_opt = warm_cmd->add_option(
      "--kernels", *kernels_file,
      "FILE (- for standard input): exactly the kernels it lists, one canonical spec per line as `cache ls --specs` "
      "prints them, instead of a configuration; with --arch each is built for that arch (e.g. a list taken from "
      "another machine's cache)");
  for (const char* flag : {"--segments", "--dilations", "--head-dim", "--dtype", "--causal", "--mode", "--ranks",
                           "--backward", "--decode", "--config"}) {
    kernels_opt->excludes(warm_cmd->get_option(flag));
  }
  warm_cmd->callback([=] { warm(*wf, *kernels_file, *flags, *jobs); });

  auto specs = std::make_shared<bool>(false);
  CLI::App* ls_cmd = subcommand(group, "ls", "List cached kernels with their ptxas report", *flags);
  CLI::Option* json_opt = ls_cmd->add_flag("--json", flags->json, "machine-readable output");
  ls_cmd->add_flag("--specs", *specs,
                   "only the canonical spec of each kernel made from this build's templates (by NVRTC or the emulator), one "
                   "per line: the input of `cache warm --kernels`")
      ->excludes(json_opt);
  ls_cmd->callback([=] { ls(*flags, *specs); });
  CLI::App* stats_cmd = subcommand(group, "stats", "Summarize the cache: entries, size, cap, architectures", *flags);
  stats_cmd->add_flag("--json", flags->json, "machine-readable output");
  stats_cmd->callback([=] { stats(*flags); });
  subcommand(group, "verify", "Check every entry; exit non-zero naming bad ones", *flags)->callback([=] {
    verify(*flags);
  });
  auto with_tuning = std::make_shared<bool>(false);
  CLI::App* clear_cmd = subcommand(group, "clear", "Remove every cached kernel (and with --tuning the tuning database)", *flags);
  clear_cmd->add_flag("--tuning", *with_tuning, "also remove the tuning database (tuning.json), e.g. a damaged one");
  clear_cmd->callback([=] {
    auto disk = flags->existing();
    fmt::print("removed {} entries from {}\n", disk ? disk->clear() : 0, where(*flags, disk));
    if (!disk) return;
    if (*with_tuning) {
      if (remove_tuning(disk->dir())) fmt::print("removed the tuning database {}\n", tuning_path(disk->dir()).string());
      return;
    }
    try {
      read_tuning(disk->dir());
    } catch (const Error& e) {
      fmt::print(stderr, "dilatron warning: {}\n", printable(e.what()));
    }
  });

  auto file = std::make_shared<std::string>();
  CLI::App* export_cmd = subcommand(
      group, "export", "Write every good entry, and the tuning records whose winners they are, into one bundle file", *flags);
  export_cmd->add_option("FILE", *file, "bundle to write")->required();
  export_cmd->callback([=] {
    Outputs out({}, {{"FILE", *file}});  // the destination is checked, as run's outputs are, before any work
    const auto disk = flags->existing();
    if (!disk) throw Error(fmt::format("no cache at {}: nothing to export", flags->path().string()));
    cache::Bundle bundle;
    std::vector<std::string> specs;
    std::size_t bad = 0;
    for (cache::DiskCache::Listed& listed : disk->scan()) {
      if (!listed.entry) {
        ++bad;  // never shipped
        continue;
      }
      specs.push_back(listed.entry->meta.material.spec);
      bundle.entries.push_back(std::move(*listed.entry));
    }
    const std::vector<autotune::TuningRecord> records =
        tuning_or_warn(disk->dir(), "exporting the kernels without tuning records").won_by(specs);
    if (!records.empty()) bundle.tuning = autotune::TuningDb(records).dump();
    cache::write_bundle(out.file(0), bundle);
    out.commit();
    fmt::print("exported {} entries and {} tuning records to {}{}\n", bundle.entries.size(), records.size(), *file,
               bad ? fmt::format(" ({} bad entries skipped)", bad) : "");
  });
  CLI::App* import_cmd =
      subcommand(group, "import", "Verify a bundle, then install its entries and tuning records", *flags);
  import_cmd->add_option("FILE", *file, "bundle to read")->required()->check(CLI::ExistingFile);
  import_cmd->callback([=] {
    const cache::Bundle bundle = cache::read_bundle(*file);
    autotune::TuningDb tuning;
    try {
      if (!bundle.tuning.empty()) tuning = autotune::TuningDb::parse(bundle.tuning);
    } catch (const Error& e) {
      throw Error(fmt::format("{}: bad tuning section, nothing imported: {}", *file, e.what()));
    }
    cache::DiskCache disk = flags->create();
    // All or nothing as far as it can be known in advance: a target database that cannot take the
    // records stops the import before any entry is installed.
    if (!tuning.records().empty()) {
      try {
        read_tuning(disk.dir());
      } catch (const Error& e) {
        throw Error(fmt::format("{}; nothing imported", e.what()));
      }
    }
    std::size_t foreign = 0;
    std::set<std::string> evicted;
    for (const cache::Entry& entry : bundle.entries) {
      for (std::string& key : disk.store(entry)) evicted.insert(std::move(key));
      evicted.erase(entry.key());  // stored again after an earlier eviction
      foreign += !cache::usable_here(entry.meta.material);
    }
    if (!tuning.records().empty()) store_tuning(disk.dir(), tuning.records());
    std::size_t kept = 0;
    for (const cache::Entry& entry : bundle.entries) kept += !evicted.count(entry.key());
    fmt::print("imported {} entries and {} tuning records into {}{}{}\n", kept, tuning.records().size(),
               disk.dir().string(),
               kept < bundle.entries.size()
                   ? fmt::format(" ({} more evicted again by the size cap of {} bytes, DILATRON_CACHE_MAX_BYTES)",
                                 bundle.entries.size() - kept, disk.max_bytes())
                   : "",
               foreign ? fmt::format(" ({} built by another library or NVRTC build: this build will not use them)", foreign)
                       : "");
  });
}

}  // namespace dilatron::cli
