"""The Numba kernels (fcn_scratch.kernels.cpu) against the reference loops.

Every kernel must agree with the reference bit for bit: the copying kernels (im2col, max-pool
forward, the unpool gather) trivially, the summing ones (col2im, the scatter-adds) because
they add the same terms in the same order as the reference loops. Also: adjoint identities,
bitwise determinism across calls and thread counts, non-contiguous inputs, and Numba's
on-disk cache (importing compiles nothing; a second process compiles nothing either).
"""

import json
import os
import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path

import numba
import numpy as np
import pytest
from hypothesis import given, settings
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

from fcn_scratch import kernels
from fcn_scratch.kernels import cpu
from fcn_scratch.kernels import reference as ref
from fcn_scratch.ops import loss
from fcn_scratch.ops.shapes import conv_out_size

REPO = Path(__file__).resolve().parents[1]


# ---- im2col / col2im ---------------------------------------------------------------------


@pytest.mark.parametrize("table_pixels", [0, 2**62], ids=["rows", "table"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k, s, p, d, shape, out", CONV)
def test_im2col_col2im_match_reference(monkeypatch, k, s, p, d, shape, out, dtype, table_pixels):
    """Both ways on every window: by rows (the loops that large maps take) and through the
    tap table (what maps of at most TABLE_PIXELS outputs take)."""
    monkeypatch.setattr(cpu, "TABLE_PIXELS", table_pixels)
    check_im2col_col2im(cpu, (k, s, p, d, shape, out, dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "kernel, padding, shape",
    [
        ((3, 3), (1, 1), (2, 3, 5, 4)),
        ((5, 3), (2, 1), (1, 2, 6, 3)),
        ((5, 5), (2, 2), (1, 1, 2, 3)),
        ((3, 3), (1, 1), (1, 2, 1, 1)),
        ((1, 3), (0, 1), (2, 1, 3, 9)),
    ],
    ids=str,
)
def test_im2col_same_size_fast_path_matches_reference(monkeypatch, kernel, padding, shape, dtype):
    """Stride 1 with the output the input's size (shifted-plane copies) takes its own loop
    (here with the tap table switched off: these maps are small enough for it); planes
    smaller than the kernel included."""
    monkeypatch.setattr(cpu, "TABLE_PIXELS", 0)
    x = randn(shape, dtype)
    args = (kernel, (1, 1), padding, (1, 1), shape[2:])
    np.testing.assert_array_equal(cpu.im2col(x, *args), ref.im2col(x, *args))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "k, s, p, d, size, table",
    [
        ((3, 3), (1, 1), (1, 1), (1, 1), (8, 8), True),  # 64 output pixels: the table
        ((3, 3), (1, 1), (1, 1), (1, 1), (5, 13), False),  # 65: the row loops
        ((3, 3), (1, 1), (1, 1), (1, 1), (2, 2), True),  # a map smaller than the kernel
        ((3, 2), (2, 1), (0, 2), (2, 1), (9, 7), True),  # 3 x 10 outputs
        ((4, 4), (2, 2), (1, 1), (1, 1), (16, 15), True),  # 8 x 7 outputs, windows overlap
    ],
    ids=str,
)
def test_small_maps_go_through_the_tap_table_with_the_reference_bits(
    monkeypatch, k, s, p, d, size, table, dtype
):
    """Output maps of at most TABLE_PIXELS pixels take ``_im2col_taps`` / ``_col2im_taps``:
    the reference's columns (with and without the row of ones) and its sums, bit for bit."""
    calls = []
    for name in ("_im2col_taps", "_col2im_taps"):
        kernel = getattr(cpu, name)
        monkeypatch.setattr(cpu, name, lambda *a, k=kernel, n=name: calls.append(n) or k(*a))
    out = conv_out_size("test", size, k, s, p, d)
    x = randn((2, 3, *size), dtype)
    col = cpu.im2col(x, k, s, p, d, out)
    assert col.tobytes() == ref.im2col(x, k, s, p, d, out).tobytes()
    ones = cpu.im2col(x, k, s, p, d, out, ones_row=True)
    assert ones[:, :-1].tobytes() == col.tobytes() and (ones[:, -1] == 1).all()
    dcol = randn(col.shape, dtype, seed=4)
    summed = cpu.col2im(dcol, size, k, s, p, d, out)
    assert summed.tobytes() == ref.col2im(dcol, size, k, s, p, d, out).tobytes()
    assert calls == (["_im2col_taps"] * 2 + ["_col2im_taps"] if table else [])


@pytest.mark.parametrize("k, s, p, d, shape, out", CONV)
def test_im2col_col2im_adjoint(k, s, p, d, shape, out):
    """<im2col(x), y> = <x, col2im(y)> in float64."""
    n, c, h, w = shape
    x = randn(shape, np.float64, seed=2)
    y = randn((n, c * k[0] * k[1], out[0] * out[1]), np.float64, seed=3)
    lhs = np.vdot(cpu.im2col(x, k, s, p, d, out), y)
    rhs = np.vdot(x, cpu.col2im(y, (h, w), k, s, p, d, out))
    scale = np.linalg.norm(x) * np.linalg.norm(y)
    np.testing.assert_allclose(lhs, rhs, rtol=1e-12, atol=1e-12 * scale)


# ---- max pooling and unpooling -------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k, s, p, d, shape, out", POOL)
def test_pooling_matches_reference(k, s, p, d, shape, out, dtype):
    check_pooling(cpu, (k, s, p, d, shape, out, dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_maxpool2d_ties_keep_first_maximum(dtype):
    """Everywhere else inputs are tie-free; here ties are the point: first in tap order wins."""
    x = np.random.default_rng(8).integers(0, 3, size=(2, 3, 9, 8)).astype(dtype)
    out = conv_out_size("test", (9, 8), (3, 3), (2, 2), (1, 1), (1, 1), True)
    y, idx = cpu.maxpool2d_forward(x, (3, 3), (2, 2), (1, 1), (1, 1), out)
    y_ref, idx_ref = ref.maxpool2d_forward(x, (3, 3), (2, 2), (1, 1), (1, 1), out)
    np.testing.assert_array_equal(idx, idx_ref)
    np.testing.assert_array_equal(y, y_ref)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 3, 8, 6), (1, 1, 2, 2), (3, 2, 4, 10)], ids=str)
@pytest.mark.parametrize("values", ["distinct", "ties"])
def test_maxpool2x2_fast_path_matches_reference(shape, values, dtype):
    """2x2 windows with stride 2 that tile the input take a kernel of their own."""
    if values == "ties":
        x = np.random.default_rng(9).integers(0, 3, size=shape).astype(dtype)
    else:
        x = distinct(shape, dtype)
    out = (shape[2] // 2, shape[3] // 2)
    y, idx = cpu.maxpool2d_forward(x, (2, 2), (2, 2), (0, 0), (1, 1), out)
    y_ref, idx_ref = ref.maxpool2d_forward(x, (2, 2), (2, 2), (0, 0), (1, 1), out)
    np.testing.assert_array_equal(idx, idx_ref)
    np.testing.assert_array_equal(y, y_ref)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "window",
    [((2, 2), (2, 2), (0, 0), (1, 1), (3, 3)), ((3, 3), (2, 2), (1, 1), (1, 1), (3, 3))],
    ids=["2x2-fast", "3x3-general"],
)
def test_maxpool2d_nan_wins_its_window(window, dtype):
    """As in PyTorch: a NaN anywhere in a window is the maximum (the last NaN, if several),
    so that a diverging network cannot hide behind max pooling."""
    x = distinct((1, 2, 6, 6), dtype)
    x[0, 0, 1, 1] = np.nan  # last tap of window (0, 0) of the 2x2 pooling
    x[0, 1, 2, 3] = x[0, 1, 3, 3] = np.nan  # two NaNs in one window
    y, idx = cpu.maxpool2d_forward(x, *window)
    y_ref, idx_ref = ref.maxpool2d_forward(x, *window)
    np.testing.assert_array_equal(idx, idx_ref)
    np.testing.assert_array_equal(y, y_ref)
    assert np.isnan(y[0, 0, 0, 0]) and idx[0, 0, 0, 0] == 1 * 6 + 1
    assert np.isnan(y[0, 1]).sum() >= 1 and 3 * 6 + 3 in idx[0, 1]


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_backward_matches_reference_and_zeroes_infinities(dtype):
    y = np.maximum(randn((2, 3, 5, 4), dtype), 0)
    dy = randn(y.shape, dtype, seed=2)
    dy[y == 0] = np.inf  # an infinite gradient where the ReLU is off must give 0, not NaN
    dx = cpu.relu_backward(dy, y)
    assert dx.dtype == dtype
    np.testing.assert_array_equal(dx, ref.relu_backward(dy, y))
    assert np.isfinite(dx).all() and (dx[y == 0] == 0).all() and (dx[y > 0] == dy[y > 0]).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_maxunpool2d_colliding_indices(dtype):
    """Many pooled cells sent to a few positions: summed in raster order, like the reference."""
    rng = np.random.default_rng(5)
    idx = rng.integers(0, 6, size=(2, 3, 5, 4))
    x = randn(idx.shape, dtype)
    y = cpu.maxunpool2d_forward(x, idx, (2, 3))  # (2, 3, 2, 3)
    np.testing.assert_array_equal(y, ref.maxunpool2d_forward(x, idx, (2, 3)))


@pytest.mark.parametrize("k, s, p, d, shape, out", POOL)
def test_pool_scatter_unpool_gather_adjoint(k, s, p, d, shape, out):
    """<scatter(x), y> = <x, gather(y)> in float64, with the indices max pooling records."""
    _, idx = cpu.maxpool2d_forward(distinct(shape, np.float64), k, s, p, d, out)
    x = randn(idx.shape, np.float64, seed=6)
    y = randn(shape, np.float64, seed=7)
    lhs = np.vdot(cpu.maxunpool2d_forward(x, idx, shape[2:]), y)
    rhs = np.vdot(x, cpu.maxunpool2d_backward(y, idx))
    scale = np.linalg.norm(x) * np.linalg.norm(y)
    np.testing.assert_allclose(lhs, rhs, rtol=1e-12, atol=1e-12 * scale)


@pytest.mark.parametrize("k, s, p, d, shape, out", POOL)
def test_maxpool2d_backward_is_the_forward_gradient(k, s, p, d, shape, out):
    """With no ties, a step t*e small against the gaps between values moves each pooled
    cell by t*e at its argmax: <dy, pool(x + t e) - pool(x)> / t = <backward(dy), e>."""
    x = distinct(shape, np.float64)  # values 2 / (x.size - 1) apart
    e = randn(shape, np.float64, seed=8)
    t = 1e-3 / (x.size * np.abs(e).max())
    y0, idx = cpu.maxpool2d_forward(x, k, s, p, d, out)
    y1, _ = cpu.maxpool2d_forward(x + t * e, k, s, p, d, out)
    dy = randn(y0.shape, np.float64, seed=9)
    valid = idx >= 0  # a window made only of padding has no input to move
    lhs = np.vdot(dy[valid], (y1 - y0)[valid]) / t
    rhs = np.vdot(cpu.maxpool2d_backward(np.where(valid, dy, 0.0), idx, shape[2:]), e)
    np.testing.assert_allclose(lhs, rhs, rtol=1e-6, atol=1e-9)


# ---- random configurations -----------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(window_configs())
def test_im2col_col2im_random_configs(config):
    check_im2col_col2im(cpu, config)


@settings(max_examples=40, deadline=None)
@given(window_configs(pool=True))
def test_pooling_random_configs(config):
    check_pooling(cpu, config)


# ---- layout, determinism, compilation ------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_non_contiguous_inputs(dtype):
    base = randn((3, 2, 9, 14), dtype)
    x = base.transpose(1, 0, 2, 3)[:, :, :, ::2]  # (2, 3, 9, 7), strided
    assert not x.flags.c_contiguous
    window = ((3, 2), (2, 1), (1, 1), (1, 2))  # kernel, stride, padding, dilation
    args = (*window, conv_out_size("test", (9, 7), *window))
    col = cpu.im2col(x, *args)
    np.testing.assert_array_equal(col, ref.im2col(x, *args))
    col_t = np.ascontiguousarray(col.transpose(0, 2, 1)).transpose(0, 2, 1)  # F-ordered rows
    np.testing.assert_array_equal(cpu.col2im(col_t, (9, 7), *args), ref.col2im(col, (9, 7), *args))
    xs = distinct((3, 2, 9, 14), dtype).transpose(1, 0, 2, 3)[:, :, :, ::2]
    y, idx = cpu.maxpool2d_forward(xs, (2, 2), (2, 2), (0, 0), (1, 1), (4, 3))
    y_ref, idx_ref = ref.maxpool2d_forward(xs, (2, 2), (2, 2), (0, 0), (1, 1), (4, 3))
    np.testing.assert_array_equal(idx, idx_ref)
    dy, idx_t = y[:, :, ::-1], idx[:, :, ::-1]  # negative strides
    expected = ref.maxunpool2d_forward(dy, idx_t, (9, 7))
    np.testing.assert_array_equal(cpu.maxunpool2d_forward(dy, idx_t, (9, 7)), expected)
    np.testing.assert_array_equal(
        cpu.maxunpool2d_backward(x, idx_t), ref.maxunpool2d_backward(x, idx_t)
    )


def _run_all_kernels(dtype):
    """Every kernel once on an input big enough to be split across threads."""
    shape, k, s, p, d = (4, 8, 33, 31), (3, 3), (1, 2), (1, 1), (2, 1)
    out = conv_out_size("test", shape[2:], k, s, p, d)
    x = randn(shape, dtype)
    col = cpu.im2col(x, k, s, p, d, out)
    dx = cpu.col2im(randn(col.shape, dtype), shape[2:], k, s, p, d, out)
    pool_out = conv_out_size("test", shape[2:], (3, 3), (2, 2), (1, 1), (1, 1), True)
    y, idx = cpu.maxpool2d_forward(x, (3, 3), (2, 2), (1, 1), (1, 1), pool_out)
    dpool = cpu.maxpool2d_backward(randn(y.shape, dtype), idx, shape[2:])
    up = cpu.maxunpool2d_forward(y, idx, shape[2:])
    dup = cpu.maxunpool2d_backward(x, idx)
    y2, idx2 = cpu.maxpool2d_forward(x[:, :, :32, :30], (2, 2), (2, 2), (0, 0), (1, 1), (16, 15))
    drelu = cpu.relu_backward(randn(x.shape, dtype), x)
    return [col, dx, y, idx, dpool, up, dup, y2, idx2, drelu]


@pytest.mark.parametrize("dtype", DTYPES)
def test_bitwise_deterministic_across_calls_and_threads(dtype):
    first = _run_all_kernels(dtype)
    second = _run_all_kernels(dtype)
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        single = _run_all_kernels(dtype)
    finally:
        numba.set_num_threads(threads)
    for a, b, c in zip(first, second, single):
        assert a.tobytes() == b.tobytes() == c.tobytes()


JITTED = [
    "_valid_range",
    "_im2col",
    "_im2col_same",
    "_col2im",
    "_im2col_taps",
    "_col2im_taps",
    "_maxpool2d_forward",
    "_maxpool2x2_forward",
    "_scatter_add",
    "_gather",
    "_relu_backward",
]

PROBE = """
import json, sys
import numpy as np
from fcn_scratch.kernels import cpu
names = json.loads(sys.argv[1])
compiled_at_import = {n: len(getattr(cpu, n).signatures) for n in names}
big = np.arange(200, dtype=np.float32).reshape(1, 2, 10, 10)  # maps above TABLE_PIXELS
col = cpu.im2col(big, (2, 2), (1, 1), (0, 0), (1, 1), (9, 9))
cpu.im2col(big, (3, 3), (1, 1), (1, 1), (1, 1), (10, 10))
cpu.col2im(col, (10, 10), (2, 2), (1, 1), (0, 0), (1, 1), (9, 9))
x = np.arange(32, dtype=np.float32).reshape(1, 2, 4, 4)
col = cpu.im2col(x, (2, 2), (1, 1), (0, 0), (1, 1), (3, 3))
cpu.col2im(col, (4, 4), (2, 2), (1, 1), (0, 0), (1, 1), (3, 3))
y, idx = cpu.maxpool2d_forward(x, (2, 2), (2, 2), (0, 0), (1, 1), (2, 2))
cpu.maxpool2d_forward(x, (3, 3), (2, 2), (1, 1), (1, 1), (2, 2))
cpu.maxpool2d_backward(y, idx, (4, 4))
cpu.maxunpool2d_backward(x, idx)
cpu.relu_backward(x, x)
stats = {n: [sum(getattr(cpu, n).stats.cache_hits.values()),
             sum(getattr(cpu, n).stats.cache_misses.values())] for n in names[1:]}
print(json.dumps({"compiled_at_import": compiled_at_import, "hits_misses": stats}))
"""


def _probe():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    result = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(JITTED)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_import_compiles_nothing_and_second_process_uses_cache():
    """Importing compiles nothing; after one process has run the kernels (compiling them or
    loading them from Numba's cache), a second process loads every one and compiles none."""
    first = _probe()
    assert first["compiled_at_import"] == {name: 0 for name in JITTED}
    assert all(hits + misses == 1 for hits, misses in first["hits_misses"].values()), first
    second = _probe()
    assert second["compiled_at_import"] == {name: 0 for name in JITTED}
    assert all(hits == 1 and misses == 0 for hits, misses in second["hits_misses"].values()), second


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weight_decay, decoupled", [(0.0, False), (0.1, False), (0.1, True)])
def test_adam_update_matches_its_formula(weight_decay, decoupled, dtype):
    """The one-pass Adam/AdamW step against the formula written out in float64, and
    against the reference kernel."""
    rng = np.random.default_rng(3)
    p, m, v = (rng.standard_normal((3, 4, 5)).astype(dtype) for _ in range(3))
    v = np.abs(v)
    start = [a.copy() for a in (p, m, v)]
    expected = [a.astype(np.float64) for a in (p, m, v)]
    lr, beta1, beta2, eps = 1e-2, 0.9, 0.999, 1e-8
    grads = [rng.standard_normal(p.shape).astype(dtype) for _ in range(3)]
    for t, g in enumerate(grads, 1):
        cpu.adam_update(p, g, m, v, t, lr, beta1, beta2, eps, weight_decay, decoupled)
        ep, em, ev = expected
        gd = g.astype(np.float64)
        if decoupled:
            ep *= 1 - lr * weight_decay
        else:
            gd = gd + weight_decay * ep
        em += (1 - beta1) * (gd - em)
        ev[...] = beta2 * ev + (1 - beta2) * gd * gd
        ep -= lr / (1 - beta1**t) * em / (np.sqrt(ev) / np.sqrt(1 - beta2**t) + eps)
    rtol = 1e-6 if dtype == np.float32 else 1e-13
    p_ref, m_ref, v_ref = (a.astype(dtype) for a in start)
    for t, g in enumerate(grads, 1):
        ref.adam_update(p_ref, g, m_ref, v_ref, t, lr, beta1, beta2, eps, weight_decay, decoupled)
    for got, want in zip((p, m, v), (p_ref, m_ref, v_ref)):
        np.testing.assert_allclose(got, want, rtol=10 * rtol, atol=10 * rtol)
    for got, want in zip((p, m, v), expected):
        assert got.dtype == dtype
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol)


