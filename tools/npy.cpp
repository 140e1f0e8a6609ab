#include "tools/npy.hpp"

#include <dilatron/error.hpp>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cstring>
#include <fstream>
#include <string>
#include <string_view>

#include "common/atomic_file.hpp"

namespace dilatron::npy {
namespace {

constexpr std::string_view kMagic = "\x93NUMPY";

[[noreturn]] void fail(const std::filesystem::path& path, const std::string& why) {
  throw Error(fmt::format("{}: {}", path.string(), why));
}

// The value text after 'key': in the header dict, or empty when the key is absent.
std::string_view dict_value(std::string_view header, std::string_view key) {
  const std::string quoted = "'" + std::string(key) + "'";
  std::size_t at = header.find(quoted);
  if (at == std::string_view::npos) return {};
  at = header.find(':', at + quoted.size());
  if (at == std::string_view::npos) return {};
  std::string_view rest = header.substr(at + 1);
  rest.remove_prefix(std::min(rest.find_first_not_of(' '), rest.size()));
  return rest;
}

std::vector<std::int64_t> parse_shape(const std::filesystem::path& path, std::string_view text) {
  if (text.empty() || text.front() != '(') fail(path, "header has no shape tuple");
  const std::size_t close = text.find(')');
  if (close == std::string_view::npos) fail(path, "header shape tuple is not closed");
  std::vector<std::int64_t> shape;
  std::string_view items = text.substr(1, close - 1);
  while (!items.empty()) {
    const std::size_t comma = items.find(',');
    std::string_view item = items.substr(0, comma);
    item.remove_prefix(std::min(item.find_first_not_of(' '), item.size()));
    item = item.substr(0, item.find_last_not_of(' ') + 1);
    if (!item.empty()) {
      std::int64_t value = 0;
      for (char c : item) {
        if (c < '0' || c > '9' || value > (std::int64_t(1) << 40)) fail(path, fmt::format("bad shape entry '{}'", item));
        value = value * 10 + (c - '0');
      }
      shape.push_back(value);
    }
    if (comma == std::string_view::npos) break;
    items.remove_prefix(comma + 1);
  }
  return shape;
}

}  // namespace

std::int64_t Array::numel() const {
  std::int64_t n = 1;
  for (std::int64_t d : shape) n *= d;
  return n;
}

Array load(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, std::string("cannot open: ") + std::strerror(errno));
  char prefix[12] = {};
  in.read(prefix, 10);
  if (in.gcount() < 10 || std::string_view(prefix, 6) != kMagic) fail(path, "not a .npy file (bad magic)");
  const auto major = static_cast<unsigned char>(prefix[6]);
  if (major < 1 || major > 3) fail(path, fmt::format("unsupported .npy format version {}", major));
  const std::size_t len_bytes = major == 1 ? 2 : 4;
  if (len_bytes == 4 && !in.read(prefix + 10, 2)) fail(path, "truncated header");
  std::size_t header_len = 0;
  for (std::size_t i = 0; i < len_bytes; ++i) header_len |= std::size_t(static_cast<unsigned char>(prefix[8 + i])) << (8 * i);
  std::string header(header_len, '\0');
  if (!in.read(header.data(), std::streamsize(header_len))) fail(path, "truncated header");

  Array array;
  const std::string_view descr = dict_value(header, "descr");
  if (descr.starts_with("'<f4'")) {
    array.dtype = DType::f32;
  } else if (descr.starts_with("'<f2'")) {
    array.dtype = DType::f16;
  } else if (descr.starts_with("'<f8'")) {
    array.dtype = DType::f64;
  } else {
    const std::string_view shown = descr.substr(0, descr.find_first_of(",}"));
    fail(path, fmt::format("unsupported dtype {}: expected little-endian float32 '<f4', float16 '<f2' or float64 '<f8'",
                           shown.empty() ? "(none)" : shown));
  }
  const std::string_view fortran = dict_value(header, "fortran_order");
  if (fortran.starts_with("True")) fail(path, "Fortran-order arrays are not supported: save in C order");
  if (!fortran.starts_with("False")) fail(path, "header has no fortran_order");
  array.shape = parse_shape(path, dict_value(header, "shape"));
  std::int64_t elements = 1;
  for (std::int64_t d : array.shape) {
    if (__builtin_mul_overflow(elements, d, &elements) || elements > (std::int64_t(1) << 56)) {
      fail(path, fmt::format("shape ({}) is too large", fmt::join(array.shape, ", ")));
    }
  }

  // Sizes are checked against the file before allocating; the data then goes straight into the array,
  // so large inputs are never held twice.
  const std::size_t expected = std::size_t(array.numel()) * dtype_size(array.dtype);
  std::error_code ec;
  const std::uintmax_t file_bytes = std::filesystem::file_size(path, ec);
  const std::size_t data_offset = 8 + len_bytes + header_len;
  const std::size_t actual = ec || file_bytes < data_offset ? 0 : std::size_t(file_bytes - data_offset);
  if (actual != expected) {
    fail(path, fmt::format("shape ({}) needs {} data bytes but the file has {}{}", fmt::join(array.shape, ", "), expected,
                           actual, actual < expected ? " (truncated)" : ""));
  }
  array.data.resize(expected);
  if (!in.read(reinterpret_cast<char*>(array.data.data()), std::streamsize(expected))) fail(path, "read failed");
  return array;
}

void write(AtomicFile& file, DType dtype, const std::vector<std::int64_t>& shape, const void* data) {
  if (dtype == DType::bf16) throw Error(file.target().string() + ": bf16 cannot be stored in .npy");
  std::string shape_text = fmt::format("({}{})", fmt::join(shape, ", "), shape.size() == 1 ? "," : "");
  std::string header = fmt::format("{{'descr': '{}', 'fortran_order': False, 'shape': {}, }}",
                                   dtype == DType::f64 ? "<f8" : dtype == DType::f32 ? "<f4" : "<f2", shape_text);
  // Pad with spaces so the data starts on a 64-byte boundary, ending in a newline (format 1.0).
  const std::size_t total = (10 + header.size() + 1 + 63) / 64 * 64;
  header.append(total - 10 - header.size() - 1, ' ');
  header.push_back('\n');
  std::string prefix(kMagic);
  prefix += '\x01';
  prefix += '\x00';
  prefix += char(header.size() & 0xff);
  prefix += char(header.size() >> 8);
  file.write(prefix.data(), prefix.size());
  file.write(header.data(), header.size());
  std::int64_t numel = 1;
  for (std::int64_t d : shape) numel *= d;
  file.write(data, std::size_t(numel) * dtype_size(dtype));
}

}  // namespace dilatron::npy
