// What the emulated device offers kernels compiled for the host: the calls host_prelude.cuh makes, in
// plain C types, since the emulator (emulator/) and each emulated kernel object are compiled apart.
#pragma once

// One CUDA thread as the kernel sees it.
struct DilatronEmulatorThread {
  unsigned thread[3], block[3], block_dim[3], grid_dim[3];
  unsigned char* shared;  // the CTA's dynamic shared memory; shared addresses are offsets into it
};

// Every call acts for the calling CUDA thread. `site` names a barrier or warp-collective call site (its
// source line): threads of one CTA must meet at the same site.
struct DilatronEmulatorApi {
  const DilatronEmulatorThread* (*self)(void);
  void (*barrier)(int site);  // __syncthreads
  // Warp collectives: each lane in `mask` (all 32 in these kernels) gives `bytes` from `mine`; once all
  // have, each receives the 32 contributions in lane order in `all`.
  void (*warp_exchange)(int site, unsigned mask, const void* mine, unsigned bytes, void* all);
  unsigned (*shared_address)(const void* pointer);
  void (*store_shared)(unsigned address, const void* bytes, unsigned size);  // bytes null: zeros
  void (*cp_async_16)(unsigned shared, const void* global, int valid);
  void (*cp_async_commit)(void);
  void (*cp_async_wait)(int pending);
  void (*ldmatrix_x4)(unsigned address, unsigned* r, int trans);
  void (*mma_16816)(int bf16, float* d, const unsigned* a, unsigned b0, unsigned b1);
  float (*ex2)(float x);
  float (*half_to_float)(unsigned short bits);
  unsigned short (*float_to_16)(int bf16, float x);  // round to nearest even
  float (*atomic_add_f32)(float* address, float value);
};
