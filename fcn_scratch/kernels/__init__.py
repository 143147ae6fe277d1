"""Kernels: im2col/col2im, max pooling and unpooling, in interchangeable backends.

``reference`` (NumPy loops, the oracle), ``cpu`` (Numba) and ``cuda`` (CUDA C through
CuPy) define the same functions with the same signatures; see ``reference`` for the
conventions. ``numpy_baseline`` (vectorised NumPy) does too; only the benchmark uses it.
``for_array`` is the one place that picks a backend: by the array's type, and for NumPy
arrays inside ``with using(module):`` the module given (how the benchmark runs the ops on
each backend). Four modules hold loops for the Numba backend only, fast paths of ops
that keep the backends' kernels or NumPy expressions for the others: ``winograd`` (3x3
convolutions), ``subpixel`` (transposed convolutions, phase by phase), ``dw_blocks`` (the
weight gradient of a convolution from few channels) and ``cross_entropy``; the ops take
them where ``is_numba`` holds. ``subnormals`` sets the
CPU's flush-to-zero mode for the span of a ``with`` block (the Numba Adam kernel runs in it).
"""

from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

from fcn_scratch.device import is_cuda_array

_host: ModuleType | None = None  # set by ``using``; None: the Numba kernels


def for_array(a) -> ModuleType:
    """The kernel module for ``a``: ``cuda`` for a cupy array, ``cpu`` (Numba) otherwise."""
    if is_cuda_array(a):
        from fcn_scratch.kernels import cuda

        return cuda
    if _host is not None:
        return _host
    from fcn_scratch.kernels import cpu

    return cpu


def is_numba(a) -> bool:
    """Whether ``for_array(a)`` is the Numba backend (a NumPy array, no ``using`` block)."""
    return _host is None and not is_cuda_array(a)


def winograd_for(a) -> ModuleType | None:
    """The Winograd tile kernels for ``a`` when the Numba backend runs it, else None (they
    exist on the CPU only; see ``fcn_scratch.ops.winograd``)."""
    if not is_numba(a):
        return None
    from fcn_scratch.kernels import winograd

    return winograd


@contextmanager
def using(module: ModuleType) -> Iterator[None]:
    """Within the block, the ops run NumPy arrays on ``module`` (e.g. ``reference``)."""
    global _host
    previous, _host = _host, module
    try:
        yield
    finally:
        _host = previous
