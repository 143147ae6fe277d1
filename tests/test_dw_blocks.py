"""conv2d's weight gradient by 4x4 register blocks (fcn_scratch.kernels.dw_blocks): the
sums it computes, at every edge of its blocks and chunks, and where conv2d takes it."""

import numpy as np
import pytest

from fcn_scratch import parallel
from fcn_scratch.kernels import dw_blocks
from fcn_scratch.ops import conv


def _exact(col, dy):
    """sum_n dy[n] @ col[n]^T in float64."""
    return np.einsum("nop,nkp->ok", dy.astype(np.float64), col.astype(np.float64))


@pytest.mark.parametrize(
    "n, k, o, p",
    [
        (2, 8, 4, 64),  # whole blocks, one chunk
        (3, 27, 32, dw_blocks.CHUNK + 37),  # a row and a chunk cut short
        (1, 5, 7, 2 * dw_blocks.CHUNK),  # one block of a single row and one of 3
        (2, 1, 1, 9),
    ],
)
@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-14), (np.float32, 2e-6)])
def test_sums_every_product_once(rng, n, k, o, p, dtype, tol):
    col = rng.standard_normal((n, k, p)).astype(dtype)
    dy = rng.standard_normal((n, o, p)).astype(dtype)
    got = dw_blocks.weight_grad(col, dy)
    exact = _exact(col, dy)
    assert got.shape == (o, k) and got.dtype == dtype
    # the error of a sum of n*p products of unit size: a missing or doubled product is ~1
    assert np.abs(got - exact).max() <= tol * n * p


def test_same_bits_on_every_call(rng):
    col = rng.standard_normal((2, 28, 4096)).astype(np.float32)
    dy = rng.standard_normal((2, 16, 4096)).astype(np.float32)
    assert np.array_equal(dw_blocks.weight_grad(col, dy), dw_blocks.weight_grad(col, dy))


@pytest.mark.parametrize(
    "shape, taken",
    [
        ((2, 3, 64, 64), True),  # 28 rows (the bias's included) over 4096 pixels
        ((2, 3, 64, 63), False),  # one pixel too few
        ((2, 4, 64, 64), False),  # 37 rows: too many
    ],
)
def test_conv2d_takes_it_for_few_rows_over_many_pixels(rng, shape, taken):
    parallel.limit_threads(1)
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal((5, shape[1], 3, 3)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    dy = rng.standard_normal((shape[0], 5, *shape[2:])).astype(np.float32)
    _, ctx = conv.conv2d_forward(x, w, b, 1, 1)
    _, dw, db = conv.conv2d_backward(dy, ctx)
    col, dy_rows = ctx.col, dy.reshape(len(dy), 5, -1)
    assert col.shape[1] == w[0].size + 1  # the bias rides in the GEMM: db is dw's last column
    exact = _exact(col, dy_rows)
    assert np.abs(dw.reshape(5, -1) - exact[:, :-1]).max() <= 2e-6 * col.shape[2]
    assert np.abs(db - exact[:, -1]).max() <= 2e-6 * col.shape[2]
    blocks = dw_blocks.weight_grad(col, dy_rows)
    assert dw_blocks.applies(col) == taken
    assert np.array_equal(np.concatenate([dw.reshape(5, -1), db[:, None]], axis=1), blocks) == taken
