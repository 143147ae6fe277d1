"""The phase-by-phase path of conv_transpose2d (fcn_scratch.ops.subpixel): when it is
taken, and that it computes what col2im computes, forward and backward."""

import numpy as np
import pytest

from fcn_scratch import functional as F
from fcn_scratch import gradcheck, kernels, parallel
from fcn_scratch.kernels import reference
from fcn_scratch.kernels import subpixel as subpixel_kernels
from fcn_scratch.ops import conv, subpixel


@pytest.fixture(autouse=True)
def one_thread():
    """A batch on one thread is not cut into slices (conftest restores the limit)."""
    parallel.limit_threads(1)


def _inputs(rng, shape, c_out, kernel, dtype=np.float64):
    x = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal((shape[1], c_out, *kernel)).astype(dtype)
    b = rng.standard_normal(c_out).astype(dtype)
    return x, w, b


@pytest.mark.parametrize(
    "shape, c_out, kernel, stride, padding, output_padding",
    [
        ((2, 3, 4, 5), 2, (4, 4), 2, 1, 0),  # FCN's x2 with padding s/2
        ((2, 3, 4, 5), 2, (4, 4), 2, 0, 0),  # FCN's x2 as the model has it (cropped later)
        ((1, 2, 3, 3), 3, (16, 16), 8, 4, 0),  # x8
        ((2, 2, 2, 3), 2, (6, 9), (2, 3), (1, 2), (1, 0)),  # three taps a phase, two axes
        ((2, 3, 3, 4), 2, (2, 2), 2, 0, 1),  # one tap a phase; output padding past the grid
        ((1, 2, 3, 3), 2, (3, 3), 1, 1, 0),  # stride 1: a correlation with the flipped kernel
        ((1, 2, 2, 2), 1, (4, 4), 2, 3, 1),  # padding larger than the stride
        ((3, 1, 1, 1), 2, (8, 8), 4, 2, 3),  # one pixel
    ],
)
@pytest.mark.parametrize("with_bias", [True, False])
def test_matches_col2im(rng, shape, c_out, kernel, stride, padding, output_padding, with_bias):
    x, w, b = _inputs(rng, shape, c_out, kernel)
    b = b if with_bias else None
    args = (stride, padding, output_padding)
    y, ctx = conv.conv_transpose2d_forward(x, w, b, *args)
    assert isinstance(ctx, subpixel.SubpixelCtx)
    dy = rng.standard_normal(y.shape)
    with kernels.using(reference):
        y_ref, ctx_ref = conv.conv_transpose2d_forward(x, w, b, *args)
        assert isinstance(ctx_ref, conv.ConvCtx)
    np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-12)
    for need_dx, need_dw in [(True, True), (True, False), (False, True)]:
        grads = conv.conv_transpose2d_backward(dy, ctx, need_dx, need_dw)
        with kernels.using(reference):
            grads_ref = conv.conv_transpose2d_backward(dy, ctx_ref, need_dx, need_dw)
        for name, a, r in zip(("dx", "dw", "db"), grads, grads_ref):
            if r is None:
                assert a is None, name
            else:
                np.testing.assert_allclose(a, r, rtol=1e-12, atol=1e-12, err_msg=name)


def test_float32_rounds_like_col2im(rng):
    x, w, b = _inputs(rng, (2, 8, 16, 16), 8, (16, 16), np.float32)
    y, _ = conv.conv_transpose2d_forward(x, w, b, 8, 4)
    with kernels.using(reference):
        y_ref, _ = conv.conv_transpose2d_forward(x, w, b, 8, 4)
    assert np.abs(y - y_ref).max() <= 1e-6 * np.abs(y_ref).max()


@pytest.mark.parametrize(
    "kernel, stride, dilation",
    [((3, 3), 2, 1), ((4, 6), (2, 4), 1), ((4, 4), 2, 2)],
)
def test_other_transposed_convolutions_take_col2im(rng, kernel, stride, dilation):
    x, w, b = _inputs(rng, (1, 2, 3, 3), 2, kernel)
    _, ctx = conv.conv_transpose2d_forward(x, w, b, stride, 0, 0, dilation)
    assert isinstance(ctx, conv.ConvCtx)


def test_stacked_kernels_permute_the_taps(rng):
    w = rng.standard_normal((2, 3, 6, 4))
    W = subpixel.stacked_kernels(w, (3, 2))  # T = 2 taps a phase down, 2 across
    assert W.shape == (3 * 2 * 3, 2 * 2 * 2)
    a, b, o, c, u, v = 2, 1, 0, 1, 0, 1  # W_ab[o, c, u, v] = w[c, o, a + 3(1 - u), b + 2(1 - v)]
    assert W[(a * 2 + b) * 3 + o, (c * 2 + u) * 2 + v] == w[c, o, a + 3, b]
    assert sorted(W.ravel()) == sorted(w.ravel())  # every tap once
    np.testing.assert_array_equal(subpixel.kernel_grad(W, w.shape, (3, 2)), w)


def test_the_two_scatters_are_adjoint(rng):
    """<phases_to_image(Y), g> = <Y, image_to_phases(g)> (zero bias)."""
    N, C, S, P = 2, 3, (3, 2), (2, 1)
    Q, R, out = 4, 5, (11, 9)
    Y = rng.standard_normal((N, S[0] * S[1] * C, Q * R))
    g = rng.standard_normal((N, C, *out))
    y = np.empty_like(g)
    subpixel_kernels.phases_to_image(Y, *S, *P, Q, R, np.zeros(C), y)
    dY = np.empty_like(Y)
    subpixel_kernels.image_to_phases(g, *S, *P, Q, R, dY)
    assert np.isclose((y * g).sum(), (Y * dY).sum(), rtol=1e-12)


def test_gradcheck_float64(rng):
    x, w, b = _inputs(rng, (2, 2, 3, 4), 2, (6, 4))
    assert isinstance(conv.conv_transpose2d_forward(x, w, b, (3, 2), 1)[1], subpixel.SubpixelCtx)
    result = gradcheck(lambda x, w, b: F.conv_transpose2d(x, w, b, (3, 2), 1), [x, w, b])
    assert result.passed, result
