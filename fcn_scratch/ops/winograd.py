"""3x3 convolutions with stride 1 and padding 1 by Winograd's minimal filtering, F(4x4, 3x3).

The FCNs' backbones are made of these "same" convolutions, and on the CPU, on one thread,
those with at least ``MIN_CHANNELS`` input channels run this way (``conv2d`` asks
``applies``; im2col stays the reference, the GPU's path and every other convolution's).
The idea, in one dimension and its smallest case, F(2, 3): two outputs of a 3-tap filter
g over four inputs d,

    y0 = d0 g0 + d1 g1 + d2 g2        y1 = d1 g0 + d2 g1 + d3 g2      (6 multiplications)

are also y0 = m1 + m2 + m3 and y1 = m2 - m3 - m4 with

    m1 = (d0 - d2) g0                 m2 = (d1 + d2) (g0 + g1 + g2) / 2
    m4 = (d1 - d3) g2                 m3 = (d2 - d1) (g0 - g1 + g2) / 2   (4 multiplications)

that is y = A^T [(G g) * (B^T d)], with * elementwise and

    B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]
    G   = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]
    A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]

Where these come from: the outputs are the coefficients of a product of polynomials, and
a product of degree k is known from its values at k + 1 points, one multiplication each
(here 0, 1, -1 and "infinity", the leading coefficient). More points give more outputs
per multiplication: F(4, 3), used here, takes the points 0, 1, -1, 2, -2 and infinity
for four outputs of six inputs with six multiplications, by the matrices ``BT`` (6x6),
``G`` (6x3) and ``AT`` (4x6) below (Lavin and Gray, "Fast Algorithms for Convolutional
Neural Networks", 2016).

In two dimensions a 6x6 input window d gives a 4x4 output tile Y = A^T [U * V] A with
U = G g G^T and V = B^T d B: 36 multiplications instead of 144. Over channels the products
add up, so for every one of the 36 positions it is a matrix product:

    V: (36, tiles, C_in)   U: (36, C_in, C_out)   M = V @ U: (36, tiles, C_out)

4 times fewer multiply-adds than im2col's GEMM (F(2x2, 3x3): 2.25 times), and the
transformed input is 2.25 times the input where im2col's columns are 9 times. The tiles of
the output do not overlap; the 6x6 windows of neighbouring tiles overlap by 2, which is
where B^T d B's extra adds go. Every step is linear, so the backward is the same steps
transposed:

    dM = A dY A^T                         (the output transform, transposed)
    dU = V^T @ dM,   dw = G^T dU G        (per position, then back to 3x3)
    dV = dM @ U^T,   dx = sum of B dV B^T over the overlapping windows

The results differ from the direct sum by rounding only, but by more of it than im2col's:
the transforms' entries reach 8 and G's sixths are rounded, so in float32 the error is
about 1e-5 of the largest output where im2col's is about 5e-7 (float64 passes the same
gradient check as im2col). Larger tiles would cut the multiply-adds further and lose
precision fast, which is why F(4x4, 3x3) is the usual choice. One difference beyond
rounding: an infinite input pixel makes its whole 4x4 output tile NaN (the transforms
subtract it from itself), where the direct sum gives inf or NaN only where the kernel
covers it; a network that has met an inf is lost either way.

The tile loops are Numba kernels (``fcn_scratch.kernels.winograd``), which keep the
channels last so that each loop runs over a whole row of tiles; the GEMMs are NumPy's. The
transforms cost the same per pixel whatever the channel count, so below ``MIN_CHANNELS``
im2col is the faster of the two and conv2d keeps it.
"""

from typing import NamedTuple

import numpy as np

from fcn_scratch import kernels, parallel
from fcn_scratch.kernels.winograd import TERMS

TILE = 4  # m: an output tile is m x m, read from an n x n input window
WINDOW = TILE + 2  # n
SAVING = TILE * TILE * 9 // (WINDOW * WINDOW)  # 4: multiply-adds of im2col per Winograd's
BT = np.array(
    [
        [4, 0, -5, 0, 1, 0],
        [0, -4, -4, 1, 1, 0],
        [0, 4, -4, -1, 1, 0],
        [0, -2, -1, 2, 1, 0],
        [0, 2, -1, -2, 1, 0],
        [0, 4, 0, -5, 0, 1],
    ]
)  # (n, n)
G = np.array(
    [
        [1 / 4, 0, 0],
        [-1 / 6, -1 / 6, -1 / 6],
        [-1 / 6, 1 / 6, -1 / 6],
        [1 / 24, 1 / 12, 1 / 6],
        [1 / 24, -1 / 12, 1 / 6],
        [0, 0, 1],
    ]
)  # (n, 3)
AT = np.array(
    [
        [1, 1, 1, 1, 1, 0],
        [0, 1, -1, 2, -2, 0],
        [0, 1, 1, 4, 4, 0],
        [0, 1, -1, 8, -8, 1],
    ]
)  # (m, n)


