"""The Winograd F(4x4, 3x3) path of conv2d (fcn_scratch.ops.winograd): when it is taken,
and that it computes what im2col computes, forward and backward, for any image size."""

import numpy as np
import pytest

from fcn_scratch import functional as F
from fcn_scratch import gradcheck, kernels, parallel
from fcn_scratch.kernels import reference
from fcn_scratch.nn import Conv2d
from fcn_scratch.ops import conv, winograd

C = winograd.MIN_CHANNELS


@pytest.fixture(autouse=True)
def one_thread():
    """The path is taken where a convolution runs on one thread (conftest restores the
    limit afterwards)."""
    parallel.limit_threads(1)


def _both(x, w, b, dy, need_dx=True, need_dw=True):
    """(y, dx, dw, db) by the default path and by the reference kernels' im2col."""
    y, ctx = conv.conv2d_forward(x, w, b, 1, 1)
    grads = conv.conv2d_backward(dy, ctx, need_dx, need_dw)
    with kernels.using(reference):
        y_ref, ctx_ref = conv.conv2d_forward(x, w, b, 1, 1)
        grads_ref = conv.conv2d_backward(dy, ctx_ref, need_dx, need_dw)
    return ctx, (y, *grads), (y_ref, *grads_ref)


def _inputs(rng, shape, c_out, dtype):
    x = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal((c_out, shape[1], 3, 3)).astype(dtype)
    b = rng.standard_normal(c_out).astype(dtype)
    dy = rng.standard_normal((shape[0], c_out, *shape[2:])).astype(dtype)
    return x, w, b, dy


@pytest.mark.parametrize(
    "shape, c_out",
    [
        ((2, C, 8, 12), 3),  # whole tiles
        ((3, C + 3, 5, 7), 4),  # the last row and column of tiles are cut
        ((2, C, 10, 9), 2),  # by 2 and by 3
        ((1, C, 1, 1), 1),  # one pixel: one tile, mostly padding
        ((2, C, 1, 6), 2),
        ((2, C, 7, 1), 2),
        ((1, 4 * C, 2, 3), 5),
        ((2, 4 * C, 6, 6), 6),
    ],
)
# F(4x4, 3x3)'s transforms have entries up to 8 and sixths, and in float32 it rounds about
# ten times more than im2col (5e-6 - 1.2e-5 of the largest output on the training recipe's
# layers, im2col 2e-7 - 9e-7); an error in a tile or a term is of the size of the output.
@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-13), (np.float32, 3e-5)])
def test_matches_im2col(rng, monkeypatch, shape, c_out, dtype, tol):
    monkeypatch.setattr(winograd, "MIN_SIZE", 1)  # the kernels are right on any map
    ctx, ours, ref = _both(*_inputs(rng, shape, c_out, dtype))
    assert isinstance(ctx, winograd.WinogradCtx)
    for name, a, r in zip(("y", "dx", "dw", "db"), ours, ref):
        assert a.shape == r.shape and a.dtype == dtype, name
        scale = np.abs(r).max()
        assert np.abs(a - r).max() <= tol * scale, (name, np.abs(a - r).max() / scale)


def test_chunks_are_whole_images_of_at_least_chunk_tiles(monkeypatch):
    monkeypatch.setattr(winograd, "CHUNK_TILES", 256)
    assert winograd.chunks(3, 64, 64) == [slice(0, 1), slice(1, 2), slice(2, 3)]  # 256 tiles
    assert winograd.chunks(16, 32, 32) == [slice(0, 4), slice(4, 8), slice(8, 12), slice(12, 16)]
    assert winograd.chunks(10, 8, 8) == [slice(0, 10)]  # 4 tiles an image
    assert winograd.chunks(2, 100, 100) == [slice(0, 1), slice(1, 2)]
    assert winograd.chunks(25, 40, 40) == [slice(0, 3), slice(3, 6)] + [
        slice(n, min(n + 3, 25)) for n in range(6, 25, 3)
    ]  # 100 tiles an image


