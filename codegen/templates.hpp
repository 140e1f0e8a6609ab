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

// Hash (16 hex digits) over every file's name and bytes.
std::string bundle_hash(const std::vector<TemplateFile>& files);

// bundle_hash(template_files()), computed once: part of each cache key, so editing any template
// invalidates exactly the binaries built from the old text.
const std::string& template_bundle_hash();

}  // namespace dilatron::codegen
