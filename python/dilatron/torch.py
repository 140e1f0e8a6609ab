"""Dilated attention as a differentiable PyTorch op.

    out = dilated_attention(q, k, v, segments=[2048, 4096], dilations=[1, 2])
    out = dilated_attention_varlen(q, k, v, cu_seqlens, [2048, 4096], [1, 2])  # packed [total, H, D]
    out = ring_dilated_attention(q_shard, k_shard, v_shard, [2048, 4096], [1, 2], group=group)  # across ranks

q [B, N, H, D], k and v [B, N, Hkv, D] (H a multiple of Hkv), one dtype. CUDA tensors run Dilatron's
GPU kernels on torch.cuda.current_stream() without copies (float16 or bfloat16, head dim 64, 96 or 128
for the backward); CPU tensors run the float64 host reference, forward and backward, in any of float64,
float32, float16 and bfloat16. The semantics are docs/SEMANTICS.md's.

Where the installed PyTorch has torch.library.custom_op (2.4 and later), the forward and backward are
registered as the custom ops dilatron::forward and dilatron::backward with fake implementations, so
torch.compile traces through them; autograd is the torch.autograd.Function around them either way.
"""
import functools
import math
import operator
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from . import _library as lib
from . import _torch_ring
from ._library import InvalidArgument
from ._torch_common import _DTYPES, _attention, _call, _int64_list, _stream
from ._torch_decode import DilatedKVCache

__all__ = ["dilated_attention", "dilated_attention_varlen", "ring_dilated_attention", "ring_shard", "DilatedAttention",
           "MultiheadDilatedAttention", "DilatedKVCache", "preset", "list_presets", "custom_op_registered"]


# Published configurations: name -> (segments, dilations, mode, what it is).
_PRESETS = {
    "longnet": ([2048, 4096, 8192, 16384, 32768], [1, 2, 4, 6, 12], "longnet",
                "LongNet's base model (Ding et al. 2023, section 4.1): five branches, torchscale's head offsets"),
    "longnet-head-groups": ([2048, 4096, 8192, 16384, 32768], [1, 2, 4, 6, 12], "head_groups",
                            "the same branches with heads split into one group per branch, as "
                            "dilated-attention-pytorch runs them"),
}


def list_presets():
    """{name: description} of the configurations preset() knows."""
    return {name: p[3] for name, p in _PRESETS.items()}


def preset(name):
    """The keyword arguments of a published configuration: dilated_attention(q, k, v, **preset("longnet"))."""
    if name not in _PRESETS:
        raise ValueError(f"unknown preset {name!r}: expected one of {', '.join(sorted(_PRESETS))}")
    segments, dilations, mode, _ = _PRESETS[name]
    return {"segments": list(segments), "dilations": list(dilations), "mode": mode}


# --- calls into the library ------------------------------------------------------------------------

def _forward_impl(q, k, v, segments, dilations, mode, causal, scale):
    a = _attention((tuple(segments), tuple(dilations), mode, causal, scale))
    out = torch.empty_like(q, memory_format=torch.contiguous_format)
    lse = torch.empty((q.shape[0], q.shape[2], q.shape[1]), dtype=torch.float32, device=q.device)
    library = lib.library()
    if q.is_cuda:
        with torch.cuda.device(q.device):
            _call(functools.partial(library.dilatron_forward, a.handle), q, k, v, out, lse, stream=_stream(q))
    else:
        _call(functools.partial(library.dilatron_reference_forward, a.handle), q, k, v, out, lse)
    return out, lse


def _backward_impl(q, k, v, out, lse, dout, segments, dilations, mode, causal, scale):
    a = _attention((tuple(segments), tuple(dilations), mode, causal, scale))
    dq = torch.empty_like(q, memory_format=torch.contiguous_format)
    dk = torch.empty_like(k, memory_format=torch.contiguous_format)
    dv = torch.empty_like(v, memory_format=torch.contiguous_format)
    library = lib.library()
    if q.is_cuda:
        with torch.cuda.device(q.device):
            _call(functools.partial(library.dilatron_backward, a.handle), q, k, v, out, lse, dout, dq, dk, dv,
                  stream=_stream(q))
    else:  # the reference recomputes O and LSE itself
        _call(functools.partial(library.dilatron_reference_backward, a.handle), q, k, v, dout, dq, dk, dv)
    return dq, dk, dv


