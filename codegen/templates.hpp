// The device templates (templates/**), embedded at build time and handed to NVRTC as named headers.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace dilatron::codegen {

struct TemplateFile {
  std::string_view name;  // include name, e.g. "dilatron/pack.cuh"
  std::string_view text;
};

const std::vector<TemplateFile>& template_files();

// Hash (hex) over every template's name and bytes: part of each cache key, so editing any template
// invalidates exactly the binaries built from the old text.
const std::string& template_bundle_hash();

}  // namespace dilatron::codegen
