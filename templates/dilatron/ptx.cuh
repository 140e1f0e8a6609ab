// The thin PTX layer the attention kernels stand on (sm_80 and newer): shared-memory addresses,
// cp.async with zero fill, ldmatrix, ex2, mma.sync m16n8k16 with fp32 accumulation, and packing to 16-bit pairs.
//
// Fragment layouts (lane = 4 * group + t, group = lane / 4, t = lane % 4) for mma.m16n8k16:
//   A 16x16 (row-major): a0 = (group, 2t..2t+1), a1 = (group + 8, 2t..), a2 = (group, 2t + 8..), a3 = (group + 8, 2t + 8..)
//   B 16x8  (k x n):     b0 = (k 2t..2t+1, n group), b1 = (k 2t + 8.., n group)
//   C 16x8  (fp32):      c0, c1 = (group, 2t..2t+1), c2, c3 = (group + 8, 2t..2t+1)
// ldmatrix .x4: lanes 8i..8i+7 give the row addresses of matrix i; each lane receives (row group,
// cols 2t..2t+1) of every matrix, or with .trans (rows 2t..2t+1, col group).
//
// This file and types.cuh are the only place the templates fork by backend: NVRTC compiles the asm
// (__CUDA_ARCH__ defined); the emulated device compiles the same source for the host, where each
// function calls the emulator through host_prelude.cuh instead.
#pragma once

#include "dilatron/types.cuh"

namespace dilatron::ptx {

__device__ __forceinline__ unsigned shared_address(const void* pointer) {
#ifdef __CUDA_ARCH__
  unsigned address;
  asm("{ .reg .u64 a; cvta.to.shared.u64 a, %1; cvt.u32.u64 %0, a; }" : "=r"(address) : "l"(pointer));
  return address;
#else
  return emulated::shared_address(pointer);
#endif
}

// blockIdx.x, .y or .z read afresh (volatile): values derived from it are recomputed where they are used
// instead of being kept in registers from an earlier use.
template <int DIM>
__device__ __forceinline__ unsigned block_index() {
#ifdef __CUDA_ARCH__
  unsigned i;
  if (DIM == 0) asm volatile("mov.u32 %0, %%ctaid.x;" : "=r"(i));
  else if (DIM == 1) asm volatile("mov.u32 %0, %%ctaid.y;" : "=r"(i));
  else asm volatile("mov.u32 %0, %%ctaid.z;" : "=r"(i));
  return i;
#else
  return emulated::self().block[DIM];
#endif
}

// Copies 16 bytes global -> shared asynchronously; when !valid, writes 16 zero bytes and reads nothing.
__device__ __forceinline__ void cp_async_16(unsigned shared, const void* global, bool valid) {
#ifdef __CUDA_ARCH__
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(shared), "l"(global), "r"(valid ? 16 : 0));
#else
  emulated::api().cp_async_16(shared, global, valid);
#endif
}
// Sixteen zero bytes into shared memory: rows past the end of a tile's data, so they hold no stale values.
__device__ __forceinline__ void st_shared_zero_16(unsigned shared) {
#ifdef __CUDA_ARCH__
  asm volatile("st.shared.v4.u32 [%0], {%1, %1, %1, %1};\n" ::"r"(shared), "r"(0));
#else
  emulated::api().store_shared(shared, nullptr, 16);
#endif
}
__device__ __forceinline__ void cp_async_commit() {
#ifdef __CUDA_ARCH__
  asm volatile("cp.async.commit_group;\n" ::);
#else
  emulated::api().cp_async_commit();
#endif
}
// Waits until at most N committed groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
#ifdef __CUDA_ARCH__
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
#else
  emulated::api().cp_async_wait(N);
#endif
}

__device__ __forceinline__ void ldmatrix_x4(unsigned address, unsigned (&r)[4]) {
#ifdef __CUDA_ARCH__
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(address));
#else
  emulated::api().ldmatrix_x4(address, r, 0);
#endif
}
__device__ __forceinline__ void ldmatrix_x4_trans(unsigned address, unsigned (&r)[4]) {
#ifdef __CUDA_ARCH__
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(address));
#else
  emulated::api().ldmatrix_x4(address, r, 1);
#endif
}

// d += a * b for one 16x8x16 tile.
template <class T>
__device__ __forceinline__ void mma_16816(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1);
template <>
__device__ __forceinline__ void mma_16816<f16>(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
#ifdef __CUDA_ARCH__
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
  emulated::api().mma_16816(0, d, a, b0, b1);
#endif
}
template <>
__device__ __forceinline__ void mma_16816<bf16>(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
#ifdef __CUDA_ARCH__
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
  emulated::api().mma_16816(1, d, a, b0, b1);
#endif
}

// 2^x on the special-function unit (flushes denormals; exact enough for softmax weights in [0, 1]).
__device__ __forceinline__ float ex2(float x) {
#ifdef __CUDA_ARCH__
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
#else
  return emulated::ex2(x);
#endif
}

// Two floats rounded into one register of two 16-bit values, `low` in the low half (the element with
// the smaller column index in every fragment above).
template <class T>
__device__ __forceinline__ unsigned pack2(float low, float high);
template <>
__device__ __forceinline__ unsigned pack2<f16>(float low, float high) {
#ifdef __CUDA_ARCH__
  unsigned r;
  asm("cvt.rn.f16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(high), "f"(low));
  return r;
#else
  return emulated::pack2(0, low, high);
#endif
}
template <>
__device__ __forceinline__ unsigned pack2<bf16>(float low, float high) {
#ifdef __CUDA_ARCH__
  unsigned r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(high), "f"(low));
  return r;
#else
  return emulated::pack2(1, low, high);
#endif
}

// Hides `pointer`'s value from the optimizer: it keeps one walking pointer in a register rather than one
// per derived address (nothing on the host).
template <class T>
__device__ __forceinline__ void opaque(const T*& pointer) {
#ifdef __CUDA_ARCH__
  asm volatile("" : "+l"(pointer));
#else
  (void)pointer;
#endif
}

// The CTA's dynamic shared memory.
__device__ __forceinline__ unsigned char* dynamic_shared() {
#ifdef __CUDA_ARCH__
  extern __shared__ __align__(128) unsigned char dynamic_shared_memory[];
  return dynamic_shared_memory;
#else
  return emulated::self().shared;
#endif
}

// A 32-bit store to shared memory at a byte address.
__device__ __forceinline__ void st_shared_32(unsigned address, unsigned value) {
#ifdef __CUDA_ARCH__
  asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(address), "r"(value));
#else
  emulated::api().store_shared(address, &value, 4);
#endif
}

// *address += value in global memory, the result unused (many CTAs add into one accumulator).
__device__ __forceinline__ void red_add(float* address, float value) {
#ifdef __CUDA_ARCH__
  asm volatile("red.global.add.f32 [%0], %1;\n" ::"l"(address), "f"(value) : "memory");
#else
  emulated::api().atomic_add_f32(address, value);
#endif
}

// The two 16-bit values of a packed register, low half first.
template <class T>
__device__ __forceinline__ void unpack2(unsigned packed, float& low, float& high) {
  T a, b;
  a.bits = static_cast<unsigned short>(packed & 0xffffu);
  b.bits = static_cast<unsigned short>(packed >> 16);
  low = to_float(a);
  high = to_float(b);
}

}  // namespace dilatron::ptx
