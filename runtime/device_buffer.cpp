#include "runtime/device_buffer.hpp"

#include "runtime/driver.hpp"

namespace dilatron {

// cuMemAlloc refuses 0 bytes: an empty buffer holds a null pointer (a ring rank with nothing to send).
DeviceBuffer::DeviceBuffer(std::size_t bytes) : bytes_(bytes) {
  if (bytes == 0) return;
  driver::current_context();
  DILATRON_CU(cuMemAlloc(&pointer_, bytes));
}

DeviceBuffer::~DeviceBuffer() {
  if (pointer_) driver::api().cuMemFree(pointer_);
}

void DeviceBuffer::upload(const void* host) {
  if (bytes_) DILATRON_CU(cuMemcpyHtoD(pointer_, host, bytes_));
}

void DeviceBuffer::download(void* host) const {
  if (bytes_) DILATRON_CU(cuMemcpyDtoH(host, pointer_, bytes_));
}

void DeviceBuffer::fill_repeating(const void* host, std::size_t bytes) {
  if (bytes_ == 0) return;
  const std::size_t first = std::min(bytes, bytes_);
  DILATRON_CU(cuMemcpyHtoD(pointer_, host, first));
  for (std::size_t done = first; done < bytes_;) {  // doubling device-to-device copies
    const std::size_t chunk = std::min(done, bytes_ - done);
    DILATRON_CU(cuMemcpyDtoD(pointer_ + done, pointer_, chunk));
    done += chunk;
  }
}

}  // namespace dilatron
