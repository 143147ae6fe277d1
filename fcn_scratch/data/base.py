"""In-memory segmentation datasets and seeded batching.

A dataset holds ``images: (N, 3, H, W) float32`` in [0, 1] and ``labels: (N, H, W)`` with
class ids in ``[0, num_classes)`` and ``IGNORE_INDEX`` (255) for pixels that count for nothing.
Labels are stored as uint8 (an eighth of the memory) and handed out as int64.
``DataLoader`` walks a dataset in batches, in an order fixed by ``(seed, epoch)``, and can
save and restore where it stands, so an interrupted run resumes with the same batches.
"""

from collections.abc import Iterator, Sequence

import numpy as np

IGNORE_INDEX = 255


class ArrayDataset:
    """Images and label maps held as two arrays; indexing returns ``(image, label)``.

    images: (N, 3, H, W) float32; labels: (N, H, W) ints in [0, num_classes) or 255,
    stored as uint8; class_names: one per class id.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, class_names: Sequence[str]):
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"dataset: images must be (N, 3, H, W), got shape {images.shape}")
        if labels.shape != (images.shape[0], *images.shape[2:]):
            raise ValueError(
                f"dataset: labels must be (N, H, W) = {(images.shape[0], *images.shape[2:])} "
                f"to match the images, got {labels.shape}"
            )
        self.class_names = tuple(class_names)
        bad = (labels != IGNORE_INDEX) & ((labels < 0) | (labels >= self.num_classes))
        if bad.any():
            raise ValueError(
                f"dataset: labels must be class ids in [0, {self.num_classes}) or "
                f"{IGNORE_INDEX} (ignore), got {np.unique(labels[bad])[:10].tolist()}"
            )
        self.images = np.ascontiguousarray(images, dtype=np.float32)
        self.labels = np.ascontiguousarray(labels, dtype=np.uint8)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of every image."""
        return self.images.shape[2], self.images.shape[3]

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(image (3, H, W) float32, label (H, W) int64)."""
        return self.images[i], self.labels[i].astype(np.int64)

    def get_batch(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """x: (B, 3, H, W) float32, y: (B, H, W) int64, fresh arrays."""
        return self.images[indices], self.labels[indices].astype(np.int64)

    def subset(self, indices: np.ndarray) -> "ArrayDataset":
        """A dataset of the samples at ``indices`` (copied), with the same classes."""
        return ArrayDataset(self.images[indices], self.labels[indices], self.class_names)

    def split(self, holdout: int, seed: int = 0) -> tuple["ArrayDataset", "ArrayDataset"]:
        """(rest, held-out): ``holdout`` samples drawn at random with ``seed``, and the rest."""
        if not 0 < holdout < len(self):
            raise ValueError(
                f"dataset.split: holdout must be between 1 and {len(self) - 1} for "
                f"{len(self)} samples, got {holdout}"
            )
        order = np.random.default_rng(seed).permutation(len(self))
        return self.subset(np.sort(order[holdout:])), self.subset(np.sort(order[:holdout]))


def _batches_in_order(dataset, order, batch_size, drop_last, start):
    count = _num_batches(len(order), batch_size, drop_last)
    for b in range(start, count):
        yield dataset.get_batch(order[b * batch_size : (b + 1) * batch_size])


def _num_batches(n: int, batch_size: int, drop_last: bool) -> int:
    return n // batch_size if drop_last else -(-n // batch_size)


class DataLoader:
    """Batches ``(x: (B, 3, H, W) float32, y: (B, H, W) int64)`` over epochs.

    Epoch ``e`` visits the samples in ``default_rng([seed, e]).permutation(N)`` (or in order
    without ``shuffle``), so the order depends on nothing but the seed and the epoch number.
    ``state_dict()`` records the epoch and how many of its batches were handed out; after
    ``load_state_dict`` iteration resumes with the next batch. Each ``for`` loop over the
    loader runs the rest of the current epoch, then moves to the next epoch. A dataset
    with a ``set_epoch`` method (random crops: ``VOCCrops``) is told the epoch first.
    """

    def __init__(
        self,
        dataset: ArrayDataset,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ):
        if batch_size < 1:
            raise ValueError(f"DataLoader: batch_size must be positive, got {batch_size}")
        if drop_last and batch_size > len(dataset):
            raise ValueError(
                f"DataLoader: drop_last with batch_size {batch_size} > dataset size "
                f"{len(dataset)} would give no batches"
            )
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.epoch = 0
        self.position = 0  # batches of the current epoch already handed out

    def __len__(self) -> int:
        """Batches per epoch."""
        return _num_batches(len(self.dataset), self.batch_size, self.drop_last)

    def order(self, epoch: int) -> np.ndarray:
        """(N,) sample indices in the order epoch ``epoch`` visits them."""
        if not self.shuffle:
            return np.arange(len(self.dataset))
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.dataset))

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        order = self.order(self.epoch)
        if hasattr(self.dataset, "set_epoch"):  # datasets drawing random crops per epoch
            self.dataset.set_epoch(self.epoch)
        for batch in _batches_in_order(
            self.dataset, order, self.batch_size, self.drop_last, self.position
        ):
            self.position += 1
            yield batch
        self.epoch += 1
        self.position = 0

    def state_dict(self) -> dict[str, np.ndarray]:
        """{'seed', 'epoch', 'position'} as int64 arrays (storable in an .npz)."""
        return {
            "seed": np.array(self.seed, dtype=np.int64),
            "epoch": np.array(self.epoch, dtype=np.int64),
            "position": np.array(self.position, dtype=np.int64),
        }

    def load_state_dict(self, state: dict) -> None:
        missing = {"seed", "epoch", "position"} - set(state)
        if missing:
            raise KeyError(f"DataLoader.load_state_dict: missing keys {sorted(missing)}")
        position = int(state["position"])
        if not 0 <= position <= len(self):
            raise ValueError(
                f"DataLoader.load_state_dict: position {position} is outside an epoch of "
                f"{len(self)} batches (was the checkpoint made with another batch size?)"
            )
        self.seed = int(state["seed"])
        self.epoch = int(state["epoch"])
        self.position = position
