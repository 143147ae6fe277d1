"""Winograd F(2x2, 3x3) tile transforms, compiled with Numba (CPU only).

The arithmetic and where it comes from are in ``fcn_scratch.ops.winograd``; this module
holds the loops that move the tiles. The four 1-D transforms, as sums:

    B^T d = (d0 - d2, d1 + d2, d2 - d1, d1 - d3)        input tile      (4 -> 4)
    A^T m = (m0 + m1 + m2, m1 - m2 - m3)                 output tile     (4 -> 2)
    A g   = (g0, g0 + g1, g0 - g1, -g1)                  its adjoint     (2 -> 4)
    B e   = (e0, e1 - e2 + e3, e1 + e2 - e0, -e3)        its adjoint     (4 -> 4)

A 2-D transform applies one down the columns of a tile (combining rows of the image),
then along its rows (combining columns).

Layouts. Tile (ty, tx) covers the outputs ``[2ty, 2ty+2) x [2tx, 2tx+2)`` and reads the
4x4 input window at ``(2ty, 2tx)`` of the image padded by 1. TH = ceil(H/2), TW =
ceil(W/2), C the channels. Images come as "split rows", channels last, with the even and
odd columns apart: ``S[n, row, parity, j, c]`` is pixel ``(row, 2*j + parity)``, flattened
to ``(N, rows, 2 * cols * C)``. Column 2tx + s of the window (s = 0, 1, 2, 3) is then the
block ``(s % 2, tx + s // 2)``, and a whole row of tiles is a few contiguous runs.
Transformed tiles are ``(16, >= N*TH*TW*C)``: element ``4*i + j`` of tile ``t = (n*TH +
ty)*TW + tx``, channel c, at ``[4*i + j, t*C + c]``, viewed by the caller as
``(16, tiles, C)``, 16 matrices for matmul.

Every inner loop runs over one row of tiles and all channels at once, with unit stride,
writes one array and indexes with unsigned integers: what LLVM needs to vectorise it
(a loop that writes many arrays it cannot prove free of overlaps; Numba checks signed
indices for wrap-around). Like the other CPU kernels these run on one thread, release the
GIL and add in a fixed order (deterministic); the caller allocates the outputs.
"""

import numpy as np
from numba import uint64

from fcn_scratch.kernels.cpu import kernel


