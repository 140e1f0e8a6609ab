// The C ABI: exceptions become status codes, messages stay per thread.
#include <dilatron/c_api.h>
#include <dilatron/dilatron.hpp>
#include <dilatron/kv_cache.hpp>
#include <dilatron/ring.hpp>
#include <dilatron/version.hpp>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "runtime/problem.hpp"
#include "runtime/ring/partition.hpp"

struct dilatron_attention {
  dilatron::DilatedAttention attention;
};

struct dilatron_kv_cache {
  dilatron::DilatedKVCache cache;
};

struct dilatron_ring {
  std::unique_ptr<dilatron::ring::Communicator> communicator;
};

namespace {

thread_local std::string last_error;

template <class F>
dilatron_status guarded(F&& f) {
  try {
    f();
    last_error.clear();
    return DILATRON_OK;
  } catch (const dilatron::Error& e) {
    last_error = e.what();
    switch (e.kind()) {
      case dilatron::ErrorKind::cuda: return DILATRON_ERROR_CUDA;
      case dilatron::ErrorKind::transport: return DILATRON_ERROR_TRANSPORT;
      case dilatron::ErrorKind::invalid: break;
    }
    return DILATRON_ERROR_INVALID;
  } catch (const std::exception& e) {
    last_error = e.what();
    return DILATRON_ERROR_INTERNAL;
  }
}

// A dilatron_dtype code; `what` names its owner in the error.
dilatron::DType dtype_of(int32_t code, const char* what) {
  if (code < DILATRON_F32 || code > DILATRON_F64) {
    throw dilatron::Error(std::string(what) + ": unknown dtype code " + std::to_string(code));
  }
  return static_cast<dilatron::DType>(code);
}

dilatron::TensorView view(const dilatron_tensor* t, const char* name) {
  if (!t) throw dilatron::Error(std::string(name) + " is NULL");
  dilatron::TensorView v;
  v.data = t->data;
  v.dtype = dtype_of(t->dtype, name);
  for (int i = 0; i < 4; ++i) v.shape[i] = t->shape[i], v.strides[i] = t->strides[i];
  return v;
}

dilatron::PackedSequences packing_of(const dilatron_packing* p) {
  if (!p) throw dilatron::Error("packing is NULL");
  return {p->cu_seqlens, p->sequences, p->max_seqlen};
}

// A host packing's offsets, copied once their count is known to be sane (the reference checks the rest).
std::vector<std::int32_t> host_offsets(const dilatron_packing* p) {
  const dilatron::PackedSequences packing = packing_of(p);
  if (!packing.cu_seqlens) throw dilatron::Error("cu_seqlens is NULL");
  dilatron::validate_sequence_count(packing.sequences);
  return {packing.cu_seqlens, packing.cu_seqlens + packing.sequences + 1};
}

// The caller's transport behind the Communicator seam: each step's messages go to its callback, and a
// nonzero return fails the rank with the callback's message.
class CallbackCommunicator final : public dilatron::ring::Communicator {
 public:
  CallbackCommunicator(int rank, int size, dilatron_exchange_fn exchange, void* user)
      : rank_(rank), size_(size), exchange_(exchange), user_(user) {}
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  void exchange(int step, std::span<const dilatron::ring::Message> sends,
                std::span<const dilatron::ring::Message> receives) override {
    const auto convert = [](std::span<const dilatron::ring::Message> messages) {
      std::vector<dilatron_message> out;
      for (const dilatron::ring::Message& m : messages) out.push_back({m.peer, m.data.data(), std::int64_t(m.data.size())});
      return out;
    };
    const std::vector<dilatron_message> s = convert(sends), r = convert(receives);
    char error[1024] = {};
    if (exchange_(user_, step, s.data(), std::int32_t(s.size()), r.data(), std::int32_t(r.size()), error, sizeof error) != 0) {
      error[sizeof error - 1] = '\0';
      throw dilatron::Error("step " + std::to_string(step) + ": the transport failed: " +
                                (error[0] ? std::string(error) : std::string("(it gave no message)")),
                            dilatron::ErrorKind::transport);
    }
  }