def _packing(cu_seqlens, max_seqlen):
    return lib.Packing(cu_seqlens.data_ptr(), cu_seqlens.numel() - 1, max_seqlen)


def _forward_varlen_impl(q, k, v, cu_seqlens, segments, dilations, mode, causal, scale, max_seqlen, check_offsets):
    if check_offsets or not q.is_cuda:
        _check_offset_values(q, cu_seqlens, max_seqlen)
    # The library's packed tensors are one batch element: [1, total, heads, D] and LSE [1, H, total].
    a = _attention((tuple(segments), tuple(dilations), mode, causal, scale))
    out = torch.empty_like(q, memory_format=torch.contiguous_format)
    lse = torch.empty((q.shape[1], q.shape[0]), dtype=torch.float32, device=q.device)
    packing = _packing(cu_seqlens, max_seqlen)
    q4, k4, v4, out4, lse4 = (t.unsqueeze(0) for t in (q, k, v, out, lse))
    library = lib.library()
    if q.is_cuda:
        with torch.cuda.device(q.device):
            _call(functools.partial(library.dilatron_forward_varlen, a.handle), q4, k4, v4, packing, out4, lse4,
                  stream=_stream(q))
    else:
        _call(functools.partial(library.dilatron_reference_forward_varlen, a.handle), q4, k4, v4, packing, out4, lse4)
    return out, lse


def _backward_varlen_impl(q, k, v, out, lse, dout, cu_seqlens, segments, dilations, mode, causal, scale, max_seqlen):
    a = _attention((tuple(segments), tuple(dilations), mode, causal, scale))
    dq, dk, dv = (torch.empty_like(t, memory_format=torch.contiguous_format) for t in (q, k, v))
    packing = _packing(cu_seqlens, max_seqlen)
    q4, k4, v4, out4, lse4, dout4, dq4, dk4, dv4 = (t.unsqueeze(0) for t in (q, k, v, out, lse, dout, dq, dk, dv))
    library = lib.library()
    if q.is_cuda:
        with torch.cuda.device(q.device):
            _call(functools.partial(library.dilatron_backward_varlen, a.handle), q4, k4, v4, out4, lse4, dout4, dq4,
                  dk4, dv4, packing, stream=_stream(q))
    else:  # the reference recomputes O and LSE itself
        _call(functools.partial(library.dilatron_reference_backward_varlen, a.handle), q4, k4, v4, packing, dout4, dq4,
              dk4, dv4)
    return dq, dk, dv


# --- the custom ops, where this PyTorch has them ---------------------------------------------------

custom_op_registered = hasattr(torch.library, "custom_op") and hasattr(torch.library, "register_fake")

