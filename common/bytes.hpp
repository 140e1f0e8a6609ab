// Little-endian integers in byte strings: the cache's entry files and bundles are read on machines
// other than the one that wrote them, so their layout must not depend on the host's byte order.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>

namespace dilatron {

template <class T>
void put_le(std::string& out, T value) {
  static_assert(std::is_unsigned_v<T>);
  for (std::size_t i = 0; i < sizeof(T); ++i) out.push_back(char((std::uint64_t(value) >> (8 * i)) & 0xff));
}

// The caller checks that bytes holds sizeof(T) bytes at `at`.
template <class T>
T get_le(std::string_view bytes, std::size_t at) {
  static_assert(std::is_unsigned_v<T>);
  std::uint64_t value = 0;
  for (std::size_t i = 0; i < sizeof(T); ++i) value |= std::uint64_t(static_cast<unsigned char>(bytes[at + i])) << (8 * i);
  return T(value);
}

}  // namespace dilatron
