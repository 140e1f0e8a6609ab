// Where outputs land when the path is not an ordinary new file: device nodes and FIFOs are written in
// place and stay what they were, sockets and block devices are refused, a replaced file keeps its mode
// and owner, and a signal mid-run leaves no temporary file behind.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <thread>

#include <fmt/format.h>

#include "common/atomic_file.hpp"
#include "tests/support/cli.hpp"
#include "tools/npy.hpp"

using namespace dilatron;
using namespace dilatron::test;

extern char** environ;

namespace {

// A 1 x 16 x 1 x 4 float32 problem in dir; returns the run command without outputs.
std::string write_inputs(const TempDir& dir) {
  std::vector<float> x(64);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = float(i % 7) * 0.25f - 0.5f;
  for (const char* name : {"q.npy", "k.npy", "v.npy"}) {
    AtomicFile file(dir / name);
    npy::write(file, DType::f32, {1, 16, 1, 4}, x.data());
    file.commit();
  }
  return fmt::format("run --q '{0}/q.npy' --k '{0}/k.npy' --v '{0}/v.npy' --segments 8 --dilations 1 --quiet",
                     dir.path().string());
}

std::vector<std::string> temporaries(const std::filesystem::path& dir) {
  std::vector<std::string> found;
  for (const auto& item : std::filesystem::directory_iterator(dir)) {
    if (is_temporary_name(item.path().filename().string())) found.push_back(item.path().filename().string());
  }
  return found;
}

bool is_root() { return geteuid() == 0; }

// Reads a FIFO to its end on another thread.
class FifoReader {
 public:
  explicit FifoReader(std::filesystem::path path) : thread_([this, path] { bytes_ = slurp(path); }) {}
  std::string finish() {
    thread_.join();
    return bytes_;
  }

 private:
  std::string bytes_;
  std::thread thread_;
};

}  // namespace

TEST(CliOutputs, ACharacterDeviceIsWrittenInPlaceNeverReplaced) {
  if (!is_root()) GTEST_SKIP() << "mknod needs root";
  TempDir dir;
  const std::string run = write_inputs(dir);
  const auto null = dir / "null";  // the same device as /dev/null, made here so the real one is never at risk
  ASSERT_EQ(mknod(null.c_str(), S_IFCHR | 0666, makedev(1, 3)), 0);
  const CliResult r = run_cli(dir, run + fmt::format(" --out '{0}' --lse '{0}'", null.string()));
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(std::filesystem::is_character_file(null));
  std::filesystem::create_directory(dir / "cache", dir.path());
  std::filesystem::permissions(dir / "cache", std::filesystem::perms::owner_all);
  const CliResult exported = run_cli(dir, fmt::format("cache export '{}' --cache-dir '{}'", null.string(),
                                                       (dir / "cache").string()));
  EXPECT_EQ(exported.status, 0) << exported.err;
  EXPECT_TRUE(std::filesystem::is_character_file(null));
  EXPECT_TRUE(temporaries(dir.path()).empty());
}

TEST(CliOutputs, AFifoReceivesTheWholeOutput) {
  TempDir dir;
  const std::string run = write_inputs(dir);
  ASSERT_EQ(run_cli(dir, run + fmt::format(" --out '{}'", (dir / "o.npy").string())).status, 0);
  ASSERT_EQ(mkfifo((dir / "pipe").c_str(), 0600), 0);
  FifoReader reader(dir / "pipe");
  const CliResult r = run_cli(dir, run + fmt::format(" --out '{}'", (dir / "pipe").string()));
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(reader.finish(), slurp(dir / "o.npy"));
  EXPECT_TRUE(std::filesystem::is_fifo(dir / "pipe"));
}

