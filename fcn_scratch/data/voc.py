"""PASCAL VOC: its 21 classes, and datasets read lazily from its folder layout."""

import os
from collections.abc import Sequence

import numpy as np

from fcn_scratch.data.base import IGNORE_INDEX
from fcn_scratch.data.images import read_image, read_mask

VOC_CLASSES = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)


def default_class_names(num_classes: int) -> list[str]:
    """VOC's names for 21 classes; otherwise 'background', 'class 1', 'class 2', ..."""
    if num_classes == len(VOC_CLASSES):
        return list(VOC_CLASSES)
    return ["background", *(f"class {i}" for i in range(1, num_classes))]


def is_voc(root: str) -> bool:
    """Whether ``root`` has VOC's layout (JPEGImages, SegmentationClass, ImageSets)."""
    return all(
        os.path.isdir(os.path.join(root, *part))
        for part in (("JPEGImages",), ("SegmentationClass",), ("ImageSets", "Segmentation"))
    )


def voc_class_names(root: str) -> list[str]:
    """The names in ``root/classes.txt`` (one per line, id order), or VOC's 21."""
    path = os.path.join(root, "classes.txt")
    if not os.path.isfile(path):
        return list(VOC_CLASSES)
    with open(path, encoding="utf-8") as f:
        names = [line.strip() for line in f if line.strip()]
    if len(names) < 2:
        raise ValueError(f"{path}: expected at least 2 class names, one per line, got {names}")
    return names


class VOCDataset:
    """The images of one split of a VOC-layout folder, read from disk when asked for.

        root/JPEGImages/<id>.jpg                 RGB images, sizes differ
        root/SegmentationClass/<id>.png          palette PNGs of class ids, 255 = ignore
        root/ImageSets/Segmentation/<split>.txt  one id per line

    Ids of the split without both files are skipped (VOC's full image set is larger than
    its segmentation set). ``dataset[i]`` is (image (3, H, W) float32 in [0, 1], label
    (H, W) int64) at the image's own size; ``image_size`` is None (it varies), so
    evaluation takes one image at a time. ``limit`` keeps the first ``limit`` ids.
    """

    def __init__(
        self,
        root: str,
        split: str = "train",
        class_names: Sequence[str] | None = None,
        limit: int | None = None,
    ):
        list_path = os.path.join(root, "ImageSets", "Segmentation", f"{split}.txt")
        if not is_voc(root) or not os.path.isfile(list_path):
            raise FileNotFoundError(
                f"VOCDataset: {root} lacks {list_path} (expected VOC's layout: JPEGImages/, "
                "SegmentationClass/, ImageSets/Segmentation/train.txt and val.txt)"
            )
        with open(list_path, encoding="utf-8") as f:
            ids = [line.split()[0] for line in f if line.strip()]
        self.root, self.split = root, split
        self.ids = [
            i for i in ids if os.path.isfile(self._image(i)) and os.path.isfile(self._mask(i))
        ]
        self.ids = self.ids[:limit]
        if not self.ids:
            raise FileNotFoundError(
                f"VOCDataset: none of the {len(ids)} ids in {list_path} has both "
                "JPEGImages/<id>.jpg and SegmentationClass/<id>.png"
            )
        self.class_names = tuple(class_names or voc_class_names(root))
        self.image_size = None  # images keep their own sizes

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.ids)

    def _image(self, i: str) -> str:
        return os.path.join(self.root, "JPEGImages", f"{i}.jpg")

    def _mask(self, i: str) -> str:
        return os.path.join(self.root, "SegmentationClass", f"{i}.png")

    def image_paths(self) -> list[str]:
        """The image files, in dataset order."""
        return [self._image(i) for i in self.ids]

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(image (3, H, W) float32 in [0, 1], label (H, W) int64)."""
        image_path, mask_path = self._image(self.ids[index]), self._mask(self.ids[index])
        image, label = read_image(image_path), read_mask(mask_path)
        if image.shape[1:] != label.shape:
            raise ValueError(
                f"VOCDataset: image {image_path} is {image.shape[1]}x{image.shape[2]} (HxW) "
                f"but its mask {mask_path} is {label.shape[0]}x{label.shape[1]}"
            )
        bad = (label != IGNORE_INDEX) & (label >= self.num_classes)
        if bad.any():
            raise ValueError(
                f"VOCDataset: mask {mask_path} holds ids {np.unique(label[bad])[:8].tolist()} "
                f"outside [0, {self.num_classes}) and {IGNORE_INDEX}; name the classes in "
                f"{os.path.join(self.root, 'classes.txt')}"
            )
        return image, label.astype(np.int64)

    def get_batch(self, indices) -> tuple[np.ndarray, np.ndarray]:
        """x: (B, 3, H, W), y: (B, H, W) for images of one size (B = 1 always works)."""
        pairs = [self[int(i)] for i in indices]
        sizes = {y.shape for _, y in pairs}
        if len(sizes) > 1:
            raise ValueError(
                f"VOCDataset: images of different sizes {sorted(sizes)[:3]} cannot share a "
                "batch; take one at a time, or crop them (VOCCrops)"
            )
        return np.stack([x for x, _ in pairs]), np.stack([y for _, y in pairs])

    @property
    def labels(self):
        """The label maps, read one by one when iterated (for class statistics)."""
        return (self[i][1] for i in range(len(self)))


class VOCCrops:
    """Training samples from a VOCDataset: a random ``size`` x ``size`` crop of each image,
    flipped left-right with probability 1/2.

    An image smaller than ``size`` is padded (image with 0, label with 255 = ignore) as
    torchvision's segmentation reference does. The crop and flip of sample ``i`` in epoch
    ``e`` come from ``default_rng([seed, e, i])`` alone; ``DataLoader`` calls
    ``set_epoch``, so a resumed run draws the same crops.
    """

    def __init__(self, dataset: VOCDataset, size: int, seed: int = 0):
        self.dataset, self.size, self.seed = dataset, int(size), int(seed)
        self.class_names = dataset.class_names
        self.image_size = (self.size, self.size)
        self.epoch = 0

    @property
    def num_classes(self) -> int:
        return self.dataset.num_classes

    @property
    def labels(self):
        return self.dataset.labels

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(image (3, size, size) float32, label (size, size) int64)."""
        image, label = self.dataset[index]
        s = self.size
        h, w = label.shape
        ph, pw = max(s - h, 0), max(s - w, 0)
        if ph or pw:
            image = np.pad(image, ((0, 0), (0, ph), (0, pw)))
            label = np.pad(label, ((0, ph), (0, pw)), constant_values=IGNORE_INDEX)
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        top = int(rng.integers(0, label.shape[0] - s, endpoint=True))
        left = int(rng.integers(0, label.shape[1] - s, endpoint=True))
        image, label = (
            image[:, top : top + s, left : left + s],
            label[top : top + s, left : left + s],
        )
        if rng.random() < 0.5:
            image, label = image[:, :, ::-1], label[:, ::-1]
        return np.ascontiguousarray(image), np.ascontiguousarray(label)

    def get_batch(self, indices) -> tuple[np.ndarray, np.ndarray]:
        """x: (B, 3, size, size) float32, y: (B, size, size) int64."""
        pairs = [self[int(i)] for i in indices]
        return np.stack([x for x, _ in pairs]), np.stack([y for _, y in pairs])