if custom_op_registered:
    @torch.library.custom_op("dilatron::forward", mutates_args=())
    def _forward_op(q: Tensor, k: Tensor, v: Tensor, segments: List[int], dilations: List[int], mode: str,
                    causal: bool, scale: float) -> Tuple[Tensor, Tensor]:
        return _forward_impl(q, k, v, segments, dilations, mode, causal, scale)

    @_forward_op.register_fake
    def _(q, k, v, segments, dilations, mode, causal, scale):
        return (torch.empty_like(q, memory_format=torch.contiguous_format),
                q.new_empty((q.shape[0], q.shape[2], q.shape[1]), dtype=torch.float32))

    @torch.library.custom_op("dilatron::backward", mutates_args=())
    def _backward_op(q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, dout: Tensor, segments: List[int],
                     dilations: List[int], mode: str, causal: bool, scale: float) -> Tuple[Tensor, Tensor, Tensor]:
        return _backward_impl(q, k, v, out, lse, dout, segments, dilations, mode, causal, scale)

    @_backward_op.register_fake
    def _(q, k, v, out, lse, dout, segments, dilations, mode, causal, scale):
        return tuple(torch.empty_like(t, memory_format=torch.contiguous_format) for t in (q, k, v))

    @torch.library.custom_op("dilatron::forward_varlen", mutates_args=())
    def _forward_varlen_op(q: Tensor, k: Tensor, v: Tensor, cu_seqlens: Tensor, segments: List[int],
                           dilations: List[int], mode: str, causal: bool, scale: float, max_seqlen: int,
                           check_offsets: bool) -> Tuple[Tensor, Tensor]:
        return _forward_varlen_impl(q, k, v, cu_seqlens, segments, dilations, mode, causal, scale, max_seqlen,
                                    check_offsets)

    @_forward_varlen_op.register_fake
    def _(q, k, v, cu_seqlens, segments, dilations, mode, causal, scale, max_seqlen, check_offsets):
        return (torch.empty_like(q, memory_format=torch.contiguous_format),
                q.new_empty((q.shape[1], q.shape[0]), dtype=torch.float32))

    @torch.library.custom_op("dilatron::backward_varlen", mutates_args=())
    def _backward_varlen_op(q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, dout: Tensor,
                            cu_seqlens: Tensor, segments: List[int], dilations: List[int], mode: str, causal: bool,
                            scale: float, max_seqlen: int) -> Tuple[Tensor, Tensor, Tensor]:
        return _backward_varlen_impl(q, k, v, out, lse, dout, cu_seqlens, segments, dilations, mode, causal, scale,
                                     max_seqlen)

    @_backward_varlen_op.register_fake
    def _(q, k, v, out, lse, dout, cu_seqlens, segments, dilations, mode, causal, scale, max_seqlen):
        return tuple(torch.empty_like(t, memory_format=torch.contiguous_format) for t in (q, k, v))

    _forward, _backward = _forward_op, _backward_op
    _forward_varlen, _backward_varlen = _forward_varlen_op, _backward_varlen_op
else:
    _forward, _backward = _forward_impl, _backward_impl
    _forward_varlen, _backward_varlen = _forward_varlen_impl, _backward_varlen_impl


def _refuse_double_backward(dout, q, k, v):
    """Differentiable once: building a graph of the gradients (create_graph=True, gradgradcheck) is an
    error here, never gradients that silently have no derivative."""
    if torch.is_grad_enabled() and any(t.requires_grad for t in (dout, q, k, v)):
        raise RuntimeError("dilatron.torch.dilated_attention is differentiable once: its gradients have no "
                           "derivative (create_graph=True, double backward and gradgradcheck are not supported)")


class _DilatedAttentionFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, segments, dilations, mode, causal, scale):
        out, lse = _forward(q, k, v, segments, dilations, mode, causal, scale)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.config = (segments, dilations, mode, causal, scale)
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    def backward(ctx, dout, _dlse):
        q, k, v, out, lse = ctx.saved_tensors
        _refuse_double_backward(dout, q, k, v)
        # Gradients may arrive expanded or transposed; the kernels read rows with a unit inner stride.
        dq, dk, dv = _backward(q, k, v, out, lse, dout.contiguous(), *ctx.config)
        return dq, dk, dv, None, None, None, None, None


class _DilatedAttentionVarlenFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, cu_seqlens, segments, dilations, mode, causal, scale, max_seqlen, check_offsets):
        out, lse = _forward_varlen(q, k, v, cu_seqlens, segments, dilations, mode, causal, scale, max_seqlen,
                                   check_offsets)
        ctx.save_for_backward(q, k, v, out, lse, cu_seqlens)
        ctx.config = (segments, dilations, mode, causal, scale, max_seqlen)
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    def backward(ctx, dout, _dlse):
        q, k, v, out, lse, cu_seqlens = ctx.saved_tensors
        _refuse_double_backward(dout, q, k, v)
        dq, dk, dv = _backward_varlen(q, k, v, out, lse, dout.contiguous(), cu_seqlens, *ctx.config)
        return dq, dk, dv, None, None, None, None, None, None, None, None


# --- the public op -----------------------------------------------------------------------------------

