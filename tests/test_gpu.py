"""The device path, end to end: the CUDA kernels against the reference, every functional op
and its gradient against the CPU, tensors and modules moved between devices, device
mix-ups, training steps, checkpoints, and the evaluate / predict commands on "cuda".

Where CuPy sees a GPU these run on it. Elsewhere the ``cp`` fixture (tests/conftest.py)
installs the CuPy stand-in (tests/cupy_standin) in CuPy's place: NumPy-backed device
arrays that refuse implicit host conversion as CuPy does, with the CUDA C kernels run by
the CPU emulation on the very grids the library launches. ``pytest -m gpu`` selects these
tests and the few device tests of other files.
"""

import json

import matplotlib.image
import numba
import numpy as np
import pytest
from kernel_cases import CONV, DTYPES, POOL, distinct, randn
from test_train import TINY, TINY_FLAGS

from fcn_scratch import Tensor, gradcheck, gradcheck_cases
from fcn_scratch import functional as F
from fcn_scratch.cli import main
from fcn_scratch.kernels import cpu as kcpu
from fcn_scratch.kernels import cuda as kcuda
from fcn_scratch.kernels import launch
from fcn_scratch.kernels import reference as ref
from fcn_scratch.models import build_model
from fcn_scratch.models.preprocess import CAFFE_BGR
from fcn_scratch.train import TrainConfig, Trainer, confusion, load_checkpoint

pytestmark = pytest.mark.gpu

# Op parity between devices: the kernels are bitwise equal, but cuBLAS and NumPy's BLAS
# sum GEMMs in different orders.
TOL = {np.float32: dict(rtol=1e-4, atol=1e-5), np.float64: dict(rtol=1e-10, atol=1e-12)}


def is_standin(cp) -> bool:
    return cp.__name__ == "cupy_standin"


def on_cuda(cp, a):
    """A numpy array (or a Tensor's data) copied to the device; other values unchanged."""
    if isinstance(a, Tensor):
        return Tensor(cp.asarray(a.data), requires_grad=a.requires_grad)
    return cp.asarray(a) if isinstance(a, np.ndarray) else a


def assert_on_gpu(cp, a, dtype):
    assert isinstance(a, cp.ndarray) and a.dtype == dtype, (type(a), a.dtype)


# ---- the stand-in itself: refuses what CuPy refuses -------------------------------------------


def test_standin_refuses_implicit_host_conversion(cp):
    if not is_standin(cp):
        pytest.skip("checks the CuPy stand-in, which a GPU machine does not use")
    a = cp.asarray(np.arange(6.0).reshape(2, 3))
    for convert in (np.asarray, np.array, float, bool, lambda v: f"{v:.3f}"):
        with pytest.raises(TypeError):
            convert(a.sum())
    with pytest.raises(TypeError, match="numpy.ndarray"):
        a + np.ones((2, 3))  # host and device arrays do not mix
    with pytest.raises(TypeError):
        kcpu.im2col(a.reshape(1, 1, 2, 3), (1, 1), (1, 1), (0, 0), (1, 1), (2, 3))
    with pytest.raises(TypeError, match="Numba"):
        numba.njit(lambda v: v.sum())(a)
    assert isinstance(a.sum(), cp.ndarray) and isinstance(a[0, 0], cp.ndarray)  # never scalars
    assert cp.transfers == []
    np.testing.assert_array_equal(a.get(), np.arange(6.0).reshape(2, 3))
    assert a.sum().item() == 15.0 and cp.transfers == [("get", (2, 3)), ("item", ())]


def test_standin_launches_the_plans_grid_and_block(cp):
    """What conv2d launches is the plan of fcn_scratch.kernels.launch, grid and block."""
    if not is_standin(cp):
        pytest.skip("checks the CuPy stand-in, which a GPU machine does not use")
    x = cp.asarray(randn((2, 3, 9, 11), np.float32))
    F.conv2d(x, cp.asarray(randn((4, 3, 3, 3), np.float32)), stride=2, padding=1)
    plan = launch.im2col((2, 3, 9, 11), np.float32, ((3, 3), (2, 2), (1, 1), (1, 1)), (5, 6))
    assert cp.cuda.launches == [(plan.kernel, plan.grid, plan.block)]
    assert plan.grid == (7, 1, 1)  # 2*27*30 = 1620 threads in blocks of 256


