"""``fcn-scratch predict CKPT IMAGE... -o OUT``: segment image files of any size.

The network is fully convolutional, so each image is used at its own size (no resizing):
the label map has exactly its height and width. Two forms:

    predict CKPT IMAGE -o OVERLAY.png [--mask MASK.png]     one image
    predict CKPT IMAGE_OR_FOLDER... -o DIR [--mask]         several: DIR/<name>_overlay.png
                                                            and, with --mask, DIR/<name>.png

An overlay shows the predicted classes in the VOC colours blended over the image; a mask
is a palette PNG (mode "P", VOC colours) whose pixel values are the class ids, as in
VOC's SegmentationClass, so the dataset readers read it back. Images are read with
Pillow, its decompression-bomb limit on, and one whose forward pass would need more than
--max-memory is refused before it is decoded.
"""

import argparse
import os

import numpy as np
from PIL import Image

from fcn_scratch.commands.options import add_device, add_max_memory, add_threads, float_in
from fcn_scratch.data import overlay
from fcn_scratch.data.folder import IMAGE_EXTENSIONS
from fcn_scratch.data.images import image_size, read_image, write_mask
from fcn_scratch.models.memory import check_forward_fits
from fcn_scratch.parallel import limit_threads
from fcn_scratch.train import load_checkpoint, predict


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="CKPT", help="a checkpoint .npz (train, convert)")
    parser.add_argument(
        "images", metavar="IMAGE", nargs="+", help="image files (PNG, JPEG, ...) or folders"
    )
    parser.add_argument(
        "-o",
        "--output",
        metavar="OUT",
        required=True,
        help="one image: the overlay file (.png, .jpg, ...); several: a folder",
    )
    parser.add_argument(
        "--mask",
        metavar="MASK.png",
        nargs="?",
        const="",
        help="also write the predicted classes as a palette PNG of class ids "
        "(one image: its file name; several: a flag, masks go to OUT/<name>.png)",
    )
    parser.add_argument(
        "--alpha",
        type=float_in(0.0, 1.0001),
        default=0.5,
        help="opacity of the colours over the image (default: %(default)s)",
    )
    add_max_memory(parser)
    add_device(parser)
    add_threads(parser)


def image_files(paths: list[str]) -> list[str]:
    """The files named, with each folder replaced by its images (sorted)."""
    files = []
    for path in paths:
        if os.path.isdir(path):
            found = sorted(f for f in os.listdir(path) if f.lower().endswith(IMAGE_EXTENSIONS))
            if not found:
                raise ValueError(f"{path}: a folder without .png/.jpg/.jpeg images")
            files += [os.path.join(path, f) for f in found]
        elif os.path.isfile(path):
            files.append(path)
        else:
            raise ValueError(f"image {path}: no such file or folder")
    return files


def check_image_file(option: str, path: str, png_only: bool = False) -> None:
    """An output path Pillow can write: not a folder, an extension it knows (PNG for masks)."""
    if os.path.isdir(path):
        raise ValueError(f"{option} {path}: is a folder; expected an image file name")
    ext = os.path.splitext(path)[1].lower()
    known = Image.registered_extensions()  # '.png' -> 'PNG', ...
    if png_only and ext != ".png":
        raise ValueError(f"{option} {path}: a mask must be a .png file (lossless), got {ext!r}")
    if Image.SAVE.get(known.get(ext, "")) is None:
        raise ValueError(
            f"{option} {path}: unknown image extension {ext!r}; expected e.g. .png or .jpg"
        )


def outputs(args, files: list[str]) -> list[tuple[str, str | None]]:
    """(overlay path, mask path or None) for each input file, after checking the options."""
    if len(files) == 1 and len(args.images) == 1 and not os.path.isdir(args.images[0]):
        check_image_file("-o", args.output)
        if args.mask:
            check_image_file("--mask", args.mask, png_only=True)
        return [(args.output, args.mask or None)]
    if args.mask:
        raise ValueError(
            f"--mask {args.mask}: with several images --mask takes no file name; the masks "
            f"go to {args.output}/<name>.png"
        )
    if os.path.exists(args.output) and not os.path.isdir(args.output):
        raise ValueError(f"-o {args.output}: with several images -o must be a folder")
    stems = [os.path.splitext(os.path.basename(f))[0] for f in files]
    if len(set(stems)) < len(stems):
        raise ValueError("several input images share a file name; their outputs would collide")
    os.makedirs(args.output, exist_ok=True)
    return [
        (
            os.path.join(args.output, f"{stem}_overlay.png"),
            os.path.join(args.output, f"{stem}.png") if args.mask is not None else None,
        )
        for stem in stems
    ]


def segment(model, path: str, args) -> tuple[np.ndarray, np.ndarray]:
    """(image (3, H, W), label (H, W)); the memory check comes before decoding."""
    check_forward_fits(model, image_size(path), args.max_memory, f"image {path}")
    image = read_image(path)  # (3, H, W)
    return image, predict(model, image[None], args.device)[0]  # (H, W)


def run(args) -> int:
    limit_threads(args.threads)
    files = image_files(args.images)
    targets = outputs(args, files)
    ckpt = load_checkpoint(args.checkpoint)
    model = ckpt.build_model().to(args.device)
    for path, (overlay_path, mask_path) in zip(files, targets, strict=True):
        image, label = segment(model, path, args)
        Image.fromarray(overlay(image, label, alpha=args.alpha)).save(overlay_path)
        if mask_path:
            write_mask(mask_path, label)
        counts = np.bincount(label.ravel(), minlength=len(ckpt.class_names)) / label.size
        shares = ", ".join(
            f"{name} {share:.1%}" for name, share in zip(ckpt.class_names, counts) if share
        )
        written = overlay_path + (f" and {mask_path}" if mask_path else "")
        print(f"{path} ({image.shape[1]}x{image.shape[2]}): {shares}; wrote {written}")
    return 0
