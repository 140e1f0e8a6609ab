#include "tools/gpu_forward.hpp"

#include <dilatron/dilatron.hpp>
#include <dilatron/ring.hpp>

#include <algorithm>
#include <vector>

#include "common/dtype.hpp"
#include "common/parallel.hpp"
#include "runtime/device_buffer.hpp"
#include "runtime/driver.hpp"
#include "runtime/ring/device_sync.hpp"
#include "runtime/ring/local_communicator.hpp"

namespace dilatron::cli {
namespace {

DType device_dtype(DType host) { return host == DType::f32 || host == DType::f64 ? DType::bf16 : host; }

// Uploads a contiguous host tensor in the GPU's dtype.
std::unique_ptr<DeviceBuffer> upload(const TensorView& t) {
  const DType target = device_dtype(t.dtype);
  std::vector<std::uint16_t> converted;
  const void* source = t.data;
  if (target != t.dtype) {
    converted.resize(std::size_t(t.numel()));
    for (std::int64_t i = 0; i < t.numel(); ++i) store_element(converted.data(), target, i, load_element(t.data, t.dtype, i));
    source = converted.data();
  }
  auto buffer = std::make_unique<DeviceBuffer>(std::size_t(t.numel()) * dtype_size(target));
  buffer->upload(source);
  return buffer;
}

// Copies a device result in `dtype` into the host tensor `out` (its own dtype).
void download(const DeviceBuffer& buffer, DType dtype, const TensorView& out) {
  std::vector<std::uint16_t> result(std::size_t(out.numel()));
  buffer.download(result.data());
  for (std::int64_t i = 0; i < out.numel(); ++i) store_element(out.data, out.dtype, i, load_element(result.data(), dtype, i));
}

}  // namespace

void gpu_forward(const Config& config, const TensorView& q, const TensorView& k, const TensorView& v,
                 const TensorView& out, const TensorView* lse, const HostGradients* gradients,
                 const std::vector<std::int32_t>* cu_seqlens) {
  DilatedAttention attention(config);
  std::unique_ptr<DeviceBuffer> offsets;
  PackedSequences packing;
  if (cu_seqlens) {
    offsets = std::make_unique<DeviceBuffer>(cu_seqlens->size() * sizeof(std::int32_t));
    offsets->upload(cu_seqlens->data());
    std::int32_t longest = 0;
    for (std::size_t i = 1; i < cu_seqlens->size(); ++i) longest = std::max(longest, (*cu_seqlens)[i] - (*cu_seqlens)[i - 1]);
    packing = {static_cast<const std::int32_t*>(offsets->get()), std::int64_t(cu_seqlens->size()) - 1, longest};
  }
  const auto q_d = upload(q), k_d = upload(k), v_d = upload(v);
  const DType dtype = device_dtype(q.dtype);
  const auto on_device = [&](const DeviceBuffer& b, const Shape4& shape) { return TensorView::contiguous(b.get(), dtype, shape); };
  DeviceBuffer out_d(std::size_t(out.numel()) * dtype_size(dtype));
  const TensorView qv = on_device(*q_d, q.shape), kv = on_device(*k_d, k.shape), vv = on_device(*v_d, v.shape),
                   ov = on_device(out_d, out.shape);
  // The backward needs the forward's LSE even when the caller does not.
  std::unique_ptr<DeviceBuffer> lse_d;
  TensorView lse_view;
  if (lse || gradients) {
    const Shape4 shape{q.shape[0], q.shape[2], q.shape[1], 1};
    lse_d = std::make_unique<DeviceBuffer>(std::size_t(shape[0] * shape[1] * shape[2]) * sizeof(float));
    lse_view = TensorView::contiguous(lse_d->get(), DType::f32, shape);
  }
  if (cu_seqlens) attention.forward(qv, kv, vv, packing, ov, lse_d ? &lse_view : nullptr);
  else attention.forward(qv, kv, vv, ov, lse_d ? &lse_view : nullptr);
  std::unique_ptr<DeviceBuffer> dout_d, dq_d, dk_d, dv_d;
  if (gradients) {
    dout_d = upload(gradients->dout);
    dq_d = std::make_unique<DeviceBuffer>(out_d.bytes());
    dk_d = std::make_unique<DeviceBuffer>(std::size_t(k.numel()) * dtype_size(dtype));
    dv_d = std::make_unique<DeviceBuffer>(dk_d->bytes());
    const TensorView dout = on_device(*dout_d, q.shape), dq = on_device(*dq_d, q.shape), dk = on_device(*dk_d, k.shape),
                     dv = on_device(*dv_d, k.shape);
    if (cu_seqlens) attention.backward(qv, kv, vv, ov, lse_view, dout, dq, dk, dv, packing);
    else attention.backward(qv, kv, vv, ov, lse_view, dout, dq, dk, dv);
  }
  DILATRON_CU(cuCtxSynchronize());
  download(out_d, dtype, out);
  if (lse) lse_d->download(lse->data);
  if (gradients) {
    download(*dq_d, dtype, gradients->dq);
    download(*dk_d, dtype, gradients->dk);
    download(*dv_d, dtype, gradients->dv);
  }
}

void gpu_ring_forward(const Config& config, int ranks, const TensorView& q, const TensorView& k, const TensorView& v,
                      const TensorView& out, const TensorView* lse, const HostGradients* gradients) {
  const CUcontext context = driver::current_context();
  const DType dtype = device_dtype(q.dtype);
  const auto q_d = upload(q), k_d = upload(k), v_d = upload(v);
  const auto out_d = std::make_unique<DeviceBuffer>(std::size_t(out.numel()) * dtype_size(dtype));
  const std::int64_t seq_len = q.shape[1];
  std::unique_ptr<DeviceBuffer> lse_d, dout_d, dq_d, dk_d, dv_d;
  if (lse) lse_d = std::make_unique<DeviceBuffer>(std::size_t(lse->numel()) * sizeof(float));
  if (gradients) {
    dout_d = upload(gradients->dout);
    dq_d = std::make_unique<DeviceBuffer>(out_d->bytes());
    dk_d = std::make_unique<DeviceBuffer>(std::size_t(k.numel()) * dtype_size(dtype));
    dv_d = std::make_unique<DeviceBuffer>(dk_d->bytes());
  }
  auto comms = ring::LocalCommunicator::group(ranks);
  parallel_for(ranks, unsigned(ranks), [&] {
    return [&](std::int64_t rank) {
      const ring::ContextScope scope(context);  // rank threads start with no current context
      const ring::RowRange rows = ring::shard(seq_len, ranks, int(rank));
      // This rank's rows of a whole device tensor.
      const auto shard = [&](const std::unique_ptr<DeviceBuffer>& b, const Shape4& shape) {
        return ring::rows_of(TensorView::contiguous(b->get(), dtype, shape), rows, 1);
      };
      const TensorView qs = shard(q_d, q.shape), ks = shard(k_d, k.shape), vs = shard(v_d, v.shape);
      const TensorView lse_shard =
          lse ? ring::rows_of(TensorView::contiguous(lse_d->get(), DType::f32, lse->shape), rows, 2) : TensorView{};
      ring::LocalCommunicator& comm = *comms[std::size_t(rank)];
      RingDilatedAttention attention(config, comm);
      attention.forward(seq_len, qs, ks, vs, shard(out_d, out.shape), lse ? &lse_shard : nullptr, comm.stream());
      // With an LSE the backward takes the forward's O and LSE; without, it runs the forward again.
      if (gradients && lse) {
        attention.backward(seq_len, qs, ks, vs, shard(out_d, out.shape), lse_shard, shard(dout_d, q.shape),
                           shard(dq_d, q.shape), shard(dk_d, k.shape), shard(dv_d, k.shape), comm.stream());
      } else if (gradients) {
        attention.backward(seq_len, qs, ks, vs, shard(dout_d, q.shape), shard(dq_d, q.shape), shard(dk_d, k.shape),
                           shard(dv_d, k.shape), comm.stream());
      }
    };
  });
  DILATRON_CU(cuCtxSynchronize());
  download(*out_d, dtype, out);
  if (lse) lse_d->download(lse->data);
  if (gradients) {
    download(*dq_d, dtype, gradients->dq);
    download(*dk_d, dtype, gradients->dk);
    download(*dv_d, dtype, gradients->dv);
  }
}

}  // namespace dilatron::cli
