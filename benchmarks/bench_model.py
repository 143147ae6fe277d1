"""One FCN training step, ours against PyTorch, each timed alone in a process of its own.

    python benchmarks/bench_model.py                  # the table below, 1 thread and all cores
    python benchmarks/bench_model.py --busy 1         # quiet and beside a busy program

A step is forward, softmax cross-entropy (255 ignored), backward and an Adam update: ours
through ``Trainer.train_step`` (the batch split across lanes; on Linux lanes 1.. run in
processes of their own), torch through the twin of
``models/torch_mirror.py`` with our weights copied in. First a parity check (logits and
every gradient agree to float32 tolerances; exit status 1 if not), then, for each case and
thread count, our process and then torch's, never interleaved within a process: torch's
OpenMP threads keep spinning after each op and would steal the cores from whatever runs
next in its process. Whole runs alternate (ours, torch, ours, ...) and each side keeps its
best run, so that a shared, noisy machine favours neither.

Cases: the default model (TrainConfig) at batch 8 and 16, and a wider one (widths
32,64,128,128,128, two convs per stage, fc width 256) at batch 16, on 64x64 images.
``--busy N`` measures what N busy neighbours cost instead: programs that keep one core each
busy (pure Python loops) run beside every other run of each side, and the table gives each
side's step quiet and beside them, the slowdown, how many cores the neighbours took while
our steps ran (from the kernel's accounts of their CPU time, ``/proc/PID/schedstat``) and the
slowdown that taking that share of the machine away would cause on its own: a step should
slow down by about that, not more.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

CASES = {
    "default": {},
    "wide": {
        "widths": (32, 64, 128, 128, 128),
        "convs_per_stage": (2, 2, 2, 2, 2),
        "fc_width": 256,
    },
}
RTOL = 1e-4  # float32 parity: relative error of whole arrays, in the 2-norm


def make_trainer(case: str, batch: int):
    from fcn_scratch.train import TrainConfig, Trainer

    config = TrainConfig(out=None, batch_size=batch, train_size=batch, val_size=1, **CASES[case])
    return Trainer(config, progress=False)


WARMUP = 40  # steps before the timed ones: past the lanes' first two trials of a placement


def time_steps(step, repeat: int, warmup: int = WARMUP) -> list[float]:
    """The times of ``repeat`` steps after ``warmup`` untimed ones (for ours, long enough for
    the lanes to settle where they compute, ``fcn_scratch.lane_placement``; torch gets the
    same)."""
    for _ in range(warmup):
        step()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        step()
        samples.append(time.perf_counter() - start)
    return samples


def cpu_seconds(pids) -> float:
    """The CPU time the processes ``pids`` (every thread of each) have had so far."""
    total = 0
    for pid in pids:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])  # nanoseconds on a CPU
    return total / 1e9


def watched(time_steps_fn, pids):
    """``time_steps_fn()``'s samples, and the cores the processes ``pids`` took meanwhile."""
    before, start = cpu_seconds(pids), time.perf_counter()
    samples = time_steps_fn()
    return samples, (cpu_seconds(pids) - before) / (time.perf_counter() - start)


def child(which: str, case: str, batch: int, threads: int, repeat: int, watch=()) -> tuple:
    """The step's times in seconds, and the cores the processes ``watch`` took meanwhile."""
    from fcn_scratch.parallel import limit_threads

    limit_threads(threads)
    trainer = make_trainer(case, batch)
    x, y = trainer.train_set.get_batch(np.arange(batch))
    if which == "ours":

        def step():
            trainer.train_step(x, y)
            trainer.optimizer.step()

        return watched(lambda: time_steps(step, repeat), watch)
    import torch

    from fcn_scratch.models.torch_mirror import torch_model

    torch.set_num_threads(threads)
    twin = torch_model(trainer.model)
    adam = torch.optim.Adam([p for p in twin.parameters() if p.requires_grad], lr=1e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    def torch_step():
        adam.zero_grad()
        loss = torch.nn.functional.cross_entropy(twin(xt), yt, ignore_index=255)
        loss.item()
        loss.backward()
        adam.step()

    return watched(lambda: time_steps(torch_step, repeat), watch)


def parity(case: str, batch: int) -> float:
    """The worst relative error over logits and gradients, ours against torch."""
    import torch

    from fcn_scratch import Tensor
    from fcn_scratch import functional as F
    from fcn_scratch.models.torch_mirror import torch_model

    trainer = make_trainer(case, batch)
    model = trainer.model
    for p in (model.score_fr, model.score_pool4, model.score_pool3):  # non-zero gradients
        p.weight.data[...] = np.random.default_rng(0).standard_normal(p.weight.shape) * 0.1
    twin = torch_model(model)
    x, y = trainer.train_set.get_batch(np.arange(batch))
    logits = model(Tensor(x))
    F.cross_entropy(logits, y).backward()
    logits_t = twin(torch.from_numpy(x))
    torch.nn.functional.cross_entropy(logits_t, torch.from_numpy(y), ignore_index=255).backward()

    def rel(a, b):
        return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))

    errors = [rel(logits.numpy(), logits_t.detach().numpy())]
    theirs = dict(twin.named_parameters())
    errors += [
        rel(p.grad, theirs[n].grad.numpy())
        for n, p in model.named_parameters()
        if p.grad is not None
    ]
    return max(errors)


