"""Batch normalisation: the compact backward against the naive chain rule, torch parity of
values, gradients and running statistics, BatchNorm2d's buffers, and bad input."""

import numpy as np
import pytest

from fcn_scratch import Tensor, nn
from fcn_scratch import functional as F
from fcn_scratch.ops.batchnorm import batch_norm_backward, batch_norm_forward

TOL = {np.float32: dict(rtol=1e-5, atol=1e-5), np.float64: dict(rtol=1e-10, atol=1e-10)}


def naive_backward(dy, x, gamma, eps):
    """The chain rule one node at a time (CS231n's staged graph), training mode."""
    axes = (0, 2, 3)
    M = x.size // x.shape[1]
    b = (1, -1, 1, 1)
    mu = x.mean(axis=axes)
    xmu = x - mu.reshape(b)
    var = (xmu**2).mean(axis=axes)
    sqrtvar = np.sqrt(var + eps)
    ivar = 1 / sqrtvar
    xhat = xmu * ivar.reshape(b)
    dgamma = (dy * xhat).sum(axis=axes)
    dbeta = dy.sum(axis=axes)
    dxhat = dy * gamma.reshape(b)
    divar = (dxhat * xmu).sum(axis=axes)
    dxmu1 = dxhat * ivar.reshape(b)
    dsqrtvar = -divar / sqrtvar**2
    dvar = 0.5 * dsqrtvar / sqrtvar
    dsq = np.ones_like(x) * (dvar / M).reshape(b)
    dxmu2 = 2 * xmu * dsq
    dx1 = dxmu1 + dxmu2
    dmu = -dx1.sum(axis=axes)
    dx2 = np.ones_like(x) * (dmu / M).reshape(b)
    return dx1 + dx2, dgamma, dbeta


def test_compact_backward_matches_naive_chain_rule(rng):
    x = rng.standard_normal((3, 4, 5, 6)) * 2 + 1
    gamma, beta = rng.uniform(0.5, 2, 4), rng.standard_normal(4)
    dy = rng.standard_normal(x.shape)
    _, ctx = batch_norm_forward(x, None, None, gamma, beta, True, 0.1, 1e-5)
    for ours, naive in zip(batch_norm_backward(dy, ctx), naive_backward(dy, x, gamma, 1e-5)):
        np.testing.assert_allclose(ours, naive, **TOL[np.float64])


def test_training_normalises_each_channel(rng):
    x = rng.standard_normal((4, 3, 5, 5)) * np.array([1, 5, 0.1]).reshape(1, 3, 1, 1) + 7
    y = F.batch_norm(x, None, None, training=True, eps=1e-12).numpy()
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-10)
    np.testing.assert_allclose(y.var(axis=(0, 2, 3)), 1, atol=1e-8)


@pytest.mark.torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "plain"])
def test_module_matches_torch_over_steps(torch, rng, dtype, affine):
    """Three training steps then eval: outputs, gradients, running stats, counter."""
    ours = nn.BatchNorm2d(3, momentum=0.2, affine=affine, dtype=dtype)
    theirs = torch.nn.BatchNorm2d(3, momentum=0.2, affine=affine).to(
        torch.float32 if dtype == np.float32 else torch.float64
    )
    if affine:
        w, b = rng.uniform(0.5, 2, 3).astype(dtype), rng.standard_normal(3).astype(dtype)
        ours.weight.data[...], ours.bias.data[...] = w, b
        with torch.no_grad():
            theirs.weight.copy_(torch.tensor(w))
            theirs.bias.copy_(torch.tensor(b))
    for step in range(3):
        x = (rng.standard_normal((2, 3, 4, 5)) * 3 + step).astype(dtype)
        dy = rng.standard_normal(x.shape).astype(dtype)
        xt = torch.tensor(x, requires_grad=True)
        xo = Tensor(x, requires_grad=True)
        ours.zero_grad()
        theirs.zero_grad()
        y, yt = ours(xo), theirs(xt)
        y.backward(dy)
        yt.backward(torch.tensor(dy))
        np.testing.assert_allclose(y.numpy(), yt.detach().numpy(), **TOL[dtype])
        np.testing.assert_allclose(xo.grad, xt.grad.numpy(), **TOL[dtype])
        if affine:
            np.testing.assert_allclose(ours.weight.grad, theirs.weight.grad.numpy(), **TOL[dtype])
            np.testing.assert_allclose(ours.bias.grad, theirs.bias.grad.numpy(), **TOL[dtype])
    for name in ("running_mean", "running_var"):
        np.testing.assert_allclose(
            getattr(ours, name), getattr(theirs, name).numpy(), **TOL[dtype], err_msg=name
        )
    assert int(ours.num_batches_tracked) == int(theirs.num_batches_tracked) == 3
    ours.eval()
    theirs.eval()
    x = rng.standard_normal((2, 3, 4, 5)).astype(dtype)
    xo, xt = Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    y, yt = ours(xo), theirs(xt)
    y.backward(np.ones(x.shape, dtype))
    yt.backward(torch.ones(x.shape, dtype=yt.dtype))
    np.testing.assert_allclose(y.numpy(), yt.detach().numpy(), **TOL[dtype])
    np.testing.assert_allclose(xo.grad, xt.grad.numpy(), **TOL[dtype])


