"""A folder of your own images and PNG masks, as a dataset.

Layout (file stems pair an image with its mask):

    root/images/cat_01.jpg     RGB (or grey) image: .png, .jpg or .jpeg
    root/masks/cat_01.png      single-channel PNG, pixel value = class id, 255 = ignore
    root/classes.txt           optional: the class names, one a line (id 0 first)

Masks must be greyscale ("L") or palette ("P") PNGs whose values are the class ids, as in
PASCAL VOC's SegmentationClass folder (palette PNGs store the id and show it in colour).
Images are read with Pillow (installed with matplotlib) and scaled to [0, 1].
"""

import os
from collections.abc import Sequence

import numpy as np
from PIL import Image

from fcn_scratch.data.base import IGNORE_INDEX, ArrayDataset

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


class FolderDataset(ArrayDataset):
    """Every image of ``root/images`` with its mask from ``root/masks``, loaded into memory.

    Args:
        root: the folder holding ``images/`` and ``masks/``.
        size: None to keep the files' size (then all must agree), or an int or (H, W) to
            bring every pair to: resized (image bilinear, mask nearest) or, with ``crop``,
            cut at a random position (the image must be at least that large).
        crop: random crops instead of resizing.
        num_classes: class count; None takes it from ``root/classes.txt`` or else infers
            ``max id + 1`` from the masks, which then must hold most ids below it (a stray
            value such as 200 is reported, not taken for 201 classes).
        class_names: names of the classes (default: ``root/classes.txt``, or
            "background", "class 1", ...).
        seed: seed of the crop positions.
    """

    def __init__(
        self,
        root: str,
        size: int | tuple[int, int] | None = None,
        crop: bool = False,
        num_classes: int | None = None,
        class_names: Sequence[str] | None = None,
        seed: int = 0,
    ):
        pairs = find_pairs(root)
        size = (size, size) if isinstance(size, (int, np.integer)) else size
        rng = np.random.default_rng(seed)
        images, masks = [], []
        for image_path, mask_path in pairs:
            with Image.open(image_path) as im:
                image = im.convert("RGB")
            with Image.open(mask_path) as im:
                if im.mode not in ("L", "P"):
                    raise ValueError(
                        f"FolderDataset: mask {mask_path} has mode {im.mode!r}; expected a "
                        "single-channel PNG (mode 'L' or 'P') whose pixel values are class ids"
                    )
                mask = im.copy()
            if image.size != mask.size:
                raise ValueError(
                    f"FolderDataset: image {image_path} is {image.size[0]}x{image.size[1]} "
                    f"(WxH) but its mask {mask_path} is {mask.size[0]}x{mask.size[1]}"
                )
            if size is not None:
                image, mask = _fit(image, mask, size, crop, rng, image_path)
            images.append(np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255.0)
            masks.append(np.asarray(mask, dtype=np.uint8))
        shapes = {m.shape for m in masks}
        if len(shapes) > 1:
            raise ValueError(
                f"FolderDataset: images in {root} have different sizes {sorted(shapes)[:4]}; "
                "pass size=(H, W) to resize them (or crop=True to cut crops)"
            )
        labels = np.stack(masks)  # (N, H, W)
        found = np.unique(labels[labels != IGNORE_INDEX])
        class_names = class_names or read_class_names(root)
        if num_classes is None and class_names is not None:
            num_classes = len(class_names)
        if num_classes is None:
            _check_inferred_ids(labels, found, root)
        k = num_classes if num_classes is not None else int(found.max(initial=0)) + 1
        if found.size and found.max() >= k:
            bad = [
                (p, sorted(set(np.unique(m).tolist()) - set(range(k)) - {IGNORE_INDEX}))
                for (_, p), m in zip(pairs, masks, strict=True)
            ]
            bad = [(p, ids) for p, ids in bad if ids]
            raise ValueError(
                f"FolderDataset: num_classes={k}, so mask values must lie in [0, {k}) or be "
                f"{IGNORE_INDEX} (ignore); {len(bad)} masks hold others, e.g. {bad[0][0]} "
                f"has {bad[0][1][:8]}"
            )
        names = class_names or ["background", *(f"class {i}" for i in range(1, k))]
        if len(names) != k:
            raise ValueError(
                f"FolderDataset: got {len(names)} class_names for {k} classes: {list(names)}"
            )
        self.root = root
        self.files = [image_path for image_path, _ in pairs]
        super().__init__(np.stack(images), labels, names)