def measure(which, case, batch, threads, repeat, watch=()) -> tuple:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        which,
        "--case",
        case,
        "--batch",
        str(batch),
        "--threads",
        str(threads),
        "--repeat",
        str(repeat),
        *[f"--watch={pid}" for pid in watch],
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.split("RESULT ", 1)[1])


CASE_LIST = (("default", 8), ("default", 16), ("wide", 16))


def speed_table(args) -> None:
    """Each side's step, in alternating runs, the best median of each."""
    print(
        f"\nms per step, the best of {args.rounds} alternating runs of each (a run: the median "
        f"of {args.repeat} steps)\n"
    )
    print("| model | batch | threads | ours | torch | ours/torch |")
    print("|---|---:|---:|---:|---:|---:|")
    for case, batch in CASE_LIST:
        for threads in args.threads:
            best = {"ours": float("inf"), "torch": float("inf")}
            for _ in range(args.rounds):  # alternate whole runs: both see the same load
                for which in best:
                    samples, _ = measure(which, case, batch, threads, args.repeat)
                    best[which] = min(best[which], statistics.median(samples))
            ours, theirs = best["ours"], best["torch"]
            print(
                f"| {case} | {batch} | {threads} | {ours * 1e3:.1f} | {theirs * 1e3:.1f} "
                f"| {ours / theirs:.2f} |",
                flush=True,
            )


def busy_table(args, cores: int) -> None:
    """Each side's step quiet and beside ``args.busy`` busy programs, in alternating runs
    (quiet, busy, for ours and then torch), the best median of each; the cores the
    neighbours took during each side's busy runs (the mean over the runs), and the slowdown
    that taking that share of the machine away would cause by itself."""
    print(
        f"\n{args.busy} busy program(s) beside every other run; ms per step, the best of "
        f"{args.rounds} alternating runs of each (a run: the median of {args.repeat} steps); "
        f"the neighbours' cores: their CPU time over the wall time of the side's busy runs, "
        f"of {cores}; their share's slowdown: cores / (cores - theirs)\n"
    )
    print(
        "| model | batch | threads | ours quiet / busy | slowdown | neighbours' cores "
        "| their share's slowdown | torch quiet / busy | slowdown | neighbours' cores "
        "| their share's slowdown |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for case, batch in CASE_LIST:
        for threads in args.threads:
            best = {(w, b): float("inf") for w in ("ours", "torch") for b in (False, True)}
            taken: dict = {"ours": [], "torch": []}
            for _ in range(args.rounds):
                for which, beside in best:
                    busy = [busy_program() for _ in range(args.busy if beside else 0)]
                    try:
                        samples, cores_taken = measure(
                            which, case, batch, threads, args.repeat, [b.pid for b in busy]
                        )
                    finally:
                        for b in busy:
                            b.kill()
                            b.wait()
                    best[which, beside] = min(best[which, beside], statistics.median(samples))
                    if beside:
                        taken[which].append(cores_taken)
            row = [case, batch, threads]
            for which in ("ours", "torch"):
                quiet, loaded = best[which, False], best[which, True]
                theirs = statistics.mean(taken[which])
                row += [
                    f"{quiet * 1e3:.1f} / {loaded * 1e3:.1f}",
                    f"{loaded / quiet:.2f}x",
                    f"{theirs:.2f}",
                    f"{cores / max(cores - theirs, 1e-9):.2f}x",
                ]
            print("| " + " | ".join(str(v) for v in row) + " |", flush=True)


def busy_program() -> subprocess.Popen:
    """A neighbour that keeps one core busy, in Python, for as long as it runs."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def main(argv: list[str]) -> int:
    cores = len(os.sched_getaffinity(0))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=20, help="timed steps per run (median)")
    p.add_argument(
        "--rounds", type=int, default=3, help="runs of each, alternating (the best median)"
    )
    p.add_argument("--threads", type=int, nargs="*", default=sorted({1, cores}))
    p.add_argument("--busy", type=int, default=0, help="busy programs beside every other run")
    p.add_argument("--child", choices=["ours", "torch"], help=argparse.SUPPRESS)
    p.add_argument("--case", default="default", choices=sorted(CASES), help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=8, help=argparse.SUPPRESS)
    p.add_argument("--watch", type=int, action="append", default=[], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        samples, taken = child(
            args.child, args.case, args.batch, args.threads[0], args.repeat, args.watch
        )
        print("RESULT " + json.dumps([samples, taken]))
        return 0
    worst = parity("default", 4)
    ok = worst <= RTOL
    print(
        f"parity (default model, batch 4): worst relative error {worst:.1e} "
        f"({'ok' if ok else 'MISMATCH'}, tolerance {RTOL:g})"
    )
    if args.busy:
        busy_table(args, cores)
    else:
        speed_table(args)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
