"""A small Tensor that remembers which op made it, and runs the ops' backwards in reverse.

micrograd's idea on arrays: each Tensor made by an op keeps its parents and a closure
``backward_fn(dy) -> (d parent_0, d parent_1, ...)``. ``loss.backward()`` orders the graph
topologically and calls the closures from the loss back to the leaves, summing the
gradients that meet at a tensor. Leaves with ``requires_grad`` accumulate into ``.grad``
(as in PyTorch: call ``zero_grad`` between steps).

Only what FCNs need is here: the ops in ``fcn_scratch.functional``, ``+`` of two tensors
of one shape (skip fusion), multiplication by a Python scalar, ``sum``, ``mean`` and
``reshape``. There is no broadcasting engine.

Inside ``with no_grad():`` ops record nothing (results never require grad), so a forward
pass for evaluation keeps no closures and frees each layer's saved arrays at once.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np

from fcn_scratch.device import array_module, check_device, device_of, is_cuda_array, to_device

_grad_enabled = True  # False inside no_grad()


def no_grad():
    """A block (or, as ``@no_grad()``, a function) in which ops build no graph."""
    return set_grad_enabled(False)


@contextmanager
def set_grad_enabled(mode: bool) -> Iterator[None]:
    """A block in which ops build a graph if ``mode`` is true, and none if it is false."""
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, bool(mode)
    try:
        yield
    finally:
        _grad_enabled = previous


def is_grad_enabled() -> bool:
    """False inside ``no_grad()``."""
    return _grad_enabled


class Tensor:
    """An array (numpy or cupy) with an optional gradient.

    data: the array; grad: an array of data's shape, or None; requires_grad: whether
    backward should compute a gradient for this tensor.
    """

    def __init__(self, data, requires_grad: bool = False):
        if isinstance(data, Tensor):
            data = data.data
        self.data = data if is_cuda_array(data) else np.asarray(data)
        self.requires_grad = bool(requires_grad)
        if self.requires_grad and self.data.dtype not in (np.float32, np.float64):
            raise TypeError(
                "Tensor: requires_grad needs a float32 or float64 array, "
                f"got dtype {self.data.dtype}"
            )
        self.grad = None
        self._parents: tuple[Tensor, ...] = ()
        self._backward_fn: Callable | None = None
        self._op = ""

    @classmethod
    def from_op(cls, data, parents, backward_fn, op: str) -> "Tensor":
        """An op's result: keeps parents and backward closure if any parent needs a grad
        (and grad is enabled: see ``no_grad``)."""
        out = cls(data)
        if _grad_enabled and any(p.requires_grad for p in parents):
            out.requires_grad = True
            out._parents = tuple(parents)
            out._backward_fn = backward_fn
            out._op = op
        return out

    # -- properties --------------------------------------------------------------------
    @property
    def shape(self) -> tuple:
        return tuple(self.data.shape)

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def device(self) -> str:
        return device_of(self.data)

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def is_leaf(self) -> bool:
        return self._backward_fn is None

    def __repr__(self) -> str:
        made = f", op={self._op}" if self._op else ""
        return (
            f"Tensor(shape={self.shape}, dtype={self.dtype}, device='{self.device}', "
            f"requires_grad={self.requires_grad}{made})"
        )

    def __len__(self) -> int:
        return len(self.data)

    # -- conversion ----------------------------------------------------------------------
    def numpy(self) -> np.ndarray:
        """The data as a numpy array (copied from the GPU if needed)."""
        return to_device(self.data, "cpu")

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        """Lets numpy functions take a Tensor: ``np.asarray(t)`` is ``t.numpy()``."""
        return np.asarray(self.numpy(), dtype=dtype)

    def item(self) -> float:
        return self.numpy().item()

    def detach(self) -> "Tensor":
        """The same data, cut from the graph."""
        return Tensor(self.data)

    def to(self, device: str) -> "Tensor":
        """A copy on ``device`` ('cpu' or 'cuda'); gradients flow back to this tensor."""
        check_device(device)
        if device == self.device:
            return self
        source = self.device
        return Tensor.from_op(
            to_device(self.data, device), (self,), lambda dy: (to_device(dy, source),), "to"
        )

    # -- the few arithmetic ops FCNs need -----------------------------------------------------
    def __add__(self, other: "Tensor") -> "Tensor":
        if not isinstance(other, Tensor):
            raise TypeError(f"add: expected a Tensor, got {type(other).__name__}")
        if self.shape != other.shape:
            raise ValueError(
                f"add: shapes must match (crop first), got {self.shape} and {other.shape}"
            )
        if self.dtype != other.dtype:
            raise TypeError(f"add: mixed dtypes: {self.dtype} and {other.dtype}")
        if self.device != other.device:
            raise ValueError(
                f"add: both tensors must be on one device, got '{self.device}' and '{other.device}'"
            )
        # Each parent gets its own array: two leaves must never share one .grad.
        return Tensor.from_op(
            self.data + other.data, (self, other), lambda dy: (dy, dy.copy()), "add"
        )

    def __mul__(self, scale: float) -> "Tensor":
        if isinstance(scale, Tensor) or not np.isscalar(scale):
            raise TypeError(
                f"mul: a Tensor can be multiplied by a Python scalar, got {type(scale).__name__}"
            )
        s = self.data.dtype.type(scale)
        return Tensor.from_op(self.data * s, (self,), lambda dy: (dy * s,), "mul")

    __rmul__ = __mul__

    def sum(self) -> "Tensor":
        xp = array_module(self.data)
        shape, dtype = self.data.shape, self.data.dtype
        return Tensor.from_op(
            self.data.sum(), (self,), lambda dy: (dy * xp.ones(shape, dtype=dtype),), "sum"
        )

    def mean(self) -> "Tensor":
        return self.sum() * (1.0 / self.data.size)

    def reshape(self, *shape) -> "Tensor":
        old = self.data.shape
        return Tensor.from_op(
            self.data.reshape(*shape), (self,), lambda dy: (dy.reshape(old),), "reshape"
        )

    # -- backward ------------------------------------------------------------------------
    def backward(self, grad=None) -> None:
        """Compute gradients of this tensor with respect to every leaf that requires one.

        grad: the gradient flowing into this tensor (same shape); may be omitted for a
        scalar, where it is 1.
        """
        if not self.requires_grad:
            raise RuntimeError("backward: this tensor does not require grad (no input needed one)")
        xp = array_module(self.data)
        if grad is None:
            if self.data.size != 1:
                raise ValueError(
                    f"backward: grad must be given for a non-scalar tensor of shape {self.shape}"
                )
            grad = xp.ones_like(self.data)
        grad = grad.data if isinstance(grad, Tensor) else xp.asarray(grad, dtype=self.dtype)
        if tuple(grad.shape) != self.shape:
            raise ValueError(
                f"backward: grad must have shape {self.shape}, got {tuple(grad.shape)}"
            )

        grads = {id(self): grad}
        for t in reversed(self._topological_order()):
            g = grads.pop(id(t), None)
            if g is None:
                continue
            if t.is_leaf:
                t.grad = g if t.grad is None else t.grad + g
                continue
            for parent, pg in zip(t._parents, t._backward_fn(g)):
                if parent.requires_grad and pg is not None:
                    key = id(parent)
                    grads[key] = pg if key not in grads else grads[key] + pg

    def _topological_order(self) -> list["Tensor"]:
        """Tensors of the graph, each after its parents (iterative depth-first search)."""
        order, seen, stack = [], set(), [(self, False)]
        while stack:
            t, expanded = stack.pop()
            if expanded:
                order.append(t)
                continue
            if id(t) in seen:
                continue
            seen.add(id(t))
            stack.append((t, True))
            stack.extend((p, False) for p in t._parents if p.requires_grad and id(p) not in seen)
        return order


def as_tensor(x) -> Tensor:
    """A Tensor as it is, or an array wrapped (with no gradient)."""
    return x if isinstance(x, Tensor) else Tensor(x)
