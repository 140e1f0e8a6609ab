#include "runtime/device_buffer.hpp"

#include "runtime/driver.hpp"

namespace dilatron {

DeviceBuffer::DeviceBuffer(std::size_t bytes) : bytes_(bytes) {
  driver::current_context();
  DILATRON_CU(cuMemAlloc(&pointer_, bytes));
}

DeviceBuffer::~DeviceBuffer() {
  if (pointer_) driver::api().cuMemFree(pointer_);
}

void DeviceBuffer::upload(const void* host) { DILATRON_CU(cuMemcpyHtoD(pointer_, host, bytes_)); }

void DeviceBuffer::download(void* host) const { DILATRON_CU(cuMemcpyDtoH(host, pointer_, bytes_)); }

void DeviceBuffer::fill_repeating(const void* host, std::size_t bytes) {
  const std::size_t first = std::min(bytes, bytes_);
  DILATRON_CU(cuMemcpyHtoD(pointer_, host, first));
  for (std::size_t done = first; done < bytes_;) {  // doubling device-to-device copies
    const std::size_t chunk = std::min(done, bytes_ - done);
    DILATRON_CU(cuMemcpyDtoD(pointer_ + done, pointer_, chunk));
    done += chunk;
  }
}

}  // namespace dilatron
