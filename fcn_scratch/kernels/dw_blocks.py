"""A convolution's weight gradient from few im2col rows, compiled with Numba (CPU only).

conv2d's dw is sum_n dy[n] @ col[n]^T: for every output channel o and every row k of
im2col, a dot product over the pixels. Where im2col has few rows (a convolution from 3
channels: 27, or 28 with the bias's row of ones) BLAS runs that product poorly: M and N
are 28 and 32, K is every pixel, and the per-image GEMMs reached 34-47 GFLOP/s on a core
that does 155 on a large square one. Here each pass takes a block of 4 output channels
by 4 rows and keeps its 16 sums in registers while it walks the pixels once: 8 loads
feed 16 multiply-adds, and LLVM vectorises the walk, each sum becoming a vector of
partial sums (``fastmath`` allows it to reorder the additions so; the order is fixed
at compile time, so the result is the same on every run). For 8 images of 64x64 from 3
channels that took 0.65-0.77x BLAS's time, into 16, 32 or 64 channels (a 500x375 photo into
64: 0.65-0.72x); with 144 rows or more BLAS's tiling wins (``FEW_ROWS``), and on maps of
1024 pixels or fewer, where BLAS's operands stay in the cache, BLAS is as fast or faster
(0.95-1.56x; ``MANY_PIXELS``).

The pixels go in chunks of ``CHUNK``, so that the rows' chunks stay in the cache while
the blocks read each of them again (a dy row once for every 4 rows of col, a col row once
for every 4 output channels), whatever the image's size. A block at the edge of
dy or col reads its last row again in place of the rows it lacks; those sums land in the
padding of the result, which the caller cuts away.

Layouts: col (N, K, P) im2col's columns, dy (N, O, P) the output gradient, P the pixels of
an image.
"""

import numpy as np
from numba import njit, uint64

# The kernel takes im2col's of at most FEW_ROWS rows over at least MANY_PIXELS pixels (see
# the module's docstring); BLAS the others.
FEW_ROWS = 32
MANY_PIXELS = 4096

CHUNK = 1024  # pixels per pass over a block's rows: 4 KiB of a float32 row


def applies(col) -> bool:
    """Whether the kernel beats BLAS on im2col's ``col`` (N, K, P)."""
    return col.shape[1] <= FEW_ROWS and col.shape[2] >= MANY_PIXELS


def weight_grad(col, dy):
    """sum_n dy[n] @ col[n]^T: col (N, K, P), dy (N, O, P) -> (O, K), in their dtype."""
    N, K, P = col.shape
    O = dy.shape[1]
    out = np.zeros((-(-O // 4) * 4, -(-K // 4) * 4), dtype=col.dtype)
    _blocks(np.ascontiguousarray(col), np.ascontiguousarray(dy), out, col.dtype.type(0))
    return out[:O, :K]


@njit(nogil=True, cache=True, error_model="numpy", fastmath={"reassoc", "contract"})
def _blocks(col, dy, out, zero):
    """out[o, k] += sum over n and p of dy[n, o, p] * col[n, k, p], 4x4 (o, k) at a time;
    out: (O, K) rounded up to multiples of 4. Unsigned indices: no test for negative ones in
    the vectorised loop (see ``cpu``'s helpers)."""
    N, K, P = col.shape
    O = dy.shape[1]
    for n in range(N):
        for start in range(0, P, CHUNK):
            stop = min(start + CHUNK, P)
            for o in range(0, O, 4):
                d0, d1 = dy[n, o], dy[n, min(o + 1, O - 1)]
                d2, d3 = dy[n, min(o + 2, O - 1)], dy[n, min(o + 3, O - 1)]
                for k in range(0, K, 4):
                    c0, c1 = col[n, k], col[n, min(k + 1, K - 1)]
                    c2, c3 = col[n, min(k + 2, K - 1)], col[n, min(k + 3, K - 1)]
                    s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = zero
                    s20 = s21 = s22 = s23 = s30 = s31 = s32 = s33 = zero
                    for p in range(uint64(start), uint64(stop)):
                        a0, a1, a2, a3 = d0[p], d1[p], d2[p], d3[p]
                        b0, b1, b2, b3 = c0[p], c1[p], c2[p], c3[p]
                        s00 += a0 * b0
                        s01 += a0 * b1
                        s02 += a0 * b2
                        s03 += a0 * b3
                        s10 += a1 * b0
                        s11 += a1 * b1
                        s12 += a1 * b2
                        s13 += a1 * b3
                        s20 += a2 * b0
                        s21 += a2 * b1
                        s22 += a2 * b2
                        s23 += a2 * b3
                        s30 += a3 * b0
                        s31 += a3 * b1
                        s32 += a3 * b2
                        s33 += a3 * b3
                    _add_row(out[o], k, s00, s01, s02, s03)
                    _add_row(out[o + 1], k, s10, s11, s12, s13)
                    _add_row(out[o + 2], k, s20, s21, s22, s23)
                    _add_row(out[o + 3], k, s30, s31, s32, s33)


@njit(inline="always", cache=True)
def _add_row(row, k, a, b, c, d):
    """row[k : k + 4] += (a, b, c, d)."""
    row[k] += a
    row[k + 1] += b
    row[k + 2] += c
    row[k + 3] += d
