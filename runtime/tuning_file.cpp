#include "runtime/tuning_file.hpp"

#include <dilatron/error.hpp>

#include <fmt/format.h>

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string_view>

#include "cache/cache_dir.hpp"
#include "cache/disk_cache.hpp"
#include "common/atomic_file.hpp"
#include "common/file_io.hpp"
#include "common/log.hpp"

namespace dilatron {
namespace {

using autotune::TuningDb;
using autotune::TuningRecord;

struct ProcessView {
  std::mutex mutex;
  bool loaded = false;
  std::shared_ptr<const TuningDb> db;
};

ProcessView& view() {
  static ProcessView v;
  return v;
}

}  // namespace

std::filesystem::path tuning_path(const std::filesystem::path& cache_dir) { return cache_dir / "tuning.json"; }

TuningDb read_tuning(const std::filesystem::path& cache_dir) {
  const std::filesystem::path path = tuning_path(cache_dir);
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return {};
  try {
    // Its records pick the kernels that run: trusted only as far as the kernels themselves are, in a
    // directory only this user can write, and in a file only this user can write.
    cache::DiskCache::open_existing(cache_dir);
    struct stat st {};
    if (stat(path.c_str(), &st) != 0) throw Error(std::strerror(errno));
    if (st.st_uid != geteuid()) throw Error(fmt::format("belongs to uid {}, not to you (uid {})", st.st_uid, geteuid()));
    if (st.st_mode & (S_IWGRP | S_IWOTH)) {
      throw Error(fmt::format("is writable by group or others (mode {:03o})", st.st_mode & 0777));
    }
    return TuningDb::parse(read_file(path, kMaxTuningBytes));
  } catch (const Error& e) {
    throw Error(fmt::format("tuning database {}: {} (`dilatron cache clear --tuning` removes it; tune again to rebuild "
                            "it)",
                            path.string(), e.what()));
  }
}

bool remove_tuning(const std::filesystem::path& cache_dir) {
  const cache::DiskCache disk(cache_dir);
  const cache::DiskCache::KeyLock lock = disk.lock("tuning");
  std::error_code ec;
  return std::filesystem::remove(tuning_path(cache_dir), ec);
}

TuningDb store_tuning(const std::filesystem::path& cache_dir, const std::vector<TuningRecord>& records) {
  const cache::DiskCache disk(cache_dir);  // creates the directory, or refuses an unsafe one
  const cache::DiskCache::KeyLock lock = disk.lock("tuning");
  TuningDb db;
  try {
    db = read_tuning(cache_dir);
  } catch (const Error& e) {
    throw Error(fmt::format("{}; nothing was written", e.what()));
  }
  for (const TuningRecord& record : records) db.merge(record);
  const std::string text = db.dump();
  AtomicFile file(tuning_path(cache_dir), 0600);
  file.write(text.data(), text.size());
  file.commit();
  return db;
}

AutotuneMode autotune_mode() {
  const char* value = std::getenv("DILATRON_AUTOTUNE");
  const std::string_view v = value ? value : "";
  if (v.empty()) return AutotuneMode::database;
  if (v == "0") return AutotuneMode::off;
  if (v == "1") return AutotuneMode::tune_missing;
  throw Error(fmt::format("DILATRON_AUTOTUNE='{}': expected 0 (heuristic tiles only), 1 (tune missing kernels on first "
                          "use) or unset (use the tuning database)",
                          v));
}

std::shared_ptr<const TuningDb> process_tuning() {
  ProcessView& v = view();
  std::lock_guard lock(v.mutex);
  if (!v.loaded) {
    if (autotune_mode() != AutotuneMode::off) {
      try {
        v.db = std::make_shared<const TuningDb>(read_tuning(cache::default_cache_dir()));
      } catch (const Error& e) {
        log::write(log::Level::warn, "{}; running with heuristic tiles", e.what());
        v.db = std::make_shared<const TuningDb>();
      }
    }
    v.loaded = true;
  }
  return v.db;
}

void publish_tuning(const std::vector<TuningRecord>& records) {
  auto db = std::make_shared<const TuningDb>(store_tuning(cache::default_cache_dir(), records));
  ProcessView& v = view();
  std::lock_guard lock(v.mutex);
  v.db = std::move(db);
  v.loaded = true;
}

}  // namespace dilatron
