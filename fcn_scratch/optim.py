"""Optimisers (SGD, Adam, AdamW) and learning-rate schedules, with PyTorch's update rules.

An optimiser updates ``p.data`` in place from ``p.grad`` for each parameter ``p`` (a Tensor;
arrays NumPy or CuPy), skipping parameters whose ``grad`` is None. The arithmetic follows
``torch.optim``'s formulas, so the two agree to rounding (tests check this). Each update is
one small function working in place: ``sgd_update`` with ``out=`` ufuncs on two scratch
arrays, so a step makes no temporaries of the parameters' size, and ``adam_update`` in the
kernels (on the CPU one pass over parameter, gradient and moments), which ``Adam.step``
calls once for all the parameters of a group, on flat arrays.

Parameter groups work as in PyTorch: pass a list of tensors, or a list of dicts each with
``"params"`` and any hyperparameters that differ from the constructor's defaults.
``optimizer.param_groups`` is that list of dicts (with every hyperparameter filled in);
schedules, and you, may change ``group["lr"]`` between steps. The FCN paper's recipe,
biases at twice the learning rate and without weight decay:

    weights = [p for name, p in model.named_parameters() if not name.endswith("bias")]
    biases = [p for name, p in model.named_parameters() if name.endswith("bias")]
    optimizer = optim.SGD(
        [{"params": weights}, {"params": biases, "lr": 2e-4, "weight_decay": 0.0}],
        lr=1e-4, momentum=0.99, weight_decay=5e-4,
    )

``state_dict()`` holds only NumPy arrays (hyperparameters per group, moments per parameter
index), so a checkpoint ``.npz`` stores it without pickle; ``load_state_dict`` restores
moments onto the parameters' devices and the hyperparameters too, as PyTorch does.

Schedules (``fcn_scratch.schedules``, exported here too) set every group's ``lr`` from a
closed formula of the step count and that group's initial lr, after an optional linear
warm-up.
"""

from collections.abc import Iterable

import numpy as np

from fcn_scratch import kernels
from fcn_scratch.autograd import Tensor
from fcn_scratch.device import array_module, device_of, to_device
from fcn_scratch.schedules import (
    ConstantSchedule,
    CosineSchedule,
    PolySchedule,
    Schedule,
    StepSchedule,
)


