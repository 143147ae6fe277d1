"""The vectorised NumPy kernels (fcn_scratch.kernels.numpy_baseline, the benchmark's
baseline) against the reference loops, on the grids the Numba kernels are tested on.

Copies and col2im must agree bit for bit; the scatter-adds sum in float64 by bincount,
so they agree to float32 rounding (or float64's).
"""

from functools import partial

import numpy as np
import pytest
from kernel_cases import CONV, DTYPES, POOL, check_im2col_col2im, check_pooling, randn

from fcn_scratch.kernels import numpy_baseline as nb
from fcn_scratch.kernels import reference as ref

SUM_TOLERANCE = {np.float32: dict(rtol=1e-5, atol=1e-6), np.float64: dict(rtol=1e-12, atol=1e-12)}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k, s, p, d, shape, out", CONV)
def test_im2col_col2im_match_reference(k, s, p, d, shape, out, dtype):
    check_im2col_col2im(nb, (k, s, p, d, shape, out, dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k, s, p, d, shape, out", POOL)
def test_pooling_matches_reference(k, s, p, d, shape, out, dtype):
    """The scatter-adds to float rounding, the rest bit for bit."""
    sums = partial(np.testing.assert_allclose, **SUM_TOLERANCE[dtype])
    check_pooling(nb, (k, s, p, d, shape, out, dtype), sums)


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
