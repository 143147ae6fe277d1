"""Synthetic shapes: a seeded segmentation task that a small FCN learns in minutes.

Each image has a textured background (a random base colour, smooth colour clouds and faint
stripes) and 1 to ``max_shapes`` shapes of random kind, size, position, rotation and colour.
Colours are drawn independently of the kind (the shape must be recognised by its outline),
but far enough from the background base colour and from earlier shapes that every border is
visible. Later shapes occlude earlier ones. Pixel noise covers everything.
"""

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from fcn_scratch.data.base import IGNORE_INDEX, ArrayDataset
from fcn_scratch.data.render import KINDS, ShapeParams, draw_shapes, ignore_band, smooth_noise

_CHUNK = 256  # images rendered at once: keeps the temporaries of one slot in cache
_MIN_CONTRAST_BACKGROUND = 0.4  # Euclidean RGB distance, shape colour to background base
_MIN_CONTRAST_SHAPES = 0.3  # shape colour to the colour of every earlier shape


class ShapesDataset(ArrayDataset):
    """``n`` images ``(3, H, W)`` float32 in [0, 1] with labels ``(H, W)`` int64.

    Label 0 is background and ``1 + i`` is ``kinds[i]`` (``class_names`` lists them);
    with ``ignore_border = r > 0`` pixels within ``r`` of a border become 255 (see
    ``render.ignore_band``). The data depend only on the arguments: the same arguments give
    the same arrays, bit for bit.

    Args:
        n: number of images.
        size: image size, an int or (H, W).
        seed: seed of the generator that draws everything (an int, or a sequence of ints
            such as (seed, epoch) for a fresh set per epoch).
        ignore_border: radius of the ignore band around every border, in pixels (0: none).
        kinds: shape kinds, a subset of ``render.KINDS`` in class order.
        min_shapes, max_shapes: shapes per image, drawn uniformly in this range.
        radius: area-equivalent radius range as fractions of min(H, W).
        noise: standard deviation of the Gaussian pixel noise.
        texture: strength of the background's clouds and stripes (0: flat colour, 1: default).
        workers: threads that render chunks of images (None: up to 4, one per core); the
            result does not depend on it.
    """

    def __init__(
        self,
        n: int,
        size: int | tuple[int, int] = 64,
        seed: int | Sequence[int] = 0,
        ignore_border: int = 0,
        kinds: Sequence[str] = ("circle", "square", "triangle"),
        min_shapes: int = 1,
        max_shapes: int = 4,
        radius: tuple[float, float] = (0.08, 0.2),
        noise: float = 0.04,
        texture: float = 1.0,
        workers: int | None = None,
    ):
        size = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
        _check_args(n, size, ignore_border, kinds, min_shapes, max_shapes, radius, noise, texture)
        self.kinds = tuple(kinds)
        self.seed = seed
        self.ignore_border = ignore_border
        seeds = np.random.SeedSequence(seed)
        rng = np.random.default_rng(seeds)
        h, w = size
        base = rng.uniform(0.0, 1.0, size=(n, 3))  # background base colours
        params = sample_params(n, size, len(self.kinds), base, rng, min_shapes, max_shapes, radius)
        images = np.empty((n, 3, h, w), dtype=np.float32)
        labels = np.zeros((n, h, w), dtype=np.uint8)
        starts = range(0, n, _CHUNK)
        chunk_seeds = seeds.spawn(len(starts))  # one generator per chunk: thread-order free

        def render(start: int, chunk_seed: np.random.SeedSequence) -> None:
            crng = np.random.default_rng(chunk_seed)
            rows = slice(start, min(start + _CHUNK, n))
            images[rows] = background(base[rows], size, crng, texture)
            draw_shapes(images[rows], labels[rows], _take(params, rows), self.kinds)
            images[rows] += noise * crng.standard_normal(images[rows].shape, dtype=np.float32)
            np.clip(images[rows], 0.0, 1.0, out=images[rows])
            if ignore_border > 0:
                labels[rows] = ignore_band(labels[rows], ignore_border, IGNORE_INDEX)

        with ThreadPoolExecutor(workers or _default_workers()) as pool:
            list(pool.map(render, starts, chunk_seeds))
        self.params = params
        super().__init__(images, labels, ("background", *self.kinds))


