"""The gradient-check suite behind ``fcn-scratch gradcheck`` and the test suite.

Each case is an op, a readable configuration, and a function that builds float64 inputs;
``run_case`` checks the op's gradients by central differences. The grid covers stride
1-3, padding 0-2, kernel 1-5, dilation 1-2, odd sizes, batch 1, ceil_mode,
output_padding, ignore_index and class weights, and batch norm in training and
evaluation. Pooling inputs have no ties (a shuffled linspace), or the numerical gradient
would be meaningless.
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from fcn_scratch import functional as F
from fcn_scratch.autograd import Tensor
from fcn_scratch.device import array_module
from fcn_scratch.gradcheck import GradcheckResult, gradcheck


@dataclass(frozen=True)
class Case:
    op: str
    config: dict
    fn: Callable  # (*tensors) -> Tensor
    make_inputs: Callable  # (rng) -> list of arrays (float arrays are checked)

    @property
    def name(self) -> str:
        return f"{self.op}[" + ",".join(f"{k}={v}" for k, v in self.config.items()) + "]"


def shuffled_linspace(rng: np.random.Generator, shape, dtype=np.float64) -> np.ndarray:
    """Distinct values, well apart, in random order: max pooling without ties."""
    n = int(np.prod(shape))
    return rng.permutation(np.linspace(-1, 1, n, dtype=dtype)).reshape(shape)


def _conv_case(n, c_in, c_out, size, k, s, p, d):
    cfg = dict(x=(n, c_in, *size), k=k, s=s, p=p, d=d)
    return Case(
        "conv2d",
        cfg,
        lambda x, w, b: F.conv2d(x, w, b, stride=s, padding=p, dilation=d),
        lambda rng: [
            rng.standard_normal((n, c_in, *size)),
            rng.standard_normal((c_out, c_in, k, k)),
            rng.standard_normal(c_out),
        ],
    )


def _conv_t_case(n, c_in, c_out, size, k, s, p, out_pad, d):
    cfg = dict(x=(n, c_in, *size), k=k, s=s, p=p, out_pad=out_pad, d=d)
    return Case(
        "conv_transpose2d",
        cfg,
        lambda x, w, b: F.conv_transpose2d(
            x, w, b, stride=s, padding=p, output_padding=out_pad, dilation=d
        ),
        lambda rng: [
            rng.standard_normal((n, c_in, *size)),
            rng.standard_normal((c_in, c_out, k, k)),
            rng.standard_normal(c_out),
        ],
    )


def _pool_case(n, c, size, k, s, p, d, ceil):
    cfg = dict(x=(n, c, *size), k=k, s=s, p=p, d=d, ceil_mode=ceil)
    return Case(
        "max_pool2d",
        cfg,
        lambda x: F.max_pool2d(x, k, s, p, d, ceil_mode=ceil),
        lambda rng: [shuffled_linspace(rng, (n, c, *size))],
    )


def _unpool_case(n, c, size, k, s):
    cfg = dict(x=(n, c, *size), k=k, s=s)

    def make_inputs(rng):
        _, idx = F.max_pool2d(shuffled_linspace(rng, (n, c, *size)), k, s, return_indices=True)
        return [rng.standard_normal(idx.shape), idx.data]

    return Case(
        "max_unpool2d",
        cfg,
        lambda x, idx: F.max_unpool2d(x, idx, k, s, output_size=size),
        make_inputs,
    )


def _ce_case(n, k, size, weighted, ignore):
    cfg = dict(logits=(n, k, *size), weight=weighted, ignore=ignore)

    def make_inputs(rng):
        target = rng.integers(0, k, (n, *size))
        if ignore:
            target[rng.random(target.shape) < 0.3] = 255
        inputs = [rng.standard_normal((n, k, *size)), target]
        # Class weights are a constant: a Tensor without requires_grad is not checked.
        return inputs + ([Tensor(rng.uniform(0.5, 2.0, k))] if weighted else [])

    return Case(
        "cross_entropy",
        cfg,
        lambda logits, target, *w: F.cross_entropy(logits, target, *w, ignore_index=255),
        make_inputs,
    )


def _bn_case(shape, training, affine):
    cfg = dict(x=shape, training=training, affine=affine)
    c = shape[1]
    running = np.linspace(-0.5, 0.5, c), np.linspace(0.5, 2.0, c)  # eval's constants

    def fn(x, *wb):
        xp = array_module(x.data)  # the running arrays on x's device, in x's dtype
        mean, var = (None, None) if training else (xp.asarray(r, x.dtype) for r in running)
        return F.batch_norm(x, mean, var, *wb, training=training)

    return Case(
        "batch_norm",
        cfg,
        fn,
        lambda rng: (
            [rng.standard_normal(shape)]
            + ([rng.uniform(0.5, 1.5, c), rng.standard_normal(c)] if affine else [])
        ),
    )


def cases() -> list[Case]:
    """The full grid, small enough to check every element of every input."""
    out = []
    for k, s, p, d, size in [
        (1, 1, 0, 1, (5, 4)),
        (3, 1, 1, 1, (5, 7)),
        (3, 2, 1, 1, (7, 6)),
        (3, 3, 2, 1, (8, 7)),
        (5, 1, 2, 1, (6, 5)),
        (3, 1, 2, 2, (7, 7)),
        (2, 2, 0, 2, (9, 8)),
        (4, 3, 1, 1, (9, 10)),
    ]:
        out.append(_conv_case(2, 2, 3, size, k, s, p, d))
    out.append(_conv_case(1, 3, 2, (5, 5), 3, 1, 1, 1))  # batch 1
    # 8 channels on an 8x9 map: Winograd's path on one thread
    out.append(_conv_case(1, 8, 2, (8, 9), 3, 1, 1, 1))
    for k, s, p, out_pad, d, size in [
        (1, 1, 0, 0, 1, (3, 4)),
        (3, 1, 1, 0, 1, (4, 3)),
        (4, 2, 1, 0, 1, (3, 3)),
        (4, 2, 1, 1, 1, (3, 4)),
        (3, 3, 0, 2, 1, (3, 2)),
        (5, 2, 2, 1, 2, (3, 3)),
        (2, 1, 0, 1, 2, (3, 3)),
    ]:
        out.append(_conv_t_case(2, 2, 3, size, k, s, p, out_pad, d))
    out.append(_conv_t_case(1, 3, 2, (2, 3), 4, 2, 1, 0, 1))  # batch 1
    for k, s, p, d, ceil, size in [
        (2, 2, 0, 1, False, (6, 8)),
        (2, 2, 0, 1, True, (7, 5)),
        (3, 2, 1, 1, False, (7, 7)),
        (3, 2, 1, 1, True, (8, 6)),
        (3, 1, 1, 1, False, (5, 5)),
        (5, 3, 2, 1, True, (9, 7)),
        (3, 2, 0, 2, False, (9, 9)),
        (1, 1, 0, 1, False, (3, 3)),
    ]:
        out.append(_pool_case(2, 2, size, k, s, p, d, ceil))
    out.append(_pool_case(1, 1, (5, 5), 2, 1, 0, 1, True))  # batch 1
    for k, s, size in [(2, 2, (6, 8)), (2, 2, (7, 5)), (3, 3, (9, 7)), (3, 2, (7, 7))]:
        out.append(_unpool_case(2, 2, size, k, s))
    for n, weighted, ignore in [
        (2, False, False),
        (2, False, True),
        (2, True, False),
        (2, True, True),
        (1, True, True),
    ]:
        out.append(_ce_case(n, 4, (3, 5), weighted, ignore))
    for shape, training, affine in [
        ((2, 3, 4, 5), True, True),
        ((2, 3, 4, 5), True, False),
        ((1, 2, 3, 1), True, True),
        ((2, 3, 4, 5), False, True),
    ]:
        out.append(_bn_case(shape, training, affine))
    out += [
        Case(
            "relu", dict(x=(2, 3, 4, 5)), F.relu, lambda rng: [shuffled_linspace(rng, (2, 3, 4, 5))]
        ),
        Case(
            "dropout",
            dict(x=(2, 3, 4, 5), p=0.3),
            lambda x: F.dropout(x, 0.3, generator=np.random.default_rng(1)),
            lambda rng: [rng.standard_normal((2, 3, 4, 5))],
        ),
        Case(
            "crop",
            dict(x=(2, 2, 7, 6), offset=(2, 1), size=(4, 3)),
            lambda x: F.crop(x, (2, 1), (4, 3)),
            lambda rng: [rng.standard_normal((2, 2, 7, 6))],
        ),
        Case(
            "skip fusion",
            dict(a=(2, 2, 3, 3), b=(2, 2, 5, 5), crop=1),
            lambda a, b: (a + F.crop(b, 1, (3, 3)) * 0.5).mean(),
            lambda rng: [rng.standard_normal((2, 2, 3, 3)), rng.standard_normal((2, 2, 5, 5))],
        ),
    ]
    return out


def run_case(case: Case, seed: int = 0) -> GradcheckResult:
    """Build the case's inputs with ``seed`` and gradcheck its op."""
    return gradcheck(case.fn, case.make_inputs(np.random.default_rng(seed)))
