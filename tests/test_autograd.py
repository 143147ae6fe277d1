"""The Tensor and the functional API: graph mechanics, dtypes, layouts, determinism and
the conv/conv-transpose adjoint identity."""

import numpy as np
import pytest

from fcn_scratch import Tensor
from fcn_scratch import functional as F
from fcn_scratch.gradcheck_cases import shuffled_linspace
from fcn_scratch.ops import conv


def small_net(x, w1, w2, wt):
    """conv -> relu -> pool (indices) -> unpool -> conv-transpose -> crop + skip -> loss."""
    h = F.relu(F.conv2d(x, w1, padding=1))
    p, idx = F.max_pool2d(h, 2, return_indices=True)
    u = F.max_unpool2d(F.conv2d(p, w2, padding=1), idx, 2, output_size=h.shape[2:])
    up = F.conv_transpose2d(p, wt, stride=2, padding=1)
    fused = u + F.crop(up, (0, 0), u.shape[2:])
    target = np.arange(fused.shape[0] * 8 * 8).reshape(-1, 8, 8) % fused.shape[1]
    return F.cross_entropy(fused, target)


def net_inputs(rng, dtype):
    return [
        rng.standard_normal((2, 3, 8, 8)).astype(dtype),
        rng.standard_normal((4, 3, 3, 3)).astype(dtype) * 0.3,
        rng.standard_normal((4, 4, 3, 3)).astype(dtype) * 0.3,
        rng.standard_normal((4, 4, 4, 4)).astype(dtype) * 0.3,
    ]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_preserved_through_forward_and_backward(rng, dtype):
    ts = [Tensor(a, requires_grad=True) for a in net_inputs(rng, dtype)]
    loss = small_net(*ts)
    assert loss.dtype == dtype
    loss.backward()
    assert all(t.grad.dtype == dtype and t.grad.shape == t.shape for t in ts)


def test_backward_is_bitwise_deterministic(rng):
    arrays = net_inputs(rng, np.float32)
    runs = []
    for _ in range(2):
        ts = [Tensor(a, requires_grad=True) for a in arrays]
        loss = small_net(*ts)
        loss.backward()
        runs.append([loss.numpy()] + [t.grad for t in ts])
    for a, b in zip(*runs):
        assert np.array_equal(a, b)


def test_non_contiguous_inputs_match_contiguous(rng):
    x = rng.standard_normal((3, 8, 9, 2)).transpose(0, 3, 1, 2)  # (3, 2, 8, 9), transposed
    w = rng.standard_normal((3, 2, 3, 3))[:, :, ::-1, :]  # (3, 2, 3, 3), reversed rows
    wt = rng.standard_normal((2, 4, 4, 4))[:, ::-1]  # (2, 4, 4, 4), conv-transpose weight
    assert not (x.flags.c_contiguous or w.flags.c_contiguous or wt.flags.c_contiguous)
    for fn, args in [
        (lambda x, w: F.conv2d(x, w, padding=1), (x, w)),
        (lambda x, w: F.conv_transpose2d(x, w, stride=2), (x, wt)),
        (lambda x: F.max_pool2d(x, 3, 2, 1, ceil_mode=True), (x,)),
        (lambda x: F.crop(F.relu(x), (1, 1), (4, 4)), (x,)),
    ]:
        contiguous = [np.ascontiguousarray(a) for a in args]
        np.testing.assert_array_equal(fn(*args).numpy(), fn(*contiguous).numpy())


@pytest.mark.parametrize(
    "stride,padding,dilation", [(1, 0, 1), (2, 1, 1), (3, 2, 2), ((2, 1), (0, 1), (1, 2))]
)
def test_conv_transpose_is_the_adjoint_of_conv(rng, stride, padding, dilation):
    """<conv2d(x), y> = <x, conv_transpose2d(y)> with the same weight."""
    x = rng.standard_normal((2, 3, 9, 8))
    w = rng.standard_normal((4, 3, 3, 3))
    y_shape = conv.conv2d_forward(x, w, None, stride, padding, dilation)[0].shape
    y = rng.standard_normal(y_shape)
    cx, _ = conv.conv2d_forward(x, w, None, stride, padding, dilation)
    out_pad = tuple(
        int(v)
        for v in np.subtract(
            x.shape[2:],
            conv.conv_transpose2d_forward(y, w, None, stride, padding, 0, dilation)[0].shape[2:],
        )
    )
    ty, _ = conv.conv_transpose2d_forward(y, w, None, stride, padding, out_pad, dilation)
    assert ty.shape == x.shape
    np.testing.assert_allclose(np.vdot(cx, y), np.vdot(x, ty), rtol=1e-12)


def test_conv_backward_input_gradient_is_conv_transpose(rng):
    x = rng.standard_normal((2, 3, 8, 8))
    w = rng.standard_normal((4, 3, 4, 4))
    y, ctx = conv.conv2d_forward(x, w, None, 2, 1)
    dy = rng.standard_normal(y.shape)
    dx, _, db = conv.conv2d_backward(dy, ctx)
    assert db is None
    np.testing.assert_allclose(dx, conv.conv_transpose2d_forward(dy, w, None, 2, 1)[0], rtol=1e-12)


