#include "cache/disk_cache.hpp"

#include <dilatron/error.hpp>

#include <fmt/format.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <utility>

#include "common/atomic_file.hpp"
#include "common/env.hpp"
#include "common/file_io.hpp"
#include "common/log.hpp"

namespace dilatron::cache {
namespace {

constexpr std::string_view kSuffix = ".kernel";
constexpr std::string_view kLockSuffix = ".lock";
// A temporary entry file untouched for this long has no live writer (an entry is written in seconds).
constexpr std::chrono::hours kAbandonedAfter{1};

void make_private_directory(const std::filesystem::path& dir) {
  std::error_code ec;
  if (dir.has_parent_path()) std::filesystem::create_directories(dir.parent_path(), ec);
  if (mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    throw Error(fmt::format("cannot create cache directory {}: {}", dir.string(), std::strerror(errno)));
  }
}

void check_directory(const std::filesystem::path& dir) {
  struct stat st {};
  if (stat(dir.c_str(), &st) != 0) {
    throw Error(fmt::format("cannot use cache directory {}: {}", dir.string(), std::strerror(errno)));
  }
  if (!S_ISDIR(st.st_mode)) throw Error(fmt::format("cache directory {} is not a directory", dir.string()));
  if (st.st_uid != geteuid()) {
    throw Error(fmt::format("cache directory {} belongs to uid {}, not to you (uid {}); cached kernels run as code, so "
                            "only a directory you own is used: set DILATRON_CACHE_DIR to one",
                            dir.string(), st.st_uid, geteuid()));
  }
  if (st.st_mode & (S_IWGRP | S_IWOTH)) {
    throw Error(fmt::format("cache directory {} is writable by group or others (mode {:03o}); cached kernels run as "
                            "code, so it is refused: run `chmod 700 {}`",
                            dir.string(), st.st_mode & 0777, dir.string()));
  }
}

bool is_entry_file(const std::filesystem::path& p) {
  const std::string name = p.filename().string();
  return !name.starts_with('.') && name.ends_with(kSuffix);
}

// Whether `fd` is still the file named `path`: the holder of a lock removes the file before releasing
// it, so a lock obtained on a file no longer there guards nothing.
bool still_named(int fd, const std::filesystem::path& path) {
  struct stat held {}, named {};
  return fstat(fd, &held) == 0 && stat(path.c_str(), &named) == 0 && held.st_dev == named.st_dev &&
         held.st_ino == named.st_ino;
}

// Removes a lock file nobody holds (left by a process that was killed between creating and locking).
void remove_if_stale(const std::filesystem::path& path) {
  const int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return;
  if (flock(fd, LOCK_EX | LOCK_NB) == 0 && still_named(fd, path)) unlink(path.c_str());
  close(fd);
}

}  // namespace

std::uint64_t max_bytes_from_environment() {
  const std::string_view text = env::text("DILATRON_CACHE_MAX_BYTES");
  if (text.empty()) return std::uint64_t(4) << 30;
  // Up to 1 EiB: a cap beyond any disk, and far from wrapping.
  return env::parse_count("DILATRON_CACHE_MAX_BYTES", text, 0, std::uint64_t(1) << 60, true);
}

DiskCache::DiskCache(std::filesystem::path dir, std::uint64_t max_bytes) : dir_(std::move(dir)), max_bytes_(max_bytes) {
  if (dir_.empty()) throw Error("the cache directory path is empty");
  make_private_directory(dir_);
  check_directory(dir_);
}

std::optional<DiskCache> DiskCache::open_existing(const std::filesystem::path& dir, std::uint64_t max_bytes) {
  std::error_code ec;
  if (!dir.empty() && !std::filesystem::exists(dir, ec)) return std::nullopt;
  return DiskCache(dir, max_bytes);  // exists: only checked, never created
}

std::filesystem::path DiskCache::path_of(const std::string& key) const { return dir_ / (key + std::string(kSuffix)); }

DiskCache::Loaded DiskCache::load(const std::string& key) const {
  const std::filesystem::path path = path_of(key);
  Loaded result;
  std::string bytes;
  try {
    bytes = read_file(path);
  } catch (const Error&) {
    return result;  // absent (or vanished under an eviction): a plain miss
  }
  try {
    Entry entry = decode(bytes);
    if (entry.key() != key) throw Error(fmt::format("holds key {}", entry.key()));
    result.entry = std::move(entry);
    utimensat(AT_FDCWD, path.c_str(), nullptr, 0);  // recently used, for LRU eviction
  } catch (const Error& e) {
    result.problem = fmt::format("{}: {}", path.string(), e.what());
  }
  return result;
}

std::vector<std::string> DiskCache::store(const Entry& entry) {
  AtomicFile file(path_of(entry.key()), 0600);
  const std::string bytes = encode(entry);
  file.write(bytes.data(), bytes.size());
  file.commit();
  return evict(entry.key());
}

DiskCache::KeyLock::KeyLock(KeyLock&& other) noexcept : path_(std::move(other.path_)), fd_(other.fd_) { other.fd_ = -1; }

DiskCache::KeyLock& DiskCache::KeyLock::operator=(KeyLock&& other) noexcept {
  if (this != &other) {
    release();
    path_ = std::move(other.path_);
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

DiskCache::KeyLock::~KeyLock() { release(); }

void DiskCache::KeyLock::release() noexcept {
  if (fd_ < 0) return;
  unlink(path_.c_str());  // first: whoever locks the old file next sees it gone and locks anew
  close(fd_);             // releases the flock
  fd_ = -1;
}

DiskCache::KeyLock DiskCache::lock(const std::string& key, std::chrono::milliseconds patience) const {
  const std::filesystem::path path = dir_ / (key + std::string(kLockSuffix));
  const auto deadline = std::chrono::steady_clock::now() + patience;
  // Polled rather than blocking in flock(2), which has no timeout; a compile takes far longer than a poll.
  std::chrono::milliseconds pause{1};
  for (;;) {
    const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) throw Error(fmt::format("cannot create the lock file {}: {}", path.string(), std::strerror(errno)));
    while (flock(fd, LOCK_EX | LOCK_NB) != 0) {
      if (errno != EWOULDBLOCK && errno != EINTR) {
        const int error = errno;
        close(fd);
        throw Error(fmt::format("cannot lock {}: {}", path.string(), std::strerror(error)));
      }
      if (std::chrono::steady_clock::now() >= deadline) {
        close(fd);
        log::write(log::Level::warn, "{} has been locked for over {:g} s by another process; going on without it",
                   path.string(), double(patience.count()) / 1000);
        return {};
      }
      std::this_thread::sleep_for(pause);
      pause = std::min(pause * 2, std::chrono::milliseconds(50));
    }
    if (still_named(fd, path)) return KeyLock(path, fd);
    close(fd);
  }
}

std::vector<DiskCache::Listed> DiskCache::scan() const {
  std::vector<Listed> out;
  std::error_code ec;
  for (const auto& item : std::filesystem::directory_iterator(dir_, ec)) {
    if (!item.is_regular_file() || !is_entry_file(item.path())) continue;
    Listed listed{item.path(), item.file_size(ec), std::nullopt, {}};
    try {
      Entry entry = decode(read_file(item.path()));
      if (path_of(entry.key()) != item.path()) throw Error(fmt::format("file name does not match its key {}", entry.key()));
      listed.entry = std::move(entry);
    } catch (const Error& e) {
      listed.problem = e.what();
    }
    out.push_back(std::move(listed));
  }
  std::sort(out.begin(), out.end(), [](const Listed& a, const Listed& b) { return a.path < b.path; });
  return out;
}

std::size_t DiskCache::clear() {
  std::size_t removed = 0;
  std::error_code ec;
  for (const auto& item : std::filesystem::directory_iterator(dir_, ec)) {
    const std::string name = item.path().filename().string();
    if (item.is_regular_file() && !name.starts_with('.') && name.ends_with(kLockSuffix)) {
      remove_if_stale(item.path());
      continue;
    }
    // A temporary file belongs to a writer that may still be running (a concurrent warm): only one left
    // long ago by a killed process is litter.
    const bool temp = is_temporary_name(name);
    if (temp && std::filesystem::file_time_type::clock::now() - item.last_write_time(ec) < kAbandonedAfter) continue;
    if (!item.is_regular_file() || !(is_entry_file(item.path()) || temp)) continue;
    if (std::filesystem::remove(item.path(), ec) && !temp) ++removed;
  }
  return removed;
}

std::vector<std::string> DiskCache::evict(const std::string& keep_key) {
  struct File {
    std::filesystem::path path;
    std::uint64_t bytes;
    std::filesystem::file_time_type used;
  };
  std::vector<File> files;
  std::uint64_t total = 0;
  std::error_code ec;
  for (const auto& item : std::filesystem::directory_iterator(dir_, ec)) {
    if (!item.is_regular_file() || !is_entry_file(item.path())) continue;
    files.push_back({item.path(), item.file_size(ec), item.last_write_time(ec)});
    total += files.back().bytes;
  }
  std::vector<std::string> evicted;
  if (total <= max_bytes_) return evicted;
  std::sort(files.begin(), files.end(), [](const File& a, const File& b) { return a.used < b.used; });
  const std::filesystem::path keep = path_of(keep_key);
  for (const File& f : files) {
    if (total <= max_bytes_) break;
    if (f.path == keep) continue;
    if (std::filesystem::remove(f.path, ec)) {
      total -= f.bytes;
      evicted.push_back(f.path.stem().string());
      log::write(log::Level::info, "evicted {} ({} bytes) to stay under the cache cap of {} bytes", f.path.string(),
                 f.bytes, max_bytes_);
    }
  }
  return evicted;
}

}  // namespace dilatron::cache
