// The on-disk layer: one file per entry (<dir>/<key>.kernel), published with AtomicFile so readers
// take no lock and never see a partial entry. The directory must belong to the user and be writable by
// no one else (cached binaries run as code). A size cap evicts the least recently used entries.
// Writers of one key take its lock file (<dir>/<key>.lock) so that processes missing the same kernel
// compile it once; the lock files are no entries, and live only while a compile runs.
#pragma once

#include <chrono>
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

  // An exclusive flock(2) on <dir>/<key>.lock, held across "load again, compile, store" by one process
  // (and one DiskCache object) at a time. Released by the destructor, which first removes the file, so
  // none accumulate; a waiter that then holds a lock on the removed file notices and locks anew.
  class KeyLock {
   public:
    KeyLock() = default;  // holds nothing
    KeyLock(KeyLock&& other) noexcept;
    KeyLock& operator=(KeyLock&& other) noexcept;
    ~KeyLock();
    bool held() const noexcept { return fd_ >= 0; }

   private:
    friend class DiskCache;
    KeyLock(std::filesystem::path path, int fd) : path_(std::move(path)), fd_(fd) {}
    void release() noexcept;
    std::filesystem::path path_;
    int fd_ = -1;
  };
  // Waits for the key's lock. A holder that keeps it past `patience` (a compile far slower than any
  // should be, or a stopped process) is warned about and then ignored: the caller goes on without
  // the lock (held() is false), and the atomic publish keeps readers safe all the same.
  KeyLock lock(const std::string& key, std::chrono::milliseconds patience = std::chrono::minutes(10)) const;

  struct Listed {
    std::filesystem::path path;
    std::uint64_t bytes = 0;
    std::optional<Entry> entry;
    std::string problem;  // why the file does not decode, or its name does not match its key
  };
  // Every entry file, decoded and checked.
  std::vector<Listed> scan() const;
  // Removes every entry (and lock files no process holds, and temp files abandoned over an hour ago;
  // younger ones may belong to a writer still at work); returns how many entries.
  std::size_t clear();

 private:
  std::vector<std::string> evict(const std::string& keep_key);

  std::filesystem::path dir_;
  std::uint64_t max_bytes_;
};

}  // namespace dilatron::cache
