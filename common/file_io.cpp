#include "common/file_io.hpp"

#include <dilatron/error.hpp>

#include <fmt/format.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <ios>
#include <iterator>

namespace dilatron {

std::string read_file(const std::filesystem::path& path, std::uint64_t max_bytes) {
  std::error_code ec;
  const std::filesystem::file_status status = std::filesystem::status(path, ec);
  if (ec) throw Error(fmt::format("cannot read {}: {}", path.string(), ec.message()));
  if (!std::filesystem::is_regular_file(status)) throw Error(fmt::format("cannot read {}: not a regular file", path.string()));
  const std::uintmax_t size = std::filesystem::file_size(path, ec);
  if (!ec && size > max_bytes) {
    throw Error(fmt::format("{} is {} bytes, more than the {} this file may hold", path.string(), size, max_bytes));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(fmt::format("cannot read {}: {}", path.string(), std::strerror(errno)));
  std::string bytes;
  bytes.resize(std::size_t(size));
  in.read(bytes.data(), std::streamsize(bytes.size()));
  // A file that shrank or grew while read: what was read, up to the bound.
  bytes.resize(std::size_t(in.gcount()));
  if (in.peek() != std::ifstream::traits_type::eof()) {
    throw Error(fmt::format("{} changed while it was read", path.string()));
  }
  return bytes;
}

}  // namespace dilatron