def sample_params(
    n: int,
    size: tuple[int, int],
    num_kinds: int,
    base: np.ndarray,
    rng: np.random.Generator,
    min_shapes: int = 1,
    max_shapes: int = 4,
    radius: tuple[float, float] = (0.08, 0.2),
) -> ShapeParams:
    """Random shapes for ``n`` images of ``size`` whose background base colours are
    ``base: (N, 3)``; slots past each image's shape count get kind -1."""
    h, w = size
    s = max_shapes
    count = rng.integers(min_shapes, max_shapes, endpoint=True, size=n)  # (N,)
    kind = rng.integers(0, num_kinds, size=(n, s))  # (N, S)
    kind[np.arange(s)[None, :] >= count[:, None]] = -1
    r = rng.uniform(*radius, size=(n, s)) * min(h, w)  # (N, S)
    cx = r / 2 + rng.uniform(size=(n, s)) * (w - r)  # at most half a radius past the edge
    cy = r / 2 + rng.uniform(size=(n, s)) * (h - r)
    angle = rng.uniform(0.0, 2 * np.pi, size=(n, s))
    direction = rng.uniform(0.0, 2 * np.pi, size=(n, s))
    strength = rng.uniform(0.0, 0.15, size=(n, s))
    shade = strength[..., None] * np.stack([np.cos(direction), np.sin(direction)], axis=-1)
    colour = _contrasting_colours(base, s, rng)  # (N, S, 3)
    return ShapeParams(kind, cx, cy, r, angle, colour, shade)


def _contrasting_colours(base: np.ndarray, slots: int, rng: np.random.Generator) -> np.ndarray:
    """Uniform RGB colours ``(N, S, 3)``, redrawn where one is too close to the background base
    or to an earlier slot's colour (a bounded number of rounds, so always deterministic)."""
    n = base.shape[0]
    colour = rng.uniform(size=(n, slots, 3))
    for s in range(slots):
        for _ in range(32):
            close = np.linalg.norm(colour[:, s] - base, axis=1) < _MIN_CONTRAST_BACKGROUND
            for t in range(s):
                close |= np.linalg.norm(colour[:, s] - colour[:, t], axis=1) < _MIN_CONTRAST_SHAPES
            if not close.any():
                break
            colour[close, s] = rng.uniform(size=(int(close.sum()), 3))
    return colour


def background(
    base: np.ndarray, size: tuple[int, int], rng: np.random.Generator, texture: float = 1.0
) -> np.ndarray:
    """Textured backgrounds ``(N, 3, H, W)`` float32 around base colours ``base: (N, 3)``:
    smooth colour clouds (amplitude 0.12) plus faint stripes (up to 0.08) of random period
    (4 to 16 px) and direction, both scaled by ``texture``."""
    n = base.shape[0]
    h, w = size
    clouds = (0.12 * texture) * smooth_noise(n, size, cells=5, rng=rng)  # (N, 3, H, W)
    theta = rng.uniform(0.0, np.pi, size=n)
    freq = 2 * np.pi / rng.uniform(4.0, 16.0, size=n)
    phase = rng.uniform(0.0, 2 * np.pi, size=n)
    amp = rng.uniform(0.0, 0.08 * texture, size=(n, 3)).astype(np.float32)
    ys = np.arange(h, dtype=np.float32)[None, :, None]  # (1, H, 1)
    xs = np.arange(w, dtype=np.float32)[None, None, :]  # (1, 1, W)
    kx = (freq * np.cos(theta)).astype(np.float32)[:, None, None]
    ky = (freq * np.sin(theta)).astype(np.float32)[:, None, None]
    stripes = np.sin(kx * xs + ky * ys + phase.astype(np.float32)[:, None, None])  # (N, H, W)
    out = clouds + amp[:, :, None, None] * stripes[:, None]
    out += base.astype(np.float32)[:, :, None, None]
    return out  # (N, 3, H, W)


def _default_workers() -> int:
    """Threads for rendering: NumPy releases the GIL inside its loops, so chunks overlap."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(4, cores or 1))


def _take(params: ShapeParams, rows: slice) -> ShapeParams:
    return ShapeParams(*(getattr(params, f)[rows] for f in ShapeParams.__dataclass_fields__))


def _check_args(
    n, size, ignore_border, kinds, min_shapes, max_shapes, radius, noise, texture
) -> None:
    if n < 0:
        raise ValueError(f"ShapesDataset: n must be >= 0, got {n}")
    if len(size) != 2 or min(size) < 8:
        raise ValueError(f"ShapesDataset: size must be an int or (H, W), each >= 8, got {size}")
    if ignore_border < 0:
        raise ValueError(f"ShapesDataset: ignore_border must be >= 0, got {ignore_border}")
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds or len(set(kinds)) != len(kinds):
        raise ValueError(
            f"ShapesDataset: kinds must be distinct names from {KINDS}, got {tuple(kinds)}"
        )
    if not 0 <= min_shapes <= max_shapes or max_shapes < 1:
        raise ValueError(
            "ShapesDataset: need 0 <= min_shapes <= max_shapes and max_shapes >= 1, got "
            f"min_shapes={min_shapes}, max_shapes={max_shapes}"
        )
    if not 0 < radius[0] <= radius[1] <= 0.5:
        raise ValueError(f"ShapesDataset: radius must satisfy 0 < lo <= hi <= 0.5, got {radius}")
    if noise < 0 or texture < 0:
        raise ValueError(
            f"ShapesDataset: noise and texture must be >= 0, got noise={noise}, texture={texture}"
        )
