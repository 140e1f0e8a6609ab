// One cache entry is one self-contained file:
//   magic "DLTRNKRN" | u32 format | u32 metadata bytes | u64 cubin bytes | metadata JSON | CUBIN |
//   u64 XXH3-64 of everything before it
// (integers little-endian). The metadata carries the key, its material, the spec, the lowered kernel
// name, the ptxas report, the compile time and the date. Decoding checks all of it.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <string_view>
#include <vector>

#include "cache/key.hpp"
#include "codegen/compiler.hpp"

namespace dilatron::cache {

struct Entry {
  std::string key;
  nlohmann::json meta;
  std::vector<char> cubin;

  std::string lowered_name() const { return meta.at("lowered_name").get<std::string>(); }
  std::string kernel() const { return meta.at("kernel").get<std::string>(); }
};

Entry make_entry(const codegen::KernelSpec& spec, const KeyMaterial& material, const codegen::CompiledKernel& compiled);

std::string encode(const Entry& entry);

// Throws dilatron::Error saying what is wrong (bad magic, other format version, truncated, checksum,
// metadata) so the caller can report the entry and treat it as a miss.
Entry decode(std::string_view bytes);

}  // namespace dilatron::cache
