#include "cache/disk_cache.hpp"

#include <dilatron/error.hpp>

#include <fmt/format.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "common/atomic_file.hpp"
#include "common/file_io.hpp"
#include "common/log.hpp"

namespace dilatron::cache {
namespace {

constexpr std::string_view kSuffix = ".kernel";

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

}  // namespace

std::uint64_t max_bytes_from_environment() {
  const char* text = std::getenv("DILATRON_CACHE_MAX_BYTES");
  if (!text || !*text) return std::uint64_t(4) << 30;
  char* end = nullptr;
  const unsigned long long value = std::strtoull(text, &end, 10);
  const std::string_view suffix = end;
  const int shift = suffix.empty() ? 0 : suffix == "K" ? 10 : suffix == "M" ? 20 : suffix == "G" ? 30 : -1;
  if (end == text || shift < 0) {
    throw Error(fmt::format("DILATRON_CACHE_MAX_BYTES='{}': expected a byte count such as 1073741824 or 1G", text));
  }
  return std::uint64_t(value) << shift;
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
    const bool temp = name.starts_with('.') && name.find(std::string(kSuffix) + ".tmp.") != std::string::npos;
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
