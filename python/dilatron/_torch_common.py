"""What dilatron.torch's modules share: the dtype codes, library handles per configuration, tensor
descriptors, calls into the C ABI, and integer arguments checked as the C ABI takes them."""
import ctypes
import functools
import operator

import torch
from torch import Tensor

from . import _library as lib
from ._library import InvalidArgument

_DTYPES = {torch.float32: lib.F32, torch.float16: lib.F16, torch.bfloat16: lib.BF16, torch.float64: lib.F64}


@functools.lru_cache(maxsize=64)
def _attention(config):
    """One library handle per configuration (the library caches plans on it), the 64 most recently used
    kept: a model uses a few, and a caller sweeping scales must not grow the process without bound. An
    evicted handle lives on in any call still using it."""
    segments, dilations, mode, causal, scale = config
    return lib.Attention(segments, dilations, mode, causal, scale)


def _tensor(t: Tensor):
    if t.dtype not in _DTYPES:
        raise InvalidArgument(f"dtype {t.dtype} is not supported: expected float16, bfloat16, float32 or float64")
    shape = list(t.shape) + [1] * (4 - t.dim())
    strides = list(t.stride()) + [1] * (4 - t.dim())
    return lib.Tensor(t.data_ptr(), _DTYPES[t.dtype], (ctypes.c_int64 * 4)(*shape), (ctypes.c_int64 * 4)(*strides))


def _call(fn, *args, stream=None):
    """fn(pointer to each argument[, stream]): tensors as dilatron_tensor, ctypes structures as they are."""
    views = [_tensor(a) if isinstance(a, Tensor) else a for a in args]
    pointers = [ctypes.byref(v) for v in views]
    if stream is not None:
        pointers.append(ctypes.c_void_p(stream))
    lib.check(fn(*pointers))


def _stream(t: Tensor):
    return torch.cuda.current_stream(t.device).cuda_stream


def _int64_list(name, values):
    """Integers as given (ints, numpy integers), each a C int64: 2**64 + 4 is an error, never 4, and 64.5
    or True are not integers."""
    out = []
    for i, x in enumerate(values):
        if isinstance(x, bool):
            raise InvalidArgument(f"{name}[{i}] = {x!r}: expected an integer")
        try:
            value = operator.index(x)
        except TypeError:
            raise InvalidArgument(f"{name}[{i}] = {x!r}: expected an integer") from None
        if not -2**63 <= value < 2**63:
            raise InvalidArgument(f"{name}[{i}] = {value}: out of range for a 64-bit integer")
        out.append(value)
    return out