# ---- kernels: fcn_scratch.kernels.cuda against the reference loops --------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k, s, p, d, shape, out", CONV)
def test_im2col_col2im_kernels(cp, k, s, p, d, shape, out, dtype):
    """The kernels keep the reference's summation order: equal bit for bit."""
    x = randn(shape, dtype)
    col = kcuda.im2col(cp.asarray(x), k, s, p, d, out)  # (N, C*KH*KW, OH*OW)
    assert_on_gpu(cp, col, dtype)
    np.testing.assert_array_equal(col.get(), ref.im2col(x, k, s, p, d, out))
    dcol = randn(col.shape, dtype, seed=2)
    dx = kcuda.col2im(cp.asarray(dcol), shape[2:], k, s, p, d, out)  # (N, C, H, W)
    assert_on_gpu(cp, dx, dtype)
    np.testing.assert_array_equal(dx.get(), ref.col2im(dcol, shape[2:], k, s, p, d, out))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k, s, p, d, shape, out", POOL)
def test_pooling_kernels(cp, k, s, p, d, shape, out, dtype):
    x = distinct(shape, dtype)
    y, idx = kcuda.maxpool2d_forward(cp.asarray(x), k, s, p, d, out)  # (N, C, OH, OW)
    y_ref, idx_ref = ref.maxpool2d_forward(x, k, s, p, d, out)
    assert_on_gpu(cp, y, dtype)
    assert_on_gpu(cp, idx, np.int64)
    np.testing.assert_array_equal(idx.get(), idx_ref)
    np.testing.assert_array_equal(y.get(), y_ref)
    dy = randn(y.shape, dtype)
    dx = kcuda.maxpool2d_backward(cp.asarray(dy), idx, shape[2:])  # (N, C, H, W)
    np.testing.assert_array_equal(dx.get(), ref.maxpool2d_backward(dy, idx_ref, shape[2:]))
    up = kcuda.maxunpool2d_forward(cp.asarray(dy), idx, shape[2:])  # (N, C, H, W)
    np.testing.assert_array_equal(up.get(), ref.maxunpool2d_forward(dy, idx_ref, shape[2:]))
    dup = kcuda.maxunpool2d_backward(cp.asarray(x), idx)  # (N, C, OH, OW)
    np.testing.assert_array_equal(dup.get(), ref.maxunpool2d_backward(x, idx_ref))


@pytest.mark.parametrize("dtype", DTYPES)
def test_kernels_take_non_contiguous_inputs(cp, dtype):
    x = randn((3, 2, 9, 14), dtype).transpose(1, 0, 2, 3)[:, :, :, ::2]  # (2, 3, 9, 7)
    window = ((3, 2), (2, 1), (1, 1), (1, 2), (5, 6))  # kernel, stride, padding, dilation, out
    xg = cp.asarray(x.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)  # strided on the GPU too
    assert not xg.flags.c_contiguous
    np.testing.assert_array_equal(kcuda.im2col(xg, *window).get(), ref.im2col(x, *window))
    idx = np.random.default_rng(3).integers(0, 63, size=(2, 3, 4, 5))
    idxg = cp.asarray(idx[:, :, ::-1].copy())[:, :, ::-1]  # reversed rows: negative strides
    np.testing.assert_array_equal(
        kcuda.maxunpool2d_backward(xg, idxg).get(), ref.maxunpool2d_backward(x, idx)
    )


def test_kernels_are_bitwise_deterministic(cp):
    x = cp.asarray(randn((2, 4, 17, 15), np.float32))
    window = ((3, 3), (1, 2), (1, 1), (2, 1), (13, 8))
    runs = []
    for _ in range(2):
        col = kcuda.im2col(x, *window)
        dx = kcuda.col2im(col * 1.5, (17, 15), *window)
        y, idx = kcuda.maxpool2d_forward(x, (3, 3), (1, 1), (1, 1), (1, 1), (17, 15))
        runs.append(
            [a.get().tobytes() for a in (col, dx, kcuda.maxpool2d_backward(y, idx, (17, 15)))]
        )
    assert runs[0] == runs[1]


