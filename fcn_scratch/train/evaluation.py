"""Held-out evaluation and prediction: forward passes only, no graph kept.

``evaluate`` streams a dataset through the model in eval mode into a ConfusionMatrix
(ignored pixels excluded) and returns the paper's four metrics, per-class IU and the mean
loss. ``predict`` returns label maps for a batch of images of any size.
"""

import math
from contextlib import contextmanager
from functools import partial

import numpy as np

from fcn_scratch import functional as F
from fcn_scratch.autograd import Tensor, no_grad
from fcn_scratch.data import IGNORE_INDEX
from fcn_scratch.device import to_device
from fcn_scratch.metrics import ConfusionMatrix
from fcn_scratch.parallel import Lanes, lane_count


@contextmanager
def inference(model):
    """Eval mode and ``no_grad`` (ops keep no backward closures, so each forward's saved
    arrays are freed at once); the model's mode is restored after."""
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            yield model
    finally:
        model.train(was_training)


def predict(model, images: np.ndarray, device: str = "cpu", batch_size: int = 16) -> np.ndarray:
    """images: (N, 3, H, W) float32 in [0, 1] -> labels (N, H, W) int64 (argmax of logits)."""
    out = []
    with inference(model):
        lanes = Lanes(model, lane_count(model, device))
        for start in range(0, len(images), batch_size):
            batch = np.ascontiguousarray(images[start : start + batch_size])
            out += lanes.run(partial(_labels, device=device), batch)
        lanes.close()
    return np.concatenate(out).astype(np.int64)  # (N, H, W)


def evaluate(model, dataset, batch_size: int = 16, device: str = "cpu", lanes=None) -> dict:
    """The four metrics of the paper on ``dataset``, per-class IU and the mean loss.

    Returns {'pixel_acc', 'mean_acc', 'mean_iou', 'fw_iou', 'per_class_iou' (one per class,
    None where a class is absent from both truth and prediction), 'loss' (unweighted
    cross-entropy per non-ignored pixel)}. ``lanes``: see ``confusion``.
    """
    cm, loss = confusion(model, dataset, batch_size, device, lanes)
    return {**cm.summary(), "loss": loss}


def confusion(
    model, dataset, batch_size: int = 16, device: str = "cpu", lanes=None
) -> tuple[ConfusionMatrix, float]:
    """The confusion matrix of ``model`` on ``dataset`` and the mean loss per valid pixel.

    A dataset whose ``image_size`` is None (images of different sizes, unresized) is
    evaluated one image at a time. ``lanes``: lanes of ``model`` to run the batches in (a
    trainer's lane processes); used when they have as many lanes as evaluation may use,
    else, or when None, thread lanes made here. The results are the same bits either way."""
    cm = ConfusionMatrix(dataset.num_classes, ignore_index=IGNORE_INDEX)
    loss_sum, pixels = 0.0, 0
    if getattr(dataset, "image_size", ()) is None:  # images of their own sizes: one at a time
        batch_size = 1
    with inference(model):
        count = lane_count(model, device)
        own = lanes is None or lanes.model is not model or lanes.count != count
        if own:
            lanes = Lanes(model, count)
        for start in range(0, len(dataset), batch_size):
            x, y = dataset.get_batch(np.arange(start, min(start + batch_size, len(dataset))))
            for labels, target, part_loss in lanes.run(partial(_score, device=device), x, y):
                cm.update(labels, target)  # counted on the device
                loss_sum += part_loss
            pixels += int((y != IGNORE_INDEX).sum())
        if own:
            lanes.close()
    return cm, (loss_sum / pixels if pixels else math.nan)


def _labels(model, x: np.ndarray, device: str) -> np.ndarray:
    """x: (b, 3, H, W) -> the argmax labels (b, H, W), on the host."""
    logits = model(Tensor(to_device(x, device)))  # (b, K, H, W)
    return to_device(logits.data.argmax(axis=1), "cpu")


def _score(model, x: np.ndarray, y: np.ndarray, device: str) -> tuple:
    """(argmax labels (b, H, W) and y, both on ``device``; summed loss of the valid pixels)."""
    logits = model(Tensor(to_device(x, device)))  # (b, K, H, W)
    target = to_device(y, device)  # (b, H, W)
    loss = 0.0
    if (y != IGNORE_INDEX).any():
        loss = F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="sum").item()
    return logits.data.argmax(axis=1), target, loss
