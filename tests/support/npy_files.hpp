// .npy files for the CLI's tests: written as `run` writes them, read back as float64 values.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "common/atomic_file.hpp"
#include "common/dtype.hpp"
#include "tools/npy.hpp"

namespace dilatron::test {

inline void save_npy(const std::filesystem::path& path, DType dtype, const std::vector<std::int64_t>& shape,
                     const void* data) {
  AtomicFile file(path);
  npy::write(file, dtype, shape, data);
  file.commit();
}

// Integer offsets as numpy saves them (`np.save(path, np.array(values, dtype))`, '<i4' or '<i8'), written
// here rather than through npy::write, which stores floats only; `shape` defaults to 1-D.
template <class Int>
void save_offsets_npy(const std::filesystem::path& path, const std::vector<Int>& values,
                      std::vector<std::int64_t> shape = {}) {
  static_assert(sizeof(Int) == 4 || sizeof(Int) == 8);
  if (shape.empty()) shape = {std::int64_t(values.size())};
  std::string dims;
  for (std::int64_t d : shape) dims += std::to_string(d) + ", ";
  if (shape.size() > 1) dims.resize(dims.size() - 2);
  std::string header = std::string("{'descr': '<i") + char('0' + sizeof(Int)) + "', 'fortran_order': False, 'shape': (" +
                       dims + "), }";
  header.append(63 - (10 + header.size()) % 64, ' ');
  header.push_back('\n');
  AtomicFile file(path);
  const char prefix[] = {'\x93', 'N', 'U', 'M', 'P', 'Y', 1, 0, char(header.size() & 0xff), char(header.size() >> 8)};
  file.write(prefix, sizeof prefix);
  file.write(header.data(), header.size());
  file.write(values.data(), values.size() * sizeof(Int));
  file.commit();
}

inline std::vector<double> npy_values(const npy::Array& a) {
  std::vector<double> out(std::size_t(a.numel()));
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = load_element(a.data.data(), a.dtype, std::int64_t(i));
  return out;
}

inline std::vector<double> npy_values(const std::filesystem::path& path) { return npy_values(npy::load(path)); }

}  // namespace dilatron::test