@pytest.mark.torch
def test_cumulative_average_momentum_none_matches_torch(torch, rng):
    ours, theirs = (
        nn.BatchNorm2d(2, momentum=None, dtype=np.float64),
        torch.nn.BatchNorm2d(2, momentum=None).double(),
    )
    for _ in range(4):
        x = rng.standard_normal((3, 2, 3, 3)) * 2
        ours(Tensor(x))
        theirs(torch.tensor(x))
    np.testing.assert_allclose(ours.running_mean, theirs.running_mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(ours.running_var, theirs.running_var.numpy(), rtol=1e-12)


@pytest.mark.torch
def test_functional_2d_input_matches_torch(torch, rng):
    x = rng.standard_normal((5, 3))
    mean, var = np.zeros(3), np.ones(3)
    mt, vt = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    y = F.batch_norm(x, mean, var, training=True, momentum=0.3)
    yt = torch.nn.functional.batch_norm(torch.tensor(x), mt, vt, training=True, momentum=0.3)
    np.testing.assert_allclose(y.numpy(), yt.numpy(), **TOL[np.float64])
    np.testing.assert_allclose(mean, mt.numpy(), **TOL[np.float64])
    np.testing.assert_allclose(var, vt.numpy(), **TOL[np.float64])


def test_deterministic(rng):
    x = rng.standard_normal((4, 8, 9, 7)).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    runs = []
    for _ in range(2):
        bn = nn.BatchNorm2d(8)
        xt = Tensor(x, requires_grad=True)
        bn(xt).backward(dy)
        runs.append((xt.grad, bn.weight.grad, bn.bias.grad, bn.running_mean, bn.running_var))
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


def test_buffers_state_dict_modes_and_apply():
    net = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, rng=0), nn.BatchNorm2d(3), nn.ReLU())
    assert [n for n, _ in net.named_buffers()] == [
        "1.running_mean",
        "1.running_var",
        "1.num_batches_tracked",
    ]
    assert [n for n, _ in net.named_parameters()] == ["0.weight", "0.bias", "1.weight", "1.bias"]
    assert len(list(net.buffers())) == 3
    net(Tensor(np.random.default_rng(1).standard_normal((2, 2, 5, 5)).astype(np.float32)))
    state = net.state_dict()
    assert state["1.num_batches_tracked"] == 1 and state["1.num_batches_tracked"].dtype == np.int64
    assert not np.allclose(state["1.running_mean"], 0)

    fresh = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, rng=5), nn.BatchNorm2d(3), nn.ReLU())
    bn = fresh[1]
    kept = bn.running_var
    fresh.load_state_dict(state)
    assert bn.running_var is kept  # loaded in place
    np.testing.assert_array_equal(bn.running_var, state["1.running_var"])
    assert int(bn.num_batches_tracked) == 1

    x = Tensor(np.ones((1, 2, 4, 4), np.float32))
    fresh.eval()
    before = bn.running_mean.copy()
    fresh(x)
    np.testing.assert_array_equal(bn.running_mean, before)  # eval does not update
    with pytest.raises(ValueError, match="missing keys \\['1.running_var'\\]"):
        fresh.load_state_dict({k: v for k, v in state.items() if k != "1.running_var"})

    seen = []
    net.apply(lambda m: seen.append(type(m).__name__))
    assert seen == ["Conv2d", "BatchNorm2d", "ReLU", "Sequential"]
    net.apply(lambda m: m.reset_running_stats() if isinstance(m, nn.BatchNorm2d) else None)
    assert int(net[1].num_batches_tracked) == 0 and (net[1].running_var == 1).all()


