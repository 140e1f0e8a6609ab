#include "runtime/driver.hpp"

#include <dilatron/error.hpp>

#include <fmt/format.h>

#include "common/env.hpp"
#include "emulator/cuda_driver.hpp"

namespace dilatron::driver {
namespace {

using Loaded = LoadedTable<Api>;

// The emulated device's answers to the same calls (emulator/cuda_driver.hpp), bound by name as libcuda's are.
#define DILATRON_BIND_EMULATED(name) result.api.name = &::dilatron::emulator::cuda::name;

Loaded emulated() {
  Loaded result;
  result.library = "the emulated device (no GPU: slow, proves correctness only; docs/EMULATOR.md)";
  DILATRON_DRIVER_CALLS(DILATRON_BIND_EMULATED)
  return result;
}

const Loaded& loaded() {
  static const Loaded instance = [] {
    if (env::emulated_device()) return emulated();
    Loaded result = load_table<Api>({{"libcuda.so.1"}, "the CUDA driver", "GPU work needs an NVIDIA driver and GPU"},
                                    DILATRON_BIND_CALLS(DILATRON_DRIVER_CALLS));
    if (!result.error.empty()) return result;
    if (const CUresult r = result.api.cuInit(0); r != CUDA_SUCCESS) {
      const char* name = nullptr;
      result.api.cuGetErrorName(r, &name);
      result.error = std::string("cuInit failed (") + (name ? name : "unknown") +
                     "): the driver is present but no usable GPU was found";
    }
    return result;
  }();
  return instance;
}

}  // namespace

const Api& api() { return loaded().usable(); }

void check(CUresult result, const char* call) {
  if (result == CUDA_SUCCESS) return;
  const char *name = nullptr, *text = nullptr;
  const Api& a = loaded().api;
  if (a.cuGetErrorName) a.cuGetErrorName(result, &name);
  if (a.cuGetErrorString) a.cuGetErrorString(result, &text);
  throw Error(call, int(result), std::string(name ? name : "CUDA_ERROR") + ": " + (text ? text : "unknown error"));
}

Status probe() noexcept {
  Status status;
  try {
    const Loaded& l = loaded();
    status.loaded = !l.library.empty();
    status.library = l.library;
    if (status.loaded) l.api.cuDriverGetVersion(&status.version);
    api();  // throws the reason when the driver is unusable
    int count = 0;
    DILATRON_CU(cuDeviceGetCount(&count));
    for (int i = 0; i < count; ++i) {
      CUdevice dev;
      DILATRON_CU(cuDeviceGet(&dev, i));
      Device d{i, "", 0, 0, 0};
      char name[256] = {};
      DILATRON_CU(cuDeviceGetName(name, sizeof name, dev));
      d.name = name;
      DILATRON_CU(cuDeviceGetAttribute(&d.cc_major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev));
      DILATRON_CU(cuDeviceGetAttribute(&d.cc_minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev));
      DILATRON_CU(cuDeviceTotalMem(&d.memory_bytes, dev));
      status.devices.push_back(std::move(d));
    }
    if (count == 0) status.problem = "the driver reports no GPUs";
  } catch (const std::exception& e) {
    status.problem = e.what();
  }
  return status;
}

std::string arch_name(int cc_major, int cc_minor) {
  return "sm_" + std::to_string(cc_major) + std::to_string(cc_minor) + (cc_major == 9 ? "a" : "");
}

CUcontext current_context() {
  CUcontext context = nullptr;
  DILATRON_CU(cuCtxGetCurrent(&context));
  if (context) return context;
  CUdevice device;
  DILATRON_CU(cuDeviceGet(&device, 0));
  DILATRON_CU(cuDevicePrimaryCtxRetain(&context, device));
  DILATRON_CU(cuCtxSetCurrent(context));
  return context;
}

std::string current_arch() {
  CUdevice device;
  DILATRON_CU(cuCtxGetDevice(&device));
  int major = 0, minor = 0;
  DILATRON_CU(cuDeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, device));
  DILATRON_CU(cuDeviceGetAttribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, device));
  return arch_name(major, minor);
}

std::string current_device_name() {
  CUdevice device;
  DILATRON_CU(cuCtxGetDevice(&device));
  char name[256] = {};
  DILATRON_CU(cuDeviceGetName(name, sizeof(name) - 1, device));
  return name;
}

void require_device_memory(const void* pointer, const char* what) {
  const auto address = reinterpret_cast<CUdeviceptr>(pointer);
  unsigned type = 0;
  if (api().cuPointerGetAttribute(&type, CU_POINTER_ATTRIBUTE_MEMORY_TYPE, address) != CUDA_SUCCESS) {
    throw Error(fmt::format("{} is not device memory (a host pointer? copy it to the GPU first)", what));
  }
  if (type == CU_MEMORYTYPE_HOST) return;
  int ordinal = -1;
  CUdevice device;
  DILATRON_CU(cuPointerGetAttribute(&ordinal, CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL, address));
  DILATRON_CU(cuCtxGetDevice(&device));
  if (ordinal != int(device)) {
    throw Error(fmt::format("{} is on GPU {}, but the call runs on GPU {}", what, ordinal, int(device)));
  }
}

}  // namespace dilatron::driver
