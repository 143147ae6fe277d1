"""Forward and gradient parity with torch.nn.functional, in float64 (torch is the oracle)."""

import numpy as np
import pytest

from fcn_scratch import Tensor
from fcn_scratch import functional as F
from fcn_scratch.gradcheck_cases import shuffled_linspace

pytestmark = pytest.mark.torch
TOL = dict(rtol=1e-10, atol=1e-10)


def both(fn_ours, fn_torch, arrays, torch, grad_of=None):
    """Run both, backprop the same random dy, compare outputs and input gradients."""
    grad_of = range(len(arrays)) if grad_of is None else grad_of
    ours = [Tensor(a, requires_grad=i in grad_of) for i, a in enumerate(arrays)]
    theirs = [torch.tensor(a, requires_grad=i in grad_of) for i, a in enumerate(arrays)]
    y, yt = fn_ours(*ours), fn_torch(*theirs)
    np.testing.assert_allclose(y.numpy(), yt.detach().numpy(), **TOL)
    dy = np.random.default_rng(1).standard_normal(y.shape)
    y.backward(dy)
    yt.backward(torch.tensor(dy))
    for i in grad_of:
        np.testing.assert_allclose(
            ours[i].grad, theirs[i].grad.numpy(), **TOL, err_msg=f"input {i}"
        )


CONV = [  # (x shape, c_out, k, stride, padding, dilation)
    ((2, 3, 9, 8), 4, 3, 1, 1, 1),
    ((1, 2, 11, 7), 3, 5, 2, 2, 1),
    ((2, 2, 10, 10), 2, 3, (3, 2), (0, 2), (2, 1)),
    ((2, 4, 6, 6), 5, 1, 1, 0, 1),
    # output maps of at most conv.ONE_GEMM_PIXELS pixels: one GEMM over the batch
    ((3, 4, 4, 4), 5, 3, 1, 1, 1),
    ((2, 3, 2, 3), 4, 3, 1, 1, 1),
    ((3, 4, 2, 2), 5, 1, 1, 0, 1),
    ((2, 2, 7, 7), 3, 3, 2, 0, 1),
]


@pytest.mark.parametrize("shape,c_out,k,s,p,d", CONV, ids=str)
def test_conv2d(torch, rng, shape, c_out, k, s, p, d):
    x = rng.standard_normal(shape)
    w = rng.standard_normal((c_out, shape[1], k, k))
    b = rng.standard_normal(c_out)
    both(
        lambda x, w, b: F.conv2d(x, w, b, stride=s, padding=p, dilation=d),
        lambda x, w, b: torch.nn.functional.conv2d(x, w, b, stride=s, padding=p, dilation=d),
        [x, w, b],
        torch,
    )


CONV_T = [  # (x shape, c_out, k, stride, padding, output_padding, dilation)
    ((2, 3, 4, 5), 2, 4, 2, 1, 0, 1),
    ((1, 2, 3, 3), 3, 16, 8, 4, 0, 1),
    ((2, 2, 3, 4), 2, 3, 3, 1, (2, 1), 1),
    ((2, 2, 4, 4), 3, 3, 2, 2, 1, 2),
]


@pytest.mark.parametrize("shape,c_out,k,s,p,out_pad,d", CONV_T, ids=str)
def test_conv_transpose2d(torch, rng, shape, c_out, k, s, p, out_pad, d):
    x = rng.standard_normal(shape)
    w = rng.standard_normal((shape[1], c_out, k, k))
    b = rng.standard_normal(c_out)
    kw = dict(stride=s, padding=p, output_padding=out_pad, dilation=d)
    both(
        lambda x, w, b: F.conv_transpose2d(x, w, b, **kw),
        lambda x, w, b: torch.nn.functional.conv_transpose2d(x, w, b, **kw),
        [x, w, b],
        torch,
    )


POOL = [  # (x shape, k, stride, padding, dilation, ceil_mode)
    ((2, 3, 8, 8), 2, 2, 0, 1, False),
    ((2, 2, 7, 9), 2, 2, 0, 1, True),
    ((1, 2, 9, 8), 3, 2, 1, 1, True),
    ((2, 2, 10, 9), 3, (2, 1), (1, 0), (2, 1), False),
    ((2, 1, 6, 6), 3, 3, 1, 1, True),
]


@pytest.mark.parametrize("shape,k,s,p,d,ceil", POOL, ids=str)
def test_max_pool2d_values_indices_and_gradient(torch, rng, shape, k, s, p, d, ceil):
    x = shuffled_linspace(rng, shape)
    kw = dict(kernel_size=k, stride=s, padding=p, dilation=d, ceil_mode=ceil)
    _, idx = F.max_pool2d(x, return_indices=True, **kw)
    _, idx_t = torch.nn.functional.max_pool2d(torch.tensor(x), return_indices=True, **kw)
    np.testing.assert_array_equal(idx.numpy(), idx_t.numpy())
    both(
        lambda x: F.max_pool2d(x, **kw),
        lambda x: torch.nn.functional.max_pool2d(x, **kw),
        [x],
        torch,
    )


@pytest.mark.parametrize(
    "shape,k,s", [((2, 3, 8, 8), 2, 2), ((1, 2, 9, 7), 3, 3), ((2, 2, 7, 7), 2, 2)]
)
def test_max_unpool2d(torch, rng, shape, k, s):
    """Non-overlapping windows: every index is distinct, so torch's overwrite and our sum agree."""
    _, idx = F.max_pool2d(shuffled_linspace(rng, shape), k, s, return_indices=True)
    v = rng.standard_normal(idx.shape)
    size = shape[2:]
    both(
        lambda v: F.max_unpool2d(v, idx, k, s, output_size=size),
        lambda v: torch.nn.functional.max_unpool2d(
            v, torch.tensor(idx.numpy()), k, s, output_size=size
        ),
        [v],
        torch,
    )


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_cross_entropy(torch, rng, reduction, weighted):
    logits = rng.standard_normal((2, 5, 4, 3))
    target = rng.integers(0, 5, (2, 4, 3))
    target[0, 1] = 255
    w = rng.uniform(0.5, 2, 5) if weighted else None
    wt = None if w is None else torch.tensor(w)
    both(
        lambda z: F.cross_entropy(z, target, w, ignore_index=255, reduction=reduction),
        lambda z: torch.nn.functional.cross_entropy(
            z, torch.tensor(target), wt, ignore_index=255, reduction=reduction
        ),
        [logits],
        torch,
    )


def test_relu_and_crop(torch, rng):
    x = shuffled_linspace(rng, (2, 3, 6, 5))
    both(
        lambda x: F.crop(F.relu(x), (1, 2), (4, 3)),
        lambda x: torch.relu(x)[..., 1:5, 2:5],
        [x],
        torch,
    )