def test_chunks_for_several_threads_are_at_most_an_even_share_of_the_batch(monkeypatch):
    monkeypatch.setattr(winograd, "CHUNK_TILES", 256)
    parallel.limit_threads(2)
    assert winograd.chunks(16, 16, 16) == [slice(0, 8), slice(8, 16)]  # 16 tiles an image
    assert winograd.chunks(3, 64, 64) == [slice(0, 1), slice(1, 2), slice(2, 3)]
    assert parallel.in_lane(lambda *_: winograd.chunks(16, 16, 16), 0)(0, None) == [slice(0, 16)]


@pytest.mark.parametrize("keep", [True, False])
@pytest.mark.parametrize("need_dx, need_dw", [(True, True), (False, True), (True, False)])
def test_several_chunks_match_im2col(rng, monkeypatch, keep, need_dx, need_dw):
    # 9 tiles an image: chunks of 2, 2 and 1 images; the input tiles kept, or transformed
    # again from the split rows
    monkeypatch.setattr(winograd, "CHUNK_TILES", 15)
    monkeypatch.setattr(winograd, "KEEP_TILES_BYTES", 2**30 if keep else 0)
    ctx, ours, ref = _both(*_inputs(rng, (5, C + 1, 10, 11), 3, np.float64), need_dx, need_dw)
    if keep:
        assert ctx.xs is None and [v.shape[1] for v in ctx.V] == [18, 18, 9]
    else:
        assert ctx.V is None and ctx.xs is not None
    for name, a, r in zip(("y", "dx", "dw", "db"), ours, ref):
        if r is None:
            assert a is None, name
            continue
        assert np.abs(a - r).max() <= 1e-13 * np.abs(r).max(), name


def test_gradients_not_asked_for_are_none(rng):
    x, w, b, dy = _inputs(rng, (2, C, 8, 8), 3, np.float32)
    ctx, ours, ref = _both(x, w, None, dy, need_dx=False)
    assert ours[1] is None and ours[3] is None
    assert np.abs(ours[2] - ref[2]).max() <= 3e-5 * np.abs(ref[2]).max()
    ctx, ours, ref = _both(x, w, b, dy, need_dw=False)
    assert ours[2] is None
    assert np.abs(ours[1] - ref[1]).max() <= 3e-5 * np.abs(ref[1]).max()


def test_deterministic_and_takes_views(rng):
    x, w, b, dy = _inputs(rng, (2, C, 9, 8), 3, np.float32)
    y1, ctx1 = conv.conv2d_forward(x, w, b, 1, 1)
    y2, ctx2 = conv.conv2d_forward(np.asfortranarray(x), w, b, 1, 1)
    assert np.array_equal(y1, y2)
    g1 = conv.conv2d_backward(dy, ctx1)
    g2 = conv.conv2d_backward(dy[:, :, ::-1, :][:, :, ::-1, :], ctx2)
    for a, c in zip(g1, g2):
        assert np.array_equal(a, c)


@pytest.mark.parametrize(
    "c_in, kernel, stride, padding, dilation",
    [
        (C - 1, 3, 1, 1, 1),  # too few channels: im2col is faster there
        (C, 3, 1, 1, 1),  # too small a map (6x6): likewise
        (C, 3, 2, 1, 1),
        (C, 3, 1, 0, 1),
        (C, 3, 1, 2, 2),
        (C, 5, 1, 1, 1),
        (C, 1, 1, 0, 1),
    ],
)
def test_other_convolutions_take_im2col(rng, c_in, kernel, stride, padding, dilation):
    x = rng.standard_normal((1, c_in, 6, 6)).astype(np.float32)
    w = rng.standard_normal((2, c_in, kernel, kernel)).astype(np.float32)
    _, ctx = conv.conv2d_forward(x, w, None, stride, padding, dilation)
    assert isinstance(ctx, conv.ConvCtx)


