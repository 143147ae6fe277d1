"""Convolution and transposed convolution as stateless forward/backward pairs.

    conv2d            y = W @ im2col(x)          (one GEMM per image)
    conv_transpose2d  y = col2im(W^T @ x)        (the adjoint of conv2d: no zero insertion)

On the CPU two faster ways take over where they apply; im2col and col2im remain the
reference path, the GPU's path and every other case's:

- on one thread (a training lane, or ``--threads 1``), a 3x3 convolution with stride 1 and
  padding 1 over at least 8 channels (the FCN backbones' layers after the first) runs by
  Winograd's minimal filtering F(4x4, 3x3), with 4x fewer multiply-adds: see
  ``fcn_scratch.ops.winograd``;
- a transposed convolution whose kernel is a multiple of its stride (FCN's upsampling
  layers, kernel 2f and stride f) runs phase by phase, one small convolution per output
  phase, without col2im's column matrix (4x the output for FCN's): see
  ``fcn_scratch.ops.subpixel``.

And where im2col has few rows over many pixels (the first layer, from 3 channels, on
64x64 images or larger), conv2d's dw is a Numba kernel instead of BLAS's GEMMs
(``fcn_scratch.kernels.dw_blocks``, ``_weight_grad``).

Where an op has several threads to itself on the CPU (a single op; a model with batch
norm, trained in one lane), it cuts its batch into one slice per thread and runs the
slices at once, each on one thread (``parallel.split_batch``): faster than
single-threaded kernels between multi-threaded GEMMs (with 2 threads, batch 16: the
Winograd convolutions of ``fcn-scratch bench`` took 0.48-0.57x the time, the transposed
ones 0.72-0.86x, the one from 3 channels by im2col 0.78-0.86x). The backward runs the same
slices and adds their dw and db in slice order: the results depend on the thread count,
never on the scheduling. A Winograd convolution hands out its chunks of images instead,
each to the next thread that comes free (``parallel.each``; see ``winograd``): with fixed
slices one could take longer than the other (1.3x, in every step of a timing of the
32-channel layer of ``fcn-scratch bench``), and the thread done first waited idle. A
single image keeps the whole op, with a multi-threaded GEMM (Winograd on one of 2 threads
took 1.8x its time from 64 channels at 250x250). An op of fewer than ``MIN_SPLIT_MACS``
multiply-adds runs whole, as one slice on the calling thread: handing a slice to another
thread and waiting for it costs more than it saves there.

A 1x1 convolution with stride 1 and no padding has im2col(x) = x (one column per pixel):
x is used as it is, and its col2im is a reshape.

A map of at most ``ONE_GEMM_PIXELS`` output pixels (an FCN's last stages and fc6) gives
each image's GEMM a handful of columns, and dw a sum of N products as large as w: there
the columns of the whole batch go side by side, (C_in*KH*KW, N*OH*OW), and each of y, dw
and dx is one GEMM. With the Numba kernels the bias rides in im2col's GEMM where the weight
is smaller than the output (``_bias_in_gemm``), and db comes out of dw's.

Shapes, in PyTorch's conventions:

    conv2d:           x (N, C_in, H, W), w (C_out, C_in, KH, KW), b (C_out,) -> y (N, C_out, OH, OW)
                      OH = (H + 2*PH - DH*(KH-1) - 1) // SH + 1
    conv_transpose2d: x (N, C_in, H, W), w (C_in, C_out, KH, KW), b (C_out,) -> y (N, C_out, OH, OW)
                      OH = (H - 1)*SH - 2*PH + DH*(KH-1) + OPH + 1

The two are each other's gradients: conv_transpose2d's forward is conv2d's backward
with respect to its input, and the other way round. The ``ctx`` returned by a forward
holds what its backward needs; treat it as opaque. A backward computes only the gradients
asked for (``need_dx``, ``need_dw``; like torch's ``needs_input_grad``) and returns None for
the others: the first layer's dx, for one, is a GEMM and a col2im nobody reads.
"""

from typing import NamedTuple

import numpy as np

from fcn_scratch import kernels, parallel
from fcn_scratch.arguments import pair
from fcn_scratch.device import array_module, same_device
from fcn_scratch.ops import subpixel, winograd
from fcn_scratch.ops.shapes import (
    check_ndim,
    check_not_empty,
    check_same_dtype,
    conv_out_size,
    conv_transpose_out_size,
)


