"""Run the CUDA kernels on the CPU: the .cu sources compiled by g++ against cuda_emu.h.

``build(directory)`` writes a small driver that includes ``cuda_emu.h`` and every
``fcn_scratch/kernels/*.cu`` file, exports each kernel of ``launch.KERNELS`` (in float32 and
float64) through ``CUDA_EMU_EXPORT``, and compiles it into a shared library.
``Emulator.run(plan, *inputs)`` then does what ``fcn_scratch.kernels.cuda`` does with CuPy:
make the inputs contiguous, allocate the outputs the plan names, and launch the plan's
kernel on the plan's grid and block with ``(*inputs, *outputs, *scalars)``.
"""

import ctypes
import subprocess
from pathlib import Path

import numpy as np

from fcn_scratch.kernels import launch

HEADER_DIR = Path(__file__).resolve().parent
# -ffp-contract=off: no fused multiply-adds, so float arithmetic is plain IEEE, as in NumPy.
CXXFLAGS = ["-std=c++17", "-O2", "-shared", "-fPIC", "-ffp-contract=off", "-Wall", "-Wextra"]
CXXFLAGS += ["-Werror"]


def kernel_names() -> list[str]:
    return [f"{op}_{suffix}" for op in launch.KERNELS for suffix in launch.SUFFIXES.values()]


def driver_source() -> str:
    lines = ['#include "cuda_emu.h"']
    lines += [f'#include "{path}"' for path in launch.SOURCES]
    lines += [f"CUDA_EMU_EXPORT({name})" for name in kernel_names()]
    return "\n".join(lines) + "\n"


def build(directory: Path, compiler: str = "g++") -> Path:
    """Compile the kernels into ``directory/libcuda_emu.so``; raises with g++'s output."""
    driver = directory / "cuda_emu_driver.cpp"
    driver.write_text(driver_source())
    library = directory / "libcuda_emu.so"
    command = [compiler, *CXXFLAGS, "-I", str(HEADER_DIR), str(driver), "-o", str(library)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr}")
    return library


def _argument(value):
    """A ctypes object holding one kernel argument: a device pointer or a typed scalar."""
    if isinstance(value, np.ndarray):
        return ctypes.c_void_p(value.ctypes.data)
    if isinstance(value, np.int32):
        return ctypes.c_int32(value)
    if isinstance(value, np.int64):
        return ctypes.c_int64(value)
    raise TypeError(
        f"kernel argument: expected an array, numpy.int32 or numpy.int64, got {value!r}"
    )


class Emulator:
    """The compiled library; runs ``launch.Launch`` plans on NumPy arrays."""

    def __init__(self, library: Path):
        self.lib = ctypes.CDLL(str(library))

    def run(self, plan: launch.Launch, *inputs: np.ndarray) -> list[np.ndarray]:
        inputs, outputs = self._buffers(plan, inputs)
        self._launch(plan, inputs, outputs)
        return outputs

    def run_tracked(self, plan: launch.Launch, *inputs):
        """Outputs, and for each output an int array of its shape: how many threads wrote
        each element (every thread run alone on sentinel-filled outputs, see cuda_emu.h)."""
        inputs, outputs = self._buffers(plan, inputs)
        n_elems = (ctypes.c_longlong * len(outputs))(*(o.size for o in outputs))
        elem_bytes = (ctypes.c_int * len(outputs))(*(o.itemsize for o in outputs))
        outs = (ctypes.c_void_p * len(outputs))(*(o.ctypes.data for o in outputs))
        writes = np.zeros(sum(o.size for o in outputs), dtype=np.intc)
        tracked = (len(outputs), outs, n_elems, elem_bytes, writes.ctypes.data_as(ctypes.c_void_p))
        self._launch(plan, inputs, outputs, tracked)
        counts, start = [], 0
        for o in outputs:
            counts.append(writes[start : start + o.size].reshape(o.shape))
            start += o.size
        return outputs, counts

    @staticmethod
    def _buffers(plan, inputs):
        """What cuda.py does with CuPy: contiguous inputs of the plan's dtypes, new outputs."""
        inputs = [
            np.ascontiguousarray(a, dtype=dt) for a, dt in zip(inputs, plan.inputs, strict=True)
        ]
        outputs = [np.empty(shape, dtype) for shape, dtype in plan.outputs]
        return inputs, outputs

    def _launch(self, plan, inputs, outputs, tracked=()):
        args = [_argument(v) for v in (*inputs, *outputs, *plan.scalars)]
        params = (ctypes.c_void_p * len(args))(*(ctypes.addressof(a) for a in args))
        grid = (ctypes.c_uint * 3)(*plan.grid)
        block = (ctypes.c_uint * 3)(*plan.block)
        prefix = "emu_tracked_" if tracked else "emu_"
        getattr(self.lib, prefix + plan.kernel)(grid, block, params, *tracked)