def _check(q, k, v, segments, dilations, mode, scale):
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise InvalidArgument(f"{name} has shape {tuple(t.shape)}: expected 4 dims [B, N, heads, D]")
    if k.shape != v.shape:
        raise InvalidArgument(f"k {tuple(k.shape)} and v {tuple(v.shape)} must have one shape [B, N, Hkv, D]")
    if q.shape[0] != k.shape[0] or q.shape[1] != k.shape[1] or q.shape[3] != k.shape[3]:
        raise InvalidArgument(f"q {tuple(q.shape)} and k {tuple(k.shape)} must share B, N and D")
    if k.shape[2] == 0 or q.shape[2] % k.shape[2] != 0:
        raise InvalidArgument(f"q has {q.shape[2]} heads, k and v {k.shape[2]}: q's heads must be a multiple")
    if not (q.dtype == k.dtype == v.dtype):
        raise InvalidArgument(f"q, k and v must share a dtype: {q.dtype}, {k.dtype}, {v.dtype}")
    if q.dtype not in _DTYPES:
        raise InvalidArgument(f"dtype {q.dtype} is not supported: expected float16, bfloat16, float32 or float64")
    if not (q.device == k.device == v.device):
        raise InvalidArgument(f"q, k and v must be on one device: {q.device}, {k.device}, {v.device}")
    if q.device.type not in ("cpu", "cuda"):
        raise InvalidArgument(f"device {q.device} is not supported: CPU tensors run the host reference, CUDA the GPU")
    if q.is_cuda:
        for name, t in (("q", q), ("k", k), ("v", v)):
            if t.stride(-1) != 1:
                raise InvalidArgument(f"{name} has stride {t.stride(-1)} in its last dim: the GPU kernels read "
                                      f"rows with unit stride (call .contiguous())")
    if mode not in ("longnet", "head_groups"):
        raise InvalidArgument(f"mode {mode!r}: expected 'longnet' or 'head_groups'")
    if len(segments) != len(dilations) or not segments:
        raise InvalidArgument(f"segments {list(segments)} and dilations {list(dilations)} must be non-empty and "
                              f"of one length")
    if scale is not None and not (scale > 0 and math.isfinite(scale)):
        raise InvalidArgument(f"scale {scale}: expected a positive finite number, or None for 1/sqrt(D)")


def dilated_attention(q: Tensor, k: Tensor, v: Tensor, segments: Sequence[int], dilations: Sequence[int],
                      mode: str = "longnet", causal: bool = False, scale: Optional[float] = None,
                      return_lse: bool = False):
    """Dilated attention of q [B, N, H, D] over k, v [B, N, Hkv, D]: O [B, N, H, D], and with return_lse
    also the float32 log-sum-exp [B, H, N] (not differentiable). Differentiable in q, k and v.

    segments and dilations: one (w, r) per branch. mode: "longnet" (every head in every branch, merged
    by LSE) or "head_groups" (heads split into one group per branch, averaged). causal: a row attends
    to itself and earlier rows. scale: 1/sqrt(D) when None.
    Raises dilatron.InvalidArgument (a ValueError) for inputs the library refuses, with its message.
    """
    segments = _int64_list("segments", segments)
    dilations = _int64_list("dilations", dilations)
    _check(q, k, v, segments, dilations, mode, scale)
    out, lse = _DilatedAttentionFunction.apply(q, k, v, segments, dilations, mode, bool(causal),
                                               float(scale) if scale is not None else 0.0)
    return (out, lse) if return_lse else out