class SplitCtx(NamedTuple):
    """A batch computed in slices, one per thread: their lengths and ctxs, in order."""

    sizes: tuple
    parts: tuple
    image_shape: tuple  # (C_in, H, W) of the input


class ConvCtx(NamedTuple):
    col: object  # conv2d: im2col(x) (N, C_in*KH*KW, OH*OW), or its columns side by side
    # (C_in*KH*KW, N*OH*OW) where the map is small (``one_gemm``); conv_transpose2d: x
    # (N, C_in, H*W)
    w: object  # the weight, as given
    has_bias: bool
    in_size: tuple  # (H, W) of the input x
    grid: tuple  # (OH, OW) of the im2col grid
    geometry: tuple  # (kernel_size, stride, padding, dilation) as (h, w) pairs


def _check(op, x, w, b, in_channels_axis, out_channels_axis):
    same_device(op, x=x, w=w, b=b)
    check_ndim(op, "x", x, 4, "(N, C, H, W)")
    check_ndim(
        op, "w", w, 4, "(C_out, C_in, KH, KW)" if op == "conv2d" else "(C_in, C_out, KH, KW)"
    )
    w_axes = ("C_out", "C_in") if op == "conv2d" else ("C_in", "C_out")
    check_not_empty(op, x=(x, "N", "C_in"), w=(w, *w_axes))
    check_same_dtype(op, x=x, w=w, b=b)
    if x.shape[1] != w.shape[in_channels_axis]:
        raise ValueError(
            f"{op}: channel mismatch: x has {x.shape[1]} channels (shape {tuple(x.shape)}) but "
            f"w expects {w.shape[in_channels_axis]} (shape {tuple(w.shape)})"
        )
    if min(w.shape[2:]) < 1:
        raise ValueError(f"{op}: kernel size must be positive, got w shape {tuple(w.shape)}")
    if b is not None and (b.ndim != 1 or b.shape[0] != w.shape[out_channels_axis]):
        raise ValueError(
            f"{op}: b must have shape ({w.shape[out_channels_axis]},), got {tuple(b.shape)}"
        )


def conv2d_forward(x, w, b=None, stride=1, padding=0, dilation=1):
    """y = w * x + b. Returns (y, ctx); y: (N, C_out, OH, OW)."""
    op = "conv2d"
    _check(op, x, w, b, in_channels_axis=1, out_channels_axis=0)
    stride = pair(op, "stride", stride, 1)
    padding = pair(op, "padding", padding, 0)
    dilation = pair(op, "dilation", dilation, 1)
    N, C_in, H, W = x.shape
    C_out = w.shape[0]
    kernel = (w.shape[2], w.shape[3])
    OH, OW = conv_out_size(op, (H, W), kernel, stride, padding, dilation)
    return _conv2d(x, w, b, (kernel, stride, padding, dilation), (N, C_out, OH, OW))


def _conv2d(x, w, b, geometry, shape, y=None):
    """conv2d of x (checked) -> (y, ctx), y of ``shape`` (N, C_out, OH, OW), written into
    the given ``y`` if there is one (a slice's rows of the batch's output)."""
    by_winograd = winograd.applies(x, w, *geometry[1:])
    if _splits(x):
        macs = np.prod(shape) * w[0].size // (winograd.SAVING if by_winograd else 1)
        if by_winograd and macs >= MIN_SPLIT_MACS:
            return winograd.conv3x3_forward(x, w, b, y)  # its chunks go to every thread
        return _split_forward(
            lambda xs, ys: _conv2d(xs, w, b, geometry, ys.shape, ys), x, shape, y, macs
        )
    if by_winograd and parallel.on_one_thread():
        return winograd.conv3x3_forward(x, w, b, y)
    N, C_out, OH, OW = shape
    xp = array_module(x)
    y = xp.empty(shape, dtype=x.dtype) if y is None else y
    if _bias_in_gemm(x, w, b, geometry, (OH, OW)):
        col = kernels.for_array(x).im2col(x, *geometry, (OH, OW), ones_row=True)
        weight = np.concatenate([w.reshape(C_out, -1), b.reshape(C_out, 1)], axis=1)
        np.matmul(weight, col, out=y.reshape(N, C_out, OH * OW))
    else:
        col = _im2col(x, geometry, (OH, OW))  # (N, C_in*KH*KW, OH*OW)
        if one_gemm((OH, OW)):
            col = xp.ascontiguousarray(col.transpose(1, 0, 2)).reshape(col.shape[1], -1)
            y_rows = w.reshape(C_out, -1) @ col  # (C_out, N*OH*OW)
            y[...] = y_rows.reshape(C_out, N, OH, OW).transpose(1, 0, 2, 3)
        else:
            xp.matmul(w.reshape(C_out, -1), col, out=y.reshape(N, C_out, OH * OW))
        if b is not None:
            y += b.reshape(1, C_out, 1, 1)
    return y, ConvCtx(col, w, b is not None, x.shape[2:], (OH, OW), geometry)


