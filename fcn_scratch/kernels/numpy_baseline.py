"""Vectorised NumPy kernels: the baseline ``fcn-scratch bench`` times ours against.

The same seven functions, signatures and conventions as ``reference`` (read its docstring),
written the way one would without a compiler: windows as strided views
(``sliding_window_view``), col2im as KH*KW strided slice additions, the scatter-adds by
``bincount``. They are not used by the library; ``kernels.using(numpy_baseline)`` runs the
ops on them. Copies (im2col, max-pool forward, the gather, relu) equal the reference's
bit for bit, and so does col2im (each pixel gets its taps in the same order); the
scatter-adds sum in float64, so they agree to rounding only. ``idx`` must be >= 0 (a
window made only of padding records -1: the ops never pool such a window).
"""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def _windows(xp, kernel_size, stride, dilation, out_size):
    """The taps of every window of the padded ``xp``: (..., OH, OW, KH, KW), a view."""
    (KH, KW), (SH, SW), (DH, DW), (OH, OW) = kernel_size, stride, dilation, out_size
    span = (DH * (KH - 1) + 1, DW * (KW - 1) + 1)
    windows = sliding_window_view(xp, span, axis=(-2, -1))
    return windows[..., ::SH, ::SW, ::DH, ::DW][..., :OH, :OW, :, :]


def im2col(x, kernel_size, stride, padding, dilation, out_size):
    """x: (N, C, H, W) -> col: (N, C*KH*KW, OH*OW), by slicing a view of all windows."""
    (PH, PW), (OH, OW) = padding, out_size
    xp = np.pad(x, ((0, 0), (0, 0), (PH, PH), (PW, PW)))
    taps = _windows(xp, kernel_size, stride, dilation, out_size)  # (N, C, OH, OW, KH, KW)
    return taps.transpose(0, 1, 4, 5, 2, 3).reshape(x.shape[0], -1, OH * OW)


def col2im(col, in_size, kernel_size, stride, padding, dilation, out_size):
    """col: (N, C*KH*KW, OH*OW) -> x: (N, C, H, W), adding one strided slice per tap."""
    (H, W), (KH, KW), (SH, SW) = in_size, kernel_size, stride
    (PH, PW), (DH, DW), (OH, OW) = padding, dilation, out_size
    N = col.shape[0]
    col6 = col.reshape(N, -1, KH, KW, OH, OW)
    # Room for every tap, also those of windows reaching past the bottom/right padding.
    rows = max(H + 2 * PH, DH * (KH - 1) + SH * (OH - 1) + 1)
    cols = max(W + 2 * PW, DW * (KW - 1) + SW * (OW - 1) + 1)
    xp = np.zeros((N, col6.shape[1], rows, cols), dtype=col.dtype)
    for i in range(KH):
        for j in range(KW):
            h, w = i * DH, j * DW
            xp[:, :, h : h + SH * (OH - 1) + 1 : SH, w : w + SW * (OW - 1) + 1 : SW] += col6[
                :, :, i, j
            ]
    return np.ascontiguousarray(xp[:, :, PH : PH + H, PW : PW + W])


def maxpool2d_forward(x, kernel_size, stride, padding, dilation, out_size):
    """x: (N, C, H, W) -> y: (N, C, OH, OW), idx: (N, C, OH, OW) int64, flat into H*W.

    The first maximum among each window's taps inside the image; a NaN wins (the last
    one); a window with no tap inside the image gives -inf at index -1.
    """
    N, C, H, W = x.shape
    (KH, KW), (PH, PW), (OH, OW) = kernel_size, padding, out_size
    (SH, SW), (DH, DW) = stride, dilation
    # Pad so that every window fits: -inf values, and position -1 where there is no pixel.
    rows = max(H + 2 * PH, DH * (KH - 1) + SH * (OH - 1) + 1)
    cols = max(W + 2 * PW, DW * (KW - 1) + SW * (OW - 1) + 1)
    pad = ((PH, rows - H - PH), (PW, cols - W - PW))
    xp = np.pad(x, ((0, 0), (0, 0), *pad), constant_values=-np.inf)
    pos = np.pad(np.arange(H * W).reshape(H, W), pad, constant_values=-1)
    taps = _windows(xp, kernel_size, stride, dilation, out_size).reshape(N, C, OH, OW, -1)
    where = _windows(pos, kernel_size, stride, dilation, out_size).reshape(OH, OW, -1)
    inside = where >= 0  # (OH, OW, KH*KW)
    best = np.where(inside, taps, -np.inf).max(axis=-1, keepdims=True)  # NaN where one is
    tap = np.argmax(inside & (taps == best), axis=-1)  # the first maximum
    nan = inside & np.isnan(taps)
    last_nan = nan.shape[-1] - 1 - np.argmax(nan[..., ::-1], axis=-1)
    tap = np.where(nan.any(axis=-1), last_nan, tap)  # (N, C, OH, OW)
    idx = np.take_along_axis(np.broadcast_to(where, taps.shape), tap[..., None], axis=-1)
    y = np.take_along_axis(taps, tap[..., None], axis=-1)
    return y[..., 0].astype(x.dtype), idx[..., 0].astype(np.int64)


def maxunpool2d_forward(x, idx, out_size):
    """x: (N, C, OH, OW), idx: same shape -> y: (N, C, H, W): a scatter-add by bincount
    over the flat positions of all planes at once."""
    N, C = x.shape[:2]
    plane = out_size[0] * out_size[1]
    flat = idx.reshape(N * C, -1) + plane * np.arange(N * C)[:, None]
    y = np.bincount(flat.ravel(), weights=x.ravel(), minlength=N * C * plane)
    return y.astype(x.dtype).reshape(N, C, *out_size)


def maxunpool2d_backward(dy, idx):
    """dy: (N, C, H, W), idx: (N, C, OH, OW) -> dx: (N, C, OH, OW), a gather."""
    N, C = idx.shape[:2]
    dx = np.take_along_axis(dy.reshape(N, C, -1), idx.reshape(N, C, -1), axis=2)
    return dx.reshape(idx.shape)


def maxpool2d_backward(dy, idx, in_size):
    """dy: (N, C, OH, OW), idx: same shape -> dx: (N, C, H, W): the unpool scatter-add."""
    return maxunpool2d_forward(dy, idx, in_size)


def relu_backward(dy, y):
    """dx = dy where y > 0, else 0 (any shape); a select, so an infinite dy gives 0."""
    return np.where(y > 0, dy, np.zeros((), dy.dtype))
