"""Shared fixtures. With FCN_SCRATCH_REQUIRE_TORCH=1 (set by .ci/run), a missing torch is
an error instead of a skip, so the PyTorch parity tests cannot silently vanish. ``cp`` is
CuPy on a GPU, or the CuPy stand-in (tests/cupy_standin) where there is none."""

import os
import shutil

import numpy as np
import pytest
from cupy_standin import install as install_standin

from fcn_scratch import parallel
from fcn_scratch import random as fcn_random
from fcn_scratch.device import DeviceError, import_cupy
from fcn_scratch.kernels import cuda as kcuda


@pytest.fixture(autouse=True)
def keep_thread_limit():
    """Commands set the process's thread limit (``--threads``); later tests get theirs back."""
    threads = parallel.thread_count()
    yield
    if parallel.thread_count() != threads:
        parallel.limit_threads(threads)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def torch():
    if os.environ.get("FCN_SCRATCH_REQUIRE_TORCH") == "1":
        import torch
    else:
        torch = pytest.importorskip(
            "torch", reason="torch is not installed: pip install -e '.[torch]' (test oracle)"
        )
    torch.set_num_threads(1)
    return torch


@pytest.fixture
def cp(monkeypatch, tmp_path_factory):
    """CuPy where it sees a GPU; elsewhere the CuPy stand-in, installed for this test only
    (the device path then runs on the CPU, its kernels under the CUDA emulation)."""
    try:
        yield import_cupy()
        return
    except DeviceError as err:
        if shutil.which("g++") is None:
            pytest.skip(f"no GPU here ({err}), and no g++ to run the CUDA emulation")
    standin = install_standin(monkeypatch, tmp_path_factory.getbasetemp() / "cupy_standin")
    monkeypatch.setattr(fcn_random, "_generators", {})  # no generator from another test
    yield standin
    kcuda._module.cache_clear()  # a RawModule of the stand-in's must not outlive it
