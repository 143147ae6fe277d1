"""The CUDA kernels, run on the CPU: the .cu sources compiled by g++ against a small CUDA
emulation header (tests/cuda_emulation/cuda_emu.h), every block and thread of the launch
configuration that ``fcn_scratch.kernels.launch`` computes for the GPU.

The tests call ``fcn_scratch.kernels.cuda`` itself, with its one device-touching function,
``_run`` (contiguous inputs, new outputs, launch), replaced by the emulator's equivalent on
NumPy arrays; so the public glue, the plans and the CUDA C are all exercised. Grids are the
ones the Numba kernels are tested on (tests/kernel_cases.py). The kernels keep the
reference's summation order, so every comparison is exact, in float32 and float64.
"""

import shutil
from functools import partial

import numpy as np
import pytest
from cuda_emulation.emulator import Emulator, build
from hypothesis import HealthCheck, given, settings
from kernel_cases import (
    CONV,
    DTYPES,
    POOL,
    check_im2col_col2im,
    check_pooling,
    distinct,
    randn,
    window_configs,
)

from fcn_scratch.kernels import cuda, launch
from fcn_scratch.kernels import reference as ref
from fcn_scratch.ops.shapes import conv_out_size

pytestmark = pytest.mark.cuda_emulation


@pytest.fixture(scope="session")
def emulator(tmp_path_factory):
    """The kernels compiled once per test session."""
    if shutil.which("g++") is None:
        pytest.skip("g++ not found: the CUDA emulation compiles the .cu sources with g++")
    return Emulator(build(tmp_path_factory.mktemp("cuda_emu")))


@pytest.fixture
def emulated(emulator, monkeypatch):
    """``fcn_scratch.kernels.cuda`` with its launches run by the emulator on NumPy arrays."""
    monkeypatch.setattr(cuda, "_run", emulator.run)
    return cuda


# ---- im2col / col2im ---------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k, s, p, d, shape, out", CONV)
def test_im2col_col2im_match_reference(emulated, k, s, p, d, shape, out, dtype):
    check_im2col_col2im(emulated, (k, s, p, d, shape, out, dtype))