def read_class_names(root: str) -> list[str] | None:
    """The names in ``root/classes.txt`` (one a line, blank lines skipped), or None."""
    path = os.path.join(root, "classes.txt")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        names = [line.strip() for line in f if line.strip()]
    if not names:
        raise ValueError(f"FolderDataset: {path} lists no class names")
    return names


def _check_inferred_ids(labels: np.ndarray, found: np.ndarray, root: str) -> None:
    """With the class count inferred as ``max id + 1``, most ids below it must occur: when
    more are absent than present (ids 0-3 and one stray 200 would make 201 classes, 196 of
    them empty) the large ids are stray values (an edited or resampled mask), not classes."""
    missing = sorted(set(range(int(found.max(initial=0)) + 1)) - set(found.tolist()))
    if len(missing) <= len(found):
        return
    stray = found[found > missing[0]]
    pixels = ", ".join(f"{i}: {int((labels == i).sum())}" for i in stray[:10])
    raise ValueError(
        f"FolderDataset: the masks in {root} hold ids {found.tolist()[:12]}, so "
        f"{int(found.max()) + 1} classes, of which {len(missing)} never occur "
        f"(e.g. {missing[:5]}); pixels with each unexpected id: {pixels}. Give the number "
        f"of classes (--num-classes) or list the names in {root}/classes.txt to accept "
        "them, or fix the masks"
    )


def find_pairs(root: str) -> list[tuple[str, str]]:
    """Sorted (image path, mask path) pairs of ``root``; errors say what is missing."""
    image_dir, mask_dir = os.path.join(root, "images"), os.path.join(root, "masks")
    for folder in (root, image_dir, mask_dir):
        if not os.path.isdir(folder):
            raise FileNotFoundError(
                f"FolderDataset: no folder {folder} (expected {root}/images/*.png|jpg and "
                f"{root}/masks/*.png with the same file names)"
            )
    images = {
        os.path.splitext(f)[0]: os.path.join(image_dir, f)
        for f in sorted(os.listdir(image_dir))
        if f.lower().endswith(IMAGE_EXTENSIONS)
    }
    masks = {
        os.path.splitext(f)[0]: os.path.join(mask_dir, f)
        for f in sorted(os.listdir(mask_dir))
        if f.lower().endswith(".png")
    }
    if not images:
        raise FileNotFoundError(f"FolderDataset: no .png/.jpg/.jpeg images in {image_dir}")
    lonely = sorted(set(images) - set(masks))
    if lonely:
        raise FileNotFoundError(
            f"FolderDataset: {len(lonely)} images have no mask in {mask_dir}: "
            f"{[os.path.basename(images[s]) for s in lonely[:5]]} (expected <name>.png)"
        )
    extra = sorted(set(masks) - set(images))
    if extra:
        raise FileNotFoundError(
            f"FolderDataset: {len(extra)} masks have no image in {image_dir}: "
            f"{[os.path.basename(masks[s]) for s in extra[:5]]}"
        )
    return [(images[s], masks[s]) for s in sorted(images)]


def _fit(image, mask, size: tuple[int, int], crop: bool, rng: np.random.Generator, path: str):
    """Bring a PIL image and mask to ``size = (H, W)``: resize or a random crop."""
    h, w = size
    if not crop:
        return image.resize((w, h), Image.BILINEAR), mask.resize((w, h), Image.NEAREST)
    if image.height < h or image.width < w:
        raise ValueError(
            f"FolderDataset: cannot crop {h}x{w} (HxW) from {path}, which is "
            f"{image.height}x{image.width}; use a smaller size or crop=False to resize"
        )
    top = int(rng.integers(0, image.height - h, endpoint=True))
    left = int(rng.integers(0, image.width - w, endpoint=True))
    box = (left, top, left + w, top + h)
    return image.crop(box), mask.crop(box)