def _check_packing(q, k, v, cu_seqlens, max_seqlen):
    """The packed op's checks of shapes, dtypes and devices (the shared ones run on [1, total, heads, D]
    views; the offsets' values are checked inside the op); returns max_seqlen as the library takes it (0:
    unknown)."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 3:
            raise InvalidArgument(f"{name} has shape {tuple(t.shape)}: a packed batch is [total, heads, D]")
    if not isinstance(cu_seqlens, Tensor):
        raise TypeError(f"cu_seqlens must be a torch.Tensor, got {type(cu_seqlens).__name__}")
    if cu_seqlens.dtype != torch.int32:
        raise InvalidArgument(f"cu_seqlens has dtype {cu_seqlens.dtype}: expected torch.int32 "
                              f"(cu_seqlens.to(torch.int32))")
    if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2:
        raise InvalidArgument(f"cu_seqlens has shape {tuple(cu_seqlens.shape)}: expected S + 1 offsets of S >= 1 "
                              f"sequences, one dimension")
    if cu_seqlens.device != q.device:
        raise InvalidArgument(f"cu_seqlens is on {cu_seqlens.device} but q on {q.device}: the offsets go where the "
                              f"tensors are (cu_seqlens.to(q.device))")
    if max_seqlen is not None:
        if isinstance(max_seqlen, bool):
            raise InvalidArgument(f"max_seqlen = {max_seqlen!r}: expected an integer")
        max_seqlen = operator.index(max_seqlen)
        if not 0 <= max_seqlen <= q.shape[0]:
            raise InvalidArgument(f"max_seqlen = {max_seqlen} is outside [0, {q.shape[0]}], the packed rows")
    return max_seqlen or 0


def _check_offset_values(q, cu_seqlens, max_seqlen):
    """The offsets' values (and max_seqlen, when given, against the longest sequence). Inside the op, so
    that torch.compile sees no host read; for CUDA offsets the copy is one synchronization."""
    host = cu_seqlens.cpu()
    lib.check(lib.library().dilatron_validate_cu_seqlens(host.data_ptr(), host.numel(), q.shape[0]))
    longest = int((host[1:] - host[:-1]).max())
    if 0 < max_seqlen < longest:
        raise InvalidArgument(f"max_seqlen = {max_seqlen} is below the longest sequence, {longest} rows")


def dilated_attention_varlen(q: Tensor, k: Tensor, v: Tensor, cu_seqlens: Tensor, segments: Sequence[int],
                             dilations: Sequence[int], *, mode: str = "longnet", causal: bool = False,
                             scale: Optional[float] = None, return_lse: bool = False,
                             max_seqlen: Optional[int] = None, check_offsets: bool = True):
    """dilated_attention over a packed batch, FlashAttention's varlen layout: the sequences lie one after
    another in the rows of q [total, H, D] and k, v [total, Hkv, D], sequence i in rows
    [cu_seqlens[i], cu_seqlens[i + 1]), each attended alone (docs/SEMANTICS.md, "Packed sequences": its
    segments and dilation residues start at its first row). Returns O [total, H, D], and with return_lse
    the float32 LSE [H, total]; differentiable in q, k and v.

    cu_seqlens: int32, S + 1 offsets on q's device, 0 first, never decreasing (empty sequences allowed),
    total last. max_seqlen: the longest sequence's rows, or None; it only sizes the GPU grid (None costs
    idle thread blocks, never a wrong result). check_offsets: the offsets (and max_seqlen against them) are
    checked before anything runs; for CUDA offsets that costs one synchronization, and False skips it: the
    kernels then attend nothing for a sequence with bad offsets, and a max_seqlen below the longest leaves
    rows unwritten. CPU tensors are always checked (and run the float64 reference).
    """
    max_seqlen = _check_packing(q, k, v, cu_seqlens, max_seqlen)
    segments = _int64_list("segments", segments)
    dilations = _int64_list("dilations", dilations)
    _check(q.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0), segments, dilations, mode, scale)
    out, lse = _DilatedAttentionVarlenFunction.apply(q, k, v, cu_seqlens.contiguous(), segments, dilations, mode,
                                                     bool(causal), float(scale) if scale is not None else 0.0,
                                                     max_seqlen, bool(check_offsets))
    return (out, lse) if return_lse else out


def ring_shard(seq_len: int, world_size: int, rank: int) -> Tuple[int, int]:
    """(begin, end): the rows of a sequence of seq_len rows that `rank` of `world_size` holds in
    ring_dilated_attention: seq_len // world_size each, the first seq_len % world_size one more."""
    return lib.ring_shard(operator.index(seq_len), operator.index(world_size), operator.index(rank))


