"""What rendering an epoch of synthetic shapes costs, part by part, on one thread.

    python benchmarks/bench_render.py              # 2048 images of 64x64, the default recipe's

The default training run renders the next epoch's images in a background thread while
this one trains, so every second here is taken from the training on a 2-core machine.
Prints the best of ``--repeat`` runs of each part over the whole epoch (in chunks of 256
images, as ``ShapesDataset`` renders them), and ``draw_shapes`` (the Numba loop) beside
``draw_shapes_reference`` (NumPy over the whole grid), after checking they draw the same
bits.
"""

import argparse
import inspect
import sys
import time

import numpy as np

from fcn_scratch.data import ShapesDataset
from fcn_scratch.data.render import draw_shapes, draw_shapes_reference, ignore_band
from fcn_scratch.data.shapes import _CHUNK, _take, background, sample_params

KINDS = inspect.signature(ShapesDataset).parameters["kinds"].default  # the recipe's kinds


def best_seconds(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=2048)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    size, n = (args.size, args.size), args.images
    rng = np.random.default_rng(0)
    base = rng.uniform(size=(n, 3))
    params = sample_params(n, size, len(KINDS), base, rng)
    images = background(base, size, rng)
    labels = np.zeros((n, *size), dtype=np.uint8)
    drawn = [images.copy(), labels.copy(), images.copy(), labels.copy()]
    draw_shapes(drawn[0], drawn[1], params, KINDS)  # also compiles (or loads) the kernel
    draw_shapes_reference(drawn[2], drawn[3], params, KINDS)
    same = np.array_equal(drawn[0].view(np.uint32), drawn[2].view(np.uint32))
    same = same and np.array_equal(drawn[1], drawn[3])
    chunks = [slice(s, min(s + _CHUNK, n)) for s in range(0, n, _CHUNK)]
    canvas, marks = images.copy(), labels.copy()  # drawn over again: the same work each time

    def per_chunk(fn):
        return lambda: [fn(rows) for rows in chunks]

    parts = {
        "background (clouds, stripes)": per_chunk(
            lambda rows: background(base[rows], size, np.random.default_rng(1))
        ),
        "draw_shapes (Numba)": per_chunk(
            lambda rows: draw_shapes(canvas[rows], marks[rows], _take(params, rows), KINDS)
        ),
        "draw_shapes_reference (NumPy)": per_chunk(
            lambda rows: draw_shapes_reference(
                canvas[rows], marks[rows], _take(params, rows), KINDS
            )
        ),
        "pixel noise (standard_normal)": per_chunk(
            lambda rows: np.random.default_rng(2).standard_normal(
                images[rows].shape, dtype=np.float32
            )
        ),
        "ignore band": per_chunk(lambda rows: ignore_band(drawn[1][rows], 1)),
    }
    print(
        f"{n} images of {size[0]}x{size[1]}, one thread, best of {args.repeat}; "
        f"draw_shapes == draw_shapes_reference bit for bit: {same}"
    )
    for name, fn in parts.items():
        print(f"  {name:32s} {best_seconds(fn, args.repeat):7.3f} s")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
