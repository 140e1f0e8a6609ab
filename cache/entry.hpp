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

// What an entry says about its kernel; the field names are the JSON keys (and `cache ls --json`'s).
struct EntryMeta {
  std::string key;
  std::string kernel;  // KernelSpec::label()
  KeyMaterial material;
  std::string lowered_name;  // the symbol to look up in the module
  int registers = 0, spill_bytes = 0;
  int shared_bytes = 0;  // static + dynamic, per block
  int stack_bytes = 0;
  double compile_ms = 0;
  std::string created;  // UTC, ISO 8601
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(EntryMeta, key, kernel, material, lowered_name, registers, spill_bytes, shared_bytes,
                                   stack_bytes, compile_ms, created)

struct Entry {
  EntryMeta meta;
  std::vector<char> cubin;

  const std::string& key() const noexcept { return meta.key; }
};

Entry make_entry(const codegen::KernelSpec& spec, const KeyMaterial& material, const codegen::CompiledKernel& compiled);

std::string encode(const Entry& entry);

// Throws dilatron::Error saying what is wrong (bad magic, other format version, truncated, checksum,
// metadata) so the caller can report the entry and treat it as a miss.
Entry decode(std::string_view bytes);

}  // namespace dilatron::cache
