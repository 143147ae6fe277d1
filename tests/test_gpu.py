"""On a real GPU, through CuPy: the CUDA kernels against the reference, every functional op
against the CPU, gradient checks on cuda, device mix-ups, and a short training run.

Everything here needs CuPy and a visible CUDA device; elsewhere every test skips, saying
which of the two is missing. (Without a GPU, tests/test_cuda_emulation.py runs the same
CUDA C on the CPU.)
"""

import numpy as np
import pytest
from test_kernels import CONV, DTYPES, POOL, randn, shuffled_linspace

from fcn_scratch import Tensor, checks, gradcheck
from fcn_scratch import functional as F
from fcn_scratch.device import DeviceError, import_cupy
from fcn_scratch.kernels import reference as ref

try:
    cp = import_cupy()
    NO_GPU = None
except DeviceError as err:
    cp, NO_GPU = None, str(err)

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(cp is None, reason=f"no GPU here: {NO_GPU}")]

# Op parity between devices: the kernels are bitwise equal, but cuBLAS and NumPy's BLAS
# sum GEMMs in different orders.
TOL = {np.float32: dict(rtol=1e-4, atol=1e-5), np.float64: dict(rtol=1e-10, atol=1e-12)}


def on_cuda(a):
    """A numpy array (or a Tensor's data) copied to the GPU; other values unchanged."""
    if isinstance(a, Tensor):
        return Tensor(cp.asarray(a.data), requires_grad=a.requires_grad)
    return cp.asarray(a) if isinstance(a, np.ndarray) else a


def assert_on_gpu(a, dtype):
    assert isinstance(a, cp.ndarray) and a.dtype == dtype, (type(a), a.dtype)


# ---- kernels: fcn_scratch.kernels.cuda against the reference loops --------------------------


@pytest.fixture(scope="module")
def kcuda():
    from fcn_scratch.kernels import cuda

    return cuda


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k, s, p, d, shape, out", CONV)
def test_im2col_col2im_kernels(kcuda, k, s, p, d, shape, out, dtype):
    """The kernels keep the reference's summation order: equal bit for bit."""
    x = randn(shape, dtype)
    col = kcuda.im2col(cp.asarray(x), k, s, p, d, out)  # (N, C*KH*KW, OH*OW)
    assert_on_gpu(col, dtype)
    np.testing.assert_array_equal(col.get(), ref.im2col(x, k, s, p, d, out))
    dcol = randn(col.shape, dtype, seed=2)
    dx = kcuda.col2im(cp.asarray(dcol), shape[2:], k, s, p, d, out)  # (N, C, H, W)
    assert_on_gpu(dx, dtype)
    np.testing.assert_array_equal(dx.get(), ref.col2im(dcol, shape[2:], k, s, p, d, out))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k, s, p, d, shape, out", POOL)
def test_pooling_kernels(kcuda, k, s, p, d, shape, out, dtype):
    x = shuffled_linspace(shape, dtype)
    y, idx = kcuda.maxpool2d_forward(cp.asarray(x), k, s, p, d, out)  # (N, C, OH, OW)
    y_ref, idx_ref = ref.maxpool2d_forward(x, k, s, p, d, out)
    assert_on_gpu(y, dtype)
    assert_on_gpu(idx, np.int64)
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
def test_kernels_take_non_contiguous_inputs(kcuda, dtype):
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


def test_kernels_are_bitwise_deterministic(kcuda):
    x = cp.asarray(randn((4, 8, 33, 31), np.float32))
    window = ((3, 3), (1, 2), (1, 1), (2, 1), (29, 16))
    runs = []
    for _ in range(2):
        col = kcuda.im2col(x, *window)
        dx = kcuda.col2im(col * 1.5, (33, 31), *window)
        y, idx = kcuda.maxpool2d_forward(x, (3, 3), (1, 1), (1, 1), (1, 1), (33, 31))
        runs.append(
            [a.get().tobytes() for a in (col, dx, kcuda.maxpool2d_backward(y, idx, (33, 31)))]
        )
    assert runs[0] == runs[1]


@pytest.mark.slow
def test_flat_indices_beyond_32_bits(kcuda):
    """col of 2209 x 1024*1024 > 2**31 elements (9 GB in float32): 64-bit flat indices.

    With x all ones, col2im(im2col(x)) counts, per pixel, the (tap, output) pairs that
    read it: an outer product of per-axis counts, exact in float32."""
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

OP_CASES = [c for c in checks.cases() if c.op != "dropout"]  # dropout: its own test below


def run_op(case, arrays, device):
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
    assert y.device == device
    dy = np.asarray(np.random.default_rng(1).standard_normal(y.shape), dtype=y.dtype)
    y.backward(move(dy))
    grads = [t.grad for t in tensors if t.requires_grad]
    assert all(isinstance(g, array_type) for g in grads), [type(g) for g in grads]
    return y.numpy(), [move(g) if device == "cpu" else g.get() for g in grads]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", OP_CASES, ids=lambda c: c.name)
