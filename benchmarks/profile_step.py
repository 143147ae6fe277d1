"""Where the time of one training step goes: the default model, one thread, one lane.

    python benchmarks/profile_step.py --batch 8 --steps 30

Wraps the ops and kernels with timers (the wrappers cost about a microsecond per call) and
prints milliseconds per step by part: the convolutions' GEMMs (what is left of the conv ops
once their kernels are taken out), im2col/col2im and the transposed convolutions' phase
scatters, Winograd's tile transforms, max pooling, ReLU, the loss, the optimiser, and the
rest (autograd, module calls, Python).
"""

import argparse
import sys
import time
from collections import defaultdict

import numpy as np

from fcn_scratch import optim
from fcn_scratch.kernels import cpu, subpixel, winograd
from fcn_scratch.ops import activation, conv, loss, pool
from fcn_scratch.parallel import limit_threads
from fcn_scratch.train import TrainConfig, Trainer

CONV = "conv GEMMs, bias, reshapes"
IM2COL = "im2col / col2im, phase scatters"
WINOGRAD = "Winograd tile transforms"
PARTS = {
    CONV: [
        (conv, "conv2d_forward"),
        (conv, "conv2d_backward"),
        (conv, "conv_transpose2d_forward"),
        (conv, "conv_transpose2d_backward"),
    ],
    IM2COL: [
        (cpu, "im2col"),
        (cpu, "col2im"),
        (subpixel, "phases_to_image"),
        (subpixel, "image_to_phases"),
    ],
    WINOGRAD: [
        (winograd, name)
        for name in (
            "input_tiles",
            "output_tiles",
            "output_grad_tiles",
            "input_grad_tiles",
            "to_split_rows",
            "from_split_rows",
        )
    ],
    "max pooling": [(pool, "max_pool2d_forward"), (pool, "max_pool2d_backward")],
    "ReLU": [(activation, "relu_forward"), (activation, "relu_backward")],
    "cross-entropy": [(loss, "cross_entropy_forward"), (loss, "cross_entropy_backward")],
    "optimiser (Adam)": [(optim.Adam, "step")],
}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=30)
    args = p.parse_args(argv)
    limit_threads(1)
    trainer = Trainer(
        TrainConfig(out=None, batch_size=args.batch, train_size=args.batch, val_size=1),
        progress=False,
    )
    x, y = trainer.train_set.get_batch(np.arange(args.batch))

    def step():
        trainer.train_step(x, y)
        trainer.optimizer.step()

    spent: dict[str, float] = defaultdict(float)
    for part, targets in PARTS.items():
        for owner, name in targets:
            setattr(owner, name, timed(getattr(owner, name), part, spent))
    for _ in range(3):
        step()
    spent.clear()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    total = (time.perf_counter() - start) / args.steps * 1e3
    # the conv ops' time includes their kernels': count those once, under their own parts
    print(f"one step, default model, batch {args.batch}, 1 thread: {total:.1f} ms\n")
    print("| part | ms per step | share |")
    print("|---|---:|---:|")
    rows = {part: seconds / args.steps * 1e3 for part, seconds in spent.items()}
    rows[CONV] -= rows[IM2COL] + rows[WINOGRAD]
    rows["rest (autograd, modules, Python)"] = total - sum(rows.values())
    for part, ms in rows.items():
        print(f"| {part} | {ms:.1f} | {ms / total:.0%} |")
    return 0


def timed(fn, part: str, spent: dict):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[part] += time.perf_counter() - start

    return wrapper


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
