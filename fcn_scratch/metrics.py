"""Segmentation metrics from a streaming confusion matrix (FCN paper, section 5).

With ``n_ij`` the number of pixels of true class i predicted as class j and
``t_i = sum_j n_ij`` the pixels of class i:

    pixel accuracy            sum_i n_ii / sum_i t_i
    mean accuracy             (1/n_cl) sum_i n_ii / t_i
    mean IU                   (1/n_cl) sum_i n_ii / (t_i + sum_j n_ji - n_ii)
    frequency weighted IU     (sum_k t_k)^-1 sum_i t_i n_ii / (t_i + sum_j n_ji - n_ii)

A class's accuracy is undefined when it never occurs in the truth (``t_i = 0``), and its IU
when it occurs in neither truth nor prediction (the union is 0); undefined values are NaN and
the means run over the classes where the value is defined (so ``n_cl`` counts only those).
A class that is predicted but absent from the truth has IU 0 and pulls mean IU down.
"""

import numpy as np

from fcn_scratch.device import array_module, same_device, to_device


class ConfusionMatrix:
    """Counts ``matrix[i, j]`` = pixels of true class i predicted as j, over many batches.

    ``update`` accepts NumPy or CuPy arrays: the counting (a bincount) runs on the arrays'
    own device and only the ``(K, K)`` counts and the ids' ranges travel to the host.
    Pixels whose target is ``ignore_index`` are skipped.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255):
        if num_classes < 1:
            raise ValueError(f"ConfusionMatrix: num_classes must be positive, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)  # (K, K)

    def reset(self) -> None:
        self.matrix[:] = 0

    def update(self, pred, target) -> None:
        """Add a batch: ``pred`` and ``target`` int arrays of one shape, e.g. ``(N, H, W)``.

        ``pred`` holds class ids in ``[0, K)``; ``target`` holds class ids or ``ignore_index``.
        """
        if pred.shape != target.shape:
            raise ValueError(
                f"ConfusionMatrix.update: pred and target must have one shape, got "
                f"{tuple(pred.shape)} and {tuple(target.shape)}"
            )
        same_device("ConfusionMatrix.update", pred=pred, target=target)
        xp = array_module(target)
        k = self.num_classes
        pred = pred.reshape(-1).astype(xp.int64)
        target = target.reshape(-1).astype(xp.int64)
        keep = target != self.ignore_index
        pred, target = pred[keep], target[keep]
        if target.size:  # the ids' ranges, read from the device in one copy
            ends = xp.stack([target.min(), target.max(), pred.min(), pred.max()])
            t_lo, t_hi, p_lo, p_hi = to_device(ends, "cpu").tolist()
            for name, lo, hi in (("target", t_lo, t_hi), ("pred", p_lo, p_hi)):
                if lo < 0 or hi >= k:
                    raise ValueError(
                        f"ConfusionMatrix.update: {name} ids must lie in [0, {k})"
                        + (f" or be {self.ignore_index}" if name == "target" else "")
                        + f", got range [{lo}, {hi}]"
                    )
        counts = to_device(xp.bincount(target * k + pred, minlength=k * k), "cpu")  # (K*K,)
        self.matrix += counts.reshape(k, k)

    def pixel_accuracy(self) -> float:
        total = self.matrix.sum()
        return float(np.trace(self.matrix) / total) if total else float("nan")

    def class_accuracy(self) -> np.ndarray:
        """(K,) accuracy per class, NaN for classes absent from the truth."""
        truth = self.matrix.sum(axis=1)
        return _safe_divide(np.diag(self.matrix), truth)

    def iou(self) -> np.ndarray:
        """(K,) intersection over union per class, NaN for classes absent from both."""
        inter = np.diag(self.matrix)
        union = self.matrix.sum(axis=1) + self.matrix.sum(axis=0) - inter
        return _safe_divide(inter, union)

    def mean_accuracy(self) -> float:
        return _nanmean(self.class_accuracy())

    def mean_iou(self) -> float:
        return _nanmean(self.iou())

    def fw_iou(self) -> float:
        """Frequency weighted IU: per-class IU weighted by the class's share of true pixels."""
        truth = self.matrix.sum(axis=1)
        total = truth.sum()
        if total == 0:
            return float("nan")
        iou = self.iou()
        present = truth > 0  # a class with t_i = 0 has weight 0 (and perhaps IU NaN)
        return float((truth[present] * iou[present]).sum() / total)

    def summary(self) -> dict:
        """The four metrics and per-class IU as plain Python floats.

        Keys: ``pixel_acc``, ``mean_acc``, ``mean_iou``, ``fw_iou`` (NaN when nothing has
        been counted) and ``per_class_iou`` (list of K floats, NaN for a class absent from
        both truth and prediction). Strict JSON has no NaN: write those as null.
        """
        return {
            "pixel_acc": self.pixel_accuracy(),
            "mean_acc": self.mean_accuracy(),
            "mean_iou": self.mean_iou(),
            "fw_iou": self.fw_iou(),
            "per_class_iou": [float(v) for v in self.iou()],
        }

    def table(self, class_names: list[str] | None = None) -> str:
        """Per-class IU and accuracy as a plain-text table, one row per class."""
        names = class_names or [str(i) for i in range(self.num_classes)]
        if len(names) != self.num_classes:
            raise ValueError(
                f"ConfusionMatrix.table: expected {self.num_classes} class names, got {len(names)}"
            )
        width = max(5, *(len(n) for n in names))
        rows = [f"{'class':<{width}}  {'IU':>6}  {'acc':>6}  {'pixels':>10}"]
        truth = self.matrix.sum(axis=1)
        for name, iu, acc, t in zip(names, self.iou(), self.class_accuracy(), truth, strict=True):
            rows.append(f"{name:<{width}}  {_fmt(iu)}  {_fmt(acc)}  {t:>10d}")
        return "\n".join(rows)


def _safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _nanmean(values: np.ndarray) -> float:
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if defined.size else float("nan")


def _fmt(v: float) -> str:
    return f"{'-':>6}" if np.isnan(v) else f"{v:6.3f}"
