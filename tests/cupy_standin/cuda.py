"""``cupy.cuda`` and ``cupy.RawModule`` of the stand-in: one emulated device, and CUDA C
kernels run on the CPU.

``RawModule(code=...)`` compiles ``code`` with g++ against tests/cuda_emulation/cuda_emu.h
(once per distinct source, under ``build_dir``, which ``install`` sets);
``get_function(name)(grid, block, args)`` records the launch in ``launches`` and runs
every block and thread of that grid with
``args`` passed as CuPy passes them: device arrays as pointers to their data (contiguous
or not: the kernel gets the pointer, nothing more), ``numpy.int32`` as C ``int`` and
``numpy.int64`` as ``long long``. What CuPy would pass wrongly or refuse is refused here: a
NumPy array (host memory), and a bare Python int (CuPy sends it as ``long long``, which a
kernel's ``int`` parameter would misread).
"""

import hashlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from cuda_emulation.emulator import Emulator, build

from cupy_standin._core import ndarray

NAME = "CuPy stand-in (CUDA C emulated on the CPU)"
build_dir: Path | None = None  # set by install
launches: list[tuple[str, tuple, tuple]] = []  # (kernel, grid, block) of every launch
_compiled: dict[str, Emulator] = {}  # source -> its compiled kernels, for the whole session


class Device:
    """Device 0, the only one; a context manager like ``cupy.cuda.Device``."""

    compute_capability = "75"

    def __init__(self, device: int = 0):
        self.id = int(device)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> bool:
        return False

    def use(self) -> None:
        pass

    def synchronize(self) -> None:
        pass


runtime = SimpleNamespace(
    getDeviceCount=lambda: 1,
    getDeviceProperties=lambda device: {"name": NAME.encode()},
    runtimeGetVersion=lambda: 0,
    driverGetVersion=lambda: 0,
    memGetInfo=lambda: (0, 0),  # nothing to allocate big tests in
)


class RawModule:
    """CUDA C source compiled for the emulation; kernels fetched by their extern "C" name."""

    def __init__(self, code: str, options: tuple = (), **kwargs):
        if build_dir is None:
            raise RuntimeError("cupy stand-in: RawModule before install() set a build folder")
        if code not in _compiled:
            folder = build_dir / hashlib.sha256(code.encode()).hexdigest()[:16]
            folder.mkdir(parents=True, exist_ok=True)
            _compiled[code] = Emulator(build(folder, code=code))
        self._emulator = _compiled[code]

    def get_function(self, name: str) -> "RawKernel":
        if not hasattr(self._emulator.lib, f"emu_{name}"):
            raise RuntimeError(f"cupy stand-in: RawModule has no kernel named {name!r}")
        return RawKernel(self._emulator, name)


class RawKernel:
    def __init__(self, emulator: Emulator, name: str):
        self._emulator, self.name = emulator, name

    def __call__(self, grid, block, args, **kwargs) -> None:
        grid, block = _dim3(grid), _dim3(block)
        launches.append((self.name, grid, block))
        self._emulator.launch(self.name, grid, block, [_argument(self.name, a) for a in args])


def _dim3(size) -> tuple[int, int, int]:
    size = (size,) if isinstance(size, int) else tuple(size)
    return (*size, *(1,) * (3 - len(size)))


def _argument(kernel: str, value):
    if isinstance(value, ndarray):
        return value.view(np.ndarray)
    if isinstance(value, np.ndarray):
        raise TypeError(f"cupy stand-in: {kernel}: a numpy.ndarray (host memory) as argument")
    if isinstance(value, (np.int32, np.int64)):
        return value
    raise TypeError(
        f"cupy stand-in: {kernel}: argument {value!r} of type {type(value).__name__}; pass "
        "numpy.int32 for int, numpy.int64 for long long (CuPy sends a Python int as long long)"
    )