@pytest.mark.parametrize("op", ["conv2d", "conv_transpose2d"])
@pytest.mark.parametrize("kernel", [1, 3])
def test_conv_backward_computes_only_the_gradients_asked_for(rng, op, kernel):
    """need_dx / need_dw: what is not needed is None, what is needed is unchanged; through
    autograd, a constant input (an image) gets no dx computed."""
    x = rng.standard_normal((2, 3, 6, 5))
    w = rng.standard_normal((4, 3, kernel, kernel) if op == "conv2d" else (3, 4, kernel, kernel))
    forward = getattr(conv, f"{op}_forward")
    backward = getattr(conv, f"{op}_backward")
    y, ctx = forward(x, w, np.zeros(4))
    dy = rng.standard_normal(y.shape)
    dx, dw, db = backward(dy, ctx)
    no_dx = backward(dy, ctx, need_dx=False)
    no_dw = backward(dy, ctx, need_dw=False)
    assert no_dx[0] is None and no_dw[1] is None
    np.testing.assert_array_equal(no_dx[1], dw)
    np.testing.assert_array_equal(no_dw[0], dx)
    np.testing.assert_array_equal(no_dx[2], db)
    calls = []
    original = backward

    def spy(dy, ctx, need_dx=True, need_dw=True):
        calls.append((need_dx, need_dw))
        return original(dy, ctx, need_dx, need_dw)

    setattr(conv, f"{op}_backward", spy)
    try:
        wt = Tensor(w, requires_grad=True)
        getattr(F, op)(Tensor(x), wt).sum().backward()
    finally:
        setattr(conv, f"{op}_backward", original)
    assert calls and set(calls) == {(False, True)}  # (once per slice where the batch is cut)
    np.testing.assert_allclose(wt.grad, backward(np.ones_like(y), ctx)[1], rtol=1e-12)


def test_unpool_sums_shared_indices_and_is_adjoint_of_its_gradient(rng):
    """Overlapping windows (k3 s1) make pooled cells share an index: unpooling sums them."""
    x = shuffled_linspace(rng, (1, 1, 5, 5))
    _, idx = F.max_pool2d(x, 3, 1, return_indices=True)
    assert len(np.unique(idx.numpy())) < idx.numpy().size  # there are shared indices
    v = rng.standard_normal(idx.shape)
    u = F.max_unpool2d(v, idx, 3, 1).numpy()
    expected = np.zeros(25)
    np.add.at(expected, idx.numpy().ravel(), v.ravel())
    np.testing.assert_allclose(u.ravel(), expected, rtol=1e-12)
    dy = rng.standard_normal(u.shape)
    t = Tensor(v, requires_grad=True)
    F.max_unpool2d(t, idx, 3, 1).backward(dy)
    np.testing.assert_allclose(np.vdot(u, dy), np.vdot(v, t.grad), rtol=1e-12)


def test_grad_accumulates_over_shared_uses_and_calls():
    a = Tensor(np.array([1.0, -2.0, 3.0]), requires_grad=True)
    b = a + a * 2.0  # a used twice: da = 3
    b.sum().backward()
    np.testing.assert_array_equal(a.grad, [3.0, 3.0, 3.0])
    (a * 0.5).mean().backward()  # accumulates, as in PyTorch
    np.testing.assert_allclose(a.grad, 3.0 + 0.5 / 3)


def test_tensor_basics(rng):
    data = rng.standard_normal((2, 3)).astype(np.float32)
    t = Tensor(data, requires_grad=True)
    assert t.shape == (2, 3) and t.dtype == np.float32 and t.device == "cpu"
    assert t.to("cpu") is t and t.numpy() is data
    assert not t.detach().requires_grad and t.is_leaf
    y = (2.0 * t).reshape(3, 2).mean()
    assert y.shape == () and not y.is_leaf and "op=mul" in repr(y * 1.0)
    y.backward()
    np.testing.assert_allclose(t.grad, np.full((2, 3), 2 / 6, np.float32))
    assert isinstance(y.item(), float)


def test_constants_get_no_gradient(rng):
    x = Tensor(rng.standard_normal((1, 2, 5, 5)))
    w = Tensor(rng.standard_normal((3, 2, 3, 3)), requires_grad=True)
    F.conv2d(x, w).sum().backward()
    assert x.grad is None and w.grad is not None
    with pytest.raises(RuntimeError, match="does not require grad"):
        F.relu(x).sum().backward()


def test_dropout_is_reproducible_and_identity_in_eval(rng):
    from fcn_scratch import random

    x = Tensor(np.ones((4, 100), np.float32))
    random.manual_seed(3)
    a = F.dropout(x, 0.25).numpy()
    state = random.get_state()
    b = F.dropout(x, 0.25).numpy()
    random.set_state(state)
    np.testing.assert_array_equal(F.dropout(x, 0.25).numpy(), b)
    assert set(np.unique(a)) == {0.0, np.float32(1 / 0.75)}
    assert 0.15 < (a == 0).mean() < 0.35
    assert F.dropout(x, 0.25, training=False) is x


def test_leaves_never_share_a_grad_array():
    a = Tensor(np.ones(3), requires_grad=True)
    b = Tensor(np.ones(3), requires_grad=True)
    (a + b).sum().backward()
    a.grad += 1  # an optimiser may update a grad in place
    np.testing.assert_array_equal(b.grad, np.ones(3))
