"""Module: parameters, buffers and sub-modules found from attributes; state dicts, modes,
devices.

A module's parameters are the ``Tensor`` attributes it holds, its children the ``Module``
attributes, both in the order they were first assigned (a class's ``__init__`` order).
There is no registration step for them: ``self.weight = Tensor(..., requires_grad=True)``
makes a parameter, ``self.conv1 = Conv2d(...)`` a child. Buffers, state that is saved and
moved but not trained (BatchNorm's running statistics), are arrays named with
``self.register_buffer("running_mean", np.zeros(C))`` as in torch: other array attributes
(constants, caches) stay out of state dicts. Lists of modules are not searched; use
``ModuleList`` or ``Sequential``. A frozen parameter (``requires_grad=False``, e.g. a fixed
bilinear upsampling kernel) is still a parameter: it is saved and loaded, and optimisers
skip it.
"""

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import NamedTuple

import numpy as np

from fcn_scratch.autograd import Tensor
from fcn_scratch.device import check_device, device_of, is_cuda_array, to_device

# While ``observe_calls`` is active: a function called as f(module, args, output) after
# every module call (used by ``summary`` to record output shapes). None otherwise.
_call_observer = None


@contextmanager
def observe_calls(callback):
    """Call ``callback(module, args, output)`` after every module's forward, in this block."""
    global _call_observer
    previous, _call_observer = _call_observer, callback
    try:
        yield
    finally:
        _call_observer = previous


class LoadResult(NamedTuple):
    missing_keys: list[str]
    unexpected_keys: list[str]


