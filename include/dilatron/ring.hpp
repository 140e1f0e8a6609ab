// Dilated attention split across P ranks: rank p holds rows [p*N/P, (p+1)*N/P) of Q, K, V and O (the
// first N % P ranks one row more) and the ranks exchange only the selected K/V rows of segments that
// span several of them. Results equal one device's up to rounding (docs/ARCHITECTURE.md, "The ring").
#pragma once

#include <dilatron/config.hpp>
#include <dilatron/tensor.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

struct CUstream_st;  // the driver API's CUstream is CUstream_st*

namespace dilatron {

using Stream = CUstream_st*;  // as in dilatron.hpp
namespace ring {

// One message: to `peer` (a send) or from `peer` (a receive). A receive's span is the buffer to fill;
// its size is known from the plan and must equal the size sent.
struct Message {
  int peer = 0;
  std::span<std::byte> data;
};

// The wire under the ring: Host (threads of one process), Local (ranks on one GPU), NCCL, or your own.
class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // All of this rank's sends and receives of one step, as one group: returns when every one has
  // completed. Several messages between the same two ranks in one step meet in the order both list
  // them, as NCCL's grouped sends and receives do. A failed transport or a peer that does not answer within the timeout throws
  // dilatron::Error naming the step and the peer; it never hangs.
  virtual void exchange(int step, std::span<const Message> sends, std::span<const Message> receives) = 0;
  // Called when this rank fails, so the peers waiting for it stop now rather than at their timeout.
  virtual void abort(const std::string& reason) { (void)reason; }

  // Stream-ordered steps, which the GPU ring uses so that step s + 1's transfer runs while step s's
  // kernels do. enqueue(step, ...) starts a step once the work queued on `wait_for` so far (the kernels
  // that pack its sends, and those still reading the buffers it receives into) is done; make_wait(stream)
  // makes work queued on `stream` from now on wait for every step enqueued; wait() returns when all of
  // them completed, or throws as exchange() does. The defaults are blocking: enqueue drains `wait_for`
  // (null: nothing to wait for) and calls exchange(), make_wait and wait have nothing left to do. A
  // transport that can overlap (NCCL) overrides all three; the executor is the same for every transport.
  virtual void enqueue(int step, std::span<const Message> sends, std::span<const Message> receives,
                       dilatron::Stream wait_for);
  virtual void make_wait(dilatron::Stream stream) { (void)stream; }
  virtual void wait() {}
};

// Transports for real GPUs, one rank per GPU, over NCCL (libnccl is loaded at run time;
// DILATRON_NCCL_LIBRARY overrides where). Every wait is bounded by DILATRON_RING_TIMEOUT_S: on a timeout
// the NCCL communicator is aborted and an error names the step and the peers.
//
// Over the caller's communicator (an ncclComm_t, passed as a pointer so this header needs no NCCL
// header); it is not destroyed here, but a timeout aborts it.
std::unique_ptr<Communicator> nccl_communicator(void* nccl_comm);
// Creates one: rank and size from the launcher (torchrun's RANK and WORLD_SIZE, else mpirun's
// OMPI_COMM_WORLD_*, else PMI_*, else srun's SLURM_*); rank 0 publishes an ncclUniqueId in `id_file` (a
// fresh path on a filesystem every rank sees), the others wait for it.
std::unique_ptr<Communicator> nccl_communicator_from_launcher(const std::string& id_file);
// Or carry the id yourself (a process group's broadcast, say): one rank makes it, every rank of the
// clique joins with it on the current context's device.
using NcclId = std::array<std::byte, 128>;
NcclId nccl_unique_id();
std::unique_ptr<Communicator> nccl_communicator(const NcclId& id, int rank, int size);

}  // namespace ring

class RingDilatedAttention {
 public:
  // Validates the config. The communicator is not owned and must outlive this object.
  RingDilatedAttention(Config config, ring::Communicator& communicator);
  ~RingDilatedAttention();
  RingDilatedAttention(RingDilatedAttention&&) noexcept;
  RingDilatedAttention& operator=(RingDilatedAttention&&) noexcept;

