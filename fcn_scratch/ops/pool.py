"""Max pooling that records where each maximum was, and unpooling that puts values back.

    max_pool2d:   x (N, C, H, W) -> y (N, C, OH, OW), indices (N, C, OH, OW) int64
                  indices are flat positions h*W + w in each input H*W plane (PyTorch's)
                  OH = (H + 2*PH - DH*(KH-1) - 1) / SH + 1, rounded down (or up with ceil_mode)
    max_unpool2d: x (N, C, OH, OW), indices like x -> y (N, C, H, W), zeros except at indices
                  default (H, W): H = (OH - 1)*SH - 2*PH + KH

Pooling's gradient sends each output gradient to its recorded input position: a
scatter-add. Unpooling *is* that scatter-add, and its gradient is the matching gather.
Where two pooled cells share an index (overlapping windows), unpooling sums them.
"""

from typing import NamedTuple

import numpy as np

from fcn_scratch import kernels
from fcn_scratch.arguments import pair
from fcn_scratch.device import device_of, same_device
from fcn_scratch.ops.shapes import check_float, check_ndim, check_not_empty, conv_out_size


class PoolCtx(NamedTuple):
    indices: object  # (N, C, OH, OW) int64
    size: tuple  # (H, W) of the plane the indices point into


def max_pool2d_forward(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """Returns (y, indices, ctx); y and indices: (N, C, OH, OW)."""
    op = "max_pool2d"
    check_ndim(op, "x", x, 4, "(N, C, H, W)")
    check_not_empty(op, x=(x, "N", "C"))
    check_float(op, "x", x)
    kernel = pair(op, "kernel_size", kernel_size, 1)
    stride = kernel if stride is None else pair(op, "stride", stride, 1)
    padding = pair(op, "padding", padding, 0)
    dilation = pair(op, "dilation", dilation, 1)
    if any(p > k // 2 for p, k in zip(padding, kernel)):
        raise ValueError(
            f"{op}: padding must be at most half of kernel_size, got padding {padding} "
            f"with kernel_size {kernel}"
        )
    size = (x.shape[2], x.shape[3])
    out = conv_out_size(op, size, kernel, stride, padding, dilation, ceil_mode=bool(ceil_mode))
    _check_windows_reach_input(op, size, kernel, stride, padding, dilation, out)
    y, idx = kernels.for_array(x).maxpool2d_forward(x, kernel, stride, padding, dilation, out)
    return y, idx, PoolCtx(idx, size)


def _check_windows_reach_input(op, size, kernel, stride, padding, dilation, out):
    """Every window must cover at least one input cell: a window of padding alone
    (possible with dilation) has no maximum and no index to record.

    Window ``o`` starts at ``s = o*S - P``; its taps ``t`` with ``0 <= s + t*D < H`` are
    ``max(0, ceil(-s/D)) <= t < min(K, ceil((H - s)/D))``, computed for all ``o`` at once.
    Without padding every window's first tap is an input cell (conv_out_size lets no window
    start beyond the input), so there is nothing to check.
    """
    if padding == (0, 0):
        return
    for axis, (H, K, S, P, D, O) in enumerate(zip(size, kernel, stride, padding, dilation, out)):
        start = np.arange(O, dtype=np.int64) * S - P  # (O,)
        lo = np.maximum(0, -(start // D))
        hi = np.minimum(K, -((start - H) // D))
        empty = np.flatnonzero(lo >= hi)
        if empty.size:
            raise ValueError(
                f"{op}: the window at output {'row' if axis == 0 else 'column'} {empty[0]} "
                f"covers only padding (input size {tuple(size)}, kernel_size "
                f"{tuple(kernel)}, stride {tuple(stride)}, padding {tuple(padding)}, "
                f"dilation {tuple(dilation)})"
            )


def max_pool2d_backward(dy, ctx):
    """dy: (N, C, OH, OW) -> dx: (N, C, H, W)."""
    return kernels.for_array(dy).maxpool2d_backward(dy, ctx.indices, ctx.size)


def unpool_out_size(op, in_size, kernel_size, stride, padding, output_size):
    """The (H, W) that max_unpool2d fills: PyTorch's default, or output_size checked."""
    default = tuple(
        (h - 1) * s - 2 * p + k for h, k, s, p in zip(in_size, kernel_size, stride, padding)
    )
    if output_size is None:
        return default
    size = tuple(int(v) for v in output_size)[-2:]
    if len(size) != 2:
        raise ValueError(f"{op}: output_size must end in (H, W), got {output_size!r}")
    for o, d, s in zip(size, default, stride):
        if not d - s < o < d + s:
            raise ValueError(
                f"{op}: output_size {size} is not within one stride {stride} of the "
                f"default size {default}"
            )
    return size


def max_unpool2d_forward(x, indices, kernel_size, stride=None, padding=0, output_size=None):
    """Returns (y, ctx); y: (N, C, H, W) with x scattered (added) to indices in zeros."""
    op = "max_unpool2d"
    same_device(op, x=x, indices=indices)
    check_ndim(op, "x", x, 4, "(N, C, H, W)")
    check_not_empty(op, x=(x, "N", "C"))
    check_float(op, "x", x)
    kernel = pair(op, "kernel_size", kernel_size, 1)
    stride = kernel if stride is None else pair(op, "stride", stride, 1)
    padding = pair(op, "padding", padding, 0)
    if tuple(indices.shape) != tuple(x.shape):
        raise ValueError(
            f"{op}: indices must have the shape of x {tuple(x.shape)}, got {tuple(indices.shape)}"
        )
    if not np.issubdtype(indices.dtype, np.integer):
        raise TypeError(f"{op}: indices must be an integer array, got dtype {indices.dtype}")
    size = unpool_out_size(op, x.shape[2:], kernel, stride, padding, output_size)
    # Checked on the host only: on CUDA the check would cost a device-to-host sync.
    if device_of(indices) == "cpu" and indices.size:
        lo, hi = int(indices.min()), int(indices.max())
        if lo < 0 or hi >= size[0] * size[1]:
            raise ValueError(
                f"{op}: indices must lie in [0, {size[0] * size[1]}) for output size {size}, "
                f"got values in [{lo}, {hi}]"
            )
    indices = indices.astype(np.int64, copy=False)
    y = kernels.for_array(x).maxunpool2d_forward(x, indices, size)
    return y, PoolCtx(indices, size)


def max_unpool2d_backward(dy, ctx):
    """dy: (N, C, H, W) -> dx: (N, C, OH, OW), gathered at the indices."""
    return kernels.for_array(dy).maxunpool2d_backward(dy, ctx.indices)
