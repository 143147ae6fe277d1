"""``fcn-scratch info``: what it says about backends and tools agrees with this machine."""

import importlib.util
import json
import platform
import shutil
import sys

import numba
import numpy as np
import pytest

from fcn_scratch import device
from fcn_scratch.cli import main
from fcn_scratch.commands import info
from fcn_scratch.device import DeviceError


@pytest.fixture(scope="module")
def report():
    return info.collect()


def test_reference_and_numba_backends_are_usable(report):
    backends = report["backends"]
    assert backends["reference"]["usable"]
    assert backends["cpu"]["usable"]
    assert f"{numba.get_num_threads()} threads" in backends["cpu"]["detail"]


def test_blas_names_numpys_library_and_kernels(monkeypatch):
    import threadpoolctl

    libs = [lib for lib in threadpoolctl.threadpool_info() if lib["user_api"] == "blas"]
    lib = next((lib for lib in libs if "numpy" in lib["filepath"]), libs[0])  # pip's / others'
    text = info.numpy_blas()
    assert text.startswith(f"{lib['internal_api']} {lib['version']}")
    assert text.endswith(f", {lib['num_threads']} threads")
    if lib.get("architecture"):
        assert f", {lib['architecture']} kernels" in text
    monkeypatch.delenv("OPENBLAS_CORETYPE", raising=False)
    assert "OPENBLAS_CORETYPE" not in info.numpy_blas()
    if lib["internal_api"] == "openblas":
        monkeypatch.setenv("OPENBLAS_CORETYPE", "Zen")
        assert "(OPENBLAS_CORETYPE=Zen)" in info.numpy_blas()


def test_blas_is_numpys_where_scipys_is_listed_first(monkeypatch):
    import threadpoolctl

    def lib(path, version):
        return {
            "user_api": "blas",
            "internal_api": "openblas",
            "filepath": path,
            "version": version,
            "architecture": "Haswell",
            "num_threads": 2,
        }

    listed = [
        lib("/x/scipy.libs/libscipy_openblas.so", "0.3.1"),
        lib("/x/numpy.libs/libscipy_openblas64_.so", "0.3.2"),
    ]
    monkeypatch.setattr(threadpoolctl, "threadpool_info", lambda: listed)
    assert info.numpy_blas().startswith("openblas 0.3.2, Haswell kernels")


def test_cuda_backend_usable_where_cupy_sees_a_device(cp):
    """With a GPU, or the CuPy stand-in: the kernels compile, matmul runs, the device is named."""
    cuda = info.cuda_backend()
    assert cuda["usable"], cuda.get("why")
    assert cuda["detail"].startswith("device 0: ") and "compute capability" in cuda["detail"]


def test_cuda_backend_not_usable_gives_the_reason(monkeypatch):
    def no_device():
        raise DeviceError("device 'cuda': no device in this test")

    monkeypatch.setattr(device, "import_cupy", no_device)
    cuda = info.cuda_backend()
    assert cuda == {"usable": False, "why": "device 'cuda': no device in this test"}


def test_cuda_backend_without_cupy_names_the_gpu_extra(monkeypatch):
    monkeypatch.setattr(device, "_cupy", None)
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy raises ImportError
    cuda = info.cuda_backend()
    assert not cuda["usable"] and "pip install 'fcn-scratch[gpu]'" in cuda["why"]


def test_nvrtc_found_where_cupy_is(report):
    nvrtc = report["tools"]["nvrtc"]
    if importlib.util.find_spec("cupy") is None:
        assert not nvrtc["found"]
        return
    from cupy.cuda import nvrtc as binding

    assert nvrtc["found"], nvrtc.get("why")
    assert nvrtc["version"] == "NVRTC {}.{}".format(*binding.getVersion())


@pytest.mark.parametrize("name", ["nvcc", "g++"])
def test_tools_found_where_they_are(report, name):
    tool = report["tools"][name]
    assert tool["found"] == (shutil.which(name) is not None)
    if tool["found"]:
        assert tool["path"] == shutil.which(name) and tool["version"]


def test_versions_name_what_is_installed(report):
    versions = report["versions"]
    assert versions["numpy"] == np.__version__
    assert versions["numba"] == numba.__version__
    assert versions["python"].split()[0] == platform.python_version()


def test_command_prints_every_backend(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for backend in ("reference", "cpu", "cuda"):
        assert any(line.split()[:1] == [backend] for line in out.splitlines()), out
    assert main(["info", "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)["backends"]) == {"reference", "cpu", "cuda"}
