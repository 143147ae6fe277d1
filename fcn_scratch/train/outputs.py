"""What a finished run leaves in its ``--out`` folder, besides the checkpoint.

metrics.json          final held-out metrics (pixel_acc, mean_acc, mean_iou, fw_iou,
                      per_class_iou, loss), class_names, config, history
learning_curves.png   training and held-out loss, held-out mean IU and pixel accuracy
predictions.png       held-out images, their truth and the model's prediction
"""

import os

import numpy as np

from fcn_scratch import plots
from fcn_scratch.io import write_json
from fcn_scratch.train.evaluation import predict

METRIC_KEYS = ("pixel_acc", "mean_acc", "mean_iou", "fw_iou", "per_class_iou", "loss")


def write_outputs(trainer, num_examples: int = 6) -> dict[str, str]:
    """Write metrics.json and the two plots into ``trainer.config.out``; return the paths."""
    out = trainer.config.out
    paths = {
        "metrics": os.path.join(out, "metrics.json"),
        "curves": os.path.join(out, "learning_curves.png"),
        "predictions": os.path.join(out, "predictions.png"),
    }
    write_json(paths["metrics"], metrics_record(trainer))
    name = trainer.config.model
    plots.plot_learning_curves(
        trainer.history["epochs"],
        paths["curves"],
        title=f"{name}: learning curves",
        step_loss=trainer.history["step_loss"],
    )
    images, truth = example_images(trainer.val_set, num_examples)
    pred = predict(trainer.model, images, trainer.config.device, trainer.config.batch_size)
    plots.plot_predictions(
        images,
        truth,
        pred,
        paths["predictions"],
        trainer.class_names,
        title=f"{name}: held-out predictions",
    )
    return paths


def example_images(dataset, count: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """The first ``count`` (images (B, 3, H, W), labels (B, H, W)) of ``dataset`` for a
    figure; images of different sizes (VOC) are cut to their common top-left part."""
    if dataset.image_size is not None:
        return dataset.get_batch(np.arange(min(count, len(dataset))))
    pairs = [dataset[i] for i in range(min(count, len(dataset)))]
    h = min(y.shape[0] for _, y in pairs)
    w = min(y.shape[1] for _, y in pairs)
    return np.stack([x[:, :h, :w] for x, _ in pairs]), np.stack([y[:h, :w] for _, y in pairs])


def metrics_record(trainer) -> dict:
    """The contents of metrics.json."""
    final = trainer.metrics or {}
    return {
        **{key: final.get(key) for key in METRIC_KEYS},
        "class_names": trainer.class_names,
        "epochs_completed": trainer.epoch,
        "steps": trainer.step,
        "wall_time_s": trainer.elapsed,
        "num_parameters": trainer.model.num_parameters(),
        "config": trainer.config.to_dict(),
        "history": trainer.history,
    }