 private:
  int rank_, size_;
  dilatron_exchange_fn exchange_;
  void* user_;
};

dilatron::Config config_of(const dilatron_attention* a, const char* what) {
  if (!a) throw dilatron::Error(std::string(what) + ": NULL attention");
  return a->attention.config();
}

dilatron::DilatedKVCache& cache_of(dilatron_kv_cache* c, const char* what) {
  if (!c) throw dilatron::Error(std::string(what) + ": NULL cache");
  return c->cache;
}

}  // namespace

extern "C" {

dilatron_status dilatron_create(const int64_t* segments, const int64_t* dilations, int32_t branches, int32_t mode,
                                int32_t causal, double scale, dilatron_attention** out) {
  return guarded([&] {
    if (!out || (branches > 0 && (!segments || !dilations))) throw dilatron::Error("dilatron_create: NULL argument");
    if (branches < 1) throw dilatron::Error("dilatron_create: branches = " + std::to_string(branches) + ": need at least one");
    if (mode != DILATRON_LONGNET && mode != DILATRON_HEAD_GROUPS) {
      throw dilatron::Error("dilatron_create: unknown mode code " + std::to_string(mode));
    }
    dilatron::Config config;
    config.segments.assign(segments, segments + std::max(branches, 0));
    config.dilations.assign(dilations, dilations + std::max(branches, 0));
    config.mode = mode == DILATRON_LONGNET ? dilatron::Mode::longnet : dilatron::Mode::head_groups;
    config.causal = causal != 0;
    // Only 0 means the default: a NaN, infinite or negative scale is a caller's bug, named, never replaced.
    if (scale != 0) config.scale = scale;
    *out = new dilatron_attention{dilatron::DilatedAttention(std::move(config))};
  });
}

dilatron_status dilatron_forward(dilatron_attention* a, const dilatron_tensor* q, const dilatron_tensor* k,
                                 const dilatron_tensor* v, const dilatron_tensor* out, const dilatron_tensor* lse,
                                 void* stream) {
  return guarded([&] {
    if (!a) throw dilatron::Error("dilatron_forward: NULL attention");
    const dilatron::TensorView lse_view = lse ? view(lse, "lse") : dilatron::TensorView{};
    a->attention.forward(view(q, "q"), view(k, "k"), view(v, "v"), view(out, "out"), lse ? &lse_view : nullptr,
                         static_cast<dilatron::Stream>(stream));
  });
}

dilatron_status dilatron_reference_forward(const dilatron_attention* a, const dilatron_tensor* q,
                                           const dilatron_tensor* k, const dilatron_tensor* v,
                                           const dilatron_tensor* out, const dilatron_tensor* lse) {
  return guarded([&] {
    if (!a) throw dilatron::Error("dilatron_reference_forward: NULL attention");
    const dilatron::TensorView lse_view = lse ? view(lse, "lse") : dilatron::TensorView{};
    dilatron::reference_forward(a->attention.config(), view(q, "q"), view(k, "k"), view(v, "v"), view(out, "out"),
                                lse ? &lse_view : nullptr);
  });
}

dilatron_status dilatron_backward(dilatron_attention* a, const dilatron_tensor* q, const dilatron_tensor* k,
                                  const dilatron_tensor* v, const dilatron_tensor* out, const dilatron_tensor* lse,
                                  const dilatron_tensor* dout, const dilatron_tensor* dq, const dilatron_tensor* dk,
                                  const dilatron_tensor* dv, void* stream) {
  return guarded([&] {
    if (!a) throw dilatron::Error("dilatron_backward: NULL attention");
    a->attention.backward(view(q, "q"), view(k, "k"), view(v, "v"), view(out, "out"), view(lse, "lse"), view(dout, "dout"),
                          view(dq, "dq"), view(dk, "dk"), view(dv, "dv"), static_cast<dilatron::Stream>(stream));
  });
}

dilatron_status dilatron_reference_backward(const dilatron_attention* a, const dilatron_tensor* q, const dilatron_tensor* k,
                                            const dilatron_tensor* v, const dilatron_tensor* dout,
                                            const dilatron_tensor* dq, const dilatron_tensor* dk,
                                            const dilatron_tensor* dv) {
  return guarded([&] {
    if (!a) throw dilatron::Error("dilatron_reference_backward: NULL attention");
    dilatron::reference_backward(a->attention.config(), view(q, "q"), view(k, "k"), view(v, "v"), view(dout, "dout"),
                                 view(dq, "dq"), view(dk, "dk"), view(dv, "dv"));
  });
}

dilatron_status dilatron_forward_varlen(dilatron_attention* a, const dilatron_tensor* q, const dilatron_tensor* k,
                                        const dilatron_tensor* v, const dilatron_packing* packing,
                                        const dilatron_tensor* out, const dilatron_tensor* lse, void* stream) {
  return guarded([&] {
    if (!a) throw dilatron::Error("dilatron_forward_varlen: NULL attention");
    const dilatron::TensorView lse_view = lse ? view(lse, "lse") : dilatron::TensorView{};
    a->attention.forward(view(q, "q"), view(k, "k"), view(v, "v"), packing_of(packing), view(out, "out"),
                         lse ? &lse_view : nullptr, static_cast<dilatron::Stream>(stream));
  });
}

dilatron_status dilatron_backward_varlen(dilatron_attention* a, const dilatron_tensor* q, const dilatron_tensor* k,
                                         const dilatron_tensor* v, const dilatron_tensor* out, const dilatron_tensor* lse,
                                         const dilatron_tensor* dout, const dilatron_tensor* dq, const dilatron_tensor* dk,
                                         const dilatron_tensor* dv, const dilatron_packing* packing, void* stream) {
  return guarded([&] {
    if (!a) throw dilatron::Error("dilatron_backward_varlen: NULL attention");
    a->attention.backward(view(q, "q"), view(k, "k"), view(v, "v"), view(out, "out"), view(lse, "lse"), view(dout, "dout"),
                          view(dq, "dq"), view(dk, "dk"), view(dv, "dv"), packing_of(packing),
                          static_cast<dilatron::Stream>(stream));
  });
}

dilatron_status dilatron_validate_cu_seqlens(const int32_t* cu_seqlens, int64_t count, int64_t total) {
  return guarded([&] {
    if (!cu_seqlens) throw dilatron::Error("cu_seqlens is NULL");
    dilatron::validate_cu_seqlens(cu_seqlens, count, total);
  });
}

dilatron_status dilatron_reference_forward_varlen(const dilatron_attention* a, const dilatron_tensor* q,
                                                  const dilatron_tensor* k, const dilatron_tensor* v,
                                                  const dilatron_packing* packing, const dilatron_tensor* out,
                                                  const dilatron_tensor* lse) {
  return guarded([&] {
    if (!a) throw dilatron::Error("dilatron_reference_forward_varlen: NULL attention");
    const dilatron::TensorView lse_view = lse ? view(lse, "lse") : dilatron::TensorView{};
    dilatron::reference_forward_varlen(a->attention.config(), view(q, "q"), view(k, "k"), view(v, "v"),
                                       host_offsets(packing), view(out, "out"), lse ? &lse_view : nullptr);
  });
}

dilatron_status dilatron_reference_backward_varlen(const dilatron_attention* a, const dilatron_tensor* q,
                                                   const dilatron_tensor* k, const dilatron_tensor* v,
                                                   const dilatron_packing* packing, const dilatron_tensor* dout,
                                                   const dilatron_tensor* dq, const dilatron_tensor* dk,
                                                   const dilatron_tensor* dv) {
  return guarded([&] {
    if (!a) throw dilatron::Error("dilatron_reference_backward_varlen: NULL attention");
    dilatron::reference_backward_varlen(a->attention.config(), view(q, "q"), view(k, "k"), view(v, "v"),
                                        host_offsets(packing), view(dout, "dout"), view(dq, "dq"), view(dk, "dk"),
                                        view(dv, "dv"));
  });
}

dilatron_status dilatron_kv_cache_create(const dilatron_attention* a, int64_t batch, int64_t heads, int64_t kv_heads,
                                         int64_t head_dim, int32_t dtype, int64_t max_positions, int32_t on_device,
                                         dilatron_kv_cache** out) {
  return guarded([&] {
    if (!out) throw dilatron::Error("dilatron_kv_cache_create: NULL out");
    if (max_positions < 0) throw dilatron::Error("max_positions = " + std::to_string(max_positions) + ": 0 (no limit) or more");
    dilatron::KVCacheShape shape{batch, heads, kv_heads, head_dim, dtype_of(dtype, "the cache")};
    if (max_positions > 0) shape.max_positions = max_positions;
    shape.on_device = on_device != 0;
    *out = new dilatron_kv_cache{dilatron::DilatedKVCache(config_of(a, "dilatron_kv_cache_create"), shape)};
  });
}

dilatron_status dilatron_kv_cache_decode(dilatron_kv_cache* c, const dilatron_tensor* q, const dilatron_tensor* k,
                                         const dilatron_tensor* v, const dilatron_tensor* out, const dilatron_tensor* lse,
                                         void* stream) {
  return guarded([&] {
    dilatron::DilatedKVCache& cache = cache_of(c, "dilatron_kv_cache_decode");
    const dilatron::TensorView lse_view = lse ? view(lse, "lse") : dilatron::TensorView{};
    cache.decode(view(q, "q"), view(k, "k"), view(v, "v"), view(out, "out"), lse ? &lse_view : nullptr,
                 static_cast<dilatron::Stream>(stream));
  });
}

dilatron_status dilatron_kv_cache_reset(dilatron_kv_cache* c, int64_t row, void* stream) {
  return guarded([&] {
    dilatron::DilatedKVCache& cache = cache_of(c, "dilatron_kv_cache_reset");
    const auto s = static_cast<dilatron::Stream>(stream);
    row == -1 ? cache.reset_all(s) : cache.reset(row, s);
  });
}

dilatron_status dilatron_kv_cache_fork(dilatron_kv_cache* c, int64_t from, int64_t to, void* stream) {
  return guarded([&] { cache_of(c, "dilatron_kv_cache_fork").fork(from, to, static_cast<dilatron::Stream>(stream)); });
}

dilatron_status dilatron_kv_cache_rewind(dilatron_kv_cache* c, int64_t row, int64_t position, void* stream) {
  return guarded([&] {
    cache_of(c, "dilatron_kv_cache_rewind").rewind(row, position, static_cast<dilatron::Stream>(stream));
  });
}

dilatron_status dilatron_kv_cache_position(const dilatron_kv_cache* c, int64_t row, int64_t* position) {
  return guarded([&] {
    if (!position) throw dilatron::Error("dilatron_kv_cache_position: NULL position");
    *position = cache_of(const_cast<dilatron_kv_cache*>(c), "dilatron_kv_cache_position").position(row);
  });
}

dilatron_status dilatron_kv_cache_bytes(const dilatron_kv_cache* c, int64_t* bytes) {
  return guarded([&] {
    if (!bytes) throw dilatron::Error("dilatron_kv_cache_bytes: NULL bytes");
    *bytes = int64_t(cache_of(const_cast<dilatron_kv_cache*>(c), "dilatron_kv_cache_bytes").bytes());
  });
}

dilatron_status dilatron_kv_cache_bytes_per_row(const dilatron_attention* a, int64_t heads, int64_t kv_heads,
                                                int64_t head_dim, int32_t dtype, int64_t* bytes) {
  return guarded([&] {
    if (!bytes) throw dilatron::Error("dilatron_kv_cache_bytes_per_row: NULL bytes");
    *bytes = int64_t(dilatron::DilatedKVCache::bytes_per_row(config_of(a, "dilatron_kv_cache_bytes_per_row"),
                                                             {1, heads, kv_heads, head_dim, dtype_of(dtype, "the cache")}));
  });
}

void dilatron_kv_cache_destroy(dilatron_kv_cache* c) { delete c; }

dilatron_status dilatron_ring_reference_forward(const dilatron_attention* a, int32_t ranks, const dilatron_tensor* q,
                                                const dilatron_tensor* k, const dilatron_tensor* v,
                                                const dilatron_tensor* out, const dilatron_tensor* lse) {
  return guarded([&] {
    if (!a) throw dilatron::Error("dilatron_ring_reference_forward: NULL attention");
    const dilatron::TensorView lse_view = lse ? view(lse, "lse") : dilatron::TensorView{};
    dilatron::ring_reference_forward(a->attention.config(), ranks, view(q, "q"), view(k, "k"), view(v, "v"),
                                     view(out, "out"), lse ? &lse_view : nullptr);
  });
}

void dilatron_destroy(dilatron_attention* a) { delete a; }

dilatron_status dilatron_ring_shard(int64_t seq_len, int32_t ranks, int32_t rank, int64_t* begin, int64_t* end) {
  return guarded([&] {
    if (!begin || !end) throw dilatron::Error("dilatron_ring_shard: NULL begin or end");
    if (ranks < 1 || seq_len < ranks || rank < 0 || rank >= ranks) {
      throw dilatron::Error("dilatron_ring_shard: rank " + std::to_string(rank) + " of " + std::to_string(ranks) +
                            " over " + std::to_string(seq_len) + " rows: needs 0 <= rank < ranks <= seq_len");
    }
    const dilatron::ring::RowRange rows = dilatron::ring::shard(seq_len, ranks, rank);
    *begin = rows.begin, *end = rows.end;
  });
}

dilatron_status dilatron_ring_from_callback(int32_t rank, int32_t size, dilatron_exchange_fn exchange, void* user,
                                            dilatron_ring** out) {
  return guarded([&] {
    if (!out || !exchange) throw dilatron::Error("dilatron_ring_from_callback: NULL exchange or out");
    if (size < 1 || rank < 0 || rank >= size) {
      throw dilatron::Error("dilatron_ring_from_callback: rank " + std::to_string(rank) + " of " + std::to_string(size) +
                            ": needs 0 <= rank < size");
    }
    *out = new dilatron_ring{std::make_unique<CallbackCommunicator>(rank, size, exchange, user)};
  });
}

dilatron_status dilatron_ring_host_forward(const dilatron_attention* a, dilatron_ring* ring, int64_t seq_len,
                                           const dilatron_tensor* q, const dilatron_tensor* k, const dilatron_tensor* v,
                                           const dilatron_tensor* out, const dilatron_tensor* lse) {
  return guarded([&] {
    if (!a || !ring) throw dilatron::Error("dilatron_ring_host_forward: NULL attention or ring");
    const dilatron::TensorView lse_view = lse ? view(lse, "lse") : dilatron::TensorView{};
    dilatron::RingDilatedAttention(a->attention.config(), *ring->communicator)
        .reference_forward(seq_len, view(q, "q"), view(k, "k"), view(v, "v"), view(out, "out"), lse ? &lse_view : nullptr);
  });
}

dilatron_status dilatron_ring_host_backward(const dilatron_attention* a, dilatron_ring* ring, int64_t seq_len,
                                            const dilatron_tensor* q, const dilatron_tensor* k, const dilatron_tensor* v,
                                            const dilatron_tensor* dout, const dilatron_tensor* dq,
                                            const dilatron_tensor* dk, const dilatron_tensor* dv) {
  return guarded([&] {
    if (!a || !ring) throw dilatron::Error("dilatron_ring_host_backward: NULL attention or ring");
    dilatron::RingDilatedAttention(a->attention.config(), *ring->communicator)
        .reference_backward(seq_len, view(q, "q"), view(k, "k"), view(v, "v"), view(dout, "dout"), view(dq, "dq"),
                            view(dk, "dk"), view(dv, "dv"));
  });
}

dilatron_status dilatron_ring_unique_id(unsigned char id[DILATRON_RING_ID_BYTES]) {
  return guarded([&] {
    if (!id) throw dilatron::Error("dilatron_ring_unique_id: NULL id");
    const dilatron::ring::NcclId made = dilatron::ring::nccl_unique_id();
    std::memcpy(id, made.data(), made.size());
  });
}

dilatron_status dilatron_ring_from_unique_id(const unsigned char id[DILATRON_RING_ID_BYTES], int32_t rank, int32_t size,
                                             dilatron_ring** out) {
  return guarded([&] {
    if (!id || !out) throw dilatron::Error("dilatron_ring_from_unique_id: NULL id or out");
    dilatron::ring::NcclId nccl;
    std::memcpy(nccl.data(), id, nccl.size());
    *out = new dilatron_ring{dilatron::ring::nccl_communicator(nccl, rank, size)};
  });
}

dilatron_status dilatron_ring_from_nccl(void* nccl_comm, dilatron_ring** out) {
  return guarded([&] {
    if (!out) throw dilatron::Error("dilatron_ring_from_nccl: NULL out");
    *out = new dilatron_ring{dilatron::ring::nccl_communicator(nccl_comm)};
  });
}

dilatron_status dilatron_ring_from_launcher(const char* id_file, dilatron_ring** out) {
  return guarded([&] {
    if (!out || !id_file) throw dilatron::Error("dilatron_ring_from_launcher: NULL argument");
    *out = new dilatron_ring{dilatron::ring::nccl_communicator_from_launcher(id_file)};
  });
}

dilatron_status dilatron_ring_forward(const dilatron_attention* a, dilatron_ring* ring, int64_t seq_len,
                                      const dilatron_tensor* q, const dilatron_tensor* k, const dilatron_tensor* v,
                                      const dilatron_tensor* out, const dilatron_tensor* lse, void* stream) {
  return guarded([&] {
    if (!a || !ring) throw dilatron::Error("dilatron_ring_forward: NULL attention or ring");
    const dilatron::TensorView lse_view = lse ? view(lse, "lse") : dilatron::TensorView{};
    // Plans are cheap to build and kernels are cached process-wide, so a per-call object costs little.
    dilatron::RingDilatedAttention(a->attention.config(), *ring->communicator)
        .forward(seq_len, view(q, "q"), view(k, "k"), view(v, "v"), view(out, "out"), lse ? &lse_view : nullptr,
                 static_cast<dilatron::Stream>(stream));
  });
}

dilatron_status dilatron_ring_backward(const dilatron_attention* a, dilatron_ring* ring, int64_t seq_len,
                                       const dilatron_tensor* q, const dilatron_tensor* k, const dilatron_tensor* v,
                                       const dilatron_tensor* dout, const dilatron_tensor* dq, const dilatron_tensor* dk,
                                       const dilatron_tensor* dv, void* stream) {
  return guarded([&] {
    if (!a || !ring) throw dilatron::Error("dilatron_ring_backward: NULL attention or ring");
    dilatron::RingDilatedAttention(a->attention.config(), *ring->communicator)
        .backward(seq_len, view(q, "q"), view(k, "k"), view(v, "v"), view(dout, "dout"), view(dq, "dq"), view(dk, "dk"),
                  view(dv, "dv"), static_cast<dilatron::Stream>(stream));
  });
}

dilatron_status dilatron_ring_backward_with_output(const dilatron_attention* a, dilatron_ring* ring, int64_t seq_len,
                                                   const dilatron_tensor* q, const dilatron_tensor* k,
                                                   const dilatron_tensor* v, const dilatron_tensor* out,
                                                   const dilatron_tensor* lse, const dilatron_tensor* dout,
                                                   const dilatron_tensor* dq, const dilatron_tensor* dk,
                                                   const dilatron_tensor* dv, void* stream) {
  return guarded([&] {
    if (!a || !ring) throw dilatron::Error("dilatron_ring_backward_with_output: NULL attention or ring");
    dilatron::RingDilatedAttention(a->attention.config(), *ring->communicator)
        .backward(seq_len, view(q, "q"), view(k, "k"), view(v, "v"), view(out, "out"), view(lse, "lse"),
                  view(dout, "dout"), view(dq, "dq"), view(dk, "dk"), view(dv, "dv"),
                  static_cast<dilatron::Stream>(stream));
  });
}

void dilatron_ring_destroy(dilatron_ring* ring) { delete ring; }

const char* dilatron_last_error(void) { return last_error.c_str(); }

const char* dilatron_version(void) { return dilatron::kVersion; }

}  // extern "C"
