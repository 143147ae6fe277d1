"""The vectorised NumPy kernels (fcn_scratch.kernels.numpy_baseline, the benchmark's
baseline) against the reference loops, on the grids the Numba kernels are tested on.

Copies and col2im must agree bit for bit; the scatter-adds sum in float64 by bincount,
so they agree to float32 rounding (or float64's).
"""

import numpy as np
import pytest
from kernel_cases import CONV, DTYPES, POOL, distinct, randn

from fcn_scratch.kernels import numpy_baseline as nb
from fcn_scratch.kernels import reference as ref

SUM_TOLERANCE = {np.float32: dict(rtol=1e-5, atol=1e-6), np.float64: dict(rtol=1e-12, atol=1e-12)}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k, s, p, d, shape, out", CONV)
def test_im2col_col2im_match_reference(k, s, p, d, shape, out, dtype):
    x = randn(shape, dtype)
    col = nb.im2col(x, k, s, p, d, out)  # (N, C*KH*KW, OH*OW)
    assert col.dtype == dtype
    np.testing.assert_array_equal(col, ref.im2col(x, k, s, p, d, out))
    dcol = randn(col.shape, dtype, seed=2)
    dx = nb.col2im(dcol, shape[2:], k, s, p, d, out)  # (N, C, H, W)
    assert dx.dtype == dtype
    np.testing.assert_array_equal(dx, ref.col2im(dcol, shape[2:], k, s, p, d, out))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k, s, p, d, shape, out", POOL)
def test_pooling_matches_reference(k, s, p, d, shape, out, dtype):
    x = distinct(shape, dtype)
    y, idx = nb.maxpool2d_forward(x, k, s, p, d, out)  # (N, C, OH, OW) twice
    y_ref, idx_ref = ref.maxpool2d_forward(x, k, s, p, d, out)
    assert y.dtype == dtype and idx.dtype == np.int64
    np.testing.assert_array_equal(idx, idx_ref)
    np.testing.assert_array_equal(y, y_ref)
    dy = randn(y.shape, dtype)
    tol = SUM_TOLERANCE[dtype]
    dx = nb.maxpool2d_backward(dy, idx, shape[2:])  # (N, C, H, W)
    assert dx.dtype == dtype
    np.testing.assert_allclose(dx, ref.maxpool2d_backward(dy, idx, shape[2:]), **tol)
    up = nb.maxunpool2d_forward(dy, idx, shape[2:])
    np.testing.assert_allclose(up, ref.maxunpool2d_forward(dy, idx, shape[2:]), **tol)
    np.testing.assert_array_equal(nb.maxunpool2d_backward(x, idx), ref.maxunpool2d_backward(x, idx))


@pytest.mark.parametrize("dtype", DTYPES)
def test_maxpool2d_ties_nans_and_infinities_as_the_reference(dtype):
    """Ties keep the first maximum, the last NaN wins, a window of -inf records its first
    pixel, and a window made only of padding gives -inf at index -1."""
    x = np.random.default_rng(8).integers(0, 3, size=(2, 3, 9, 8)).astype(dtype)
    x[0, 0, :2, :4] = -np.inf  # window (0, 0) holds only -inf
    x[0, 1, 2, 2] = x[0, 1, 2, 3] = np.nan  # two NaNs in window (1, 1)
    for window, out in [
        (((3, 3), (2, 2), (1, 1), (1, 1)), (5, 4)),
        (((2, 2), (2, 2), (1, 1), (1, 1)), (6, 5)),
    ]:
        y, idx = nb.maxpool2d_forward(x, *window, out)
        y_ref, idx_ref = ref.maxpool2d_forward(x, *window, out)
        np.testing.assert_array_equal(idx, idx_ref)
        np.testing.assert_array_equal(y, y_ref)
    y, idx = nb.maxpool2d_forward(x[:, :, :2, :2], (1, 1), (2, 2), (1, 1), (1, 1), (2, 2))
    assert idx[0, 0, 0, 0] == -1 and y[0, 0, 0, 0] == -np.inf


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_backward_matches_reference(dtype):
    y = np.maximum(randn((2, 3, 5, 4), dtype), 0)
    dy = randn(y.shape, dtype, seed=2)
    dy[y == 0] = np.inf
    dx = nb.relu_backward(dy, y)
    assert dx.dtype == dtype
    np.testing.assert_array_equal(dx, ref.relu_backward(dy, y))
