// .npy reading and writing: round trips, and every malformed file is an error naming the file.
#include <gtest/gtest.h>

#include <dilatron/error.hpp>

#include <sys/stat.h>

#include <fstream>
#include <random>

#include "common/atomic_file.hpp"
#include "tests/support/temp_dir.hpp"
#include "tools/npy.hpp"

using namespace dilatron;

namespace {

void write_bytes(const std::filesystem::path& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

std::string read_bytes(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// A version 1.0 file with the given header dict and data.
std::string npy_image(const std::string& dict, const std::string& data) {
  std::string header = dict;
  while ((10 + header.size() + 1) % 64) header += ' ';
  header += '\n';
  std::string out = "\x93NUMPY\x01";
  out += '\0';
  out += char(header.size() & 0xff);
  out += char(header.size() >> 8);
  return out + header + data;
}

void expect_load_error(const std::filesystem::path& path, const char* needle) {
  try {
    npy::load(path);
    ADD_FAILURE() << "loaded a bad file";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find(path.string()), std::string::npos) << what;
    EXPECT_NE(what.find(needle), std::string::npos) << what;
  }
}

}  // namespace

TEST(Npy, RoundTripsFloat32Float16AndFloat64) {
  test::TempDir dir;
  std::mt19937 rng(1);
  for (DType dtype : {DType::f32, DType::f16, DType::f64}) {
    for (const std::vector<std::int64_t>& shape : std::vector<std::vector<std::int64_t>>{{7}, {2, 3, 4, 5}, {1, 1, 1, 1}}) {
      std::int64_t n = 1;
      for (auto d : shape) n *= d;
      std::vector<std::byte> data(std::size_t(n) * dtype_size(dtype));
      for (auto& b : data) b = std::byte(rng());
      const auto path = dir / "x.npy";
      {
        AtomicFile file(path);
        npy::write(file, dtype, shape, data.data());
        file.commit();
      }
      EXPECT_EQ(read_bytes(path).size() % 64, data.size() % 64) << "header must pad to 64 bytes";
      const npy::Array a = npy::load(path);
      EXPECT_EQ(a.dtype, dtype);
      EXPECT_EQ(a.shape, shape);
      EXPECT_EQ(a.data, data);
    }
  }
}

TEST(Npy, ReadsHeadersWrittenByNumpy) {
  test::TempDir dir;
  // NumPy's own spelling, with 'descr' not first and a 1-tuple shape.
  const std::string data(12, '\x01');
  write_bytes(dir / "a.npy", npy_image("{'fortran_order': False, 'shape': (3,), 'descr': '<f4', }", data));
  const npy::Array a = npy::load(dir / "a.npy");
  EXPECT_EQ(a.shape, std::vector<std::int64_t>{3});
  EXPECT_EQ(a.dtype, DType::f32);
}

TEST(Npy, RejectsMalformedFiles) {
  test::TempDir dir;
  const std::string f4_2x2(16, '\0');
  write_bytes(dir / "magic.npy", "NOT A NUMPY FILE AT ALL");
  expect_load_error(dir / "magic.npy", "bad magic");
  expect_load_error(dir / "missing.npy", "cannot open");
  write_bytes(dir / "i8.npy", npy_image("{'descr': '<i8', 'fortran_order': False, 'shape': (2, 2), }", f4_2x2 + f4_2x2));
  expect_load_error(dir / "i8.npy", "'<i8'");
  write_bytes(dir / "be.npy", npy_image("{'descr': '>f4', 'fortran_order': False, 'shape': (2, 2), }", f4_2x2));
  expect_load_error(dir / "be.npy", "'>f4'");
  write_bytes(dir / "fortran.npy", npy_image("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }", f4_2x2));
  expect_load_error(dir / "fortran.npy", "Fortran");
  write_bytes(dir / "short.npy", npy_image("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", f4_2x2));
  expect_load_error(dir / "short.npy", "truncated");
  write_bytes(dir / "long.npy", npy_image("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 1), }", f4_2x2));
  expect_load_error(dir / "long.npy", "needs 8 data bytes");
  write_bytes(dir / "shape.npy", npy_image("{'descr': '<f4', 'fortran_order': False, 'shape': (2, x), }", f4_2x2));
  expect_load_error(dir / "shape.npy", "bad shape entry");
  write_bytes(dir / "huge.npy", npy_image("{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776, 1099511627776), }", f4_2x2));
  expect_load_error(dir / "huge.npy", "too large");
  const std::string image = npy_image("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }", f4_2x2);
  write_bytes(dir / "cut.npy", image.substr(0, 20));
  expect_load_error(dir / "cut.npy", "truncated header");
  // A 12-byte v2 file claiming a 4 GiB header: refused from the file's size, nothing allocated.
  write_bytes(dir / "claims.npy", std::string("\x93NUMPY\x02\x00\xff\xff\xff\xff", 12));
  expect_load_error(dir / "claims.npy", "more than the");
  write_bytes(dir / "claims_small.npy", std::string("\x93NUMPY\x02\x00\x00\x00\x01\x00", 12));
  expect_load_error(dir / "claims_small.npy", "truncated header: it claims 65536 bytes, the file has 12");
  ASSERT_EQ(mkfifo((dir / "fifo.npy").c_str(), 0600), 0);
  expect_load_error(dir / "fifo.npy", "not a regular file");
}

// The header is a dict literal: a decoy inside a string, a repeated or unknown key, or anything after the
// closing brace is an error or is ignored as Python would, never a different reading of the data.
TEST(Npy, ParsesTheHeaderAsADictNotBySearching) {
  test::TempDir dir;
  const std::string f4_2x2(16, '\0');
  // The real descr is big-endian; a search for 'descr' would find the decoy's text first.
  write_bytes(dir / "decoy.npy", npy_image("{'x': \"'descr': '<f4', 'fortran_order': False\", 'descr': '>f4', "
                                           "'fortran_order': False, 'shape': (2, 2), }", f4_2x2));
  expect_load_error(dir / "decoy.npy", "unexpected key 'x'");
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"{'descr': '<f4', 'descr': '>f4', 'fortran_order': False, 'shape': (2, 2), }", "'descr' appears twice"},
      {"{'fortran_order': True, 'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }", "appears twice"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), } junk", "after the header's closing brace"},
      {"{'descr': '<f4', 'fortran_order': Fals, 'shape': (2, 2), }", "expected True or False"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (4), }", "needs a comma"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,, 2), }", "bad shape entry"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2 }", "expected ')'"},
      {"{'descr': '<f4', 'fortran_order': False, }", "no shape"},
      {"{'descr': '<f4, 'fortran_order': False, 'shape': (2, 2), }", "expected '}'"},
  };
  for (const auto& [header, needle] : bad) {
    SCOPED_TRACE(header);
    write_bytes(dir / "bad.npy", npy_image(header, f4_2x2));
    expect_load_error(dir / "bad.npy", needle.c_str());
  }
  // What numpy itself accepts: any key order, double quotes, no trailing comma, (n,) shapes.
  write_bytes(dir / "order.npy", npy_image("{\"shape\": (4,), 'fortran_order': False, \"descr\": '<f4'}", f4_2x2));
  const npy::Array a = npy::load(dir / "order.npy");
  EXPECT_EQ(a.dtype, DType::f32);
  EXPECT_EQ(a.shape, (std::vector<std::int64_t>{4}));
}

TEST(AtomicFileTest, UncommittedWritesLeaveNothing) {
  test::TempDir dir;
  {
    AtomicFile file(dir / "out.npy");
    file.write("partial", 7);
  }
  EXPECT_TRUE(std::filesystem::is_empty(dir.path()));
  write_bytes(dir / "keep.npy", "old");
  {
    AtomicFile file(dir / "keep.npy");
    file.write("new", 3);
  }
  EXPECT_EQ(read_bytes(dir / "keep.npy"), "old") << "an abandoned write must not clobber the old file";
  {
    AtomicFile file(dir / "keep.npy");
    file.write("new", 3);
    file.commit();
  }
  EXPECT_EQ(read_bytes(dir / "keep.npy"), "new");
  EXPECT_THROW(AtomicFile(dir / "no-such-dir" / "x.npy"), Error);
}
