"""A CuPy stand-in: the device path of fcn_scratch, run on the CPU in the tests.

``install(monkeypatch, build_dir)`` puts this module where ``fcn_scratch.device`` keeps
CuPy (``device._cupy``, the library's one switch point), so every ``import_cupy()`` and
``array_module(x)`` gets it. It plays CuPy's part where mistakes would hide:

- ``ndarray`` (in ``_core``) is a NumPy subclass that refuses implicit conversion to the
  host, mixing with NumPy arrays and Numba kernels, as CuPy does; ``get()``, ``item()`` and
  ``tolist()`` are the explicit ways back, each recorded in ``transfers``.
- ``asarray`` / ``array`` copy host data to the device. ``ascontiguousarray`` takes device
  arrays only, like CuPy's. Every other NumPy function (``empty``, ``zeros``, ``exp``,
  ``where``, ``take_along_axis``, ...) takes device arrays and returns device arrays.
- ``RawModule(code=...).get_function(name)(grid, block, args)`` compiles ``code`` with g++
  against the CUDA emulation (tests/cuda_emulation) and runs the kernel on every thread of
  that very grid and block, with CuPy's argument rules (see ``cuda``).
- ``cuda.runtime``, ``cuda.Device``, ``random.default_rng`` and ``testing``: what the
  library and the tests call.
"""

import functools
import sys
from pathlib import Path

import numpy as np

from cupy_standin import cuda, random, testing
from cupy_standin._core import IMPLICIT, host_array, ndarray, transfers, unwrap, wrap
from cupy_standin.cuda import RawModule

__version__ = "stand-in"
__all__ = [
    "RawModule",
    "array",
    "asarray",
    "ascontiguousarray",
    "cuda",
    "install",
    "ndarray",
    "random",
    "testing",
    "transfers",
]


def asarray(a, dtype=None, order=None):
    """``a`` on the device: a device array as it is (or cast), host data copied over."""
    if isinstance(a, ndarray):
        return a if dtype is None else a.astype(dtype, copy=False)
    return wrap(host_array(a, dtype=dtype, order=order or "K", copy=True))


def array(obj, dtype=None, copy=True, order="K"):
    """A new device array (CuPy's ``array`` copies by default, host data always)."""
    if isinstance(obj, ndarray):
        return wrap(host_array(obj.view(np.ndarray), dtype=dtype, copy=copy, order=order))
    return asarray(obj, dtype=dtype, order=order)


def ascontiguousarray(a, dtype=None):
    """A C-contiguous device array; like CuPy's, refuses host arrays."""
    if not isinstance(a, ndarray):
        raise TypeError(
            f"cupy stand-in: ascontiguousarray expects a device array, got {type(a).__name__}"
        )
    return wrap(np.ascontiguousarray(a.view(np.ndarray), dtype=dtype))


@functools.cache
def _device_function(name: str):
    """NumPy's ``name`` on device arrays: host arrays refused, results on the device."""
    host_function = getattr(np, name)

    @functools.wraps(host_function)
    def on_device(*args, **kwargs):
        where = f"cupy.{name}"
        kwargs = {k: unwrap(v, where) for k, v in kwargs.items()}
        return wrap(host_function(*unwrap(args, where), **kwargs))

    return on_device


def __getattr__(name: str):
    """Everything else is NumPy's: dtypes and constants as they are, functions on the device."""
    value = getattr(np, name)
    if isinstance(value, type) or not callable(value):
        return value
    return _device_function(name)


def install(monkeypatch, build_dir: Path):
    """Put the stand-in in CuPy's place for one test (``monkeypatch`` undoes it): it becomes
    ``fcn_scratch.device``'s CuPy, NumPy's converters refuse device arrays, kernels are
    compiled under ``build_dir``, and ``transfers`` and ``cuda.launches`` start empty.
    Returns this module."""
    from fcn_scratch import device

    for name in ("asarray", "asanyarray", "array", "ascontiguousarray"):
        monkeypatch.setattr(np, name, _refusing(getattr(np, name)))
    monkeypatch.setattr(cuda, "build_dir", build_dir)
    monkeypatch.setattr(cuda, "launches", [])
    this = sys.modules[__name__]
    monkeypatch.setattr(device, "_cupy", this)
    transfers.clear()
    return this


def _refusing(host_function):
    """``host_function`` (numpy.asarray, ...) that raises CuPy's TypeError on device arrays."""

    @functools.wraps(host_function)
    def refusing(a, *args, **kwargs):
        items = a if isinstance(a, (list, tuple)) else (a,)
        if any(isinstance(v, ndarray) for v in items):
            raise TypeError(IMPLICIT)
        return host_function(a, *args, **kwargs)

    return refusing
