// NCCL loaded lazily: the library on this machine loads and reports a sane version, a wrong
// DILATRON_NCCL_LIBRARY is named, and every failing call becomes an Error naming the call.
#include <gtest/gtest.h>

#include <dilatron/error.hpp>

#include <nlohmann/json.hpp>

#include <filesystem>

#include "common/dynlib.hpp"
#include "runtime/ring/nccl.hpp"
#include "runtime/ring/nccl_communicator.hpp"
#include "tests/support/cli.hpp"

using namespace dilatron;

namespace {

// Asked of the loader directly, not through the code under test.
bool machine_has_nccl() { return DynamicLibrary({"libnccl.so.2"}).loaded(); }

}  // namespace

TEST(Nccl, LoadsTheLibraryAndReportsASaneVersion) {
  const nccl::Status status = nccl::probe();
  if (!machine_has_nccl() && !status.loaded) GTEST_SKIP() << "no NCCL on this machine: " << status.problem;
  ASSERT_TRUE(status.loaded) << status.problem;
  EXPECT_TRUE(status.problem.empty()) << status.problem;
  EXPECT_TRUE(std::filesystem::path(status.library).is_absolute()) << status.library;
  EXPECT_TRUE(std::filesystem::exists(status.library)) << status.library;
  EXPECT_NE(status.library.find("libnccl.so"), std::string::npos) << status.library;
  EXPECT_EQ(status.version.major, 2);
  EXPECT_GE(status.version.minor, 13) << "ncclGetLastError needs 2.13";
  EXPECT_LT(status.version.minor, 100);
  int code = 0;
  DILATRON_NCCL(ncclGetVersion(&code));
  EXPECT_EQ(code, status.version.major * 10000 + status.version.minor * 100 + status.version.patch);
}

TEST(Nccl, DecodesBothVersionEncodings) {
  const auto same = [](nccl::Version v, int major, int minor, int patch) {
    return v.major == major && v.minor == minor && v.patch == patch;
  };
  EXPECT_TRUE(same(nccl::decode_version(22809), 2, 28, 9));
  EXPECT_TRUE(same(nccl::decode_version(21305), 2, 13, 5));
  EXPECT_TRUE(same(nccl::decode_version(2804), 2, 8, 4));
  EXPECT_TRUE(same(nccl::decode_version(2406), 2, 4, 6));
}

TEST(Nccl, CheckTurnsFailuresIntoErrorsNamingTheCall) {
  if (!nccl::probe().loaded) GTEST_SKIP() << "no NCCL on this machine: " << nccl::probe().problem;
  EXPECT_NO_THROW(nccl::check(ncclSuccess, "ncclGroupEnd()"));
  EXPECT_NO_THROW(nccl::check(ncclInProgress, "ncclGroupEnd()")) << "a non-blocking communicator still working";
  try {
    nccl::check(ncclInvalidArgument, "ncclSend(buf, n, ncclUint8, 3, comm, stream)");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.call(), "ncclSend(buf, n, ncclUint8, 3, comm, stream)");
    EXPECT_EQ(e.code(), int(ncclInvalidArgument));
    EXPECT_EQ(e.kind(), ErrorKind::cuda);
    EXPECT_NE(std::string(e.what()).find("invalid argument"), std::string::npos) << e.what();
  }
}

TEST(Nccl, ACommunicatorNeedsACommunicator) {
  try {
    ring::NcclCommunicator communicator(nullptr);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("null"), std::string::npos) << e.what();
  }
}

TEST(Nccl, InfoShowsIt) {
  test::TempDir dir;
  const nccl::Status status = nccl::probe();
  const nlohmann::json info = nlohmann::json::parse(test::run_cli(dir, "info --json").out);
  ASSERT_TRUE(info.contains("nccl")) << info.dump();
  const nlohmann::json& n = info["nccl"];
  EXPECT_EQ(n["available"], status.loaded && status.problem.empty());
  EXPECT_EQ(n["library"], status.library);
  EXPECT_EQ(n["problem"], status.problem);
  if (status.loaded) {
    EXPECT_EQ(n["version"], std::to_string(status.version.major) + "." + std::to_string(status.version.minor) + "." +
                                std::to_string(status.version.patch));
  }
  const test::CliResult text = test::run_cli(dir, "info");
  ASSERT_EQ(text.status, 0) << text.err;
  EXPECT_NE(text.out.find(status.loaded ? "NCCL       2." : "NCCL       unavailable"), std::string::npos) << text.out;
}

TEST(Nccl, AWrongLibraryPathIsNamedAndNothingElseBreaks) {
  test::TempDir dir;
  const std::string missing = (dir / "no-such-dir" / "libnccl.so.2").string();
  const test::CliResult r = test::run_cli(dir, "info --json", "DILATRON_NCCL_LIBRARY='" + missing + "'");
  ASSERT_EQ(r.status, 0) << "info still works: " << r.err;
  const nlohmann::json n = nlohmann::json::parse(r.out)["nccl"];
  EXPECT_EQ(n["available"], false);
  const std::string problem = n["problem"];
  EXPECT_NE(problem.find(missing), std::string::npos) << problem;
  EXPECT_NE(problem.find("DILATRON_NCCL_LIBRARY"), std::string::npos) << "the remedy: " << problem;
  const test::CliResult text = test::run_cli(dir, "info", "DILATRON_NCCL_LIBRARY='" + missing + "'");
  EXPECT_NE(text.out.find("NCCL       unavailable: NCCL could not be loaded (" + missing), std::string::npos)
      << text.out;
}
