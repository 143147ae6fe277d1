"""Subnormal numbers read and written as zero inside ``subnormals.flushed()``, and only there;
the Adam kernel runs that way."""

import numpy as np
import pytest

from fcn_scratch.kernels import cpu, subnormals

pytestmark = pytest.mark.skipif(not subnormals.ON_X86_64, reason="MXCSR is x86-64's")

TINY = np.finfo(np.float32).tiny  # the smallest normal float32


def _product(a, b):
    """a * b as NumPy computes it in this thread, in float32."""
    return np.multiply(np.float32(a), np.float32(b), dtype=np.float32)


def test_flushed_sets_ftz_and_daz_and_restores_the_register():
    before = subnormals.read_mxcsr()
    with subnormals.flushed():
        inside = subnormals.read_mxcsr()
    assert inside & subnormals.FTZ and inside & subnormals.DAZ
    assert subnormals.read_mxcsr() == before
    with pytest.raises(RuntimeError), subnormals.flushed():
        raise RuntimeError("the register is restored on the way out")
    assert subnormals.read_mxcsr() == before


def test_subnormal_results_and_inputs_are_zero_inside_only():
    subnormal = _product(TINY, 0.5)  # outside: a subnormal result is kept
    assert 0 < subnormal < TINY
    with subnormals.flushed():
        assert _product(TINY, 0.5) == 0  # FTZ: the result is flushed
        assert _product(np.float32(subnormal), 4.0) == 0  # DAZ: the input reads as zero
    assert _product(np.float32(subnormal), 4.0) == 2 * TINY


def test_adam_reads_and_writes_subnormal_moments_as_zero_and_leaves_the_register_alone():
    """A unit that no longer learns: its gradient is 0 and Adam's m shrinks by beta1 each
    step. A subnormal m reads as 0; an m whose decrement would be subnormal stops there;
    a normal one follows the formula; the caller's register is as it was."""
    p = np.ones(4, np.float32)
    g = np.zeros(4, np.float32)
    m = np.array([1e-39, TINY, 4 * TINY, 1e-3], np.float32)
    v = np.ones(4, np.float32)
    before = subnormals.read_mxcsr()
    cpu.adam_update(p, g, m, v, 1, 1e-3, 0.5, 0.999, 1e-8, 0.0, False)
    assert subnormals.read_mxcsr() == before
    # m + (1 - beta1) * (0 - m): the subnormal m is 0; TINY's decrement, 0.5 * TINY, is
    # flushed; 4 * TINY halves; 1e-3 halves
    np.testing.assert_array_equal(m, np.array([0, TINY, 2 * TINY, 5e-4], np.float32))
