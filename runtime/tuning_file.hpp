// The tuning database on disk: <cache dir>/tuning.json, written whole and atomically under the lock
// <cache dir>/tuning.lock, so tuners in several processes add to it without losing each other's
// records. `cache clear` removes kernels only; the database stays. It lives in runtime/ because it
// joins the two sides: autotune/'s records in cache/'s directory, under cache/'s lock.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <vector>

#include "autotune/tuning_db.hpp"

namespace dilatron {

std::filesystem::path tuning_path(const std::filesystem::path& cache_dir);

// A database larger than this is refused before it is read (a real one holds a few hundred records).
inline constexpr std::uint64_t kMaxTuningBytes = std::uint64_t(16) << 20;

// The database in `cache_dir`, empty when the file does not exist. Throws dilatron::Error naming the
// file and how to repair it when it cannot be read or parsed, is too large, or could have been written
// by someone else (the directory's checks of the kernel cache, and the file's owner and mode).
autotune::TuningDb read_tuning(const std::filesystem::path& cache_dir);

// `cache clear --tuning`: removes the database under its lock; false when there was none.
bool remove_tuning(const std::filesystem::path& cache_dir);

// Reads the file again under its lock, folds `records` in (autotune::TuningDb::merge) and publishes the result,
// which it returns. Creates the directory like the kernel cache does. Refuses (throws, writing
// nothing) when the file there does not parse: a database is never silently thrown away.
autotune::TuningDb store_tuning(const std::filesystem::path& cache_dir,
                                const std::vector<autotune::TuningRecord>& records);

// What DILATRON_AUTOTUNE asks of the runtime: 0 ignores the database (heuristic tiles only), unset or
// empty uses it, 1 also tunes a kernel the database lacks on its first use. Throws on other values.
enum class AutotuneMode { off, database, tune_missing };
AutotuneMode autotune_mode();

// The runtime's view of the database in the default cache directory (DILATRON_CACHE_DIR...), read on
// first use: null when DILATRON_AUTOTUNE=0, empty (after one warning) when the file is unreadable.
std::shared_ptr<const autotune::TuningDb> process_tuning();
// Stores records (store_tuning on the default directory) and makes the result the process's view.
void publish_tuning(const std::vector<autotune::TuningRecord>& records);

}  // namespace dilatron
