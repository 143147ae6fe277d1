"""A user's own folder of images, five minutes each: ``fcn-scratch train --data DIR`` against a
plain PyTorch FCN-8s script, scored on the same held-out folder.

Builds two folders of PNG images and masks from the synthetic generator with settings
unlike the training defaults (flat and textured backgrounds mixed, more noise, other shape
sizes and counts): ``train`` (--images pairs) and ``test`` (--test-images pairs, another
seed). Then, one after the other, each in a process of its own:

    fcn-scratch train --data DIR/train --max-time T --out DIR/ours   (nothing else)
    python benchmarks/torch_fcn8s.py --train DIR/train --max-time T ...

and prints both held-out mean IUs on DIR/test. Run it on a quiet machine (the budget is
wall-clock time):

    python benchmarks/bench_folder.py --out /tmp/bench_folder --max-time 300
"""

import argparse
import json
import os
import subprocess
import sys

import numpy as np

from fcn_scratch.data import FolderDataset, ShapesDataset
from fcn_scratch.metrics import ConfusionMatrix

HERE = os.path.dirname(os.path.abspath(__file__))
# Unlike the training defaults (1-4 shapes of radius 0.08-0.2, textured backgrounds, noise
# 0.04): the folder mixes two looks and has other sizes and counts.
LOOKS = [
    dict(texture=0.0, noise=0.08, radius=(0.12, 0.3), min_shapes=1, max_shapes=3),
    dict(texture=1.5, noise=0.06, radius=(0.06, 0.16), min_shapes=2, max_shapes=5),
]


def write_folder(root: str, n: int, size: int, seed: int) -> None:
    """n image/mask pairs as PNG files in root/images and root/masks (half of each look)."""
    from PIL import Image

    for folder in ("images", "masks"):
        os.makedirs(os.path.join(root, folder), exist_ok=True)
    i = 0
    for k, look in enumerate(LOOKS):
        count = n // len(LOOKS) + (k < n % len(LOOKS))
        shapes = ShapesDataset(count, size=size, seed=(seed, k), **look)
        for image, label in zip(shapes.images, shapes.labels, strict=True):
            rgb = (image.transpose(1, 2, 0) * 255).round().astype(np.uint8)
            Image.fromarray(rgb).save(os.path.join(root, "images", f"{i:05d}.png"))
            Image.fromarray(label).save(os.path.join(root, "masks", f"{i:05d}.png"))
            i += 1


def run(cmd: list[str]) -> None:
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--images", type=int, default=3000, help="training pairs")
    p.add_argument("--test-images", type=int, default=500, help="held-out pairs")
    p.add_argument("--size", type=int, default=64, help="image height and width")
    p.add_argument("--max-time", type=float, default=300.0, help="seconds of training each")
    args = p.parse_args(argv)
    train, test = os.path.join(args.out, "train"), os.path.join(args.out, "test")
    if not os.path.isdir(train):
        write_folder(train, args.images, args.size, seed=1)
        write_folder(test, args.test_images, args.size, seed=2)
    ours = os.path.join(args.out, "ours")
    report = os.path.join(args.out, "ours_test.json")
    run([sys.executable, "-m", "fcn_scratch", "train", "--data", train,
         "--max-time", str(args.max_time), "--out", ours, "--no-progress"])  # fmt: skip
    run([sys.executable, "-m", "fcn_scratch", "evaluate", os.path.join(ours, "checkpoint.npz"),
         "--data", test, "--json", report])  # fmt: skip
    with open(report) as f:
        ours_iou = json.load(f)["mean_iou"]

    predictions = os.path.join(args.out, "torch_test.npy")
    run([sys.executable, os.path.join(HERE, "torch_fcn8s.py"), "--train", train,
         "--test", test, "--max-time", str(args.max_time), "--size", str(args.size),
         "--out", predictions])  # fmt: skip
    truth = FolderDataset(test, size=args.size)
    cm = ConfusionMatrix(truth.num_classes)
    cm.update(np.load(predictions).astype(np.int64), truth.labels)
    torch_iou = cm.summary()["mean_iou"]

    print(f"\nheld-out mean IU on {len(truth)} images after {args.max_time:g} s of training:")
    print(f"  fcn-scratch train --data  {ours_iou:.4f}")
    print(f"  PyTorch FCN-8s script     {torch_iou:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
