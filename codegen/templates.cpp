#include "codegen/templates.hpp"

#include <dilatron/error.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <deque>
#include <fstream>
#include <mutex>
#include <sstream>

#include "common/env.hpp"

#define XXH_INLINE_ALL
#include <xxhash.h>

namespace dilatron::codegen {
namespace {

const TemplateFile* find_template(std::string_view name) {
  for (const TemplateFile& f : template_files()) {
    if (f.name == name) return &f;
  }
  return nullptr;
}

// The name in a line `#include "name"`, or empty.
std::string_view quoted_include(std::string_view line) {
  line.remove_prefix(std::min(line.find_first_not_of(" \t"), line.size()));
  if (!line.starts_with("#include")) return {};
  const std::size_t open = line.find('"'), close = line.find('"', open + 1);
  if (open == std::string_view::npos || close == std::string_view::npos) return {};
  return line.substr(open + 1, close - open - 1);
}

// Appends `source` to `out` with its template includes expanded; `seen` lists templates already in.
void expand(std::string_view source, std::vector<std::string>& seen, std::string* out) {
  while (!source.empty()) {
    const std::size_t end = source.find('\n');
    const std::string_view line = source.substr(0, end);
    source.remove_prefix(end == std::string_view::npos ? source.size() : end + 1);
    const std::string_view name = quoted_include(line);
    const TemplateFile* file = name.empty() ? nullptr : find_template(name);
    if (!file) {
      if (out && line != "#pragma once") *out += std::string(line) + "\n";
      continue;
    }
    if (std::find(seen.begin(), seen.end(), name) != seen.end()) continue;
    seen.emplace_back(name);
    if (out) *out += fmt::format("// ----- begin {} -----\n", name);
    expand(file->text, seen, out);
    if (out) *out += fmt::format("// ----- end {} -----\n", name);
  }
}

}  // namespace

std::vector<TemplateFile> read_template_dir(const std::filesystem::path& dir) {
  static std::mutex mutex;
  static std::deque<std::string> texts;  // never shrinks: the views below point into it
  namespace fs = std::filesystem;
  std::vector<std::pair<std::string, std::string>> read;
  try {
    if (!fs::is_directory(dir)) throw Error("not a directory");
    for (const fs::directory_entry& e : fs::recursive_directory_iterator(dir)) {
      if (!e.is_regular_file() || e.path().extension() != ".cuh") continue;
      std::ifstream in(e.path(), std::ios::binary);
      std::ostringstream text;
      text << in.rdbuf();
      if (!in) throw Error(fmt::format("cannot read {}", e.path().string()));
      read.emplace_back(e.path().lexically_relative(dir).generic_string(), text.str());
    }
  } catch (const std::exception& e) {
    throw Error(fmt::format("DILATRON_TEMPLATES_DIR='{}': {}", dir.string(), e.what()));
  }
  if (std::none_of(read.begin(), read.end(), [](const auto& f) { return f.first.starts_with("dilatron/"); })) {
    throw Error(fmt::format("DILATRON_TEMPLATES_DIR='{}' holds no dilatron/*.cuh: point it at a copy of the project's "
                            "templates/ folder", dir.string()));
  }
  std::sort(read.begin(), read.end());
  const std::lock_guard lock(mutex);
  std::vector<TemplateFile> files;
  for (auto& [name, text] : read) {
    texts.push_back(std::move(name));
    const std::string_view name_view = texts.back();
    texts.push_back(std::move(text));
    files.push_back({name_view, texts.back()});
  }
  return files;
}

const std::vector<TemplateFile>& template_files() {
  static const std::vector<TemplateFile> files = [] {
    const std::string_view dir = env::text("DILATRON_TEMPLATES_DIR");
    return dir.empty() ? embedded_template_files() : read_template_dir(std::string(dir));
  }();
  return files;
}

std::string expand_includes(std::string_view source) {
  std::vector<std::string> seen;
  std::string out;
  expand(source, seen, &out);
  return out;
}

std::vector<std::string> included_templates(std::string_view source) {
  std::vector<std::string> seen;
  expand(source, seen, nullptr);
  return seen;
}

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
