"""CPU kernels: the reference loops compiled with Numba.

Same functions, signatures and conventions as ``fcn_scratch.kernels.reference`` (read its
docstring first). Each public function is a thin Python wrapper that makes its inputs
contiguous, allocates the output and calls a loop function compiled by ``kernel`` below
(call ``_im2col.py_func(...)`` to step through one in a debugger).

The loops run on one thread and release the GIL (``nogil``): the CPU's cores are used by
running several slices of a batch at once, one per thread (``fcn_scratch.parallel``), not
by splitting each kernel. A kernel of a small FCN lasts tens of microseconds, too short to
pay for waking and waiting for a pool of threads, and a waiting pool is what slows
everything down when another program is busy on one of the cores.

Determinism: within a plane the order of the sums is fixed. col2im adds the taps in the
reference's order (row-major over ``(i, j)``), so its results equal the reference bit for
bit; the max-pool backward and the unpool forward are scatter-adds in raster order of the
pooled map. Nothing is compiled at import: Numba compiles a loop on its first call for each
dtype and caches the machine code on disk (``cache=True``), so later processes load it
instead of compiling again.
"""

from functools import lru_cache

import numpy as np
from numba import njit, uint64

from fcn_scratch.kernels import subnormals

# The loops: no GIL, cached on disk, and NumPy's error model, under which a division by
# zero gives inf or nan instead of raising: Python's model checks every divisor, which keeps
# LLVM from vectorising a loop that divides (the Adam update ran 4x slower under it).
kernel = njit(nogil=True, cache=True, error_model="numpy")


