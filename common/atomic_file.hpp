// Write-then-publish files: content goes to a temp file in the target's directory, is fsynced, and
// only commit() renames it into place. A writer that fails or is destroyed uncommitted leaves nothing,
// so readers never see a half-written output or cache entry.
#pragma once

#include <cstddef>
#include <filesystem>
#include <string>

namespace dilatron {

class AtomicFile {
 public:
  // mode: permission bits of the published file, exactly (the umask is not applied).
  explicit AtomicFile(std::filesystem::path target, unsigned mode = 0644);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, std::size_t size);
  // Flushes, fsyncs, renames over the target, then fsyncs the directory. Throws dilatron::Error.
  void commit();
  const std::filesystem::path& target() const noexcept { return target_; }

 private:
  void discard() noexcept;

  std::filesystem::path target_, temp_;
  int fd_ = -1;
  bool committed_ = false;
};

}  // namespace dilatron
