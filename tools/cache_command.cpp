// `dilatron cache ...`: pre-warm, inspect, check and ship the kernel cache.
#include <dilatron/error.hpp>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <thread>

#include "cache/bundle.hpp"
#include "cache/kernel_cache.hpp"
#include "tools/commands.hpp"
#include "tools/workload_flags.hpp"

namespace dilatron::cli {
namespace {

struct CacheFlags {
  std::string dir;
  cache::CacheOptions options(unsigned jobs = 0) const {
    cache::CacheOptions o = cache::CacheOptions::from_environment(dir);
    if (jobs) o.compile_jobs = jobs;
    return o;
  }
  cache::DiskCache disk() const {
    const cache::CacheOptions o = options();
    return cache::DiskCache(o.dir, o.max_bytes);
  }
};

CLI::App* subcommand(CLI::App* parent, const char* name, const char* help, CacheFlags& flags) {
  CLI::App* cmd = parent->add_subcommand(name, help);
  cmd->add_option("--cache-dir", flags.dir, "cache directory (default: $DILATRON_CACHE_DIR, else ~/.cache/dilatron)");
  return cmd;
}

void warm(const WorkloadFlags& wf, const CacheFlags& cf, unsigned jobs) {
  const std::vector<codegen::KernelSpec> specs = kernels_of(workloads(wf));
  if (jobs == 0) jobs = std::max(1u, std::thread::hardware_concurrency());
  cache::KernelCache kernels(cf.options(jobs));
  const bool tty = isatty(STDERR_FILENO);
  std::atomic<std::size_t> next{0};
  std::mutex mutex;
  std::size_t done = 0, compiled = 0, hits = 0, repaired = 0;
  std::vector<std::string> failures;
  const auto start = std::chrono::steady_clock::now();
  auto worker = [&] {
    for (std::size_t i = next++; i < specs.size(); i = next++) {
      std::string status;
      try {
        const cache::Lookup found = kernels.get(specs[i]);
        status = found.source == cache::Source::compiled ? "compiled" : "hit";
        std::lock_guard lock(mutex);
        (found.source == cache::Source::compiled ? compiled : hits) += 1;
        repaired += !found.repaired.empty();
      } catch (const std::exception& e) {
        status = "FAILED";
        std::lock_guard lock(mutex);
        failures.push_back(fmt::format("{}: {}", specs[i].label(), e.what()));
      }
      std::lock_guard lock(mutex);
      ++done;
      fmt::print(stderr, "{}[{}/{}] {:<8} {}{}", tty ? "\r\033[K" : "", done, specs.size(), status, specs[i].label(),
                 tty ? "" : "\n");
    }
  };
  std::vector<std::thread> pool;
  for (unsigned t = 1; t < std::min<std::size_t>(jobs, specs.size()); ++t) pool.emplace_back(worker);
  worker();
  for (std::thread& t : pool) t.join();
  if (tty) fmt::print(stderr, "\n");
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  fmt::print("{} kernels for {} in {}: {} compiled, {} hits, {} failed{} ({:.2f} s)\n", specs.size(), specs.front().arch,
             kernels.disk().dir().string(), compiled, hits, failures.size(),
             repaired ? fmt::format(", {} bad entries replaced", repaired) : "", seconds);
  for (const std::string& f : failures) fmt::print(stderr, "failed: {}\n", f);
  if (!failures.empty()) throw Error(fmt::format("{} of {} kernels failed to build", failures.size(), specs.size()));
}

nlohmann::json describe(const cache::DiskCache::Listed& listed) {
  nlohmann::json j = {{"file", listed.path.filename().string()}, {"bytes", listed.bytes}};
  if (!listed.entry) {
    j["problem"] = listed.problem;
    return j;
  }
  const nlohmann::json& m = listed.entry->meta;
  for (const char* field : {"key", "kernel", "registers", "spill_bytes", "shared_bytes", "stack_bytes", "compile_ms",
                            "created", "lowered_name"}) {
    j[field] = m.at(field);
  }
  const nlohmann::json& material = m.at("material");
  j["arch"] = material.at("arch");
  j["spec"] = material.at("spec");
  j["nvrtc"] = material.at("nvrtc");
  j["usable"] = cache::usable_here(cache::key_material_from_json(material));
  return j;
}

void ls(const CacheFlags& cf, bool json) {
  const cache::DiskCache disk = cf.disk();
  const auto listed = disk.scan();
  if (json) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& l : listed) out.push_back(describe(l));
    fmt::print("{}\n", out.dump(2));
    return;
  }
  fmt::print("{:<12} {:<7} {:>5} {:>6} {:>7} {:>9} {:>8}  {}\n", "key", "arch", "regs", "spill", "smem", "compile", "bytes",
             "kernel");
  for (const auto& l : listed) {
    if (!l.entry) {
      fmt::print("{:<12} BAD: {}\n", l.path.filename().string().substr(0, 12), l.problem);
      continue;
    }
    const nlohmann::json j = describe(l);
    fmt::print("{:<12} {:<7} {:>5} {:>6} {:>7} {:>7.0f}ms {:>8}  {}{}\n", j["key"].get<std::string>().substr(0, 12),
               j["arch"].get<std::string>(), j["registers"].get<int>(), j["spill_bytes"].get<int>(),
               j["shared_bytes"].get<int>(), j["compile_ms"].get<double>(), l.bytes, j["kernel"].get<std::string>(),
               j["usable"].get<bool>() ? "" : "  (other build)");
  }
  fmt::print("{} entries in {}\n", listed.size(), disk.dir().string());
}