def _bias_in_gemm(x, w, b, geometry, grid) -> bool:
    """Whether im2col's GEMM adds the bias, as the weight's last column against a row of
    ones under the columns (the Numba backend's im2col writes that row). It saves a pass
    over y, (C_out, N*OH*OW), for a copy of the weight, (C_out, C_in*KH*KW): worth it
    where the weight is the smaller (a 3-channel layer: the pass took 0.4 of its 1.3 ms;
    VGG16's fc6 on a photo: a 411 MB copy for an output of 3 MB). Not for a 1x1 kernel (no
    im2col) nor the small maps' single GEMM."""
    pixels = len(x) * grid[0] * grid[1]
    return (
        b is not None
        and kernels.is_numba(x)
        and w[0].size < pixels
        and not (_pointwise(geometry) or one_gemm(grid))
    )


def conv2d_backward(dy, ctx, need_dx=True, need_dw=True):
    """dy: (N, C_out, OH, OW) -> (dx (N, C_in, H, W), dw like w, db (C_out,) or None);
    dx or dw is None when not needed."""
    if isinstance(ctx, SplitCtx):
        return _split_backward(conv2d_backward, dy, ctx, need_dx, need_dw)
    if isinstance(ctx, winograd.WinogradCtx):
        return winograd.conv3x3_backward(dy, ctx, need_dx, need_dw)
    if ctx.col.ndim == 2:
        return _one_gemm_backward(dy, ctx, need_dx, need_dw)
    N, C_out = dy.shape[:2]
    dy = dy.reshape(N, C_out, -1)  # (N, C_out, OH*OW)
    dx = dw = db = None
    ones_row = ctx.col.shape[1] > ctx.w[0].size  # the forward's bias row (see _conv2d)
    if need_dw:
        # against the row of ones, dw's last column is db
        dw = _weight_grad(ctx.col, dy)  # (C_out, C_in*KH*KW [+ 1])
        if ones_row:
            dw, db = dw[:, :-1], dw[:, -1]
        dw = dw.reshape(ctx.w.shape)
    if need_dx:
        dcol = ctx.w.reshape(C_out, -1).T @ dy  # (N, C_in*KH*KW, OH*OW)
        dx = _col2im(dcol, ctx.in_size, ctx.geometry, ctx.grid)  # (N, C_in, H, W)
    if ctx.has_bias and db is None:
        db = dy.sum(axis=(0, 2))
    return dx, dw, db


def _weight_grad(col, dy):
    """sum_n dy[n] @ col[n]^T: col (N, K, P), dy (N, C_out, P) -> (C_out, K). The Numba
    kernel of ``kernels.dw_blocks`` where im2col has few rows and the map many pixels (a
    convolution from 3 channels), BLAS elsewhere: there col @ dy^T reads both operands in
    the order BLAS likes (faster than dy @ col^T)."""
    if kernels.is_numba(col):
        from fcn_scratch.kernels import dw_blocks

        if dw_blocks.applies(col):
            return dw_blocks.weight_grad(col, dy)
    return (col @ dy.transpose(0, 2, 1)).sum(axis=0).T


# Output maps of at most this many pixels take one GEMM over the batch (forward + backward,
# one thread, batch 8, from 128 channels to 128 on 4x4 maps: 0.78x the time of a GEMM per
# image; to 256 on 2x2: 0.41x; from 64 to 64 on 8x8 maps: 1.5x, the transposes' copies).
ONE_GEMM_PIXELS = 16


def one_gemm(grid) -> bool:
    """Whether conv2d computes an output map of ``grid`` (OH, OW) with one GEMM over the
    whole batch, the columns of its images side by side."""
    return grid[0] * grid[1] <= ONE_GEMM_PIXELS


