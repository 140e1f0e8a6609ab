"""dilatron.torch.DilatedKVCache: generation's bounded KV cache for one layer (docs/PYTHON.md,
"Generation")."""
import ctypes
import functools
import operator
from typing import List, Optional, Sequence

import torch
from torch import Tensor

from . import _library as lib
from ._library import InvalidArgument
from ._torch_common import _DTYPES, _attention, _call, _int64_list


class _no_device:
    """The CPU's stand-in for torch.cuda.device(...) in a with statement."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class DilatedKVCache:
    """A bounded KV cache for generating with one causal dilated attention layer (docs/SEMANTICS.md,
    "Decoding"): decode(q, k, v) appends n new rows per batch row, q [B, n, H, D] and k, v [B, n, Hkv, D]
    in the cache's dtype, and returns their O [B, n, H, D] (with return_lse also the float32 LSE
    [B, H, n]), equal to the last rows of the causal dilated_attention over everything decoded so far. A
    prompt is a decode of many rows. It keeps only what later rows can read, each branch's current
    segment, so nbytes is fixed by the configuration whatever the context. Batch rows sit at their own
    positions: reset(row) starts one again, fork(src, dst) copies one (beam search), rewind(row,
    position) takes back rows (speculative decoding) as far as the cache still holds them.

    num_heads: the query heads H (default kv_heads). max_positions: the longest context a row may reach
    (None: no limit). device: "cpu" decodes with the float64 host reference in any dtype; a CUDA device
    keeps the cache in that GPU's memory and decodes with Dilatron's kernels on the current stream
    (float16 or bfloat16, head_dim a multiple of 32). Decoding is inference: the results carry no
    gradient.
    """

    def __init__(self, segments: Sequence[int], dilations: Sequence[int], *, batch: int, kv_heads: int, head_dim: int,
                 dtype: torch.dtype = torch.float32, device="cpu", mode: str = "longnet", scale: Optional[float] = None,
                 num_heads: Optional[int] = None, max_positions: Optional[int] = None):
        device = torch.device(device)
        if device.type not in ("cpu", "cuda"):
            raise InvalidArgument(f"DilatedKVCache on {device}: expected a CPU or CUDA device")
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        if dtype not in _DTYPES:
            raise InvalidArgument(f"dtype {dtype} is not supported: expected float16, bfloat16, float32 or float64")
        if mode not in ("longnet", "head_groups"):
            raise InvalidArgument(f"mode {mode!r}: expected 'longnet' or 'head_groups'")
        self.segments, self.dilations = _int64_list("segments", segments), _int64_list("dilations", dilations)
        self.dtype, self.device, self.mode, self.scale = dtype, device, mode, scale
        self.batch, self.kv_heads, self.head_dim = batch, kv_heads, head_dim
        self.num_heads = kv_heads if num_heads is None else num_heads
        attention = _attention((tuple(self.segments), tuple(self.dilations), mode, True,
                                float(scale) if scale is not None else 0.0))
        with torch.cuda.device(device) if device.type == "cuda" else _no_device():
            self._cache = lib.KVCache(attention, batch, self.num_heads, kv_heads, head_dim, _DTYPES[dtype],
                                      0 if max_positions is None else operator.index(max_positions),
                                      device.type == "cuda")

    def decode(self, q: Tensor, k: Tensor, v: Tensor, return_lse: bool = False):
        for name, t in (("q", q), ("k", k), ("v", v)):
            if not isinstance(t, Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
            if t.device != self.device:
                raise InvalidArgument(f"{name} is on {t.device} but the cache on {self.device}")
            if t.dim() != 4:
                raise InvalidArgument(f"{name} has shape {tuple(t.shape)}: expected 4 dims [B, n, heads, D]")
        q, k, v = (t.detach() for t in (q, k, v))
        out = torch.empty(q.shape, dtype=q.dtype, device=self.device)
        lse = torch.empty((q.shape[0], q.shape[2], q.shape[1]), dtype=torch.float32, device=self.device)
        with self._on_device():
            _call(functools.partial(lib.library().dilatron_kv_cache_decode, self._cache.handle), q, k, v, out, lse,
                  stream=self._stream())
        return (out, lse) if return_lse else out

    def reset(self, row: Optional[int] = None):
        with self._on_device():
            lib.check(lib.library().dilatron_kv_cache_reset(self._cache.handle, -1 if row is None else operator.index(row),
                                                            self._stream_pointer()))

    def fork(self, src: int, dst: int):
        with self._on_device():
            lib.check(lib.library().dilatron_kv_cache_fork(self._cache.handle, operator.index(src), operator.index(dst),
                                                           self._stream_pointer()))

    def rewind(self, row: int, position: int):
        with self._on_device():
            lib.check(lib.library().dilatron_kv_cache_rewind(self._cache.handle, operator.index(row),
                                                             operator.index(position), self._stream_pointer()))

    def _on_device(self):
        return torch.cuda.device(self.device) if self.device.type == "cuda" else _no_device()

    def _stream(self):
        return torch.cuda.current_stream(self.device).cuda_stream if self.device.type == "cuda" else 0

    def _stream_pointer(self):
        return ctypes.c_void_p(self._stream())

    @property
    def positions(self) -> List[int]:
        """Rows decoded so far, per batch row."""
        return [self._cache.position(b) for b in range(self.batch)]

    @property
    def nbytes(self) -> int:
        """The bytes the cache holds (all batch rows): the same at any context length."""
        return self._cache.bytes()
