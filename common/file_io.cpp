#include "common/file_io.hpp"

#include <dilatron/error.hpp>

#include <fmt/format.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <ios>
#include <iterator>

namespace dilatron {

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(fmt::format("cannot read {}: {}", path.string(), std::strerror(errno)));
  try {
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  } catch (const std::ios_base::failure& e) {  // a directory opens, then fails its first read
    throw Error(fmt::format("cannot read {}: {}", path.string(), e.what()));
  }
}

}  // namespace dilatron
