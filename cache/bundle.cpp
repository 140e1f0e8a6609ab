#include "cache/bundle.hpp"

#include <dilatron/error.hpp>

#include <fmt/format.h>

#include "common/bytes.hpp"
#include "common/file_io.hpp"

namespace dilatron::cache {
namespace {

constexpr std::string_view kMagicV1 = "DILATRON-CACHE-BUNDLE v1\n";
constexpr std::string_view kMagic = "DILATRON-CACHE-BUNDLE v2\n";  // adds the tuning section

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
  out.write(bytes.data(), bytes.size());
}

Bundle read_bundle(const std::filesystem::path& file) {
  const std::string bytes = read_file(file);
  const bool v1 = std::string_view(bytes).starts_with(kMagicV1);
  if (!(v1 || std::string_view(bytes).starts_with(kMagic)) || bytes.size() < kMagic.size() + 8) {
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
  if (problems.empty() && !v1) {
    if (take(bytes, at, blob)) {
      bundle.tuning = blob;
    } else {
      problems = "\n  truncated tuning section";
    }
  }
  if (problems.empty() && at != bytes.size()) problems = "\n  trailing bytes after the last section";
  if (!problems.empty()) throw Error(fmt::format("{}: bad bundle, nothing imported:{}", file.string(), problems));
  return bundle;
}

}  // namespace dilatron::cache
