"""``fcn-scratch bench``: time forward+backward of the ops against baselines and PyTorch.

Every number is the median wall time of one forward plus one backward pass in float32,
over ``--repeat`` runs after a warm-up run (so Numba's first-call compile is not timed); on
the CPU ours and torch take ``--rounds`` turns at each case, and each keeps its best median:

    reference   fcn_scratch.ops on the naive loop kernels (fcn_scratch.kernels.reference),
                one run, only where that takes under ~REFERENCE_MAX_LOOPS Python loop steps
    numpy       fcn_scratch.ops on vectorised NumPy kernels (kernels.numpy_baseline): im2col
                by stride tricks, col2im as KH*KW strided slice additions, max pooling by
                argmax over window views
    ours        fcn_scratch.ops, i.e. the Numba kernels (or the CUDA ones) with NumPy's GEMM;
                on the CPU the 3x3 convolutions from 8 channels take Winograd's
                algorithm, the transposed convolutions go phase by phase, and with
                several threads every convolution cuts its batch into one slice per
                thread (see fcn_scratch.ops.conv)
    torch       PyTorch on the same device, with the same number of threads

The reference and numpy columns run the same ops on the whole batch with im2col and
col2im, so their GEMMs are the same and only the kernels differ.

The transposed convolutions are FCN's upsampling layers (upscore2, upscore8, upscore32 with
kernel 2s, stride s) on a 16x16 score map of 8 classes, with padding s/2 so that the output
is exactly s times larger (FCN crops instead; the work is the same).
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from fcn_scratch import kernels
from fcn_scratch.commands.info import numpy_blas
from fcn_scratch.commands.options import int_at_least
from fcn_scratch.device import import_cupy
from fcn_scratch.kernels import numpy_baseline, reference
from fcn_scratch.memory import keep_freed_memory
from fcn_scratch.ops import conv, pool
from fcn_scratch.ops.shapes import conv_out_size, conv_transpose_out_size
from fcn_scratch.parallel import limit_threads, thread_count

REFERENCE_MAX_LOOPS = 2_000_000


class Case(NamedTuple):
    name: str
    op: str  # "conv2d", "conv_transpose2d" or "max_pool2d"
    x_shape: tuple  # (N, C, H, W)
    out_channels: int  # unused by max_pool2d
    kernel: int
    stride: int
    padding: int


CASES = [
    Case("conv 3x3 p1 (16,32,64,64)->32", "conv2d", (16, 32, 64, 64), 32, 3, 1, 1),
    Case("conv 3x3 p1 (16,64,32,32)->64", "conv2d", (16, 64, 32, 32), 64, 3, 1, 1),
    Case("conv 3x3 p1 (16,128,16,16)->128", "conv2d", (16, 128, 16, 16), 128, 3, 1, 1),
    Case("conv 3x3 p1 (16,3,64,64)->32", "conv2d", (16, 3, 64, 64), 32, 3, 1, 1),
    Case("convT k4 s2 p1 (16,8,16,16)->32x32", "conv_transpose2d", (16, 8, 16, 16), 8, 4, 2, 1),
    Case("convT k16 s8 p4 (16,8,16,16)->128x128", "conv_transpose2d", (16, 8, 16, 16), 8, 16, 8, 4),
    Case(
        "convT k64 s32 p16 (16,8,16,16)->512x512",
        "conv_transpose2d",
        (16, 8, 16, 16),
        8,
        64,
        32,
        16,
    ),
    Case("maxpool 2x2 (16,64,64,64)", "max_pool2d", (16, 64, 64, 64), 0, 2, 2, 0),
]


def geometry(case: Case) -> tuple:
    """(kernel_size, stride, padding, dilation) as (h, w) pairs."""
    return tuple((v, v) for v in (case.kernel, case.stride, case.padding, 1))


def grid_and_out(case: Case) -> tuple:
    """(im2col grid (OH, OW), output (H, W)) of the case."""
    size = case.x_shape[2:]
    if case.op == "conv_transpose2d":
        return size, conv_transpose_out_size(size, *geometry(case), (0, 0))
    grid = conv_out_size(case.op, size, *geometry(case))
    return grid, grid


def make_inputs(case: Case, seed: int = 0) -> dict:
    """x, w, b and the incoming gradient dy, float32, from a seeded generator."""
    rng = np.random.default_rng(seed)
    N, C = case.x_shape[:2]
    k, out = case.kernel, grid_and_out(case)[1]
    out_channels = case.out_channels if case.op != "max_pool2d" else C
    w_shape = (C, out_channels, k, k) if case.op == "conv_transpose2d" else (out_channels, C, k, k)
    arrays = dict(
        x=rng.standard_normal(case.x_shape),
        w=rng.standard_normal(w_shape) / np.sqrt(C * k * k),
        b=rng.standard_normal(out_channels),
        dy=rng.standard_normal((N, out_channels, *out)),
    )
    return {name: a.astype(np.float32) for name, a in arrays.items()}


# ---- one forward+backward step per column ---------------------------------------------------


def reference_loops(case: Case) -> int:
    """Python loop steps the reference kernels take for one forward+backward."""
    grid, _ = grid_and_out(case)
    channels = case.out_channels if case.op == "conv_transpose2d" else case.x_shape[1]
    steps = case.x_shape[0] * channels * case.kernel**2 * grid[0] * grid[1]
    return steps + (
        case.x_shape[0] * channels * grid[0] * grid[1] if case.op == "max_pool2d" else steps
    )


def ours_step(case: Case, a: dict) -> Callable[[], object]:
    """fcn_scratch.ops forward then backward; the arrays' type picks the kernels (for NumPy
    arrays, ``kernels.using`` may name them)."""
    s, p = case.stride, case.padding
    x, w, b, dy = a["x"], a["w"], a["b"], a["dy"]
    if case.op == "conv2d":
        return lambda: conv.conv2d_backward(dy, conv.conv2d_forward(x, w, b, s, p)[1])
    if case.op == "conv_transpose2d":
        return lambda: conv.conv_transpose2d_backward(
            dy, conv.conv_transpose2d_forward(x, w, b, s, p)[1]
        )
    return lambda: pool.max_pool2d_backward(dy, pool.max_pool2d_forward(x, case.kernel, s, p)[2])


def torch_step(case: Case, a: dict, device: str) -> Callable[[], None]:
    """The same forward+backward through torch.autograd."""
    import torch
    import torch.nn.functional as F

    t = {name: torch.from_numpy(v).to(device) for name, v in a.items()}
    leaves = [t["x"]] if case.op == "max_pool2d" else [t["x"], t["w"], t["b"]]
    for leaf in leaves:
        leaf.requires_grad_(True)
    s, p = case.stride, case.padding
    forward = {
        "conv2d": lambda: F.conv2d(t["x"], t["w"], t["b"], s, p),
        "conv_transpose2d": lambda: F.conv_transpose2d(t["x"], t["w"], t["b"], s, p),
        "max_pool2d": lambda: F.max_pool2d(t["x"], case.kernel, s, p),
    }[case.op]

    def step():
        for leaf in leaves:
            leaf.grad = None
        forward().backward(t["dy"])

    return step


def median_seconds(
    step: Callable[[], object], repeat: int, sync: Callable[[], object] = lambda: None
) -> float:
    step()  # warm-up: compiles, allocates, fills caches
    sync()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def has_torch() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def cpu_row(case: Case, repeat: int, rounds: int, torch_child: "TorchChild | None") -> dict:
    """Seconds per column on the CPU (None where a column is skipped). Ours and torch's (in
    ``torch_child``'s process) take turns ``rounds`` times, each keeping its best median: a
    shared machine's slow seconds then cost neither side its figure."""
    a = make_inputs(case)
    row = dict(reference=None, numpy=None, ours=None, torch=None)
    if reference_loops(case) <= REFERENCE_MAX_LOOPS:
        with kernels.using(reference):
            row["reference"] = median_seconds(ours_step(case, a), 1)
    with kernels.using(numpy_baseline):
        row["numpy"] = median_seconds(ours_step(case, a), repeat)
    time.sleep(SETTLE)  # the numpy column's multi-threaded GEMMs leave OpenBLAS spinning
    ours, theirs = [], []
    for _ in range(rounds):
        ours.append(median_seconds(ours_step(case, a), repeat))
        if torch_child is not None:
            theirs.append(torch_child.seconds(case, repeat))
    row["ours"] = min(ours)
    row["torch"] = min(theirs, default=None)
    return row


