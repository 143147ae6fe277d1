"""3x3 convolutions with stride 1 and padding 1 by Winograd's minimal filtering, F(2x2, 3x3).

The FCNs' backbones are made of these "same" convolutions, and on the CPU, on one thread,
those with at least ``MIN_CHANNELS`` input channels run this way (``conv2d`` asks
``applies``; im2col stays the reference, the GPU's path and every other convolution's).
The idea, in one dimension: two outputs of a 3-tap filter g over four inputs d,

    y0 = d0 g0 + d1 g1 + d2 g2        y1 = d1 g0 + d2 g1 + d3 g2      (6 multiplications)

are also y0 = m1 + m2 + m3 and y1 = m2 - m3 - m4 with

    m1 = (d0 - d2) g0                 m2 = (d1 + d2) (g0 + g1 + g2) / 2
    m4 = (d1 - d3) g2                 m3 = (d2 - d1) (g0 - g1 + g2) / 2   (4 multiplications)

that is y = A^T [(G g) * (B^T d)], with * elementwise and

    B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]
    G   = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]
    A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]

In two dimensions a 4x4 input tile d gives a 2x2 output tile Y = A^T [U * V] A with
U = G g G^T and V = B^T d B: 16 multiplications instead of 36. Over channels the products
add up, so for every one of the 16 positions it is a matrix product:

    V: (16, tiles, C_in)   U: (16, C_in, C_out)   M = V @ U: (16, tiles, C_out)

2.25 times fewer multiply-adds than im2col's GEMM, and the transformed input is 4 times
the input where im2col's columns are 9 times. The tiles of the output do not overlap; the
4x4 input windows of neighbouring tiles overlap by 2, which is where B^T d B's extra adds
go. Every step is linear, so the backward is the same steps transposed:

    dM = A dY A^T                         (the output transform, transposed)
    dU = V^T @ dM,   dw = G^T dU G        (per position, then back to 3x3)
    dV = dM @ U^T,   dx = sum of B dV B^T over the overlapping windows

The results differ from the direct sum by rounding only (in float32 a few 1e-7 relative
to the largest output; float64 passes the same gradient check as im2col). One difference
beyond rounding: an infinite input pixel makes its whole 2x2 output tile NaN (the
transforms subtract it from itself), where the direct sum gives inf or NaN only where the
kernel covers it; a network that has met an inf is lost either way.

The tile loops are Numba kernels (``fcn_scratch.kernels.winograd``), which keep the
channels last so that each loop runs over a whole row of tiles; the GEMMs are NumPy's. The
transforms cost the same per pixel whatever the channel count, so below ``MIN_CHANNELS``
im2col is the faster of the two and conv2d keeps it.
"""

from typing import NamedTuple

import numpy as np

from fcn_scratch import kernels

_G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])  # (4, 3)


class WinogradCtx(NamedTuple):
    """What the backward needs of the input: its tiles V (16, tiles, C_in) where the batch
    was one chunk, else its split rows xs (the other is None)."""

    xs: object
    V: object
    U: object  # the weight tiles, (16, C_in, C_out)
    w: object  # the weight, as given
    has_bias: bool


# Below this many input channels im2col is faster: the 16 products are matrix products over
# the channels, too short to run at speed, while the tile transforms cost the same per
# pixel (measured on the default model's layers, batch 4 and 8, one thread: from 3 and 16
# channels 1.0-1.9x im2col's time, from 32, 48 and 64 0.45-0.8x).
MIN_CHANNELS = 32

# Tiles transformed and multiplied at a time: whole images, at least this many tiles. The
# transformed tiles are 4x the input, so a large batch's overflow the caches and the 16
# products wait on memory; chunks keep them near (one thread, batch 16: 0.61x the
# unchunked time at 32 channels 64x64, 0.73x at 64 channels 32x32), while chunks of fewer
# tiles make the products too short (128 channels at 16x16, 64 tiles an image: 1.05x in
# chunks of 4 images, 1.6x of 1).
CHUNK_TILES = 1024


