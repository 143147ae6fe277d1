"""The stand-in's device array: a NumPy subclass that behaves like ``cupy.ndarray`` where
the difference matters.

Arithmetic, ``@``, reductions, views and NumPy functions work and give device arrays
(0-d arrays, never host scalars, as in CuPy). What CuPy refuses is refused, with a
TypeError: implicit conversion to the host (``numpy.asarray(a)`` once ``install`` has
run, ``float(a)``, ``int(a)``, ``bool(a)``, formatting), an operation that mixes a device
array with a ``numpy.ndarray``, and handing a device array to a Numba (CPU) kernel. The
explicit ways back, ``get``, ``item`` and ``tolist``, are recorded in ``transfers``.
"""

import numpy as np
from numba.extending import typeof_impl

# numpy.asarray and numpy.array as they were before ``install`` made them refuse device arrays.
host_asarray = np.asarray
host_array = np.array

IMPLICIT = (
    "Implicit conversion to a NumPy array is not allowed. "
    "Please use `.get()` to construct a NumPy array explicitly."
)  # CuPy's own message

transfers: list[tuple[str, tuple]] = []
"""Every device-to-host read since ``install``: (method, shape of the array read)."""


def unwrap(value, where: str):
    """Device arrays (also inside lists and tuples) as plain NumPy views of the same memory;
    a ``numpy.ndarray`` is refused, as CuPy refuses host arrays."""
    if isinstance(value, ndarray):
        return value.view(np.ndarray)
    if isinstance(value, np.ndarray):
        raise TypeError(
            f"cupy stand-in: {where} got a numpy.ndarray next to device arrays; CuPy does "
            "not mix host and device arrays (move it with cupy.asarray)"
        )
    if isinstance(value, (list, tuple)):
        return type(value)(unwrap(v, where) for v in value)
    return value


def wrap(value):
    """NumPy results as device arrays: arrays become ``ndarray`` views, scalars 0-d arrays."""
    if isinstance(value, np.ndarray):
        return value.view(ndarray)
    if isinstance(value, np.generic):
        return host_asarray(value).view(ndarray)
    if isinstance(value, (list, tuple)):
        return type(value)(wrap(v) for v in value)
    return value


class ndarray(np.ndarray):  # CuPy's name
    """An array "on the device": NumPy memory that refuses to leave implicitly."""

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        where = f"numpy.{ufunc.__name__}"
        out = kwargs.get("out")  # in place (a += b): a tuple of device arrays
        kwargs = {k: unwrap(v, where) for k, v in kwargs.items()}
        result = getattr(ufunc, method)(*unwrap(inputs, where), **kwargs)
        if out is not None:
            return out[0] if len(out) == 1 else out
        return wrap(result)

    def __array_function__(self, func, types, args, kwargs):
        where = f"numpy.{func.__name__}"
        kwargs = {k: unwrap(v, where) for k, v in kwargs.items()}
        return wrap(func(*unwrap(args, where), **kwargs))

    def __getitem__(self, key):
        return wrap(super().__getitem__(key))

    def argmax(self, *args, **kwargs):
        return wrap(super().argmax(*args, **kwargs))

    def argmin(self, *args, **kwargs):
        return wrap(super().argmin(*args, **kwargs))

    # ---- leaving the device: explicit only ------------------------------------------------

    def get(self, stream=None, order="C", out=None) -> np.ndarray:
        """A NumPy copy (the one way CuPy copies an array to the host)."""
        transfers.append(("get", self.shape))
        return host_array(self.view(np.ndarray), order=order, copy=True)

    def item(self, *args):
        transfers.append(("item", self.shape))
        return self.view(np.ndarray).item(*args)

    def tolist(self):
        transfers.append(("tolist", self.shape))
        return self.view(np.ndarray).tolist()

    def __array__(self, dtype=None, copy=None):
        raise TypeError(IMPLICIT)

    def _implicit(self, to: str):
        raise TypeError(
            f"cupy stand-in: implicit conversion of a device array to {to} (a hidden "
            "device-to-host copy); use .get() or .item()"
        )

    def __float__(self):
        self._implicit("float")

    def __int__(self):
        self._implicit("int")

    def __index__(self):
        self._implicit("an index")

    def __complex__(self):
        self._implicit("complex")

    def __bool__(self):
        self._implicit("bool")

    def __format__(self, spec):
        self._implicit("a formatted string")

    def __repr__(self) -> str:
        return "device " + repr(self.view(np.ndarray))

    __str__ = __repr__

    # ---- what CuPy arrays have beyond NumPy's ---------------------------------------------

    @property
    def device(self):
        from cupy_standin.cuda import Device

        return Device(0)

    @property
    def __cuda_array_interface__(self) -> dict:
        strides = None if self.flags.c_contiguous else self.strides
        return {
            "shape": self.shape,
            "typestr": self.dtype.str,
            "data": (self.ctypes.data, False),
            "strides": strides,
            "version": 3,
        }


@typeof_impl.register(ndarray)
def _refuse_numba(value, context):
    raise TypeError(
        "cupy stand-in: a device array was passed to a Numba (CPU) kernel; dispatch on the "
        "array's device (fcn_scratch.kernels.for_array) instead"
    )
