"""Devices: where an array lives, and moving it. The one place that knows about CuPy.

An array's type is its device: ``numpy.ndarray`` is ``"cpu"``, ``cupy.ndarray`` is
``"cuda"``. CuPy is imported only when a CUDA array is asked for, so a machine without
it imports and runs ``fcn_scratch`` on the CPU with no warnings.

Every use of CuPy in the library goes through ``import_cupy`` (or ``array_module``), which
keeps the module in ``_cupy`` once it has found a usable device: the one switch point,
where the tests put a CuPy stand-in on machines without a GPU.
"""

from types import ModuleType

import numpy as np

DEVICES = ("cpu", "cuda")


_cupy: ModuleType | None = None  # CuPy, once import_cupy has seen it work


class DeviceError(RuntimeError):
    """CUDA was asked for but cannot be used here; the message says why."""


def import_cupy() -> ModuleType:
    """Return the ``cupy`` module, or raise DeviceError explaining what is missing."""
    global _cupy
    if _cupy is not None:
        return _cupy
    try:
        import cupy
    except ImportError as err:
        raise DeviceError(
            "device 'cuda' needs CuPy, which is not installed: "
            "install the gpu extra: pip install 'fcn-scratch[gpu]'"
        ) from err
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as err:  # CUDARuntimeError, or a missing driver library
        raise DeviceError(
            f"device 'cuda': CuPy is installed but no CUDA driver or device is visible ({err})"
        ) from err
    if count == 0:
        raise DeviceError("device 'cuda': CuPy is installed but found no CUDA device")
    _cupy = cupy
    return cupy


def is_cuda_array(a) -> bool:
    """True for a cupy.ndarray, without importing CuPy."""
    if type(a) is np.ndarray:  # the common case, first: this runs for every op
        return False
    if _cupy is not None:
        return isinstance(a, _cupy.ndarray)
    return type(a).__module__.split(".")[0] == "cupy"


def device_of(a) -> str:
    """'cuda' for a cupy.ndarray, 'cpu' for anything else."""
    return "cuda" if is_cuda_array(a) else "cpu"


def array_module(a) -> ModuleType:
    """numpy or cupy, whichever owns ``a``: write ``xp = array_module(x)`` and use ``xp``."""
    return import_cupy() if is_cuda_array(a) else np


def check_device(device: str) -> str:
    """Validate a device name."""
    if device not in DEVICES:
        raise ValueError(f"device: expected one of {DEVICES}, got {device!r}")
    return device


def to_device(a, device: str):
    """Copy array ``a`` to ``device`` ('cpu' or 'cuda'); returns ``a`` itself if already there."""
    check_device(device)
    if device_of(a) == device:
        return a
    if device == "cpu":
        return a.get()
    return import_cupy().asarray(a)


def same_device(op: str, **arrays) -> str:
    """Check that all named arrays live on one device and return it.

    Raises ValueError naming the op and the two disagreeing arguments.
    """
    items = [(name, device_of(a)) for name, a in arrays.items() if a is not None]
    first_name, first_dev = items[0]
    for name, dev in items[1:]:
        if dev != first_dev:
            raise ValueError(
                f"{op}: all inputs must be on one device, but {first_name} is on "
                f"'{first_dev}' and {name} is on '{dev}'"
            )
    return first_dev
