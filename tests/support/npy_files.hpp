// .npy files for the CLI's tests: written as `run` writes them, read back as float64 values.
#pragma once

#include <filesystem>
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

inline std::vector<double> npy_values(const npy::Array& a) {
  std::vector<double> out(std::size_t(a.numel()));
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = load_element(a.data.data(), a.dtype, std::int64_t(i));
  return out;
}

inline std::vector<double> npy_values(const std::filesystem::path& path) { return npy_values(npy::load(path)); }

}  // namespace dilatron::test