def test_op_matches_cpu(case, dtype):
    arrays = []
    for a in case.make_inputs(np.random.default_rng(0)):  # float64 arrays and Tensors
        if isinstance(a, Tensor):
            arrays.append(Tensor(a.data.astype(dtype)))
        else:
            arrays.append(a.astype(dtype) if a.dtype == np.float64 else a)
    y_cpu, grads_cpu = run_op(case, arrays, "cpu")
    y_gpu, grads_gpu = run_op(case, arrays, "cuda")
    assert y_gpu.dtype == y_cpu.dtype == dtype
    np.testing.assert_allclose(y_gpu, y_cpu, **TOL[dtype])
    for i, (g_gpu, g_cpu) in enumerate(zip(grads_gpu, grads_cpu, strict=True)):
        np.testing.assert_allclose(g_gpu, g_cpu, **TOL[dtype], err_msg=f"gradient {i}")


def test_max_pool_indices_match_cpu_exactly():
    x = shuffled_linspace((2, 3, 9, 8), np.float32)
    _, idx = F.max_pool2d(x, 3, 2, 1, ceil_mode=True, return_indices=True)
    _, idx_gpu = F.max_pool2d(cp.asarray(x), 3, 2, 1, ceil_mode=True, return_indices=True)
    assert idx_gpu.device == "cuda"
    np.testing.assert_array_equal(idx_gpu.numpy(), idx.numpy())


@pytest.mark.parametrize("case", OP_CASES, ids=lambda c: c.name)
def test_op_gradients_on_cuda(case):
    inputs = [on_cuda(a) for a in case.make_inputs(np.random.default_rng(0))]
    result = gradcheck(case.fn, inputs)
    assert result.passed and result.checked > 0, (
        f"{case.name}: max abs err {result.max_abs_err:.2e}, max rel err {result.max_rel_err:.2e}"
    )


def test_dropout_on_cuda_uses_one_mask_both_ways():
    x = Tensor(cp.asarray(randn((4, 5, 6, 7), np.float32)), requires_grad=True)
    y = F.dropout(x, p=0.25, generator=cp.random.default_rng(3))
    kept = y.data != 0
    assert isinstance(y.data, cp.ndarray) and 0.6 < float(kept.mean()) < 0.9
    cp.testing.assert_allclose(y.data[kept], x.data[kept] / 0.75, rtol=1e-6)
    y.backward(cp.ones(y.shape, dtype=cp.float32))
    cp.testing.assert_allclose(x.grad, kept.astype(cp.float32) / 0.75, rtol=1e-6)
    assert F.dropout(x, p=0.25, training=False) is x


# ---- devices must match ---------------------------------------------------------------------


def test_mixed_devices_raise_naming_both():
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


def test_tensor_moves_between_devices_with_gradients():
    a = Tensor(randn((2, 3), np.float64), requires_grad=True)
    b = a.to("cuda")
    assert b.device == "cuda" and isinstance(b.data, cp.ndarray)
    (b * 3.0).sum().backward()
    assert isinstance(a.grad, np.ndarray)
    np.testing.assert_array_equal(a.grad, np.full((2, 3), 3.0))


def test_info_reports_cuda_usable():
    from fcn_scratch.commands import info

    cuda = info.cuda_backend()
    assert cuda["usable"], cuda.get("why")


# ---- a short training run: the same steps on both devices -----------------------------------


def sgd_run(device, steps=5, lr=0.1):
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


def test_sgd_steps_match_cpu():
    losses_cpu, params_cpu = sgd_run("cpu")
    losses_gpu, params_gpu = sgd_run("cuda")
    assert losses_cpu[-1] < losses_cpu[0]  # it learns
    np.testing.assert_allclose(losses_gpu, losses_cpu, rtol=1e-9)
    for p_gpu, p_cpu in zip(params_gpu, params_cpu, strict=True):
        np.testing.assert_allclose(p_gpu, p_cpu, rtol=1e-8, atol=1e-10)


@pytest.mark.slow
def test_training_run_matches_cpu():
    """fcn_scratch.train's Trainer: one short epoch of FCN-8s on each device, float32."""
    from fcn_scratch.train import TrainConfig, Trainer

    fields = dict(
        model="fcn8s", widths=(4, 4, 8, 8, 8), fc_width=16, epochs=1, batch_size=4,
        image_size=32, train_size=12, val_size=4, optimizer="sgd", lr=0.05, out=None,
    )  # fmt: skip
    runs = {}
    for device in ("cpu", "cuda"):
        trainer = Trainer(TrainConfig(**fields, device=device), progress=False)
        metrics = trainer.fit()
        params = {name: p.numpy() for name, p in trainer.model.named_parameters()}
        runs[device] = (trainer.history["step_loss"], metrics["loss"], params)
    (losses_cpu, held_out_cpu, params_cpu), (losses_gpu, held_out_gpu, params_gpu) = runs.values()
    assert len(losses_cpu) == 3
    np.testing.assert_allclose(losses_gpu, losses_cpu, rtol=1e-4)
    np.testing.assert_allclose(held_out_gpu, held_out_cpu, rtol=1e-4)
    assert params_gpu.keys() == params_cpu.keys()
    for name in params_cpu:
        np.testing.assert_allclose(
            params_gpu[name], params_cpu[name], rtol=1e-4, atol=1e-6, err_msg=name
        )
