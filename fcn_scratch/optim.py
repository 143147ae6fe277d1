"""Optimisers (SGD, Adam) and learning-rate schedules, with PyTorch's update rules.

An optimiser updates ``p.data`` in place from ``p.grad`` for each parameter ``p`` (a Tensor;
arrays NumPy or CuPy), skipping parameters whose ``grad`` is None. The arithmetic follows
``torch.optim`` operation for operation, so the two agree to rounding (tests check this).
``state_dict()`` holds only NumPy arrays (hyperparameters as 0-d arrays, moments per
parameter index), so a checkpoint ``.npz`` stores it without pickle; ``load_state_dict``
restores moments onto the parameters' devices and the hyperparameters too, as PyTorch does.

Schedules set ``optimizer.lr`` from a closed formula of the step count ``t`` (call
``schedule.step()`` once per optimiser step, or once per epoch: the unit is yours).
"""

import math
from collections.abc import Iterable

import numpy as np

from fcn_scratch.device import array_module, device_of, to_device


class Optimizer:
    """Holds the parameters (a list, in order) and the learning rate ``lr``."""

    hyper: tuple[str, ...] = ("lr",)  # hyperparameters saved in state_dict
    slots: tuple[str, ...] = ()  # per-parameter state arrays

    def __init__(self, params: Iterable, lr: float):
        self.params = list(params)
        if not self.params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        if not lr >= 0:
            raise ValueError(f"{type(self).__name__}: lr must be >= 0, got {lr}")
        self.lr = float(lr)
        self.state: list[dict] = [{} for _ in self.params]  # per parameter: slot -> array

    def zero_grad(self) -> None:
        """Drop every gradient (``grad = None``, PyTorch's default)."""
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        for p, state in zip(self.params, self.state, strict=True):
            if p.grad is not None:
                self.update(p, state)

    def update(self, p, state: dict) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict[str, np.ndarray]:
        """{'<hyperparameter>': 0-d array, '<slot>.<i>': array of parameter i's state}."""
        out = {name: np.array(getattr(self, name)) for name in self.hyper}
        for i, state in enumerate(self.state):
            for slot, value in state.items():
                host = to_device(value, "cpu") if hasattr(value, "shape") else value
                out[f"{slot}.{i}"] = np.array(host)  # a copy: later steps do not change it
        return out

    def load_state_dict(self, state: dict) -> None:
        """Restore what ``state_dict`` returned; errors name the mismatching entry."""
        name = type(self).__name__
        missing = [h for h in self.hyper if h not in state]
        if missing:
            raise KeyError(f"{name}.load_state_dict: missing hyperparameters {missing}")
        per_param: list[dict] = [{} for _ in self.params]
        for key, value in state.items():
            if key in self.hyper:
                continue
            slot, _, index = key.rpartition(".")
            if slot not in self.slots or not index.isdigit():
                raise KeyError(f"{name}.load_state_dict: unexpected entry {key!r}")
            i = int(index)
            if i >= len(self.params):
                raise ValueError(
                    f"{name}.load_state_dict: entry {key!r} is for parameter {i}, but this "
                    f"optimiser has {len(self.params)} parameters"
                )
            per_param[i][slot] = self._restore(key, np.asarray(value), self.params[i])
        for h in self.hyper:
            setattr(self, h, type(getattr(self, h))(np.asarray(state[h]).item()))
        self.state = per_param

    def _restore(self, key: str, value: np.ndarray, p):
        if value.ndim == 0:  # a counter such as Adam's step
            return int(value)
        if value.shape != p.data.shape or value.dtype != p.data.dtype:
            raise ValueError(
                f"{type(self).__name__}.load_state_dict: {key!r} has shape {value.shape} "
                f"dtype {value.dtype}, but the parameter is {tuple(p.data.shape)} "
                f"{p.data.dtype}"
            )
        return to_device(value.copy(), device_of(p.data))


class SGD(Optimizer):
    """Stochastic gradient descent with momentum and L2 weight decay (``torch.optim.SGD``
    without dampening):

        g = grad + weight_decay * p
        buf = g (first step),  buf = momentum * buf + g (later)
        g = g + momentum * buf (nesterov)  or  g = buf
        p = p - lr * g
    """

    hyper = ("lr", "momentum", "weight_decay", "nesterov")
    slots = ("momentum_buffer",)

    def __init__(
        self,
        params: Iterable,
        lr: float,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ):
        super().__init__(params, lr)
        if momentum < 0 or weight_decay < 0:
            raise ValueError(
                f"SGD: momentum and weight_decay must be >= 0, got {momentum}, {weight_decay}"
            )
        if nesterov and momentum == 0:
            raise ValueError("SGD: nesterov needs momentum > 0, got momentum=0")
        self.momentum = float(momentum)
        self.weight_decay = float(weight_decay)
        self.nesterov = bool(nesterov)

    def update(self, p, state: dict) -> None:
        g = p.grad
        if self.weight_decay != 0:
            g = g + self.weight_decay * p.data
        if self.momentum != 0:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = g.copy()
            else:
                buf *= self.momentum
                buf += g
            g = g + self.momentum * buf if self.nesterov else buf
        p.data -= self.lr * g


