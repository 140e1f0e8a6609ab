#include "tools/npy.hpp"

#include <dilatron/error.hpp>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cstring>
#include <fstream>
#include <limits>
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

namespace {

// A .npy file's header and data, its dtype one of `accepted` (descr, element bytes); `expected` names
// them for the error.
struct Raw {
  std::string descr;
  std::vector<std::int64_t> shape;
  std::vector<std::byte> data;
};

Raw load_raw(const std::filesystem::path& path, std::initializer_list<std::pair<std::string_view, std::size_t>> accepted,
             std::string_view expected) {
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

  Raw raw;
  const Header header = HeaderParser(path, header_text).parse();
  std::size_t element_bytes = 0;
  for (const auto& [descr, bytes] : accepted) {
    if (header.descr == descr) element_bytes = bytes;
  }
  if (element_bytes == 0) fail(path, fmt::format("unsupported dtype '{}': expected {}", header.descr, expected));
  if (header.fortran_order) fail(path, "Fortran-order arrays are not supported: save in C order");
  raw.descr = header.descr;
  raw.shape = header.shape;
  std::int64_t elements = 1;
  for (std::int64_t d : raw.shape) {
    if (__builtin_mul_overflow(elements, d, &elements) || elements > (std::int64_t(1) << 56)) {
      fail(path, fmt::format("shape ({}) is too large", fmt::join(raw.shape, ", ")));
    }
  }

  // Sizes are checked against the file before allocating; the data then goes straight into the array,
  // so large inputs are never held twice.
  const std::size_t expected_bytes = std::size_t(elements) * element_bytes;
  const std::size_t data_offset = 8 + len_bytes + header_len;
  const std::size_t actual = ec || file_bytes < data_offset ? 0 : std::size_t(file_bytes - data_offset);
  if (actual != expected_bytes) {
    fail(path, fmt::format("shape ({}) needs {} data bytes but the file has {}{}", fmt::join(raw.shape, ", "),
                           expected_bytes, actual, actual < expected_bytes ? " (truncated)" : ""));
  }
  raw.data.resize(expected_bytes);
  if (!in.read(reinterpret_cast<char*>(raw.data.data()), std::streamsize(expected_bytes))) fail(path, "read failed");
  return raw;
}

}  // namespace

Array load(const std::filesystem::path& path) {
  Raw raw = load_raw(path, {{"<f4", 4}, {"<f2", 2}, {"<f8", 8}},
                     "little-endian float32 '<f4', float16 '<f2' or float64 '<f8'");
  const DType dtype = raw.descr == "<f4" ? DType::f32 : raw.descr == "<f2" ? DType::f16 : DType::f64;
  return {dtype, std::move(raw.shape), std::move(raw.data)};
}

std::vector<std::int32_t> load_offsets(const std::filesystem::path& path) {
  const Raw raw = load_raw(path, {{"<i4", 4}, {"<i8", 8}}, "little-endian int32 '<i4' or int64 '<i8'");
  if (raw.shape.size() != 1) {
    fail(path, fmt::format("shape ({}): offsets are one dimension, [S + 1] for S sequences", fmt::join(raw.shape, ", ")));
  }
  std::vector<std::int32_t> out(std::size_t(raw.shape[0]));
  for (std::size_t i = 0; i < out.size(); ++i) {
    std::int64_t value = 0;
    if (raw.descr == "<i4") {
      std::int32_t v;
      std::memcpy(&v, raw.data.data() + 4 * i, 4);
      value = v;
    } else {
      std::memcpy(&value, raw.data.data() + 8 * i, 8);
    }
    if (value < std::numeric_limits<std::int32_t>::min() || value > std::numeric_limits<std::int32_t>::max()) {
      fail(path, fmt::format("entry {} = {} does not fit the int32 offsets take", i, value));
    }
    out[i] = std::int32_t(value);
  }
  return out;
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
