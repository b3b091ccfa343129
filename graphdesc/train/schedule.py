"""DeePMD-kit's exponential learning-rate decay."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["ExpDecay"]


@dataclass(frozen=True)
class ExpDecay:
    """``lr(step) = start_lr * r ** (step // decay_steps)``, with ``r`` chosen so that
    ``lr(num_steps) = stop_lr``: ``r = (stop_lr / start_lr) ** (decay_steps / num_steps)``.

    Args:
        start_lr: learning rate at step 0.
        stop_lr: learning rate reached at ``num_steps``.
        num_steps: planned training steps.
        decay_steps: steps between decays (DeePMD-kit's default 5000 for
            long runs); default ``max(1, num_steps // 100)``.
    """

    start_lr: float = 1e-3
    stop_lr: float = 1e-5
    num_steps: int = 1000
    decay_steps: int | None = None

    def __post_init__(self):
        for name in ("start_lr", "stop_lr"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value < math.inf):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if self.stop_lr > self.start_lr:
            raise ValueError(f"stop_lr ({self.stop_lr}) must not exceed start_lr ({self.start_lr})")
        if isinstance(self.num_steps, bool) or not isinstance(self.num_steps, int) or self.num_steps < 1:
            raise ValueError(f"num_steps must be a positive integer, got {self.num_steps!r}")
        if self.decay_steps is None:
            object.__setattr__(self, "decay_steps", max(1, self.num_steps // 100))
        if isinstance(self.decay_steps, bool) or not isinstance(self.decay_steps, int) or self.decay_steps < 1:
            raise ValueError(f"decay_steps must be a positive integer, got {self.decay_steps!r}")

    @property
    def decay_rate(self) -> float:
        return (self.stop_lr / self.start_lr) ** (self.decay_steps / self.num_steps)

    def __call__(self, step: int) -> float:
        return self.start_lr * self.decay_rate ** (step // self.decay_steps)
