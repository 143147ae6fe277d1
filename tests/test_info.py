"""``fcn-scratch info``: what it says about backends and tools agrees with this machine."""

import importlib.util
import json
import platform
import shutil

import numba
import numpy as np
import pytest

from fcn_scratch.cli import main
from fcn_scratch.commands import info
from fcn_scratch.device import DeviceError, import_cupy


@pytest.fixture(scope="module")
def report():
    return info.collect()


def test_reference_and_numba_backends_are_usable(report):
    backends = report["backends"]
    assert backends["reference"]["usable"]
    assert backends["cpu"]["usable"]
    assert f"{numba.get_num_threads()} threads" in backends["cpu"]["detail"]


def test_cuda_backend_matches_import_cupy(report):
    """Usable exactly when CuPy sees a device; otherwise the reason is import_cupy's."""
    cuda = report["backends"]["cuda"]
    try:
        import_cupy()
    except DeviceError as err:
        assert not cuda["usable"]
        assert cuda["why"] == str(err)
        if importlib.util.find_spec("cupy") is None:
            assert "pip install 'fcn-scratch[gpu]'" in cuda["why"]
        else:  # installed, but no driver or device: the reason is CuPy's
            assert "CuPy is installed but" in cuda["why"]
    else:
        assert cuda["usable"], cuda.get("why")


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
