// The C++ API: dilated attention on device tensors, specialized at run time.
//
//   dilatron::Config config{{2048, 4096, 8192}, {1, 2, 4}};
//   dilatron::DilatedAttention attention(config);
//   attention.forward(q, k, v, out, &lse, stream);   // TensorViews of device memory
//
// The first call with a new shape signature (B, N, H, Hkv, D, dtype) builds a plan: the kernels it
// needs come from the kernel cache (compiled by NVRTC on a miss) and are loaded into the current
// context. Later calls with that signature only fill kernel arguments and launch on `stream`.
#pragma once

#include <dilatron/config.hpp>
#include <dilatron/error.hpp>
#include <dilatron/reference.hpp>
#include <dilatron/tensor.hpp>

#include <cstdint>
#include <memory>

struct CUstream_st;  // the driver API's CUstream is CUstream_st*

namespace dilatron {

using Stream = CUstream_st*;

// A packed batch of variable-length sequences (docs/SEMANTICS.md, "Packed sequences"): q [1,total,H,D],
// k/v [1,total,Hkv,D], sequence i in rows [cu_seqlens[i], cu_seqlens[i + 1]), each attended alone.
struct PackedSequences {
  // Device memory of the current context: sequences + 1 int32 offsets, 0 first, never decreasing, total
  // last. Only the kernels read them, so a call never synchronizes; the host cannot check them. The
  // kernels attend nothing for a sequence whose offsets are out of order or past `total` and never
  // touch memory outside the tensors, but what that sequence's rows hold afterwards is unspecified
  // (check offsets that come from outside with validate_cu_seqlens on the host first).
  const std::int32_t* cu_seqlens = nullptr;
  std::int64_t sequences = 0;  // 1 to 65535
  // The longest sequence's rows, or 0 when unknown. It sizes the grid only: 0 launches as many tiles
  // per sequence as `total` rows need (correct, but CTAs for rows no sequence has). A value below the
  // longest sequence leaves that sequence's later rows unwritten.
  std::int64_t max_seqlen = 0;
};

// Checks offsets in host memory (`count` of them) against a packing of `total` rows: at least two, 0
// first, never decreasing, `total` last (empty sequences are allowed). Throws dilatron::Error naming the
// first bad entry.
void validate_cu_seqlens(const std::int32_t* cu_seqlens, std::int64_t count, std::int64_t total);

class DilatedAttention {
 public:
  // Validates the config (throws dilatron::Error naming the bad value).
  explicit DilatedAttention(Config config);
  ~DilatedAttention();
  DilatedAttention(DilatedAttention&&) noexcept;
  DilatedAttention& operator=(DilatedAttention&&) noexcept;

  // q [B,N,H,D], k/v [B,N,Hkv,D], out [B,N,H,D]: device memory, float16 or bfloat16 (out in q's dtype),
  // D of 64, 96, 128 or 256, innermost stride 1, data and strides 16-byte aligned, no negative stride. lse, when
  // given, is float32 [B,H,N,1] contiguous. Neither out nor lse may overlap q, k, v or the other. Runs
  // on `stream` (nullptr: the default stream) in the current context, or in device 0's primary context
  // when none is current. Asynchronous like a kernel launch.
  // Safe to call concurrently, from several threads and on several streams, on one object: plans are
  // read-only once built and no call shares scratch memory with another. Without `lse`, a call takes a
  // stream-ordered workspace of B*H*N floats from the current memory pool of the stream's device
  // (cuMemAllocAsync), freed on `stream` (cuMemFreeAsync) once its kernels are queued.
  void forward(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
               const TensorView* lse = nullptr, Stream stream = nullptr);

  // The gradients of forward(): given the forward's q, k, v, its out and lse (required), and the
  // upstream gradient dout [B,N,H,D], writes dq [B,N,H,D] and dk, dv [B,N,Hkv,D], all in q's dtype on
  // the device, exact up to the kernels' rounding (docs/SEMANTICS.md, "Gradients"). D of 64, 96 or 128.
  // The gradients may not overlap any input or each other. Takes a stream-ordered workspace of fp32
  // accumulators (B*N*(H + 2*Hkv)*D floats, plus B*H*N) like forward() does. Asynchronous; safe to call
  // concurrently like forward().
  void backward(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                const TensorView& lse, const TensorView& dout, const TensorView& dq, const TensorView& dk,
                const TensorView& dv, Stream stream = nullptr);

  // forward() and backward() over a packed batch: the same tensors with B = 1 and N = total rows, lse
  // [1,H,total,1]; results equal running every sequence alone. Nothing is written when a check fails.
  void forward(const TensorView& q, const TensorView& k, const TensorView& v, const PackedSequences& packing,
               const TensorView& out, const TensorView* lse = nullptr, Stream stream = nullptr);
  void backward(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                const TensorView& lse, const TensorView& dout, const TensorView& dq, const TensorView& dk,
                const TensorView& dv, const PackedSequences& packing, Stream stream = nullptr);

  const Config& config() const noexcept;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace dilatron
