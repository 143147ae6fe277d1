"""Where the main job's time goes, in the trainer's process of a run with lane processes.

    python benchmarks/profile_job.py --epochs 4

Runs the default recipe of ``fcn-scratch train`` (``--epochs`` of it, 2 threads: lane 0 in
this process, lane 1 in a forked one) with timers around the parent's parts of a step (the
wrappers cost about a microsecond per call) and prints milliseconds per step: lane 0's
forward and backward, sending lane 1 its request, waiting for lane 1's reply, adding the
lanes' gradients, Adam, the held-out evaluation and checkpoint at the end of each epoch
(spread over the epoch's steps), and the rest (the loop, the data, the schedule). Lane 1
computes while the parent runs lane 0; it waits while the parent adds, updates and
evaluates.
"""

import argparse
import sys
import time
from collections import defaultdict

from profile_step import timed

from fcn_scratch import lane_processes, optim, parallel
from fcn_scratch.parallel import limit_threads
from fcn_scratch.train import TrainConfig, Trainer

PARTS = {
    "sending lane 1 its request": [(lane_processes._Worker, "send")],
    "waiting for lane 1's reply": [(lane_processes.ProcessLanes, "_collect")],
    "adding the lanes' gradients": [(lane_processes.ProcessLanes, "reduce_grads")],
    "Adam": [(optim.Adam, "step")],
}
END_EPOCH = "evaluation and checkpoint, per step"
LANE_0 = "lane 0: forward, loss, backward"


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=4)
    args = p.parse_args(argv)
    limit_threads(2)
    spent: dict[str, float] = defaultdict(float)
    for part, targets in PARTS.items():
        for owner, name in targets:
            setattr(owner, name, timed(getattr(owner, name), part, spent))
    Trainer._end_epoch = alone(Trainer._end_epoch, END_EPOCH, spent)
    in_lane = parallel.in_lane
    parallel.in_lane = lambda fn, seed: timed(in_lane(fn, seed), LANE_0, spent)
    trainer = Trainer(TrainConfig(out=None, epochs=args.epochs), progress=False)
    start = time.perf_counter()
    trainer.fit()
    wall = time.perf_counter() - start
    steps = trainer.step
    total = wall / steps * 1e3
    print(
        f"default recipe, {args.epochs} epochs, 2 lanes: {wall:.1f} s, {steps} steps, "
        f"{total:.2f} ms per step\n"
    )
    print("| part of the parent's time | ms per step | share |")
    print("|---|---:|---:|")
    rows = {part: spent[part] / steps * 1e3 for part in (LANE_0, *PARTS, END_EPOCH)}
    rows["rest (the loop, the data, the schedule)"] = total - sum(rows.values())
    for part, ms in rows.items():
        print(f"| {part} | {ms:.2f} | {ms / total:.0%} |")
    return 0


def alone(fn, part: str, spent: dict):
    """``fn`` timed as ``part``, the other parts' timers not counting within it (the
    evaluation runs the lanes too)."""

    def wrapper(*args, **kwargs):
        before, start = dict(spent), time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spent.update(before)
            spent[part] += time.perf_counter() - start

    return wrapper


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
