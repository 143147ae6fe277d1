"""Lanes: a batch split across threads gives the batch's gradients, deterministically; so
does an op that splits its batch (parallel.split_batch)."""

import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import threadpoolctl

from fcn_scratch import Tensor, kernels, parallel
from fcn_scratch import functional as F
from fcn_scratch import random as fcn_random
from fcn_scratch.kernels import reference
from fcn_scratch.models import build_model
from fcn_scratch.ops import conv, subpixel, winograd
from fcn_scratch.train import TrainConfig, Trainer
from fcn_scratch.train.evaluation import confusion, predict

SMALL = dict(widths=(4, 4, 8, 8, 8), convs_per_stage=(1, 1, 1, 1, 1), fc_width=8)


def batch(n=6, size=32, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 3, size, size), dtype=np.float32)
    y = rng.integers(0, classes, (n, size, size))
    y[0, :5] = 255  # some ignored pixels
    return x, y


def grads_of(trainer, x, y):
    loss, _ = trainer.train_step(x, y)
    return loss, {
        n: p.grad.copy() for n, p in trainer.model.named_parameters() if p.grad is not None
    }


def trainer_with(lanes: int, **fields) -> Trainer:
    parallel.limit_threads(lanes)
    config = TrainConfig(
        out=None, train_size=8, val_size=4, image_size=32, batch_size=6, **SMALL, **fields
    )
    return Trainer(config, progress=False)


@pytest.mark.parametrize("lanes", [2, 3])
def test_lanes_give_the_whole_batch_gradient(lanes):
    x, y = batch()
    one = trainer_with(1)
    assert one.lanes.count == 1
    loss_one, grads_one = grads_of(one, x, y)
    many = trainer_with(lanes)
    assert many.lanes.count == lanes
    loss_many, grads_many = grads_of(many, x, y)
    assert grads_one.keys() == grads_many.keys() and grads_one
    np.testing.assert_allclose(loss_many, loss_one, rtol=1e-5)
    for name, g in grads_one.items():
        scale = np.abs(g).max() + 1e-12
        np.testing.assert_allclose(grads_many[name], g, rtol=1e-4, atol=1e-5 * scale, err_msg=name)


def test_lanes_match_a_plain_mean_loss():
    """The lanes' summed shares equal cross_entropy's 'mean' over the batch (class weights too)."""
    x, y = batch(seed=3)
    trainer = trainer_with(2, class_weights="median_freq")
    model = trainer.model
    loss_lanes, grads = grads_of(trainer, x, y)
    model.zero_grad()
    loss = F.cross_entropy(model(Tensor(x)), y, weight=trainer.weight, ignore_index=255)
    loss.backward()
    np.testing.assert_allclose(loss_lanes, loss.item(), rtol=1e-5)
    for name, p in model.named_parameters():
        if p.grad is not None:
            scale = np.abs(p.grad).max() + 1e-12
            np.testing.assert_allclose(grads[name], p.grad, rtol=1e-4, atol=1e-5 * scale)


def test_lanes_are_bitwise_deterministic_with_dropout():
    """Two runs with two lanes and dropout: the same bits (each lane has its own generator)."""
    results = []
    for _ in range(2):
        trainer = trainer_with(2, epochs=1, model_kwargs={"dropout": 0.5})
        trainer.fit()
        results.append({n: p.data.copy() for n, p in trainer.model.named_parameters()})
    for name in results[0]:
        assert results[0][name].tobytes() == results[1][name].tobytes(), name


def test_more_lanes_than_images_and_replicas_share_arrays():
    model = build_model("fcn8s", 3, rng=0, **SMALL)
    lanes = parallel.Lanes(model, 4)
    replica = lanes.replicas[1]
    for p, r in zip(model.parameters(), replica.parameters()):
        assert r is not p and r.data is p.data
    x, _ = batch(n=2)
    sizes = lanes.run(lambda m, part: len(part), x)
    assert sizes == [1, 1]  # two images: two lanes used
    lanes.close()


def test_evaluation_and_prediction_do_not_depend_on_lanes():
    model = build_model("fcn16s", 4, rng=1, **SMALL)
    x, y = batch(n=5, seed=4)

    class Data:
        num_classes = 4

        def __len__(self):
            return len(x)

        def get_batch(self, idx):
            return x[idx], y[idx]

    parallel.limit_threads(1)
    cm_one, loss_one = confusion(model, Data(), batch_size=5)
    labels_one = predict(model, x, batch_size=5)
    parallel.limit_threads(2)
    labels_two = predict(model, x, batch_size=5)
    state = fcn_random.get_state()
    cm_two, loss_two = confusion(model, Data(), batch_size=5)
    assert fcn_random.get_state() == state  # evaluation draws nothing from the generator
    np.testing.assert_array_equal(cm_one.matrix, cm_two.matrix)
    np.testing.assert_array_equal(labels_one, labels_two)
    np.testing.assert_allclose(loss_two, loss_one, rtol=1e-5)


