"""The two scatters of sub-pixel transposed convolution, compiled with Numba (CPU only).

What they are for is in ``fcn_scratch.ops.subpixel``. A transposed convolution with stride
(SH, SW) and padding (PH, PW) sends input window (q, r) of its phase (a, b) to output pixel

    (h, w) = (q*SH + a - PH, r*SW + b - PW)

and every output pixel comes from exactly one (phase, window) pair: a = (h + PH) % SH,
q = (h + PH) // SH, and the same along w. The products come as

    Y: (N, SH*SW*C, Q*R)    row (a*SW + b)*C + c: phase (a, b), channel c; column q*R + r

``phases_to_image`` puts each product where it belongs (and adds the bias), and
``image_to_phases`` is its adjoint: it gathers the output's gradient back into Y's layout,
with zeros for the windows that fall outside the image. Neither adds anything up, so the
order of work does not matter; like the other CPU kernels they run on one thread and
release the GIL.
"""

import numpy as np
from numba import njit, uint64

from fcn_scratch.kernels.cpu import _copy, _zero, kernel


@njit(inline="always", cache=True)
def _column_runs(SW, PW, R, OW):
    """For each column phase b < SW, the windows r whose output column r*SW + b - PW
    lies in [0, OW): r in [lo[b], end[b]); those below hi[b] = min(end[b], R) (at least
    lo[b]) are in the grid of R windows, those from hi[b] on past it (zeros). Computed once
    a call: integer divisions in the loops cost more than the copies."""
    lo, hi, end = np.empty(SW, np.int64), np.empty(SW, np.int64), np.empty(SW, np.int64)
    for b in range(SW):
        lo[b] = max(0, (PW - b + SW - 1) // SW)
        end[b] = max(lo[b], (OW - 1 + PW - b) // SW + 1)
        hi[b] = max(lo[b], min(end[b], R))
    return lo, hi, end


@kernel
def phases_to_image(Y, SH, SW, PH, PW, Q, R, bias, y):
    """Y: (N, SH*SW*C, Q*R) -> y: (N, C, OH, OW), every pixel written: its phase's product
    plus bias[c] (bias: (C,), zeros for none)."""
    N, C, OH, OW = y.shape
    lo, hi, end = _column_runs(SW, PW, R, OW)
    sw = uint64(SW)
    for n in range(N):
        for c in range(C):
            plane, bc = y[n, c].ravel(), bias[c]  # (OH*OW,)
            for h in range(OH):
                a, q = (h + PH) % SH, (h + PH) // SH
                for b in range(SW):
                    src = Y[n, (a * SW + b) * C + c]  # (Q*R,)
                    d, first = uint64(h * OW + b - PW), lo[b]
                    if q < Q:
                        s0 = uint64(q * R)
                        for r in range(uint64(lo[b]), uint64(hi[b])):
                            plane[d + r * sw] = src[s0 + r] + bc
                        first = hi[b]
                    for r in range(uint64(first), uint64(end[b])):
                        plane[d + r * sw] = bc


@kernel
def image_to_phases(dy, SH, SW, PH, PW, Q, R, dY):
    """``phases_to_image`` transposed (without the bias): dy: (N, C, OH, OW) -> dY:
    (N, SH*SW*C, Q*R), every entry written; windows outside the image get 0. Plane by
    plane of dy, which stays in cache while its SH*SW phases are read out of it."""
    N, C, OH, OW = dy.shape
    lo, hi, _ = _column_runs(SW, PW, R, OW)
    for n in range(N):
        for c in range(C):
            plane = dy[n, c].ravel()  # (OH*OW,)
            for a in range(SH):
                for b in range(SW):
                    dst = dY[n, (a * SW + b) * C + c]  # (Q*R,)
                    before, inside = min(lo[b], R), hi[b] - lo[b]  # windows before, inside
                    for q in range(Q):
                        h, d = q * SH + a - PH, q * R
                        if h < 0 or h >= OH:
                            _zero(dst, d, R)
                            continue
                        _zero(dst, d, before)
                        _copy(dst, d + lo[b], plane, h * OW + lo[b] * SW + b - PW, SW, inside)
                        _zero(dst, d + before + inside, R - before - inside)
