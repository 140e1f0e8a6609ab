#include "cache/bundle.hpp"

#include <dilatron/error.hpp>

#include <fmt/format.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "common/bytes.hpp"
#include "common/file_io.hpp"

namespace dilatron::cache {
namespace {

constexpr std::string_view kMagicV1 = "DILATRON-CACHE-BUNDLE v1\n";
constexpr std::string_view kMagicV2 = "DILATRON-CACHE-BUNDLE v2\n";  // adds the tuning section
constexpr std::string_view kMagic = "DILATRON-CACHE-BUNDLE v3\n";    // adds its checksum

// The length-prefixed blob at `at`, or an empty view with `at` unchanged when it overruns the file.
bool take(std::string_view bytes, std::size_t& at, std::string_view& blob) {
  if (bytes.size() - at < 8 || get_le<std::uint64_t>(bytes, at) > bytes.size() - at - 8) return false;
  blob = bytes.substr(at + 8, get_le<std::uint64_t>(bytes, at));
  at += 8 + blob.size();
  return true;
}

}  // namespace

void write_bundle(AtomicFile& out, const Bundle& bundle) {
  std::string bytes(kMagic);
  put_le<std::uint64_t>(bytes, bundle.entries.size());
  for (const Entry& entry : bundle.entries) {
    const std::string encoded = encode(entry);
    put_le<std::uint64_t>(bytes, encoded.size());
    bytes += encoded;
  }
  put_le<std::uint64_t>(bytes, bundle.tuning.size());
  bytes += bundle.tuning;
  put_le<std::uint64_t>(bytes, XXH3_64bits(bundle.tuning.data(), bundle.tuning.size()));
  out.write(bytes.data(), bytes.size());
}

Bundle read_bundle(const std::filesystem::path& file) {
  const std::string bytes = read_file(file, kMaxBundleBytes);
  const std::string_view view(bytes);
  const int version = view.starts_with(kMagic) ? 3 : view.starts_with(kMagicV2) ? 2 : view.starts_with(kMagicV1) ? 1 : 0;
  if (version == 0 || bytes.size() < kMagic.size() + 8) {
    throw Error(fmt::format("{}: not a Dilatron cache bundle", file.string()));
  }
  const std::uint64_t count = get_le<std::uint64_t>(bytes, kMagic.size());
  Bundle bundle;
  std::string problems;
  std::size_t at = kMagic.size() + 8;
  std::string_view blob;
  for (std::uint64_t i = 0; i < count; ++i) {
    if (!take(bytes, at, blob)) {
      problems += fmt::format("\n  entry {}: truncated bundle", i);
      break;
    }
    try {
      bundle.entries.push_back(decode(blob));
    } catch (const Error& e) {
      problems += fmt::format("\n  entry {}: {}", i, e.what());
    }
  }
  if (problems.empty() && version >= 2) {
    if (!take(bytes, at, blob)) {
      problems = "\n  truncated tuning section";
    } else if (version == 3 && (bytes.size() - at < 8 || get_le<std::uint64_t>(bytes, at) != XXH3_64bits(blob.data(), blob.size()))) {
      problems = "\n  tuning section: checksum mismatch";
    } else {
      bundle.tuning = blob;
      at += version == 3 ? 8 : 0;
    }
  }
  if (problems.empty() && at != bytes.size()) problems = "\n  trailing bytes after the last section";
  if (!problems.empty()) throw Error(fmt::format("{}: bad bundle, nothing imported:{}", file.string(), problems));
  return bundle;
}

}  // namespace dilatron::cache
