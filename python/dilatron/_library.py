"""ctypes bindings to Dilatron's C ABI (include/dilatron/c_api.h), loaded once per process.

Finding the library, first match wins: DILATRON_LIBRARY; lib/ inside this package (pip install copies
it there); the repository's build/lib (running from a clone); the system loader (cmake --install).
"""
import ctypes
import os
import threading

OK, INVALID, CUDA, INTERNAL, TRANSPORT = 0, 1, 2, 3, 4
F32, F16, BF16, F64 = 0, 1, 2, 3
LONGNET, HEAD_GROUPS = 0, 1


class DilatronError(RuntimeError):
    """A call into the library failed; the message is the library's own. `status` is its code."""

    def __init__(self, message, status=INTERNAL):
        super().__init__(message)
        self.status = status


class InvalidArgument(DilatronError, ValueError):
    """A bad configuration, shape, dtype or layout (DILATRON_ERROR_INVALID)."""


class Tensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("dtype", ctypes.c_int32), ("shape", ctypes.c_int64 * 4),
                ("strides", ctypes.c_int64 * 4)]


class Packing(ctypes.Structure):
    """A packed batch (dilatron_packing): sequences + 1 int32 offsets at cu_seqlens."""
    _fields_ = [("cu_seqlens", ctypes.c_void_p), ("sequences", ctypes.c_int64), ("max_seqlen", ctypes.c_int64)]


class Message(ctypes.Structure):
    """One message of a ring step (dilatron_message): to `peer`, or from `peer` into `data`."""
    _fields_ = [("peer", ctypes.c_int32), ("data", ctypes.c_void_p), ("bytes", ctypes.c_int64)]


# dilatron_exchange_fn: (user, step, sends, send_count, receives, receive_count, error, error_size) -> 0 or not.
EXCHANGE_FN = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p, ctypes.c_int32, ctypes.POINTER(Message), ctypes.c_int32,
                               ctypes.POINTER(Message), ctypes.c_int32, ctypes.c_void_p, ctypes.c_int64)
RING_ID_BYTES = 128


def _candidates():
    explicit = os.environ.get("DILATRON_LIBRARY")
    if explicit:
        return [explicit]
    here = os.path.dirname(os.path.abspath(__file__))
    return [os.path.join(here, "lib", "libdilatron_c.so"),
            os.path.join(here, "..", "..", "build", "lib", "libdilatron_c.so"),
            "libdilatron_c.so.0"]


_lock = threading.Lock()
_lib = None
_path = None


def _declare(lib):
    p, t, i32, i64 = ctypes.c_void_p, ctypes.POINTER(Tensor), ctypes.c_int32, ctypes.c_int64
    packing = ctypes.POINTER(Packing)
    signatures = {
        "dilatron_forward_varlen": [p, t, t, t, packing, t, t, p],
        "dilatron_backward_varlen": [p, t, t, t, t, t, t, t, t, t, packing, p],
        "dilatron_reference_forward_varlen": [p, t, t, t, packing, t, t],
        "dilatron_reference_backward_varlen": [p, t, t, t, packing, t, t, t, t],
        "dilatron_validate_cu_seqlens": [p, i64, i64],
        "dilatron_kv_cache_create": [p, i64, i64, i64, i64, i32, i64, i32, ctypes.POINTER(p)],
        "dilatron_kv_cache_decode": [p, t, t, t, t, t, p],
        "dilatron_kv_cache_reset": [p, i64, p],
        "dilatron_kv_cache_fork": [p, i64, i64, p],
        "dilatron_kv_cache_rewind": [p, i64, i64, p],
        "dilatron_kv_cache_position": [p, i64, ctypes.POINTER(i64)],
        "dilatron_kv_cache_bytes": [p, ctypes.POINTER(i64)],
        "dilatron_create": [ctypes.POINTER(i64), ctypes.POINTER(i64), i32, i32, i32, ctypes.c_double,
                            ctypes.POINTER(p)],
        "dilatron_forward": [p, t, t, t, t, t, p],
        "dilatron_reference_forward": [p, t, t, t, t, t],
        "dilatron_backward": [p, t, t, t, t, t, t, t, t, t, p],
        "dilatron_reference_backward": [p, t, t, t, t, t, t, t],
        "dilatron_ring_shard": [i64, i32, i32, ctypes.POINTER(i64), ctypes.POINTER(i64)],
        "dilatron_ring_from_callback": [i32, i32, EXCHANGE_FN, p, ctypes.POINTER(p)],
        "dilatron_ring_host_forward": [p, p, i64, t, t, t, t, t],
        "dilatron_ring_host_backward": [p, p, i64, t, t, t, t, t, t, t],
        "dilatron_ring_forward": [p, p, i64, t, t, t, t, t, p],
        "dilatron_ring_backward": [p, p, i64, t, t, t, t, t, t, t, p],
        "dilatron_ring_backward_with_output": [p, p, i64, t, t, t, t, t, t, t, t, t, p],
        "dilatron_ring_unique_id": [ctypes.c_char_p],
        "dilatron_ring_from_unique_id": [ctypes.c_char_p, i32, i32, ctypes.POINTER(p)],
    }
    for name, argtypes in signatures.items():
        fn = getattr(lib, name)
        fn.argtypes = argtypes
        fn.restype = ctypes.c_int
    lib.dilatron_destroy.argtypes = [p]
    lib.dilatron_destroy.restype = None
    lib.dilatron_ring_destroy.argtypes = [p]
    lib.dilatron_ring_destroy.restype = None
    lib.dilatron_kv_cache_destroy.argtypes = [p]
    lib.dilatron_kv_cache_destroy.restype = None
    lib.dilatron_last_error.restype = ctypes.c_char_p
    lib.dilatron_version.restype = ctypes.c_char_p