# ---- max pooling and unpooling -------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k, s, p, d, shape, out", POOL)
def test_pooling_matches_reference(emulated, k, s, p, d, shape, out, dtype):
    check_pooling(emulated, (k, s, p, d, shape, out, dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_maxpool2d_ties_keep_first_maximum(emulated, dtype):
    x = np.random.default_rng(8).integers(0, 3, size=(2, 3, 9, 8)).astype(dtype)
    args = ((3, 3), (2, 2), (1, 1), (1, 1))
    out = conv_out_size("test", (9, 8), *args, True)
    y, idx = emulated.maxpool2d_forward(x, *args, out)
    y_ref, idx_ref = ref.maxpool2d_forward(x, *args, out)
    np.testing.assert_array_equal(idx, idx_ref)
    np.testing.assert_array_equal(y, y_ref)


@pytest.mark.parametrize("dtype", DTYPES)
def test_window_of_padding_only_reports_minus_inf(emulated, dtype):
    """A window made only of padding: -inf at index -1, as in the reference. (The ops allow
    it only with dilation, e.g. kernel 2, padding 1, dilation 2 on a single row.)"""
    x = randn((1, 2, 3, 4), dtype)
    args = ((1, 1), (2, 2), (1, 1), (1, 1), (3, 3))  # the first row and column: padding only
    y, idx = emulated.maxpool2d_forward(x, *args)
    y_ref, idx_ref = ref.maxpool2d_forward(x, *args)
    assert np.isneginf(y[:, :, 0, :]).all() and (idx[:, :, 0, :] == -1).all()
    np.testing.assert_array_equal(idx, idx_ref)
    np.testing.assert_array_equal(y, y_ref)
    dy = randn(y.shape, dtype)  # index -1 is the plane's last pixel, as NumPy indexes
    dx = emulated.maxpool2d_backward(dy, idx, (3, 4))
    np.testing.assert_array_equal(dx, ref.maxpool2d_backward(dy, idx, (3, 4)))
    dup = emulated.maxunpool2d_backward(x, idx)
    np.testing.assert_array_equal(dup, ref.maxunpool2d_backward(x, idx))


@pytest.mark.parametrize("dtype", DTYPES)
def test_maxunpool2d_colliding_indices(emulated, dtype):
    """Many pooled cells sent to a few positions: summed in raster order, like the reference."""
    idx = np.random.default_rng(5).integers(0, 6, size=(2, 3, 5, 4))
    x = randn(idx.shape, dtype)
    y = emulated.maxunpool2d_forward(x, idx, (2, 3))  # (2, 3, 2, 3)
    np.testing.assert_array_equal(y, ref.maxunpool2d_forward(x, idx, (2, 3)))
    dy = randn(y.shape, dtype, seed=6)
    np.testing.assert_array_equal(
        emulated.maxunpool2d_backward(dy, idx), ref.maxunpool2d_backward(dy, idx)
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_non_contiguous_inputs(emulated, dtype):
    x = randn((3, 2, 9, 14), dtype).transpose(1, 0, 2, 3)[:, :, :, ::2]  # (2, 3, 9, 7)
    assert not x.flags.c_contiguous
    window = ((3, 2), (2, 1), (1, 1), (1, 2))  # kernel, stride, padding, dilation
    out = conv_out_size("test", (9, 7), *window)
    np.testing.assert_array_equal(emulated.im2col(x, *window, out), ref.im2col(x, *window, out))
    col = randn((2, 18, 3 * out[0] * out[1]), dtype)[:, :, ::3]  # (2, C*KH*KW, OH*OW)
    np.testing.assert_array_equal(
        emulated.col2im(col, (9, 7), *window, out), ref.col2im(col, (9, 7), *window, out)
    )
    idx = np.random.default_rng(3).integers(0, 63, size=(2, 3, 4, 5))[:, :, ::-1]
    dy = x[:, :, :4, :5]
    np.testing.assert_array_equal(
        emulated.maxunpool2d_forward(dy, idx, (9, 7)), ref.maxunpool2d_forward(dy, idx, (9, 7))
    )
    np.testing.assert_array_equal(
        emulated.maxunpool2d_backward(x, idx), ref.maxunpool2d_backward(x, idx)
    )


# ---- random configurations (the Numba tests' strategy) ------------------------------------

# The emulator fixture is session-scoped and monkeypatch only swaps one attribute back and
# forth, so reusing them across examples is safe.
RANDOM = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@RANDOM
@given(window_configs())
def test_im2col_col2im_random_configs(emulated, config):
    check_im2col_col2im(emulated, config)


@RANDOM
@given(window_configs(pool=True))
def test_pooling_random_configs(emulated, config):
    check_pooling(emulated, config)


# ---- one writer per output element ----------------------------------------------------------


def one_writer_cases():
    """Per kernel: (plan factory taking max_blocks, inputs, the reference's outputs)."""
    shape, out = (2, 3, 9, 7), (5, 6)
    window = ((3, 3), (2, 1), (1, 1), (1, 2))  # kernel, stride, padding, dilation
    x, xs = randn(shape, np.float32), distinct(shape, np.float32)
    col = randn((2, 27, 30), np.float64)  # (N, C*KH*KW, OH*OW)
    # Every position of the 9x7 planes once, 9 of them twice: collisions, and indices on
    # both sides of every boundary between bands of rows.
    rng = np.random.default_rng(9)
    idx = np.stack(
        [rng.permutation(np.r_[np.arange(63), rng.integers(0, 63, 9)]) for _ in range(6)]
    )
    idx = idx.reshape(2, 3, 8, 9)
    vals = randn(idx.shape, np.float64)
    return {
        "im2col": (
            partial(launch.im2col, shape, np.float32, window, out),
            (x,),
            [ref.im2col(x, *window, out)],
        ),
        "col2im": (
            partial(launch.col2im, col.shape, np.float64, (9, 7), window, out),
            (col,),
            [ref.col2im(col, (9, 7), *window, out)],
        ),
        "maxpool2d_forward": (
            partial(launch.maxpool2d_forward, shape, np.float32, window, out),
            (xs,),
            list(ref.maxpool2d_forward(xs, *window, out)),
        ),
        "maxunpool2d_forward": (  # 2 bands of rows per plane: rows 0-3 and 4-8
            partial(launch.maxunpool2d_forward, idx.shape, np.float64, (9, 7), target_threads=12),
            (vals, idx),
            [ref.maxunpool2d_forward(vals, idx, (9, 7))],
        ),
        "maxunpool2d_backward": (
            partial(launch.maxunpool2d_backward, shape, np.float32, idx.shape),
            (x, idx),
            [ref.maxunpool2d_backward(x, idx)],
        ),
    }


ONE_WRITER = one_writer_cases()


@pytest.mark.parametrize("max_blocks", [1, 3, launch.MAX_BLOCKS])
@pytest.mark.parametrize("name", list(ONE_WRITER))
def test_every_output_element_has_exactly_one_writer(emulator, name, max_blocks):
    """Each thread runs alone on sentinel-filled outputs: every element must be written by
    exactly one thread (no races, no gaps, no need for atomics), and the union of the
    threads' writes is the reference's result."""
    plan_of, inputs, expected = ONE_WRITER[name]
    plan = plan_of(max_blocks=max_blocks)  # 1 or 3 blocks: grid-stride loops go round
    assert plan.grid[0] <= max_blocks
    outputs, writes = emulator.run_tracked(plan, *inputs)
    for out, count, want in zip(outputs, writes, expected, strict=True):
        assert count.min() == count.max() == 1, f"{name}: writes per element {np.unique(count)}"
        np.testing.assert_array_equal(out, want)


def test_unpool_bands_split_planes_unevenly():
    """The plan the one-writer test uses really splits the 9 rows into uneven bands."""
    plan = ONE_WRITER["maxunpool2d_forward"][0]()
    P, H, W, bands, total = (int(v) for v in plan.scalars)
    assert (P, H, W, bands, total) == (72, 9, 7, 2, 12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_negative_and_out_of_range_indices(emulated, dtype):
    """An index in [-H*W, 0) counts from the end of the plane, as in the reference (NumPy
    indexing). Indices are not validated on the GPU; one outside [-H*W, H*W) must not touch
    memory outside its plane: the scatter drops its value and the gather reads 0."""
    idx = np.random.default_rng(4).integers(-16, 16, size=(2, 3, 3, 4))  # planes of 3x4 = 12
    x = randn(idx.shape, dtype)
    inside = (idx >= -12) & (idx < 12)
    y = emulated.maxunpool2d_forward(x, idx, (3, 4))  # (2, 3, 3, 4)
    expected = ref.maxunpool2d_forward(np.where(inside, x, 0), np.where(inside, idx, 0), (3, 4))
    np.testing.assert_array_equal(y, expected)
    dy = randn(y.shape, dtype, seed=5)
    dx = emulated.maxunpool2d_backward(dy, idx)  # (2, 3, 3, 4)
    expected = np.where(inside, ref.maxunpool2d_backward(dy, np.where(inside, idx, 0)), 0)
    np.testing.assert_array_equal(dx, expected)