  // This rank's part of the forward pass in float64 on host memory (any dtype): q [B,rows,H,D], k/v
  // [B,rows,Hkv,D], out [B,rows,H,D], lse float32 [B,H,rows,1] or null, where rows is this rank's shard
  // of a sequence of `seq_len` rows. Every rank of the communicator calls it with the same seq_len.
  void reference_forward(std::int64_t seq_len, const TensorView& q, const TensorView& k, const TensorView& v,
                         const TensorView& out, const TensorView* lse = nullptr);

  // This rank's gradients in float64 on host memory: dout and dq [B,rows,H,D], dk and dv [B,rows,Hkv,D]
  // (any dtype each). Runs the forward ring again, then sends the dK and dV of travelling blocks back to
  // their owners in float32. Equal to reference_backward() up to that rounding.
  void reference_backward(std::int64_t seq_len, const TensorView& q, const TensorView& k, const TensorView& v,
                          const TensorView& dout, const TensorView& dq, const TensorView& dk, const TensorView& dv);

  // The same on device memory of the current context, on DilatedAttention's tiled kernels (a rank's
  // own rows, and each block received read in place): q/k/v and out float16 or bfloat16 (one dtype),
  // head dim 64, 96, 128 or 256, lse float32 [B,H,rows,1] (a slice of a whole LSE is fine) or null;
  // q/k/v and out with innermost stride 1, the other strides multiples of 8 elements and data 16-byte
  // aligned. One rank holding the whole sequence is DilatedAttention::forward itself. Kernels run on
  // `stream`; the communicator's messages wrap device pointers. Returns when this rank's output is
  // written.
  void forward(std::int64_t seq_len, const TensorView& q, const TensorView& k, const TensorView& v,
               const TensorView& out, const TensorView* lse = nullptr, Stream stream = nullptr);

  // The gradients on device memory: dout and dq like q, dk and dv like k, all in q's dtype and in the
  // layout forward() asks of out; head dim 64, 96 or 128. Runs the forward ring again (it needs no O or
  // LSE from the caller), then returns the dK and dV of travelling blocks to their owners in float32, as
  // reference_backward() does. One rank holding the whole sequence runs DilatedAttention's forward
  // (into O and LSE of its own) and backward. Returns when this rank's gradients are written.
  void backward(std::int64_t seq_len, const TensorView& q, const TensorView& k, const TensorView& v,
                const TensorView& dout, const TensorView& dq, const TensorView& dk, const TensorView& dv,
                Stream stream = nullptr);

  // The same given this rank's forward() results for these inputs, as a training step keeps them: out
  // like forward()'s, lse float32 [B,H,rows,1] with innermost stride 1 (a slice of a whole LSE is fine).
  // The blocks travel as before, but nothing is attended to on their way: the forward's attention is
  // not run again. One rank holding the whole sequence is DilatedAttention::backward itself.
  void backward(std::int64_t seq_len, const TensorView& q, const TensorView& k, const TensorView& v,
                const TensorView& out, const TensorView& lse, const TensorView& dout, const TensorView& dq,
                const TensorView& dk, const TensorView& dv, Stream stream = nullptr);

  const Config& config() const noexcept;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Called as an in-process ring advances: ring steps done so far, of all there are.
using RingProgress = std::function<void(std::int64_t done, std::int64_t total)>;

// The whole ring on one machine: splits full host tensors [B,N,...] into `ranks` shards and runs every
// rank's plan, all ranks stepped together on a pool of the machine's threads (however many ranks), and
// writes out (and lse [B,H,N,1]) whole. Equal to reference_forward() up to rounding.
void ring_reference_forward(const Config& config, int ranks, const TensorView& q, const TensorView& k,
                            const TensorView& v, const TensorView& out, const TensorView* lse = nullptr,
                            const RingProgress& progress = {});

// ring_reference_forward's backward: the gradients of whole host tensors (travelling dK and dV in
// float64 for float64 inputs, float32 otherwise).
void ring_reference_backward(const Config& config, int ranks, const TensorView& q, const TensorView& k,
                             const TensorView& v, const TensorView& dout, const TensorView& dq, const TensorView& dk,
                             const TensorView& dv, const RingProgress& progress = {});

}  // namespace dilatron
