// The cache key: a hash over everything that decides a kernel's binary. Change any ingredient (spec,
// template bytes, NVRTC version, options, arch, library version, entry format) and the key changes, so
// a stale binary is never loaded.
#pragma once

#include <nlohmann/json.hpp>

#include <string>

#include "codegen/jit_options.hpp"
#include "codegen/kernel_spec.hpp"

namespace dilatron::cache {

// Bumped when the entry file layout or metadata meaning changes.
inline constexpr int kFormatVersion = 1;

struct KeyMaterial {
  std::string spec;           // canonical spec
  std::string template_hash;  // codegen::template_bundle_hash()
  std::string nvrtc;          // NVRTC major.minor
  std::string options;        // NVRTC options, space-joined
  std::string arch;
  std::string library;  // dilatron version
  int format = kFormatVersion;

  bool operator==(const KeyMaterial&) const = default;
};

// The material for a spec with this build of the library, the NVRTC it compiles with and the NVRTC
// options `jit` gives (line info changes the binary; dumping and the ptxas check do not).
KeyMaterial key_material(const codegen::KernelSpec& spec, const codegen::JitOptions& jit = codegen::jit_options());

// 32 hex digits (XXH3-128 over the length-prefixed fields).
std::string cache_key(const KeyMaterial& material);

// Whether an entry built from this material would be loaded by this build (same templates, NVRTC,
// options, library and format): entries imported from another build are kept but never used.
bool usable_here(const KeyMaterial& material, const codegen::JitOptions& jit = codegen::jit_options());

// Whether this build's runs could have asked for the kernel: made from the same templates by the same
// library version, whichever compiler built it (NVRTC, or the emulator's host compiler).
bool same_kernel_source(const KeyMaterial& material);

// JSON as stored in entry metadata; reading throws nlohmann::json::exception for a missing or mistyped field.
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(KeyMaterial, spec, template_hash, nvrtc, options, arch, library, format)

}  // namespace dilatron::cache
