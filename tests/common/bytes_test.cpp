// Little-endian byte helpers and whole-file reads shared by the cache's entry and bundle formats.
#include <gtest/gtest.h>

#include <dilatron/error.hpp>

#include <fstream>
#include <random>

#include "common/bytes.hpp"
#include "common/file_io.hpp"
#include "tests/support/temp_dir.hpp"

using namespace dilatron;

TEST(Bytes, WritesTheLeastSignificantByteFirst) {
  std::mt19937_64 rng(11);
  for (int trial = 0; trial < 200; ++trial) {
    const std::uint64_t value = rng();
    std::string out;
    put_le<std::uint64_t>(out, value);
    ASSERT_EQ(out.size(), 8u);
    for (int i = 0; i < 8; ++i) {
      // An independent decomposition: division instead of the helpers' shifts.
      ASSERT_EQ(static_cast<unsigned char>(out[i]), (value / (std::uint64_t(1) << (8 * i))) % 256) << i;
    }
    std::string narrow;
    put_le<std::uint32_t>(narrow, std::uint32_t(value));
    EXPECT_EQ(narrow, out.substr(0, 4)) << "a u32 is the low half of the u64";
  }
}

TEST(Bytes, RoundTripsAtAnyOffset) {
  std::mt19937_64 rng(12);
  for (int trial = 0; trial < 200; ++trial) {
    std::string buffer(std::size_t(rng() % 17), '\xa5');  // arbitrary prefix
    const std::size_t at64 = buffer.size();
    const std::uint64_t a = rng();
    put_le(buffer, a);
    const std::size_t at32 = buffer.size();
    const auto b = std::uint32_t(rng());
    put_le(buffer, b);
    const std::size_t at8 = buffer.size();
    const auto c = std::uint8_t(rng());
    put_le(buffer, c);
    EXPECT_EQ(get_le<std::uint64_t>(buffer, at64), a);
    EXPECT_EQ(get_le<std::uint32_t>(buffer, at32), b);
    EXPECT_EQ(get_le<std::uint8_t>(buffer, at8), c);
    EXPECT_EQ(buffer.size(), at64 + 13);
  }
}

TEST(FileIo, ReadsEveryByteBackIncludingZeros) {
  test::TempDir dir;
  std::mt19937 rng(13);
  std::string bytes(100000 + rng() % 1000, '\0');
  for (char& c : bytes) c = char(rng());
  bytes[10] = '\0';
  std::ofstream(dir / "blob", std::ios::binary).write(bytes.data(), std::streamsize(bytes.size()));
  EXPECT_EQ(read_file(dir / "blob"), bytes);
  std::ofstream(dir / "empty", std::ios::binary).flush();
  EXPECT_EQ(read_file(dir / "empty"), "");
}

TEST(FileIo, FailuresAreErrorsNamingTheFile) {
  test::TempDir dir;
  for (const std::filesystem::path& bad : {dir / "missing", dir.path()}) {
    try {
      read_file(bad);
      ADD_FAILURE() << bad << " was read";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(bad.string()), std::string::npos) << e.what();
    }
  }
}
