"""Every op's gradients against central differences in float64 (the grid of
fcn_scratch.gradcheck_cases, the same one ``fcn-scratch gradcheck`` prints), and gradcheck itself."""

import numpy as np
import pytest

from fcn_scratch import Tensor, gradcheck
from fcn_scratch.commands import gradcheck as gradcheck_command
from fcn_scratch.gradcheck_cases import cases, run_case


@pytest.mark.parametrize("case", cases(), ids=lambda c: c.name)
def test_op_gradients(case):
    result = run_case(case)
    assert result.passed, f"{case.name}: max abs err {result.max_abs_err:.2e}"
    assert result.checked > 0


def test_gradcheck_catches_a_wrong_gradient():
    def wrong_square(x):  # forward x**2, backward claims 3x
        return Tensor.from_op(x.data**2, (x,), lambda dy: (3 * x.data * dy,), "wrong_square")

    result = gradcheck(wrong_square, [np.linspace(0.5, 1.5, 6)])
    assert not result.passed
    assert result.max_rel_err > 0.3


def test_gradcheck_random_directions_for_large_inputs(rng):
    def wrong_scale(x):  # backward off by 1% : caught along random directions
        return Tensor.from_op(2 * x.data, (x,), lambda dy: (2.02 * dy,), "wrong_scale")

    x = rng.standard_normal(1000)
    assert not gradcheck(wrong_scale, [x], max_full=10, directions=3).passed
    result = gradcheck(lambda t: t * 2.0, [x], max_full=10, directions=3)
    assert result.passed and result.checked == 3


def test_gradcheck_command_prints_table_and_exits_zero(capsys):
    class Args:
        op = "crop"
        seed = 0

    assert gradcheck_command.run(Args()) == 0
    out = capsys.readouterr().out
    assert "| crop" in out and "pass" in out and "1 passed, 0 failed" in out
