"""Dilatron: LongNet-style dilated attention. `dilatron.torch` is the PyTorch op; this module holds what
needs no PyTorch: the library's version and its errors."""
from ._library import DilatronError, InvalidArgument, library_path, version

__all__ = ["DilatronError", "InvalidArgument", "library_path", "version"]
