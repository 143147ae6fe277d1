"""ReLU and dropout as stateless forward/backward pairs. Any shape; y has the shape of x."""

from fcn_scratch import kernels
from fcn_scratch.device import array_module
from fcn_scratch.ops.shapes import check_float


def relu_forward(x):
    """y = max(x, 0) (NaN stays NaN, -inf gives 0). Returns (y, ctx), ctx = y itself:
    x > 0 exactly where y > 0."""
    check_float("relu", "x", x)
    y = array_module(x).maximum(x, x.dtype.type(0))
    return y, y


def relu_backward(dy, y):
    """dx = dy where y > 0, else 0 (a select, not dy * mask: inf * 0 would be NaN)."""
    return kernels.for_array(dy).relu_backward(dy, y)


def dropout_forward(x, p, generator):
    """Zero each element with probability p and scale the rest by 1/(1-p) (inverted dropout).

    generator: a numpy (or, for CUDA arrays, cupy) random Generator. Returns (y, ctx),
    ctx the scaled mask, in x's dtype.
    """
    check_float("dropout", "x", x)
    if not 0 <= p < 1:
        raise ValueError(f"dropout: p must be in [0, 1), got {p}")
    xp = array_module(x)
    keep = generator.random(x.shape, dtype=x.dtype) >= p
    mask = keep.astype(x.dtype) * xp.asarray(1 / (1 - p), dtype=x.dtype)
    return x * mask, mask


def dropout_backward(dy, mask):
    return dy * mask
