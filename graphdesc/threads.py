"""The OpenMP wait policy graphdesc asks for: threads that sleep while they wait, for speed on a shared CPU.

torch's CPU ops run in OpenMP parallel regions (libgomp in the pip builds). Between regions, libgomp's worker
threads spin, by default 300,000 times, before they sleep. On a CPU shared with another job, a spinning
worker takes the core that the thread it waits for needs, and each of the thousands of regions of an
energy+force call pays for it: with two competing 2-thread processes, a 256-atom Cu call ran 44x slower
than on the idle machine, against 5.2x for DeePMD-kit (``python benchmarks/bench_shared_cpu.py``, docs
"Benchmarks: on a shared CPU"). With :data:`POLICY` the same call slowed down less than DeePMD-kit's, and on
the idle machine it ran within 10 % of libgomp's default.

libgomp reads its environment once, when torch loads it, so the policy can only be set before ``import
torch``. :func:`apply_policy` runs when ``graphdesc`` is imported: it sets :data:`POLICY` in ``os.environ`` if
torch is not loaded yet and the user has set neither ``OMP_WAIT_POLICY`` nor ``GOMP_SPINCOUNT`` (setting
either, to any value, keeps it as it is). The command line, scripts that import graphdesc before torch and
the processes they start (DDP workers, LAMMPS runs) all get it; code that imports torch first keeps
libgomp's default (:func:`policy` says which is in effect). Set it yourself for other programs, e.g.
``GOMP_SPINCOUNT=1000 lmp -in in.lammps``. (A torch built with Intel's OpenMP reads ``KMP_BLOCKTIME``
instead; graphdesc does not set it: not measured here.)
"""

from __future__ import annotations

import os
import sys

#: The environment graphdesc sets before torch loads: spin 1,000 times, then sleep. Measured against libgomp's
#: default, ``OMP_WAIT_POLICY=PASSIVE`` (no spinning: 13-24 % slower on an idle machine) and spin counts of
#: 10,000 and 100,000 (slower under load): ``benchmarks/results/shared_cpu_policies.md``.
POLICY = {"GOMP_SPINCOUNT": "1000"}
#: Variables that, when the user has set any of them, leave libgomp's waiting as the user chose.
USER_KNOBS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def apply_policy() -> bool:
    """Set :data:`POLICY` in ``os.environ`` unless torch is already loaded or the user chose a wait policy.

    Returns:
        True when this call set it.
    """
    if "torch" in sys.modules or any(name in os.environ for name in USER_KNOBS):
        return False
    os.environ.update(POLICY)
    return True


def policy() -> str:
    """Which wait policy libgomp runs under in this process, in words (for logs and bug reports)."""
    chosen = {name: os.environ[name] for name in USER_KNOBS if name in os.environ}
    if not chosen:
        return "libgomp's default (threads spin 300,000 times before they sleep)"
    where = "graphdesc's" if chosen == POLICY else "set by the user"
    return ", ".join(f"{k}={v}" for k, v in chosen.items()) + f" ({where})"