def test_limit_threads_rejects_bad_counts():
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="limit_threads: n must be an int >= 1"):
            parallel.limit_threads(bad)


@pytest.mark.parametrize("threads", [2, 3])
def test_a_transposed_convolution_splits_its_batch_and_matches_the_reference(threads, monkeypatch):
    monkeypatch.setattr(conv, "MIN_SPLIT_MACS", 0)  # so small an op is cut too
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((5, 3, 4, 5)), rng.standard_normal((3, 2, 4, 4))
    b, dy = rng.standard_normal(2), rng.standard_normal((5, 2, 8, 10))
    parallel.limit_threads(threads)
    y, ctx = conv.conv_transpose2d_forward(x, w, b, 2, 1)
    assert isinstance(ctx, conv.SplitCtx) and ctx.sizes == ((2, 1, 2) if threads == 3 else (2, 3))
    grads = conv.conv_transpose2d_backward(dy, ctx)
    _, one_image = conv.conv_transpose2d_forward(x[:1], w, b, 2, 1)
    assert isinstance(one_image, subpixel.SubpixelCtx)  # kernel 4, stride 2: by phases
    with kernels.using(reference):
        y_ref, ctx_ref = conv.conv_transpose2d_forward(x, w, b, 2, 1)
        assert isinstance(ctx_ref, conv.ConvCtx)  # other backends keep the whole batch
        grads_ref = conv.conv_transpose2d_backward(dy, ctx_ref)
    for a, r in zip((y, *grads), (y_ref, *grads_ref)):
        np.testing.assert_allclose(a, r, rtol=1e-12, atol=1e-12)
    parallel.limit_threads(1)
    assert isinstance(conv.conv_transpose2d_forward(x, w, b, 2, 1)[1], subpixel.SubpixelCtx)