@njit(cache=True)
def _valid_range(offset, stride, size, out):
    """Indices ``o`` in ``[0, out)`` whose position ``o*stride + offset`` lands in ``[0, size)``:
    the outputs of one kernel tap that read inside x (im2col, col2im), or the taps of one
    pooling window (``stride`` = dilation).

    Returns ``(lo, hi)``: indices below ``lo`` and from ``hi`` on fall into the padding.
    """
    lo = max(0, (-offset + stride - 1) // stride)
    hi = min(out, (size - offset + stride - 1) // stride)
    return lo, max(lo, hi)


# The three helpers below index with unsigned integers on purpose: Numba wraps negative
# indices (a[-1]) with a test on every access, and that test keeps LLVM from vectorising
# the loop. Unsigned indices cannot be negative, so the loops compile to SIMD code.


@njit(inline="always", cache=True)
def _zero(dst, start, count):
    """dst[start : start + count] = 0."""
    start = uint64(start)
    for t in range(uint64(count)):
        dst[start + t] = 0


@njit(inline="always", cache=True)
def _copy(dst, d0, src, s0, step, count):
    """dst[d0 + t] = src[s0 + t*step] for t < count."""
    d0, s0, step = uint64(d0), uint64(s0), uint64(step)
    if step == 1:
        for t in range(uint64(count)):
            dst[d0 + t] = src[s0 + t]
    else:
        for t in range(uint64(count)):
            dst[d0 + t] = src[s0 + t * step]


@njit(inline="always", cache=True)
def _add(dst, d0, step, src, s0, count):
    """dst[d0 + t*step] += src[s0 + t] for t < count."""
    d0, s0, step = uint64(d0), uint64(s0), uint64(step)
    if step == 1:
        for t in range(uint64(count)):
            dst[d0 + t] += src[s0 + t]
    else:
        for t in range(uint64(count)):
            dst[d0 + t * step] += src[s0 + t]


@kernel
def _im2col(x, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW, col):
    """x: (N, C, H, W) -> col: (N, C*KH*KW, OH*OW), written in place (every element)."""
    N, C, H, W = x.shape
    for nc in range(N * C):
        n, c = nc // C, nc % C
        plane = x[n, c].ravel()  # (H*W,)
        for i in range(KH):
            for j in range(KW):
                out = col[n, (c * KH + i) * KW + j]  # (OH*OW,)
                off_w = j * DW - PW
                lo, hi = _valid_range(off_w, SW, W, OW)
                for oy in range(OH):
                    h = oy * SH - PH + i * DH
                    base = oy * OW
                    if h < 0 or h >= H:
                        _zero(out, base, OW)
                        continue
                    _zero(out, base, lo)
                    _copy(out, base + lo, plane, h * W + lo * SW + off_w, SW, hi - lo)
                    _zero(out, base + hi, OW - hi)


@kernel
def _im2col_same(x, KH, KW, PH, PW, col):
    """``_im2col`` for stride 1, dilation 1 and an output the size of the input (the 3x3,
    padding 1 convolutions of the FCNs): x: (N, C, H, W) -> col: (N, C*KH*KW, H*W).

    Tap (i, j) sees the plane shifted by (i - PH, j - PW), so its row of col is one
    contiguous copy of the plane, ``out[t] = plane[t + shift]``, after which the rows the
    shift brings in from outside and the columns that wrap around from the next row are
    set to 0. A plane pays one copy instead of one per output row (planes of at most
    ``TABLE_PIXELS`` take the tap table instead, ``_im2col_taps``).
    """
    N, C, H, W = x.shape
    size = H * W
    for n in range(N):
        for c in range(C):
            plane = x[n, c].ravel()  # (H*W,)
            for i in range(KH):
                for j in range(KW):
                    out = col[n, (c * KH + i) * KW + j]  # (H*W,)
                    dy, dx = i - PH, j - PW
                    shift = dy * W + dx
                    lo = min(size, max(0, -dy * W, -shift))  # first t that reads inside x
                    hi = max(lo, min(size, (H - dy) * W, size - shift))
                    _zero(out, 0, lo)
                    _copy(out, lo, plane, lo + shift, 1, hi - lo)
                    _zero(out, hi, size - hi)
                    for oy in range(max(0, -dy), min(H, H - dy)):  # columns that wrapped
                        for ox in range(max(0, -dx)):
                            out[oy * W + ox] = 0
                        for ox in range(max(0, W - dx), W):
                            out[oy * W + ox] = 0


# Output maps of at most this many pixels are unfolded and folded through a table of where
# each column entry reads (``_taps``): one gather or scatter per tap, where the loops above
# work out the bounds of every output row and pay more for that than for the copies on
# small maps (``python benchmarks/bench_taps.py``: one thread, batch 8, 3x3 with padding 1,
# two runs: im2col / col2im through the table in 0.32-0.63x the time on 2x2 maps, 0.38-0.54x
# on 4x4, 0.79-0.84x on 8x8, but 1.5-1.8x on 16x16 and 1.9-2.6x on 32x32).
TABLE_PIXELS = 64


@lru_cache(maxsize=256)  # geometries; a table of a 7x7 kernel over 64 outputs is 25 KB
def _taps(in_size, kernel_size, stride, padding, dilation, out_size) -> np.ndarray:
    """(KH*KW*OH*OW,) int64, read-only: at (i*KW + j)*OH*OW + oy*OW + ox, the index h*W + w
    into the plane that tap (i, j) of output (oy, ox) reads, or -1 where it reads padding."""
    (H, W), (KH, KW), (OH, OW) = in_size, kernel_size, out_size
    (SH, SW), (PH, PW), (DH, DW) = stride, padding, dilation
    i, j, oy, ox = np.ix_(np.arange(KH), np.arange(KW), np.arange(OH), np.arange(OW))
    h, w = oy * SH - PH + i * DH, ox * SW - PW + j * DW
    inside = (0 <= h) & (h < H) & (0 <= w) & (w < W)
    taps = np.where(inside, h * W + w, -1).astype(np.int64).ravel()
    taps.flags.writeable = False
    return taps


@kernel
def _im2col_taps(x, taps, col):
    """``_im2col`` through the table ``taps`` (``_taps``): x: (N, C, H, W) -> col: (N,
    C*T [+ 1], P) for T taps and P outputs, every element of the first C*T rows written."""
    N, C = x.shape[:2]
    P = col.shape[2]
    T = taps.size // P
    for n in range(N):
        for c in range(C):
            plane = x[n, c].ravel()  # (H*W,)
            for k in range(T):
                row = col[n, c * T + k]  # (P,)
                for t in range(P):
                    at = taps[k * P + t]
                    row[t] = plane[at] if at >= 0 else 0


@kernel
def _col2im_taps(col, taps, x):
    """``_col2im`` through the table ``taps``: col: (N, C*T, P) -> x: (N, C, H, W), each
    plane zeroed, then the taps' columns added one tap after the other, in the reference's
    order (a tap reads each pixel at most once, so the order within a tap does not matter)."""
    N, C = x.shape[:2]
    P = col.shape[2]
    T = taps.size // P
    for n in range(N):
        for c in range(C):
            plane = x[n, c].ravel()  # (H*W,)
            plane[:] = 0
            for k in range(T):
                row = col[n, c * T + k]  # (P,)
                for t in range(P):
                    at = taps[k * P + t]
                    if at >= 0:
                        plane[at] += row[t]


@kernel
def _col2im(col, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW, x):
    """col: (N, C*KH*KW, OH*OW) -> x: (N, C, H, W), summed in place into a zeroed x."""
    N, C, H, W = x.shape
    for nc in range(N * C):
        n, c = nc // C, nc % C
        plane = x[n, c].ravel()  # (H*W,)
        _zero(plane, 0, H * W)
        for i in range(KH):
            for j in range(KW):
                src = col[n, (c * KH + i) * KW + j]  # (OH*OW,)
                off_w = j * DW - PW
                lo, hi = _valid_range(off_w, SW, W, OW)
                for oy in range(OH):
                    h = oy * SH - PH + i * DH
                    if 0 <= h < H:
                        _add(plane, h * W + lo * SW + off_w, SW, src, oy * OW + lo, hi - lo)


@kernel
def _maxpool2d_forward(x, KH, KW, SH, SW, PH, PW, DH, DW, y, idx):
    """x: (N, C, H, W) -> y, idx: (N, C, OH, OW); first maximum in tap order wins, NaN wins."""
    N, C, H, W = x.shape
    OH, OW = y.shape[2], y.shape[3]
    for n in range(N):
        for c in range(C):
            plane = x[n, c]  # (H, W)
            for oy in range(OH):
                # taps i whose row oy*SH - PH + i*DH lies inside x (the rest is padding)
                i_lo, i_hi = _valid_range(oy * SH - PH, DH, H, KH)
                for ox in range(OW):
                    j_lo, j_hi = _valid_range(ox * SW - PW, DW, W, KW)
                    best, best_idx = -np.inf, -1  # what a window of padding alone reports
                    for i in range(i_lo, i_hi):
                        h = oy * SH - PH + i * DH
                        for j in range(j_lo, j_hi):
                            w = ox * SW - PW + j * DW
                            v = plane[h, w]
                            if best_idx < 0 or v > best or v != v:
                                best, best_idx = v, h * W + w
                    y[n, c, oy, ox] = best
                    idx[n, c, oy, ox] = best_idx


@kernel
def _maxpool2x2_forward(x, y, idx):
    """The FCN case of ``_maxpool2d_forward``: 2x2 windows, stride 2, tiling x exactly.

    x: (N, C, 2*OH, 2*OW) -> y, idx: (N, C, OH, OW). The same rule, with loop bounds known
    at compile time: LLVM unrolls the window and drops the branches, about ten times faster.
    """
    N, C, H, W = x.shape
    OH, OW = y.shape[2], y.shape[3]
    for n in range(N):
        for c in range(C):
            plane = x[n, c]  # (H, W)
            for oy in range(OH):
                for ox in range(OW):
                    best, best_idx = plane[2 * oy, 2 * ox], 2 * oy * W + 2 * ox
                    for i in range(2):
                        for j in range(2):
                            v = plane[2 * oy + i, 2 * ox + j]
                            if v > best or v != v:
                                best, best_idx = v, (2 * oy + i) * W + 2 * ox + j
                    y[n, c, oy, ox] = best
                    idx[n, c, oy, ox] = best_idx


@kernel
def _scatter_add(src, idx, out):
    """out[p, idx[p, k]] += src[p, k] in order of k, into a zeroed out.

    src, idx: (P, L) -> out: (P, M), one plane p per row.
    """
    for p in range(src.shape[0]):
        row = out[p]  # (M,)
        row[:] = 0
        for k in range(src.shape[1]):
            row[idx[p, k]] += src[p, k]


@kernel
def _gather(src, idx, out):
    """out[p, k] = src[p, idx[p, k]].  src: (P, M), idx: (P, L) -> out: (P, L)."""
    for p in range(idx.shape[0]):
        for k in range(idx.shape[1]):
            out[p, k] = src[p, idx[p, k]]


@kernel
def _relu_backward(dy, y, dx):
    """dx[k] = dy[k] if y[k] > 0 else 0, over flat arrays of one length."""
    for k in range(dy.size):
        dx[k] = dy[k] if y[k] > 0 else 0


@kernel
def _adam_update(p, g, m, v, shrink, weight_decay, beta1c, beta2, beta2c, step, bias2_sqrt, eps):
    """One Adam/AdamW step over flat arrays of one length, in one pass (see ``adam_update``);
    beta1c = 1 - beta1, beta2c = 1 - beta2, step = lr / (1 - beta1^t).

    The scalars come in the arrays' dtype, so every element is computed in that dtype, as
    NumPy's or torch's array operations would.
    """
    for k in range(p.size):
        grad = g[k] + weight_decay * p[k]
        mk = m[k] + beta1c * (grad - m[k])
        vk = beta2 * v[k] + beta2c * grad * grad
        m[k], v[k] = mk, vk
        p[k] = p[k] * shrink - step * mk / (np.sqrt(vk) / bias2_sqrt + eps)


def im2col(x, kernel_size, stride, padding, dilation, out_size, ones_row=False):
    """Unfold sliding windows into columns.

    x: (N, C, H, W) -> col: (N, C*KH*KW, OH*OW), or (N, C*KH*KW + 1, OH*OW) with a last row
    of ones for ``ones_row`` (this backend only: conv2d then adds its bias in the GEMM, as
    a last column of the weight, instead of in a pass of its own over the output)
    """
    x = np.ascontiguousarray(x)
    N, C = x.shape[:2]
    KH, KW = kernel_size
    OH, OW = out_size
    col = np.empty((N, C * KH * KW + ones_row, OH * OW), dtype=x.dtype)
    if ones_row:
        col[:, -1] = 1  # the kernels write the rows before it
    if OH * OW <= TABLE_PIXELS:
        taps = _taps(*map(tuple, (x.shape[2:], kernel_size, stride, padding, dilation, out_size)))
        _im2col_taps(x, taps, col)
    elif stride == dilation == (1, 1) and (OH, OW) == x.shape[2:]:
        _im2col_same(x, KH, KW, *padding, col)
    else:
        _im2col(x, KH, KW, *stride, *padding, *dilation, OH, OW, col)
    return col


def col2im(col, in_size, kernel_size, stride, padding, dilation, out_size):
    """Fold columns back into an image, summing overlapping taps: the adjoint of im2col.

    col: (N, C*KH*KW, OH*OW) -> x: (N, C, H, W), with (H, W) = in_size
    """
    col = np.ascontiguousarray(col)
    KH, KW = kernel_size
    N, C = col.shape[0], col.shape[1] // (KH * KW)
    x = np.empty((N, C, *in_size), dtype=col.dtype)
    if out_size[0] * out_size[1] <= TABLE_PIXELS:
        taps = _taps(*map(tuple, (in_size, kernel_size, stride, padding, dilation, out_size)))
        _col2im_taps(col, taps, x)
    else:
        _col2im(col, KH, KW, *stride, *padding, *dilation, *out_size, x)
    return x


def maxpool2d_forward(x, kernel_size, stride, padding, dilation, out_size):
    """Max over each window, recording where the maximum was.

    x: (N, C, H, W) -> y: (N, C, OH, OW), idx: (N, C, OH, OW) int64, flat into H*W
    """
    x = np.ascontiguousarray(x)
    shape = (*x.shape[:2], *out_size)
    y = np.empty(shape, dtype=x.dtype)
    idx = np.empty(shape, dtype=np.int64)
    tiles_2x2 = x.shape[2:] == (2 * out_size[0], 2 * out_size[1])
    if kernel_size == stride == (2, 2) and padding == (0, 0) and dilation == (1, 1) and tiles_2x2:
        _maxpool2x2_forward(x, y, idx)
    else:
        _maxpool2d_forward(x, *kernel_size, *stride, *padding, *dilation, y, idx)
    return y, idx


def maxunpool2d_forward(x, idx, out_size):
    """Scatter-add each value to its recorded position in a zero plane.

    x: (N, C, OH, OW), idx: same shape, flat into H*W -> y: (N, C, H, W), (H, W) = out_size
    """
    N, C, OH, OW = x.shape
    H, W = out_size
    src = np.ascontiguousarray(x).reshape(N * C, OH * OW)
    flat_idx = np.ascontiguousarray(idx, dtype=np.int64).reshape(N * C, OH * OW)
    y = np.empty((N * C, H * W), dtype=x.dtype)
    _scatter_add(src, flat_idx, y)
    return y.reshape(N, C, H, W)


def maxunpool2d_backward(dy, idx):
    """Gather the gradient at each recorded position: the adjoint of the scatter-add.

    dy: (N, C, H, W), idx: (N, C, OH, OW) -> dx: (N, C, OH, OW)
    """
    N, C, H, W = dy.shape
    src = np.ascontiguousarray(dy).reshape(N * C, H * W)
    flat_idx = np.ascontiguousarray(idx, dtype=np.int64).reshape(N * C, -1)
    dx = np.empty(flat_idx.shape, dtype=dy.dtype)
    _gather(src, flat_idx, dx)
    return dx.reshape(idx.shape)


def maxpool2d_backward(dy, idx, in_size):
    """Route each output gradient to the input that won its window.

    The gradient of max pooling is the same scatter-add as unpooling:
    dy: (N, C, OH, OW), idx: same shape -> dx: (N, C, H, W), (H, W) = in_size
    """
    return maxunpool2d_forward(dy, idx, in_size)


def relu_backward(dy, y):
    """ReLU's gradient from its output: dx = dy where y > 0, else 0 (any shape)."""
    dy, y = np.ascontiguousarray(dy), np.ascontiguousarray(y)
    dx = np.empty_like(dy)
    _relu_backward(dy.reshape(-1), y.reshape(-1), dx.reshape(-1))
    return dx


def adam_update(param, grad, m, v, t, lr, beta1, beta2, eps, weight_decay, decoupled):
    """One Adam (or, ``decoupled``, AdamW) step of one parameter at step t, in place:

        Adam: g = grad + weight_decay * p;  AdamW: p = p * (1 - lr * weight_decay), g = grad
        m = m + (1 - beta1) * (g - m);      v = beta2 * v + (1 - beta2) * g * g
        p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

    param, grad, m, v: arrays of one shape and dtype (param, m, v contiguous: updated in
    place). One pass over memory instead of a dozen array operations, in the arrays' dtype,
    with subnormal numbers read and written as zero (``subnormals.flushed``: the moments of
    units that no longer learn pass through them, and each one cost a microcode assist).
    """
    if not (param.flags.c_contiguous and m.flags.c_contiguous and v.flags.c_contiguous):
        raise ValueError("adam_update: param, m and v must be C-contiguous (updated in place)")
    coupled = 0.0 if decoupled else weight_decay  # Adam: in the gradient
    shrink = 1.0 - lr * weight_decay if decoupled else 1.0  # AdamW: of the parameter
    scalar = param.dtype.type
    with subnormals.flushed():
        _adam_update(
            param.reshape(-1),
            np.ascontiguousarray(grad).reshape(-1),
            m.reshape(-1),
            v.reshape(-1),
            scalar(shrink),
            scalar(coupled),
            scalar(1.0 - beta1),
            scalar(beta2),
            scalar(1.0 - beta2),
            scalar(lr / (1.0 - beta1**t)),
            scalar((1.0 - beta2**t) ** 0.5),
            scalar(eps),
        )
