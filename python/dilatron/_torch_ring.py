"""The ring from PyTorch: dilated attention of one sequence split across the ranks of a process group.

Each rank holds a contiguous shard of the rows ([B, N_local, H, D]; the sizes of ring_shard) and the
ranks exchange only the dilated K/V rows that segments spanning them need (docs/ARCHITECTURE.md, "The
ring").
- CPU tensors: the library's float64 host ring, each step's messages carried by the group's own
  point-to-point ops (gloo), through the C ABI's caller-provided transport (dilatron_ring_from_callback).
- CUDA tensors: Dilatron's own NCCL communicator per (group, device), made once: rank 0 of the group
  makes the NCCL id, the group's broadcast carries it, every rank joins with it
  (dilatron_ring_from_unique_id). Kernels run on the current stream.
Before any transfer, one all_gather over the group compares every rank's shard (B, H, Hkv, D, dtype,
device type, configuration, its row count against ring_shard's), so a bad shard on one rank is the
same error on every rank, never a hang.
"""
import ctypes
import datetime
import functools
import os

import torch
import torch.distributed as dist

from . import _library as lib
from ._library import InvalidArgument

_TAG_STEP = 4096  # tag = step * _TAG_STEP + the message's index among the pair's messages of the step


def ring_timeout():
    """DILATRON_RING_TIMEOUT_S (default 300 s), the bound on every wait of a step, as the library's."""
    text = os.environ.get("DILATRON_RING_TIMEOUT_S", "300")
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise InvalidArgument(f"DILATRON_RING_TIMEOUT_S={text!r}: expected a positive number of seconds")
    return datetime.timedelta(seconds=seconds)


def _global_rank(group, rank):
    if group is None or group is dist.group.WORLD:
        return rank
    if hasattr(dist, "get_global_rank"):
        return dist.get_global_rank(group, rank)
    return dist.distributed_c10d._get_global_rank(group, rank)  # PyTorch before 2.0


def _host_bytes(message):
    return torch.frombuffer((ctypes.c_char * message.bytes).from_address(message.data), dtype=torch.uint8)


class _GroupTransport:
    """One step's messages over the group's isend/irecv, each wait bounded by the ring timeout."""

    def __init__(self, group):
        self.group = group
        self.timeout = ring_timeout()

    def __call__(self, step, sends, receives):
        works = []
        for messages, op in ((sends, dist.isend), (receives, dist.irecv)):
            nth = {}
            for m in messages:
                index = nth.get(m.peer, 0)
                nth[m.peer] = index + 1
                works.append(op(_host_bytes(m), _global_rank(self.group, m.peer), group=self.group,
                                tag=step * _TAG_STEP + index))
        for work in works:
            work.wait(self.timeout)


_rings = {}


def _ring(group, device):
    """This rank's dilatron ring over `group` for tensors on `device`, made once per (group, device)."""
    key = (group, device)
    if key not in _rings:
        rank, size = dist.get_rank(group), dist.get_world_size(group)
        if device.type == "cpu":
            _rings[key] = lib.Ring.from_callback(rank, size, _GroupTransport(group))
        else:
            carrier = [lib.ring_unique_id() if rank == 0 else None]
            dist.broadcast_object_list(carrier, src=_global_rank(group, 0), group=group)
            with torch.cuda.device(device):
                _rings[key] = lib.Ring.from_unique_id(carrier[0], rank, size)
    return _rings[key]


def _shard_facts(q, k, v, config, problem):
    """What every rank must agree on, and this rank's error (None when its inputs pass the local checks)."""
    facts = {"error": problem, "config": config}
    if problem is None:
        facts.update(batch=q.shape[0], rows=q.shape[1], heads=q.shape[2], kv_heads=k.shape[2], head_dim=q.shape[3],
                     dtype=str(q.dtype), device=q.device.type)
    return facts


