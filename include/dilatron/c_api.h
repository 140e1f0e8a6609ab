/* The C ABI over dilatron::DilatedAttention, for other languages (ctypes, cffi, Rust, ...).
 * Every call returns a status; on failure dilatron_last_error() gives this thread's last message. */
#ifndef DILATRON_C_API_H
#define DILATRON_C_API_H

#include <stdint.h>

#if defined(__GNUC__)
#define DILATRON_API __attribute__((visibility("default")))
#else
#define DILATRON_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
  DILATRON_OK = 0,
  DILATRON_ERROR_INVALID = 1, /* bad configuration, shape, dtype or layout */
  DILATRON_ERROR_CUDA = 2,    /* a driver or NVRTC call failed, or no GPU */
  DILATRON_ERROR_INTERNAL = 3,
  DILATRON_ERROR_TRANSPORT = 4 /* a ring's transport failed (a dilatron_exchange_fn returned nonzero) */
} dilatron_status;

/* F64: the host reference only (dilatron_reference_*). */
typedef enum { DILATRON_F32 = 0, DILATRON_F16 = 1, DILATRON_BF16 = 2, DILATRON_F64 = 3 } dilatron_dtype;
typedef enum { DILATRON_LONGNET = 0, DILATRON_HEAD_GROUPS = 1 } dilatron_mode;

typedef struct {
  void* data;
  int32_t dtype;      /* dilatron_dtype */
  int64_t shape[4];   /* [B, N, heads, D]; LSE: [B, H, N, 1] */
  int64_t strides[4]; /* in elements */
} dilatron_tensor;

typedef struct dilatron_attention dilatron_attention;
/* One rank's end of the ring's transport (NCCL, or the caller's own): the sequence split across ranks. */
typedef struct dilatron_ring dilatron_ring;

/* One message of a ring step as a caller's transport sees it: to `peer` (a send), or from `peer` (a
 * receive: fill exactly `bytes` bytes at `data`). */
typedef struct {
  int32_t peer;
  void* data;
  int64_t bytes;
} dilatron_message;

/* A transport the caller provides (MPI, torch.distributed, sockets, ...): called on every rank once per
 * exchange step with all of this rank's sends and receives of the step. Returns 0 once every send was
 * taken and every receive filled; otherwise nonzero, after writing a NUL-terminated message of at most
 * error_size bytes into `error`, which fails this rank's call with that message. Several messages
 * between two ranks in one step meet in the order both list them (tag them by their index among the
 * pair's messages of the step). Its waits must be bounded: a peer that fails stops calling it. Host
 * memory for dilatron_ring_host_*; device memory for dilatron_ring_forward and _backward, whose work
 * before the step is complete when it is called. */
typedef int32_t (*dilatron_exchange_fn)(void* user, int32_t step, const dilatron_message* sends, int32_t send_count,
                                        const dilatron_message* receives, int32_t receive_count, char* error,
                                        int64_t error_size);

/* scale 0 selects 1/sqrt(D); any other scale must be finite and > 0 (NaN, infinities and negative values
   return DILATRON_ERROR_INVALID). branches >= 1; every segment and dilation >= 1. */
DILATRON_API dilatron_status dilatron_create(const int64_t* segments, const int64_t* dilations, int32_t branches, int32_t mode,
                                int32_t causal, double scale, dilatron_attention** out);
/* lse may be NULL; stream is a CUstream (NULL: the default stream). Calls on one attention from several
 * threads or streams at once are safe; without lse each takes its own stream-ordered workspace
 * (DilatedAttention::forward in dilatron.hpp). */
DILATRON_API dilatron_status dilatron_forward(dilatron_attention* attention, const dilatron_tensor* q, const dilatron_tensor* k,
                                 const dilatron_tensor* v, const dilatron_tensor* out, const dilatron_tensor* lse,
                                 void* stream);
/* The float64 host reference on host memory (any dtype), for checks. */
DILATRON_API dilatron_status dilatron_reference_forward(const dilatron_attention* attention, const dilatron_tensor* q,
                                           const dilatron_tensor* k, const dilatron_tensor* v,
                                           const dilatron_tensor* out, const dilatron_tensor* lse);
