"""``cupy.random.default_rng`` of the stand-in: draws made on the host, returned on the device.

The stream differs from NumPy's for the same seed, as CuPy's does: code must not expect a
CPU run and a CUDA run to draw the same numbers.
"""

import numpy as np

from cupy_standin._core import wrap


class Generator:
    def __init__(self, seed=None):
        self._rng = np.random.default_rng(np.random.SeedSequence([0xC0FFEE, seed or 0]))

    def __getattr__(self, name: str):
        draw = getattr(self._rng, name)
        return lambda *args, **kwargs: wrap(draw(*args, **kwargs))


def default_rng(seed=None) -> Generator:
    return Generator(seed)
