"""``fcn-scratch predict CKPT IMAGE -o OUT.png``: segment one image file of any size.

The network is fully convolutional, so the image is used at its own size (no resizing):
the output label map has exactly its height and width. OUT.png shows the predicted
classes in the VOC colours blended over the image; --mask also writes the bare label map.
"""

import argparse
import sys

import numpy as np

from fcn_scratch.commands.options import add_device, add_threads, float_in
from fcn_scratch.data import colorize, overlay
from fcn_scratch.device import DeviceError
from fcn_scratch.parallel import limit_threads
from fcn_scratch.train import CheckpointError, load_checkpoint, predict


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="CKPT", help="a checkpoint .npz from train")
    parser.add_argument("image", metavar="IMAGE", help="an image file (PNG, JPEG, ...)")
    parser.add_argument(
        "-o",
        "--output",
        metavar="OUT.png",
        required=True,
        help="where to write the coloured overlay",
    )
    parser.add_argument(
        "--mask",
        metavar="MASK.png",
        help="also write the predicted classes as a colour-coded label map",
    )
    parser.add_argument(
        "--alpha",
        type=float_in(0.0, 1.0001),
        default=0.5,
        help="opacity of the colours over the image (default: %(default)s)",
    )
    add_device(parser)
    add_threads(parser)


def read_image(path: str) -> np.ndarray:
    """An image file as (3, H, W) float32 in [0, 1]: grey is repeated, alpha dropped."""
    import matplotlib.image

    try:
        image = np.asarray(matplotlib.image.imread(path))
    except (OSError, ValueError, SyntaxError) as err:
        raise ValueError(f"image {path}: cannot be read as an image: {err}") from err
    if np.issubdtype(image.dtype, np.integer):
        image = image / np.iinfo(image.dtype).max
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"image {path}: expected grey, RGB or RGBA, got shape {image.shape}")
    return np.ascontiguousarray(image[:, :, :3].transpose(2, 0, 1), dtype=np.float32)


def run(args) -> int:
    limit_threads(args.threads)
    import matplotlib.image

    try:
        ckpt = load_checkpoint(args.checkpoint)
        model = ckpt.build_model().to(args.device)
        image = read_image(args.image)  # (3, H, W)
        label = predict(model, image[None], args.device)[0]  # (H, W)
        matplotlib.image.imsave(args.output, overlay(image, label, alpha=args.alpha))
        if args.mask:
            matplotlib.image.imsave(args.mask, colorize(label))
    except (CheckpointError, ValueError, DeviceError, OSError) as err:
        print(f"fcn-scratch predict: error: {err}", file=sys.stderr)
        return 2
    counts = np.bincount(label.ravel(), minlength=len(ckpt.class_names)) / label.size
    shares = ", ".join(f"{name} {share:.1%}" for name, share in zip(ckpt.class_names, counts))
    print(f"{args.image} ({image.shape[1]}x{image.shape[2]}): {shares}")
    print(f"wrote {args.output}" + (f" and {args.mask}" if args.mask else ""))
    return 0
