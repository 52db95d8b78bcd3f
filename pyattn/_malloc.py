"""Freed activations go back to the OS at once (private; Linux with glibc).

glibc's malloc serves an allocation from its heap or, above a threshold, by
``mmap``. The threshold starts at 128 KiB and rises to the size of each
mmapped block freed (up to 32 MiB), so after the first forward pass most of
torch's CPU activations (a 4,096 x 768 float32 tensor is 12 MiB) come from
the heap, and freed heap memory stays resident wherever a live block sits
above it. One recomputed integration batch of ModernBERT-base at 4,096 tokens
(``pyattn.attribute(..., n_steps=2)``, 0.6 GB resident before) then peaks at
7.6 GB resident; with the threshold fixed at 128 KiB it peaks at 2.1 GB in
the same time (116 s both, this machine, 2026-12-05). A memory
budget is only worth its name when resident memory follows the tensors, so
:func:`return_freed_memory` fixes the threshold once per process, before the
first CPU attribution and in the ``pyattn`` command. :func:`trim` hands
memory already freed back at once (what :func:`pyattn.attribution.memory.held_bytes`
measures is then what stays).

It changes nothing where the user has chosen (``MALLOC_MMAP_THRESHOLD_`` set,
or ``PYATTN_MALLOC=keep``), off Linux/glibc, or under another allocator
(jemalloc, tcmalloc: glibc's setting is then unused).
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

THRESHOLD = 128 * 1024  # glibc's own starting threshold, kept fixed
_M_MMAP_THRESHOLD = -3  # <malloc.h>
_state: bool | None = None


def return_freed_memory() -> bool:
    """Fix glibc's mmap threshold at 128 KiB (once per process); returns
    whether this process's malloc now returns large freed blocks to the OS
    because of this call (False where the user chose otherwise or glibc is
    not the C library)."""
    global _state
    if _state is not None:
        return _state
    _state = False
    if os.environ.get("PYATTN_MALLOC", "").lower() == "keep" or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return _state
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return _state
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return _state
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    _state = mallopt(_M_MMAP_THRESHOLD, THRESHOLD) == 1
    return _state


def trim() -> None:
    """Hand the heap's free memory back to the OS (glibc's ``malloc_trim``;
    nothing elsewhere)."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
