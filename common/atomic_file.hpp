// Write-then-publish files: content goes to a temp file in the target's directory, is fsynced, and
// only commit() renames it into place. A writer that fails or is destroyed uncommitted leaves nothing,
// so readers never see a half-written output or cache entry.
//
// A target that already exists as a character device or FIFO (/dev/null, a pipe to another program) is
// written in place instead, never replaced: renaming over it would turn the device node into a regular
// file. Any other existing target that is not a regular file (a directory, socket, block device) is
// refused.
#pragma once

#include <cstddef>
#include <filesystem>
#include <string>

namespace dilatron {

class AtomicFile {
 public:
  enum class Permissions {
    exactly,        // the published file gets `mode`, whatever it replaces (cache entries)
    keep_existing,  // a replaced regular file keeps its mode, and its owner where the process may set it
  };
  // mode: permission bits of the published file (the umask is not applied).
  explicit AtomicFile(std::filesystem::path target, unsigned mode = 0644, Permissions permissions = Permissions::exactly);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, std::size_t size);
  // Flushes, fsyncs, renames over the target, then fsyncs the directory. Throws dilatron::Error.
  void commit();
  const std::filesystem::path& target() const noexcept { return target_; }
  // Written straight into an existing device or FIFO: there is nothing to roll back once written.
  bool in_place() const noexcept { return in_place_; }

 private:
  void discard() noexcept;

  std::filesystem::path target_;
  std::string temp_;
  int fd_ = -1;
  bool committed_ = false, in_place_ = false;
};

// What exists at `path` and cannot be an output: empty when it is absent, a regular file, a character
// device or a FIFO; otherwise a phrase such as "a socket" for messages.
std::string unwritable_kind(const std::filesystem::path& path);

// True for the names AtomicFile gives its temporary files (".<name>.tmp.XXXXXX"): they belong to a writer
// that may still be running, in this process or another.
bool is_temporary_name(const std::string& filename);

// Makes SIGINT and SIGTERM remove every temporary file this process has in flight, then end the process
// by the same signal. For programs (the CLI), not libraries: it replaces the handlers of both signals.
void remove_temporaries_on_signals();

}  // namespace dilatron
