// .npy files (NumPy format 1.0-3.0): float32, float16 and float64, little-endian, C order. The header is
// parsed as the dict literal it is, and its sizes are checked against the file before anything is
// allocated. Anything else is a clear error naming the file, never a silent reinterpretation.
#pragma once

#include <dilatron/tensor.hpp>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <vector>

namespace dilatron {

class AtomicFile;

namespace npy {

struct Array {
  DType dtype = DType::f32;
  std::vector<std::int64_t> shape;
  std::vector<std::byte> data;

  std::int64_t numel() const;
};

Array load(const std::filesystem::path& path);

// A packing's offsets (cu_seqlens): a 1-D int32 or int64 array, every value within int32. Their order is
// the caller's to check (validate_cu_seqlens).
std::vector<std::int32_t> load_offsets(const std::filesystem::path& path);

// Writes a complete .npy image into `file`; the caller commits it. bf16 has no .npy dtype: an error.
void write(AtomicFile& file, DType dtype, const std::vector<std::int64_t>& shape, const void* data);

}  // namespace npy
}  // namespace dilatron