void stats(const CacheFlags& cf) {
  const cache::DiskCache disk = cf.disk();
  std::map<std::string, std::size_t> by_arch;
  std::size_t bad = 0, foreign = 0;
  std::uint64_t bytes = 0;
  const auto listed = disk.scan();
  for (const auto& l : listed) {
    bytes += l.bytes;
    if (!l.entry) {
      ++bad;
      continue;
    }
    const auto material = cache::key_material_from_json(l.entry->meta.at("material"));
    ++by_arch[material.arch];
    foreign += !cache::usable_here(material);
  }
  fmt::print("directory   {}\n", disk.dir().string());
  fmt::print("entries     {} ({} bad, {} from other builds)\n", listed.size(), bad, foreign);
  fmt::print("size        {:.1f} MiB of a {:.1f} MiB cap (DILATRON_CACHE_MAX_BYTES)\n", double(bytes) / (1 << 20),
             double(disk.max_bytes()) / (1 << 20));
  for (const auto& [arch, count] : by_arch) fmt::print("{:<11} {} entries\n", arch, count);
}

void verify(const CacheFlags& cf) {
  const cache::DiskCache disk = cf.disk();
  const auto listed = disk.scan();
  std::vector<std::string> bad;
  for (const auto& l : listed) {
    if (!l.entry) bad.push_back(fmt::format("{}: {}", l.path.string(), l.problem));
  }
  for (const std::string& b : bad) fmt::print(stderr, "bad entry {}\n", b);
  if (!bad.empty()) {
    throw Error(fmt::format("{} of {} entries in {} are bad (the next warm or run replaces them)", bad.size(),
                            listed.size(), disk.dir().string()));
  }
  fmt::print("{} entries in {} verified\n", listed.size(), disk.dir().string());
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
  add_workload_flags(warm_cmd, *wf);
  warm_cmd->add_option("--jobs", *jobs, "parallel compilations (default: hardware threads)");
  warm_cmd->callback([=] { warm(*wf, *flags, *jobs); });

  auto json = std::make_shared<bool>(false);
  CLI::App* ls_cmd = subcommand(group, "ls", "List cached kernels with their ptxas report", *flags);
  ls_cmd->add_flag("--json", *json, "machine-readable output");
  ls_cmd->callback([=] { ls(*flags, *json); });

  subcommand(group, "stats", "Summarize the cache: entries, size, cap, architectures", *flags)->callback([=] {
    stats(*flags);
  });
  subcommand(group, "verify", "Check every entry; exit non-zero naming bad ones", *flags)->callback([=] {
    verify(*flags);
  });
  subcommand(group, "clear", "Remove every cached kernel", *flags)->callback([=] {
    cache::DiskCache disk = flags->disk();
    fmt::print("removed {} entries from {}\n", disk.clear(), disk.dir().string());
  });

  auto file = std::make_shared<std::string>();
  CLI::App* export_cmd = subcommand(group, "export", "Write every good entry into one bundle file", *flags);
  export_cmd->add_option("FILE", *file, "bundle to write")->required();
  export_cmd->callback([=] {
    const cache::DiskCache disk = flags->disk();
    const cache::ExportResult r = cache::export_bundle(disk, *file);
    fmt::print("exported {} entries to {}{}\n", r.exported, *file,
               r.skipped_bad ? fmt::format(" ({} bad entries skipped)", r.skipped_bad) : "");
  });
  CLI::App* import_cmd = subcommand(group, "import", "Verify a bundle, then install its entries", *flags);
  import_cmd->add_option("FILE", *file, "bundle to read")->required()->check(CLI::ExistingFile);
  import_cmd->callback([=] {
    cache::DiskCache disk = flags->disk();
    const cache::ImportResult r = cache::import_bundle(disk, *file);
    fmt::print("imported {} entries into {}{}\n", r.imported, disk.dir().string(),
               r.foreign ? fmt::format(" ({} built by another library or NVRTC build: this build will not use them)",
                                       r.foreign)
                         : "");
  });
}

}  // namespace dilatron::cli
