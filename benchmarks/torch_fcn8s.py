"""A plain PyTorch FCN-8s trained on a folder of images and masks for a fixed wall-clock time.

The script a PyTorch user would write: a VGG-style FCN-8s of the same size as
``fcn-scratch train``'s default (widths, convolutions per stage, fc width, learned bilinear
upsampling), Adam at a constant learning rate, random left-right flips, batch 8, trained
until the time is up; then it segments every image of a held-out folder and writes the
predicted labels as one ``.npy`` (N, H, W) uint8, scored by ``bench_folder.py``.

    python benchmarks/torch_fcn8s.py --train DIR --test DIR --max-time 300 --out pred.npy

Only torch, numpy and Pillow; nothing from fcn_scratch.
"""

import argparse
import glob
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

WIDTHS, CONVS, FC = (16, 32, 48, 64, 64), (1, 1, 2, 2, 2), 128  # fcn-scratch's defaults


def load_folder(root: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """images (N, 3, size, size) float32 in [0, 1], masks (N, size, size) int64."""
    images, masks = [], []
    for path in sorted(glob.glob(os.path.join(root, "images", "*.png"))):
        stem = os.path.splitext(os.path.basename(path))[0]
        image = Image.open(path).convert("RGB").resize((size, size), Image.BILINEAR)
        mask = Image.open(os.path.join(root, "masks", stem + ".png"))
        mask = mask.resize((size, size), Image.NEAREST)
        images.append(np.asarray(image, np.float32).transpose(2, 0, 1) / 255)
        masks.append(np.asarray(mask, np.int64))
    return np.stack(images), np.stack(masks)


def bilinear(channels: int, k: int) -> torch.Tensor:
    f = (k + 1) // 2
    c = f - 1 if k % 2 == 1 else f - 0.5
    og = np.ogrid[:k, :k]
    filt = (1 - abs(og[0] - c) / f) * (1 - abs(og[1] - c) / f)
    w = np.zeros((channels, channels, k, k), np.float32)
    w[range(channels), range(channels)] = filt
    return torch.from_numpy(w)


class FCN8s(nn.Module):
    def __init__(self, num_classes: int):
        super().__init__()
        stages, c = [], 3
        for width, count in zip(WIDTHS, CONVS):
            layers = []
            for _ in range(count):
                layers += [nn.Conv2d(c, width, 3, padding=1), nn.ReLU(inplace=True)]
                c = width
            layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)
        self.fc6, self.fc7 = nn.Conv2d(c, FC, 3, padding=1), nn.Conv2d(FC, FC, 1)
        self.score_fr = nn.Conv2d(FC, num_classes, 1)
        self.score_pool4 = nn.Conv2d(WIDTHS[3], num_classes, 1)
        self.score_pool3 = nn.Conv2d(WIDTHS[2], num_classes, 1)
        self.up2 = nn.ConvTranspose2d(num_classes, num_classes, 4, 2, 1, bias=False)
        self.up4 = nn.ConvTranspose2d(num_classes, num_classes, 4, 2, 1, bias=False)
        self.up8 = nn.ConvTranspose2d(num_classes, num_classes, 16, 8, 4, bias=False)
        for up in (self.up2, self.up4, self.up8):
            up.weight.data.copy_(bilinear(num_classes, up.kernel_size[0]))

    def forward(self, x):
        h, w = x.shape[-2:]
        pooled = []
        for stage in self.stages:
            x = stage(x)
            pooled.append(x)
        s = self.score_fr(F.relu(self.fc7(F.relu(self.fc6(x)))))
        s = self.up2(s)
        p4 = self.score_pool4(pooled[3])
        s = s[..., : p4.shape[2], : p4.shape[3]] + p4
        s = self.up4(s)
        p3 = self.score_pool3(pooled[2])
        s = s[..., : p3.shape[2], : p3.shape[3]] + p3
        return self.up8(s)[..., :h, :w]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train", required=True)
    p.add_argument("--test", required=True)
    p.add_argument("--max-time", type=float, default=300.0)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--out", required=True, help="where to write the predictions (.npy)")
    args = p.parse_args()
    torch.manual_seed(0)
    x, y = load_folder(args.train, args.size)
    num_classes = int(y[y != 255].max()) + 1
    model = FCN8s(num_classes)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    start, steps = time.perf_counter(), 0
    while time.perf_counter() - start < args.max_time:
        for idx in np.array_split(rng.permutation(len(x)), max(1, len(x) // 8)):
            xb, yb = x[idx].copy(), y[idx].copy()
            flip = rng.random(len(idx)) < 0.5
            xb[flip], yb[flip] = xb[flip, :, :, ::-1], yb[flip, :, ::-1]
            loss = F.cross_entropy(
                model(torch.from_numpy(xb)), torch.from_numpy(yb), ignore_index=255
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
            if time.perf_counter() - start >= args.max_time:
                break
    print(f"torch: {steps} steps in {time.perf_counter() - start:.0f} s", flush=True)
    tx, _ = load_folder(args.test, args.size)
    model.eval()
    with torch.no_grad():
        pred = [model(torch.from_numpy(tx[i : i + 32])).argmax(1) for i in range(0, len(tx), 32)]
    np.save(args.out, torch.cat(pred).numpy().astype(np.uint8))


if __name__ == "__main__":
    main()
