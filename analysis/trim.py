"""Freed memory given back to the system: a long pass frees many arrays, which the C allocator keeps for reuse
(its heap grows in pieces it cannot hand back while a live block sits above them), so the process's resident size
keeps the high-water mark of every batch; malloc_trim (glibc) releases the free pages in the middle of the heap."""

from __future__ import annotations

import ctypes
import sys
from typing import Any

_LIBC: Any = None
_TRIED = False


def _libc() -> Any:
    global _LIBC, _TRIED
    if not _TRIED:
        _TRIED = True
        lib = None
        if sys.platform.startswith("linux"):
            try:
                lib = ctypes.CDLL(None)  # the symbols the process has loaded: the C library's among them
            except (OSError, TypeError):
                lib = None
        _LIBC = lib if lib is not None and hasattr(lib, "malloc_trim") else None
    return _LIBC


def release() -> bool:
    """Hand the free pages of the C heap back to the system (glibc only); whether it could."""
    lib = _libc()
    if lib is None:
        return False
    lib.malloc_trim(0)
    return True
