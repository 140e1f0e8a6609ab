#include "runtime/gpu_timer.hpp"

#include <algorithm>
#include <cstdint>
#include <vector>

#include "runtime/driver.hpp"

namespace dilatron {

GpuTimer::GpuTimer() : flush_(std::size_t(256) << 20) {  // 256 MiB: past the L2 of every GPU so far (H100: 50 MiB)
  DILATRON_CU(cuEventCreate(&start_, CU_EVENT_DEFAULT));
  DILATRON_CU(cuEventCreate(&stop_, CU_EVENT_DEFAULT));
}

GpuTimer::~GpuTimer() {
  driver::api().cuEventDestroy(start_);
  driver::api().cuEventDestroy(stop_);
}

double GpuTimer::median_ms(const std::function<void()>& work, int warmup, int iters) {
  for (int i = 0; i < warmup; ++i) work();
  std::vector<float> times;
  for (int i = 0; i < iters; ++i) {
    DILATRON_CU(cuMemsetD8Async(reinterpret_cast<CUdeviceptr>(flush_.get()), std::uint8_t(i), flush_.bytes(), nullptr));
    DILATRON_CU(cuEventRecord(start_, nullptr));
    work();
    DILATRON_CU(cuEventRecord(stop_, nullptr));
    DILATRON_CU(cuEventSynchronize(stop_));
    float ms = 0;
    DILATRON_CU(cuEventElapsedTime(&ms, start_, stop_));
    times.push_back(ms);
  }
  std::nth_element(times.begin(), times.begin() + times.size() / 2, times.end());
  return times[times.size() / 2];
}

}  // namespace dilatron
