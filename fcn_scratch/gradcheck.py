"""Check analytic gradients against central differences, in float64.

For ``out = fn(*inputs)`` and a fixed random ``r`` of out's shape, the scalar
``L = <out, r>`` has gradient ``dL/dx`` = what ``out.backward(r)`` leaves in ``x.grad``.
The numerical estimate of its derivative along a direction ``v`` is

    (L(x + eps*v) - L(x - eps*v)) / (2*eps)          (error O(eps^2))

Small inputs are checked along every basis direction (every element); larger ones along
``directions`` random unit directions, compared with ``<dL/dx, v>``.
"""

from dataclasses import dataclass, field

import numpy as np

from fcn_scratch.autograd import Tensor
from fcn_scratch.device import to_device


@dataclass
class GradcheckResult:
    """max_abs_err / max_rel_err over all checked inputs and directions."""

    passed: bool
    max_abs_err: float
    max_rel_err: float
    checked: int  # number of directional derivatives compared
    details: list = field(default_factory=list)  # per input: (index, abs err, rel err)

    def __bool__(self) -> bool:
        return self.passed


def gradcheck(
    fn,
    inputs,
    eps: float = 1e-6,
    atol: float = 1e-6,
    rtol: float = 1e-4,
    max_full: int = 256,
    directions: int = 8,
    seed: int = 0,
) -> GradcheckResult:
    """Compare fn's gradients with central differences.

    fn: takes Tensors (as many as ``inputs``) and returns a Tensor.
    inputs: Tensors or arrays; those with requires_grad (arrays: every float array) are
    checked. They are copied to float64; fn must be deterministic.
    An input with at most ``max_full`` elements is checked element by element, a larger
    one along ``directions`` random directions. A derivative passes when
    ``|analytic - numeric| <= atol + rtol * |numeric|``.
    """
    rng = np.random.default_rng(seed)
    tensors = []
    for x in inputs:
        if not isinstance(x, Tensor):
            x = Tensor(x, requires_grad=x.dtype in (np.float32, np.float64))
        data = x.data.astype(np.float64) if x.requires_grad else x.data
        tensors.append(Tensor(data, requires_grad=x.requires_grad))

    out = fn(*tensors)
    r = rng.standard_normal(out.shape)
    out.backward(to_device(r, out.device))

    def objective() -> float:
        return float((fn(*tensors).numpy() * r).sum())

    passed, worst_abs, worst_rel, checked, details = True, 0.0, 0.0, 0, []
    for i, t in enumerate(tensors):
        if not t.requires_grad:
            continue
        n = t.data.size
        analytic = np.zeros(n) if t.grad is None else to_device(t.grad, "cpu").ravel()
        if n <= max_full:
            dirs = (np.eye(1, n, k).ravel() for k in range(n))
        else:
            dirs = (v / np.linalg.norm(v) for v in rng.standard_normal((directions, n)))
        original = t.data.copy()
        abs_err = rel_err = 0.0
        for v in dirs:
            step = to_device((eps * v).reshape(t.shape), t.device)
            t.data = original + step
            plus = objective()
            t.data = original - step
            minus = objective()
            t.data = original
            numeric = (plus - minus) / (2 * eps)
            exact = float(analytic @ v)
            err = abs(exact - numeric)
            passed &= err <= atol + rtol * abs(numeric)
            abs_err = max(abs_err, err)
            scale = max(abs(exact), abs(numeric))
            if scale > atol:
                rel_err = max(rel_err, err / scale)
            checked += 1
        details.append((i, abs_err, rel_err))
        worst_abs, worst_rel = max(worst_abs, abs_err), max(worst_rel, rel_err)
    return GradcheckResult(bool(passed), worst_abs, worst_rel, checked, details)
