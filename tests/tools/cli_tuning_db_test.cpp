// The tuning database and cache entries as untrusted input: a damaged, foreign, oversized or crafted
// file is reported with its repair and never blocks the cache, and text from files reaches the terminal
// and JSON escaped.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "cache/disk_cache.hpp"
#include "common/file_io.hpp"
#include "tests/support/cli.hpp"

using namespace dilatron;
using namespace dilatron::test;

namespace {

const std::string kConfig = "--arch sm_80 --segments 64,128 --dilations 1,2 --head-dim 64 --dtype f16";

std::string in(const TempDir& tmp) { return " --cache-dir '" + (tmp / "cache").string() + "'"; }

void write_tuning(const TempDir& tmp, const std::string& text, unsigned mode = 0600) {
  const auto path = tmp / "cache" / "tuning.json";
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
  ASSERT_EQ(chmod(path.c_str(), mode), 0);
}

std::string tuning_problem(const TempDir& tmp) {
  const CliResult info = run_cli(tmp, "info --json", "DILATRON_CACHE_DIR='" + (tmp / "cache").string() + "'");
  EXPECT_EQ(info.status, 0) << info.err;
  return nlohmann::json::parse(info.out).at("tuning").at("problem").get<std::string>();
}

}  // namespace

TEST(CliTuningDb, ADamagedDatabaseIsReportedAndNeverBlocksTheCache) {
  TempDir tmp;
  ASSERT_EQ(run_cli(tmp, "cache warm " + kConfig + in(tmp)).status, 0);
  write_tuning(tmp, "{ \"format\": 1, \"records\": [ damaged");
  const CliResult warm = run_cli(tmp, "cache warm " + kConfig + in(tmp));
  EXPECT_EQ(warm.status, 0) << warm.err;
  EXPECT_NE(warm.err.find("tuning.json"), std::string::npos) << warm.err;
  EXPECT_NE(warm.err.find("cache clear --tuning"), std::string::npos) << "names the repair: " << warm.err;
  const CliResult exported = run_cli(tmp, "cache export '" + (tmp / "b").string() + "'" + in(tmp));
  EXPECT_EQ(exported.status, 0) << exported.err;
  EXPECT_NE(exported.out.find("and 0 tuning records"), std::string::npos) << exported.out;
  EXPECT_NE(exported.err.find("without tuning records"), std::string::npos) << exported.err;
  const CliResult verify = run_cli(tmp, "cache verify" + in(tmp));
  EXPECT_EQ(verify.status, 1);
  EXPECT_NE(verify.err.find("bad tuning database"), std::string::npos) << verify.err;
  EXPECT_FALSE(tuning_problem(tmp).empty());
  const CliResult clear = run_cli(tmp, "cache clear" + in(tmp));
  EXPECT_EQ(clear.status, 0) << clear.err;
  EXPECT_NE(clear.err.find("cache clear --tuning"), std::string::npos) << "offers the repair: " << clear.err;
  EXPECT_TRUE(std::filesystem::exists(tmp / "cache" / "tuning.json")) << "kept without --tuning";
  const CliResult cleared = run_cli(tmp, "cache clear --tuning" + in(tmp));
  EXPECT_EQ(cleared.status, 0) << cleared.err;
  EXPECT_FALSE(std::filesystem::exists(tmp / "cache" / "tuning.json"));
  EXPECT_EQ(run_cli(tmp, "cache verify" + in(tmp)).status, 0);
}