/* The same on host memory with the sequence split across `ranks` ranks (in this process, stepped
 * together on its threads, each holding N/ranks rows and exchanging only the dilated rows spanning
 * segments need): equal to dilatron_reference_forward up to rounding. */
DILATRON_API dilatron_status dilatron_ring_reference_forward(const dilatron_attention* attention, int32_t ranks,
                                                const dilatron_tensor* q, const dilatron_tensor* k,
                                                const dilatron_tensor* v, const dilatron_tensor* out,
                                                const dilatron_tensor* lse);
/* The gradients of dilatron_forward on device memory: q, k, v, out and lse as the forward gave them
 * (lse required), dout [B, N, H, D]; writes dq [B, N, H, D] and dk, dv [B, N, Hkv, D], all in q's dtype
 * (DilatedAttention::backward in dilatron.hpp; head dim 64, 96 or 128). */
DILATRON_API dilatron_status dilatron_backward(dilatron_attention* attention, const dilatron_tensor* q, const dilatron_tensor* k,
                                  const dilatron_tensor* v, const dilatron_tensor* out, const dilatron_tensor* lse,
                                  const dilatron_tensor* dout, const dilatron_tensor* dq, const dilatron_tensor* dk,
                                  const dilatron_tensor* dv, void* stream);
/* The float64 host reference's gradients on host memory (any dtype each); O and LSE are recomputed. */
DILATRON_API dilatron_status dilatron_reference_backward(const dilatron_attention* attention, const dilatron_tensor* q,
                                            const dilatron_tensor* k, const dilatron_tensor* v,
                                            const dilatron_tensor* dout, const dilatron_tensor* dq,
                                            const dilatron_tensor* dk, const dilatron_tensor* dv);
/* A packed batch of variable-length sequences (docs/SEMANTICS.md, "Packed sequences"): tensors with
 * B = 1 whose N rows hold the sequences one after another, sequence i in rows
 * [cu_seqlens[i], cu_seqlens[i + 1]). cu_seqlens: sequences + 1 int32 offsets, 0 first, never
 * decreasing, N last; device memory for the GPU calls (only kernels read it: a call never synchronizes,
 * and a sequence with offsets out of order or past N is attended by nothing), host memory for the
 * reference (checked in full). max_seqlen: the longest sequence, or 0 when unknown (GPU grid sizing
 * only; PackedSequences in dilatron.hpp). 1 <= sequences <= 65535. */
typedef struct {
  const int32_t* cu_seqlens;
  int64_t sequences;
  int64_t max_seqlen;
} dilatron_packing;

/* dilatron_forward and dilatron_backward over a packing: q [1, N, H, D], k/v [1, N, Hkv, D], lse
 * [1, H, N, 1]; equal to running every sequence alone. */
DILATRON_API dilatron_status dilatron_forward_varlen(dilatron_attention* attention, const dilatron_tensor* q,
                                                     const dilatron_tensor* k, const dilatron_tensor* v,
                                                     const dilatron_packing* packing, const dilatron_tensor* out,
                                                     const dilatron_tensor* lse, void* stream);
DILATRON_API dilatron_status dilatron_backward_varlen(dilatron_attention* attention, const dilatron_tensor* q,
                                                      const dilatron_tensor* k, const dilatron_tensor* v,
                                                      const dilatron_tensor* out, const dilatron_tensor* lse,
                                                      const dilatron_tensor* dout, const dilatron_tensor* dq,
                                                      const dilatron_tensor* dk, const dilatron_tensor* dv,
                                                      const dilatron_packing* packing, void* stream);
/* Checks `count` offsets in host memory against a packing of `total` rows (0 first, never decreasing,
 * `total` last): DILATRON_ERROR_INVALID naming the first bad entry otherwise. */
DILATRON_API dilatron_status dilatron_validate_cu_seqlens(const int32_t* cu_seqlens, int64_t count, int64_t total);
/* The float64 host reference over a packing in host memory. */
DILATRON_API dilatron_status dilatron_reference_forward_varlen(const dilatron_attention* attention,
                                                               const dilatron_tensor* q, const dilatron_tensor* k,
                                                               const dilatron_tensor* v,
                                                               const dilatron_packing* packing,
                                                               const dilatron_tensor* out, const dilatron_tensor* lse);