@pytest.mark.slow
def test_flat_indices_beyond_32_bits(cp):
    """col of 2209 x 1024*1024 > 2**31 elements (9 GB in float32): 64-bit flat indices.

    With x all ones, col2im(im2col(x)) counts, per pixel, the (tap, output) pairs that
    read it: an outer product of per-axis counts, exact in float32."""
    if is_standin(cp):
        pytest.skip("needs a real GPU with about 12 GiB free (too big to emulate)")
    H = W = 1024
    k, p = 47, 23
    free, _ = cp.cuda.runtime.memGetInfo()
    if free < 12 * 2**30:
        pytest.skip(f"needs about 12 GiB of free GPU memory, {free / 2**30:.1f} GiB free")
    x = cp.ones((1, 1, H, W), dtype=cp.float32)
    col = kcuda.im2col(x, (k, k), (1, 1), (p, p), (1, 1), (H, W))  # (1, 2209, H*W)
    assert col.size > 2**31
    flat = np.array([0, 2**31 - 1, 2**31, 2**31 + 12345, col.size - 1])
    row, pos = np.divmod(flat, H * W)
    (i, j), (oy, ox) = np.divmod(row, k), np.divmod(pos, W)
    inside = (0 <= oy - p + i) & (oy - p + i < H) & (0 <= ox - p + j) & (ox - p + j < W)
    np.testing.assert_array_equal(col.ravel()[cp.asarray(flat)].get(), inside.astype(np.float32))
    counts = kcuda.col2im(col, (H, W), (k, k), (1, 1), (p, p), (1, 1), (H, W)).get()[0, 0]
    axis = np.array([min(h + p, k - 1) - max(h + p - (H - 1), 0) + 1 for h in range(H)])
    np.testing.assert_array_equal(counts, np.outer(axis, axis).astype(np.float32))
    del col


# ---- every op through the functional API: CUDA against the CPU -----------------------------

OP_CASES = [c for c in gradcheck_cases.cases() if c.op != "dropout"]  # dropout: its own test below


def run_op(cp, case, arrays, device):
    """Forward and backward of a checks case; returns (output, gradients) as numpy arrays."""
    move = np.asarray if device == "cpu" else cp.asarray
    array_type = np.ndarray if device == "cpu" else cp.ndarray
    tensors = []
    for a in arrays:
        if isinstance(a, Tensor):  # a constant such as class weights
            tensors.append(Tensor(move(a.data)))
        else:
            tensors.append(Tensor(move(a), requires_grad=a.dtype.kind == "f"))
    y = case.fn(*tensors)
    assert y.device == device and isinstance(y.data, array_type), type(y.data)
    dy = np.asarray(np.random.default_rng(1).standard_normal(y.shape), dtype=y.dtype)
    y.backward(move(dy))
    grads = [t.grad for t in tensors if t.requires_grad]
    assert all(isinstance(g, array_type) for g in grads), [type(g) for g in grads]
    return y.numpy(), [move(g) if device == "cpu" else g.get() for g in grads]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", OP_CASES, ids=lambda c: c.name)
def test_op_matches_cpu(cp, case, dtype):
    arrays = []
    for a in case.make_inputs(np.random.default_rng(0)):  # float64 arrays and Tensors
        if isinstance(a, Tensor):
            arrays.append(Tensor(a.data.astype(dtype)))
        else:
            arrays.append(a.astype(dtype) if a.dtype == np.float64 else a)
    y_cpu, grads_cpu = run_op(cp, case, arrays, "cpu")
    y_gpu, grads_gpu = run_op(cp, case, arrays, "cuda")
    assert y_gpu.dtype == y_cpu.dtype == dtype
    np.testing.assert_allclose(y_gpu, y_cpu, **TOL[dtype])
    for i, (g_gpu, g_cpu) in enumerate(zip(grads_gpu, grads_cpu, strict=True)):
        np.testing.assert_allclose(g_gpu, g_cpu, **TOL[dtype], err_msg=f"gradient {i}")


