"""``fcn-scratch bench`` runs end to end (one repeat, one small case) and prints its table;
the ops run on the kernel module that ``kernels.using`` names."""

import re
from types import SimpleNamespace

import numpy as np
import pytest

from fcn_scratch import kernels
from fcn_scratch.cli import main
from fcn_scratch.commands import bench, info
from fcn_scratch.kernels import cpu, numpy_baseline
from fcn_scratch.ops import conv


@pytest.mark.torch
def test_bench_prints_a_row_with_every_column(capsys, torch):
    assert main(["bench", "--repeat", "1", "--threads", "1", "--case", "convT k4"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| convT k4")]
    assert len(rows) == 1
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert len(cells) == 6
    assert all(re.fullmatch(r"\d+\.\d+", c) for c in cells[1:]), cells  # every column timed
    assert f"NumPy's BLAS: {info.numpy_blas()}" in out.splitlines()[0]


def test_bench_refuses_an_unknown_case(capsys):
    assert main(["bench", "--case", "no such case"]) == 2
    assert "fcn-scratch bench: error: no case name contains" in capsys.readouterr().err


def test_ops_run_on_the_kernels_that_using_names():
    """The benchmark's columns: the same ops on another kernel module, then Numba again."""
    calls = []

    def recorded(name):
        def kernel(*args):
            calls.append(name)
            return getattr(numpy_baseline, name)(*args)

        return kernel

    module = SimpleNamespace(**{n: recorded(n) for n in ("im2col", "col2im")})
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 3, 6, 5)), rng.standard_normal((4, 3, 3, 3))
    with kernels.using(module):
        y, ctx = conv.conv2d_forward(x, w, None, 1, 1)
        dx, _, _ = conv.conv2d_backward(np.ones_like(y), ctx)
    assert calls == ["im2col", "col2im"]
    assert kernels.for_array(x) is cpu
    y_cpu, ctx_cpu = conv.conv2d_forward(x, w, None, 1, 1)
    np.testing.assert_allclose(y, y_cpu, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        dx, conv.conv2d_backward(np.ones_like(y), ctx_cpu)[0], rtol=1e-12, atol=1e-12
    )


def test_ours_and_torch_take_turns_and_keep_their_best_median(monkeypatch):
    """With --rounds 3 the two sides alternate three times per case; each keeps its fastest
    median (the numpy column, timed once before, is not one of ours)."""
    turns = []
    ours = iter([9.0, 7.0, 4.0, 6.0])  # numpy's column, then ours in three rounds
    monkeypatch.setattr(
        bench, "median_seconds", lambda step, repeat: turns.append("ours") or next(ours)
    )
    theirs = iter([5.0, 3.0, 8.0])

    class Child:
        def seconds(self, case, repeat):
            turns.append("torch")
            return next(theirs)

    case = next(c for c in bench.CASES if c.name.startswith("convT k16"))  # no reference column
    row = bench.cpu_row(case, 1, 3, Child())
    assert turns == ["ours"] + ["ours", "torch"] * 3
    assert (row["numpy"], row["ours"], row["torch"]) == (9.0, 4.0, 3.0)