def terms(matrix, dtype):
    """A transform matrix as the kernels take it: (idx, coef), each (rows, TERMS), the
    columns of each row's nonzero entries and their values, padded with zero coefficients
    (see ``fcn_scratch.kernels.winograd``)."""
    rows = matrix.shape[0]
    idx = np.zeros((rows, TERMS), dtype=np.int64)
    coef = np.zeros((rows, TERMS), dtype=dtype)
    for r, row in enumerate(matrix):
        (nonzero,) = np.nonzero(row)
        idx[r, : len(nonzero)], coef[r, : len(nonzero)] = nonzero, row[nonzero]
        idx[r, len(nonzero) :] = nonzero[0]
    return idx, coef


# The four matrices of the kernels, by dtype: B^T, A^T and their transposes (the adjoints).
_TERMS = {
    np.dtype(t): {
        name: terms(a, t) for name, a in (("BT", BT), ("AT", AT), ("B", BT.T), ("A", AT.T))
    }
    for t in (np.float32, np.float64)
}


class WinogradCtx(NamedTuple):
    """What the backward needs of the input: its tiles, chunk by chunk, where they were
    kept (``KEEP_TILES_BYTES``), else its split rows xs (the other is None); and the chunks."""

    parts: list  # the chunks: slices of the batch (``chunks``)
    xs: object  # a tuple of split rows, one per chunk
    V: object  # a tuple of (n*n, tiles, C_in), one per chunk
    U: object  # the weight tiles, (n*n, C_in, C_out)
    w: object  # the weight, as given
    has_bias: bool


# Below this many input channels im2col is faster: the n*n products are matrix products over
# the channels, too short to run at speed, while the tile transforms cost the same per
# pixel (forward + backward, one thread, batch 4 at 64x64 to 16 channels: from 3 channels
# 1.4x im2col's time, from 8 0.3x, from 16 0.45x; from 16, 32 and 48 channels on the
# default recipe's 32x32, 16x16 and 8x8 maps 0.65x, 0.6x and 0.85x).
MIN_CHANNELS = 8

# Maps smaller than this on a side take im2col: a 4x4 map is a single tile an image and a
# 2x2 map a quarter of one, whose transforms cost more than they save (the default
# recipe's fc6, 64 -> 128 channels on 2x2 maps, batch 8: 3.8x im2col's time; from 64
# channels on 4x4 maps 0.8-1.4x).
MIN_SIZE = 8

# Tiles transformed and multiplied at a time: whole images, at least this many tiles. The
# transformed tiles are 2.25x the input, so a large batch's overflow the caches and the
# n*n products wait on memory; chunks keep them near (one thread, batch 8, forward +
# backward: 32 channels at 64x64 in chunks of one image, 0.8x the time of chunks of four;
# 64 channels at 32x32 and 128 at 16x16 within 5% of it either way, from 128 to 1024
# tiles a chunk).
CHUNK_TILES = 256

# The forward keeps every chunk's input tiles for the backward while they take at most
# this many bytes (2.25x the input's); beyond, it keeps the split rows (1x) and the
# backward transforms them again. On the benchmark's 32-channel layer at 64x64, batch 8,
# one thread, the second transform was an eighth of the kernels' time.
KEEP_TILES_BYTES = 64 * 2**20


def applies(x, w, stride, padding, dilation) -> bool:
    """Whether conv2d runs this way on one thread: a 3x3 kernel, stride 1, padding 1, no
    dilation, at least ``MIN_CHANNELS`` input channels, a map of at least ``MIN_SIZE``
    pixels a side, and the Numba kernels in use (not
    the GPU, nor another host backend chosen with ``kernels.using``). The tile transforms
    run on one thread: conv2d calls this where it has one (a training lane, or
    ``--threads 1``), or one per slice of its batch (``parallel.split_batch``)."""
    return (
        w.shape[1] >= MIN_CHANNELS
        and min(x.shape[2:]) >= MIN_SIZE
        and tuple(w.shape[2:]) == (3, 3)
        and stride == dilation == (1, 1)
        and padding == (1, 1)
        and kernels.winograd_for(x) is not None
    )


