"""How fast the machine multiplies matrices, on one thread: NumPy's BLAS against torch.

    python benchmarks/bench_gemm.py

Prints GFLOP/s (2 flops per multiply-add, the best of 5 timings) of NumPy's sgemm on a large
square product and on the GEMM shapes of the default model's im2col convolutions, then, in a
process of its own (torch's threads must not run beside ours), torch's matmul on the same
square product and torch's conv2d forward on the same layers: what a from-scratch im2col +
GEMM is up against.
"""

import subprocess
import sys
import time

import numpy as np

# (batch, C_in, H = W, C_out) of 3x3 "same" convolutions: the default model's conv2 and
# conv3, and the wide model's first layers at batch 16
LAYERS = [(8, 16, 32, 32), (8, 32, 16, 48), (16, 32, 64, 32), (16, 64, 32, 64)]
SQUARE = 1024


def gflops(fn, flops: float, repeat: int = 5) -> float:
    fn()
    best = min(_seconds(fn) for _ in range(repeat))
    return flops / best / 1e9


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def ours() -> None:
    from fcn_scratch.parallel import limit_threads

    limit_threads(1)
    rng = np.random.default_rng(0)
    a = rng.random((SQUARE, SQUARE), dtype=np.float32)
    print(f"numpy sgemm {SQUARE}x{SQUARE}: {gflops(lambda: a @ a, 2 * SQUARE**3):.0f} GFLOP/s")
    for n, c, h, o in LAYERS:
        w = rng.random((o, c * 9), dtype=np.float32)
        col = rng.random((n, c * 9, h * h), dtype=np.float32)
        rate = gflops(lambda w=w, col=col: w @ col, 2 * n * o * c * 9 * h * h)
        print(f"numpy im2col GEMM of conv {c}->{o} at {h}x{h}, batch {n}: {rate:.0f} GFLOP/s")


def theirs() -> None:
    import torch

    torch.set_num_threads(1)
    conv = torch.nn.functional.conv2d
    a = torch.rand(SQUARE, SQUARE)
    print(f"torch matmul {SQUARE}x{SQUARE}: {gflops(lambda: a @ a, 2 * SQUARE**3):.0f} GFLOP/s")
    for n, c, h, o in LAYERS:
        x, w = torch.rand(n, c, h, h), torch.rand(o, c, 3, 3)
        rate = gflops(lambda x=x, w=w: conv(x, w, padding=1), 2 * n * o * c * 9 * h * h)
        print(f"torch conv2d forward {c}->{o} at {h}x{h}, batch {n}: {rate:.0f} GFLOP/s")


def main(argv: list[str]) -> int:
    if argv == ["--torch"]:
        theirs()
        return 0
    ours()
    sys.stdout.flush()
    return subprocess.run([sys.executable, __file__, "--torch"]).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
