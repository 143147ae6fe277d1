"""Arithmetic that treats subnormal numbers as zero, for the span of a ``with`` block.

A float32 below 1.2e-38 (``np.finfo(np.float32).tiny``) is *subnormal*: it has lost the
leading one of its mantissa. On x86 CPUs an operation that reads or makes one is finished
by a microcode assist, about a hundred times slower than the vector instruction itself.
Training makes them: the gradient of a unit that no longer fires is 0, so Adam's first
moment ``m`` shrinks by ``beta1`` every step and spends some 150 steps among the subnormals
on its way to zero, and tiny gradients have subnormal squares. In the default run of
``fcn-scratch train``, after six epochs a fifth of the moments (50 thousand) were
subnormal, and after eight Adam's one pass over the parameters took 1.27 ms per step
where it takes 0.32 ms with the assists switched off (the same state, the same pass).

``flushed()`` switches them off the way CPUs offer it: the FTZ bit (flush results that
would be subnormal to zero) and the DAZ bit (read subnormal inputs as zero) of the SSE
control register, MXCSR, which governs every float32/float64 operation of the calling
thread, NumPy's and Numba's alike. The register is restored when the block ends, so the
setting never leaks into the caller's code (TensorFlow sets the same two bits in its CPU
threads; NumPy and PyTorch leave the register alone unless asked). Under it a decaying moment
stops at the bottom of the normal range (its decrement ``(1 - beta1) * m`` would be
subnormal and is flushed), where it moves a weight by about ``lr * 1e-37 / eps``: 4e-32,
below float32's resolution of any weight but zero.

MXCSR is per thread: the setting covers the calling thread only. Elsewhere than x86-64 the
block changes nothing (ARM has its own flag, FPCR.FZ, which this does not set).
"""

import platform
from contextlib import contextmanager

from llvmlite import ir
from numba import njit, types, uint32
from numba.core import cgutils
from numba.extending import intrinsic

FTZ = 1 << 15  # MXCSR bit 15: flush subnormal results to zero
DAZ = 1 << 6  # MXCSR bit 6: read subnormal inputs as zero

ON_X86_64 = platform.machine().lower() in ("x86_64", "amd64")


def _mxcsr_intrinsic(builder, slot, name):
    """Emit a call to LLVM's x86 intrinsic ``name`` (stmxcsr or ldmxcsr) on ``slot``."""
    byte_ptr = ir.IntType(8).as_pointer()
    fn = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(ir.VoidType(), [byte_ptr]), name
    )
    builder.call(fn, [builder.bitcast(slot, byte_ptr)])


@intrinsic
def _stmxcsr(typingctx):
    def codegen(context, builder, signature, args):
        slot = cgutils.alloca_once(builder, ir.IntType(32))
        _mxcsr_intrinsic(builder, slot, "llvm.x86.sse.stmxcsr")
        return builder.load(slot)

    return types.uint32(), codegen


@intrinsic
def _ldmxcsr(typingctx, value):
    def codegen(context, builder, signature, args):
        slot = cgutils.alloca_once_value(builder, args[0])
        _mxcsr_intrinsic(builder, slot, "llvm.x86.sse.ldmxcsr")
        return context.get_dummy_value()

    return types.void(types.uint32), codegen


@njit(cache=True)
def read_mxcsr():
    """The calling thread's MXCSR (x86-64 only)."""
    return _stmxcsr()


@njit(cache=True)
def write_mxcsr(value):
    """Set the calling thread's MXCSR (x86-64 only)."""
    _ldmxcsr(uint32(value))


@contextmanager
def flushed():
    """Within the block, this thread's arithmetic reads subnormal numbers as zero and
    flushes subnormal results to zero (x86-64; elsewhere nothing changes)."""
    if not ON_X86_64:
        yield
        return
    before = read_mxcsr()
    write_mxcsr(before | FTZ | DAZ)
    try:
        yield
    finally:
        write_mxcsr(before)
