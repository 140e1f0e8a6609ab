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

// The source with every `#include "..."` of an embedded template replaced by the template's text
// (each template once, as #pragma once would): exactly what NVRTC compiles, as one self-contained
// file. Includes of anything else are left as they are.
std::string expand_includes(std::string_view source);

// The embedded templates `source` includes, directly or not, in the order they are first included.
std::vector<std::string> included_templates(std::string_view source);

// bundle_hash(template_files()), computed once: part of each cache key, so editing any template
// invalidates exactly the binaries built from the old text.
const std::string& template_bundle_hash();

}  // namespace dilatron::codegen
