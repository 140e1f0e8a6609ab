#include "cache/key.hpp"

#include <dilatron/error.hpp>
#include <dilatron/version.hpp>

#include <fmt/format.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "codegen/compiler.hpp"
#include "codegen/host_compile.hpp"
#include "common/env.hpp"
#include "codegen/templates.hpp"

namespace dilatron::cache {

namespace {

// The compiler and its options: NVRTC's, or the host compiler's for the emulated device, whose objects
// therefore never meet CUBINs under one key.
std::string compiler_version() {
  return env::emulated_device() ? "host " + codegen::host_compiler_version() : codegen::nvrtc_version();
}
std::string joined_options(const std::string& arch, const codegen::JitOptions& jit) {
  return codegen::options_text(env::emulated_device() ? codegen::host_compile_command() : codegen::compile_options(arch, jit));
}

}  // namespace

KeyMaterial key_material(const codegen::KernelSpec& spec, const codegen::JitOptions& jit) {
  return {spec.canonical(), codegen::template_bundle_hash(), compiler_version(), joined_options(spec.arch, jit),
          spec.arch, kVersion, kFormatVersion};
}

bool usable_here(const KeyMaterial& m, const codegen::JitOptions& jit) {
  return m.template_hash == codegen::template_bundle_hash() && m.nvrtc == compiler_version() &&
         m.options == joined_options(m.arch, jit) && m.library == kVersion && m.format == kFormatVersion;
}

bool same_kernel_source(const KeyMaterial& m) {
  return m.template_hash == codegen::template_bundle_hash() && m.library == kVersion;
}

std::string cache_key(const KeyMaterial& m) {
  std::string text;
  for (const std::string* field : {&m.spec, &m.template_hash, &m.nvrtc, &m.options, &m.arch, &m.library}) {
    text += fmt::format("{}:{};", field->size(), *field);  // length-prefixed: no two field lists collide
  }
  text += std::to_string(m.format);
  const XXH128_hash_t h = XXH3_128bits(text.data(), text.size());
  return fmt::format("{:016x}{:016x}", h.high64, h.low64);
}

}  // namespace dilatron::cache