def tile_grid(H, W):
    """The m x m output tiles of an H x W image: (ceil(H/m), ceil(W/m)) of them."""
    return -(-H // TILE), -(-W // TILE)


def tile_count(n, H, W):
    """The number of output tiles of n images of H x W."""
    TH, TW = tile_grid(H, W)
    return n * TH * TW


def tile_rows(count, channels, dtype):
    """An empty (n*n, count * channels + pad) array for transformed tiles (the kernels'
    layout), padded so that its n*n rows do not start at multiples of 4 KiB apart: the
    tile kernels touch them all at once, and streams at such distances share a handful of
    cache sets and evict each other (that made the kernels 3-7x slower). The pad is one
    cache line."""
    return np.empty(
        (WINDOW * WINDOW, count * channels + 64 // np.dtype(dtype).itemsize), dtype=dtype
    )


def as_tiles(rows, count, channels):
    """The (n*n, count, channels) view of ``tile_rows``: n*n matrices for matmul."""
    return rows[:, : count * channels].reshape(WINDOW * WINDOW, count, channels)


def split_array(N, C, H, W, pad, dtype=np.float32):
    """An empty (N, m*TH + 2*pad, m*(TW + pad)*C) array for the split rows (see
    ``kernels.winograd``) of N images of C x H x W padded by ``pad`` (the kernels that fill
    it write every entry, zeros included)."""
    TH, TW = tile_grid(H, W)
    return np.empty((N, TILE * TH + 2 * pad, TILE * (TW + pad) * C), dtype=dtype)


def split_rows(k, x, pad):
    """x: (N, C, H, W) -> its split rows, padded by ``pad`` (1 for the input, with its
    border of zeros; 0 for dy) and zero past the edges, by the kernels ``k``."""
    N, C, H, W = x.shape
    s = split_array(N, C, H, W, pad, x.dtype)
    k.to_split_rows(np.ascontiguousarray(x), pad, s.reshape(N, s.shape[1], TILE, -1, C))
    return s


def merge_rows(k, s, out, pad, bias=None):
    """``split_rows`` undone, plus ``bias`` (C,) if given: s (N, rows, m*cols*C) -> out
    (N, C, H, W), in place."""
    N, C = out.shape[:2]
    bias = np.empty(0, out.dtype) if bias is None else bias
    k.from_split_rows(s.reshape(N, s.shape[1], TILE, -1, C), pad, bias, out)
    return out


# G (x) G: row n*i + j, column 3k + l holds G[i, k] G[j, l], so that the n*n entries of
# G g G^T are this matrix times the 9 entries of g; rounded to float32 and float64 (sixths
# and twenty-fourths are not exact in binary, an error of one rounding in each entry).
_GG = {np.dtype(t): np.kron(G, G).astype(t) for t in (np.float32, np.float64)}  # (n*n, 9)


def weight_tiles(w):
    """w: (C_out, C_in, 3, 3) -> U: (n*n, C_in, C_out), U[n*i + j] = (G g G^T)[i, j]
    (a transposed view)."""
    O, C = w.shape[:2]
    U = _GG[w.dtype] @ w.reshape(O * C, 9).T  # (n*n, O*C)
    return U.reshape(-1, O, C).transpose(0, 2, 1)


def weight_grad(dU, shape):
    """dU: (n*n, C_in, C_out) -> dw: (C_out, C_in, 3, 3), G^T dU G: the adjoint of
    ``weight_tiles``. (dU^T GG and not GG^T dU: the product comes out in the order
    (C_in, C_out, 9), which one copy turns into w's, where the other needs two.)"""
    C, O = dU.shape[1:]
    dw = dU.reshape(-1, C * O).T @ _GG[dU.dtype]  # (C_in*C_out, 9)
    return np.ascontiguousarray(dw.reshape(C, O, 9).transpose(1, 0, 2)).reshape(shape)


def chunks(N, H, W):
    """Slices of whole images, each of at least ``CHUNK_TILES`` tiles but the last, and,
    where the chunks go to several threads, of at most an even share of the batch each."""
    step = max(1, -(-CHUNK_TILES // tile_count(1, H, W)))
    if not parallel.on_one_thread():
        step = min(step, -(-N // parallel.thread_count()))
    return [slice(n, min(n + step, N)) for n in range(0, N, step)]


def conv3x3_forward(x, w, b, y=None):
    """x: (N, C_in, H, W), w: (C_out, C_in, 3, 3), b: (C_out,) or None ->
    (y (N, C_out, H, W), ctx), written into ``y`` if given. Chunk by chunk of images (on
    every thread at once, ``parallel.each``): split into rows, transform, multiply,
    transform, merge. Each image's output is its chunk's alone, whichever thread computes it."""
    k = kernels.winograd_for(x)
    bt, at = _TERMS[x.dtype]["BT"], _TERMS[x.dtype]["AT"]
    N, C_in, H, W = x.shape
    C_out = w.shape[0]
    parts = chunks(N, H, W)
    with parallel.quiet_blas():
        U = weight_tiles(w)
    small = WINDOW * WINDOW * tile_count(N, H, W) * C_in * x.itemsize <= KEEP_TILES_BYTES
    keep = small or len(parts) == 1  # the input tiles, else the split rows
    y = np.empty((N, C_out, H, W), dtype=x.dtype) if y is None else y

    def chunk(i):
        """The chunk's output, into y; returns what its backward needs: its tiles or rows."""
        n = parts[i].stop - parts[i].start
        t = tile_count(n, H, W)
        xs = split_rows(k, x[parts[i]], 1)
        V, M = tile_rows(t, C_in, x.dtype), tile_rows(t, C_out, x.dtype)
        k.input_tiles(xs, C_in, *bt, V)
        np.matmul(as_tiles(V, t, C_in), U, out=as_tiles(M, t, C_out))
        ys = split_array(n, C_out, H, W, 0, x.dtype)
        k.output_tiles(M, C_out, *at, ys)
        merge_rows(k, ys, y[parts[i]], 0, b)
        return as_tiles(V, t, C_in) if keep else xs

    kept = tuple(parallel.each(chunk, len(parts)))
    if keep:
        return y, WinogradCtx(parts, None, kept, U, w, b is not None)
    return y, WinogradCtx(parts, kept, None, U, w, b is not None)


def conv3x3_backward(dy, ctx, need_dx=True, need_dw=True):
    """dy: (N, C_out, H, W) -> (dx, dw, db) as ``conv.conv2d_backward``. Chunk by chunk as
    the forward, with the input tiles it kept, or transformed again from the split rows it
    kept; the chunks' dU are added in chunk order, so dw does not depend on which thread
    took which chunk."""
    k = kernels.winograd_for(dy)
    mats = _TERMS[dy.dtype]
    N, C_out, H, W = dy.shape
    C_in = ctx.w.shape[1]
    parts = ctx.parts
    dx = np.empty((N, C_in, H, W), dtype=dy.dtype) if need_dx else None

    def chunk(i):
        """The chunk's dx, into dx; returns its dU (or None)."""
        n = parts[i].stop - parts[i].start
        t = tile_count(n, H, W)
        dM = tile_rows(t, C_out, dy.dtype)
        k.output_grad_tiles(split_rows(k, dy[parts[i]], 0), C_out, *mats["A"], dM)
        dU = None
        if need_dw:
            if ctx.V is None:  # transformed again
                V = tile_rows(t, C_in, dy.dtype)
                k.input_tiles(ctx.xs[i], C_in, *mats["BT"], V)
                Vt = as_tiles(V, t, C_in)
            else:
                Vt = ctx.V[i]
            dU = Vt.transpose(0, 2, 1) @ as_tiles(dM, t, C_out)
        if need_dx:
            dV = tile_rows(t, C_in, dy.dtype)
            np.matmul(as_tiles(dM, t, C_out), ctx.U.transpose(0, 2, 1), out=as_tiles(dV, t, C_in))
            dxs = split_array(n, C_in, H, W, 1, dy.dtype)
            k.input_grad_tiles(dV, C_in, *mats["B"], dxs)
            merge_rows(k, dxs, dx[parts[i]], 1)
        return dU

    dUs = parallel.each(chunk, len(parts))
    dw = None
    if need_dw:
        dU = np.zeros((WINDOW * WINDOW, C_in, C_out), dtype=dy.dtype)
        for part in dUs:
            dU += part
        with parallel.quiet_blas():
            dw = weight_grad(dU, ctx.w.shape)
    db = dy.sum(axis=(0, 2, 3)) if ctx.has_bias else None
    return dx, dw, db