def ring_dilated_attention(q: Tensor, k: Tensor, v: Tensor, segments: Sequence[int], dilations: Sequence[int], *,
                           mode: str = "longnet", causal: bool = False, scale: Optional[float] = None,
                           return_lse: bool = False, group=None, seq_len: Optional[int] = None):
    """dilated_attention of one sequence split across the ranks of a process group (None: the default
    one). q [B, N_local, H, D], k and v [B, N_local, Hkv, D] are this rank's contiguous shard of the rows,
    rows ring_shard(N, world_size, rank) of a sequence of N rows, N the sum of the shards (or seq_len,
    checked). Returns this rank's rows of O (and with return_lse of the float32 LSE [B, H, N_local]);
    differentiable in q, k and v. Every rank of the group must call it, and its backward, together.

    CPU tensors: the float64 host ring over the group's own point-to-point ops (gloo). CUDA tensors:
    Dilatron's kernels on the current stream, over an NCCL communicator of Dilatron's own for the group,
    made on first use. Shards that disagree across ranks (B, H, Hkv, D, dtype, device type,
    configuration, or row counts that are not ring_shard's) are one InvalidArgument on every rank before
    anything is sent.
    """
    segments = _int64_list("segments", segments)
    dilations = _int64_list("dilations", dilations)
    config = (tuple(segments), tuple(dilations), mode, bool(causal), float(scale) if scale is not None else 0.0)
    out, lse = _torch_ring.ring_attention(
        q, k, v, config, _attention, lambda: _check(q, k, v, segments, dilations, mode, scale), group,
        None if seq_len is None else operator.index(seq_len))
    return (out, lse) if return_lse else out


class DilatedAttention(nn.Module):
    """dilated_attention with its configuration fixed: forward(q, k, v, is_causal=None) on [B, N, H, D]
    tensors; is_causal overrides the constructor's causal for one call. With cu_seqlens (and optionally
    max_seqlen), q, k and v are a packed batch [total, heads, D] and the call runs
    dilated_attention_varlen. With cp_group (a process group; torch.distributed.group.WORLD for the default
    one), q, k and v are this rank's shards and the call runs ring_dilated_attention over that group
    (packed batches do not split across ranks yet)."""

    def __init__(self, segments: Sequence[int], dilations: Sequence[int], mode: str = "longnet",
                 causal: bool = False, scale: Optional[float] = None, cp_group=None):
        super().__init__()
        self.segments = _int64_list("segments", segments)
        self.dilations = _int64_list("dilations", dilations)
        self.mode, self.causal, self.scale, self.cp_group = mode, bool(causal), scale, cp_group

    def forward(self, q: Tensor, k: Tensor, v: Tensor, is_causal: Optional[bool] = None, *,
                cu_seqlens: Optional[Tensor] = None, max_seqlen: Optional[int] = None) -> Tensor:
        causal = self.causal if is_causal is None else is_causal
        if cu_seqlens is not None:
            if self.cp_group is not None:
                raise InvalidArgument("cu_seqlens with cp_group: the ring does not split packed batches yet")
            return dilated_attention_varlen(q, k, v, cu_seqlens, self.segments, self.dilations, mode=self.mode,
                                            causal=causal, scale=self.scale, max_seqlen=max_seqlen)
        if max_seqlen is not None:
            raise InvalidArgument("max_seqlen goes with cu_seqlens (a packed batch)")
        if self.cp_group is not None:
            return ring_dilated_attention(q, k, v, self.segments, self.dilations, mode=self.mode, causal=causal,
                                          scale=self.scale, group=self.cp_group)
        return dilated_attention(q, k, v, self.segments, self.dilations, self.mode, causal, self.scale)

    def extra_repr(self):
        ring = ", cp_group=set" if self.cp_group is not None else ""
        return f"segments={self.segments}, dilations={self.dilations}, mode={self.mode!r}, causal={self.causal}{ring}"


