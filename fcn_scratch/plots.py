"""Figures of a run, written straight to PNG: learning curves and prediction grids.

Figures are built with ``matplotlib.figure.Figure`` and rendered by the Agg canvas, so no
display or pyplot state is involved (safe on servers and in tests).
"""

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from fcn_scratch.data.base import IGNORE_INDEX
from fcn_scratch.data.palette import colorize, to_hwc, voc_palette

LOSS_KEYS = {"train_loss": "training loss", "loss": "held-out loss"}
METRIC_KEYS = {
    "pixel_acc": "pixel acc.",
    "mean_acc": "mean acc.",
    "mean_iou": "mean IU",
    "fw_iou": "f.w. IU",
}


def plot_learning_curves(
    epochs: Sequence[Mapping],
    path: str,
    title: str = "Learning curves",
    step_loss: Sequence[float] | None = None,
) -> str:
    """Loss (left) and held-out metrics (right) against the epoch; returns ``path``.

    epochs: one record per epoch with ``epoch`` and any of the keys of ``LOSS_KEYS`` and
    ``METRIC_KEYS`` (missing or None values are skipped). step_loss: optional per-step
    training losses, drawn faintly behind, spread evenly over the epochs.
    """
    if not epochs:
        raise ValueError("plot_learning_curves: epochs is empty: nothing to plot")
    x = [r["epoch"] for r in epochs]
    fig = Figure(figsize=(10, 4), layout="constrained")
    FigureCanvasAgg(fig)
    loss_ax, metric_ax = fig.subplots(1, 2)
    if step_loss:
        steps = np.arange(1, len(step_loss) + 1) * (x[-1] / len(step_loss))
        loss_ax.plot(steps, step_loss, color="0.8", linewidth=0.8, label="training loss (step)")
    for ax, keys in ((loss_ax, LOSS_KEYS), (metric_ax, METRIC_KEYS)):
        for key, label in keys.items():
            points = [(e, r[key]) for e, r in zip(x, epochs, strict=True) if r.get(key) is not None]
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", markersize=3, label=label)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # below the axes, off the curves
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=4, frameon=False)
    loss_ax.set_ylabel("cross-entropy per pixel")
    loss_ax.set_title("loss")
    metric_ax.set_ylabel("score")
    metric_ax.set_ylim(0, 1.02)
    metric_ax.set_title("held-out metrics")
    fig.suptitle(title)
    fig.savefig(path, dpi=100)
    return path


def plot_predictions(
    images: np.ndarray,
    targets: np.ndarray,
    predictions: np.ndarray | Mapping[str, np.ndarray],
    path: str,
    class_names: Sequence[str],
    title: str = "Predictions",
    max_rows: int = 8,
) -> str:
    """A grid with one row per sample: image, truth, then one column per prediction.

    images: (N, 3, H, W) float in [0, 1]; targets: (N, H, W) ids or 255 (ignore);
    predictions: (N, H, W) ids, or {column title: (N, H, W)} to compare several models.
    A legend maps the VOC colours to ``class_names``. Returns ``path``.
    """
    if not isinstance(predictions, Mapping):
        predictions = {"prediction": predictions}
    n = min(len(images), max_rows)
    for name, a in {"targets": targets, **predictions}.items():
        if a.shape[0] < n or a.shape[1:] != images.shape[2:]:
            raise ValueError(
                f"plot_predictions: {name} must be (N, H, W) = ({n}, {images.shape[2]}, "
                f"{images.shape[3]}) to match the images, got {a.shape}"
            )
    columns = ["image", "truth", *predictions]
    fig = Figure(figsize=(2.0 * len(columns), 2.0 * n + 0.9), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(n, len(columns), squeeze=False)
    for row in range(n):
        panels = [to_hwc(images[row]), colorize(targets[row])]
        panels += [colorize(p[row]) for p in predictions.values()]
        for col, panel in enumerate(panels):
            ax = axes[row, col]
            ax.imshow(panel, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(columns[col])
    palette = voc_palette()
    handles = [Patch(color=palette[c] / 255.0, label=name) for c, name in enumerate(class_names)]
    if (targets[:n] == IGNORE_INDEX).any():
        handles.append(Patch(color=palette[IGNORE_INDEX] / 255.0, label="ignore"))
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6))
    fig.suptitle(title)
    fig.savefig(path, dpi=100)
    return path
