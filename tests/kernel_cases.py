"""Kernel test cases shared by the Numba tests (test_kernels.py), the CUDA emulation
(test_cuda_emulation.py) and the device tests (test_gpu.py): the parameter grids, the
hypothesis strategy for random windows, and the checks every kernel module must pass on a
random window (``module`` is fcn_scratch.kernels.cpu, .cuda or the emulated cuda).
"""

import itertools

import numpy as np
import pytest
from hypothesis import assume
from hypothesis import strategies as st

from fcn_scratch.gradcheck_cases import shuffled_linspace
from fcn_scratch.kernels import reference as ref
from fcn_scratch.ops.shapes import conv_out_size

DTYPES = [pytest.param(np.float32, id="f32"), pytest.param(np.float64, id="f64")]


def randn(shape, dtype, seed=1):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def conv_case(k, s, p, d, n=2, c=3, size=(9, 11)):
    """(kernel, stride, padding, dilation, x shape, out_size), all pairs, or None if empty."""
    k, s, p, d = (v if isinstance(v, tuple) else (v, v) for v in (k, s, p, d))
    try:
        out = conv_out_size("test", size, k, s, p, d)
    except ValueError:
        return None
    return k, s, p, d, (n, c, *size), out


def conv_id(k, s, p, d, shape, out):
    pairs = "-".join(
        f"{name}{a}" if a == b else f"{name}{a}x{b}" for name, (a, b) in zip("kspd", (k, s, p, d))
    )
    return f"{pairs}-n{shape[0]}c{shape[1]}-{shape[2]}x{shape[3]}"


def conv_grid():
    cases = [
        conv_case(k, s, p, d)
        for k, s, p, d in itertools.product(range(1, 6), range(1, 4), range(3), range(1, 3))
    ]
    cases += [
        conv_case(3, 1, 1, 1, n=1, c=1, size=(5, 5)),
        conv_case((3, 1), (1, 2), (1, 0), (2, 1), n=1, c=2, size=(8, 7)),
        conv_case((2, 5), (3, 1), (0, 2), (1, 2), n=3, c=1, size=(13, 6)),
        conv_case(4, 2, 1, 1, n=1, c=4, size=(1, 3)),
    ]
    return [pytest.param(*case, id=conv_id(*case)) for case in cases if case is not None]


def pool_grid():
    params = []
    for k, s, d, ceil_mode in itertools.product(range(1, 6), range(1, 4), (1, 2), (False, True)):
        for p in range(min(2, k // 2) + 1):  # PyTorch: padding at most half the kernel
            case = conv_case(k, s, p, d, size=(9, 7))
            if case is None:
                continue
            k2, s2, p2, d2, shape, _ = case
            out = conv_out_size("test", shape[2:], k2, s2, p2, d2, ceil_mode)
            case_id = conv_id(*case) + ("-ceil" if ceil_mode else "")
            params.append(pytest.param(k2, s2, p2, d2, shape, out, id=case_id))
    params.append(pytest.param((3, 2), (2, 1), (1, 0), (1, 2), (1, 2, 6, 9), (3, 7), id="asym-n1"))
    return params


CONV = conv_grid()
POOL = pool_grid()


@st.composite
def window_configs(draw, pool=False):
    """Per-axis kernel, stride, padding, dilation and input size with a non-empty output."""
    axes = []
    for _ in range(2):
        k = draw(st.integers(1, 5))
        p = draw(st.integers(0, k // 2 if pool else 2))
        axes.append(
            (k, draw(st.integers(1, 3)), p, draw(st.integers(1, 2)), draw(st.integers(1, 12)))
        )
    k, s, p, d, size = (tuple(v) for v in zip(*axes))
    ceil_mode = pool and draw(st.booleans())
    try:
        out = conv_out_size("test", size, k, s, p, d, ceil_mode)
    except ValueError:
        assume(False)
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 4)), *size)
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    return k, s, p, d, shape, out, dtype


def distinct(shape, dtype) -> np.ndarray:
    """Distinct values in a fixed random order: max pooling has no ties."""
    return shuffled_linspace(np.random.default_rng(0), shape, dtype)


def check_im2col_col2im(module, config) -> None:
    """``module``'s im2col and col2im equal the reference's bit for bit on one window."""
    k, s, p, d, shape, out, dtype = config
    x = randn(shape, dtype)
    col = module.im2col(x, k, s, p, d, out)  # (N, C*KH*KW, OH*OW)
    assert col.dtype == dtype
    np.testing.assert_array_equal(col, ref.im2col(x, k, s, p, d, out))
    dcol = randn(col.shape, dtype, seed=2)
    dx = module.col2im(dcol, shape[2:], k, s, p, d, out)  # (N, C, H, W)
    assert dx.dtype == dtype
    np.testing.assert_array_equal(dx, ref.col2im(dcol, shape[2:], k, s, p, d, out))


def check_pooling(module, config, check_sum=np.testing.assert_array_equal) -> None:
    """``module``'s max-pool forward and backward and unpooling with the recorded indices
    (overlapping windows share indices, so the scatter's summation order matters) equal
    the reference's; ``check_sum`` compares the two scatter-adds."""
    k, s, p, d, shape, out, dtype = config
    x = distinct(shape, dtype)
    y, idx = module.maxpool2d_forward(x, k, s, p, d, out)  # (N, C, OH, OW) twice
    y_ref, idx_ref = ref.maxpool2d_forward(x, k, s, p, d, out)
    assert y.dtype == dtype and idx.dtype == np.int64
    np.testing.assert_array_equal(idx, idx_ref)
    np.testing.assert_array_equal(y, y_ref)
    dy = randn(y.shape, dtype)
    dx = module.maxpool2d_backward(dy, idx, shape[2:])  # (N, C, H, W)
    assert dx.dtype == dtype
    check_sum(dx, ref.maxpool2d_backward(dy, idx, shape[2:]))
    up = module.maxunpool2d_forward(dy, idx, shape[2:])  # (N, C, H, W)
    check_sum(up, ref.maxunpool2d_forward(dy, idx, shape[2:]))
    dup = module.maxunpool2d_backward(x, idx)  # (N, C, OH, OW)
    np.testing.assert_array_equal(dup, ref.maxunpool2d_backward(x, idx))