def _agree(group, facts, seq_len):
    """All ranks' facts, gathered: one error, the same on every rank, when any rank's is bad or they
    disagree. Returns the global length."""
    size = dist.get_world_size(group)
    everyone = [None] * size
    dist.all_gather_object(everyone, facts, group=group)
    errors = [f"rank {r}: {f['error']}" for r, f in enumerate(everyone) if f["error"] is not None]
    if errors:
        raise InvalidArgument("ring_dilated_attention: " + "; ".join(errors))
    for name in ("config", "batch", "heads", "kv_heads", "head_dim", "dtype", "device"):
        values = [f[name] for f in everyone]
        if any(x != values[0] for x in values):
            listed = ", ".join(f"rank {r}: {x}" for r, x in enumerate(values))
            raise InvalidArgument(f"ring_dilated_attention: the ranks' {name} differ ({listed})")
    rows = [f["rows"] for f in everyone]
    total = sum(rows)
    if seq_len is not None and seq_len != total:
        raise InvalidArgument(f"ring_dilated_attention: seq_len={seq_len} but the ranks' shards add up to {total} rows "
                              f"({rows})")
    if total < size:
        raise InvalidArgument(f"ring_dilated_attention: {total} rows over {size} ranks: every rank needs a row")
    for r, n in enumerate(rows):
        begin, end = lib.ring_shard(total, size, r)
        if n != end - begin:
            raise InvalidArgument(f"ring_dilated_attention: rank {r} holds {n} rows, but a sequence of {total} rows over "
                                  f"{size} ranks gives it rows [{begin}, {end}) (dilatron.torch.ring_shard); shard "
                                  f"sizes are {rows}")
    return total


def _call(fn, *tensors, stream=None):
    from .torch import _call as call  # one definition of the tensor views (dilatron.torch imports this module)
    call(fn, *tensors, stream=stream)


class _RingFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, attention, ring, seq_len):
        out = torch.empty_like(q, memory_format=torch.contiguous_format)
        lse = torch.empty((q.shape[0], q.shape[2], q.shape[1]), dtype=torch.float32, device=q.device)
        library = lib.library()
        if q.is_cuda:
            with torch.cuda.device(q.device):
                _call(functools.partial(library.dilatron_ring_forward, attention.handle, ring.handle, seq_len), q, k, v,
                      out, lse, stream=torch.cuda.current_stream(q.device).cuda_stream)
        else:
            _call(functools.partial(library.dilatron_ring_host_forward, attention.handle, ring.handle, seq_len), q, k, v,
                  out, lse)
        # O and LSE too on the GPU, where the backward takes them instead of attending again.
        ctx.save_for_backward(q, k, v, *((out, lse) if q.is_cuda else ()))
        ctx.ring = (attention, ring, seq_len)
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    def backward(ctx, dout, _dlse):
        q, k, v, *forward = ctx.saved_tensors
        if torch.is_grad_enabled() and any(t.requires_grad for t in (dout, q, k, v)):
            raise RuntimeError("dilatron.torch.ring_dilated_attention is differentiable once: its gradients have no "
                               "derivative (create_graph=True and double backward are not supported)")
        attention, ring, seq_len = ctx.ring
        dq = torch.empty_like(q, memory_format=torch.contiguous_format)
        dk = torch.empty_like(k, memory_format=torch.contiguous_format)
        dv = torch.empty_like(v, memory_format=torch.contiguous_format)
        library = lib.library()
        dout = dout.contiguous()
        if q.is_cuda:
            with torch.cuda.device(q.device):
                _call(functools.partial(library.dilatron_ring_backward_with_output, attention.handle, ring.handle,
                                        seq_len), q, k, v, *forward, dout, dq, dk, dv,
                      stream=torch.cuda.current_stream(q.device).cuda_stream)
        else:
            _call(functools.partial(library.dilatron_ring_host_backward, attention.handle, ring.handle, seq_len), q, k,
                  v, dout, dq, dk, dv)
        return dq, dk, dv, None, None, None


# torch.compile runs the ring between graphs: its shard check is a collective of Python objects and its
# steps call back into Python, neither of which a graph can hold (PyTorch 1.13 has no torch.compiler).
_between_graphs = getattr(getattr(torch, "compiler", None), "disable", lambda fn: fn)


@_between_graphs
def ring_attention(q, k, v, config, attention_of, check, group, seq_len):
    """The op behind dilatron.torch.ring_dilated_attention: `check` raises for bad local inputs,
    `attention_of(config)` gives the library handle."""
    if not dist.is_available() or not dist.is_initialized():
        raise InvalidArgument("ring_dilated_attention needs torch.distributed initialized (init_process_group, or "
                              "torchrun): it splits the sequence across the ranks of a process group")
    problem = None
    try:
        check()
        attention = attention_of(config)
    except (InvalidArgument, TypeError) as e:  # reported on every rank, below
        problem = f"{type(e).__name__}: {e}"
    total = _agree(group, _shard_facts(q, k, v, config, problem), seq_len)
    return _RingFunction.apply(q, k, v, attention, _ring(group, q.device), total)
