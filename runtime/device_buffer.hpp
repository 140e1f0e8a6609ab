// Device memory owned by a value: freed when it goes out of scope, copied to and from the host.
#pragma once

#include <cuda.h>

#include <cstddef>

namespace dilatron {

class DeviceBuffer {
 public:
  explicit DeviceBuffer(std::size_t bytes);  // 0 bytes: no allocation, get() is null
  ~DeviceBuffer();
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* get() const noexcept { return reinterpret_cast<void*>(pointer_); }
  std::size_t bytes() const noexcept { return bytes_; }
  void upload(const void* host);   // all bytes
  void download(void* host) const;  // all bytes
  // Fills the buffer by repeating `bytes` bytes of host data (a random block tiles a large tensor).
  void fill_repeating(const void* host, std::size_t bytes);

 private:
  CUdeviceptr pointer_ = 0;
  std::size_t bytes_;
};

}  // namespace dilatron
