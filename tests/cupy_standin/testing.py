"""``cupy.testing`` of the stand-in: NumPy's assertions on device arrays (not counted as
transfers: they are the test's reads, not the library's)."""

import numpy as np

from cupy_standin._core import ndarray


def _host(a):
    return a.view(np.ndarray) if isinstance(a, ndarray) else a


def assert_allclose(actual, desired, *args, **kwargs) -> None:
    np.testing.assert_allclose(_host(actual), _host(desired), *args, **kwargs)


def assert_array_equal(actual, desired, *args, **kwargs) -> None:
    np.testing.assert_array_equal(_host(actual), _host(desired), *args, **kwargs)
