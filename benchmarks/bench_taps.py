"""im2col and col2im on small maps, by rows and through the tap table, in one process.

    python benchmarks/bench_taps.py

The Numba im2col / col2im take a table of the pixel each (tap, output) reads where the
output map has at most ``cpu.TABLE_PIXELS`` pixels (see ``fcn_scratch.kernels.cpu``). This
times both ways on one thread, in turns within one process (the machine's speed drifts
between processes; the two ways give the same bits, so turns are fair): first the kernels
alone on 3x3 convolutions with padding 1, every map through the table for the comparison
(batch 8, milliseconds, medians), then a training step of the default model
(``Trainer.train_step`` and Adam) at batch 4 and 8 by rows only and with the threshold, in
turns of 8 steps, 12 turns each way, printed as the median over turns of table / rows.
"""

import time

import numpy as np

from fcn_scratch.kernels import cpu
from fcn_scratch.parallel import limit_threads
from fcn_scratch.train import TrainConfig, Trainer

KERNEL_CASES = [(64, 2), (64, 4), (48, 8), (32, 16), (16, 32)]  # (channels, map side)
GEOMETRY = ((3, 3), (1, 1), (1, 1), (1, 1))  # kernel, stride, padding, dilation


def median_ms(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def in_turns(fn, settings: tuple, turns: int, repeat: int) -> dict:
    """fn's median ms with ``cpu.TABLE_PIXELS`` at each of ``settings``, ``turns`` times
    each, the order alternating from turn to turn: {setting: array of medians}."""
    table = cpu.TABLE_PIXELS
    medians = {pixels: [] for pixels in settings}
    try:
        for turn in range(turns):
            for pixels in settings[:: -1 if turn % 2 else 1]:
                cpu.TABLE_PIXELS = pixels
                medians[pixels].append(median_ms(fn, repeat))
    finally:
        cpu.TABLE_PIXELS = table
    return {pixels: np.array(m) for pixels, m in medians.items()}


def kernels() -> None:
    print("| channels | map | im2col rows | im2col table | col2im rows | col2im table |")
    print("|---:|---:|---:|---:|---:|---:|")
    rng = np.random.default_rng(0)
    for channels, side in KERNEL_CASES:
        cells = " | ".join(f"{ms:.3f}" for ms in kernel_times(rng, channels, side))
        print(f"| {channels} | {side}x{side} | {cells} |")


def kernel_times(rng, channels: int, side: int) -> tuple:
    """(im2col rows, im2col table, col2im rows, col2im table), ms, batch 8: the best
    medians of three turns, by rows and through the table whatever the map's size."""
    x = rng.standard_normal((8, channels, side, side), dtype=np.float32)
    col = cpu.im2col(x, *GEOMETRY, (side, side))
    unfold = in_turns(lambda: cpu.im2col(x, *GEOMETRY, (side, side)), (0, 2**62), 3, 200)
    fold = in_turns(
        lambda: cpu.col2im(col, (side, side), *GEOMETRY, (side, side)), (0, 2**62), 3, 200
    )
    return tuple(times.min() for times in (*unfold.values(), *fold.values()))


def steps() -> None:
    for batch in (4, 8):
        rows, tabled = step_turns(batch)
        print(
            f"step, default model, batch {batch}: rows {np.median(rows):.2f} ms, table "
            f"{np.median(tabled):.2f} ms, table / rows {np.median(tabled / rows):.3f}"
        )


def step_turns(batch: int) -> tuple:
    """The step's median ms in 12 turns of 8 steps each way: (rows, table), arrays."""
    trainer = Trainer(
        TrainConfig(out=None, batch_size=batch, train_size=batch, val_size=1), progress=False
    )
    x, y = trainer.train_set.get_batch(np.arange(batch))

    def step():
        trainer.train_step(x, y)
        trainer.optimizer.step()

    for _ in range(5):
        step()
    turns = in_turns(step, (0, cpu.TABLE_PIXELS), 12, 8)
    return turns[0], turns[cpu.TABLE_PIXELS]


def main() -> None:
    limit_threads(1)
    kernels()
    print()
    steps()


if __name__ == "__main__":
    main()
