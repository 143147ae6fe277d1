"""Every .cu file compiles with nvcc to PTX, warning-free, and defines exactly the extern "C"
kernels that ``fcn_scratch.kernels.launch`` names. So does their concatenation, which is
what ``fcn_scratch.kernels.cuda`` hands to CuPy's RawModule.

compute_75 (Turing) is the oldest virtual architecture that CUDA 13's nvcc accepts; PTX for
it runs on every later GPU.
"""

import re
import shutil
import subprocess

import pytest

from fcn_scratch.kernels import launch

NVCC = shutil.which("nvcc")
ARCH = "compute_75"

pytestmark = pytest.mark.cuda_emulation
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc not found: install the CUDA toolkit")


def compile_ptx(source, tmp_path):
    ptx = tmp_path / (source.stem + ".ptx")
    command = [NVCC, "-ptx", f"-arch={ARCH}", "--Werror", "all-warnings", str(source)]
    result = subprocess.run([*command, "-o", str(ptx)], capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stderr}"
    assert result.stderr == "", result.stderr
    return set(re.findall(r"\.entry\s+(\w+)\(", ptx.read_text()))


def expected_kernels():
    return {launch.kernel_name(op, dtype) for op in launch.KERNELS for dtype in launch.SUFFIXES}


def test_sources_found():
    assert {path.name for path in launch.SOURCES} == {"im2col.cu", "pool.cu"}


@needs_nvcc
@pytest.mark.parametrize("source", launch.SOURCES, ids=lambda path: path.name)
def test_each_source_compiles(source, tmp_path):
    entries = compile_ptx(source, tmp_path)
    assert entries, f"{source.name} defines no kernel"
    assert entries <= expected_kernels(), f"unexpected kernels {entries - expected_kernels()}"


@needs_nvcc
def test_module_source_compiles_with_every_kernel(tmp_path):
    """The concatenated sources, as cuda.py compiles them: all kernels, none missing."""
    module = tmp_path / "module.cu"
    module.write_text("\n".join(path.read_text() for path in launch.SOURCES))
    assert compile_ptx(module, tmp_path) == expected_kernels()