def test_max_pool_indices_match_cpu_exactly(cp):
    x = distinct((2, 3, 9, 8), np.float32)
    _, idx = F.max_pool2d(x, 3, 2, 1, ceil_mode=True, return_indices=True)
    _, idx_gpu = F.max_pool2d(cp.asarray(x), 3, 2, 1, ceil_mode=True, return_indices=True)
    assert idx_gpu.device == "cuda"
    np.testing.assert_array_equal(idx_gpu.numpy(), idx.numpy())


@pytest.mark.parametrize("case", OP_CASES, ids=lambda c: c.name)
def test_op_gradients_on_cuda(cp, case):
    inputs = [on_cuda(cp, a) for a in case.make_inputs(np.random.default_rng(0))]
    result = gradcheck(case.fn, inputs)
    assert result.passed and result.checked > 0, (
        f"{case.name}: max abs err {result.max_abs_err:.2e}, max rel err {result.max_rel_err:.2e}"
    )


def test_dropout_on_cuda_uses_one_mask_both_ways(cp):
    x = Tensor(cp.asarray(randn((4, 5, 6, 7), np.float32)), requires_grad=True)
    y = F.dropout(x, p=0.25, generator=cp.random.default_rng(3))
    kept = y.data != 0
    assert isinstance(y.data, cp.ndarray) and 0.6 < kept.mean().item() < 0.9
    cp.testing.assert_allclose(y.data[kept], x.data[kept] / 0.75, rtol=1e-6)
    y.backward(cp.ones(y.shape, dtype=cp.float32))
    cp.testing.assert_allclose(x.grad, kept.astype(cp.float32) / 0.75, rtol=1e-6)
    assert F.dropout(x, p=0.25, training=False) is x
    z = F.dropout(x, p=0.25)  # the global generator for "cuda"
    assert isinstance(z.data, cp.ndarray)


# ---- devices must match, and tensors and modules move between them ----------------------------


def test_mixed_devices_raise_naming_both(cp):
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((1, 2, 5, 5)), rng.standard_normal((3, 2, 3, 3))
    for call in (
        lambda: F.conv2d(Tensor(x), Tensor(cp.asarray(w))),
        lambda: F.conv_transpose2d(Tensor(cp.asarray(x)), np.ones((2, 3, 2, 2))),
        lambda: F.cross_entropy(Tensor(cp.asarray(x)), np.zeros((1, 5, 5), dtype=np.int64)),
        lambda: F.max_unpool2d(cp.asarray(x), np.zeros((1, 2, 5, 5), dtype=np.int64), 2),
        lambda: Tensor(x) + Tensor(cp.asarray(x)),
    ):
        with pytest.raises(ValueError, match="device") as info:
            call()
        assert "'cpu'" in str(info.value) and "'cuda'" in str(info.value), str(info.value)


def test_tensor_moves_between_devices_with_gradients(cp):
    a = Tensor(randn((2, 3), np.float64), requires_grad=True)
    b = a.to("cuda")
    assert b.device == "cuda" and isinstance(b.data, cp.ndarray)
    c = (b * 3.0).to("cpu")
    assert c.device == "cpu" and isinstance(c.data, np.ndarray)
    np.testing.assert_array_equal(c.data, a.data * 3.0)
    c.sum().backward()
    assert isinstance(a.grad, np.ndarray)
    np.testing.assert_array_equal(a.grad, np.full((2, 3), 3.0))


def test_module_moves_to_cuda_and_back(cp):
    """FCN-8s with the Caffe input preprocessing (a fixed layer, not a parameter)."""
    model = build_model("fcn8s", 3, widths=(2, 2, 4, 4, 4), fc_width=8, preprocess=CAFFE_BGR)
    x = randn((1, 3, 32, 32), np.float32)
    y_cpu = model(Tensor(x)).numpy()
    assert model.to("cuda") is model
    assert all(isinstance(p.data, cp.ndarray) for p in model.parameters())
    y = model(Tensor(cp.asarray(x)))  # (1, 3, 32, 32)
    assert y.device == "cuda"
    np.testing.assert_allclose(y.numpy(), y_cpu, **TOL[np.float32])
    y.sum().backward()
    trained = [p for p in model.parameters() if p.requires_grad]
    assert trained and all(isinstance(p.grad, cp.ndarray) for p in trained)
    state = model.state_dict()  # host copies
    assert all(type(v) is np.ndarray for v in state.values())
    model.load_state_dict({k: v * 2 for k, v in state.items()})  # host arrays onto the device
    assert all(isinstance(p.data, cp.ndarray) for p in model.parameters())
    model.to("cpu")
    assert all(type(p.data) is np.ndarray for p in model.parameters())
    assert all(type(p.grad) is np.ndarray for p in trained)
    for name, p in model.named_parameters():
        np.testing.assert_array_equal(p.data, state[name] * 2, err_msg=name)


