"""ctypes bindings to Dilatron's C ABI (include/dilatron/c_api.h), loaded once per process.

Finding the library, first match wins: DILATRON_LIBRARY; lib/ inside this package (pip install copies
it there); the repository's build/lib (running from a clone); the system loader (cmake --install).
"""
import ctypes
import os
import threading

OK, INVALID, CUDA, INTERNAL = 0, 1, 2, 3
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
    signatures = {
        "dilatron_create": [ctypes.POINTER(i64), ctypes.POINTER(i64), i32, i32, i32, ctypes.c_double,
                            ctypes.POINTER(p)],
        "dilatron_forward": [p, t, t, t, t, t, p],
        "dilatron_reference_forward": [p, t, t, t, t, t],
        "dilatron_backward": [p, t, t, t, t, t, t, t, t, t, p],
        "dilatron_reference_backward": [p, t, t, t, t, t, t, t],
    }
    for name, argtypes in signatures.items():
        fn = getattr(lib, name)
        fn.argtypes = argtypes
        fn.restype = ctypes.c_int
    lib.dilatron_destroy.argtypes = [p]
    lib.dilatron_destroy.restype = None
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
