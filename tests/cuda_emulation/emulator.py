"""Run the CUDA kernels on the CPU: the .cu sources compiled by g++ against cuda_emu.h.

``build(directory)`` writes a small driver that includes ``cuda_emu.h`` and every
``fcn_scratch/kernels/*.cu`` file (or, with ``code``, that CUDA source instead), exports
each kernel of ``launch.KERNELS`` (in float32 and float64) through ``CUDA_EMU_EXPORT``,
and compiles it into a shared library.
``Emulator.run(plan, *inputs)`` then does what ``fcn_scratch.kernels.cuda`` does with CuPy:
make the inputs contiguous, allocate the outputs the plan names, and launch the plan's
kernel on the plan's grid and block with ``(*inputs, *outputs, *scalars)``.
``Emulator.launch(kernel, grid, block, args)`` is the bare launch, as a RawKernel call.
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


def driver_source(sources=launch.SOURCES) -> str:
    lines = ['#include "cuda_emu.h"']
    lines += [f'#include "{path}"' for path in sources]
    lines += [f"CUDA_EMU_EXPORT({name})" for name in kernel_names()]
    return "\n".join(lines) + "\n"


def build(directory: Path, compiler: str = "g++", code: str | None = None) -> Path:
    """Compile the kernels (the .cu files, or the source ``code``) into
    ``directory/libcuda_emu.so``; raises with g++'s output."""
    sources = launch.SOURCES
    if code is not None:
        sources = (directory / "module.cu",)
        sources[0].write_text(code)
    driver = directory / "cuda_emu_driver.cpp"
    driver.write_text(driver_source(sources))
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
        self.launch(plan.kernel, plan.grid, plan.block, (*inputs, *outputs, *plan.scalars), tracked)

    def launch(self, kernel: str, grid, block, args, tracked=()) -> None:
        """Run ``kernel`` on every thread of ``grid`` x ``block`` (3-tuples) with ``args``:
        arrays (passed as pointers to their data), numpy.int32 or numpy.int64."""
        values = [_argument(v) for v in args]
        params = (ctypes.c_void_p * len(values))(*(ctypes.addressof(a) for a in values))
        prefix = "emu_tracked_" if tracked else "emu_"
        getattr(self.lib, prefix + kernel)(
            (ctypes.c_uint * 3)(*grid), (ctypes.c_uint * 3)(*block), params, *tracked
        )