@pytest.mark.parametrize("size, one_gemm", [(4, True), (2, True), (5, False)])
def test_small_maps_take_one_gemm_over_the_batch(rng, size, one_gemm):
    """Output maps of at most ONE_GEMM_PIXELS pixels keep the batch's columns side by side
    (the values: tests/test_torch_parity.py)."""
    x = rng.standard_normal((3, C, size, size)).astype(np.float32)
    w = rng.standard_normal((2, C, 3, 3)).astype(np.float32)
    _, ctx = conv.conv2d_forward(x, w, None, 1, 1)
    assert ctx.col.shape == ((C * 9, 3 * size * size) if one_gemm else (3, C * 9, size * size))


def test_with_every_thread_a_batch_spreads_its_chunks_one_image_takes_im2col_a_lane_winograd(
    rng, monkeypatch
):
    monkeypatch.setattr(conv, "MIN_SPLIT_MACS", 0)  # so small an op is spread too
    x, w, b, _ = _inputs(rng, (3, C, 8, 8), 2, np.float32)
    parallel.limit_threads(2)
    _, ctx = conv.conv2d_forward(x, w, b, 1, 1)
    assert isinstance(ctx, winograd.WinogradCtx)  # its chunks go to the threads
    _, ctx = conv.conv2d_forward(x[:1], w, b, 1, 1)
    assert isinstance(ctx, conv.ConvCtx)
    lanes = parallel.Lanes(Conv2d(C, 2, 3, padding=1), 2)
    try:
        kinds = lanes.run(lambda _, xs: type(conv.conv2d_forward(xs, w, b, 1, 1)[1]), x)
    finally:
        lanes.close()
    assert kinds == [winograd.WinogradCtx] * 2


@pytest.mark.parametrize("threads", [2, 3, 8])
@pytest.mark.parametrize("need_dx, need_dw", [(True, True), (False, True), (True, False)])
@pytest.mark.parametrize("keep", [True, False])
def test_chunks_on_every_thread_give_the_bits_of_one_thread(
    rng, threads, need_dx, need_dw, keep, monkeypatch
):
    """The chunks (here one image each) go to the threads as they come free; each image's
    output and dx are its chunk's, and the chunks' dU are added in chunk order: the bits of
    one thread, whichever thread took which chunk. Both with the input tiles kept for the
    backward and with the split rows kept instead."""
    monkeypatch.setattr(conv, "MIN_SPLIT_MACS", 0)  # so small an op is spread too
    monkeypatch.setattr(winograd, "CHUNK_TILES", 1)
    monkeypatch.setattr(winograd, "KEEP_TILES_BYTES", 2**30 if keep else 0)
    x, w, b, dy = _inputs(rng, (5, C, 9, 10), 3, np.float32)
    parallel.limit_threads(1)
    ctx, one, ref = _both(x, w, b, dy, need_dx, need_dw)
    assert (ctx.V is None) != keep and len(ctx.V if keep else ctx.xs) == 5
    parallel.limit_threads(threads)
    ctx, many, _ = _both(x, w, b, dy, need_dx, need_dw)
    assert isinstance(ctx, winograd.WinogradCtx)
    for name, a, o, r in zip(("y", "dx", "dw", "db"), many, one, ref):
        if r is None:
            assert a is None, name
            continue
        assert a.tobytes() == o.tobytes(), name
        assert np.abs(a - r).max() <= 3e-5 * np.abs(r).max(), name


def test_gradcheck_float64(rng):
    inputs = [rng.standard_normal((1, C, 8, 9)), rng.standard_normal((2, C, 3, 3)), np.ones(2)]
    assert isinstance(conv.conv2d_forward(*inputs, 1, 1)[1], winograd.WinogradCtx)
    result = gradcheck(lambda x, w, b: F.conv2d(x, w, b, padding=1), inputs)
    assert result.passed, result


