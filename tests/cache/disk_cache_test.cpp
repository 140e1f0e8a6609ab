// The disk layer: round trips, corruption of every kind is a reported miss, unsafe directories are
// refused, and the size cap evicts least recently used entries.
#include <gtest/gtest.h>

#include <dilatron/error.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <fstream>

#include "cache/bundle.hpp"
#include "cache/disk_cache.hpp"
#include "tests/support/cli.hpp"

using namespace dilatron;
using namespace dilatron::cache;

namespace {

// An entry with a fake binary: the disk layer never looks inside the CUBIN.
Entry fake_entry(int n, std::size_t cubin_bytes = 1000) {
  codegen::KernelSpec spec;
  spec.head_dim = 8 * (n + 1);
  codegen::CompiledKernel compiled;
  compiled.lowered_name = "_Z6kernel" + std::to_string(n);
  compiled.cubin.resize(cubin_bytes);
  for (std::size_t i = 0; i < cubin_bytes; ++i) compiled.cubin[i] = char(i * 7 + n);
  compiled.report = {32, 0, 1024, 0};
  compiled.compile_ms = 12.5;
  return make_entry(spec, key_material(spec), compiled);
}

void write_raw(const std::filesystem::path& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

void expect_decode_error(const std::string& bytes, const char* needle) {
  try {
    decode(bytes);
    ADD_FAILURE() << "decoded a damaged entry";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

}  // namespace

TEST(CacheEntry, RoundTripsAndRejectsEveryDamage) {
  const Entry entry = fake_entry(0);
  const std::string bytes = encode(entry);
  const Entry back = decode(bytes);
  EXPECT_EQ(back.key(), entry.key());
  EXPECT_EQ(back.cubin, entry.cubin);
  EXPECT_EQ(back.meta.lowered_name, "_Z6kernel0");
  EXPECT_EQ(back.meta.registers, 32);
  EXPECT_EQ(back.meta.shared_bytes, 1024);
  EXPECT_EQ(nlohmann::json(back.meta), nlohmann::json(entry.meta)) << "every metadata field survives";

  for (std::size_t at = 0; at < bytes.size(); at += 37) {  // a bit flip anywhere is caught
    std::string flipped = bytes;
    flipped[at] ^= 0x10;
    EXPECT_THROW(decode(flipped), Error) << "flip at " << at;
  }
  expect_decode_error(bytes.substr(0, bytes.size() - 1), "truncated");
  expect_decode_error(bytes.substr(0, 10), "truncated");
  expect_decode_error(bytes + "x", "truncated or padded");
  std::string magic = bytes;
  magic[0] = 'X';
  expect_decode_error(magic, "bad magic");
  std::string version = bytes;
  version[8] = 7;
  expect_decode_error(version, "format version 7");
  std::string checksum = bytes;
  checksum.back() ^= 1;
  expect_decode_error(checksum, "checksum");
}

TEST(DiskCache, StoresLoadsAndReportsBadFilesAsMisses) {
  test::TempDir tmp;
  DiskCache disk(tmp / "cache");
  EXPECT_EQ(::access((tmp / "cache").c_str(), F_OK), 0);
  struct stat st {};
  ASSERT_EQ(stat((tmp / "cache").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);

  const Entry entry = fake_entry(1);
  EXPECT_FALSE(disk.load(entry.key()).entry);
  EXPECT_TRUE(disk.load(entry.key()).problem.empty()) << "absent is a plain miss";
  disk.store(entry);
  ASSERT_TRUE(disk.load(entry.key()).entry);
  EXPECT_EQ(disk.load(entry.key()).entry->cubin, entry.cubin);
  ASSERT_EQ(stat(disk.path_of(entry.key()).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  const std::string good = encode(entry);
  const std::vector<std::pair<std::string, const char*>> damaged = {
      {good.substr(0, good.size() / 2), "truncated"},
      {"JUNKJUNKJUNKJUNKJUNKJUNKJUNKJUNK", "bad magic"},
      {encode(fake_entry(2)), "holds key"},  // another entry under this name
  };
  for (const auto& [bytes, needle] : damaged) {
    write_raw(disk.path_of(entry.key()), bytes);
    const DiskCache::Loaded loaded = disk.load(entry.key());
    EXPECT_FALSE(loaded.entry);
    EXPECT_NE(loaded.problem.find(needle), std::string::npos) << loaded.problem;
  }
  const auto listed = disk.scan();
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_FALSE(listed[0].entry);
  disk.store(entry);  // repair
  EXPECT_TRUE(disk.load(entry.key()).entry);
  EXPECT_EQ(disk.clear(), 1u);
  EXPECT_TRUE(disk.scan().empty());
}

TEST(DiskCache, ADirectoryWhereAnEntryBelongsIsAMissAndNoBundle) {
  test::TempDir tmp;
  DiskCache disk(tmp / "cache");
  const Entry entry = fake_entry(3);
  std::filesystem::create_directory(disk.path_of(entry.key()));
  DiskCache::Loaded loaded;
  ASSERT_NO_THROW(loaded = disk.load(entry.key()));
  EXPECT_FALSE(loaded.entry);
  try {
    read_bundle(tmp.path());
    ADD_FAILURE() << "imported a directory";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(tmp.path().string()), std::string::npos) << e.what();
  }
}

TEST(DiskCache, RefusesDirectoriesOthersCanWriteOrOwn) {
  test::TempDir tmp;
  std::filesystem::create_directory(tmp / "shared");
  ::chmod((tmp / "shared").c_str(), 0775);
  try {
    DiskCache disk(tmp / "shared");
    ADD_FAILURE() << "accepted a group-writable directory";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("writable by group or others"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("chmod 700"), std::string::npos) << e.what();
  }
  ::chmod((tmp / "shared").c_str(), 0757);
  EXPECT_THROW(DiskCache(tmp / "shared"), Error);
  ::chmod((tmp / "shared").c_str(), 0755);
  EXPECT_NO_THROW(DiskCache(tmp / "shared")) << "read-only for others is fine";
  if (geteuid() != 0) GTEST_SKIP() << "changing a directory's owner needs root";
  std::filesystem::create_directory(tmp / "theirs");
  ASSERT_EQ(::chown((tmp / "theirs").c_str(), 65534, 65534), 0);
  ::chmod((tmp / "theirs").c_str(), 0700);
  try {
    DiskCache disk(tmp / "theirs");
    ADD_FAILURE() << "accepted another user's directory";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("belongs to uid 65534"), std::string::npos) << e.what();
  }
}

TEST(DiskCache, EvictsLeastRecentlyUsedUnderTheCap) {
  test::TempDir tmp;
  const std::size_t entry_bytes = encode(fake_entry(0, 4000)).size();
  DiskCache disk(tmp / "cache", 3 * entry_bytes + 100);  // room for three
  const auto t0 = std::filesystem::file_time_type::clock::now() - std::chrono::hours(1);
  std::vector<Entry> entries;
  for (int i = 0; i < 3; ++i) {
    entries.push_back(fake_entry(i, 4000));
    disk.store(entries.back());
    std::filesystem::last_write_time(disk.path_of(entries.back().key()), t0 + std::chrono::minutes(i));
  }
  ASSERT_TRUE(disk.load(entries[0].key()).entry);  // oldest, but used now: most recent
  entries.push_back(fake_entry(3, 4000));
  disk.store(entries.back());
  EXPECT_TRUE(disk.load(entries[0].key()).entry);
  EXPECT_FALSE(disk.load(entries[1].key()).entry) << "least recently used goes first";
  EXPECT_TRUE(disk.load(entries[2].key()).entry);
  EXPECT_TRUE(disk.load(entries[3].key()).entry) << "the entry just written stays";
  std::uint64_t total = 0;
  for (const auto& listed : disk.scan()) total += listed.bytes;
  EXPECT_LE(total, disk.max_bytes());

  DiskCache tiny(tmp / "tiny", 10);  // smaller than one entry: keeps only the newest
  tiny.store(entries[0]);
  tiny.store(entries[1]);
  EXPECT_EQ(tiny.scan().size(), 1u);
  EXPECT_TRUE(tiny.load(entries[1].key()).entry);
}

TEST(DiskCache, MaxBytesFromTheEnvironment) {
  ::setenv("DILATRON_CACHE_MAX_BYTES", "3M", 1);
  EXPECT_EQ(max_bytes_from_environment(), 3u << 20);
  ::setenv("DILATRON_CACHE_MAX_BYTES", "12345", 1);
  EXPECT_EQ(max_bytes_from_environment(), 12345u);
  ::setenv("DILATRON_CACHE_MAX_BYTES", "0", 1);
  EXPECT_EQ(max_bytes_from_environment(), 0u);
  // Never a wrapped or sign-flipped number: each is an error naming the variable and quoting the value.
  for (const char* bad : {"lots", "17179869184G", "-1", "99999999999999999999", "1T", "1 G", " 5", "1e9", "+5", "5K5",
                          "1152921504606846977"}) {
    SCOPED_TRACE(bad);
    ::setenv("DILATRON_CACHE_MAX_BYTES", bad, 1);
    try {
      max_bytes_from_environment();
      ADD_FAILURE() << "accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(std::string("DILATRON_CACHE_MAX_BYTES='") + bad + "'"), std::string::npos)
          << e.what();
    }
  }
  ::setenv("DILATRON_CACHE_MAX_BYTES", "1073741824G", 1);
  EXPECT_EQ(max_bytes_from_environment(), std::uint64_t(1) << 60) << "the largest cap";
  ::unsetenv("DILATRON_CACHE_MAX_BYTES");
  EXPECT_EQ(max_bytes_from_environment(), std::uint64_t(4) << 30);
}

// A concurrent writer's temporary file is not litter: clear leaves it, so that writer's rename succeeds.
TEST(DiskCache, ClearLeavesInFlightTemporaryFilesAlone) {
  test::TempDir tmp;
  DiskCache disk(tmp / "c");
  disk.store(fake_entry(1));
  const auto in_flight = tmp / "c" / ".0123.kernel.tmp.AbCdEf";
  const auto abandoned = tmp / "c" / ".4567.kernel.tmp.GhIjKl";
  std::ofstream(in_flight) << "half";
  std::ofstream(abandoned) << "half";
  std::filesystem::last_write_time(abandoned, std::filesystem::file_time_type::clock::now() - std::chrono::hours(2));
  EXPECT_EQ(disk.clear(), 1u);
  EXPECT_TRUE(std::filesystem::exists(in_flight));
  EXPECT_FALSE(std::filesystem::exists(abandoned));
  EXPECT_TRUE(disk.scan().empty());
}

TEST(Bundle, CarriesEntriesAndTheTuningSectionAndStillReadsV1) {
  test::TempDir tmp;
  const Bundle written{{fake_entry(1), fake_entry(2, 5000)}, R"({"format": 1, "records": []})"};
  {
    AtomicFile out(tmp / "b");
    write_bundle(out, written);
    out.commit();
  }
  const Bundle read = read_bundle(tmp / "b");
  ASSERT_EQ(read.entries.size(), 2u);
  EXPECT_EQ(read.entries[1].cubin, written.entries[1].cubin);
  EXPECT_EQ(read.entries[0].meta.key, written.entries[0].meta.key);
  EXPECT_EQ(read.tuning, written.tuning);

  // A v2 bundle (before the tuning checksum): the same entries and tuning.
  std::string v2 = test::slurp(tmp / "b");
  v2.resize(v2.size() - 8);
  v2.replace(0, 25, "DILATRON-CACHE-BUNDLE v2\n");
  write_raw(tmp / "v2", v2);
  EXPECT_EQ(read_bundle(tmp / "v2").tuning, written.tuning);

  // A v1 bundle (before tuning sections): the same entries, no tuning.
  std::string v1 = v2;
  v1.resize(v1.size() - written.tuning.size() - 8);
  v1.replace(0, 25, "DILATRON-CACHE-BUNDLE v1\n");
  write_raw(tmp / "v1", v1);
  const Bundle old = read_bundle(tmp / "v1");
  EXPECT_EQ(old.entries.size(), 2u);
  EXPECT_TRUE(old.tuning.empty());

  // Any flipped bit in the tuning section fails its checksum: refused whole.
  const std::string full = test::slurp(tmp / "b");
  for (std::size_t bit = 0; bit < written.tuning.size() * 8; bit += 7) {
    std::string flipped = full;
    flipped[full.size() - 8 - written.tuning.size() + bit / 8] ^= char(1 << (bit % 8));
    write_raw(tmp / "flipped", flipped);
    EXPECT_THROW(read_bundle(tmp / "flipped"), Error) << "bit " << bit;
  }
  // Not a regular file, or larger than a bundle may be: refused before reading.
  EXPECT_THROW(read_bundle("/dev/zero"), Error);
  ASSERT_EQ(mkfifo((tmp / "fifo").c_str(), 0600), 0);
  EXPECT_THROW(read_bundle(tmp / "fifo"), Error) << "a FIFO is refused, not waited on";

  // Cut inside the tuning section, or with bytes after it: refused whole.
  write_raw(tmp / "cut", full.substr(0, full.size() - 3));
  EXPECT_THROW(read_bundle(tmp / "cut"), Error);
  write_raw(tmp / "long", full + "x");
  try {
    read_bundle(tmp / "long");
    ADD_FAILURE() << "read a bundle with trailing bytes";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("trailing bytes"), std::string::npos) << e.what();
  }
}
