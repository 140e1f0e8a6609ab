#include "cache/entry.hpp"

#include <dilatron/error.hpp>

#include <fmt/chrono.h>
#include <fmt/format.h>

#include <chrono>
#include <cstring>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "common/bytes.hpp"

namespace dilatron::cache {
namespace {

constexpr std::string_view kMagic = "DLTRNKRN";
constexpr std::size_t kHeaderBytes = 8 + 4 + 4 + 8, kChecksumBytes = 8;

}  // namespace

Entry make_entry(const codegen::KernelSpec& spec, const KeyMaterial& material, const codegen::CompiledKernel& compiled) {
  EntryMeta meta{cache_key(material),
                 spec.label(),
                 material,
                 compiled.lowered_name,
                 compiled.report.registers,
                 compiled.report.spill_bytes,
                 compiled.report.shared_bytes + spec.shared_bytes(),
                 compiled.report.stack_bytes,
                 compiled.compile_ms,
                 fmt::format("{:%Y-%m-%dT%H:%M:%SZ}", fmt::gmtime(std::chrono::system_clock::now()))};
  return {std::move(meta), compiled.cubin};
}

std::string encode(const Entry& entry) {
  const std::string meta = nlohmann::json(entry.meta).dump();
  std::string out(kMagic);
  put_le<std::uint32_t>(out, kFormatVersion);
  put_le<std::uint32_t>(out, std::uint32_t(meta.size()));
  put_le<std::uint64_t>(out, entry.cubin.size());
  out += meta;
  out.append(entry.cubin.data(), entry.cubin.size());
  put_le<std::uint64_t>(out, XXH3_64bits(out.data(), out.size()));
  return out;
}

Entry decode(std::string_view bytes) {
  if (bytes.size() < kHeaderBytes + kChecksumBytes) throw Error(fmt::format("truncated ({} bytes)", bytes.size()));
  if (bytes.substr(0, kMagic.size()) != kMagic) throw Error("bad magic: not a Dilatron kernel cache entry");
  if (const auto format = get_le<std::uint32_t>(bytes, 8); format != kFormatVersion) {
    throw Error(fmt::format("entry format version {} (this library reads {})", format, kFormatVersion));
  }
  const auto meta_bytes = get_le<std::uint32_t>(bytes, 12);
  const auto cubin_bytes = get_le<std::uint64_t>(bytes, 16);
  if (cubin_bytes > bytes.size() || kHeaderBytes + meta_bytes + cubin_bytes + kChecksumBytes != bytes.size()) {
    throw Error(fmt::format("truncated or padded: header promises {} + {} bytes, file has {}", meta_bytes, cubin_bytes,
                            bytes.size()));
  }
  const std::size_t body = bytes.size() - kChecksumBytes;
  if (XXH3_64bits(bytes.data(), body) != get_le<std::uint64_t>(bytes, body)) throw Error("checksum mismatch");

  Entry entry;
  try {
    entry.meta = nlohmann::json::parse(bytes.substr(kHeaderBytes, meta_bytes)).get<EntryMeta>();
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string("bad metadata: ") + e.what());
  }
  if (cache_key(entry.meta.material) != entry.key()) {
    throw Error("key does not match its material");
  }
  const char* cubin = bytes.data() + kHeaderBytes + meta_bytes;
  entry.cubin.assign(cubin, cubin + cubin_bytes);
  return entry;
}

}  // namespace dilatron::cache
