"""Kernels: im2col/col2im, max pooling and unpooling, in three interchangeable backends.

``reference`` (NumPy loops, the oracle), ``cpu`` (Numba) and ``cuda`` (CUDA C through
CuPy) define the same functions with the same signatures; see ``reference`` for the
conventions. ``for_array`` is the one place that picks a backend: by the array's type.
"""

from types import ModuleType

from fcn_scratch.device import is_cuda_array


def for_array(a) -> ModuleType:
    """The kernel module for ``a``: ``cuda`` for a cupy array, ``cpu`` (Numba) otherwise."""
    if is_cuda_array(a):
        from fcn_scratch.kernels import cuda

        return cuda
    from fcn_scratch.kernels import cpu

    return cpu
