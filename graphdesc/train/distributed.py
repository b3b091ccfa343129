"""Data-parallel training on ``torch.distributed``: the process group, shares of a batch, reductions.

graphdesc runs on torch's own machinery: ``torchrun`` starts the processes
(one per rank), :func:`init_from_env` joins them into a process group (gloo on
CPU, NCCL on CUDA), and :class:`torch.nn.parallel.DistributedDataParallel`
exchanges the gradients. Nothing here averages gradients by hand.

Every rank draws the same global batch (the same seed, the same shuffling) and
evaluates its contiguous share of it; the losses are divided by the *global*
counts, so DDP's gradient average is exactly the gradient of the one-process
loss on the whole batch (see :func:`graphdesc.train.loss_terms`).
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

__all__ = ["Ranks", "init_from_env", "ranks", "share"]


@dataclass(frozen=True)
class Ranks:
    """This process's place in the process group: ``rank`` of ``world`` (1 of 1 without one)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes checkpoints and logs."""
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.world > 1

    def sum(self, values) -> np.ndarray:
        """Sum ``values`` (floats) over the ranks; every rank gets the result (float64)."""
        values = np.asarray(values, dtype=np.float64)
        if not self.parallel:
            return values
        t = torch.as_tensor(values, dtype=torch.float64)
        dist.all_reduce(t)
        return t.numpy()

    def barrier(self) -> None:
        if self.parallel:
            dist.barrier()

    def leave(self) -> None:
        """Every rank waits for the others, then all leave the process group together (not one by one at
        interpreter exit, while another rank may still be writing its report)."""
        if self.parallel and dist.is_initialized():
            self.barrier()
            dist.destroy_process_group()


def ranks() -> Ranks:
    """The current process group's :class:`Ranks` (1 of 1 when torch.distributed is not initialized)."""
    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size())
    return Ranks()


def launched_by_torchrun() -> bool:
    """Whether this process was started by ``torchrun`` (it sets ``WORLD_SIZE`` and ``RANK``)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def init_from_env(device: str = "cpu") -> Ranks:
    """Join the process group ``torchrun`` describes in the environment; gloo on CPU, NCCL on CUDA.

    Idempotent; without torchrun's variables it does nothing and returns rank 0 of 1.
    """
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        return ranks()
    _die_with_launcher()
    if not dist.is_initialized():
        backend = "nccl" if str(device).startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend=backend)
        atexit.register(lambda: dist.is_initialized() and dist.destroy_process_group())
    return ranks()


def _die_with_launcher() -> None:
    """Ask Linux to SIGKILL this worker when its launcher dies.

    torchrun starts each worker in a session of its own, so a SIGKILL of the
    launcher's process group (a job killed by hand) would leave the workers
    running, and an orphaned rank 0 would go on writing checkpoints under a
    restarted run. With ``PR_SET_PDEATHSIG`` they die with the launcher.
    """
    import ctypes
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(1, int(signal.SIGKILL), 0, 0, 0) == 0 and os.getppid() != parent:  # 1 = PR_SET_PDEATHSIG
        os.kill(os.getpid(), signal.SIGKILL)  # the launcher died before the request took effect


def share(indices, r: Ranks) -> np.ndarray:
    """Rank ``r.rank``'s contiguous share of ``indices`` (``np.array_split``: sizes differ by at most 1).

    Args:
        indices: ``(B,)`` frame indices of one global batch.
        r: this process's :class:`Ranks`.

    Returns:
        ``(B_r,)`` int array, ``B_r`` in ``{floor(B / world), ceil(B / world)}`` (possibly 0).
    """
    return np.array_split(np.asarray(indices), r.world)[r.rank]
