"""Held-out evaluation and prediction: forward passes only, no graph kept.

``evaluate`` streams a dataset through the model in eval mode into a ConfusionMatrix
(ignored pixels excluded) and returns the paper's four metrics, per-class IU and the mean
loss. ``predict`` returns label maps for a batch of images of any size.
"""

import math
from contextlib import contextmanager

import numpy as np

from fcn_scratch import functional as F
from fcn_scratch.autograd import Tensor
from fcn_scratch.data import IGNORE_INDEX
from fcn_scratch.device import to_device
from fcn_scratch.metrics import ConfusionMatrix


@contextmanager
def inference(model):
    """Eval mode, and parameters marked as not needing gradients, so that ops keep no
    backward closures (the forward's saved arrays are freed at once); restored after."""
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad = False
    try:
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad = flag
        model.train(was_training)


def predict(model, images: np.ndarray, device: str = "cpu", batch_size: int = 16) -> np.ndarray:
    """images: (N, 3, H, W) float32 in [0, 1] -> labels (N, H, W) int64 (argmax of logits)."""
    out = []
    with inference(model):
        for start in range(0, len(images), batch_size):
            x = Tensor(to_device(np.ascontiguousarray(images[start : start + batch_size]), device))
            logits = model(x).data  # (B, K, H, W)
            out.append(to_device(logits.argmax(axis=1), "cpu"))
    return np.concatenate(out).astype(np.int64)  # (N, H, W)


def evaluate(model, dataset, batch_size: int = 16, device: str = "cpu") -> dict:
    """The four metrics of the paper on ``dataset``, per-class IU and the mean loss.

    Returns {'pixel_acc', 'mean_acc', 'mean_iou', 'fw_iou', 'per_class_iou' (one per class,
    None where a class is absent from both truth and prediction), 'loss' (unweighted
    cross-entropy per non-ignored pixel)}.
    """
    cm, loss = confusion(model, dataset, batch_size, device)
    return {**cm.summary(), "loss": loss}


def confusion(
    model, dataset, batch_size: int = 16, device: str = "cpu"
) -> tuple[ConfusionMatrix, float]:
    """The confusion matrix of ``model`` on ``dataset`` and the mean loss per valid pixel."""
    cm = ConfusionMatrix(dataset.num_classes, ignore_index=IGNORE_INDEX)
    loss_sum, pixels = 0.0, 0
    with inference(model):
        for start in range(0, len(dataset), batch_size):
            x, y = dataset.get_batch(np.arange(start, min(start + batch_size, len(dataset))))
            logits = model(Tensor(to_device(x, device)))  # (B, K, H, W)
            valid = int((y != IGNORE_INDEX).sum())
            if valid:
                loss = F.cross_entropy(
                    logits, to_device(y, device), ignore_index=IGNORE_INDEX, reduction="sum"
                )
                loss_sum += loss.item()
                pixels += valid
            cm.update(to_device(logits.data.argmax(axis=1), "cpu"), y)
    return cm, (loss_sum / pixels if pixels else math.nan)
