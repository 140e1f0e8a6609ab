#include "codegen/templates.hpp"

#include <fmt/format.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

namespace dilatron::codegen {

std::string bundle_hash(const std::vector<TemplateFile>& files) {
  XXH3_state_t* state = XXH3_createState();
  XXH3_64bits_reset(state);
  for (const TemplateFile& f : files) {
    // Lengths first, so moving bytes between a name and its text changes the hash.
    const std::uint64_t sizes[2] = {f.name.size(), f.text.size()};
    XXH3_64bits_update(state, sizes, sizeof sizes);
    XXH3_64bits_update(state, f.name.data(), f.name.size());
    XXH3_64bits_update(state, f.text.data(), f.text.size());
  }
  const XXH64_hash_t digest = XXH3_64bits_digest(state);
  XXH3_freeState(state);
  return fmt::format("{:016x}", digest);
}

const std::string& template_bundle_hash() {
  static const std::string hash = bundle_hash(template_files());
  return hash;
}

}  // namespace dilatron::codegen