@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("need_dx", [True, False])
@pytest.mark.parametrize("c_in, stride, padding", [(3, 1, 1), (4, 2, 0)])
def test_an_im2col_convolution_splits_its_batch_and_matches_the_reference(
    threads, need_dx, c_in, stride, padding, monkeypatch
):
    monkeypatch.setattr(conv, "MIN_SPLIT_MACS", 0)  # so small an op is cut too
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal((5, c_in, 7, 6)), rng.standard_normal((4, c_in, 3, 3))
    b = rng.standard_normal(4)
    parallel.limit_threads(threads)
    y, ctx = conv.conv2d_forward(x, w, b, stride, padding)
    assert isinstance(ctx, conv.SplitCtx) and len(ctx.sizes) == threads
    assert all(isinstance(c, conv.ConvCtx) for c in ctx.parts)  # im2col in every slice
    dy = rng.standard_normal(y.shape)
    grads = conv.conv2d_backward(dy, ctx, need_dx=need_dx)
    with kernels.using(reference):
        y_ref, ctx_ref = conv.conv2d_forward(x, w, b, stride, padding)
        grads_ref = conv.conv2d_backward(dy, ctx_ref, need_dx=need_dx)
    assert (grads[0] is None) == (not need_dx)
    for a, r in zip((y, *grads), (y_ref, *grads_ref)):
        if r is not None:
            np.testing.assert_allclose(a, r, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("op", ["conv2d", "conv_transpose2d"])
def test_a_small_op_runs_whole_as_one_lane_with_the_bits_of_one_thread(op, monkeypatch):
    """Below ``MIN_SPLIT_MACS`` multiply-adds (im2col's count, a quarter of it where
    Winograd applies) the op is one slice, computed on one thread as a lane (here by
    Winograd and by phases): the bits of ``--threads 1``. From the threshold on it is cut,
    or, by Winograd, its chunks go to the threads."""
    rng = np.random.default_rng(5)
    if op == "conv2d":
        x, w = rng.standard_normal((4, 8, 8, 8)), rng.standard_normal((8, 8, 3, 3))
        forward, backward, args = conv.conv2d_forward, conv.conv2d_backward, (1, 1)
        macs = 4 * 8 * 8 * 8 * (8 * 3 * 3) // 4  # output values x taps, by Winograd
    else:
        x, w = rng.standard_normal((4, 8, 8, 8)), rng.standard_normal((8, 8, 4, 4))
        forward, backward = conv.conv_transpose2d_forward, conv.conv_transpose2d_backward
        args = (2, 1)
        macs = 4 * 8 * 8 * 8 * (8 * 4 * 4)  # input values x their outputs
    x, w = x.astype(np.float32), w.astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    results = {}
    for threads in (1, 2):
        parallel.limit_threads(threads)
        y, ctx = forward(x, w, b, *args)
        dy = np.cos(y)
        results[threads] = (y, *backward(dy, ctx))
        if threads == 2:
            assert isinstance(ctx, conv.SplitCtx) and ctx.sizes == (4,)
    for one, two in zip(results[1], results[2]):
        assert one.tobytes() == two.tobytes()
    monkeypatch.setattr(conv, "MIN_SPLIT_MACS", macs + 1)
    assert forward(x, w, b, *args)[1].sizes == (4,)
    monkeypatch.setattr(conv, "MIN_SPLIT_MACS", macs)
    ctx = forward(x, w, b, *args)[1]
    if op == "conv2d":
        assert isinstance(ctx, winograd.WinogradCtx)
    else:
        assert ctx.sizes == (2, 2)


def numpy_blas() -> set[str]:
    """The files of the BLAS libraries that numpy loads, found in a process that imports
    numpy alone. (Other libraries may bring their own BLAS: SciPy's, which Numba loads where
    SciPy is installed. The package does not call those, nor limit them.)"""
    code = (
        "import numpy, threadpoolctl\n"
        "for lib in threadpoolctl.threadpool_info():\n"
        "    if lib['user_api'] == 'blas': print(lib['filepath'])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_each_hands_every_index_to_a_thread_once_as_lanes_results_in_order():
    """Every index once, results in index order, each call as a lane (numpy's BLAS on one
    thread, ``on_one_thread()``), and the threads share the work; inside a lane, a plain loop."""
    seen, lock = [], threading.Lock()
    numpys = numpy_blas()
    assert numpys

    def fn(i):
        time.sleep(0.005)  # long enough for every thread to take some
        info = threadpoolctl.threadpool_info()
        blas = {lib["num_threads"] for lib in info if lib["filepath"] in numpys}
        with lock:
            seen.append((i, threading.get_ident(), parallel.on_one_thread(), blas))
        return i * i

    parallel.limit_threads(3)
    assert parallel.each(fn, 9) == [i * i for i in range(9)]
    assert sorted(i for i, *_ in seen) == list(range(9))
    assert len({t for _, t, *_ in seen}) == 3
    assert all(lane and blas == {1} for *_, lane, blas in seen)
    seen.clear()
    assert parallel.in_lane(lambda *_: parallel.each(fn, 4), 0)(0, None) == [0, 1, 4, 9]
    assert len({t for _, t, *_ in seen}) == 1


@pytest.mark.parametrize("need_dx, need_dw", [(True, True), (True, False), (False, True)])
def test_the_bias_added_in_the_gemm_matches_the_reference(need_dx, need_dw):
    """On one thread, an im2col convolution with a bias adds it in the GEMM (a row of ones
    under the columns) and gets db from the weight's GEMM: the reference's numbers."""
    rng = np.random.default_rng(4)
    x, w, b = (
        rng.standard_normal((3, 3, 7, 6)),
        rng.standard_normal((4, 3, 3, 3)),
        rng.standard_normal(4),
    )
    parallel.limit_threads(1)
    y, ctx = conv.conv2d_forward(x, w, b, 1, 1)
    assert ctx.col.shape[1] == 3 * 9 + 1  # the row of ones
    dy = rng.standard_normal(y.shape)
    grads = conv.conv2d_backward(dy, ctx, need_dx, need_dw)
    with kernels.using(reference):
        y_ref, ctx_ref = conv.conv2d_forward(x, w, b, 1, 1)
        grads_ref = conv.conv2d_backward(dy, ctx_ref, need_dx, need_dw)
    for a, r in zip((y, *grads), (y_ref, *grads_ref)):
        assert (a is None) == (r is None)
        if r is not None:
            np.testing.assert_allclose(a, r, rtol=1e-12, atol=1e-12)


def test_the_bias_stays_out_of_the_gemm_where_the_weight_outweighs_the_output():
    """A weight row longer than the output's pixels (VGG16's fc6 on a photo) would be
    copied for less than it saves: the bias is added to y instead, with the same result."""
    rng = np.random.default_rng(5)
    x, w, b = (
        rng.standard_normal((1, 4, 7, 7)),
        rng.standard_normal((2, 4, 3, 3)),
        rng.standard_normal(2),
    )
    parallel.limit_threads(1)
    y, ctx = conv.conv2d_forward(x, w, b, 1, 0)  # 36 weights a row, 25 output pixels
    assert ctx.col.shape[1] == 4 * 9  # no row of ones
    with kernels.using(reference):
        y_ref, _ = conv.conv2d_forward(x, w, b, 1, 0)
    np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-12)
