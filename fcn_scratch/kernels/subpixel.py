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

from numba import njit, uint64

from fcn_scratch.kernels.cpu import kernel


@njit(inline="always", cache=True)
def _cols(b, SW, PW, R, OW):
    """The windows of column phase b that land in an output row of OW pixels (output
    column r*SW + b - PW in [0, OW)), r in [lo, end), and hi = min(end, R) at least lo:
    those in [lo, hi) are in the grid of R windows, those from hi on past it (zeros)."""
    lo = max(0, (PW - b + SW - 1) // SW)
    end = max(lo, (OW - 1 + PW - b) // SW + 1)
    return lo, max(lo, min(end, R)), end


@kernel
def phases_to_image(Y, SH, SW, PH, PW, Q, R, bias, y):
    """Y: (N, SH*SW*C, Q*R) -> y: (N, C, OH, OW), every pixel written: its phase's product
    plus bias[c] (bias: (C,), zeros for none)."""
    N, C, OH, OW = y.shape
    for n in range(N):
        for c in range(C):
            for h in range(OH):
                a, q = (h + PH) % SH, (h + PH) // SH
                row = y[n, c, h]  # (OW,)
                for b in range(SW):
                    src = Y[n, (a * SW + b) * C + c]  # (Q*R,)
                    lo, hi, end = _cols(b, SW, PW, R, OW)
                    w0, s0 = uint64(lo * SW + b - PW), uint64(q * R + lo)
                    if q < Q:
                        for t in range(uint64(hi - lo)):
                            row[w0 + t * SW] = src[s0 + t] + bias[c]
                    else:
                        hi = lo
                    for r in range(hi, end):
                        row[r * SW + b - PW] = bias[c]


@kernel
def image_to_phases(dy, SH, SW, PH, PW, Q, R, dY):
    """``phases_to_image`` transposed (without the bias): dy: (N, C, OH, OW) -> dY:
    (N, SH*SW*C, Q*R), every entry written; windows outside the image get 0."""
    N, C, OH, OW = dy.shape
    for n in range(N):
        for a in range(SH):
            for b in range(SW):
                lo, hi, _ = _cols(b, SW, PW, R, OW)
                for c in range(C):
                    dst = dY[n, (a * SW + b) * C + c]  # (Q*R,)
                    for q in range(Q):
                        h = q * SH + a - PH
                        d = q * R
                        if h < 0 or h >= OH:
                            dst[d : d + R] = 0
                            continue
                        src = dy[n, c, h]  # (OW,)
                        dst[d : d + min(lo, R)] = 0
                        s0, d0 = uint64(lo * SW + b - PW), uint64(d + lo)
                        for t in range(uint64(hi - lo)):
                            dst[d0 + t] = src[s0 + t * SW]
                        dst[d + hi : d + R] = 0
