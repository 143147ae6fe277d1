"""Launch plans for the CUDA kernels: names, grids, output buffers and scalar arguments.

Pure Python, no CuPy: ``cuda.py`` runs these plans on a GPU through ``cupy.RawModule``, and
the tests run the very same plans on the CPU, with the same ``.cu`` sources compiled by g++
against a small CUDA emulation header (``tests/cuda_emulation``). So what the emulation
checks is exactly what the GPU gets: kernel, grid, block and every argument.

A kernel's parameters are always ``(*inputs, *outputs, *scalars)``: the input arrays
(contiguous, of the dtypes in ``Launch.inputs``), freshly allocated output arrays (the
shapes and dtypes in ``Launch.outputs``), then the scalars, already typed as
``numpy.int32`` (C ``int``) or ``numpy.int64`` (C ``long long``): CuPy would pass a bare
Python int as ``long long``.

Every kernel is a grid-stride loop over a flat 64-bit index, one thread per output
element (or per (n, c, band of rows) for the scatter), so the grid is a 1-D run of
``BLOCK``-thread blocks, capped at ``MAX_BLOCKS``; larger problems loop.
"""

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BLOCK = 256  # threads per block
MAX_BLOCKS = 65536  # grid cap: beyond BLOCK * MAX_BLOCKS elements, threads loop
SCATTER_THREADS = 1 << 16  # threads the unpool scatter aims for (a few per SM slot)

SOURCES = tuple(sorted(Path(__file__).parent.glob("*.cu")))
"""The .cu files, compiled together into one module (names are unique across them)."""

KERNELS = ("im2col", "col2im", "maxpool2d_forward", "maxunpool2d_forward", "maxunpool2d_backward")
"""Every extern "C" kernel is one of these names with the suffix ``_f32`` or ``_f64``."""

Size = tuple[int, int]  # (h, w)
Window = tuple[Size, Size, Size, Size]  # (kernel_size, stride, padding, dilation)
Shape = tuple[int, ...]

SUFFIXES = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}


@dataclass(frozen=True)
class Launch:
    """One kernel launch, ready for ``RawKernel(grid, block, args)`` or the emulation."""

    kernel: str  # extern "C" name, e.g. "im2col_f32"
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    inputs: tuple[np.dtype, ...]  # dtype each input array is made contiguous as
    outputs: tuple[tuple[tuple[int, ...], np.dtype], ...]  # (shape, dtype) to allocate
    scalars: tuple[np.integer, ...]  # numpy.int32 / numpy.int64, after the arrays


def kernel_name(op: str, dtype) -> str:
    """``op`` plus the dtype suffix, e.g. ``kernel_name("im2col", float32) == "im2col_f32"``."""
    suffix = SUFFIXES.get(np.dtype(dtype))
    if suffix is None:
        raise TypeError(f"cuda {op}: expected a float32 or float64 array, got dtype {dtype}")
    return f"{op}_{suffix}"


