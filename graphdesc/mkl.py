"""MKL's kernels on AMD CPUs: the ones MKL picks on Intel CPUs, chosen by the instruction set.

torch's pip builds do their matrix products with Intel's MKL, linked into ``libtorch_cpu.so``. MKL asks one
internal function, ``mkl_serv_intel_cpu_true``, whether the CPU is Intel's, and on any other CPU it runs
slower kernels whatever the instruction set: on an AMD EPYC (Zen 4, AVX-512), float64 products of the shapes
of a DPA1 call, ``(52, 78, 78) @ (52, 78, 128)`` and ``(4056, 100) @ (100, 128)``, ran at 64-66 and 71-78
GFLOP/s against 104-107 and 103-106 with MKL's Intel kernels, and a 256-atom Cu energy+force call 1.36x slower
(``python benchmarks/bench_mkl.py``; docs, "Benchmarks: MKL's kernels on AMD CPUs").

:func:`apply_policy` runs when ``graphdesc`` is imported. On an AMD x86-64 CPU under Linux, if torch is not
loaded yet and ``GRAPHDESC_MKL_INTEL`` is not ``0``, it loads a library of one function that answers "Intel"
(:data:`SOURCE`, compiled once with the system's C compiler into graphdesc's cache) into the process's
global symbol scope, ahead of ``libtorch_cpu.so``: MKL then asks it, and picks among its Intel kernels by
the CPU's instruction set (``cpuid``), as it does on an Intel CPU. It cannot act once torch is loaded (MKL's
question is already bound), so scripts must import graphdesc before torch (the command line does); imported
after torch, it warns.
``GRAPHDESC_MKL_INTEL=0`` keeps MKL's own choice, ``=1`` loads the library on any x86-64 Linux CPU (on an
Intel CPU it changes nothing: the tests use it there). Programs that do not import graphdesc (``lmp``, C++
codes) get it from ``LD_PRELOAD`` (:func:`preload`; :func:`graphdesc.lammps.lmp_command` sets it).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

#: The whole library: MKL's question, answered "Intel", and a count of how often MKL asked (for the tests).
SOURCE = ("int graphdesc_mkl_queries = 0;\n"
          "int mkl_serv_intel_cpu_true(void) { ++graphdesc_mkl_queries; return 1; }\n")
KNOB = "GRAPHDESC_MKL_INTEL"
_STATE = {"reason": "not applied yet"}


def _cpu_vendor() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def library_path() -> Path:
    """Where the compiled library is (or will be): graphdesc's cache (``GRAPHDESC_CACHE``), named by its source."""
    base = Path(os.environ.get("GRAPHDESC_CACHE", Path.home() / ".cache" / "graphdesc"))
    return base / "mkl" / f"libgraphdesc_mkl_intel-{hashlib.sha1(SOURCE.encode()).hexdigest()[:12]}.so"


def build() -> Path:
    """Compile :data:`SOURCE` with ``$CC``, ``cc`` or ``gcc`` unless it is built; returns its path.

    Raises:
        RuntimeError: no C compiler, or the compiler failed.
    """
    target = library_path()
    if target.exists():
        return target
    cc = next((c for c in (os.environ.get("CC"), "cc", "gcc") if c and shutil.which(c)), None)
    if cc is None:
        raise RuntimeError("no C compiler (set CC, or install cc or gcc)")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:  # concurrent builds: each in its own folder
        src, lib = Path(tmp) / "shim.c", Path(tmp) / target.name
        src.write_text(SOURCE)
        run = subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", str(lib), str(src)], capture_output=True,
                             text=True)
        if run.returncode != 0:
            raise RuntimeError(f"{cc} failed: {run.stderr.strip()[-500:]}")
        os.replace(lib, target)  # atomic: never a half-written library at the path
    return target


def wanted() -> str | None:
    """Why the library should not be loaded in this process, or None when it should (before torch loads)."""
    choice = os.environ.get(KNOB, "")
    if choice == "0":
        return f"{KNOB}=0"
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        return "not an x86-64 Linux machine"
    if choice != "1" and _cpu_vendor() != "AuthenticAMD":
        return "not an AMD CPU: MKL picks its kernels by the instruction set already"
    return None


def apply_policy() -> bool:
    """Load the library into the global symbol scope when :func:`wanted` and torch is not loaded yet.

    Returns:
        True when this call loaded it (:func:`policy` says why not otherwise).
    """
    reason = wanted()
    if reason is None and "torch" in sys.modules:
        reason = "torch was imported before graphdesc"
        warnings.warn(f"graphdesc was imported after torch, so torch's MKL keeps its slower kernels on this CPU "
                      f"(energy+force 1.23-1.36x slower on an AMD EPYC; docs: Install, 'MKL on AMD CPUs'). Import "
                      f"graphdesc first, or set {KNOB}=0 to keep MKL's choice without this warning", stacklevel=2)
    if reason is None:
        try:
            ctypes.CDLL(str(build()), mode=ctypes.RTLD_GLOBAL)
        except (RuntimeError, OSError) as err:
            reason = f"the library could not be built or loaded: {err}"
    _STATE["reason"] = reason or "loaded"
    return reason is None


def queries() -> int | None:
    """How often MKL has asked the library so far, or None when it is not in this process's global scope."""
    try:
        return ctypes.c_int.in_dll(ctypes.CDLL(None), "graphdesc_mkl_queries").value
    except ValueError:
        return None


def policy() -> str:
    """Which kernels MKL picks in this process, in words (for logs and bug reports)."""
    torch = sys.modules.get("torch")
    if torch is not None and not torch.backends.mkl.is_available():
        return "no MKL in this torch build"
    if queries() is not None:
        return "MKL's Intel kernels, chosen by the instruction set (graphdesc's library answers MKL's CPU check)"
    return f"MKL's own choice ({_STATE['reason']})"


def preload() -> str:
    """The library for ``LD_PRELOAD`` of programs that do not import graphdesc, or ``""`` where
    :func:`wanted` says no or it cannot be built."""
    if wanted() is not None:
        return ""
    try:
        return str(build())
    except (RuntimeError, OSError):  # no compiler, or an unwritable cache: lmp runs as it would without graphdesc
        return ""
