"""The glibc malloc policy graphdesc asks for: freed memory kept for the next call, not handed back to the OS.

An energy+force call allocates and frees hundreds of megabytes of temporaries (a few MiB each). With glibc's
defaults, the freed top of the heap is returned to the kernel once it exceeds a threshold that glibc adapts
to the largest block freed so far, so every call takes it back page by page: 14,300 page faults per call on
108-atom fcc Cu (fp64), 56 MiB zeroed by the kernel on every call. With :data:`POLICY`, 455 faults per call,
and the call 1.14x faster (``python benchmarks/bench_allocator.py``; docs, "Benchmarks: memory kept between
calls").

:func:`apply_policy` runs when ``graphdesc`` is imported. Where the C library is glibc and the user has set
none of :data:`USER_KNOBS`, it calls ``mallopt`` for this process and sets the same values in ``os.environ``
for the processes it starts (DDP workers, LAMMPS runs; glibc reads them at start). The cost is resident
memory: up to ``M_TRIM_THRESHOLD`` of freed memory stays with the process between calls (its peak is
unchanged). Set any of the variables yourself to keep glibc's behaviour as you want it (``GLIBC_TUNABLES=``,
empty, keeps glibc's defaults), e.g.
``MALLOC_TRIM_THRESHOLD_=134217728`` (but set ``MALLOC_MMAP_THRESHOLD_`` with it: either one alone fixes the
other at glibc's default, and every block above 128 KiB then comes from ``mmap``, measured 2x slower).
"""

from __future__ import annotations

import ctypes
import os

#: glibc's ``mallopt`` parameters and graphdesc's values: blocks up to 32 MiB (the largest mmap threshold every
#: glibc accepts) from the heap, and up to 1 GiB of free memory at the heap's top kept rather than trimmed.
POLICY = {"MALLOC_MMAP_THRESHOLD_": 32 * 2**20, "MALLOC_TRIM_THRESHOLD_": 2**30}
#: Variables that, when the user has set any of them, leave malloc as the user chose.
USER_KNOBS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_",
              "GLIBC_TUNABLES")
_MALLOPT = {"MALLOC_TRIM_THRESHOLD_": -1, "MALLOC_MMAP_THRESHOLD_": -3}  # M_TRIM_THRESHOLD, M_MMAP_THRESHOLD


def _glibc():
    """The process's C library when it is glibc (it has ``gnu_get_libc_version``), else None."""
    try:
        libc = ctypes.CDLL(None)  # the symbols the interpreter was linked with, its C library's among them
        libc.gnu_get_libc_version  # noqa: B018 (only glibc has it)
        return libc
    except (OSError, AttributeError):
        return None


def apply_policy() -> bool:
    """Apply :data:`POLICY` to this process (``mallopt``) and its children (``os.environ``), unless the C library
    is not glibc or the user set any of :data:`USER_KNOBS`.

    Returns:
        True when this call applied it.
    """
    if any(name in os.environ for name in USER_KNOBS):
        return False
    libc = _glibc()
    if libc is None:
        return False
    for name, value in POLICY.items():
        if not libc.mallopt(_MALLOPT[name], value):
            return False  # refused (an older glibc's limit): glibc's defaults stay for what was not set
    os.environ.update({name: str(value) for name, value in POLICY.items()})
    return True


def policy() -> str:
    """Which malloc policy this process runs under, in words (for logs and bug reports)."""
    chosen = {name: os.environ[name] for name in USER_KNOBS if name in os.environ}
    if chosen == {k: str(v) for k, v in POLICY.items()}:  # set here (apply_policy exports it) or by a parent
        return ", ".join(f"{k}={v}" for k, v in POLICY.items()) + " (graphdesc's)"
    if chosen:
        return ", ".join(f"{k}={v}" for k, v in chosen.items()) + " (set by the user)"
    return "the C library's default"
