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
  if (const std::string kind = unwritable_kind(out.path); !kind.empty()) {
    throw UsageError(fmt::format("{} {} exists and is {}: an output must be a file, a character device or a FIFO",
                                 out.flag, out.path.string(), kind));
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
      if (same_file(outputs[i].path, outputs[j].path) && !std::filesystem::is_character_file(outputs[i].path)) {
        throw UsageError(fmt::format("{} and {} name the same file {}: each output needs its own", outputs[j].flag,
                                     outputs[i].flag, outputs[i].path.string()));
      }
    }
  }
  // Creating the temporary files now proves every directory writable before the work starts.
  for (const NamedPath& out : outputs) {
    files_.push_back(std::make_unique<AtomicFile>(out.path, 0644, AtomicFile::Permissions::keep_existing));
  }
}

void Outputs::commit() {
  for (std::size_t i = 0; i < files_.size(); ++i) {
    try {
      files_[i]->commit();
    } catch (...) {
      std::error_code ec;
      for (std::size_t j = 0; j < i; ++j) {  // all or none, as far as files go: a device keeps what it was sent
        if (!files_[j]->in_place()) std::filesystem::remove(files_[j]->target(), ec);
      }
      throw;
    }
  }
}

}  // namespace dilatron::cli