def library():
    """The loaded C ABI library; raises DilatronError naming every place looked in."""
    global _lib, _path
    with _lock:
        if _lib is None:
            tried = []
            for candidate in _candidates():
                try:
                    lib = ctypes.CDLL(candidate)
                except OSError as e:
                    tried.append(f"{candidate}: {e}")
                    continue
                _declare(lib)
                _lib, _path = lib, candidate
                break
            else:
                raise DilatronError("cannot load Dilatron's C library (build it with scripts/setup.sh, or set "
                                    "DILATRON_LIBRARY to libdilatron_c.so); tried:\n  " + "\n  ".join(tried))
        return _lib


def library_path():
    library()
    return _path


def version():
    return library().dilatron_version().decode()


def check(status):
    """Raises the library's last error on this thread for a failed status."""
    if status != OK:
        message = library().dilatron_last_error().decode()
        raise (InvalidArgument if status == INVALID else DilatronError)(message, status)


class Attention:
    """One dilatron_attention handle (a configuration); destroyed with the object."""

    def __init__(self, segments, dilations, mode, causal, scale):
        lib = library()
        n = len(segments)
        handle = ctypes.c_void_p()
        check(lib.dilatron_create((ctypes.c_int64 * n)(*segments), (ctypes.c_int64 * n)(*dilations), n,
                                  HEAD_GROUPS if mode == "head_groups" else LONGNET, int(bool(causal)),
                                  float(scale or 0.0), ctypes.byref(handle)))
        self.handle = handle
        self._lib = lib

    def __del__(self):
        if getattr(self, "handle", None):
            self._lib.dilatron_destroy(self.handle)
            self.handle = None


class KVCache:
    """One dilatron_kv_cache handle, destroyed with the object; `attention` (its configuration) is kept
    alive with it."""

    def __init__(self, attention, batch, heads, kv_heads, head_dim, dtype, max_positions, on_device):
        handle = ctypes.c_void_p()
        check(library().dilatron_kv_cache_create(attention.handle, batch, heads, kv_heads, head_dim, dtype,
                                                 max_positions, int(on_device), ctypes.byref(handle)))
        self.handle, self._attention, self._lib = handle, attention, library()

    def position(self, row):
        value = ctypes.c_int64()
        check(self._lib.dilatron_kv_cache_position(self.handle, row, ctypes.byref(value)))
        return value.value

    def bytes(self):
        value = ctypes.c_int64()
        check(self._lib.dilatron_kv_cache_bytes(self.handle, ctypes.byref(value)))
        return value.value

    def __del__(self):
        if getattr(self, "handle", None):
            self._lib.dilatron_kv_cache_destroy(self.handle)
            self.handle = None


def ring_shard(seq_len, ranks, rank):
    """(begin, end): the rows of a sequence of seq_len rows that `rank` of `ranks` holds."""
    begin, end = ctypes.c_int64(), ctypes.c_int64()
    check(library().dilatron_ring_shard(seq_len, ranks, rank, ctypes.byref(begin), ctypes.byref(end)))
    return begin.value, end.value


class Ring:
    """One dilatron_ring handle (a rank's end of a transport), destroyed with the object. `keep` holds
    what the handle calls back into (a transport's callback) for as long as the handle lives."""

    def __init__(self, handle, keep=None):
        self.handle = handle
        self._keep = keep
        self._lib = library()

    @classmethod
    def from_callback(cls, rank, size, exchange):
        """exchange(step, sends, receives): lists of Message; raise to fail the step."""
        def trampoline(_user, step, sends, send_count, receives, receive_count, error, error_size):
            try:
                exchange(step, [sends[i] for i in range(send_count)], [receives[i] for i in range(receive_count)])
                return 0
            except BaseException as e:  # noqa: B902 - every failure must become the rank's error, never escape C
                text = f"{type(e).__name__}: {e}".encode()[:max(error_size - 1, 0)]
                ctypes.memmove(error, text + b"\0", len(text) + 1)
                return 1

        callback = EXCHANGE_FN(trampoline)
        handle = ctypes.c_void_p()
        check(library().dilatron_ring_from_callback(rank, size, callback, None, ctypes.byref(handle)))
        return cls(handle, callback)

    @classmethod
    def from_unique_id(cls, unique_id, rank, size):
        handle = ctypes.c_void_p()
        check(library().dilatron_ring_from_unique_id(bytes(unique_id), rank, size, ctypes.byref(handle)))
        return cls(handle)

    def __del__(self):
        if getattr(self, "handle", None):
            self._lib.dilatron_ring_destroy(self.handle)
            self.handle = None


def ring_unique_id():
    """A fresh NCCL id (RING_ID_BYTES bytes) for Ring.from_unique_id on every rank."""
    buffer = ctypes.create_string_buffer(RING_ID_BYTES)
    check(library().dilatron_ring_unique_id(buffer))
    return buffer.raw
