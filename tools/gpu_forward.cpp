#include "tools/gpu_forward.hpp"

#include <dilatron/dilatron.hpp>

#include <vector>

#include "common/dtype.hpp"
#include "runtime/device_buffer.hpp"
#include "runtime/driver.hpp"

namespace dilatron::cli {
namespace {

DType device_dtype(DType host) { return host == DType::f32 ? DType::bf16 : host; }

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

}  // namespace

void gpu_forward(const Config& config, const TensorView& q, const TensorView& k, const TensorView& v,
                 const TensorView& out, const TensorView* lse) {
  DilatedAttention attention(config);
  const auto dq = upload(q), dk = upload(k), dv = upload(v);
  const DType dtype = device_dtype(q.dtype);
  DeviceBuffer d_out(std::size_t(out.numel()) * dtype_size(dtype));
  std::unique_ptr<DeviceBuffer> d_lse;
  TensorView lse_view;
  if (lse) {
    d_lse = std::make_unique<DeviceBuffer>(std::size_t(lse->numel()) * sizeof(float));
    lse_view = TensorView::contiguous(d_lse->get(), DType::f32, lse->shape);
  }
  attention.forward(TensorView::contiguous(dq->get(), dtype, q.shape), TensorView::contiguous(dk->get(), dtype, k.shape),
                    TensorView::contiguous(dv->get(), dtype, v.shape), TensorView::contiguous(d_out.get(), dtype, out.shape),
                    lse ? &lse_view : nullptr, nullptr);
  DILATRON_CU(cuCtxSynchronize());
  std::vector<std::uint16_t> result(std::size_t(out.numel()));
  d_out.download(result.data());
  for (std::int64_t i = 0; i < out.numel(); ++i) store_element(out.data, out.dtype, i, load_element(result.data(), dtype, i));
  if (lse) d_lse->download(lse->data);
}

}  // namespace dilatron::cli