def test_info_reports_cuda_usable(cp):
    from fcn_scratch.commands import info

    cuda = info.cuda_backend()
    assert cuda["usable"], cuda.get("why")


# ---- training: the same steps on both devices ------------------------------------------------


def sgd_run(cp, device, steps=3, lr=0.1):
    """A few SGD steps of a small FCN-like net (conv, pool, unpool and transposed-conv
    upsampling, crop, skip fusion, loss with ignore) from one seed; returns the losses and
    final weights as numpy."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 12, 12))
    target = rng.integers(0, 4, (2, 12, 12))
    target[:, :2] = 255  # ignored pixels
    shapes = [(8, 3, 3, 3), (8,), (4, 8, 1, 1), (4, 4, 4, 4), (4, 8, 3, 3)]
    params = [Tensor(rng.standard_normal(s) * 0.3, requires_grad=True) for s in shapes]
    if device == "cuda":
        x, target = cp.asarray(x), cp.asarray(target)
        for p in params:
            p.data = cp.asarray(p.data)
    w1, b1, w_score, w_up, w_skip = params
    losses = []
    for _ in range(steps):
        h = F.relu(F.conv2d(x, w1, b1, padding=1))  # (2, 8, 12, 12)
        pooled, idx = F.max_pool2d(h, 2, return_indices=True)  # (2, 8, 6, 6)
        score = F.conv2d(pooled, w_score)  # (2, 4, 6, 6)
        up = F.conv_transpose2d(score, w_up, stride=2)  # (2, 4, 14, 14)
        skip = F.conv2d(F.max_unpool2d(pooled, idx, 2), w_skip, padding=1)  # (2, 4, 12, 12)
        logits = F.crop(up, 1, (12, 12)) + skip
        loss = F.cross_entropy(logits, target)
        for p in params:
            p.grad = None
        loss.backward()
        for p in params:
            p.data = p.data - lr * p.grad
        losses.append(loss.item())
    return np.array(losses), [p.numpy() for p in params]


def test_sgd_steps_match_cpu(cp):
    losses_cpu, params_cpu = sgd_run(cp, "cpu")
    losses_gpu, params_gpu = sgd_run(cp, "cuda")
    assert losses_cpu[-1] < losses_cpu[0]  # it learns
    np.testing.assert_allclose(losses_gpu, losses_cpu, rtol=1e-9)
    for p_gpu, p_cpu in zip(params_gpu, params_cpu, strict=True):
        np.testing.assert_allclose(p_gpu, p_cpu, rtol=1e-8, atol=1e-10)


SMALL = dict(TINY, model="fcn8s", epochs=1, fresh_data=False, out=None)
"""FCN-8s with 4 to 8 channels on 32x32 images, 3 steps of 4 images per epoch."""


def test_trainer_steps_match_cpu(cp):
    """fcn_scratch.train's Trainer: one short epoch (3 steps, then the held-out
    evaluation) on each device, float32, class weights on. (SGD: Adam's step would turn
    rounding-level differences of near-zero gradients into steps of size lr.)"""
    runs = {}
    for device in ("cpu", "cuda"):
        config = TrainConfig(
            **SMALL, optimizer="sgd", lr=0.05, class_weights="median_freq", device=device
        )
        trainer = Trainer(config, progress=False)
        metrics = trainer.fit()
        params = {name: p.numpy() for name, p in trainer.model.named_parameters()}
        runs[device] = (trainer.history["step_loss"], metrics, params)
    (losses_cpu, held_out_cpu, params_cpu), (losses_gpu, held_out_gpu, params_gpu) = runs.values()
    assert len(losses_cpu) == 3
    np.testing.assert_allclose(losses_gpu, losses_cpu, rtol=1e-4)
    np.testing.assert_allclose(held_out_gpu["loss"], held_out_cpu["loss"], rtol=1e-4)
    assert params_gpu.keys() == params_cpu.keys()
    for name in params_cpu:
        np.testing.assert_allclose(
            params_gpu[name], params_cpu[name], rtol=1e-4, atol=1e-6, err_msg=name
        )


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_training_step_reads_back_only_the_loss(cp, optimizer):
    """Forward, loss, backward, optimiser and schedule steps on "cuda": the only
    device-to-host copy is the loss value (a 0-d array) that train_step returns."""
    if not is_standin(cp):
        pytest.skip("counting device-to-host copies needs the CuPy stand-in")
    config = TrainConfig(**SMALL, optimizer=optimizer, class_weights="median_freq", device="cuda")
    trainer = Trainer(config, progress=False)
    x, y = trainer.train_set.get_batch(np.arange(4))
    for _ in range(2):  # Adam allocates its moments in the first step
        cp.transfers.clear()
        loss, grads_ready = trainer.train_step(x, y)
        trainer.optimizer.step()
        trainer.schedule.step()
        assert grads_ready and np.isfinite(loss)
        assert cp.transfers == [("get", ())], cp.transfers


def test_train_command_on_cuda(cp, tmp_path, capsys):
    argv = ["train", *TINY_FLAGS, "--epochs", "1", "--device", "cuda", "--out", str(tmp_path)]
    assert main(argv) == 0, capsys.readouterr().err
    ckpt = load_checkpoint(str(tmp_path / "checkpoint.npz"))
    assert ckpt.config.device == "cuda" and ckpt.epoch == 1
    assert np.isfinite(ckpt.meta["metrics"]["loss"])


def test_checkpoint_saved_on_cuda_loads_and_resumes_on_cpu(cp, tmp_path):
    config = TrainConfig(**{**SMALL, "out": str(tmp_path)}, optimizer="adam", device="cuda")
    trainer = Trainer(config, progress=False)
    trainer.fit()
    ckpt = load_checkpoint(trainer.checkpoint_path)
    assert ckpt.config.device == "cuda"
    model = ckpt.build_model()  # on the CPU
    for name, p in model.named_parameters():
        assert type(p.data) is np.ndarray
        np.testing.assert_array_equal(p.data, dict(trainer.model.named_parameters())[name].numpy())
    resumed = Trainer.resume(trainer.checkpoint_path, progress=False, device="cpu", epochs=2)
    moments = [s["exp_avg"] for s in resumed.optimizer.state]
    assert moments and all(type(m) is np.ndarray for m in moments)
    metrics = resumed.fit()
    assert resumed.epoch == 2 and np.isfinite(metrics["loss"])
    assert all(type(p.data) is np.ndarray for p in resumed.model.parameters())


# ---- evaluation, and the evaluate and predict commands with --device cuda ---------------------


def test_evaluation_on_cuda_reads_back_no_label_map(cp):
    """Per batch only the loss, the ids' ranges and the (K, K) counts leave the device."""
    if not is_standin(cp):
        pytest.skip("counting device-to-host copies needs the CuPy stand-in")
    trainer = Trainer(TrainConfig(**SMALL, device="cuda"), progress=False)
    cm, loss = confusion(trainer.model, trainer.val_set, batch_size=2, device="cuda")
    k = len(trainer.class_names)
    assert np.isfinite(loss) and cm.matrix.sum() > 0
    assert sorted(shape for _, shape in cp.transfers) == [()] * 2 + [(4,)] * 2 + [(k * k,)] * 2


