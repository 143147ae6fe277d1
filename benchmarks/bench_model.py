"""One FCN training step, ours against PyTorch, on the CPU with the same number of threads.

Builds our FCN (default FCN-8s on 64x64 images, the default training configuration), builds
the same network in torch with our weights copied in, checks that logits, loss and every
parameter gradient agree (float32 tolerances), then times a full step (forward, softmax
cross-entropy, backward, plain SGD update) of each, alternating, and prints the ratio
ours / torch:

    python benchmarks/bench_model.py --threads 2 --batch 16 --size 64 --repeat 7

Exit status 1 if the two disagree.
"""

import argparse
import statistics
import sys
import time

import numpy as np

from fcn_scratch import Tensor
from fcn_scratch import functional as F
from fcn_scratch.commands.bench import set_threads
from fcn_scratch.models import build_model

RTOL = 1e-4  # float32: relative error of whole arrays, in the 2-norm


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="fcn8s", choices=["fcn32s", "fcn16s", "fcn8s"])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--size", type=int, default=64, help="image height and width")
    p.add_argument("--classes", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=7, help="timed steps (median reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps (JIT compilation)")
    p.add_argument("--lr", type=float, default=1e-3)
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    import torch

    from fcn_scratch.models.torch_mirror import torch_model

    threads = set_threads(args.threads)
    # Kaiming-initialised score layers, so that every gradient is non-zero at step one.
    model = build_model(args.model, args.classes, score_init="kaiming_normal", rng=0)
    twin = torch_model(model)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((args.batch, 3, args.size, args.size)).astype(np.float32)
    target = rng.integers(0, args.classes, (args.batch, args.size, args.size))
    xt, target_t = torch.from_numpy(x), torch.from_numpy(target)
    ours_params = [p for p in model.parameters() if p.requires_grad]
    torch_params = [p for p in twin.parameters() if p.requires_grad]
    sgd = torch.optim.SGD(torch_params, lr=args.lr)

    def step_ours() -> Tensor:
        model.zero_grad()
        logits = model(Tensor(x))
        loss = F.cross_entropy(logits, target)
        loss.backward()
        for p in ours_params:
            p.data -= args.lr * p.grad
        return logits

    def step_torch():
        sgd.zero_grad()
        logits = twin(xt)
        loss = torch.nn.functional.cross_entropy(logits, target_t, ignore_index=255)
        loss.backward()
        sgd.step()
        return logits

    # Parity, before any update: logits and gradients of one forward/backward.
    logits = model(Tensor(x))
    F.cross_entropy(logits, target).backward()
    logits_t = twin(xt)
    torch.nn.functional.cross_entropy(logits_t, target_t).backward()
    errors = {"logits": rel_err(logits.numpy(), logits_t.detach().numpy())}
    theirs = dict(twin.named_parameters())
    for name, p in model.named_parameters():
        if p.requires_grad:
            errors[name] = rel_err(p.grad, theirs[name].grad.numpy())
    worst = max(errors, key=errors.get)
    ok = errors[worst] <= RTOL
    print(
        f"{args.model}, batch {args.batch}x3x{args.size}x{args.size}, {args.classes} classes, "
        f"float32, threads: {threads}"
    )
    print(
        f"parity: logits rel. err {errors['logits']:.1e}; worst gradient {worst} "
        f"{errors[worst]:.1e} over {len(errors) - 1} parameters -> "
        f"{'ok' if ok else 'MISMATCH'} (tolerance {RTOL:g})"
    )

    # Steps alternate (ours, torch, ours, ...) so that both see the same machine load.
    steps = {"ours": step_ours, "torch": step_torch}
    for step in steps.values():
        for _ in range(args.warmup):
            step()
    samples: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.repeat):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            samples[name].append(time.perf_counter() - start)
    for name, values in samples.items():
        median = statistics.median(values)
        print(
            f"{name:6s} step: median {median * 1e3:8.1f} ms, min {min(values) * 1e3:8.1f} ms "
            f"over {args.repeat} steps ({args.batch / median:.1f} images/s)"
        )
    ratios = [a / b for a, b in zip(samples["ours"], samples["torch"], strict=True)]
    print(
        f"ratio ours / torch: median of paired steps {statistics.median(ratios):.2f}x, "
        f"of minima {min(samples['ours']) / min(samples['torch']):.2f}x (target <= 1.5x)"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