DILATRON_API dilatron_status dilatron_reference_backward_varlen(const dilatron_attention* attention,
                                                                const dilatron_tensor* q, const dilatron_tensor* k,
                                                                const dilatron_tensor* v,
                                                                const dilatron_packing* packing,
                                                                const dilatron_tensor* dout, const dilatron_tensor* dq,
                                                                const dilatron_tensor* dk, const dilatron_tensor* dv);
DILATRON_API void dilatron_destroy(dilatron_attention* attention);

/* Generation: a bounded KV cache for one layer (DilatedKVCache in kv_cache.hpp; docs/SEMANTICS.md,
 * "Decoding") with the attention's configuration, which must be causal. on_device 0: host memory (q, k,
 * v, out and lse are host tensors, the float64 reference arithmetic); 1: device memory of the current
 * context and the decode kernels (float16 or bfloat16), each call on `stream` (a CUstream; NULL: the
 * default stream; ignored on the host). max_positions 0: no limit. */
typedef struct dilatron_kv_cache dilatron_kv_cache;
DILATRON_API dilatron_status dilatron_kv_cache_create(const dilatron_attention* attention, int64_t batch, int64_t heads,
                                                      int64_t kv_heads, int64_t head_dim, int32_t dtype,
                                                      int64_t max_positions, int32_t on_device, dilatron_kv_cache** out);
/* q [B, n, H, D], k and v [B, n, Hkv, D] in the cache's dtype: n new rows per batch row; writes out
 * [B, n, H, D] and, when not NULL, lse float32 [B, H, n, 1]; on an error nothing has changed. */
DILATRON_API dilatron_status dilatron_kv_cache_decode(dilatron_kv_cache* cache, const dilatron_tensor* q,
                                                      const dilatron_tensor* k, const dilatron_tensor* v,
                                                      const dilatron_tensor* out, const dilatron_tensor* lse,
                                                      void* stream);
/* row -1: every row starts again at position 0. */
DILATRON_API dilatron_status dilatron_kv_cache_reset(dilatron_kv_cache* cache, int64_t row, void* stream);
DILATRON_API dilatron_status dilatron_kv_cache_fork(dilatron_kv_cache* cache, int64_t from, int64_t to, void* stream);
DILATRON_API dilatron_status dilatron_kv_cache_rewind(dilatron_kv_cache* cache, int64_t row, int64_t position,
                                                      void* stream);
DILATRON_API dilatron_status dilatron_kv_cache_position(const dilatron_kv_cache* cache, int64_t row, int64_t* position);
/* What the cache holds, and what one batch row's takes for a configuration (no cache needed). */
DILATRON_API dilatron_status dilatron_kv_cache_bytes(const dilatron_kv_cache* cache, int64_t* bytes);
DILATRON_API dilatron_status dilatron_kv_cache_bytes_per_row(const dilatron_attention* attention, int64_t heads,
                                                             int64_t kv_heads, int64_t head_dim, int32_t dtype,
                                                             int64_t* bytes);
DILATRON_API void dilatron_kv_cache_destroy(dilatron_kv_cache* cache);

/* Rows [*begin, *end) of a sequence of seq_len rows that `rank` of `ranks` holds: every rank seq_len /
 * ranks rows, the first seq_len % ranks one more (1 <= ranks <= seq_len). */
DILATRON_API dilatron_status dilatron_ring_shard(int64_t seq_len, int32_t ranks, int32_t rank, int64_t* begin, int64_t* end);
/* A ring rank of `size` over the caller's transport; `user` is passed back to every call. */
DILATRON_API dilatron_status dilatron_ring_from_callback(int32_t rank, int32_t size, dilatron_exchange_fn exchange,
                                                         void* user, dilatron_ring** out);
/* This rank's part of the float64 host ring on host memory (any dtype), over any transport: q/k/v/out
 * its shards [B, rows, heads, D] of a sequence of seq_len rows (dilatron_ring_shard), lse float32
 * [B, H, rows, 1] or NULL. Equal to dilatron_reference_forward's rows up to rounding. */
DILATRON_API dilatron_status dilatron_ring_host_forward(const dilatron_attention* attention, dilatron_ring* ring,
                                                        int64_t seq_len, const dilatron_tensor* q,
                                                        const dilatron_tensor* k, const dilatron_tensor* v,
                                                        const dilatron_tensor* out, const dilatron_tensor* lse);