# ---- the evaluate and predict commands with --device cuda -----------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A checkpoint of one short epoch on the CPU."""
    out = tmp_path_factory.mktemp("run")
    Trainer(TrainConfig(**{**SMALL, "out": str(out)}), progress=False).fit()
    return str(out / "checkpoint.npz")


def test_evaluate_command_on_cuda_matches_cpu(cp, checkpoint, tmp_path, capsys):
    results = {}
    for device in ("cpu", "cuda"):
        path = tmp_path / f"{device}.json"
        assert main(["evaluate", checkpoint, "--device", device, "--json", str(path)]) == 0
        results[device] = json.loads(path.read_text())
    # 4 images of 32x32: a single pixel whose argmax flips between devices moves pixel
    # accuracy by 1/4096.
    for key in ("pixel_acc", "mean_acc", "mean_iou", "fw_iou"):
        assert results["cuda"][key] == pytest.approx(results["cpu"][key], abs=1e-3), key
    assert results["cuda"]["loss"] == pytest.approx(results["cpu"]["loss"], rel=1e-4)


def test_predict_command_on_cuda_matches_cpu(cp, checkpoint, tmp_path):
    image = tmp_path / "in.png"
    rgb = np.random.default_rng(0).integers(0, 255, size=(37, 45, 3), dtype=np.uint8)
    matplotlib.image.imsave(image, rgb)
    masks = {}
    for device in ("cpu", "cuda"):
        out, mask = tmp_path / f"{device}.png", tmp_path / f"{device}_mask.png"
        argv = ["predict", checkpoint, str(image), "-o", str(out), "--mask", str(mask)]
        assert main([*argv, "--device", device]) == 0
        masks[device] = matplotlib.image.imread(mask)
    assert masks["cuda"].shape[:2] == (37, 45)
    # A few pixels may flip between devices where two classes' logits nearly tie.
    differ = np.any(masks["cuda"] != masks["cpu"], axis=-1).mean()
    assert differ <= 0.01, f"{differ:.1%} of the pixels differ"