def test_checkpoint_keeps_buffers(tmp_path):
    """A run of the unpooling model (batch norm throughout) saves its running statistics;
    the model rebuilt from the checkpoint has them, and evaluates the same."""
    from fcn_scratch.train import TrainConfig, Trainer, evaluate, load_checkpoint

    config = TrainConfig(
        model="unpool", widths=(4, 4, 8, 8, 8), batch_size=4, train_size=12, val_size=4,
        image_size=32, epochs=1, out=str(tmp_path),
    )  # fmt: skip
    trainer = Trainer(config, progress=False)
    trainer.fit()
    rebuilt = load_checkpoint(str(tmp_path / "checkpoint.npz")).build_model()
    ours = dict(trainer.model.named_buffers())
    # 3 per BatchNorm2d, one per conv: 4 down (three stages of 1, 1, 2), fc6, fc7, 4 up
    assert len(ours) == 3 * (4 + 2 + 4)
    for name, value in rebuilt.named_buffers():
        np.testing.assert_array_equal(value, ours[name], err_msg=name)
    assert int(ours["encoder.conv1.1.num_batches_tracked"]) == 3  # 12 images, batch 4
    assert evaluate(rebuilt, trainer.val_set) == evaluate(trainer.model, trainer.val_set)


def test_bad_input():
    bn = nn.BatchNorm2d(4)
    with pytest.raises(ValueError, match=r"BatchNorm2d: expected input \(N, 4, H, W\), got shape"):
        bn(Tensor(np.zeros((2, 3, 5, 5), np.float32)))
    x = np.zeros((2, 3, 4, 4), np.float32)
    with pytest.raises(ValueError, match=r"batch_norm: running_mean must have shape \(3,\)"):
        F.batch_norm(x, np.zeros(4, np.float32), np.ones(4, np.float32))
    with pytest.raises(TypeError, match="batch_norm: running_var must have x's dtype float32"):
        F.batch_norm(x, np.zeros(3, np.float32), np.ones(3))
    with pytest.raises(ValueError, match="evaluation .* needs running_mean"):
        F.batch_norm(x, None, None)
    with pytest.raises(ValueError, match="more than one value per channel"):
        F.batch_norm(np.zeros((1, 3, 1, 1), np.float32), None, None, training=True)
    with pytest.raises(TypeError, match="batch_norm: x must be float32 or float64"):
        F.batch_norm(np.zeros((2, 3, 2, 2), np.int64), None, None, training=True)
    with pytest.raises(ValueError, match="BatchNorm2d: num_features must be a positive int"):
        nn.BatchNorm2d(0)
    with pytest.raises(ValueError, match="BatchNorm2d: momentum must be in"):
        nn.BatchNorm2d(3, momentum=1.5)
    with pytest.raises(ValueError, match="'1.running_mean' expected shape \\(3,\\), got \\(4,\\)"):
        nn.Sequential(nn.ReLU(), nn.BatchNorm2d(3)).load_state_dict(
            {
                "1.weight": np.ones(3, np.float32),
                "1.bias": np.zeros(3, np.float32),
                "1.running_mean": np.zeros(4, np.float32),
                "1.running_var": np.ones(3, np.float32),
                "1.num_batches_tracked": np.zeros((), np.int64),
            }
        )


def test_only_registered_arrays_are_buffers():
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.constant = np.ones(2)  # a plain attribute: not saved
            self.register_buffer("count", np.zeros((), np.int64))

    m = Scaled()
    assert list(m.state_dict()) == ["count"] and [n for n, _ in m.named_buffers()] == ["count"]
    with pytest.raises(TypeError, match="register_buffer: 'count' must be a numpy or cupy array"):
        m.register_buffer("count", 3)