def applies(x, w, stride, padding, dilation) -> bool:
    """Whether conv2d runs this way on one thread: a 3x3 kernel, stride 1, padding 1, no
    dilation, at least ``MIN_CHANNELS`` input channels, and the Numba kernels in use (not
    the GPU, nor another host backend chosen with ``kernels.using``). The tile transforms
    run on one thread: conv2d calls this where it has one (a training lane, or
    ``--threads 1``), or one per slice of its batch (``parallel.split_batch``)."""
    return (
        w.shape[1] >= MIN_CHANNELS
        and tuple(w.shape[2:]) == (3, 3)
        and stride == dilation == (1, 1)
        and padding == (1, 1)
        and kernels.winograd_for(x) is not None
    )


def tile_grid(H, W):
    """The 2x2 output tiles of an H x W image: (ceil(H/2), ceil(W/2)) of them."""
    return (H + 1) // 2, (W + 1) // 2


def tile_count(N, H, W):
    """The number of 2x2 output tiles of N images of H x W."""
    TH, TW = tile_grid(H, W)
    return N * TH * TW


def tile_rows(count, channels, dtype):
    """An empty (16, count * channels + pad) array for transformed tiles (the kernels'
    layout), padded so that its 16 rows do not start at multiples of 4 KiB apart: the tile
    kernels touch all 16 at once, and 16 streams at such distances share a handful of
    cache sets and evict each other (that made the kernels 3-7x slower). The pad is one
    cache line."""
    return np.empty((16, count * channels + 64 // np.dtype(dtype).itemsize), dtype=dtype)


def as_tiles(rows, count, channels):
    """The (16, count, channels) view of ``tile_rows``: 16 matrices for matmul."""
    return rows[:, : count * channels].reshape(16, count, channels)


def split_array(N, C, H, W, pad, fill=np.empty, dtype=np.float32):
    """A (N, 2*TH + 2*pad, 2*(TW + pad)*C) array for the split rows (see
    ``kernels.winograd``) of N images of C x H x W padded by ``pad``, made by ``fill``
    (``np.zeros`` where the padding and the odd edges must read 0)."""
    TH, TW = tile_grid(H, W)
    return fill((N, 2 * (TH + pad), 2 * (TW + pad) * C), dtype=dtype)


def split_rows(k, x, pad):
    """x: (N, C, H, W) -> its split rows, padded by ``pad`` (1 for the input, with its
    border of zeros; 0 for dy) and zero past odd edges, by the kernels ``k``."""
    N, C, H, W = x.shape
    s = split_array(N, C, H, W, pad, np.zeros, x.dtype)
    k.to_split_rows(np.ascontiguousarray(x), pad, s.reshape(N, s.shape[1], 2, -1, C))
    return s


def merge_rows(k, s, out, pad):
    """``split_rows`` undone: s (N, rows, 2*cols*C) -> out (N, C, H, W), in place."""
    N, C = out.shape[:2]
    k.from_split_rows(s.reshape(N, s.shape[1], 2, -1, C), pad, out)
    return out


# G (x) G: row 4i + j, column 3k + l holds G[i, k] G[j, l], so that the 16 entries of
# G g G^T are this matrix times the 9 entries of g; in float32 and float64 (its entries,
# products of 0, 1/2 and 1, are exact in both).
_GG = {np.dtype(t): np.kron(_G, _G).astype(t) for t in (np.float32, np.float64)}  # (16, 9)


def weight_tiles(w):
    """w: (C_out, C_in, 3, 3) -> U: (16, C_in, C_out), U[4i + j] = (G g G^T)[i, j]
    (a transposed view)."""
    O, C = w.shape[:2]
    U = _GG[w.dtype] @ w.reshape(O * C, 9).T  # (16, O*C)
    return U.reshape(16, O, C).transpose(0, 2, 1)


def weight_grad(dU, shape):
    """dU: (16, C_in, C_out) -> dw: (C_out, C_in, 3, 3), G^T dU G: the adjoint of
    ``weight_tiles``. (dU^T GG and not GG^T dU: the product comes out in the order
    (C_in, C_out, 9), which one copy turns into w's, where the other needs two.)"""
    C, O = dU.shape[1:]
    dw = dU.reshape(16, C * O).T @ _GG[dU.dtype]  # (C_in*C_out, 9)
    return np.ascontiguousarray(dw.reshape(C, O, 9).transpose(1, 0, 2)).reshape(shape)


def chunks(N, H, W):
    """Slices of whole images, each of at least ``CHUNK_TILES`` tiles but the last."""
    step = max(1, -(-CHUNK_TILES // tile_count(1, H, W)))
    return [slice(n, min(n + step, N)) for n in range(0, N, step)]


def conv3x3_forward(x, w, b):
    """x: (N, C_in, H, W), w: (C_out, C_in, 3, 3), b: (C_out,) or None ->
    (y (N, C_out, H, W), ctx). Chunk by chunk of images: transform, multiply, transform."""
    k = kernels.winograd_for(x)
    N, C_in, H, W = x.shape
    C_out = w.shape[0]
    parts = chunks(N, H, W)
    T = tile_count(parts[0].stop, H, W)  # the largest chunk's tiles
    U = weight_tiles(w)
    V, M = tile_rows(T, C_in, x.dtype), tile_rows(T, C_out, x.dtype)
    xs = split_rows(k, x, 1)
    ys = split_array(N, C_out, H, W, 0, dtype=x.dtype)
    for part in parts:
        t = tile_count(part.stop - part.start, H, W)
        k.input_tiles(xs[part], C_in, V)
        np.matmul(as_tiles(V, t, C_in), U, out=as_tiles(M, t, C_out))
        k.output_tiles(M, C_out, ys[part])
    y = merge_rows(k, ys, np.empty((N, C_out, H, W), dtype=x.dtype), 0)
    if b is not None:
        y += b.reshape(1, C_out, 1, 1)
    if len(parts) == 1:
        return y, WinogradCtx(None, as_tiles(V, T, C_in), U, w, b is not None)
    return y, WinogradCtx(xs, None, U, w, b is not None)


def conv3x3_backward(dy, ctx, need_dx=True, need_dw=True):
    """dy: (N, C_out, H, W) -> (dx, dw, db) as ``conv.conv2d_backward``. Chunk by chunk as
    the forward; the input tiles of several chunks are transformed again from the split
    rows (keeping them all would cost 4x the input's memory)."""
    k = kernels.winograd_for(dy)
    N, C_out, H, W = dy.shape
    C_in = ctx.w.shape[1]
    parts = chunks(N, H, W)
    T = tile_count(parts[0].stop, H, W)
    dys = split_rows(k, dy, 0)
    dM = tile_rows(T, C_out, dy.dtype)
    V = tile_rows(T, C_in, dy.dtype) if need_dw and ctx.V is None else None
    dU = np.zeros((16, C_in, C_out), dtype=dy.dtype) if need_dw else None
    dV = tile_rows(T, C_in, dy.dtype) if need_dx else None
    dxs = split_array(N, C_in, H, W, 1, np.zeros, dy.dtype) if need_dx else None
    for part in parts:
        t = tile_count(part.stop - part.start, H, W)
        k.output_grad_tiles(dys[part], C_out, dM)
        if need_dw:
            if ctx.V is None:  # transformed again
                k.input_tiles(ctx.xs[part], C_in, V)
            Vt = as_tiles(V, t, C_in) if ctx.V is None else ctx.V
            dU += Vt.transpose(0, 2, 1) @ as_tiles(dM, t, C_out)
        if need_dx:
            np.matmul(as_tiles(dM, t, C_out), ctx.U.transpose(0, 2, 1), out=as_tiles(dV, t, C_in))
            k.input_grad_tiles(dV, C_in, dxs[part])
    dw = weight_grad(dU, ctx.w.shape) if need_dw else None
    dx = merge_rows(k, dxs, np.empty((N, C_in, H, W), dtype=dy.dtype), 1) if need_dx else None
    db = dy.sum(axis=(0, 2, 3)) if ctx.has_bias else None
    return dx, dw, db
