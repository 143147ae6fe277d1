"""``fcn-scratch info``: versions, the BLAS behind NumPy's GEMMs (and the kernels it runs
on this CPU), and which kernel backends are usable here (and why not).

    reference  NumPy loops: always usable
    cpu        Numba; usable when numba imports
    cuda       CUDA C through CuPy; usable when CuPy imports, sees a device, compiles the
               kernels (fcn_scratch/kernels/*.cu) with NVRTC and multiplies through cuBLAS

Also the tools the CUDA tests use where there is no GPU: nvcc (compiles the .cu files to
PTX), CuPy's NVRTC (compiles them as a RawModule does; it needs no driver) and g++
(compiles them against the CPU emulation). ``--json`` prints the same as JSON.
"""

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys

GPU_HINT = "pip install 'fcn-scratch[gpu]'"


def version(package: str) -> str | None:
    """The installed distribution's version, without importing it; None if absent."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def cupy_version() -> str | None:
    """CuPy's version from the module itself (its distribution name varies: cupy-cuda12x...)."""
    if importlib.util.find_spec("cupy") is None:
        return None
    try:
        import cupy
    except Exception as err:  # a broken install: say so rather than fail
        return f"installed but fails to import ({err})"
    return cupy.__version__


def numba_backend() -> dict:
    try:
        import numba
    except Exception as err:
        return {"usable": False, "why": f"numba does not import: {err}"}
    return {
        "usable": True,
        "detail": f"Numba {numba.__version__}, {numba.get_num_threads()} threads "
        f"(NUMBA_NUM_THREADS={numba.config.NUMBA_NUM_THREADS})",
    }


def cuda_backend() -> dict:
    """Usable only if CuPy sees a device, the kernels compile and load, and matmul runs."""
    from fcn_scratch.device import DeviceError, import_cupy

    try:
        cupy = import_cupy()
    except DeviceError as err:
        return {"usable": False, "why": str(err)}
    from fcn_scratch.kernels import cuda

    device = cupy.cuda.Device()
    props = cupy.cuda.runtime.getDeviceProperties(device.id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    detail = (
        f"device {device.id}: {name}, compute capability {device.compute_capability}, "
        f"CUDA runtime {cupy.cuda.runtime.runtimeGetVersion()}, "
        f"driver {cupy.cuda.runtime.driverGetVersion()}"
    )
    try:
        cuda.compile_all()
    except Exception as err:  # NVRTC missing or failing: the message says which
        return {"usable": False, "why": f"{detail}; the kernels do not compile: {err}"}
    try:
        ones = cupy.ones((2, 2), dtype=cupy.float32)
        (ones @ ones).sum().get()
    except Exception as err:  # the GEMMs of conv go through cuBLAS
        return {"usable": False, "why": f"{detail}; cupy.matmul (cuBLAS) fails: {err}"}
    return {"usable": True, "detail": detail}


def numpy_blas() -> str:
    """The BLAS that NumPy's GEMMs (and so every convolution on the CPU) call: library,
    version, the kernels it picked for this CPU, its threads, and the environment variable
    that chose the kernels, where one did (``OPENBLAS_CORETYPE``: OpenBLAS otherwise picks
    them from the CPU)."""
    import numpy  # noqa: F401  (loads its BLAS)
    import threadpoolctl

    found = [lib for lib in threadpoolctl.threadpool_info() if lib["user_api"] == "blas"]
    if not found:
        return "none found"
    # NumPy's own, where SciPy's (which Numba may load) is there too
    lib = next((lib for lib in found if "numpy" in lib["filepath"]), found[0])
    text = f"{lib['internal_api']} {lib['version']}"
    if lib.get("architecture"):
        text += f", {lib['architecture']} kernels"
        chosen = os.environ.get("OPENBLAS_CORETYPE") if lib["internal_api"] == "openblas" else None
        if chosen:
            text += f" (OPENBLAS_CORETYPE={chosen})"
    return text + f", {lib['num_threads']} threads"


def torch_info() -> str | None:
    v = version("torch")
    if v is None:
        return None
    try:
        import torch
    except Exception as err:
        return f"{v} (fails to import: {err})"
    return f"{v} (CUDA {'available' if torch.cuda.is_available() else 'not available'})"


def tool(name: str) -> dict:
    """Where a compiler is, and the first line of its version banner."""
    path = shutil.which(name)
    if path is None:
        return {"found": False}
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30)
        lines = [line for line in out.stdout.splitlines() if line.strip()]
        banner = next((line for line in lines if "release" in line), lines[0] if lines else "")
    except (OSError, subprocess.SubprocessError) as err:
        banner = f"--version failed: {err}"
    return {"found": True, "path": path, "version": banner.strip()}


def nvrtc_tool() -> dict:
    """CuPy's NVRTC binding and its version, when CuPy and its NVRTC library load."""
    if importlib.util.find_spec("cupy") is None:
        return {"found": False}
    try:
        from cupy.cuda import nvrtc

        major, minor = nvrtc.getVersion()
    except Exception as err:  # CuPy without its CUDA libraries: say why
        return {"found": False, "why": f"CuPy is installed but NVRTC does not load: {err}"}
    return {"found": True, "path": "cupy.cuda.nvrtc", "version": f"NVRTC {major}.{minor}"}


def collect() -> dict:
    """Everything ``info`` reports, as a JSON-able dict."""
    return {
        "versions": {
            "python": f"{platform.python_version()} ({sys.executable})",
            "fcn_scratch": version("fcn-scratch"),
            "numpy": version("numpy"),
            "numba": version("numba"),
            "blas": numpy_blas(),
            "cupy": cupy_version(),
            "torch": torch_info(),
        },
        "backends": {
            "reference": {"usable": True, "detail": "naive NumPy loops (the test oracle)"},
            "cpu": numba_backend(),
            "cuda": cuda_backend(),
        },
        "tools": {
            "nvcc": tool("nvcc"),  # tests/test_cuda_compile.py
            "nvrtc": nvrtc_tool(),  # tests/test_cuda_compile.py
            "g++": tool("g++"),  # tests/test_cuda_emulation.py
        },
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def render(report: dict) -> str:
    lines = ["versions"]
    for name, v in report["versions"].items():
        lines.append(f"  {name:<12} {v if v is not None else 'not installed'}")
    lines.append("backends")
    for name, b in report["backends"].items():
        state = "usable" if b["usable"] else "not usable"
        lines.append(f"  {name:<12} {state:<11} {b['detail'] if b['usable'] else b['why']}")
    lines.append("tools for the CUDA tests without a GPU")
    uses = {
        "nvcc": "compiles the .cu kernels to PTX",
        "nvrtc": "compiles them as CuPy does, with no GPU",
        "g++": "runs them under the emulation",
    }
    for name, t in report["tools"].items():
        where = f"{t['path']} ({t['version']})" if t["found"] else t.get("why", "not found")
        lines.append(f"  {name:<12} {where}: {uses[name]}")
    return "\n".join(lines)


def run(args) -> int:
    report = collect()
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0
