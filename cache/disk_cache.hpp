// The on-disk layer: one file per entry (<dir>/<key>.kernel), published with AtomicFile so readers
// take no lock and never see a partial entry. The directory must belong to the user and be writable by
// no one else (cached binaries run as code). A size cap evicts the least recently used entries.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "cache/entry.hpp"

namespace dilatron::cache {

// DILATRON_CACHE_MAX_BYTES (bytes, or with a K/M/G suffix), default 4G. Throws on a malformed value.
std::uint64_t max_bytes_from_environment();

class DiskCache {
 public:
  // Creates the directory (mode 0700) when missing; throws dilatron::Error when another user owns it or
  // group/others can write it.
  explicit DiskCache(std::filesystem::path dir, std::uint64_t max_bytes = max_bytes_from_environment());
  // For commands that only read: no directory is created. Empty when `dir` does not exist; throws like
  // the constructor when it exists but is not safe to use.
  static std::optional<DiskCache> open_existing(const std::filesystem::path& dir,
                                                std::uint64_t max_bytes = max_bytes_from_environment());

  const std::filesystem::path& dir() const noexcept { return dir_; }
  std::uint64_t max_bytes() const noexcept { return max_bytes_; }
  std::filesystem::path path_of(const std::string& key) const;

  struct Loaded {
    std::optional<Entry> entry;
    std::string problem;  // set when a file was there but unusable: a miss, to be replaced
  };
  // A hit also marks the entry as recently used.
  Loaded load(const std::string& key) const;

  // Writes atomically, then evicts least recently used entries down to the cap (never the entry just
  // written). Returns the keys it evicted.
  std::vector<std::string> store(const Entry& entry);

  struct Listed {
    std::filesystem::path path;
    std::uint64_t bytes = 0;
    std::optional<Entry> entry;
    std::string problem;  // why the file does not decode, or its name does not match its key
  };
  // Every entry file, decoded and checked.
  std::vector<Listed> scan() const;
  // Removes every entry (and stray temp files); returns how many entries.
  std::size_t clear();

 private:
  std::vector<std::string> evict(const std::string& keep_key);

  std::filesystem::path dir_;
  std::uint64_t max_bytes_;
};

}  // namespace dilatron::cache
