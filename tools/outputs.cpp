#include "tools/outputs.hpp"

#include <fmt/format.h>

#include "tools/commands.hpp"

namespace dilatron::cli {
namespace {

// Equal after resolving links, or the same inode (hard links) when both exist.
bool same_file(const std::filesystem::path& a, const std::filesystem::path& b) {
  std::error_code ec;
  if (std::filesystem::exists(a, ec) && std::filesystem::exists(b, ec)) return std::filesystem::equivalent(a, b, ec);
  return std::filesystem::weakly_canonical(std::filesystem::absolute(a), ec) ==
         std::filesystem::weakly_canonical(std::filesystem::absolute(b), ec);
}

void check_target(const NamedPath& out) {
  std::error_code ec;
  if (out.path.empty()) throw UsageError(fmt::format("{}: the path is empty", out.flag));
  if (std::filesystem::is_directory(out.path, ec)) {
    throw UsageError(fmt::format("{} {} is a directory: give a file name", out.flag, out.path.string()));
  }
  const std::filesystem::path dir = out.path.has_parent_path() ? out.path.parent_path() : ".";
  if (!std::filesystem::is_directory(dir, ec)) {
    throw UsageError(fmt::format("{} {}: directory {} does not exist", out.flag, out.path.string(), dir.string()));
  }
}

}  // namespace

Outputs::Outputs(const std::vector<NamedPath>& inputs, const std::vector<NamedPath>& outputs) {
  for (std::size_t i = 0; i < outputs.size(); ++i) {
    check_target(outputs[i]);
    for (const NamedPath& in : inputs) {
      if (same_file(outputs[i].path, in.path)) {
        throw UsageError(fmt::format("{} {} is the input given as {}: refusing to overwrite an input",
                                     outputs[i].flag, outputs[i].path.string(), in.flag));
      }
    }
    for (std::size_t j = 0; j < i; ++j) {
      if (same_file(outputs[i].path, outputs[j].path)) {
        throw UsageError(fmt::format("{} and {} name the same file {}: each output needs its own", outputs[j].flag,
                                     outputs[i].flag, outputs[i].path.string()));
      }
    }
  }
  // Creating the temporary files now proves every directory writable before the work starts.
  for (const NamedPath& out : outputs) files_.push_back(std::make_unique<AtomicFile>(out.path));
}

void Outputs::commit() {
  for (std::size_t i = 0; i < files_.size(); ++i) {
    try {
      files_[i]->commit();
    } catch (...) {
      std::error_code ec;
      for (std::size_t j = 0; j < i; ++j) std::filesystem::remove(files_[j]->target(), ec);  // all or none
      throw;
    }
  }
}

}  // namespace dilatron::cli
