// CUDA's built-ins for the templates compiled for the host (the emulated device, emulator/): the
// qualifiers, thread and block indices, __syncthreads, warp shuffles, atomics and the math the kernels
// call, each forwarding to the emulator through the table it sets after loading the object. A host
// compile includes this before any template; NVRTC never sees it.
#pragma once

#ifdef __CUDA_ARCH__
#error "host_prelude.cuh is for host compiles of the templates only"
#endif

#include <math.h>
#include <string.h>

#include "dilatron/emulator_api.cuh"

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
#define __restrict__ __restrict

// Set by the emulator once the object is loaded, before any launch.
extern "C" __attribute__((visibility("default"))) const DilatronEmulatorApi* dilatron_emulator_api;
const DilatronEmulatorApi* dilatron_emulator_api = nullptr;

namespace dilatron::emulated {

inline const DilatronEmulatorApi& api() { return *dilatron_emulator_api; }
inline const DilatronEmulatorThread& self() { return *dilatron_emulator_api->self(); }
inline unsigned shared_address(const void* pointer) { return api().shared_address(pointer); }
inline float half_to_float(unsigned short bits) { return api().half_to_float(bits); }
inline unsigned short float_to_16(int bf16, float x) { return api().float_to_16(bf16, x); }
inline float ex2(float x) { return api().ex2(x); }
inline unsigned pack2(int bf16, float low, float high) {
  return unsigned(float_to_16(bf16, low)) | unsigned(float_to_16(bf16, high)) << 16;
}

struct Index3 {
  unsigned x, y, z;
};
inline Index3 index3(const unsigned (&v)[3]) { return {v[0], v[1], v[2]}; }
inline unsigned lane() {
  const DilatronEmulatorThread& t = self();
  return (t.thread[0] + t.block_dim[0] * (t.thread[1] + t.block_dim[1] * t.thread[2])) % 32;
}

}  // namespace dilatron::emulated

#define threadIdx (::dilatron::emulated::index3(::dilatron::emulated::self().thread))
#define blockIdx (::dilatron::emulated::index3(::dilatron::emulated::self().block))
#define blockDim (::dilatron::emulated::index3(::dilatron::emulated::self().block_dim))
#define gridDim (::dilatron::emulated::index3(::dilatron::emulated::self().grid_dim))
#define __syncthreads() ::dilatron::emulated::api().barrier(__LINE__)
#define __syncwarp(...) ::dilatron::emulated::api().warp_exchange(__LINE__, 0xffffffffu, nullptr, 0, nullptr)
#define __shfl_xor_sync(mask, value, lane_mask) ::dilatron::emulated::shfl_xor(__LINE__, mask, value, lane_mask)
#define __shfl_sync(mask, value, source) ::dilatron::emulated::shfl(__LINE__, mask, value, source)

namespace dilatron::emulated {

template <class T>
T shfl_xor(int site, unsigned mask, T value, int lane_mask) {
  static_assert(sizeof(T) == 4, "32-bit shuffles");
  T all[32];
  api().warp_exchange(site, mask, &value, sizeof(T), all);
  return all[(lane() ^ unsigned(lane_mask)) % 32];
}
template <class T>
T shfl(int site, unsigned mask, T value, int source) {
  static_assert(sizeof(T) == 4, "32-bit shuffles");
  T all[32];
  api().warp_exchange(site, mask, &value, sizeof(T), all);
  return all[unsigned(source) % 32];
}

}  // namespace dilatron::emulated

inline float atomicAdd(float* address, float value) { return dilatron::emulated::api().atomic_add_f32(address, value); }
inline float __int_as_float(int x) {
  float f;
  memcpy(&f, &x, 4);
  return f;
}
inline float __uint_as_float(unsigned x) {
  float f;
  memcpy(&f, &x, 4);
  return f;
}
inline int __float_as_int(float x) {
  int i;
  memcpy(&i, &x, 4);
  return i;
}
struct alignas(8) float2 {
  float x, y;
};
struct alignas(16) float4 {
  float x, y, z, w;
};
struct alignas(8) uint2 {
  unsigned x, y;
};
struct alignas(16) uint4 {
  unsigned x, y, z, w;
};
inline float2 make_float2(float x, float y) { return {x, y}; }
inline uint2 make_uint2(unsigned x, unsigned y) { return {x, y}; }