/* Its gradients on host memory: dout and dq like q, dk and dv like k (any dtype each); the forward runs
 * again inside. Travelling dK and dV are float64 for float64 inputs, else float32. */
DILATRON_API dilatron_status dilatron_ring_host_backward(const dilatron_attention* attention, dilatron_ring* ring,
                                                         int64_t seq_len, const dilatron_tensor* q,
                                                         const dilatron_tensor* k, const dilatron_tensor* v,
                                                         const dilatron_tensor* dout, const dilatron_tensor* dq,
                                                         const dilatron_tensor* dk, const dilatron_tensor* dv);
/* NCCL without a launcher: one rank makes the 128-byte id, the caller carries it to the others (a process
 * group's broadcast), and every rank joins with it on the current context's device. */
#define DILATRON_RING_ID_BYTES 128
DILATRON_API dilatron_status dilatron_ring_unique_id(unsigned char id[DILATRON_RING_ID_BYTES]);
DILATRON_API dilatron_status dilatron_ring_from_unique_id(const unsigned char id[DILATRON_RING_ID_BYTES], int32_t rank,
                                                          int32_t size, dilatron_ring** out);
/* A ring rank over the caller's ncclComm_t (passed as void*; dilatron_ring_destroy does not destroy it,
 * but a timeout, DILATRON_RING_TIMEOUT_S, aborts it). */
DILATRON_API dilatron_status dilatron_ring_from_nccl(void* nccl_comm, dilatron_ring** out);
/* A ring rank whose NCCL communicator is created here: rank and size from the launcher's variables
 * (torchrun, mpirun, PMI, srun); rank 0 publishes the NCCL id in `id_file`, a fresh path every rank can read. */
DILATRON_API dilatron_status dilatron_ring_from_launcher(const char* id_file, dilatron_ring** out);
/* This rank's part of the forward pass on device memory: q/k/v/out are its shards [B, rows, heads, D]
 * of a sequence of seq_len rows (float16 or bfloat16), lse float32 [B, H, rows, 1] or NULL; stream is
 * a CUstream (NULL: the default stream). Every rank calls it with the same seq_len. */
DILATRON_API dilatron_status dilatron_ring_forward(const dilatron_attention* attention, dilatron_ring* ring,
                                      int64_t seq_len, const dilatron_tensor* q, const dilatron_tensor* k,
                                      const dilatron_tensor* v, const dilatron_tensor* out,
                                      const dilatron_tensor* lse, void* stream);
/* This rank's gradients on device memory: q/k/v as for dilatron_ring_forward, dout and dq like q, dk and
 * dv like k, all in q's dtype. The forward ring runs again inside (no O or LSE needed); the dK and dV of
 * blocks other ranks attended to come back to this rank in float32. Every rank calls it. */
DILATRON_API dilatron_status dilatron_ring_backward(const dilatron_attention* attention, dilatron_ring* ring,
                                       int64_t seq_len, const dilatron_tensor* q, const dilatron_tensor* k,
                                       const dilatron_tensor* v, const dilatron_tensor* dout,
                                       const dilatron_tensor* dq, const dilatron_tensor* dk,
                                       const dilatron_tensor* dv, void* stream);
/* The same given this rank's dilatron_ring_forward results for these inputs (out like q; lse float32
 * [B,H,rows,1] with innermost stride 1, e.g. a slice of a whole LSE): the forward's attention is not run
 * again, the blocks still travel. out and lse are required. */
DILATRON_API dilatron_status dilatron_ring_backward_with_output(
    const dilatron_attention* attention, dilatron_ring* ring, int64_t seq_len, const dilatron_tensor* q,
    const dilatron_tensor* k, const dilatron_tensor* v, const dilatron_tensor* out, const dilatron_tensor* lse,
    const dilatron_tensor* dout, const dilatron_tensor* dq, const dilatron_tensor* dk, const dilatron_tensor* dv,
    void* stream);
DILATRON_API void dilatron_ring_destroy(dilatron_ring* ring);
DILATRON_API const char* dilatron_last_error(void);
DILATRON_API const char* dilatron_version(void);

#ifdef __cplusplus
}
#endif

#endif /* DILATRON_C_API_H */