class MultiheadDilatedAttention(nn.Module):
    """Multi-head dilated attention with projections, batch first: query, key, value [B, N, embed_dim]
    -> (out [B, N, embed_dim], None), the shape nn.MultiheadAttention(batch_first=True) and the
    dilated-attention-pytorch family return (no attention weights exist to return).

    kv_heads < num_heads gives grouped-query attention (k and v projected to kv_heads heads).
    layer_norm: a LayerNorm before the output projection (MAGNETO's sub-LN, as LongNet uses).
    key and value default to query (self-attention). cp_group: query, key and value are this rank's
    shard of the sequence, and the attention runs across the group (DilatedAttention's cp_group).
    forward(..., cu_seqlens=, max_seqlen=): query, key and value are a packed batch, [1, total, embed_dim]
    or [total, embed_dim], each sequence attended alone (dilated_attention_varlen); the output keeps the
    query's shape. forward(x, kv_cache=cache) decodes incrementally: x [B, n, embed_dim] holds the next n
    rows of each sequence (the prompt first, then a token at a time), attended causally to what the cache
    (new_kv_cache) holds; the result equals the causal layer's rows for those positions.
    """

    def __init__(self, embed_dim: int, num_heads: int, segments: Sequence[int], dilations: Sequence[int],
                 mode: str = "longnet", causal: bool = False, kv_heads: Optional[int] = None, bias: bool = True,
                 layer_norm: bool = False, layer_norm_eps: float = 1e-5, device=None, dtype=None, cp_group=None):
        super().__init__()
        kv_heads = num_heads if kv_heads is None else kv_heads
        if embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim {embed_dim} is not a multiple of num_heads {num_heads}")
        if kv_heads < 1 or num_heads % kv_heads != 0:
            raise ValueError(f"num_heads {num_heads} is not a multiple of kv_heads {kv_heads}")
        self.embed_dim, self.num_heads, self.kv_heads = embed_dim, num_heads, kv_heads
        self.head_dim = embed_dim // num_heads
        factory = {"device": device, "dtype": dtype}
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **factory)
        self.k_proj = nn.Linear(embed_dim, kv_heads * self.head_dim, bias=bias, **factory)
        self.v_proj = nn.Linear(embed_dim, kv_heads * self.head_dim, bias=bias, **factory)
        self.norm = nn.LayerNorm(embed_dim, eps=layer_norm_eps, **factory) if layer_norm else None
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **factory)
        self.attention = DilatedAttention(segments, dilations, mode, causal, cp_group=cp_group)

    def forward(self, query: Tensor, key: Optional[Tensor] = None, value: Optional[Tensor] = None,
                is_causal: Optional[bool] = None, *, cu_seqlens: Optional[Tensor] = None,
                max_seqlen: Optional[int] = None, kv_cache: Optional[DilatedKVCache] = None):
        key = query if key is None else key
        value = key if value is None else value
        packed = cu_seqlens is not None
        if kv_cache is not None and (packed or is_causal is False):
            raise InvalidArgument("kv_cache decodes causally and one batch row per sequence: not with cu_seqlens or "
                                  "is_causal=False")
        if packed and not (query.dim() == 2 or (query.dim() == 3 and query.shape[0] == 1)):
            raise InvalidArgument(f"query has shape {tuple(query.shape)}: a packed batch is [1, total, "
                                  f"{self.embed_dim}] or [total, {self.embed_dim}]")
        if (not packed and query.dim() != 3) or query.shape[-1] != self.embed_dim:
            raise InvalidArgument(f"query has shape {tuple(query.shape)}: expected [B, N, {self.embed_dim}]")
        # Packed rows are one batch element's; the attention takes them as [total, heads, D].
        lead = (-1,) if packed else tuple(query.shape[:2])
        kv_lead = (-1,) if packed else (key.shape[0], key.shape[1])
        q = self.q_proj(query).reshape(*lead, self.num_heads, self.head_dim)
        k = self.k_proj(key).reshape(*kv_lead, self.kv_heads, self.head_dim)
        v = self.v_proj(value).reshape(*kv_lead, self.kv_heads, self.head_dim)
        if kv_cache is not None:
            x = kv_cache.decode(q, k, v)
        else:
            x = self.attention(q, k, v, is_causal, cu_seqlens=cu_seqlens, max_seqlen=max_seqlen)
        x = x.reshape(*query.shape[:-1], self.embed_dim)
        if self.norm is not None:
            x = self.norm(x)
        return self.out_proj(x), None

    def new_kv_cache(self, batch: int, *, max_positions: Optional[int] = None,
                     dtype: Optional[torch.dtype] = None) -> DilatedKVCache:
        """A DilatedKVCache for generating with this layer (which must be causal): its segments, dilations,
        mode, heads and head dim, on the projections' device and in their dtype unless `dtype` is given."""
        if not self.attention.causal:
            raise InvalidArgument("generation needs a causal layer: build it with causal=True")
        a = self.attention
        return DilatedKVCache(a.segments, a.dilations, batch=batch, kv_heads=self.kv_heads, head_dim=self.head_dim,
                              dtype=dtype or self.q_proj.weight.dtype, device=self.q_proj.weight.device, mode=a.mode,
                              scale=a.scale, num_heads=self.num_heads, max_positions=max_positions)