TEST(CliOutputs, SocketsAndBlockDevicesAreRefusedBeforeAnyWork) {
  TempDir dir;
  const std::string run = write_inputs(dir);
  const auto sock = dir / "sock";
  const int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::snprintf(address.sun_path, sizeof(address.sun_path), "%s", sock.c_str());
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  std::vector<std::pair<std::filesystem::path, std::string>> refused{{sock, "is a socket"}};
  if (is_root()) {
    ASSERT_EQ(mknod((dir / "block").c_str(), S_IFBLK | 0600, makedev(7, 0)), 0);
    refused.push_back({dir / "block", "is a block device"});
  }
  for (const auto& [path, needle] : refused) {
    SCOPED_TRACE(path.string());
    const CliResult r = run_cli(dir, run + fmt::format(" --out '{}'", path.string()));
    EXPECT_EQ(r.status, 2) << r.err;
    EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
    const CliResult exported = run_cli(dir, fmt::format("cache export '{}' --cache-dir '{}'", path.string(),
                                                         (dir / "none").string()));
    EXPECT_EQ(exported.status, 2) << exported.err;
    EXPECT_NE(exported.err.find(needle), std::string::npos) << exported.err;
  }
  EXPECT_TRUE(std::filesystem::is_socket(sock));
  if (is_root()) {
    EXPECT_TRUE(std::filesystem::is_block_file(dir / "block"));
  }
  close(fd);
}

TEST(CliOutputs, AReplacedFileKeepsItsModeAndOwner) {
  TempDir dir;
  const std::string run = write_inputs(dir);
  const auto out = dir / "o.npy";
  std::ofstream(out) << "old";
  ASSERT_EQ(chmod(out.c_str(), 0600), 0);
  if (is_root()) {
    ASSERT_EQ(chown(out.c_str(), 4321, 4322), 0);
  }
  const CliResult r = run_cli(dir, run + fmt::format(" --out '{}'", out.string()));
  ASSERT_EQ(r.status, 0) << r.err;
  struct stat st {};
  ASSERT_EQ(stat(out.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  if (is_root()) {
    EXPECT_EQ(st.st_uid, 4321u);
    EXPECT_EQ(st.st_gid, 4322u);
  }
  EXPECT_NE(slurp(out), "old");
}

TEST(CliOutputs, ExportChecksItsDestinationFirst) {
  TempDir dir;
  std::filesystem::create_directory(dir / "cache");
  std::filesystem::permissions(dir / "cache", std::filesystem::perms::owner_all);
  std::filesystem::create_directory(dir / "taken");
  const std::string cache = fmt::format(" --cache-dir '{}'", (dir / "cache").string());
  const std::vector<std::pair<std::string, std::string>> refused = {
      {(dir / "taken").string(), "is a directory"},
      {(dir / "nowhere/b.bundle").string(), "does not exist"},
  };
  for (const auto& [path, needle] : refused) {
    SCOPED_TRACE(path);
    const CliResult r = run_cli(dir, fmt::format("cache export '{}'", path) + cache);
    EXPECT_EQ(r.status, 2) << r.err;
    EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
  }
  EXPECT_TRUE(std::filesystem::is_empty(dir / "taken"));
  EXPECT_TRUE(temporaries(dir.path()).empty());
}

// The run blocks writing --lse into a FIFO nobody reads, with --out already in its temporary file; the
// signal must remove that file and end the process by the same signal.
TEST(CliOutputs, SigintAndSigtermLeaveNoTemporaryFiles) {
  for (const int signal : {SIGINT, SIGTERM}) {
    SCOPED_TRACE(signal);
    TempDir dir;
    const std::string run = write_inputs(dir);
    ASSERT_EQ(mkfifo((dir / "lse").c_str(), 0600), 0);
    const std::string command = fmt::format("exec '{}' {} --out '{}' --lse '{}' >/dev/null 2>&1", cli_path(), run,
                                            (dir / "o.npy").string(), (dir / "lse").string());
    const char* argv[] = {"sh", "-c", command.c_str(), nullptr};
    pid_t pid = 0;
    ASSERT_EQ(posix_spawn(&pid, "/bin/sh", nullptr, nullptr, const_cast<char**>(argv), environ), 0);
    // Wait until O's bytes sit in its temporary file: the run has finished and is blocked on the FIFO.
    bool written = false;
    for (int i = 0; i < 3000 && !written; ++i) {
      for (const std::string& name : temporaries(dir.path())) written |= std::filesystem::file_size(dir / name) > 0;
      if (!written) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ASSERT_TRUE(written) << "the run never reached its outputs";
    ASSERT_EQ(kill(pid, signal), 0);
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == signal) << "status " << status;
    EXPECT_TRUE(temporaries(dir.path()).empty());
    EXPECT_FALSE(std::filesystem::exists(dir / "o.npy"));
  }
}
