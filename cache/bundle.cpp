#include "cache/bundle.hpp"

#include <dilatron/error.hpp>

#include <fmt/format.h>

#include "common/atomic_file.hpp"
#include "common/bytes.hpp"
#include "common/file_io.hpp"

namespace dilatron::cache {
namespace {

constexpr std::string_view kMagic = "DILATRON-CACHE-BUNDLE v1\n";

}  // namespace

ExportResult export_bundle(const DiskCache& cache, const std::filesystem::path& file) {
  ExportResult result;
  std::string body;
  for (const DiskCache::Listed& listed : cache.scan()) {
    if (!listed.entry) {
      ++result.skipped_bad;
      continue;
    }
    const std::string bytes = encode(*listed.entry);
    put_le<std::uint64_t>(body, bytes.size());
    body += bytes;
    ++result.exported;
  }
  std::string header(kMagic);
  put_le<std::uint64_t>(header, result.exported);
  AtomicFile out(file);
  out.write(header.data(), header.size());
  out.write(body.data(), body.size());
  out.commit();
  return result;
}

ImportResult import_bundle(DiskCache& cache, const std::filesystem::path& file) {
  const std::string bytes = read_file(file);
  if (!std::string_view(bytes).starts_with(kMagic) || bytes.size() < kMagic.size() + 8) {
    throw Error(fmt::format("{}: not a Dilatron cache bundle", file.string()));
  }
  const std::uint64_t count = get_le<std::uint64_t>(bytes, kMagic.size());
  std::vector<Entry> entries;
  std::string problems;
  std::size_t at = kMagic.size() + 8;
  for (std::uint64_t i = 0; i < count; ++i) {
    if (bytes.size() - at < 8 || get_le<std::uint64_t>(bytes, at) > bytes.size() - at - 8) {
      problems += fmt::format("\n  entry {}: truncated bundle", i);
      break;
    }
    const std::uint64_t size = get_le<std::uint64_t>(bytes, at);
    try {
      entries.push_back(decode(std::string_view(bytes).substr(at + 8, size)));
    } catch (const Error& e) {
      problems += fmt::format("\n  entry {}: {}", i, e.what());
    }
    at += 8 + size;
  }
  if (problems.empty() && at != bytes.size()) problems = "\n  trailing bytes after the last entry";
  if (!problems.empty()) throw Error(fmt::format("{}: bad bundle, nothing imported:{}", file.string(), problems));

  ImportResult result;
  for (const Entry& entry : entries) {
    cache.store(entry);
    ++result.imported;
    result.foreign += !usable_here(entry.meta.material);
  }
  return result;
}

}  // namespace dilatron::cache