SETTLE = 0.3  # seconds: how long spinning threads of the other side may keep a core busy


class TorchChild:
    """torch on the CPU in a process of its own, timing one case at a time on request: the
    two sides take turns case by case (a shared machine's speed drifts from minute to minute,
    so each pair of figures is taken within seconds), and never share a process (torch's
    OpenMP threads keep spinning after each op and would slow whatever runs next beside
    them). While we compute, it waits for its next request, and the other way round; each
    side first lets ``SETTLE`` seconds pass, for the other's spinning threads (torch's
    OpenMP, OpenBLAS's) to go to sleep. The first case waits until the process has
    imported torch."""

    CODE = (
        "import json, sys, time, torch\n"
        "from fcn_scratch.commands import bench\n"
        "torch.set_num_threads(int(sys.argv[1]))\n"
        "cases = {c.name: c for c in bench.CASES}\n"
        "print('ready', flush=True)\n"
        "for line in sys.stdin:\n"
        "    name, repeat = json.loads(line)\n"
        "    time.sleep(bench.SETTLE)\n"
        "    step = bench.torch_step(cases[name], bench.make_inputs(cases[name]), 'cpu')\n"
        "    print(json.dumps(bench.median_seconds(step, repeat)), flush=True)\n"
    )

    def __init__(self, threads: int):
        self._proc = subprocess.Popen(
            [sys.executable, "-c", self.CODE, str(threads)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        # importing torch keeps a core busy for seconds: the first case waits for it
        if self._proc.stdout.readline().strip() != "ready":
            raise RuntimeError("bench: torch's process ended before it was ready")
        time.sleep(SETTLE)

    def seconds(self, case: Case, repeat: int) -> float:
        self._proc.stdin.write(json.dumps([case.name, repeat]) + "\n")
        self._proc.stdin.flush()
        answer = self._proc.stdout.readline()
        if not answer:
            raise RuntimeError(f"bench: torch's process ended while timing {case.name}")
        time.sleep(SETTLE)
        return json.loads(answer)

    def close(self) -> None:
        self._proc.stdin.close()
        self._proc.wait()


def cuda_row(case: Case, repeat: int) -> dict:
    """Seconds per column on the GPU: our CUDA kernels (cupy arrays) and torch on cuda."""
    cupy = import_cupy()
    sync = cupy.cuda.Device().synchronize
    a = make_inputs(case)
    row = dict(reference=None, numpy=None, ours=None, torch=None)
    row["ours"] = median_seconds(
        ours_step(case, {k: cupy.asarray(v) for k, v in a.items()}), repeat, sync
    )
    if has_torch():
        import torch

        if torch.cuda.is_available():
            row["torch"] = median_seconds(
                torch_step(case, a, "cuda"), repeat, torch.cuda.synchronize
            )
    return row


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where to run")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per cell (median)")
    parser.add_argument(
        "--rounds",
        type=int_at_least(1),
        default=3,
        help="turns of ours and torch per case on the CPU (each keeps its best median)",
    )
    parser.add_argument(
        "--threads",
        type=int_at_least(1),
        default=thread_count(),
        help=f"CPU threads for BLAS and torch (default: {thread_count()})",
    )
    parser.add_argument("--case", help="only cases whose name contains this text")


def fmt_ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.1f}"


