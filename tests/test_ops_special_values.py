"""NaN and infinities through the ops, and pooling arguments too large to loop over.

A diverging run must show: NaN wins its max-pooling window as in PyTorch (so it reaches
the loss and the NaN check), ReLU maps -inf to 0 and passes no NaN back from an infinite
gradient where it is off, and the window check of max_pool2d is closed-form.
"""

import time

import numpy as np
import pytest

from fcn_scratch import Tensor
from fcn_scratch import functional as F
from fcn_scratch.ops import activation, pool

pytestmark = pytest.mark.torch


def test_max_pool2d_propagates_nan_like_torch(torch):
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    x[0, 1, 3, 2] = np.nan  # not the first tap of its window
    x[1, 2, 5, 5] = x[1, 2, 4, 4] = np.nan
    y, idx = F.max_pool2d(x, 2, return_indices=True)
    yt, it = torch.nn.functional.max_pool2d(torch.from_numpy(x), 2, return_indices=True)
    np.testing.assert_array_equal(y.numpy(), yt.numpy())  # NaNs in the same places
    np.testing.assert_array_equal(idx.numpy(), it.numpy())
    assert np.isnan(y.numpy()[0, 1, 1, 1])


def test_relu_of_infinities_and_nan(torch):
    x = np.array([-np.inf, -1.0, 0.0, 2.0, np.inf, np.nan], dtype=np.float32)
    y, ctx = activation.relu_forward(x)
    np.testing.assert_array_equal(y, torch.relu(torch.from_numpy(x)).numpy())
    assert y[0] == 0
    dy = np.full_like(x, np.inf)
    dx = activation.relu_backward(dy, ctx)
    np.testing.assert_array_equal(dx, [0, 0, 0, np.inf, np.inf, 0])


def test_relu_gradient_through_autograd_has_no_nan():
    x = Tensor(np.array([[-3.0, 1.0]], dtype=np.float64), requires_grad=True)
    F.relu(x).backward(np.array([[np.inf, 2.0]]))
    np.testing.assert_array_equal(x.grad, [[0.0, 2.0]])


def test_window_check_is_closed_form_for_huge_kernels():
    """A kernel of 10^8 taps per axis: checking that each window reaches the input must not
    loop over the taps (it took seconds when it did)."""
    start = time.perf_counter()
    pool._check_windows_reach_input(
        "max_pool2d", (4, 4), (10**8, 1), (1, 1), (1, 0), (1, 1), (1, 4)
    )
    assert time.perf_counter() - start < 0.5


@pytest.mark.parametrize(
    "size, kernel, stride, padding, dilation",
    [((5, 5), (2, 2), (1, 1), (1, 1), (5, 5)), ((1, 4), (2, 1), (1, 1), (1, 0), (2, 1))],
)
def test_window_check_agrees_with_torch(size, kernel, stride, padding, dilation, torch):
    """Where a window would cover only padding we refuse; elsewhere torch and we agree."""
    x = np.random.default_rng(1).standard_normal((1, 1, *size))
    args = dict(kernel_size=kernel, stride=stride, padding=padding, dilation=dilation)
    expected = torch.nn.functional.max_pool2d(torch.from_numpy(x), **args)
    if torch.isinf(expected).any():  # torch reports -inf for a window of padding alone
        with pytest.raises(ValueError, match="covers only padding"):
            F.max_pool2d(x, **args)
    else:
        np.testing.assert_array_equal(F.max_pool2d(x, **args).numpy(), expected.numpy())
