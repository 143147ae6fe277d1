"""Reference kernels: naive NumPy loops, written to be read, never optimised.

These are the oracle the fast kernels (``cpu``: Numba, ``cuda``: CUDA C) are tested
against. Every backend module defines the same eight functions with the same signatures:

    im2col(x, kernel_size, stride, padding, dilation, out_size) -> col
    col2im(col, in_size, kernel_size, stride, padding, dilation, out_size) -> x
    maxpool2d_forward(x, kernel_size, stride, padding, dilation, out_size) -> (y, idx)
    maxpool2d_backward(dy, idx, in_size) -> dx
    maxunpool2d_forward(x, idx, out_size) -> y
    maxunpool2d_backward(dy, idx) -> dx
    relu_backward(dy, y) -> dx
    adam_update(param, grad, m, v, t, lr, beta1, beta2, eps, weight_decay, decoupled)

Conventions shared by all backends:

* Layout is NCHW; every size argument is an ``(H, W)`` pair of Python ints.
* ``col`` has shape ``(N, C*KH*KW, OH*OW)``: row ``(c*KH + i)*KW + j`` holds the input
  pixel under kernel tap ``(i, j)`` of channel ``c``, column ``oy*OW + ox`` is the
  output position. The tap of output ``(oy, ox)`` reads input
  ``(oy*SH - PH + i*DH, ox*SW - PW + j*DW)``; taps outside the image read 0.
* Max-pool indices are int64 flat indices ``h*W + w`` into each input ``H*W`` plane
  (PyTorch's convention). Padded cells count as -inf, so they never win; ties keep the
  first maximum in window order (row-major over the taps). A NaN wins its window (the last
  NaN, if several), as in PyTorch, so that a diverging network cannot hide one.
* ``maxunpool2d_forward`` is a scatter-add: where two pooled cells carry the same index
  (overlapping windows), their values are summed, in raster order of the pooled map.
  That makes it exactly the adjoint of ``maxunpool2d_backward`` (a gather), and the same
  operation as ``maxpool2d_backward``. Results are deterministic.
* Output sizes are computed by the caller (``fcn_scratch.ops.shapes``) and passed in;
  kernels do not validate arguments.
"""

import numpy as np


def im2col(x, kernel_size, stride, padding, dilation, out_size):
    """Unfold sliding windows into columns.

    x: (N, C, H, W) -> col: (N, C*KH*KW, OH*OW)
    """
    N, C, H, W = x.shape
    KH, KW = kernel_size
    SH, SW = stride
    PH, PW = padding
    DH, DW = dilation
    OH, OW = out_size
    col = np.zeros((N, C * KH * KW, OH * OW), dtype=x.dtype)
    for n in range(N):
        for c in range(C):
            for i in range(KH):
                for j in range(KW):
                    row = (c * KH + i) * KW + j
                    for oy in range(OH):
                        for ox in range(OW):
                            h = oy * SH - PH + i * DH
                            w = ox * SW - PW + j * DW
                            if 0 <= h < H and 0 <= w < W:
                                col[n, row, oy * OW + ox] = x[n, c, h, w]
    return col


def col2im(col, in_size, kernel_size, stride, padding, dilation, out_size):
    """Fold columns back into an image, summing overlapping taps: the adjoint of im2col.

    col: (N, C*KH*KW, OH*OW) -> x: (N, C, H, W), with (H, W) = in_size
    """
    KH, KW = kernel_size
    SH, SW = stride
    PH, PW = padding
    DH, DW = dilation
    OH, OW = out_size
    H, W = in_size
    N = col.shape[0]
    C = col.shape[1] // (KH * KW)
    x = np.zeros((N, C, H, W), dtype=col.dtype)
    for n in range(N):
        for c in range(C):
            for i in range(KH):
                for j in range(KW):
                    row = (c * KH + i) * KW + j
                    for oy in range(OH):
                        for ox in range(OW):
                            h = oy * SH - PH + i * DH
                            w = ox * SW - PW + j * DW
                            if 0 <= h < H and 0 <= w < W:
                                x[n, c, h, w] += col[n, row, oy * OW + ox]
    return x


