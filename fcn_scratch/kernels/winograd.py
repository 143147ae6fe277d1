"""Winograd tile transforms, compiled with Numba (CPU only).

The arithmetic and where it comes from are in ``fcn_scratch.ops.winograd``; this module
holds the loops that move the tiles. An m x m output tile of a 3x3 convolution comes from
an n x n input window, n = m + 2, and every transform is a small matrix applied down the
columns of a tile (combining rows of the image), then along its rows (combining columns):

    input tile      B^T d B         B^T: (n, n)
    output tile     A^T M A         A^T: (m, n)
    their adjoints  B e B^T, A g A^T

The kernels take a matrix as its "terms": for each row, the columns of its nonzero
entries and their values, five per row (rows with fewer are padded with zero
coefficients), as ``idx`` (rows, 5) and ``coef`` (rows, 5) in the data's dtype. Which
matrices, and so m, is the caller's choice; the loops only follow them.

Layouts. Tile (ty, tx) covers the outputs ``[m*ty, m*ty + m) x [m*tx, m*tx + m)`` and reads
the n x n input window at ``(m*ty, m*tx)`` of the image padded by 1. TH = ceil(H/m), TW =
ceil(W/m), C the channels. Images come as "split rows", channels last, with the columns
apart by their remainder mod m: ``S[img, row, phase, j, c]`` is pixel ``(row, m*j +
phase)``, flattened to ``(N, rows, m * cols * C)``. Column m*tx + s of the window (s < n)
is then the block ``(s % m, tx + s // m)``, and a whole row of tiles is a few contiguous
runs. Transformed tiles are ``(n*n, >= N*TH*TW*C)``: entry ``n*i + j`` of tile ``t = (img*TH
+ ty)*TW + tx``, channel c, at ``[n*i + j, t*C + c]``, viewed by the caller as
``(n*n, tiles, C)``, n*n matrices for matmul.

Every inner loop (``_mix``) runs over one row of tiles and all channels at once, with unit
stride, writes one array and indexes with unsigned integers: what LLVM needs to vectorise
it (a loop that writes many arrays it cannot prove free of overlaps; Numba checks signed
indices for wrap-around). Like the other CPU kernels these run on one thread, release the
GIL and add in a fixed order (deterministic); the caller allocates the outputs.
"""

import numpy as np
from numba import njit, uint64

from fcn_scratch.kernels.cpu import kernel

TERMS = 5  # nonzero entries per row of a transform matrix, at most


@njit(inline="always", cache=True)
def _mix(dst, d, src, s, rel, coef, count):
    """dst[d + u] = the sum over t < 5 of coef[t] * src[s + rel[t] + u], for u < count:
    one row of a transform matrix applied to a whole row of tiles. A row of one term is a
    scaled copy and takes one load, not five (the edge rows of B and A); rows of two to
    four terms take the five-term loop (a loop of three terms as well, for B^T's edge
    rows, made the kernels' cold-cache compile 1.4x as long)."""
    _dispatch(dst, d, src, s, rel, coef, count, False)


@njit(inline="always", cache=True)
def _mix_add(dst, d, src, s, rel, coef, count):
    """``_mix`` with ``+=``."""
    _dispatch(dst, d, src, s, rel, coef, count, True)


@njit(inline="always", cache=True)
def _dispatch(dst, d, src, s, rel, coef, count, add):
    """``_mix`` (add False) or ``_mix_add`` (add True), by the row's number of terms."""
    d, count = uint64(d), uint64(count)
    s0, s1, s2 = uint64(s + rel[0]), uint64(s + rel[1]), uint64(s + rel[2])
    s3, s4 = uint64(s + rel[3]), uint64(s + rel[4])
    c0, c1, c2, c3, c4 = coef[0], coef[1], coef[2], coef[3], coef[4]
    if c1 == 0:
        if add:
            for u in range(count):
                dst[d + u] += c0 * src[s0 + u]
        else:
            for u in range(count):
                dst[d + u] = c0 * src[s0 + u]
    elif add:
        for u in range(count):
            dst[d + u] += (
                c0 * src[s0 + u]
                + c1 * src[s1 + u]
                + c2 * src[s2 + u]
                + c3 * src[s3 + u]
                + c4 * src[s4 + u]
            )
    else:
        for u in range(count):
            dst[d + u] = (
                c0 * src[s0 + u]
                + c1 * src[s1 + u]
                + c2 * src[s2 + u]
                + c3 * src[s3 + u]
                + c4 * src[s4 + u]
            )