# ---- cross-entropy -----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy_kernels_match_numpy_bit_for_bit(reduction, weighted, dtype):
    """The Numba cross-entropy (fcn_scratch.kernels.cross_entropy) against the NumPy
    expressions of ops.loss, which run under ``kernels.using(reference)``: the same
    arithmetic in the same order, so the same bits, ignored pixels and uint8 targets too."""
    rng = np.random.default_rng(5)
    logits = (4 * rng.standard_normal((3, 5, 7, 9))).astype(dtype)
    target = rng.integers(0, 5, (3, 7, 9)).astype(np.uint8)
    target[0, 0, :4] = 255
    weight = rng.random(5).astype(dtype) if weighted else None
    dloss = rng.standard_normal((3, 7, 9)).astype(dtype) if reduction == "none" else dtype(1.5)
    results = []
    for backend in (nullcontext(), kernels.using(ref)):  # Numba, then NumPy
        with backend:
            value, ctx = loss.cross_entropy_forward(logits, target, weight, 255, reduction)
            results.append((value, ctx.prob, ctx.target, loss.cross_entropy_backward(dloss, ctx)))
    for got, want in zip(*results):
        assert got.dtype == want.dtype and got.tobytes() == want.tobytes()


@pytest.mark.parametrize("k, s, p, d, shape, out", CONV[:4])
def test_im2col_with_a_row_of_ones(k, s, p, d, shape, out):
    """``ones_row`` (conv2d's bias in the GEMM): the reference's columns, then ones."""
    x = randn(shape, np.float32)
    col = cpu.im2col(x, k, s, p, d, out, ones_row=True)
    np.testing.assert_array_equal(col[:, :-1], ref.im2col(x, k, s, p, d, out))
    assert (col[:, -1] == 1).all()