class Module:
    """Base class of layers and models: subclasses set attributes and define ``forward``."""

    def __init__(self) -> None:
        self.training = True
        self._buffer_names: list[str] = []

    def register_buffer(self, name: str, array) -> None:
        """Hold ``array`` (numpy or cupy) as attribute ``name``, saved in ``state_dict``,
        loaded in place and moved by ``to``."""
        if not _is_array(array):
            raise TypeError(
                f"{type(self).__name__}.register_buffer: {name!r} must be a numpy or cupy "
                f"array, got {type(array).__name__}"
            )
        setattr(self, name, array)
        if name not in self._buffer_names:
            self._buffer_names.append(name)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__}: forward is not defined")

    def __call__(self, *args, **kwargs):
        output = self.forward(*args, **kwargs)
        if _call_observer is not None:
            _call_observer(self, args, output)
        return output

    # ---- structure -------------------------------------------------------------------

    def _attributes(self) -> Iterator[tuple[str, object]]:
        for name, value in vars(self).items():
            if isinstance(value, (list, tuple)) and any(
                isinstance(v, (Module, Tensor)) for v in value
            ):
                raise TypeError(
                    f"{type(self).__name__}.{name}: a {type(value).__name__} of modules or "
                    "tensors is not searched for parameters; use ModuleList, Sequential or "
                    "attributes"
                )
            yield name, value

    def named_children(self) -> Iterator[tuple[str, "Module"]]:
        for name, value in self._attributes():
            if isinstance(value, Module):
                yield name, value

    def children(self) -> Iterator["Module"]:
        for _, child in self.named_children():
            yield child

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, "Module"]]:
        """This module (name ``prefix``) and all descendants, depth first, dotted names."""
        yield prefix, self
        for name, child in self.named_children():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self) -> Iterator["Module"]:
        for _, module in self.named_modules():
            yield module

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Tensor]]:
        """All parameters in attribute order, dotted names; a shared tensor appears once."""
        seen: set[int] = set()
        for name, p in self._named_parameters_all(prefix):
            if id(p) not in seen:
                seen.add(id(p))
                yield name, p

    def _named_parameters_all(self, prefix: str) -> Iterator[tuple[str, Tensor]]:
        for name, value in self._attributes():
            full = f"{prefix}.{name}" if prefix else name
            if isinstance(value, Tensor):
                yield full, value
            elif isinstance(value, Module):
                yield from value._named_parameters_all(full)

    def parameters(self) -> Iterator[Tensor]:
        for _, p in self.named_parameters():
            yield p

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, object]]:
        """All buffers (see ``register_buffer``) in attribute order, dotted names."""
        for name, value in self._attributes():
            full = f"{prefix}.{name}" if prefix else name
            if name in self._buffer_names:
                yield full, value
            elif isinstance(value, Module):
                yield from value.named_buffers(full)

    def buffers(self) -> Iterator[object]:
        for _, b in self.named_buffers():
            yield b

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(
            int(np.prod(p.shape))
            for p in self.parameters()
            if p.requires_grad or not trainable_only
        )

    # ---- state -----------------------------------------------------------------------

    def _named_state(self) -> dict[str, object]:
        """The arrays a state dict holds: parameters' data, then buffers, by dotted name."""
        return {
            **{name: p.data for name, p in self.named_parameters()},
            **dict(self.named_buffers()),
        }

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of all parameters and buffers as NumPy arrays (on the host), keyed by
        dotted name."""
        state = self._named_state()
        return {name: np.array(to_device(a, "cpu"), copy=True) for name, a in state.items()}

    def load_state_dict(self, state: dict, strict: bool = True) -> LoadResult:
        """Copy arrays from ``state`` into the parameters and buffers, in place, on their
        devices.

        Every key, shape and dtype is checked before anything is written, so a failed load
        leaves the module unchanged. With ``strict``, missing or unexpected keys are errors;
        without it they are returned. Shape and dtype mismatches are always errors. All
        failures raise ValueError.
        """
        own = self._named_state()
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        name = type(self).__name__
        if strict and (missing or unexpected):
            raise ValueError(
                f"{name}.load_state_dict: missing keys {missing}, unexpected keys {unexpected}"
            )
        for key, a in own.items():
            if key not in state:
                continue
            value = state[key]
            if not (hasattr(value, "shape") and hasattr(value, "dtype")):
                raise ValueError(
                    f"{name}.load_state_dict: {key!r} must be an array, got {type(value).__name__}"
                )
            if tuple(value.shape) != tuple(a.shape):
                raise ValueError(
                    f"{name}.load_state_dict: {key!r} expected shape {tuple(a.shape)}, "
                    f"got {tuple(value.shape)}"
                )
            if value.dtype != a.dtype:
                raise ValueError(
                    f"{name}.load_state_dict: {key!r} expected dtype {a.dtype}, got {value.dtype}"
                )
        for key, a in own.items():
            if key in state:
                a[...] = to_device(state[key], device_of(a))
        return LoadResult(missing, unexpected)

    # ---- modes and devices -----------------------------------------------------------

    def train(self, mode: bool = True) -> "Module":
        """Set the ``training`` flag here and in all descendants (Dropout reads it)."""
        for module in self.modules():
            module.training = mode
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def to(self, device: str) -> "Module":
        """Move every parameter (and its gradient) and every buffer to ``device`` in place;
        returns self."""
        check_device(device)
        for p in self.parameters():
            p.data = to_device(p.data, device)
            if p.grad is not None:
                p.grad = to_device(p.grad, device)
        for module in self.modules():
            for name in module._buffer_names:
                setattr(module, name, to_device(getattr(module, name), device))
        return self

    def zero_grad(self) -> None:
        """Forget all gradients (set them to None, so the next backward starts afresh)."""
        for p in self.parameters():
            p.grad = None

    def requires_grad_(self, requires_grad: bool = True) -> "Module":
        """Set ``requires_grad`` of every parameter: ``model.backbone.requires_grad_(False)``
        freezes a backbone (optimisers then skip it). Returns self."""
        for p in self.parameters():
            p.requires_grad = bool(requires_grad)
        return self

    def apply(self, fn: Callable[["Module"], None]) -> "Module":
        """Call ``fn(module)`` on every descendant, then on this module (torch's order,
        children first); e.g. a custom initialisation. Returns self."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    def summary(self, input_shape: tuple[int, ...], print_table: bool = True):
        """Per-layer output shapes, parameters and multiply-accumulates; see nn.summary."""
        from fcn_scratch.nn.summary import summary

        return summary(self, input_shape, print_table=print_table)

    # ---- printing --------------------------------------------------------------------

    def extra_repr(self) -> str:
        """The arguments shown between the parentheses of this module's repr."""
        return ""

    def __repr__(self) -> str:
        children = list(self.named_children())
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not children:
            return head + ")"
        lines = [head]
        for name, child in children:
            text = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {text}")
        return "\n".join(lines) + "\n)"


def _is_array(value) -> bool:
    return isinstance(value, np.ndarray) or is_cuda_array(value)


class ModuleList(Module):
    """A list of modules whose parameters are found; children are named ``"0"``, ``"1"``..."""

    def __init__(self, modules: Iterable[Module] = ()) -> None:
        super().__init__()
        self.extend(modules)

    def append(self, module: Module) -> "ModuleList":
        if not isinstance(module, Module):
            raise TypeError(
                f"{type(self).__name__}: argument {len(self)} must be a Module, got "
                f"{type(module).__name__}"
            )
        setattr(self, str(len(self)), module)
        return self

    def extend(self, modules: Iterable[Module]) -> "ModuleList":
        for module in modules:
            self.append(module)
        return self

    def __len__(self) -> int:
        return sum(1 for _ in self.children())

    def __getitem__(self, index: int) -> Module:
        return list(self.children())[index]

    def __iter__(self) -> Iterator[Module]:
        return self.children()


class Sequential(ModuleList):
    """Modules applied one after another; children are named ``"0"``, ``"1"``, ..."""

    def __init__(self, *modules: Module) -> None:
        super().__init__(modules)

    def forward(self, x):
        for module in self.children():
            x = module(x)
        return x