def test_other_backends_take_im2col(rng):
    x, w, b, _ = _inputs(rng, (1, C, 8, 8), 2, np.float32)
    with kernels.using(reference):
        _, ctx = conv.conv2d_forward(x, w, b, 1, 1)
    assert isinstance(ctx, conv.ConvCtx)


def test_weight_transform_and_its_adjoint(rng):
    """<weight_tiles(w), dU> = <w, weight_grad(dU)>, and U[6i + j] = (G g G^T)[i, j]."""
    w = rng.standard_normal((3, 5, 3, 3))
    dU = rng.standard_normal((36, 5, 3))
    U = winograd.weight_tiles(w)
    assert np.isclose(np.sum(U * dU), np.sum(w * winograd.weight_grad(dU, w.shape)))
    G = winograd.G
    np.testing.assert_allclose(U[:, 4, 2].reshape(6, 6), G @ w[2, 4] @ G.T, rtol=1e-13)


def test_the_matrices_filter_four_outputs_with_six_multiplications(rng):
    """In one dimension, A^T [(G g) * (B^T d)] is the correlation of six inputs d with
    three taps g: y_k = d_k g_0 + d_(k+1) g_1 + d_(k+2) g_2 for k < 4."""
    d, g = rng.standard_normal(6), rng.standard_normal(3)
    direct = [d[k : k + 3] @ g for k in range(4)]
    np.testing.assert_allclose(winograd.AT @ ((winograd.G @ g) * (winograd.BT @ d)), direct)


def test_terms_list_each_rows_nonzero_entries():
    idx, coef = winograd.terms(winograd.AT, np.float32)
    assert coef.dtype == np.float32 and idx.shape == coef.shape == (4, winograd.TERMS)
    dense = np.zeros((4, 6))
    for r in range(4):
        np.add.at(dense[r], idx[r], coef[r])
    np.testing.assert_array_equal(dense, winograd.AT)
    assert list(idx[0]) == [0, 1, 2, 3, 4] and list(coef[3]) == [1, -1, 8, -8, 1]


@pytest.mark.parametrize("pad", [0, 1])
def test_the_split_rows_are_written_whole_padding_included(rng, pad):
    """split_rows allocates without zeroing: the kernel writes every entry, the zeros of
    the padding and past the edges too (the array starts as NaN here to show it)."""
    x = rng.standard_normal((2, 3, 5, 7))
    k = kernels.winograd_for(x)
    s = np.full(winograd.split_array(2, 3, 5, 7, pad, x.dtype).shape, np.nan)
    k.to_split_rows(x, pad, s.reshape(2, s.shape[1], winograd.TILE, -1, 3))
    assert not np.isnan(s).any()
    assert np.count_nonzero(s) == x.size  # each pixel once, every other entry 0
    back = winograd.merge_rows(k, s, np.empty_like(x), pad)
    np.testing.assert_array_equal(back, x)


def test_the_input_gradient_tiles_write_every_entry(rng):
    """input_grad_tiles zeroes each row of the split input gradient as a row of windows
    first reaches it, then adds: the same bits as adding into zeros, from NaN."""
    N, C, H, W = 2, 3, 9, 6
    T = winograd.tile_count(N, H, W)
    dV = winograd.tile_rows(T, C, np.float64)
    dV[...] = rng.standard_normal(dV.shape)
    k, (idx, coef) = kernels.winograd_for(dV), winograd._TERMS[np.dtype(np.float64)]["B"]
    shape = winograd.split_array(N, C, H, W, 1, np.float64).shape
    into_zeros, into_nan = np.zeros(shape), np.full(shape, np.nan)
    k.input_grad_tiles(dV, C, idx, coef, into_zeros)
    k.input_grad_tiles(dV, C, idx, coef, into_nan)
    assert into_nan.tobytes() == into_zeros.tobytes()
