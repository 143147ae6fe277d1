"""Argument checking and output-size arithmetic shared by the ops.

Every check raises ValueError or TypeError whose message names the op, the argument,
what was expected and what came, e.g. ``conv2d: x must be 4-D (N, C, H, W), got 3-D
shape (3, 8, 8)``. Window arguments (an int or a pair) are normalised by
``fcn_scratch.arguments.pair``, which nn uses too.
"""

import numpy as np


def check_float(op: str, name: str, a) -> None:
    """Inputs must be float32 or float64: no silent casting of ints or halves."""
    if a.dtype not in (np.float32, np.float64):
        raise TypeError(f"{op}: {name} must be float32 or float64, got dtype {a.dtype}")


def check_ndim(op: str, name: str, a, ndim: int, layout: str) -> None:
    if a.ndim != ndim:
        raise ValueError(
            f"{op}: {name} must be {ndim}-D {layout}, got {a.ndim}-D shape {tuple(a.shape)}"
        )


def check_same_dtype(op: str, **arrays) -> None:
    """All named arrays (None skipped) share one float dtype."""
    items = [(name, a) for name, a in arrays.items() if a is not None]
    for name, a in items:
        check_float(op, name, a)
    first_name, first = items[0]
    for name, a in items[1:]:
        if a.dtype != first.dtype:
            raise TypeError(
                f"{op}: mixed dtypes: {first_name} is {first.dtype} but {name} is {a.dtype}"
            )


def conv_out_size(op, in_size, kernel_size, stride, padding, dilation, ceil_mode=False):
    """Output size of a sliding window, per axis:

        OH = floor_or_ceil((H + 2*PH - DH*(KH-1) - 1) / SH) + 1

    With ``ceil_mode`` (pooling only), PyTorch's rule: a window may not start in the
    bottom/right padding, so the last one is dropped if ``(OH-1)*SH >= H + PH``.
    Raises ValueError if the result is empty.
    """
    out = []
    for H, K, S, P, D in zip(in_size, kernel_size, stride, padding, dilation):
        span = H + 2 * P - D * (K - 1) - 1
        o = (-(-span // S) if ceil_mode else span // S) + 1
        if ceil_mode and (o - 1) * S >= H + P:
            o -= 1
        out.append(o)
    if min(out) < 1:
        raise ValueError(
            f"{op}: output would be empty: input size {tuple(in_size)} with kernel_size "
            f"{tuple(kernel_size)}, stride {tuple(stride)}, padding {tuple(padding)}, "
            f"dilation {tuple(dilation)} gives output size {tuple(out)}"
        )
    return tuple(out)


def conv_transpose_out_size(in_size, kernel_size, stride, padding, dilation, output_padding):
    """Output size of a transposed convolution, per axis (the inverse of conv_out_size):

    H_out = (H - 1)*SH - 2*PH + DH*(KH-1) + OPH + 1
    """
    return tuple(
        (H - 1) * S - 2 * P + D * (K - 1) + OP + 1
        for H, K, S, P, D, OP in zip(
            in_size, kernel_size, stride, padding, dilation, output_padding
        )
    )


def check_not_empty(op: str, **arrays) -> None:
    """Each argument is ``name=(array, axis names...)``: those leading axes must not be 0.

    The NCHW ops take no empty batches, channels or classes (PyTorch does; here they would
    end in a reshape error), e.g. ``check_not_empty("conv2d", x=(x, "N", "C_in"))``.
    """
    for name, (a, *axes) in arrays.items():
        for axis, size in zip(axes, a.shape):
            if size == 0:
                raise ValueError(
                    f"{op}: {name} has {axis} = 0 (shape {tuple(a.shape)}); empty batches, "
                    "channels and classes are not supported"
                )