def test_batchnorm_module_on_cuda_matches_cpu(cp):
    """BatchNorm2d moved to the device: buffers move, update there, and match the CPU's."""
    from fcn_scratch import nn

    rng = np.random.default_rng(0)
    x, dy = rng.standard_normal((2, 3, 5, 4)), rng.standard_normal((2, 3, 5, 4))
    runs = {}
    for device in ("cpu", "cuda"):
        bn = nn.BatchNorm2d(3, dtype=np.float64).to(device)
        assert all(isinstance(b, cp.ndarray) == (device == "cuda") for b in bn.buffers())
        xt = Tensor(x, requires_grad=True)
        y = bn(xt.to(device))
        y.backward(cp.asarray(dy) if device == "cuda" else dy)
        bn.eval()
        z = bn(Tensor(x).to(device))
        dweight = Tensor(bn.weight.grad).numpy()
        runs[device] = [y.numpy(), z.numpy(), xt.grad, dweight, *bn.state_dict().values()]
    for a, b in zip(runs["cpu"], runs["cuda"], strict=True):
        np.testing.assert_allclose(b, a, **TOL[np.float64])


@pytest.mark.parametrize("kind", ["SGD", "AdamW"])
def test_optimiser_groups_on_cuda_match_cpu(cp, kind):
    """Parameter groups, in-place updates and a warm-up schedule on device arrays."""
    from fcn_scratch import optim

    rng = np.random.default_rng(0)
    start = [rng.standard_normal(s) for s in [(3, 2, 3, 3), (3,)]]
    grads = [[rng.standard_normal(a.shape) for a in start] for _ in range(3)]
    results = {}
    for device in ("cpu", "cuda"):
        params = [Tensor(cp.asarray(a) if device == "cuda" else a.copy(), requires_grad=True)
                  for a in start]  # fmt: skip
        groups = [{"params": params[:1]}, {"params": params[1:], "lr": 0.02, "weight_decay": 0}]
        extra = {"momentum": 0.9, "nesterov": True} if kind == "SGD" else {}
        opt = getattr(optim, kind)(groups, lr=0.01, weight_decay=0.1, **extra)
        schedule = optim.PolySchedule(opt, total_steps=5, warmup_steps=1)
        for step in grads:
            for p, g in zip(params, step, strict=True):
                p.grad = cp.asarray(g) if device == "cuda" else g
            opt.step()
            schedule.step()
        results[device] = [p.numpy() for p in params]
    for a, b in zip(results["cpu"], results["cuda"], strict=True):
        np.testing.assert_allclose(b, a, **TOL[np.float64])
