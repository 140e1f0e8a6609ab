#include "common/atomic_file.hpp"

#include <dilatron/error.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace dilatron {
namespace {

[[noreturn]] void fail(const std::string& what, const std::filesystem::path& path) {
  throw Error(what + " " + path.string() + ": " + std::strerror(errno));
}

}  // namespace

AtomicFile::AtomicFile(std::filesystem::path target, unsigned mode) : target_(std::move(target)) {
  const std::filesystem::path dir = target_.has_parent_path() ? target_.parent_path() : ".";
  std::string name = ".";  // hidden, and named after the target so a stray one is recognisable
  name += target_.filename().string();
  name += ".tmp.XXXXXX";
  std::string pattern = (dir / name).string();
  fd_ = mkstemp(pattern.data());
  if (fd_ < 0) fail("cannot create a temporary file for", target_);
  temp_ = pattern;
  // mkstemp creates 0600. The umask is not consulted: reading it means setting it, which races with
  // other threads creating files (the cache directory among them).
  if (fchmod(fd_, mode) != 0) {
    discard();
    fail("cannot set permissions on", target_);
  }
}

AtomicFile::~AtomicFile() {
  if (!committed_) discard();
}

void AtomicFile::write(const void* data, std::size_t size) {
  const char* bytes = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t n = ::write(fd_, bytes, size);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail("cannot write", temp_);
    bytes += n;
    size -= static_cast<std::size_t>(n);
  }
}

void AtomicFile::commit() {
  if (fsync(fd_) != 0) fail("cannot flush", temp_);
  if (close(fd_) != 0) {
    fd_ = -1;
    fail("cannot close", temp_);
  }
  fd_ = -1;
  if (std::rename(temp_.c_str(), target_.c_str()) != 0) fail("cannot rename into place", target_);
  committed_ = true;
  // The rename itself is durable only once the directory is synced; best effort (not every filesystem
  // allows opening a directory for sync).
  const std::filesystem::path dir = target_.has_parent_path() ? target_.parent_path() : ".";
  if (int dfd = open(dir.c_str(), O_RDONLY | O_DIRECTORY); dfd >= 0) {
    fsync(dfd);
    close(dfd);
  }
}

void AtomicFile::discard() noexcept {
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
  if (!temp_.empty()) unlink(temp_.c_str());
}

}  // namespace dilatron