@kernel
def input_tiles(xs, C, V):
    """xs: (N, 2*TH + 2, 2*(TW+1)*C) split rows of the padded input -> V: each 4x4
    window d as B^T d B."""
    N, rows, width = xs.shape
    TH, TW = (rows - 2) // 2, width // (2 * C) - 1
    run, odd, C = uint64(TW * C), uint64(width // 2), uint64(C)
    R = np.empty((4, width), dtype=xs.dtype)  # B^T down the columns of a row of windows
    for n in range(N):
        for ty in range(uint64(TH)):
            y = 2 * ty
            for u in range(uint64(width)):
                R[0, u] = xs[n, y, u] - xs[n, y + 2, u]
            for u in range(uint64(width)):
                R[1, u] = xs[n, y + 1, u] + xs[n, y + 2, u]
            for u in range(uint64(width)):
                R[2, u] = xs[n, y + 2, u] - xs[n, y + 1, u]
            for u in range(uint64(width)):
                R[3, u] = xs[n, y + 1, u] - xs[n, y + 3, u]
            base = uint64(n * TH * TW * C) + ty * run
            for i in range(uint64(4)):  # B^T along the rows: columns 0..3 of window tx
                k = 4 * i  # are at u, odd + u, u + C, odd + u + C (u = tx*C + c)
                for u in range(run):
                    V[k, base + u] = R[i, u] - R[i, u + C]
                for u in range(run):
                    V[k + 1, base + u] = R[i, odd + u] + R[i, u + C]
                for u in range(run):
                    V[k + 2, base + u] = R[i, u + C] - R[i, odd + u]
                for u in range(run):
                    V[k + 3, base + u] = R[i, odd + u] - R[i, odd + u + C]


@kernel
def output_tiles(M, C, ys):
    """M: the products, (16, >= N*TH*TW*C) -> ys: (N, 2*TH, 2*TW*C) split rows of the
    output, each 2x2 tile A^T m A."""
    N, rows, width = ys.shape
    TH, TW = rows // 2, width // (2 * C)
    run = uint64(TW * C)
    S = np.empty((8, run), dtype=ys.dtype)  # A^T down the columns of a row of tiles
    for n in range(N):
        for ty in range(uint64(TH)):
            base = uint64(n * TH * TW * C) + ty * run
            for j in range(uint64(4)):
                for u in range(run):
                    S[j, u] = M[j, base + u] + M[4 + j, base + u] + M[8 + j, base + u]
                for u in range(run):
                    S[4 + j, u] = M[4 + j, base + u] - M[8 + j, base + u] - M[12 + j, base + u]
            for a in range(uint64(2)):  # A^T along the rows: even, then odd columns
                k, y = 4 * a, 2 * ty + a
                for u in range(run):
                    ys[n, y, u] = S[k, u] + S[k + 1, u] + S[k + 2, u]
                for u in range(run):
                    ys[n, y, run + u] = S[k + 1, u] - S[k + 2, u] - S[k + 3, u]


@kernel
def output_grad_tiles(gs, C, dM):
    """gs: (N, 2*TH, 2*TW*C) split rows of dy (zero past odd edges) -> dM: each 2x2
    tile g as A g A^T, the adjoint of ``output_tiles``."""
    N, rows, width = gs.shape
    TH, TW = rows // 2, width // (2 * C)
    run = uint64(TW * C)
    E = np.empty((4, width), dtype=gs.dtype)  # A down the columns of a row of tiles
    for n in range(N):
        for ty in range(uint64(TH)):
            y = 2 * ty
            for u in range(uint64(width)):
                E[0, u] = gs[n, y, u]
            for u in range(uint64(width)):
                E[1, u] = gs[n, y, u] + gs[n, y + 1, u]
            for u in range(uint64(width)):
                E[2, u] = gs[n, y, u] - gs[n, y + 1, u]
            for u in range(uint64(width)):
                E[3, u] = -gs[n, y + 1, u]
            base = uint64(n * TH * TW * C) + ty * run
            for i in range(uint64(4)):  # A along the rows: even column at u, odd at run + u
                k = 4 * i
                for u in range(run):
                    dM[k, base + u] = E[i, u]
                for u in range(run):
                    dM[k + 1, base + u] = E[i, u] + E[i, run + u]
                for u in range(run):
                    dM[k + 2, base + u] = E[i, u] - E[i, run + u]
                for u in range(run):
                    dM[k + 3, base + u] = -E[i, run + u]


@kernel
def input_grad_tiles(dV, C, dxs):
    """dV: (16, >= N*TH*TW*C) -> dxs: (N, 2*TH + 2, 2*(TW+1)*C) split rows of the padded
    input gradient, zeroed by the caller: each tile e as B e B^T added into its window.
    The adjoint of ``input_tiles``. Overlapping windows add in a fixed order: along a row
    the left halves of the windows first, then the right halves; down the image one row of
    windows after the other."""
    N, rows, width = dxs.shape
    TH, TW = (rows - 2) // 2, width // (2 * C) - 1
    run, odd, C = uint64(TW * C), uint64(width // 2), uint64(C)
    F = np.empty((4, width), dtype=dxs.dtype)  # B along the rows of a row of windows
    for n in range(N):
        for ty in range(uint64(TH)):
            base = uint64(n * TH * TW * C) + ty * run
            for i in range(uint64(4)):
                k = 4 * i
                for u in range(run):  # columns 0 and 1 of each window
                    F[i, u] = dV[k, base + u]
                for u in range(run):
                    F[i, odd + u] = dV[k + 1, base + u] - dV[k + 2, base + u] + dV[k + 3, base + u]
                for c in range(C):
                    F[i, run + c] = 0
                    F[i, odd + run + c] = 0
                for u in range(run):  # columns 2 and 3: on the next window's 0 and 1
                    F[i, C + u] += dV[k + 1, base + u] + dV[k + 2, base + u] - dV[k, base + u]
                for u in range(run):
                    F[i, odd + C + u] -= dV[k + 3, base + u]
            y = 2 * ty
            for u in range(uint64(width)):  # B down the columns, into the image
                dxs[n, y, u] += F[0, u]
            for u in range(uint64(width)):
                dxs[n, y + 1, u] += F[1, u] - F[2, u] + F[3, u]
            for u in range(uint64(width)):
                dxs[n, y + 2, u] += F[1, u] + F[2, u] - F[0, u]
            for u in range(uint64(width)):
                dxs[n, y + 3, u] -= F[3, u]


@kernel
def to_split_rows(x, pad, s):
    """x: (N, C, H, W) -> s: (N, rows, 2, cols, C), s[n, h + pad, (w + pad) % 2,
    (w + pad) // 2, c] = x[n, c, h, w]; the rest of s is left as it is (zeros from the
    caller)."""
    N, C, H, W = x.shape
    pad = uint64(pad)
    for n in range(N):
        for c in range(uint64(C)):
            for h in range(uint64(H)):
                for w in range(uint64(W)):
                    col = w + pad
                    s[n, h + pad, col & 1, col >> 1, c] = x[n, c, h, w]


@kernel
def from_split_rows(s, pad, x):
    """``to_split_rows`` undone: s: (N, rows, 2, cols, C) -> x: (N, C, H, W)."""
    N, C, H, W = x.shape
    pad = uint64(pad)
    for n in range(N):
        for c in range(uint64(C)):
            for h in range(uint64(H)):
                for w in range(uint64(W)):
                    col = w + pad
                    x[n, c, h, w] = s[n, h + pad, col & 1, col >> 1, c]