def run(args) -> int:
    if args.device == "cuda":
        import_cupy()  # raises DeviceError saying what is missing, before any output
    cases = [c for c in CASES if args.case is None or args.case in c.name]
    if not cases:
        raise ValueError(f"no case name contains {args.case!r}")
    limit_threads(args.threads)
    keep_freed_memory()  # as in training: freed blocks are reused, not faulted in afresh
    print(
        f"forward+backward, float32, device {args.device}, {args.threads} threads "
        f"(BLAS and torch), median of {args.repeat}"
        + (f", best of {args.rounds} turns" if args.device == "cpu" else "")
        + ", times in ms"
        + (f"; NumPy's BLAS: {numpy_blas()}\n" if args.device == "cpu" else "\n")
    )
    if args.device == "cpu":
        torch_child = TorchChild(args.threads) if has_torch() else None
        try:
            rows = [cpu_row(case, args.repeat, args.rounds, torch_child) for case in cases]
        finally:
            if torch_child is not None:
                torch_child.close()
    else:
        rows = [cuda_row(case, args.repeat) for case in cases]
    print("| case | reference | numpy im2col | ours | torch | ours/torch |")
    print("|---|---:|---:|---:|---:|---:|")
    for case, row in zip(cases, rows):
        ratio = "-" if row["torch"] is None else f"{row['ours'] / row['torch']:.2f}"
        cells = " | ".join(fmt_ms(row[k]) for k in ("reference", "numpy", "ours", "torch"))
        print(f"| {case.name} | {cells} | {ratio} |", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fcn-scratch bench", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))