def _one_gemm_backward(dy, ctx, need_dx, need_dw):
    """conv2d_backward where the forward took one GEMM: dy (N, C_out, OH, OW) ->
    (dx, dw, db), each of dx and dw one GEMM with dy's rows side by side."""
    N, C_out = dy.shape[:2]
    xp = array_module(dy)
    dy_rows = xp.ascontiguousarray(dy.transpose(1, 0, 2, 3)).reshape(C_out, -1)  # (C_out, N*OH*OW)
    dx = dw = None
    if need_dw:
        dw = (dy_rows @ ctx.col.T).reshape(ctx.w.shape)
    if need_dx:
        dcol = ctx.w.reshape(C_out, -1).T @ dy_rows  # (C_in*KH*KW, N*OH*OW)
        dcol = xp.ascontiguousarray(dcol.reshape(len(dcol), N, -1).transpose(1, 0, 2))
        dx = _col2im(dcol, ctx.in_size, ctx.geometry, ctx.grid)  # (N, C_in, H, W)
    db = dy.reshape(N, C_out, -1).sum(axis=(0, 2)) if ctx.has_bias else None
    return dx, dw, db


def conv_transpose2d_forward(x, w, b=None, stride=1, padding=0, output_padding=0, dilation=1):
    """The adjoint of conv2d, plus bias. Returns (y, ctx); y: (N, C_out, OH, OW)."""
    op = "conv_transpose2d"
    _check(op, x, w, b, in_channels_axis=0, out_channels_axis=1)
    stride = pair(op, "stride", stride, 1)
    padding = pair(op, "padding", padding, 0)
    dilation = pair(op, "dilation", dilation, 1)
    output_padding = pair(op, "output_padding", output_padding, 0)
    if any(out_pad >= max(s, d) for out_pad, s, d in zip(output_padding, stride, dilation)):
        raise ValueError(
            f"{op}: output_padding must be smaller than either stride or dilation, got "
            f"output_padding {output_padding}, stride {stride}, dilation {dilation}"
        )
    N, C_in, H, W = x.shape
    C_out = w.shape[1]
    kernel = (w.shape[2], w.shape[3])
    out = conv_transpose_out_size((H, W), kernel, stride, padding, dilation, output_padding)
    if min(out) < 1:
        raise ValueError(
            f"{op}: output would be empty: input size {(H, W)} with kernel_size {kernel}, "
            f"stride {stride}, padding {padding}, dilation {dilation} gives output size {out}"
        )
    return _conv_transpose2d(x, w, b, (kernel, stride, padding, dilation), (N, C_out, *out))


def _conv_transpose2d(x, w, b, geometry, shape, y=None):
    """conv_transpose2d of x (checked) -> (y, ctx), as ``_conv2d``."""
    if _splits(x):
        return _split_forward(
            lambda xs, ys: _conv_transpose2d(xs, w, b, geometry, ys.shape, ys),
            x,
            shape,
            y,
            x.size * w[0].size,
        )
    _, stride, padding, dilation = geometry
    if subpixel.applies(x, w, stride, dilation):
        return subpixel.forward(x, w, b, stride, padding, shape[2:], y)
    N, C_in, H, W = x.shape
    C_out = w.shape[1]
    x2 = x.reshape(N, C_in, H * W)
    col = w.reshape(C_in, -1).T @ x2  # (N, C_out*KH*KW, H*W)
    folded = _col2im(col, shape[2:], geometry, (H, W))  # (N, C_out, OH, OW)
    if y is None:
        y = folded
    else:
        y[...] = folded
    if b is not None:
        y += b.reshape(1, C_out, 1, 1)
    return y, ConvCtx(x2, w, b is not None, (H, W), (H, W), geometry)


def conv_transpose2d_backward(dy, ctx, need_dx=True, need_dw=True):
    """dy: (N, C_out, OH, OW) -> (dx (N, C_in, H, W), dw like w, db (C_out,) or None);
    dx or dw is None when not needed."""
    if isinstance(ctx, SplitCtx):
        return _split_backward(conv_transpose2d_backward, dy, ctx, need_dx, need_dw)
    if isinstance(ctx, subpixel.SubpixelCtx):
        return subpixel.backward(dy, ctx, need_dx, need_dw)
    N = dy.shape[0]
    C_in = ctx.w.shape[0]
    dx = dw = None
    if need_dx or need_dw:
        dcol = _im2col(dy, ctx.geometry, ctx.grid)  # (N, C_out*KH*KW, H*W)
    if need_dx:
        dx = (ctx.w.reshape(C_in, -1) @ dcol).reshape(N, C_in, *ctx.in_size)  # (N, C_in, H, W)
    if need_dw:
        dw = (ctx.col @ dcol.transpose(0, 2, 1)).sum(axis=0).reshape(ctx.w.shape)
    db = dy.sum(axis=(0, 2, 3)) if ctx.has_bias else None
    return dx, dw, db


