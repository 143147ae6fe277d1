"""One FCN training step, ours against PyTorch, each timed alone in a process of its own.

    python benchmarks/bench_model.py                  # the table below, 1 thread and all cores
    python benchmarks/bench_model.py --busy 1         # the same beside a busy program

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
``--busy N`` starts N programs that keep one core each busy (pure Python loops) for the
whole run: a step should slow down by about the share of the machine they take, not more.
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


def time_steps(step, repeat: int, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        step()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        step()
        samples.append(time.perf_counter() - start)
    return samples


def child(which: str, case: str, batch: int, threads: int, repeat: int) -> list[float]:
    from fcn_scratch.parallel import limit_threads

    limit_threads(threads)
    trainer = make_trainer(case, batch)
    x, y = trainer.train_set.get_batch(np.arange(batch))
    if which == "ours":

        def step():
            trainer.train_step(x, y)
            trainer.optimizer.step()

        return time_steps(step, repeat)
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

    return time_steps(torch_step, repeat)


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


def measure(which, case, batch, threads, repeat) -> list[float]:
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
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.split("RESULT ", 1)[1])


def main(argv: list[str]) -> int:
    cores = len(os.sched_getaffinity(0))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=20, help="timed steps per run (median)")
    p.add_argument(
        "--rounds", type=int, default=3, help="runs of each, alternating (the best median)"
    )
    p.add_argument("--threads", type=int, nargs="*", default=sorted({1, cores}))
    p.add_argument("--busy", type=int, default=0, help="busy programs running beside")
    p.add_argument("--child", choices=["ours", "torch"], help=argparse.SUPPRESS)
    p.add_argument("--case", default="default", choices=sorted(CASES), help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=8, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        samples = child(args.child, args.case, args.batch, args.threads[0], args.repeat)
        print("RESULT " + json.dumps(samples))
        return 0
    worst = parity("default", 4)
    ok = worst <= RTOL
    print(
        f"parity (default model, batch 4): worst relative error {worst:.1e} "
        f"({'ok' if ok else 'MISMATCH'}, tolerance {RTOL:g})"
    )
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    try:
        print(
            f"\n{args.busy} busy program(s) beside; ms per step, the best of {args.rounds} "
            f"alternating runs of each (a run: the median of {args.repeat} steps)\n"
        )
        print("| model | batch | threads | ours | torch | ours/torch |")
        print("|---|---:|---:|---:|---:|---:|")
        for case, batch in (("default", 8), ("default", 16), ("wide", 16)):
            for threads in args.threads:
                best = {"ours": float("inf"), "torch": float("inf")}
                for _ in range(args.rounds):  # alternate whole runs: both see the same load
                    for which in best:
                        samples = measure(which, case, batch, threads, args.repeat)
                        best[which] = min(best[which], statistics.median(samples))
                ours, theirs = best["ours"], best["torch"]
                print(
                    f"| {case} | {batch} | {threads} | {ours * 1e3:.1f} | {theirs * 1e3:.1f} "
                    f"| {ours / theirs:.2f} |",
                    flush=True,
                )
    finally:
        for b in busy:
            b.kill()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