class Optimizer:
    """Parameter groups, per-parameter state, and the step loop; subclasses give
    ``defaults`` (hyperparameter -> default), ``slots`` and ``update``."""

    slots: tuple[str, ...] = ()  # per-parameter state arrays

    def __init__(self, params: Iterable, defaults: dict):
        name = type(self).__name__
        groups = list(params)
        if not groups:
            raise ValueError(f"{name}: got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        self.defaults = dict(defaults)
        self.param_groups: list[dict] = []
        self.params: list[Tensor] = []  # every parameter, in group order (state index)
        for group in groups:
            self.add_param_group(group)
        self.state: list[dict] = [{} for _ in self.params]  # per parameter: slot -> array
        self._work: dict = {}  # (device, dtype) -> two flat scratch arrays

    def add_param_group(self, group: dict) -> None:
        """Add a group: {"params": [...], hyperparameter: value, ...}; unnamed
        hyperparameters take the constructor's values."""
        name, index = type(self).__name__, len(self.param_groups)
        if not isinstance(group, dict) or "params" not in group:
            raise TypeError(
                f"{name}: parameter group {index} must be a dict with a 'params' list, "
                f"got {type(group).__name__}"
            )
        unknown = sorted(set(group) - {"params"} - set(self.defaults))
        if unknown:
            raise ValueError(
                f"{name}: parameter group {index} has unknown keys {unknown}; expected "
                f"'params' and any of {sorted(self.defaults)}"
            )
        params = group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        if not params:
            raise ValueError(f"{name}: parameter group {index} has no parameters")
        seen = {id(p) for p in self.params}
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError(
                    f"{name}: parameter group {index} holds a {type(p).__name__}, expected Tensors"
                )
            if id(p) in seen:
                raise ValueError(f"{name}: a parameter appears twice (group {index})")
            seen.add(id(p))
        full = {**self.defaults, **group, "params": params}
        self.check_hyperparameters(full, f"{name}: parameter group {index}")
        self.param_groups.append(full)
        self.params.extend(params)
        if hasattr(self, "state"):
            self.state.extend({} for _ in params)

    def check_hyperparameters(self, group: dict, where: str) -> None:
        if not group["lr"] >= 0:
            raise ValueError(f"{where}: lr must be >= 0, got {group['lr']}")

    @property
    def lr(self) -> float:
        """The first group's learning rate (all of them, unless groups were given)."""
        return self.param_groups[0]["lr"]

    def zero_grad(self) -> None:
        """Drop every gradient (``grad = None``, PyTorch's default)."""
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        i = 0
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self.update(p, self.state[i], group, self._scratch(p.data))
                i += 1

    def update(self, p: Tensor, state: dict, group: dict, work: tuple) -> None:
        raise NotImplementedError

    def _scratch(self, a) -> tuple:
        """Two scratch arrays shaped like ``a``: views of flat buffers kept between steps."""
        key = (device_of(a), a.dtype)
        flat = self._work.get(key)
        if flat is None or flat[0].size < a.size:
            size = max(p.data.size for p in self.params if p.data.dtype == a.dtype)
            xp = array_module(a)
            flat = self._work[key] = (xp.empty(size, a.dtype), xp.empty(size, a.dtype))
        return tuple(f[: a.size].reshape(a.shape) for f in flat)

    # ---- state -------------------------------------------------------------------------

    def state_dict(self) -> dict[str, np.ndarray]:
        """{'group<g>.<hyperparameter>': array, 'group<g>.params': the group's parameter
        indices, '<slot>.<i>': array of parameter i's state}."""
        out, start = {}, 0
        for g, group in enumerate(self.param_groups):
            for key in self.defaults:
                out[f"group{g}.{key}"] = np.array(group[key])
            n = len(group["params"])
            out[f"group{g}.params"] = np.arange(start, start + n, dtype=np.int64)
            start += n
        for i, state in enumerate(self.state):
            for slot, value in state.items():
                host = to_device(value, "cpu") if hasattr(value, "shape") else value
                out[f"{slot}.{i}"] = np.array(host)  # a copy: later steps do not change it
        return out

    def load_state_dict(self, state: dict) -> None:
        """Restore what ``state_dict`` returned; errors name the mismatching entry."""
        name = type(self).__name__
        hypers = []
        for g, group in enumerate(self.param_groups):
            wanted = [f"group{g}.{k}" for k in (*self.defaults, "params")]
            missing = [k for k in wanted if k not in state]
            if missing:
                raise KeyError(f"{name}.load_state_dict: missing entries {missing}")
            count = len(np.asarray(state[f"group{g}.params"]))
            if count != len(group["params"]):
                raise ValueError(
                    f"{name}.load_state_dict: group {g} has {count} parameters in the state, "
                    f"but this optimiser's group {g} has {len(group['params'])}"
                )
            hypers.append({k: _hyper_value(state[f"group{g}.{k}"]) for k in self.defaults})
        per_param: list[dict] = [{} for _ in self.params]
        for key, value in state.items():
            head, _, tail = key.partition(".")
            if head.startswith("group") and head[5:].isdigit():
                if int(head[5:]) >= len(self.param_groups):
                    raise ValueError(
                        f"{name}.load_state_dict: entry {key!r} is for a group this "
                        f"optimiser does not have (it has {len(self.param_groups)})"
                    )
                if tail != "params" and tail not in self.defaults:
                    raise KeyError(f"{name}.load_state_dict: unexpected entry {key!r}")
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
        for group, values in zip(self.param_groups, hypers, strict=True):
            group.update(values)
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


def _hyper_value(a):
    """A saved hyperparameter back as a Python value (a tuple for betas)."""
    a = np.asarray(a)
    if a.ndim == 1:
        return tuple(float(v) for v in a)
    return a.item()


# ---- the per-parameter updates -----------------------------------------------------------


def sgd_update(param, grad, buf, lr, momentum, weight_decay, nesterov, work):
    """One SGD step of one parameter, in place (``torch.optim.SGD`` without dampening):

        g = grad + weight_decay * p
        buf = g (first step),  buf = momentum * buf + g (later)
        g = g + momentum * buf (nesterov)  or  g = buf
        p = p - lr * g

    buf: the momentum buffer, or None on the first step (returns the new one, or None
    without momentum). work: two scratch arrays shaped like param.
    """
    xp, (a, b) = array_module(param), work
    g = grad
    if weight_decay != 0:
        g = xp.multiply(param, weight_decay, out=a)
        g += grad
    if momentum != 0:
        if buf is None:
            buf = g.copy()
        else:
            buf *= momentum
            buf += g
        if nesterov:
            g = xp.multiply(buf, momentum, out=b)
            g += a if weight_decay != 0 else grad
        else:
            g = buf
    step = xp.multiply(g, lr, out=a)
    param -= step
    return buf


def adam_update(param, grad, m, v, t, lr, beta1, beta2, eps, weight_decay, decoupled, work):
    """One Adam (``decoupled=False``) or AdamW step of one parameter, in place, at step t:

        Adam:  g = grad + weight_decay * p          AdamW:  p = p * (1 - lr * weight_decay)
        m = m + (1 - beta1) * (g - m);    v = beta2 * v + (1 - beta2) * g * g
        p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

    m, v: the moment arrays, updated in place. The kernels do it: on the CPU in one pass
    over the four arrays (a dozen array operations cost more than the arithmetic for the
    small parameters of an FCN); ``work`` is not needed.
    """
    kernels.for_array(param).adam_update(
        param, grad, m, v, t, lr, beta1, beta2, eps, weight_decay, decoupled
    )


class SGD(Optimizer):
    """Stochastic gradient descent with momentum and L2 weight decay: see ``sgd_update``."""

    slots = ("momentum_buffer",)

    def __init__(
        self,
        params: Iterable,
        lr: float,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ):
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
        super().__init__(params, defaults)

    def check_hyperparameters(self, group: dict, where: str) -> None:
        super().check_hyperparameters(group, where)
        if group["momentum"] < 0 or group["weight_decay"] < 0:
            raise ValueError(
                f"{where}: momentum and weight_decay must be >= 0, got {group['momentum']}, "
                f"{group['weight_decay']}"
            )
        if group["nesterov"] and group["momentum"] == 0:
            raise ValueError(f"{where}: nesterov needs momentum > 0, got momentum=0")

    def update(self, p: Tensor, state: dict, group: dict, work: tuple) -> None:
        buf = sgd_update(
            p.data,
            p.grad,
            state.get("momentum_buffer"),
            group["lr"],
            group["momentum"],
            group["weight_decay"],
            group["nesterov"],
            work,
        )
        if buf is not None:
            state["momentum_buffer"] = buf


def adjacent(arrays: list):
    """The NumPy arrays as one flat view when they lie one after the other in memory
    (C-contiguous, one dtype, each starting where the one before ends, as the parameters
    and the summed gradients of ``lane_processes.ProcessLanes`` do), else None."""
    first = arrays[0]
    address = first.ctypes.data if type(first) is np.ndarray else None  # not a device array
    for a in arrays:
        if not (
            type(a) is np.ndarray
            and a.dtype == first.dtype
            and a.flags.c_contiguous
            and a.ctypes.data == address
        ):
            return None
        address += a.nbytes
    total = sum(a.size for a in arrays)
    return np.lib.stride_tricks.as_strided(first.reshape(-1), (total,), (first.itemsize,))


class Adam(Optimizer):
    """Adam (``torch.optim.Adam``, L2 weight decay added to the gradient, no amsgrad):
    see ``adam_update``."""

    slots = ("step", "exp_avg", "exp_avg_sq")
    decoupled = False  # AdamW: weight decay applied to the parameter, not the gradient

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ):
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)
        super().__init__(params, defaults)
        self._moments: dict = {}  # group index -> (parameter indices, flat m, flat v)

    def check_hyperparameters(self, group: dict, where: str) -> None:
        super().check_hyperparameters(group, where)
        betas = group["betas"]
        if len(betas) != 2 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"{where}: betas must be two numbers in [0, 1), got {betas}")
        if group["eps"] < 0 or group["weight_decay"] < 0:
            raise ValueError(
                f"{where}: eps and weight_decay must be >= 0, got {group['eps']}, "
                f"{group['weight_decay']}"
            )

    def step(self) -> None:
        """Update every parameter that has a gradient.

        The parameters of a group that share dtype, device and step count are updated by
        one ``adam_update`` over flat arrays (for an FCN's few dozen small parameters, one
        call per parameter costs more than the arithmetic): their moments live in one flat
        array each (``state[i]["exp_avg"]`` and ``["exp_avg_sq"]`` are views of it), and
        parameters and gradients are gathered into flat arrays, the new values copied
        back; where they already lie one after the other in memory (``adjacent``: in
        training with lane processes), they are updated where they are. Element by
        element the arithmetic is the per-parameter update's.
        """
        start = 0
        for g, group in enumerate(self.param_groups):
            buckets: dict = {}  # (device, dtype, step count) -> parameter indices
            for i in range(start, start + len(group["params"])):
                data = self.params[i].data
                if self.params[i].grad is not None:
                    key = (device_of(data), data.dtype, self.state[i].get("step", 0))
                    buckets.setdefault(key, []).append(i)
            start += len(group["params"])
            for (_, _, t), indices in buckets.items():
                self._update(g, indices, t + 1)

    def _update(self, g: int, indices: list[int], t: int) -> None:
        """Step ``t`` of the parameters ``indices`` of group ``g``, all at once."""
        group, params = self.param_groups[g], [self.params[i] for i in indices]
        m, v = self._flat_moments(g, indices)
        xp = array_module(params[0].data)
        flat = adjacent([p.data for p in params])  # a view: updated in place
        in_place = flat is not None
        if not in_place:
            flat = xp.concatenate([p.data.reshape(-1) for p in params])
        grad = adjacent([p.grad for p in params])
        if grad is None:
            grad = xp.concatenate([p.grad.reshape(-1) for p in params])
        beta1, beta2 = group["betas"]
        adam_update(
            flat,
            grad,
            m,
            v,
            t,
            group["lr"],
            beta1,
            beta2,
            group["eps"],
            group["weight_decay"],
            self.decoupled,
            None,
        )
        offset = 0
        for i, p in zip(indices, params):
            if not in_place:
                p.data[...] = flat[offset : offset + p.data.size].reshape(p.data.shape)
            offset += p.data.size
            self.state[i]["step"] = t

    def _flat_moments(self, g: int, indices: list[int]) -> tuple:
        """Flat m and v for these parameters, the per-parameter state entries views of
        them. Built (from the state's values, zeros where there are none) when the set of
        parameters changes or the state was replaced (``load_state_dict``)."""
        key = tuple(indices)
        cached = self._moments.get(g)
        if cached is not None and cached[0] == key:
            _, m, v = cached
            if all(
                self.state[i].get("exp_avg") is not None
                and self.state[i]["exp_avg"].base is m
                and self.state[i]["exp_avg_sq"].base is v
                for i in indices
            ):
                return m, v
        data = self.params[indices[0]].data
        xp, total = array_module(data), sum(self.params[i].data.size for i in indices)
        m, v = xp.zeros(total, data.dtype), xp.zeros(total, data.dtype)
        offset = 0
        for i in indices:
            shape, size, state = self.params[i].data.shape, self.params[i].data.size, self.state[i]
            for slot, flat in (("exp_avg", m), ("exp_avg_sq", v)):
                if slot in state:
                    flat[offset : offset + size] = state[slot].reshape(-1)
                state[slot] = flat[offset : offset + size].reshape(shape)
            offset += size
        self._moments[g] = (key, m, v)
        return m, v


class AdamW(Adam):
    """Adam with decoupled weight decay (``torch.optim.AdamW``, Loshchilov & Hutter): the
    parameter shrinks by ``lr * weight_decay`` each step instead of an L2 term in the
    gradient. Default weight_decay 0.01, as torch's."""

    decoupled = True

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
    ):
        super().__init__(params, lr, betas, eps, weight_decay)


__all__ = [
    "SGD",
    "Adam",
    "AdamW",
    "ConstantSchedule",
    "CosineSchedule",
    "Optimizer",
    "PolySchedule",
    "Schedule",
    "StepSchedule",
    "adam_update",
    "sgd_update",
]