def _splits(x) -> bool:
    """Whether an op on ``x`` computes its batch in slices, as lanes: the Numba kernels run
    it, it has several threads and more than one image."""
    return kernels.is_numba(x) and not parallel.on_one_thread() and x.shape[0] > 1


# Below this many multiply-adds in its forward (counted as im2col's, a quarter of them where
# Winograd applies) an op runs as one slice on the calling thread, not one per thread: with
# 2 threads, forward and backward at batch 8-16 took 0.09 -> 0.45 ms (x2 upsampling of 4
# channels on 8x8), 0.66 -> 0.65-0.83 (of 8 on 16x16, 4.2 M) and 0.88 -> 1.4 (64 channels
# on 8x8 by Winograd, 4.7 M) when cut, 2.1-2.3 -> 1.6-1.7 (16 to 32 channels on 32x32 by
# Winograd, 9.4 M) and 2.4 -> 1.7-1.9 (3 to 16 channels on 64x64, 14 M).
MIN_SPLIT_MACS = 8_000_000


def _split_forward(forward, x, shape, y, macs):
    """``forward(x slice, y slice) -> (y slice, ctx)`` on every slice of x at once, each
    writing its rows of one y of ``shape`` (the given one, if any) -> (y, SplitCtx); one
    slice only if the op's ``macs`` (multiply-adds) are fewer than ``MIN_SPLIT_MACS``.
    (Concatenating the slices' outputs afterwards, on one thread, took a fifth of a
    3-channel convolution's forward.)"""
    y = np.empty(shape, dtype=x.dtype) if y is None else y
    most = None if macs >= MIN_SPLIT_MACS else 1
    results = parallel.split_batch(lambda xs, ys: (len(xs), forward(xs, ys)[1]), x, y, most=most)
    sizes, ctxs = zip(*results)
    return y, SplitCtx(sizes, ctxs, x.shape[1:])


def _split_backward(backward, dy, ctx, need_dx, need_dw):
    """``backward`` on the forward's slices at once; dx joined (each thread copies its
    slice's), dw and db added in order."""
    if len(ctx.parts) == 1:  # the op was small: one slice, the whole batch
        (grads,) = parallel.run_parts(
            lambda d, c: backward(d, c, need_dx, need_dw), [(dy, *ctx.parts)]
        )
        return grads
    bounds = np.cumsum(ctx.sizes)[:-1]
    dx = np.empty((len(dy), *ctx.image_shape), dtype=dy.dtype) if need_dx else None
    dx_parts = np.split(dx, bounds) if need_dx else [None] * len(ctx.sizes)

    def part(d, c, dx_part):
        grads = backward(d, c, need_dx, need_dw)
        if need_dx:
            dx_part[...] = grads[0]
        return grads[1:]

    dws, dbs = zip(*parallel.run_parts(part, list(zip(np.split(dy, bounds), ctx.parts, dx_parts))))
    return dx, _sum_in_order(dws), _sum_in_order(dbs)


def _sum_in_order(arrays):
    """arrays[0] + arrays[1] + ..., left to right; None if they are None."""
    return None if arrays[0] is None else sum(arrays[1:], start=arrays[0])


def _pointwise(geometry) -> bool:
    """A 1x1 kernel, stride 1, no padding: each column of im2col is one input pixel."""
    return geometry == ((1, 1), (1, 1), (0, 0), (1, 1))


def _im2col(x, geometry, out_size):
    """im2col(x): (N, C, H, W) -> (N, C*KH*KW, OH*OW); x itself, reshaped, for 1x1."""
    if _pointwise(geometry):
        N, C = x.shape[:2]
        return array_module(x).ascontiguousarray(x).reshape(N, C, -1)
    return kernels.for_array(x).im2col(x, *geometry, out_size)


def _col2im(col, in_size, geometry, out_size):
    """col2im(col): (N, C*KH*KW, OH*OW) -> (N, C, H, W); a reshape for 1x1."""
    if _pointwise(geometry):
        return col.reshape(col.shape[0], col.shape[1], *in_size)
    return kernels.for_array(col).col2im(col, in_size, *geometry, out_size)
