// Element types and conversions for device code. 16-bit types are storage wrappers converted with PTX
// cvt instructions, so the templates need none of the toolkit's headers at run time (on the emulated
// device, by host functions that round the same way: see ptx.cuh).
#pragma once

namespace dilatron {

struct alignas(2) f16 {
  unsigned short bits;
};
struct alignas(2) bf16 {
  unsigned short bits;
};

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(f16 x) {
#ifdef __CUDA_ARCH__
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(x.bits));
  return f;
#else
  return emulated::half_to_float(x.bits);
#endif
}
__device__ __forceinline__ float to_float(bf16 x) { return __uint_as_float(static_cast<unsigned>(x.bits) << 16); }

template <class T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ f16 from_float<f16>(float x) {
  f16 h;
#ifdef __CUDA_ARCH__
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h.bits) : "f"(x));
#else
  h.bits = emulated::float_to_16(0, x);
#endif
  return h;
}
template <>
__device__ __forceinline__ bf16 from_float<bf16>(float x) {
  bf16 h;
#ifdef __CUDA_ARCH__
  asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h.bits) : "f"(x));  // sm_80 and newer
#else
  h.bits = emulated::float_to_16(1, x);
#endif
  return h;
}

// log(e^a + e^b) of two partial LSEs without overflow: -inf when both are (no key seen), NaN when either
// is (a NaN score poisons its row's LSE as it does its O, as in the host reference). fmaxf alone would
// drop the NaN and report the row as empty.
__device__ __forceinline__ float merge_lse(float a, float b) {
  if (a != a || b != b) return __int_as_float(0x7fffffff);
  const float hi = fmaxf(a, b), lo = fminf(a, b);
  return hi == __int_as_float(0xff800000) ? hi : hi + log1pf(expf(lo - hi));
}

}  // namespace dilatron