class Adam(Optimizer):
    """Adam (``torch.optim.Adam``, L2 weight decay added to the gradient, no amsgrad):

        t += 1;  g = grad + weight_decay * p
        m = m + (1 - beta1) * (g - m);    v = beta2 * v + (1 - beta2) * g * g
        p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

    with t, m and v starting at zero for each parameter.
    """

    hyper = ("lr", "beta1", "beta2", "eps", "weight_decay")
    slots = ("step", "exp_avg", "exp_avg_sq")

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ):
        super().__init__(params, lr)
        if not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"Adam: betas must lie in [0, 1), got {betas}")
        if eps < 0 or weight_decay < 0:
            raise ValueError(f"Adam: eps and weight_decay must be >= 0, got {eps}, {weight_decay}")
        self.beta1, self.beta2 = float(betas[0]), float(betas[1])
        self.eps = float(eps)
        self.weight_decay = float(weight_decay)

    def update(self, p, state: dict) -> None:
        xp = array_module(p.data)
        g = p.grad
        if self.weight_decay != 0:
            g = g + self.weight_decay * p.data
        if "step" not in state:
            state["step"] = 0
            state["exp_avg"] = xp.zeros_like(p.data)
            state["exp_avg_sq"] = xp.zeros_like(p.data)
        state["step"] += 1
        t, m, v = state["step"], state["exp_avg"], state["exp_avg_sq"]
        m += (1 - self.beta1) * (g - m)  # torch's lerp(m, g, 1 - beta1)
        v *= self.beta2
        v += (1 - self.beta2) * g * g
        step_size = self.lr / (1 - self.beta1**t)
        denom = xp.sqrt(v) / (1 - self.beta2**t) ** 0.5 + self.eps
        p.data -= step_size * m / denom


class Schedule:
    """Sets ``optimizer.lr = base_lr * factor(t)`` after each ``step()``; ``t`` starts at 0."""

    def __init__(self, optimizer: Optimizer):
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.t = 0

    def factor(self, t: int) -> float:
        raise NotImplementedError

    def lr_at(self, t: int) -> float:
        return self.base_lr * self.factor(t)

    def step(self) -> None:
        self.t += 1
        self.optimizer.lr = self.lr_at(self.t)

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"t": np.array(self.t, dtype=np.int64), "base_lr": np.array(self.base_lr)}

    def load_state_dict(self, state: dict) -> None:
        missing = {"t", "base_lr"} - set(state)
        if missing:
            raise KeyError(f"{type(self).__name__}.load_state_dict: missing {sorted(missing)}")
        self.t = int(state["t"])
        self.base_lr = float(state["base_lr"])
        self.optimizer.lr = self.lr_at(self.t)


class ConstantSchedule(Schedule):
    """lr stays at its initial value."""

    def factor(self, t: int) -> float:
        return 1.0


class StepSchedule(Schedule):
    """lr = base_lr * gamma ** (t // step_size) (``torch.optim.lr_scheduler.StepLR``)."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1):
        if step_size < 1:
            raise ValueError(f"StepSchedule: step_size must be positive, got {step_size}")
        super().__init__(optimizer)
        self.step_size, self.gamma = step_size, gamma

    def factor(self, t: int) -> float:
        return self.gamma ** (t // self.step_size)


class CosineSchedule(Schedule):
    """lr = min_lr + (base_lr - min_lr) * (1 + cos(pi * t / total_steps)) / 2, held at
    ``min_lr`` after ``total_steps`` (``CosineAnnealingLR``'s closed form)."""

    def __init__(self, optimizer: Optimizer, total_steps: int, min_lr: float = 0.0):
        if total_steps < 1:
            raise ValueError(f"CosineSchedule: total_steps must be positive, got {total_steps}")
        super().__init__(optimizer)
        self.total_steps, self.min_lr = total_steps, min_lr

    def lr_at(self, t: int) -> float:
        progress = min(t, self.total_steps) / self.total_steps
        return self.min_lr + (self.base_lr - self.min_lr) * (1 + math.cos(math.pi * progress)) / 2


class PolySchedule(Schedule):
    """lr = base_lr * (1 - t / total_steps) ** power, 0 after ``total_steps`` (the "poly"
    policy of DeepLab and the FCN follow-ups; ``PolynomialLR``)."""

    def __init__(self, optimizer: Optimizer, total_steps: int, power: float = 0.9):
        if total_steps < 1:
            raise ValueError(f"PolySchedule: total_steps must be positive, got {total_steps}")
        super().__init__(optimizer)
        self.total_steps, self.power = total_steps, power

    def factor(self, t: int) -> float:
        return (1 - min(t, self.total_steps) / self.total_steps) ** self.power
