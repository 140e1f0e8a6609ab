// The device templates (templates/**), embedded at build time and handed to NVRTC as named headers.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace dilatron::codegen {

struct TemplateFile {
  std::string_view name;  // include name, e.g. "dilatron/pack.cuh"
  std::string_view text;
};

// The templates the JIT compiles: the embedded copy, or with DILATRON_TEMPLATES_DIR=<dir> every *.cuh under
// <dir> (read once per process), so a kernel author edits a template and reruns without rebuilding. The
// cache key follows their contents through template_bundle_hash.
const std::vector<TemplateFile>& template_files();
// The copy built into the library.
const std::vector<TemplateFile>& embedded_template_files();
// Every *.cuh under `dir`, named by its path below it ("dilatron/pack.cuh"), sorted; the texts live as long
// as the process. Throws dilatron::Error naming the directory when it cannot be read or holds no
// dilatron/*.cuh.
std::vector<TemplateFile> read_template_dir(const std::filesystem::path& dir);

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
