"""Transposed convolutions whose kernel is a multiple of the stride, phase by phase.

FCN's upsampling layers are transposed convolutions with kernel 2f and stride f. Done as
the adjoint of im2col (``conv.conv_transpose2d_forward`` elsewhere), each input pixel's
KH*KW products are written out, ``col = W^T x`` with C_out*KH*KW rows, and col2im adds
the overlapping patches: (KH/SH)*(KW/SW) of them on every output pixel, 4 for FCN's. The
columns are 4x the output, and the adds scatter with a stride of f.

Seen from one output pixel instead: with ``h + PH = q*SH + a`` (its phase a < SH), the
taps that reach row h are i = a + SH*t for t < T = KH/SH, from input rows q - t. So the
output pixels of one phase (a, b) are a T x TW correlation of the input (TW = KW/SW) with
the taps of that phase, flipped:

    y[o, q*SH + a - PH, r*SW + b - PW] = sum over c, u < T, v < TW of
        W_ab[o, c, u, v] * x[c, q - T + 1 + u, r - TW + 1 + v]

    W_ab[o, c, u, v] = w[c, o, a + SH*(T - 1 - u), b + SW*(TW - 1 - v)]

All SH*SW phases read the same T x TW windows of the input: one im2col (padding T - 1, so
window (q, r) ends at input pixel (q, r)), one GEMM with the phases' kernels stacked,
(SH*SW*C_out, C_in*T*TW) @ (C_in*T*TW, Q*R), and a scatter that puts each product where
its phase says (``kernels.subpixel``; Q = H + T - 1 windows down, R = W + TW - 1
across). Every weight tap is in exactly one W_ab, so the stacked matrix is w with its axes
permuted and its taps reversed. The multiply-adds are the same as col2im's way; what goes
is the large column matrix and the scattered adds (forward + backward of FCN's x8
upsampling of a 16x16 map of 8 channels, batch 8, one thread, the two ways timed in turn:
16.4 -> 7.0 ms; x32: 431 -> 138 ms; x2: 0.70 -> 0.54 ms). The backward is the same steps
transposed:

    dY = the output gradient gathered by phase      dZ = W^T dY  ->  dx = col2im(dZ)
    dW = sum over images of dY Z^T  ->  dw (the taps put back)

The sums run in a different order than col2im's, so the results differ from its by
rounding. This is "sub-pixel convolution" (Shi et al., 2016) read backwards: a transposed
convolution is a stride-1 convolution with SH*SW times the output channels followed by a
pixel shuffle. Runs where the Numba kernels do (``applies``); other backends keep col2im.
"""

from typing import NamedTuple

import numpy as np

from fcn_scratch import kernels
from fcn_scratch.kernels import subpixel


class SubpixelCtx(NamedTuple):
    col: object  # the input's T x TW windows, (N, C_in*T*TW, Q*R)
    W: object  # the phases' kernels stacked, (SH*SW*C_out, C_in*T*TW)
    w_shape: tuple  # (C_in, C_out, KH, KW)
    has_bias: bool
    in_size: tuple  # (H, W) of the input
    grid: tuple  # (Q, R) = (H + T - 1, W + TW - 1), the windows
    stride: tuple
    padding: tuple


def applies(x, w, stride, dilation) -> bool:
    """Whether conv_transpose2d runs this way: the kernel a multiple of the stride on both
    axes, no dilation, and the Numba kernels in use."""
    KH, KW = w.shape[2:]
    return (
        dilation == (1, 1) and KH % stride[0] == 0 and KW % stride[1] == 0 and kernels.is_numba(x)
    )


def taps(shape, stride):
    """(T, TW): the taps of one phase along h and w (kernel over stride)."""
    return shape[2] // stride[0], shape[3] // stride[1]


def stacked_kernels(w, stride):
    """w: (C_in, C_out, KH, KW) -> W: (SH*SW*C_out, C_in*T*TW), row (a*SW + b)*C_out + o
    holding W_ab[o] (see the module's docstring)."""
    C_in, C_out = w.shape[:2]
    (SH, SW), (T, TW) = stride, taps(w.shape, stride)
    phases = w.reshape(C_in, C_out, T, SH, TW, SW)[:, :, ::-1, :, ::-1, :]
    return np.ascontiguousarray(phases.transpose(3, 5, 1, 0, 2, 4)).reshape(SH * SW * C_out, -1)


def kernel_grad(dW, shape, stride):
    """``stacked_kernels`` undone on a gradient: dW like W -> dw: ``shape``."""
    C_in, C_out = shape[:2]
    (SH, SW), (T, TW) = stride, taps(shape, stride)
    phases = dW.reshape(SH, SW, C_out, C_in, T, TW).transpose(3, 2, 4, 0, 5, 1)
    return np.ascontiguousarray(phases[:, :, ::-1, :, ::-1, :]).reshape(shape)


def _windows(shape, stride):
    """im2col's geometry for the T x TW windows: (kernel, stride, padding, dilation)."""
    T, TW = taps(shape, stride)
    return (T, TW), (1, 1), (T - 1, TW - 1), (1, 1)


def forward(x, w, b, stride, padding, out_size, y=None):
    """x: (N, C_in, H, W), w: (C_in, C_out, KH, KW), b: (C_out,) or None -> (y (N, C_out,
    *out_size), ctx), written into ``y`` if given."""
    N, C_in, H, W = x.shape
    C_out = w.shape[1]
    T, TW = taps(w.shape, stride)
    grid = (H + T - 1, W + TW - 1)  # (Q, R)
    col = kernels.for_array(x).im2col(x, *_windows(w.shape, stride), grid)
    Wk = stacked_kernels(w, stride)
    products = Wk @ col  # (N, SH*SW*C_out, Q*R)
    y = np.empty((N, C_out, *out_size), dtype=x.dtype) if y is None else y
    bias = np.zeros(C_out, dtype=x.dtype) if b is None else b
    subpixel.phases_to_image(products, *stride, *padding, *grid, bias, y)
    return y, SubpixelCtx(col, Wk, w.shape, b is not None, (H, W), grid, stride, padding)


def backward(dy, ctx, need_dx=True, need_dw=True):
    """dy: (N, C_out, OH, OW) -> (dx, dw, db) as ``conv.conv_transpose2d_backward``."""
    N = dy.shape[0]
    dx = dw = None
    if need_dx or need_dw:
        dY = np.empty((N, ctx.W.shape[0], ctx.grid[0] * ctx.grid[1]), dtype=dy.dtype)
        subpixel.image_to_phases(np.ascontiguousarray(dy), *ctx.stride, *ctx.padding, *ctx.grid, dY)
    if need_dx:
        dcol = ctx.W.T @ dY  # (N, C_in*T*TW, Q*R)
        windows = _windows(ctx.w_shape, ctx.stride)
        dx = kernels.for_array(dy).col2im(dcol, ctx.in_size, *windows, ctx.grid)
    if need_dw:
        dW = (dY @ ctx.col.transpose(0, 2, 1)).sum(axis=0)
        dw = kernel_grad(dW, ctx.w_shape, ctx.stride)
    db = dy.sum(axis=(0, 2, 3)) if ctx.has_bias else None
    return dx, dw, db
