"""The paper's VGG16 FCN-8s on one photo-sized image, ours against PyTorch, on the CPU.

Four measurements, each in a process of its own so that one's memory cannot hide in
another's peak: {ours, torch} x {forward (inference, no graph kept), forward + backward
(training mode, softmax cross-entropy)} on one 3 x 375 x 500 image (a typical PASCAL VOC
photo), 21 classes, float32. Each process builds the network (torch's has our weights,
through ``torch_mirror``), runs untimed warm-up passes (JIT compilation), resets its peak
resident memory (``/proc/self/clear_refs``), then times ``--repeat`` passes and reports
the median time and the peak resident memory during them (weights included). A fifth
process checks that the two compute the same logits.

    python benchmarks/bench_vgg16.py --threads 2 --repeat 5

Exit status 1 if the logits disagree.
"""

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

RTOL = 1e-4  # float32: relative error of the logits, in the 2-norm
NUM_CLASSES = 21
SCORE_INIT = "kaiming_normal"  # not the paper's zeros: the logits must not all be zero
GIB = 2**30


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--height", type=int, default=375)
    p.add_argument("--width", type=int, default=500)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--repeat", type=int, default=5, help="timed passes (median reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed passes before timing")
    p.add_argument("--worker", nargs=2, metavar=("IMPL", "PASS"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def peak_rss() -> int:
    """This process's peak resident memory since the last reset, in bytes (Linux)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM"))


def reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def inputs(args) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    x = rng.random((1, 3, args.height, args.width), dtype=np.float32)
    target = rng.integers(0, NUM_CLASSES, (1, args.height, args.width))
    return x, target


def ours(pass_: str, args):
    """(a function running one pass, the model's inference-memory estimate)."""
    from fcn_scratch import Tensor
    from fcn_scratch import functional as F
    from fcn_scratch.models import build_model
    from fcn_scratch.models.memory import forward_bytes
    from fcn_scratch.parallel import limit_threads
    from fcn_scratch.train.evaluation import inference

    limit_threads(args.threads)
    model = build_model("fcn8s", NUM_CLASSES, backbone="vgg16", score_init=SCORE_INIT, rng=0)
    x, target = inputs(args)

    def forward():
        with inference(model):
            return model(Tensor(x)).numpy()

    def train_step():
        model.train().zero_grad()
        F.cross_entropy(model(Tensor(x)), target).backward()

    estimate = forward_bytes(model, (args.height, args.width))
    return (forward if pass_ == "forward" else train_step), estimate


def torch_twin(args):
    """Our FCN-8s (seed 0) and its torch twin with the same weights."""
    import torch

    from fcn_scratch.models import build_model
    from fcn_scratch.models.torch_mirror import torch_model

    torch.set_num_threads(args.threads)
    model = build_model("fcn8s", NUM_CLASSES, backbone="vgg16", score_init=SCORE_INIT, rng=0)
    return model, torch_model(model)


def theirs(pass_: str, args):
    import torch

    model, twin = torch_twin(args)
    del model
    gc.collect()
    x, target = (torch.from_numpy(a) for a in inputs(args))

    def forward():
        twin.eval()
        with torch.inference_mode():
            return twin(x).numpy()

    def train_step():
        twin.train().zero_grad()
        torch.nn.functional.cross_entropy(twin(x), target).backward()

    return (forward if pass_ == "forward" else train_step), None


def parity(args) -> dict:
    import torch

    from fcn_scratch import Tensor
    from fcn_scratch.train.evaluation import inference

    model, twin = torch_twin(args)
    x, _ = inputs(args)
    with inference(model):
        a = model(Tensor(x)).numpy()
    with torch.inference_mode():
        b = twin.eval()(torch.from_numpy(x)).numpy()
    return {"rel_err": float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))}


def worker(impl: str, pass_: str, args) -> dict:
    if impl == "parity":
        return parity(args)
    run, estimate = (ours if impl == "ours" else theirs)(pass_, args)
    for _ in range(args.warmup):
        run()
    gc.collect()
    reset_peak_rss()
    times = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return {"times": times, "peak_rss": peak_rss(), "estimate": estimate}


def spawn(impl: str, pass_: str, argv: list[str]) -> dict:
    """Run one measurement in a fresh Python, with the same fcn_scratch as this one."""
    import fcn_scratch

    root = os.path.dirname(os.path.dirname(os.path.abspath(fcn_scratch.__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, __file__, *argv, "--worker", impl, pass_],
        capture_output=True,
        text=True,
        env=env,
    )
    if done.returncode != 0:
        raise SystemExit(f"bench_vgg16: the {impl} {pass_} process failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(*args.worker, args)))
        return 0
    print(
        f"VGG16 FCN-8s, {NUM_CLASSES} classes, one 3x{args.height}x{args.width} image, "
        f"float32, {args.threads} threads, median of {args.repeat} passes"
    )
    check = spawn("parity", "forward", argv)
    ok = check["rel_err"] <= RTOL
    print(f"parity: logits rel. err {check['rel_err']:.1e} -> {'ok' if ok else 'MISMATCH'}")
    print(f"{'':6s} {'pass':18s} {'median':>9s} {'min':>9s} {'peak RSS':>10s}")
    for pass_, label in (("forward", "forward"), ("train", "forward+backward")):
        for impl in ("ours", "torch"):
            r = spawn(impl, pass_, argv)
            print(
                f"{impl:6s} {label:18s} {statistics.median(r['times']):8.2f}s "
                f"{min(r['times']):8.2f}s {r['peak_rss'] / GIB:8.2f} GiB"
                + (
                    f"   (--max-memory's estimate, weights excluded: {r['estimate'] / GIB:.2f} GiB)"
                    if r["estimate"] and pass_ == "forward"
                    else ""
                )
            )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