def maxpool2d_forward(x, kernel_size, stride, padding, dilation, out_size):
    """Max over each window, recording where the maximum was.

    x: (N, C, H, W) -> y: (N, C, OH, OW), idx: (N, C, OH, OW) int64, flat into H*W
    """
    N, C, H, W = x.shape
    KH, KW = kernel_size
    SH, SW = stride
    PH, PW = padding
    DH, DW = dilation
    OH, OW = out_size
    y = np.empty((N, C, OH, OW), dtype=x.dtype)
    idx = np.empty((N, C, OH, OW), dtype=np.int64)
    for n in range(N):
        for c in range(C):
            for oy in range(OH):
                for ox in range(OW):
                    best, best_idx = -np.inf, -1
                    for i in range(KH):
                        for j in range(KW):
                            h = oy * SH - PH + i * DH
                            w = ox * SW - PW + j * DW
                            if not (0 <= h < H and 0 <= w < W):
                                continue
                            v = x[n, c, h, w]
                            if best_idx < 0 or v > best or np.isnan(v):
                                best, best_idx = v, h * W + w
                    y[n, c, oy, ox] = best
                    idx[n, c, oy, ox] = best_idx
    return y, idx


def maxunpool2d_forward(x, idx, out_size):
    """Scatter-add each value to its recorded position in a zero plane.

    x: (N, C, OH, OW), idx: same shape, flat into H*W -> y: (N, C, H, W), (H, W) = out_size
    """
    N, C, OH, OW = x.shape
    H, W = out_size
    y = np.zeros((N, C, H, W), dtype=x.dtype)
    for n in range(N):
        for c in range(C):
            for oy in range(OH):
                for ox in range(OW):
                    k = idx[n, c, oy, ox]
                    y[n, c, k // W, k % W] += x[n, c, oy, ox]
    return y


def maxunpool2d_backward(dy, idx):
    """Gather the gradient at each recorded position: the adjoint of the scatter-add.

    dy: (N, C, H, W), idx: (N, C, OH, OW) -> dx: (N, C, OH, OW)
    """
    N, C, OH, OW = idx.shape
    W = dy.shape[3]
    dx = np.empty(idx.shape, dtype=dy.dtype)
    for n in range(N):
        for c in range(C):
            for oy in range(OH):
                for ox in range(OW):
                    k = idx[n, c, oy, ox]
                    dx[n, c, oy, ox] = dy[n, c, k // W, k % W]
    return dx


def maxpool2d_backward(dy, idx, in_size):
    """Route each output gradient to the input that won its window.

    The gradient of max pooling is the same scatter-add as unpooling:
    dy: (N, C, OH, OW), idx: same shape -> dx: (N, C, H, W), (H, W) = in_size
    """
    return maxunpool2d_forward(dy, idx, in_size)


def relu_backward(dy, y):
    """ReLU's gradient from its output: dx = dy where y > 0, else 0 (any shape).

    A select, not ``dy * (y > 0)``: an infinite dy where y <= 0 must give 0, not NaN.
    """
    dx = np.zeros_like(dy)
    for k in np.ndindex(dy.shape):
        if y[k] > 0:
            dx[k] = dy[k]
    return dx


def adam_update(param, grad, m, v, t, lr, beta1, beta2, eps, weight_decay, decoupled):
    """One Adam (or, ``decoupled``, AdamW) step of one parameter at step t, in place
    (param, m, v are updated):

        Adam: g = grad + weight_decay * p;  AdamW: p = p * (1 - lr * weight_decay), g = grad
        m = m + (1 - beta1) * (g - m);      v = beta2 * v + (1 - beta2) * g * g
        p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
    """
    g = grad
    if decoupled:
        param *= 1 - lr * weight_decay
    elif weight_decay != 0:
        g = grad + weight_decay * param
    m += (1 - beta1) * (g - m)
    v *= beta2
    v += (1 - beta2) * g * g
    param -= lr / (1 - beta1**t) * m / (np.sqrt(v) / np.sqrt(1 - beta2**t) + eps)
