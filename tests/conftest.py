"""Shared fixtures. With FCN_SCRATCH_REQUIRE_TORCH=1 (set by .ci/run), a missing torch is
an error instead of a skip, so the PyTorch parity tests cannot silently vanish."""

import os

import numpy as np
import pytest


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