@njit(inline="always", cache=True)
def _window_column(s, m, C, width):
    """Where column s < n of window 0 starts in a row of split rows ``width`` wide."""
    return (s % m) * (width // m) + (s // m) * C


@kernel
def input_tiles(xs, C, idx, coef, V):
    """xs: (N, m*TH + 2, m*(TW+1)*C) split rows of the padded input -> V: each n x n
    window d as B^T d B (idx, coef: the terms of B^T, n rows)."""
    n = idx.shape[0]
    m = n - 2
    N, rows, width = xs.shape
    TH, TW = (rows - 2) // m, width // (m * C) - 1
    run, L = TW * C, V.shape[1]
    x, v = xs.reshape(N, rows * width), V.reshape(V.size)
    down = idx * width  # rows of the window
    along = np.empty_like(idx)  # columns of the window
    for r in range(n):
        for t in range(TERMS):
            along[r, t] = _window_column(idx[r, t], m, C, width)
    R = np.empty(n * width, dtype=xs.dtype)  # B^T down the columns of a row of windows
    for img in range(N):
        for ty in range(TH):
            for i in range(n):
                _mix(R, i * width, x[img], m * ty * width, down[i], coef[i], width)
            base = (img * TH + ty) * run
            for i in range(n):  # B^T along the rows
                for j in range(n):
                    _mix(v, (n * i + j) * L + base, R, i * width, along[j], coef[j], run)


@kernel
def output_tiles(M, C, idx, coef, ys):
    """M: the products, (n*n, >= N*TH*TW*C) -> ys: (N, m*TH, m*TW*C) split rows of the
    output, each m x m tile A^T M A (idx, coef: the terms of A^T, m rows)."""
    m = idx.shape[0]
    n = m + 2
    N, rows, width = ys.shape
    TH, TW = rows // m, width // (m * C)
    run, L = TW * C, M.shape[1]
    mm, y = M.reshape(M.size), ys.reshape(N, rows * width)
    down = idx * (n * L)  # rows of the tile
    along = idx * run  # columns of the tile, as rows of S
    S = np.empty(m * n * run, dtype=ys.dtype)  # A^T down the columns of a row of tiles
    for img in range(N):
        for ty in range(TH):
            base = (img * TH + ty) * run
            for a in range(m):
                for j in range(n):
                    _mix(S, (a * n + j) * run, mm, j * L + base, down[a], coef[a], run)
            for a in range(m):  # A^T along the rows: output column m*tx + c is phase c
                for c in range(m):
                    d = (m * ty + a) * width + c * run
                    _mix(y[img], d, S, a * n * run, along[c], coef[c], run)


@kernel
def output_grad_tiles(gs, C, idx, coef, dM):
    """gs: (N, m*TH, m*TW*C) split rows of dy (zero past the edges) -> dM: each m x m
    tile g as A g A^T, the adjoint of ``output_tiles`` (idx, coef: the terms of A, n
    rows)."""
    n = idx.shape[0]
    m = n - 2
    N, rows, width = gs.shape
    TH, TW = rows // m, width // (m * C)
    run, L = TW * C, dM.shape[1]
    g, dm = gs.reshape(N, rows * width), dM.reshape(dM.size)
    down = idx * width  # rows of the tile
    along = idx * run  # columns of the tile (phases of a row)
    E = np.empty(n * width, dtype=gs.dtype)  # A down the columns of a row of tiles
    for img in range(N):
        for ty in range(TH):
            for i in range(n):
                _mix(E, i * width, g[img], m * ty * width, down[i], coef[i], width)
            base = (img * TH + ty) * run
            for i in range(n):  # A along the rows
                for j in range(n):
                    _mix(dm, (n * i + j) * L + base, E, i * width, along[j], coef[j], run)


@kernel
def input_grad_tiles(dV, C, idx, coef, dxs):
    """dV: (n*n, >= N*TH*TW*C) -> dxs: (N, m*TH + 2, m*(TW+1)*C) split rows of the padded
    input gradient, every entry written: each tile e as B e B^T added into its window, the
    adjoint of ``input_tiles`` (idx, coef: the terms of B, n rows), into rows set to 0 as
    a row of windows first reaches them. Overlapping windows add in a fixed order: along a
    row, window column 0 of every window first, then column 1, and so on; down the image
    one row of windows after the other."""
    n = idx.shape[0]
    m = n - 2
    N, rows, width = dxs.shape
    TH, TW = (rows - 2) // m, width // (m * C) - 1
    run, L = TW * C, dV.shape[1]
    dx, dv = dxs.reshape(N, rows * width), dV.reshape(dV.size)
    down = idx * width  # rows of F
    along = idx * L  # entries of a tile row, as rows of dV
    F = np.empty(n * width, dtype=dxs.dtype)  # B along the rows of a row of windows
    for img in range(N):
        for ty in range(TH):
            F[:] = 0
            first = 0 if ty == 0 else n - m  # the window rows that the row above left alone
            dx[img, (m * ty + first) * width : (m * ty + n) * width] = 0
            base = (img * TH + ty) * run
            for i in range(n):
                for s in range(n):
                    d = i * width + _window_column(s, m, C, width)
                    _mix_add(F, d, dv, n * i * L + base, along[s], coef[s], run)
            for s in range(n):  # B down the columns, into the image
                _mix_add(dx[img], (m * ty + s) * width, F, 0, down[s], coef[s], width)


@kernel
def to_split_rows(x, pad, s):
    """x: (N, C, H, W) -> s: (N, rows, m, cols, C), s[img, h + pad, (w + pad) % m,
    (w + pad) // m, c] = x[img, c, h, w] and 0 elsewhere (the padding, and past the
    edges). Row by row of the image: its (C, W) pixels transposed into a (W, C) buffer,
    then copied phase by phase as whole channel vectors (2.5-5x faster than one pixel at
    a time, which strides through memory on one side or the other)."""
    N, C, H, W = x.shape
    m, cols = s.shape[2], s.shape[3]
    row = np.empty((W, C), dtype=x.dtype)
    for img in range(N):
        s[img, :pad] = 0
        s[img, H + pad :] = 0
        for h in range(H):
            for c in range(C):
                for w in range(uint64(W)):
                    row[w, c] = x[img, c, h, w]
            for p in range(m):
                lo, hi = _phase_range(p, pad, m, W, cols)
                s[img, h + pad, p, :lo] = 0
                s[img, h + pad, p, hi:] = 0
                for j in range(lo, hi):
                    w = m * j + p - pad
                    for c in range(uint64(C)):
                        s[img, h + pad, p, j, c] = row[w, c]


@kernel
def from_split_rows(s, pad, bias, x):
    """``to_split_rows`` undone, plus a bias: s: (N, rows, m, cols, C) -> x: (N, C, H, W),
    x[img, c] = the pixels of channel c + bias[c] (bias: (C,), or empty for none: adding
    it here saves a pass over x)."""
    N, C, H, W = x.shape
    m, cols = s.shape[2], s.shape[3]
    row = np.empty((W, C), dtype=x.dtype)
    for img in range(N):
        for h in range(H):
            for p in range(m):
                lo, hi = _phase_range(p, pad, m, W, cols)
                for j in range(lo, hi):
                    w = m * j + p - pad
                    for c in range(uint64(C)):
                        row[w, c] = s[img, h + pad, p, j, c]
            for c in range(C):
                if bias.size:
                    for w in range(uint64(W)):
                        x[img, c, h, w] = row[w, c] + bias[c]
                else:
                    for w in range(uint64(W)):
                        x[img, c, h, w] = row[w, c]


@njit(inline="always", cache=True)
def _phase_range(p, pad, m, W, cols):
    """The blocks j < cols of phase p whose column m*j + p - pad is in [0, W)."""
    lo = max(0, (pad - p + m - 1) // m)
    hi = min(cols, (W - 1 + pad - p) // m + 1)
    return lo, max(lo, hi)
