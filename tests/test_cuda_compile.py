"""Every .cu file compiles with nvcc to PTX, warning-free, and defines exactly the extern "C"
kernels that ``fcn_scratch.kernels.launch`` names. So does their concatenation, which is
what ``fcn_scratch.kernels.cuda`` hands to CuPy's RawModule.

compute_75 (Turing) is the oldest virtual architecture that CUDA 13's nvcc accepts; PTX for
it runs on every later GPU.

The same source also goes through CuPy's NVRTC binding (``cupy.cuda.nvrtc``, which needs no
driver or GPU) with the options a RawModule compiles with, for the architectures CuPy
targets: that is the compiler a GPU user's first run meets.
"""

import importlib.util
import os
import re
import shutil
import subprocess

import pytest

from fcn_scratch.kernels import cuda, launch

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
    module.write_text(cuda.module_source())
    assert compile_ptx(module, tmp_path) == expected_kernels()


# ---- NVRTC, as CuPy's RawModule compiles ------------------------------------------------------

# What CuPy adds to a RawModule's options (cupy/cuda/compiler.py, _compile_with_cache_cuda
# and compile_using_nvrtc), besides the architecture: -arch=sm_XX for the device's compute
# capability (a cubin), or -arch=compute_XX (PTX) beyond what its NVRTC knows.
CUPY_OPTIONS = ("-ftz=true", "--device-as-default-execution-space")
NVRTC_TARGETS = ["compute_75", "compute_80", "compute_90", "sm_75", "sm_80", "sm_90"]


@pytest.fixture(scope="module")
def nvrtc():
    if importlib.util.find_spec("cupy") is None:
        if os.environ.get("FCN_SCRATCH_REQUIRE_CUPY") == "1":
            pytest.fail("CuPy is required here (FCN_SCRATCH_REQUIRE_CUPY=1) but not installed")
        pytest.skip("CuPy is not installed: pip install -e '.[gpu]' (its NVRTC needs no GPU)")
    from cupy.cuda import nvrtc

    return nvrtc


def nvrtc_compile(nvrtc, source: str, name: str, target: str) -> tuple[str, bytes]:
    """(compiler log, PTX or cubin) of ``source`` for ``target``; fails on an error."""
    options = [*cuda.OPTIONS, *CUPY_OPTIONS, f"-arch={target}"]
    program = nvrtc.createProgram(source, name, [], [])
    try:
        try:
            nvrtc.compileProgram(program, options)
        except nvrtc.NVRTCError as err:
            pytest.fail(f"NVRTC {options} failed on {name}: {err}\n{nvrtc.getProgramLog(program)}")
        log = nvrtc.getProgramLog(program).strip("\x00").strip()
        binary = nvrtc.getPTX(program) if target.startswith("compute") else nvrtc.getCUBIN(program)
    finally:
        nvrtc.destroyProgram(program)
    return log, binary


def ptx_entries(ptx) -> set[str]:
    text = ptx.decode() if isinstance(ptx, bytes) else ptx
    return set(re.findall(r"\.entry\s+(\w+)\(", text))


@pytest.mark.parametrize("target", NVRTC_TARGETS)
def test_nvrtc_compiles_the_module_warning_free(nvrtc, target):
    """What ``cuda._module`` hands to RawModule, for each architecture: no warning, no error."""
    log, binary = nvrtc_compile(nvrtc, cuda.module_source(), "module.cu", target)
    assert log == "", f"NVRTC -arch={target}:\n{log}"
    assert binary
    if target.startswith("compute"):
        assert ptx_entries(binary) == expected_kernels()


@pytest.mark.parametrize("source", launch.SOURCES, ids=lambda path: path.name)
def test_nvrtc_compiles_each_source_warning_free(nvrtc, source):
    log, ptx = nvrtc_compile(nvrtc, source.read_text(), source.name, "compute_75")
    assert log == "", f"NVRTC on {source.name}:\n{log}"
    assert ptx_entries(ptx) and ptx_entries(ptx) <= expected_kernels()


def test_nvrtc_log_shows_warnings(nvrtc):
    """The warning check can fail: an unused variable is reported in the log."""
    source = 'extern "C" __global__ void k(float* x) { int unused; x[0] = 1.0f; }'
    log, _ = nvrtc_compile(nvrtc, source, "unused.cu", "compute_75")
    assert "unused" in log and "warning" in log
