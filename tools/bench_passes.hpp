// What `dilatron bench` times: random tensors of one shape on this GPU, one pass of DilatedAttention on
// them and its FLOPs, and the ring's rows: RingDilatedAttention over the Local transport (P ranks on this one GPU, each a thread
// with its own stream and its shards of the same tensors, as `run --ranks` runs them) against
// DilatedAttention on the whole, both timed by the host's clock from the start of a pass to the return
// of its last rank (each rank returns once its stream is done), median of the timed runs.
#pragma once

#include <dilatron/config.hpp>
#include <dilatron/dilatron.hpp>
#include <dilatron/tensor.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "runtime/device_buffer.hpp"

namespace dilatron::cli {

struct BenchShape {
  std::int64_t batch, seq_len, heads, kv_heads;
  int head_dim;
  DType dtype;
  bool backward;  // forward + backward
};

// q, k, v, out and LSE (with `backward` also dout, dq, dk and dv) on this GPU, inputs random.
class BenchTensors {
 public:
  explicit BenchTensors(const BenchShape& shape);
  TensorView q, k, v, out, lse, dout, dq, dk, dv;

 private:
  std::vector<std::unique_ptr<DeviceBuffer>> buffers_;
};

struct Measurement {
  std::string name;
  double ms, tflops;
  std::size_t memory_bytes;
  double host_us;  // host time of one call with its plan built (NaN for the ring's rows, timed by the host)
};

// One DilatedAttention pass over `t`: forward, then with `backward` the backward.
void dilated_pass(DilatedAttention& attention, const BenchTensors& t, bool backward);

// Free memory of the current device.
std::size_t free_memory();

// 4 * D per attended pair for a forward pass, 3.5 times that for forward + backward (the backward's five
// matrix products to the forward's two), times B.
double pass_flops(const Config& config, const BenchShape& shape);

// A packed batch of sequences of `lengths` rows (the shape's seq_len is their sum, its batch 1) three
// ways, each timed as a DilatedAttention row is (CUDA events, L2 flushed, median) and rated by the
// packing's useful FLOPs: one packed call (PackedSequences, max_seqlen given); one call per sequence on
// its rows of the same tensors; one call on the sequences padded to the longest (B = sequences, N = the
// longest; the padding's rows attended too, as a padded batch does).
std::vector<Measurement> packed_measurements(const Config& config, const BenchShape& shape,
                                             const std::vector<std::int64_t>& lengths, int warmup, int iters);

constexpr int kMaxBenchRanks = 64;

// DilatedAttention timed by the host's clock, then the ring with 1, 2, 4, ... ranks up to `ranks`
// (and `ranks` itself). A ring pass is forward(), or forward() then backward() (which computes the
// forward again: what a training step with the ring costs).
std::vector<Measurement> ring_measurements(const Config& config, const BenchShape& shape, int ranks, int warmup, int iters);

}  // namespace dilatron::cli
