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

// The header is a Python dict literal; numpy writes exactly the keys descr, fortran_order and shape. It
// is parsed as one, so text inside a string (a decoy "'descr': '<f4'") is never mistaken for a key.
struct Header {
  std::string descr;
  bool fortran_order = false;
  std::vector<std::int64_t> shape;
};

class HeaderParser {
 public:
  HeaderParser(const std::filesystem::path& path, std::string_view text) : path_(path), text_(text) {}

  Header parse() {
    Header header;
    bool seen_descr = false, seen_fortran = false, seen_shape = false;
    expect('{');
    while (!take('}')) {
      const std::string key = string();
      expect(':');
      auto once = [&](bool& seen) {
        if (seen) error(fmt::format("key '{}' appears twice", key));
        seen = true;
      };
      if (key == "descr") {
        once(seen_descr);
        header.descr = string();
      } else if (key == "fortran_order") {
        once(seen_fortran);
        header.fortran_order = boolean();
      } else if (key == "shape") {
        once(seen_shape);
        header.shape = tuple();
      } else {
        error(fmt::format("unexpected key '{}' (a .npy header holds descr, fortran_order and shape)", key));
      }
      if (!take(',')) {
        expect('}');
        break;
      }
    }
    skip_space();
    if (at_ != text_.size()) error("text after the header's closing brace");
    if (!seen_descr) error("header has no descr");
    if (!seen_fortran) error("header has no fortran_order");
    if (!seen_shape) error("header has no shape");
    return header;
  }

 private:
  [[noreturn]] void error(const std::string& why) const { fail(path_, "bad header: " + why); }

  void skip_space() {
    while (at_ < text_.size() && (text_[at_] == ' ' || text_[at_] == '\n' || text_[at_] == '\t')) ++at_;
  }
  bool take(char c) {
    skip_space();
    if (at_ < text_.size() && text_[at_] == c) {
      ++at_;
      return true;
    }
    return false;
  }
  void expect(char c) {
    if (!take(c)) error(fmt::format("expected '{}' at byte {}", c, at_));
  }

  std::string string() {
    skip_space();
    if (at_ >= text_.size() || (text_[at_] != '\'' && text_[at_] != '"')) error(fmt::format("expected a string at byte {}", at_));
    const char quote = text_[at_++];
    std::string value;
    while (at_ < text_.size() && text_[at_] != quote) {
      if (text_[at_] == '\\' && at_ + 1 < text_.size()) ++at_;
      value += text_[at_++];
    }
    if (at_ >= text_.size()) error("a string is not closed");
    ++at_;
    return value;
  }

  bool boolean() {
    skip_space();
    for (const auto& [word, value] : {std::pair{std::string_view("True"), true}, std::pair{std::string_view("False"), false}}) {
      if (text_.substr(at_, word.size()) == word) {
        at_ += word.size();
        return value;
      }
    }
    error(fmt::format("expected True or False at byte {}", at_));
  }

  // "()", "(5,)", "(2, 3)", "(2, 3,)"; "(5)" is the number 5 in Python, not a shape.
  std::vector<std::int64_t> tuple() {
    expect('(');
    std::vector<std::int64_t> items;
    bool trailing_comma = false;
    while (!take(')')) {
      items.push_back(integer());
      trailing_comma = take(',');
      if (!trailing_comma) {
        expect(')');
        break;
      }
    }
    if (items.size() == 1 && !trailing_comma) error("shape (n) needs a comma to be a tuple: (n,)");
    return items;
  }

  std::int64_t integer() {
    skip_space();
    const std::size_t begin = at_;
    std::int64_t value = 0;
    while (at_ < text_.size() && text_[at_] >= '0' && text_[at_] <= '9') {
      if (value > (std::int64_t(1) << 40)) break;
      value = value * 10 + (text_[at_++] - '0');
    }
    const std::size_t end = text_.find_first_of(",) ", at_);
    if (at_ == begin || (at_ < text_.size() && at_ != end)) {
      error(fmt::format("bad shape entry '{}'", text_.substr(begin, std::min(end, text_.size()) - begin)));
    }
    return value;
  }

  const std::filesystem::path& path_;
  std::string_view text_;
  std::size_t at_ = 0;
};

}  // namespace

std::int64_t Array::numel() const {
  std::int64_t n = 1;
  for (std::int64_t d : shape) n *= d;
  return n;
}

Array load(const std::filesystem::path& path) {
  // What the header claims is checked against the file's size before anything is allocated (and a FIFO
  // is refused rather than waited on).
  std::error_code ec;
  if (std::filesystem::exists(path, ec) && !std::filesystem::is_regular_file(path, ec)) fail(path, "not a regular file");
  const std::uintmax_t file_bytes = std::filesystem::file_size(path, ec);
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
  constexpr std::size_t kMaxHeader = std::size_t(1) << 20;  // numpy's own are under 100 bytes
  if (header_len > kMaxHeader) fail(path, fmt::format("header claims {} bytes, more than the {} allowed", header_len, kMaxHeader));
  if (8 + len_bytes + header_len > file_bytes) {
    fail(path, fmt::format("truncated header: it claims {} bytes, the file has {} in all", header_len, file_bytes));
  }
  std::string header_text(header_len, '\0');
  if (!in.read(header_text.data(), std::streamsize(header_len))) fail(path, "truncated header");

  Array array;
  const Header header = HeaderParser(path, header_text).parse();
  if (header.descr == "<f4") {
    array.dtype = DType::f32;
  } else if (header.descr == "<f2") {
    array.dtype = DType::f16;
  } else if (header.descr == "<f8") {
    array.dtype = DType::f64;
  } else {
    fail(path, fmt::format("unsupported dtype '{}': expected little-endian float32 '<f4', float16 '<f2' or float64 '<f8'",
                           header.descr));
  }
  if (header.fortran_order) fail(path, "Fortran-order arrays are not supported: save in C order");
  array.shape = header.shape;
  std::int64_t elements = 1;
  for (std::int64_t d : array.shape) {
    if (__builtin_mul_overflow(elements, d, &elements) || elements > (std::int64_t(1) << 56)) {
      fail(path, fmt::format("shape ({}) is too large", fmt::join(array.shape, ", ")));
    }
  }

  // Sizes are checked against the file before allocating; the data then goes straight into the array,
  // so large inputs are never held twice.
  const std::size_t expected = std::size_t(array.numel()) * dtype_size(array.dtype);
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
