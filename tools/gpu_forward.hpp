// Host tensors through the GPU forward (and backward): upload, DilatedAttention::forward (and
// ::backward), download. float32 and float64 inputs run in bfloat16 on the GPU (the kernels take 16-bit inputs) and
// come back as float32.
#pragma once

#include <dilatron/config.hpp>
#include <dilatron/tensor.hpp>

#include <cstdint>
#include <vector>

namespace dilatron::cli {

// The gradients of a run: dout [B,N,H,D] in, dq [B,N,H,D] and dk, dv [B,N,Hkv,D] out (host tensors; dq
// in q's dtype, dk and dv in k's).
struct HostGradients {
  TensorView dout, dq, dk, dv;
};

// q/k/v in host memory (contiguous); out in q's dtype and lse (optional, float32 [B,H,N,1]) on the
// host too; with `gradients`, the backward pass as well; with `cu_seqlens` (host offsets, validated),
// the tensors are a packed batch. Throws dilatron::Error when there is no GPU, naming what is missing.
void gpu_forward(const Config& config, const TensorView& q, const TensorView& k, const TensorView& v,
                 const TensorView& out, const TensorView* lse, const HostGradients* gradients = nullptr,
                 const std::vector<std::int32_t>* cu_seqlens = nullptr);

// The same split across `ranks` ranks on this one GPU: each rank a thread with its own stream, its
// shards of the uploaded tensors, and the Local transport between them; with `gradients`, each rank's
// RingDilatedAttention::backward after its forward.
void gpu_ring_forward(const Config& config, int ranks, const TensorView& q, const TensorView& k, const TensorView& v,
                      const TensorView& out, const TensorView* lse, const HostGradients* gradients = nullptr);

}  // namespace dilatron::cli
