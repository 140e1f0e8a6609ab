// The thin PTX layer the attention kernels stand on (sm_80 and newer): shared-memory addresses,
// cp.async with zero fill, ldmatrix, ex2, mma.sync m16n8k16 with fp32 accumulation, and packing to 16-bit pairs.
//
// Fragment layouts (lane = 4 * group + t, group = lane / 4, t = lane % 4) for mma.m16n8k16:
//   A 16x16 (row-major): a0 = (group, 2t..2t+1), a1 = (group + 8, 2t..), a2 = (group, 2t + 8..), a3 = (group + 8, 2t + 8..)
//   B 16x8  (k x n):     b0 = (k 2t..2t+1, n group), b1 = (k 2t + 8.., n group)
//   C 16x8  (fp32):      c0, c1 = (group, 2t..2t+1), c2, c3 = (group + 8, 2t..2t+1)
// ldmatrix .x4: lanes 8i..8i+7 give the row addresses of matrix i; each lane receives (row group,
// cols 2t..2t+1) of every matrix, or with .trans (rows 2t..2t+1, col group).
#pragma once

#include "dilatron/types.cuh"

namespace dilatron::ptx {

__device__ __forceinline__ unsigned shared_address(const void* pointer) {
  unsigned address;
  asm("{ .reg .u64 a; cvta.to.shared.u64 a, %1; cvt.u32.u64 %0, a; }" : "=r"(address) : "l"(pointer));
  return address;
}

// blockIdx.x, .y or .z read afresh (volatile): values derived from it are recomputed where they are used
// instead of being kept in registers from an earlier use.
template <int DIM>
__device__ __forceinline__ unsigned block_index() {
  unsigned i;
  if (DIM == 0) asm volatile("mov.u32 %0, %%ctaid.x;" : "=r"(i));
  else if (DIM == 1) asm volatile("mov.u32 %0, %%ctaid.y;" : "=r"(i));
  else asm volatile("mov.u32 %0, %%ctaid.z;" : "=r"(i));
  return i;
}

// Copies 16 bytes global -> shared asynchronously; when !valid, writes 16 zero bytes and reads nothing.
__device__ __forceinline__ void cp_async_16(unsigned shared, const void* global, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(shared), "l"(global), "r"(valid ? 16 : 0));
}
// Sixteen zero bytes into shared memory: rows past the end of a tile's data, so they hold no stale values.
__device__ __forceinline__ void st_shared_zero_16(unsigned shared) {
  asm volatile("st.shared.v4.u32 [%0], {%1, %1, %1, %1};\n" ::"r"(shared), "r"(0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
// Waits until at most N committed groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void ldmatrix_x4(unsigned address, unsigned (&r)[4]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(address));
}
__device__ __forceinline__ void ldmatrix_x4_trans(unsigned address, unsigned (&r)[4]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(address));
}

// d += a * b for one 16x8x16 tile.
template <class T>
__device__ __forceinline__ void mma_16816(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1);
template <>
__device__ __forceinline__ void mma_16816<f16>(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <>
__device__ __forceinline__ void mma_16816<bf16>(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// 2^x on the special-function unit (flushes denormals; exact enough for softmax weights in [0, 1]).
__device__ __forceinline__ float ex2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// Two floats rounded into one register of two 16-bit values, `low` in the low half (the element with
// the smaller column index in every fragment above).
template <class T>
__device__ __forceinline__ unsigned pack2(float low, float high);
template <>
__device__ __forceinline__ unsigned pack2<f16>(float low, float high) {
  unsigned r;
  asm("cvt.rn.f16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(high), "f"(low));
  return r;
}
template <>
__device__ __forceinline__ unsigned pack2<bf16>(float low, float high) {
  unsigned r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(high), "f"(low));
  return r;
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
