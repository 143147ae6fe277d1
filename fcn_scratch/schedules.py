"""Learning-rate schedules: closed formulas of the step count, with PyTorch's results.

A schedule sets every parameter group's ``lr`` from that group's initial value, when made
(step 0) and after each ``step()``; call ``step()`` once per optimiser step, or once per
epoch: the unit is yours. An optional linear warm-up comes first. ``fcn_scratch.optim``
exports these names too.
"""

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from fcn_scratch.optim import Optimizer


class Schedule:
    """Sets every group's ``lr`` from its initial value, at ``t = 0`` when made and after each
    ``step()``.

    warmup_steps: the first steps ramp linearly from ``warmup_start * lr`` to ``lr``
    (torch's ``LinearLR``); the schedule proper then runs over the remaining steps, as
    ``SequentialLR([LinearLR, ...], milestones=[warmup_steps])`` does.
    """

    def __init__(self, optimizer: "Optimizer", warmup_steps: int = 0, warmup_start: float = 0.1):
        name = type(self).__name__
        if not isinstance(warmup_steps, (int, np.integer)) or warmup_steps < 0:
            raise ValueError(f"{name}: warmup_steps must be an int >= 0, got {warmup_steps!r}")
        if not 0 < warmup_start <= 1:
            raise ValueError(f"{name}: warmup_start must be in (0, 1], got {warmup_start!r}")
        self.optimizer = optimizer
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]
        self.warmup_steps, self.warmup_start = int(warmup_steps), float(warmup_start)
        self.t = 0
        self.check()
        self._apply()

    def check(self) -> None:
        """Raise ValueError for options that do not fit together (subclasses add checks)."""

    def factor(self, t: int) -> float:
        """The multiplier of the initial lr, ``t`` steps after the warm-up."""
        raise NotImplementedError

    def main_lr(self, base_lr: float, t: int) -> float:
        return base_lr * self.factor(t)

    def lr_at(self, t: int, base_lr: float | None = None) -> float:
        """The lr at step ``t`` of a group that started at ``base_lr`` (default: group 0's)."""
        base_lr = self.base_lrs[0] if base_lr is None else base_lr
        w = self.warmup_steps
        if t < w:
            return base_lr * (self.warmup_start + (1 - self.warmup_start) * t / w)
        return self.main_lr(base_lr, t - w)

    def _apply(self) -> None:
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = self.lr_at(self.t, base)

    def step(self, t: int | None = None) -> None:
        """Advance one step, or to step ``t`` (a run on a time budget counts its own ticks)."""
        self.t = self.t + 1 if t is None else int(t)
        self._apply()

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"t": np.array(self.t, dtype=np.int64), "base_lrs": np.array(self.base_lrs)}

    def load_state_dict(self, state: dict) -> None:
        missing = {"t", "base_lrs"} - set(state)
        if missing:
            raise KeyError(f"{type(self).__name__}.load_state_dict: missing {sorted(missing)}")
        base_lrs = [float(v) for v in np.asarray(state["base_lrs"]).reshape(-1)]
        if len(base_lrs) != len(self.optimizer.param_groups):
            raise ValueError(
                f"{type(self).__name__}.load_state_dict: {len(base_lrs)} base lrs for "
                f"{len(self.optimizer.param_groups)} parameter groups"
            )
        self.t, self.base_lrs = int(state["t"]), base_lrs
        self._apply()


class ConstantSchedule(Schedule):
    """lr stays at its initial value (after any warm-up)."""

    def factor(self, t: int) -> float:
        return 1.0


class StepSchedule(Schedule):
    """lr = base_lr * gamma ** (t // step_size) (``torch.optim.lr_scheduler.StepLR``)."""

    def __init__(self, optimizer: "Optimizer", step_size: int, gamma: float = 0.1, **warmup):
        if step_size < 1:
            raise ValueError(f"StepSchedule: step_size must be positive, got {step_size}")
        self.step_size, self.gamma = step_size, gamma
        super().__init__(optimizer, **warmup)

    def factor(self, t: int) -> float:
        return self.gamma ** (t // self.step_size)


class CosineSchedule(Schedule):
    """lr = min_lr + (base_lr - min_lr) * (1 + cos(pi * t / T)) / 2, held at ``min_lr`` after
    T = total_steps - warmup_steps (``CosineAnnealingLR``'s closed form)."""

    def __init__(self, optimizer: "Optimizer", total_steps: int, min_lr: float = 0.0, **warmup):
        self.total_steps, self.min_lr = total_steps, min_lr
        super().__init__(optimizer, **warmup)

    def check(self) -> None:
        _check_total(self)

    def main_lr(self, base_lr: float, t: int) -> float:
        span = self.total_steps - self.warmup_steps
        progress = min(t, span) / span
        return self.min_lr + (base_lr - self.min_lr) * (1 + math.cos(math.pi * progress)) / 2


class PolySchedule(Schedule):
    """lr = base_lr * (1 - t / T) ** power, 0 after T = total_steps - warmup_steps (the
    "poly" policy of DeepLab and the FCN follow-ups; ``PolynomialLR``)."""

    def __init__(self, optimizer: "Optimizer", total_steps: int, power: float = 0.9, **warmup):
        self.total_steps, self.power = total_steps, power
        super().__init__(optimizer, **warmup)

    def check(self) -> None:
        _check_total(self)

    def factor(self, t: int) -> float:
        span = self.total_steps - self.warmup_steps
        return (1 - min(t, span) / span) ** self.power


def _check_total(schedule: Schedule) -> None:
    name, total, warmup = type(schedule).__name__, schedule.total_steps, schedule.warmup_steps
    if total < 1:
        raise ValueError(f"{name}: total_steps must be positive, got {total}")
    if warmup >= total:
        raise ValueError(
            f"{name}: warmup_steps ({warmup}) must be fewer than total_steps ({total})"
        )
