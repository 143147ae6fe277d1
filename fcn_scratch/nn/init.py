"""Weight initialisers: He (Kaiming) normal and uniform, zeros, and the bilinear kernel.

Initialisers return NumPy arrays (layers wrap them in Tensors and may move them to a
device later). Random ones draw from an explicit ``numpy.random.Generator``; ``as_generator``
turns a seed into one, so a model built from a seed is the same every time.
"""

import math

import numpy as np

RngLike = np.random.Generator | int | None


def as_generator(rng: RngLike) -> np.random.Generator:
    """A Generator from a Generator (returned as is), an int seed, or None.

    None means the library's global CPU generator (``fcn_scratch.random``), which
    ``fcn_scratch.random.manual_seed`` seeds.
    """
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None:
        from fcn_scratch import random

        return random.generator("cpu")
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise TypeError(f"init: rng must be a numpy Generator, an int seed or None, got {rng!r}")


def fan_in(shape: tuple[int, ...]) -> int:
    """Inputs feeding one output of a conv weight ``(C_out, C_in, KH, KW)``: C_in*KH*KW."""
    return int(np.prod(shape[1:]))


def kaiming_normal(
    shape: tuple[int, ...],
    rng: RngLike = None,
    fan: int | None = None,
    gain: float = math.sqrt(2.0),
    dtype=np.float32,
) -> np.ndarray:
    """He normal: N(0, std^2) with std = gain / sqrt(fan); fan defaults to ``fan_in(shape)``.

    The default gain sqrt(2) keeps activation variance constant through ReLU layers.
    """
    std = gain / math.sqrt(fan_in(shape) if fan is None else fan)
    return (as_generator(rng).standard_normal(shape) * std).astype(dtype)


def kaiming_uniform(
    shape: tuple[int, ...],
    rng: RngLike = None,
    fan: int | None = None,
    gain: float = math.sqrt(2.0),
    dtype=np.float32,
) -> np.ndarray:
    """He uniform: U(-b, b) with b = gain * sqrt(3 / fan), the same variance as He normal."""
    bound = gain * math.sqrt(3.0 / (fan_in(shape) if fan is None else fan))
    return as_generator(rng).uniform(-bound, bound, size=shape).astype(dtype)


def zeros(shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
    return np.zeros(shape, dtype=dtype)


def bilinear_filter(kernel_size: int, dtype=np.float32) -> np.ndarray:
    """(K, K) bilinear interpolation weights, the tent 1 - |i - centre| / factor per axis.

    For upsampling by ``factor`` use K = 2 * factor with stride ``factor``: each input
    pixel spreads into its neighbourhood with weights falling linearly to zero one input
    cell away, so a transposed conv with this filter interpolates linearly between inputs.
    """
    if kernel_size < 1:
        raise ValueError(f"bilinear_filter: kernel_size must be positive, got {kernel_size}")
    factor = (kernel_size + 1) // 2
    centre = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    tent = 1.0 - np.abs(np.arange(kernel_size) - centre) / factor  # (K,)
    return np.outer(tent, tent).astype(dtype)  # (K, K)


def bilinear_kernel(channels: int, kernel_size: int, dtype=np.float32) -> np.ndarray:
    """The FCN upsampling weight: (C, C, K, K), bilinear on the diagonal, zero elsewhere.

    Used as a ConvTranspose2d weight ``(C_in, C_out, K, K)``, channel c is upsampled into
    channel c alone.
    """
    if channels < 1:
        raise ValueError(f"bilinear_kernel: channels must be positive, got {channels}")
    w = np.zeros((channels, channels, kernel_size, kernel_size), dtype=dtype)
    w[np.arange(channels), np.arange(channels)] = bilinear_filter(kernel_size, dtype)
    return w  # (C, C, K, K)