TEST(CliTuningDb, TrustedOnlyAsFarAsTheKernelsAreAndWithinItsBounds) {
  TempDir tmp;
  ASSERT_EQ(run_cli(tmp, "cache warm " + kConfig + in(tmp)).status, 0);
  const std::string valid = R"({"format": 1, "records": []})";
  write_tuning(tmp, valid);
  EXPECT_EQ(tuning_problem(tmp), "");
  write_tuning(tmp, valid, 0666);
  EXPECT_NE(tuning_problem(tmp).find("writable by group or others"), std::string::npos);
  if (geteuid() == 0) {
    write_tuning(tmp, valid);
    ASSERT_EQ(chown((tmp / "cache" / "tuning.json").c_str(), 4321, 4321), 0);
    EXPECT_NE(tuning_problem(tmp).find("belongs to uid 4321"), std::string::npos);
    ASSERT_EQ(chown((tmp / "cache" / "tuning.json").c_str(), 0, 0), 0);
  }
  // Numbers as written: no wrapped format, no float where an integer belongs.
  write_tuning(tmp, R"({"format": 4294967297, "records": []})");
  EXPECT_NE(tuning_problem(tmp).find("\"format\": 4294967297 is out of range"), std::string::npos) << tuning_problem(tmp);
  write_tuning(tmp, R"({"format": 1.0, "records": []})");
  EXPECT_NE(tuning_problem(tmp).find("\"format\": 1.0 is not an integer"), std::string::npos) << tuning_problem(tmp);
  // Larger than any real database: refused from its size, without reading it.
  write_tuning(tmp, "");
  std::filesystem::resize_file(tmp / "cache" / "tuning.json", (std::uint64_t(16) << 20) + 1);
  EXPECT_NE(tuning_problem(tmp).find("more than the"), std::string::npos) << tuning_problem(tmp);
}

TEST(CliTuningDb, BytesFromFilesReachJsonAndTheTerminalEscaped) {
  TempDir tmp;
  ASSERT_EQ(run_cli(tmp, "cache warm " + kConfig + in(tmp)).status, 0);
  // One high bit flipped inside a string: the parser's message quotes the byte.
  write_tuning(tmp, "{\"format\": 1, \"records\": [{\"device\": \"A\xe1\"}]}");
  const CliResult info = run_cli(tmp, "info --json", "DILATRON_CACHE_DIR='" + (tmp / "cache").string() + "'");
  EXPECT_EQ(info.status, 0) << info.err;
  EXPECT_NO_THROW(nlohmann::json::parse(info.out)) << info.out;

  // Entries with a terminal escape in the kernel's name, and with invalid UTF-8 in it (the checksum made
  // to match, as a crafted file would).
  cache::DiskCache disk(tmp / "cache");
  std::vector<cache::DiskCache::Listed> listed = disk.scan();
  ASSERT_GE(listed.size(), 2u);
  listed[0].entry->meta.kernel = "\x1b[2J\x1b[31mowned";
  std::ofstream(listed[0].path, std::ios::binary | std::ios::trunc) << cache::encode(*listed[0].entry);
  listed[1].entry->meta.kernel = "placeholder";
  std::string bytes = cache::encode(*listed[1].entry);
  bytes[bytes.find("placeholder")] = '\xff';
  bytes.resize(bytes.size() - 8);
  const std::uint64_t checksum = XXH3_64bits(bytes.data(), bytes.size());
  for (int i = 0; i < 8; ++i) bytes += char(checksum >> (8 * i));
  std::ofstream(listed[1].path, std::ios::binary | std::ios::trunc) << bytes;
  const CliResult ls = run_cli(tmp, "cache ls" + in(tmp));
  ASSERT_EQ(ls.status, 0) << ls.err;
  EXPECT_EQ(ls.out.find('\x1b'), std::string::npos) << "no raw escape reaches the terminal";
  EXPECT_NE(ls.out.find("\\x1b[31mowned"), std::string::npos) << ls.out;
  const CliResult json = run_cli(tmp, "cache ls --json" + in(tmp));
  ASSERT_EQ(json.status, 0) << json.err;
  EXPECT_NO_THROW(nlohmann::json::parse(json.out)) << json.out;
}

TEST(CliTuningDb, ImportRefusesWhatIsNotABundleFileBeforeReadingIt) {
  TempDir tmp;
  ASSERT_EQ(mkfifo((tmp / "fifo").c_str(), 0600), 0);
  for (const std::string& file : {std::string("/dev/zero"), (tmp / "fifo").string()}) {
    SCOPED_TRACE(file);
    const CliResult r = run_cli(tmp, "cache import " + file + in(tmp));
    EXPECT_EQ(r.status, 1);
    EXPECT_NE(r.err.find("not a regular file"), std::string::npos) << r.err;
  }
  EXPECT_FALSE(std::filesystem::exists(tmp / "cache"));
}
