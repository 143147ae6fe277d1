"""The main job, ours against PyTorch: the default recipe of ``fcn-scratch train`` run in
each, every run in a process of its own, the two taking turns epoch by epoch.

    python benchmarks/bench_train.py                 # defaults: every core, epochs of the recipe
    python benchmarks/bench_train.py --threads 1 --epochs 3
    python benchmarks/bench_train.py --busy 1        # both beside a program that keeps a core busy

Both runs use the same configuration (TrainConfig's defaults), the same initial weights
(the torch twin of ``models/torch_mirror.py`` copies ours), the same fresh synthetic
images in the same batches (our ``FreshShapes`` and ``DataLoader``), Adam with the same
learning rate at every step (our schedule's: warm-up, then poly), the held-out evaluation
after every epoch, and the same number of threads (ours: lanes; torch:
``torch.set_num_threads``). Each prints held-out mean IU, wall time, images per second and
the memory at the end of every epoch (the peak resident set, plus what our lane processes
hold of their own; it must not grow from epoch to epoch). ``--cold`` also times our first
step with an empty Numba cache (the compile time a fresh install pays once).

Taking turns: the two processes pass a token through pipes, and only the holder computes
(its set-up, then one epoch: training, evaluation, and the rendering of the next epoch's
images, waited for before the token goes on). A run's wall time is the sum of its turns.
Never are both running at once, and never do the two share a process (torch's OpenMP
threads keep spinning after each op and would steal the cores from our next step), yet a
shared machine whose speed drifts from minute to minute gives both the same minutes: one
run after the other measured the drift as much as the code.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from fcn_scratch.commands.bench import SETTLE


def memory_mb(lanes=()) -> float:
    """This process's peak resident set so far (VmHWM), plus the private memory of the
    processes in ``lanes`` (pids: ours runs lanes 1.. in forked processes; what they share
    with this one, copy-on-write, is counted once), in MiB."""
    return _field("/proc/self/status", "VmHWM:") + sum(
        _field(f"/proc/{pid}/smaps_rollup", "Private_Clean:")
        + _field(f"/proc/{pid}/smaps_rollup", "Private_Dirty:")
        for pid in lanes
    )


def _field(path: str, name: str) -> float:
    """A "name: value kB" line of a /proc file, in MiB."""
    with open(path) as f:
        for line in f:
            if line.startswith(name):
                return int(line.split()[1]) / 1024
    return float("nan")


class Turns:
    """This process's turns: ``begin()`` waits for the token, ``end()`` passes it on; ``wall``
    is the time between them, summed (``restart_clock()`` leaves out what came before it
    in a turn, such as importing the libraries)."""

    def __init__(self, token_in: int, token_out: int):
        self.token_in, self.token_out, self.wall = token_in, token_out, 0.0

    def begin(self) -> None:
        os.read(self.token_in, 1)  # b"" once the other run has ended: go on alone
        time.sleep(SETTLE)  # the other run's spinning threads (OpenMP, OpenBLAS) go to sleep
        self.restart_clock()

    def restart_clock(self) -> None:
        self._start = time.perf_counter()

    def end(self) -> None:
        self.wall += time.perf_counter() - self._start
        try:
            os.write(self.token_out, b"t")
        except BrokenPipeError:  # the other run has ended
            pass


def run_ours(epochs: int | None, threads: int, turns: Turns) -> dict:
    turns.begin()
    from fcn_scratch.parallel import limit_threads
    from fcn_scratch.train import TrainConfig, Trainer

    turns.restart_clock()
    limit_threads(threads)
    config = TrainConfig(out=None, **({} if epochs is None else {"epochs": epochs}))
    trainer = Trainer(config, progress=False)
    rss = []
    original = trainer._end_epoch

    def end_epoch():
        original()
        trainer.fresh_data.wait()  # the next epoch's images belong to this turn
        rss.append(memory_mb(getattr(trainer.lanes, "pids", ())))
        turns.end()
        if not trainer.finished:
            turns.begin()

    trainer._end_epoch = end_epoch
    trainer.fit()
    return summary(trainer.history["epochs"], turns.wall, rss, config, trainer.lanes.count)


def run_torch(epochs: int | None, threads: int, turns: Turns) -> dict:
    turns.begin()
    import torch

    from fcn_scratch import optim, random
    from fcn_scratch.data import IGNORE_INDEX, DataLoader
    from fcn_scratch.metrics import ConfusionMatrix
    from fcn_scratch.models.torch_mirror import torch_model
    from fcn_scratch.train import TrainConfig, setup
    from fcn_scratch.train.fresh import FreshShapes

    turns.restart_clock()
    torch.set_num_threads(threads)
    config = TrainConfig(out=None, **({} if epochs is None else {"epochs": epochs}))
    random.manual_seed(config.seed)
    fresh = FreshShapes(config)
    val_set = setup.make_held_out(config)
    train_set = fresh.get(0)
    ours = setup.make_model(config, len(train_set.class_names))
    model = torch_model(ours)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    loader = DataLoader(train_set, config.batch_size, shuffle=True, seed=config.seed)
    # the lr of every step from our schedule for this config (warm-up, then poly)
    ours_schedule = setup.make_schedule(config, optim.Adam(ours.parameters()), len(loader))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda t: ours_schedule.lr_at(t, base_lr=1.0)
    )
    history, rss = [], []
    for epoch in range(config.epochs):
        if epoch:
            loader.dataset = fresh.get(epoch)
        model.train()
        seconds, images = 0.0, 0
        for x, y in loader:
            t0 = time.perf_counter()
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(
                model(torch.from_numpy(x)), torch.from_numpy(y), ignore_index=IGNORE_INDEX
            )
            loss.item()
            loss.backward()
            optimizer.step()
            schedule.step()
            seconds += time.perf_counter() - t0
            images += len(x)
        model.eval()
        cm = ConfusionMatrix(val_set.num_classes, ignore_index=IGNORE_INDEX)
        with torch.no_grad():
            for s in range(0, len(val_set), config.batch_size):
                xv, yv = val_set.get_batch(np.arange(s, min(s + config.batch_size, len(val_set))))
                cm.update(model(torch.from_numpy(xv)).argmax(1).numpy(), yv)
        history.append({**cm.summary(), "images_per_s": images / seconds})
        fresh.wait()
        rss.append(memory_mb())
        turns.end()
        if epoch + 1 < config.epochs:
            turns.begin()
    fresh.close()
    return summary(history, turns.wall, rss, config, None)


def summary(history: list, wall: float, rss: list, config, lanes: int | None) -> dict:
    return {
        "mean_iou": history[-1]["mean_iou"],
        "pixel_acc": history[-1]["pixel_acc"],
        "wall_s": wall,
        "images_per_s": config.epochs * config.train_size / wall,
        "step_images_per_s": float(np.mean([h["images_per_s"] for h in history])),
        "memory_mb_by_epoch": rss,
        "epochs": config.epochs,
        "lanes": lanes,
    }


def cold_compile_seconds() -> float:
    """Wall time of one training step of the default model with an empty Numba cache, minus
    the same with the cache filled: what compiling the kernels costs, once per install."""
    code = (
        "import time; t = time.perf_counter()\n"
        "import numpy as np\n"
        "from fcn_scratch.train import TrainConfig, Trainer\n"
        "tr = Trainer(TrainConfig(out=None, train_size=8, val_size=8), progress=False)\n"
        "x, y = tr.train_set.get_batch(np.arange(8)); tr.train_step(x, y)\n"
        "from fcn_scratch.train.evaluation import evaluate; evaluate(tr.model, tr.val_set, 8)\n"
        "print(time.perf_counter() - t)\n"
    )
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        runs = [
            float(
                subprocess.run(
                    [sys.executable, "-c", code],
                    env=env,
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout.split()[-1]
            )
            for _ in range(2)
        ]
    return runs[0] - runs[1]


def child(which: str, epochs: int | None, threads: int, token_in: int, token_out: int) -> None:
    result = (run_ours if which == "ours" else run_torch)(
        epochs, threads, Turns(token_in, token_out)
    )
    print("RESULT " + json.dumps(result))


def measure_both(args) -> dict:
    """Start both runs, ours holding the token first; wait for both; their results."""
    to_ours, to_torch = os.pipe(), os.pipe()  # (read, write) each
    procs = {}
    for which, token_in, token_out in (
        ("ours", to_ours[0], to_torch[1]),
        ("torch", to_torch[0], to_ours[1]),
    ):
        cmd = [sys.executable, __file__, "--child", which, "--threads", str(args.threads)]
        cmd += ["--token", str(token_in), str(token_out)]
        if args.epochs is not None:
            cmd += ["--epochs", str(args.epochs)]
        procs[which] = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, text=True, pass_fds=(token_in, token_out)
        )
    for fd in (*to_ours, *to_torch):
        if fd != to_ours[1]:
            os.close(fd)
    os.write(to_ours[1], b"t")
    os.close(to_ours[1])
    results = {}
    for which, proc in procs.items():
        out, _ = proc.communicate()
        if proc.returncode:
            raise RuntimeError(f"the {which} run failed (exit status {proc.returncode})")
        results[which] = json.loads(out.split("RESULT ", 1)[1])
    return results


def main(argv: list[str]) -> int:
    cores = len(os.sched_getaffinity(0))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=cores, help=f"default: {cores}")
    p.add_argument("--epochs", type=int, default=None, help="default: the recipe's")
    p.add_argument("--cold", action="store_true", help="also time the Numba compilation")
    p.add_argument("--busy", type=int, default=0, help="busy programs beside, the whole run")
    p.add_argument("--child", choices=["ours", "torch"], help=argparse.SUPPRESS)
    p.add_argument("--token", type=int, nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args.child, args.epochs, args.threads, *args.token)
        return 0
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    try:
        results = measure_both(args)
    finally:
        for b in busy:
            b.kill()
            b.wait()
    if args.busy:
        print(f"beside {args.busy} busy program(s) (each a pure-Python loop on a core)")
    for which in ("ours", "torch"):
        r = results[which]
        rss = r["memory_mb_by_epoch"]
        print(
            f"{which:5s}: mean IU {r['mean_iou']:.4f}, pixel acc {r['pixel_acc']:.4f}, "
            f"wall {r['wall_s']:.1f} s for {r['epochs']} epochs, {r['images_per_s']:.1f} img/s "
            f"overall ({r['step_images_per_s']:.1f} in training steps), threads {args.threads}"
            + (f" (lanes {r['lanes']})" if r["lanes"] else " (torch's)")
            + "\n       memory (MiB) after each epoch (peak RSS + lane processes' own): "
            + " ".join(f"{v:.0f}" for v in rss),
            flush=True,
        )
    ratio = results["ours"]["wall_s"] / results["torch"]["wall_s"]
    print(f"wall time ours / torch: {ratio:.2f}")
    if args.cold:
        print(f"Numba compilation, cold cache: {cold_compile_seconds():.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
