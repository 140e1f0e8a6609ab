#include "common/atomic_file.hpp"

#include <dilatron/error.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <cstring>

namespace dilatron {
namespace {

[[noreturn]] void fail(const std::string& what, const std::filesystem::path& path) {
  throw Error(what + " " + path.string() + ": " + std::strerror(errno));
}

// The temporary files in flight, readable from a signal handler: fixed slots, no allocation, a slot's
// path is written before it is marked live. A path too long for a slot, or a 65th file in flight, is
// simply not cleaned on a signal.
struct TempSlot {
  std::atomic<int> state{0};  // 0 free, 1 being filled, 2 live
  char path[1024];
};
std::array<TempSlot, 64> temp_slots;

void register_temp(const std::string& path) {
  if (path.size() >= sizeof(TempSlot::path)) return;
  for (TempSlot& slot : temp_slots) {
    int expected = 0;
    if (slot.state.compare_exchange_strong(expected, 1)) {
      std::memcpy(slot.path, path.c_str(), path.size() + 1);
      slot.state.store(2);
      return;
    }
  }
}

void unregister_temp(const std::string& path) {
  for (TempSlot& slot : temp_slots) {
    if (slot.state.load() == 2 && path == slot.path) {
      slot.state.store(0);
      return;
    }
  }
}

extern "C" void remove_temporaries_and_reraise(int signal) {
  for (TempSlot& slot : temp_slots) {
    if (slot.state.load() == 2) unlink(slot.path);  // async-signal-safe
  }
  // SA_RESETHAND restored the default action: the process ends by this signal, as it would have.
  raise(signal);
}

}  // namespace

std::string unwritable_kind(const std::filesystem::path& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return "";
  if (S_ISREG(st.st_mode) || S_ISCHR(st.st_mode) || S_ISFIFO(st.st_mode)) return "";
  if (S_ISDIR(st.st_mode)) return "a directory";
  if (S_ISSOCK(st.st_mode)) return "a socket";
  if (S_ISBLK(st.st_mode)) return "a block device";
  return "not a regular file";
}

bool is_temporary_name(const std::string& filename) {
  const std::size_t at = filename.rfind(".tmp.");
  return filename.size() > 1 && filename[0] == '.' && at != std::string::npos && at > 0 &&
         filename.size() - at == 11;  // ".tmp." and mkstemp's six characters
}

void remove_temporaries_on_signals() {
  struct sigaction action {};
  action.sa_handler = remove_temporaries_and_reraise;
  action.sa_flags = SA_RESETHAND;
  sigemptyset(&action.sa_mask);
  sigaddset(&action.sa_mask, SIGINT);
  sigaddset(&action.sa_mask, SIGTERM);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
}

AtomicFile::AtomicFile(std::filesystem::path target, unsigned mode, Permissions permissions)
    : target_(std::move(target)) {
  struct stat existing;
  const bool exists = stat(target_.c_str(), &existing) == 0;
  if (exists && (S_ISCHR(existing.st_mode) || S_ISFIFO(existing.st_mode))) {
    // Opened at the first write, so a FIFO waits for its reader only once there is data for it.
    if (access(target_.c_str(), W_OK) != 0) fail("cannot write", target_);
    in_place_ = true;
    return;
  }
  if (const std::string kind = unwritable_kind(target_); !kind.empty()) {
    throw Error(target_.string() + " exists and is " + kind + ": refusing to replace it");
  }
  const std::filesystem::path dir = target_.has_parent_path() ? target_.parent_path() : ".";
  std::string name = ".";  // hidden, and named after the target so a stray one is recognisable
  name += target_.filename().string();
  name += ".tmp.XXXXXX";
  temp_ = (dir / name).string();
  fd_ = mkstemp(temp_.data());
  if (fd_ < 0) {
    temp_.clear();
    fail("cannot create a temporary file for", target_);
  }
  register_temp(temp_);
  if (exists && permissions == Permissions::keep_existing) {
    mode = existing.st_mode & 07777;
    // Only root may give a file away; anyone else's replacement is theirs (docs/CLI.md says so).
    if (geteuid() == 0 && fchown(fd_, existing.st_uid, existing.st_gid) != 0) {
      discard();
      fail("cannot keep the owner of", target_);
    }
  }
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
  if (in_place_ && fd_ < 0) {
    fd_ = open(target_.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd_ < 0) fail("cannot open", target_);
  }
  const char* bytes = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t n = ::write(fd_, bytes, size);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail("cannot write", in_place_ ? target_ : std::filesystem::path(temp_));
    bytes += n;
    size -= static_cast<std::size_t>(n);
  }
}

void AtomicFile::commit() {
  if (in_place_) {
    write(nullptr, 0);  // opens a device or FIFO nothing was written to, so its reader sees the end
    const int fd = fd_;
    fd_ = -1;
    if (close(fd) != 0) fail("cannot close", target_);
    committed_ = true;
    return;
  }
  if (fsync(fd_) != 0) fail("cannot flush", temp_);
  if (close(fd_) != 0) {
    fd_ = -1;
    fail("cannot close", temp_);
  }
  fd_ = -1;
  if (std::rename(temp_.c_str(), target_.c_str()) != 0) fail("cannot rename into place", target_);
  committed_ = true;
  unregister_temp(temp_);
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
  if (!temp_.empty()) {
    unlink(temp_.c_str());
    unregister_temp(temp_);
  }
}

}  // namespace dilatron