def grid_1d(threads: int, max_blocks: int = MAX_BLOCKS) -> tuple[tuple[int, int, int], ...]:
    """Grid and block for ``threads`` logical threads: ceil(threads / BLOCK) blocks, capped."""
    blocks = min(max(1, -(-threads // BLOCK)), max_blocks)
    return (blocks, 1, 1), (BLOCK, 1, 1)


def _launch(op: str, dtype, threads: int, inputs, outputs, scalars, max_blocks: int) -> Launch:
    """A Launch of ``op`` for ``threads`` logical threads; int scalars become numpy.int32."""
    scalars = tuple(v if isinstance(v, np.integer) else np.int32(v) for v in scalars)
    return Launch(kernel_name(op, dtype), *grid_1d(threads, max_blocks), inputs, outputs, scalars)


def _window_plan(
    op: str, dtype, in_size: Size, window: Window, out_size: Size, outputs, max_blocks: int
) -> Launch:
    """A Launch of one of the three sliding-window kernels (im2col, col2im, max-pool forward).

    They take the same scalars, (H, W, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW, total), and run
    one thread per element of their first output (``total`` of them).
    """
    total = math.prod(outputs[0][0])
    geometry = (*in_size, *(v for pair in window for v in pair), *out_size, np.int64(total))
    return _launch(op, dtype, total, (np.dtype(dtype),), outputs, geometry, max_blocks)


def im2col(
    x_shape: Shape, dtype, window: Window, out_size: Size, *, max_blocks: int = MAX_BLOCKS
) -> Launch:
    """x: (N, C, H, W) -> col: (N, C*KH*KW, OH*OW); one thread per col element."""
    N, C, H, W = x_shape
    (KH, KW), (OH, OW) = window[0], out_size
    col = ((N, C * KH * KW, OH * OW), np.dtype(dtype))
    return _window_plan("im2col", dtype, (H, W), window, out_size, (col,), max_blocks)


def col2im(
    col_shape: Shape,
    dtype,
    in_size: Size,
    window: Window,
    out_size: Size,
    *,
    max_blocks: int = MAX_BLOCKS,
) -> Launch:
    """col: (N, C*KH*KW, OH*OW) -> x: (N, C, H, W); one thread per image element (a gather)."""
    KH, KW = window[0]
    x = ((col_shape[0], col_shape[1] // (KH * KW), *in_size), np.dtype(dtype))
    return _window_plan("col2im", dtype, in_size, window, out_size, (x,), max_blocks)


def maxpool2d_forward(
    x_shape: Shape, dtype, window: Window, out_size: Size, *, max_blocks: int = MAX_BLOCKS
) -> Launch:
    """x: (N, C, H, W) -> y: (N, C, OH, OW), idx: (N, C, OH, OW) int64; one thread per output."""
    N, C, H, W = x_shape
    y_shape = (N, C, *out_size)
    outputs = ((y_shape, np.dtype(dtype)), (y_shape, np.dtype(np.int64)))
    return _window_plan("maxpool2d_forward", dtype, (H, W), window, out_size, outputs, max_blocks)


def maxunpool2d_forward(
    x_shape: Shape,
    dtype,
    out_size: Size,
    *,
    max_blocks: int = MAX_BLOCKS,
    target_threads: int = SCATTER_THREADS,
) -> Launch:
    """x, idx: (N, C, OH, OW) -> y: (N, C, H, W); one thread per (n, c, band of rows of y).

    Each of the N*C planes gets ``bands`` threads, enough to reach about ``target_threads``
    in all, at most one per row: every thread scans the whole pooled plane, so more bands
    cost more reads, fewer leave the GPU idle.
    """
    N, C, OH, OW = x_shape
    (H, W), dtype = out_size, np.dtype(dtype)
    bands = min(H, max(1, -(-target_threads // max(N * C, 1))))
    total = N * C * bands
    inputs, outputs = (dtype, np.dtype(np.int64)), (((N, C, H, W), dtype),)
    scalars = (OH * OW, H, W, bands, np.int64(total))
    return _launch("maxunpool2d_forward", dtype, total, inputs, outputs, scalars, max_blocks)


def maxunpool2d_backward(
    dy_shape: Shape, dtype, idx_shape: Shape, *, max_blocks: int = MAX_BLOCKS
) -> Launch:
    """dy: (N, C, H, W), idx: (N, C, OH, OW) -> dx: (N, C, OH, OW); one thread per pooled cell."""
    N, C, OH, OW = idx_shape
    H, W = dy_shape[2:]
    dtype = np.dtype(dtype)
    total = N * C * OH * OW
    inputs, outputs = (dtype, np.dtype(np.int64)), ((tuple(idx_shape), dtype),)
    scalars = (OH * OW, H * W, np.int64(total))
    return _launch("maxunpool2d_backward", dtype, total, inputs, outputs, scalars, max_blocks)
