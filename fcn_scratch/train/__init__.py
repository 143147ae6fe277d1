"""Training, evaluation, checkpoints: what ``fcn-scratch train`` runs, usable from Python.

    from fcn_scratch.train import train
    trainer = train(epochs=4, train_size=512, out=None)   # any TrainConfig field
    trainer.metrics["mean_iou"], trainer.history["epochs"]

``Trainer(config).fit()`` is the loop itself; ``Trainer.resume(path)`` continues a saved
run; ``load_checkpoint(path).build_model()`` gives a trained model back.
"""

from fcn_scratch.train.checkpoint import Checkpoint, CheckpointError, load_checkpoint
from fcn_scratch.train.config import TrainConfig
from fcn_scratch.train.evaluation import confusion, evaluate, predict
from fcn_scratch.train.outputs import write_outputs
from fcn_scratch.train.trainer import Trainer, TrainingDiverged, TrainingInterrupted


def train(config: TrainConfig | None = None, progress: bool = True, **fields) -> Trainer:
    """Train a model as ``fcn-scratch train`` does and return the Trainer.

    Give a TrainConfig, or its fields as keywords (``train(model="fcn32s", epochs=3)``).
    With ``out`` set, checkpoints, metrics.json and the plots are written there.
    """
    config = config or TrainConfig(**fields)
    trainer = Trainer(config, progress=progress)
    trainer.fit()
    if config.out is not None:
        write_outputs(trainer)
    return trainer


__all__ = [
    "Checkpoint",
    "CheckpointError",
    "TrainConfig",
    "Trainer",
    "TrainingDiverged",
    "TrainingInterrupted",
    "confusion",
    "evaluate",
    "load_checkpoint",
    "predict",
    "train",
    "write_outputs",
]
