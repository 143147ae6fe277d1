"""The training loop: forward, pixel-wise cross-entropy, backward, optimiser step.

    trainer = Trainer(TrainConfig(epochs=3, out=None))
    metrics = trainer.fit()            # held-out metrics after the last epoch
    trainer.history                    # per-epoch records and per-step losses

Each epoch ends with an evaluation on the held-out set and, when ``config.out`` is set, a
checkpoint (``out/checkpoint.npz``), ``out/best.npz`` whenever the held-out mean IU is the
best so far, and ``out/log.csv`` with one row per epoch. With ``config.max_time`` the run
trains until that many seconds have passed (the learning-rate schedule spans the time,
not a number of epochs), then evaluates and saves as after any epoch. A run restored
with ``Trainer.resume(path)`` continues exactly where the checkpoint stood: weights,
optimiser moments, schedule, the data order and position, and the dropout generator are
all restored, so on the CPU it ends with the same bits as a run that was never stopped.

Ctrl-C is held back while a step is applied and while an epoch is evaluated and recorded,
so the state only ever moves from one finished step (or recorded epoch) to the next; an
interrupt anywhere else rewinds to the last of these before the checkpoint is written.
"""

import math
import os
import time
from functools import partial

import numpy as np
from tqdm import tqdm

from fcn_scratch import functional as F
from fcn_scratch import random
from fcn_scratch.autograd import Tensor
from fcn_scratch.data import IGNORE_INDEX, DataLoader
from fcn_scratch.device import to_device
from fcn_scratch.io import atomic_write
from fcn_scratch.lane_processes import training_lanes
from fcn_scratch.train import setup
from fcn_scratch.train.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_model_state,
    save_checkpoint,
)
from fcn_scratch.train.config import TrainConfig
from fcn_scratch.train.evaluation import evaluate
from fcn_scratch.train.fresh import FreshShapes
from fcn_scratch.train.interrupts import deferred_interrupts

# Options that may differ from the checkpoint's when resuming.
RESUMABLE = ("epochs", "max_time", "out", "device")
CHECKPOINT_NAME = "checkpoint.npz"
BEST_NAME = "best.npz"
LOG_NAME = "log.csv"
LOG_COLUMNS = (
    ("epoch", "epoch"),
    ("step", "step"),
    ("lr", "lr"),
    ("loss", "train_loss"),
    ("held_out_loss", "loss"),
    ("pixel_acc", "pixel_acc"),
    ("mean_acc", "mean_acc"),
    ("mean_iou", "mean_iou"),
    ("fw_iou", "fw_iou"),
    ("seconds", "elapsed_s"),
)  # (column of log.csv, key of the epoch record)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is left in place."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; ``checkpoint`` is where the state was saved (or None)."""

    def __init__(self, message: str, checkpoint: str | None):
        super().__init__(message)
        self.checkpoint = checkpoint


class Trainer:
    """Everything a run needs, built from a TrainConfig (datasets may be passed instead)."""

    def __init__(self, config: TrainConfig, train_set=None, val_set=None, progress: bool = True):
        self.config = config.validate()
        random.manual_seed(config.seed)
        # Fresh images every epoch only for the synthetic data this trainer makes itself.
        fresh = config.fresh_data and config.data is None and train_set is None
        self.fresh_data = FreshShapes(config) if fresh else None
        if train_set is None:
            train_set, val_set = setup.make_datasets(config)
        self.train_set, self.val_set = train_set, val_set
        self.class_names = list(train_set.class_names)
        self.model = setup.make_model(config, len(self.class_names))
        self.optimizer = setup.make_optimizer(config, self.model)
        self._data_epoch = 0  # the epoch whose images the loader holds
        self.loader = DataLoader(train_set, config.batch_size, shuffle=True, seed=config.seed)
        self.schedule = setup.make_schedule(config, self.optimizer, len(self.loader))
        self.best_mean_iou: float | None = None
        weight = setup.class_weights(config, train_set.labels, len(self.class_names))
        self.host_weight = weight  # (K,) float32 or None
        self.weight = None if weight is None else to_device(weight, config.device)
        self.lanes = training_lanes(self.model, config.device)
        self.progress = progress
        self.epoch = 0  # epochs completed
        self.step = 0  # optimiser steps taken
        self.elapsed = 0.0  # wall seconds spent in fit, over all sessions of the run
        self._clock_start = (time.perf_counter(), 0.0)
        self.history: dict = {"epochs": [], "step_loss": []}
        self.partial = _empty_partial()  # sums over the epoch in progress
        self.metrics: dict | None = None
        self._committed = self._position()  # where an interrupt rewinds to

    # ---- checkpoints ---------------------------------------------------------------------

    @property
    def checkpoint_path(self) -> str | None:
        return None if self.config.out is None else os.path.join(self.config.out, CHECKPOINT_NAME)

    def save(self, path: str | None = None) -> str:
        """Write a checkpoint of the run as it stands (default: out/checkpoint.npz)."""
        path = path or self.checkpoint_path
        if path is None:
            raise ValueError("Trainer.save: no path given and config.out is None")
        bad = [n for n, p in self.model.named_parameters() if not np.isfinite(p.numpy()).all()]
        if bad:
            raise TrainingDiverged(
                f"not saving a checkpoint: parameters {bad[:3]} hold "
                "NaN or inf; try a lower learning rate (--lr)"
            )
        meta = {
            "class_names": self.class_names,
            "epoch": self.epoch,
            "step": self.step,
            "elapsed": self.elapsed,
            "history": self.history,
            "metrics": self.metrics,
            "best_mean_iou": self.best_mean_iou,
        }
        state = {
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "loader": self.loader.state_dict(),
            "random": random.get_state(),
            "partial": self.partial,
        }
        save_checkpoint(path, self.model.state_dict(), self.config, meta, state)
        return path

    def write_log(self) -> str:
        """Write ``out/log.csv`` from the history: one row per epoch (atomically)."""
        path = os.path.join(self.config.out, LOG_NAME)
        lines = [",".join(column for column, _ in LOG_COLUMNS)]
        for record in self.history["epochs"]:
            lines.append(",".join(f"{record[key]:.6g}" for _, key in LOG_COLUMNS))
        atomic_write(path, lambda f: f.write("\n".join(lines) + "\n"), mode="w")
        return path

    @classmethod
    def resume(cls, path: str, progress: bool = True, **overrides) -> "Trainer":
        """The run saved at ``path``, ready to ``fit`` on. ``overrides`` may change
        ``epochs`` or ``max_time`` (train longer), ``out`` and ``device``; nothing else.
        Without ``out`` the run goes on writing into the checkpoint's own folder (never
        into the ``out`` recorded inside the file)."""
        ckpt = load_checkpoint(path)
        allowed = set(RESUMABLE)
        if set(overrides) - allowed:
            raise ValueError(
                f"Trainer.resume: only {sorted(allowed)} may change on resume, "
                f"got {sorted(set(overrides) - allowed)}"
            )
        overrides.setdefault("out", os.path.dirname(path) or os.curdir)
        if len(ckpt.meta["history"]["epochs"]) != ckpt.epoch:
            raise CheckpointError(
                f"checkpoint {path}: its history records "
                f"{len(ckpt.meta['history']['epochs'])} epochs but it says {ckpt.epoch} "
                "are done; it cannot be resumed"
            )
        config = TrainConfig.from_dict({**ckpt.config.to_dict(), **overrides})
        trainer = cls(config, progress=progress)
        if trainer.class_names != ckpt.class_names:
            raise CheckpointError(
                f"checkpoint {path}: classes {ckpt.class_names} differ from the "
                f"data's {trainer.class_names}"
            )
        load_model_state(trainer.model, ckpt.model_state, path)
        try:
            trainer.optimizer.load_state_dict(ckpt.state["optimizer"])
            trainer.schedule.load_state_dict(ckpt.state["schedule"])
            trainer.loader.load_state_dict(ckpt.state["loader"])
            random.set_state(ckpt.state["random"])
            partial = ckpt.state["partial"]
            trainer.partial = {k: type(v)(partial[k]) for k, v in _empty_partial().items()}
        except (KeyError, ValueError, TypeError, AttributeError, IndexError) as err:
            raise CheckpointError(
                f"checkpoint {path}: its training state does not fit: {err!r}"
            ) from err
        trainer.epoch, trainer.step = ckpt.epoch, int(ckpt.meta["step"])
        trainer.elapsed = float(ckpt.meta["elapsed"])
        trainer.history = ckpt.meta["history"]
        trainer.metrics = trainer.history["epochs"][-1] if trainer.history["epochs"] else None
        trainer._committed = trainer._position()
        trainer.best_mean_iou = ckpt.meta.get("best_mean_iou")
        return trainer

    # ---- training ------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        """Whether the run is done: ``config.epochs`` epochs, or ``config.max_time`` seconds."""
        if self.config.max_time is not None:
            return self.elapsed >= self.config.max_time
        return self.epoch >= self.config.epochs

    def fit(self) -> dict:
        """Train until ``config.epochs`` epochs are done (or ``config.max_time`` seconds have
        passed); return the held-out metrics.

        Raises TrainingDiverged on a NaN/inf loss (the last checkpoint stays as it was) and
        TrainingInterrupted on Ctrl-C (after saving the state of the last finished step).
        """
        self._clock_start = (time.perf_counter(), self.elapsed)
        self.lanes.start()  # before the thread that renders fresh images: lanes may fork
        if self.fresh_data is not None and self._data_epoch == self.loader.epoch:
            self.fresh_data.prefetch(self.loader.epoch + 1)  # drawn while this epoch trains
        try:
            if self.checkpoint_path:
                self.save()  # a last good checkpoint is in out/ from the start
            while not self.finished:
                self._train_epoch()
                with deferred_interrupts():  # Ctrl-C waits until the epoch is recorded
                    self._end_epoch()
        except KeyboardInterrupt as err:
            self._tick()
            self.loader.load_state_dict(self._committed[0])  # forget an unfinished step
            random.set_state(self._committed[1])
            raise self._interrupted() from err
        finally:
            self.lanes.close()
            if self.fresh_data is not None:
                self.fresh_data.close()
        return self.metrics

    def _end_epoch(self) -> None:
        """Count the epoch as done, evaluate on the held-out set, record the epoch, write
        the checkpoint."""
        self._tick()
        self.epoch += 1
        record = {
            "epoch": self.epoch,
            "step": self.step,
            "lr": float(self.optimizer.lr),
            **self._epoch_summary(),
        }
        record.update(
            evaluate(
                self.model, self.val_set, self.config.batch_size, self.config.device, self.lanes
            )
        )
        self.history["epochs"].append(record)
        self.metrics = record
        self.partial = _empty_partial()
        self._committed = self._position()
        if self.checkpoint_path:
            improved = self.best_mean_iou is None or record["mean_iou"] > self.best_mean_iou
            if improved:
                self.best_mean_iou = record["mean_iou"]
            self.save()
            if improved:
                self.save(os.path.join(self.config.out, BEST_NAME))
            self.write_log()
        if self.progress:
            tqdm.write(_describe(record, self.config))

    def _train_epoch(self) -> None:
        """The steps of one epoch (or the rest of one). A KeyboardInterrupt goes on to
        ``fit``, which rewinds to the last finished step and saves."""
        if self.fresh_data is not None and self._data_epoch != self.loader.epoch:
            self.loader.dataset = self.fresh_data.get(self.loader.epoch)
            self._data_epoch = self.loader.epoch
        total = len(self.loader)
        bar = tqdm(
            total=total,
            initial=self.loader.position,
            disable=not self.progress,
            desc=f"epoch {self.epoch + 1}/{self.config.epochs}"
            if self.config.max_time is None
            else f"epoch {self.epoch + 1}",
            unit="batch",
            leave=False,
            dynamic_ncols=True,
        )
        try:
            for x, y in self.loader:
                t0 = time.perf_counter()
                loss, grads_ready = self.train_step(*setup.augment(self.config, x, y, self.step))
                with deferred_interrupts():
                    if grads_ready:
                        self.optimizer.step()
                    self.step += 1
                    self._account(loss, len(x), time.perf_counter() - t0)
                    self._advance_schedule()
                    self._committed = self._position()
                bar.update(1)
                bar.set_postfix(
                    loss=f"{loss:.4f}",
                    img_s=f"{self.partial['images'] / self.partial['seconds']:.1f}",
                )
                if self.config.max_time is not None and self.finished:
                    break  # the time budget is spent: this epoch ends here
        finally:
            bar.close()

    def _advance_schedule(self) -> None:
        """One step of the schedule; on a time budget, to the tick of the time spent."""
        if self.config.max_time is None:
            self.schedule.step()
            return
        self._tick()
        ticks = setup.TIME_TICKS * min(self.elapsed / self.config.max_time, 1.0)
        self.schedule.step(t=int(ticks))

    def train_step(self, x: np.ndarray, y: np.ndarray) -> tuple[float, bool]:
        """Forward and backward on one batch x: (B, 3, H, W), y: (B, H, W); returns the
        loss and whether gradients were computed (False when every pixel is ignored).

        The batch is split across the lanes (``fcn_scratch.parallel``); each lane's loss is
        its share of the batch's mean, so the lanes' gradients add up to the batch's."""
        valid = y != IGNORE_INDEX
        if not valid.any():
            return 0.0, False
        total = valid.sum() if self.host_weight is None else self.host_weight[y[valid]].sum()
        self.optimizer.zero_grad()
        step = partial(
            lane_loss, scale=1.0 / float(total), weight=self.weight, device=self.config.device
        )
        losses = self.lanes.run(step, x, y)
        value = float(sum(losses))
        if not math.isfinite(value):
            kept = self.checkpoint_path and f"; the last good checkpoint is {self.checkpoint_path}"
            raise TrainingDiverged(
                f"training diverged: the loss is {value} at epoch {self.epoch + 1}, step "
                f"{self.step + 1} (lr {self.config.lr:g}); try a lower learning rate (--lr)"
                f"{kept or ''}"
            )
        self.lanes.reduce_grads()
        return value, True

    def _account(self, loss: float, images: int, seconds: float) -> None:
        self.partial["loss_sum"] += loss
        self.partial["batches"] += 1
        self.partial["images"] += images
        self.partial["seconds"] += seconds
        self.history["step_loss"].append(loss)

    def _position(self) -> tuple[dict, dict]:
        """The data position and dropout generator state, to rewind to on Ctrl-C."""
        return self.loader.state_dict(), random.get_state()

    def _tick(self) -> None:
        """Bring ``elapsed`` (wall seconds in fit, over all sessions) up to now."""
        started, before = self._clock_start
        self.elapsed = before + time.perf_counter() - started

    def _epoch_summary(self) -> dict:
        p = self.partial
        return {
            "train_loss": p["loss_sum"] / max(p["batches"], 1),
            "images_per_s": p["images"] / max(p["seconds"], 1e-9),
            "elapsed_s": self.elapsed,
        }

    def _interrupted(self) -> TrainingInterrupted:
        if self.checkpoint_path is None:
            return TrainingInterrupted("training interrupted (no --out, nothing saved)", None)
        path = self.save()
        return TrainingInterrupted(
            f"training interrupted at epoch {self.epoch + 1}, step {self.step}; saved "
            f"{path}; continue with: fcn-scratch train --resume {path}",
            path,
        )


def lane_loss(model, x: np.ndarray, y: np.ndarray, scale: float, weight, device: str) -> float:
    """One lane's part of a step: the loss summed over its pixels times ``scale`` (weighted
    per class by ``weight``, or None), and its backward (skipped when the loss is not
    finite: the step will be refused). A module-level function, so that it pickles to a
    lane's process (``fcn_scratch.lane_processes``)."""
    logits = model(Tensor(to_device(x, device)))  # (b, K, H, W)
    y = to_device(y, device)
    loss = F.cross_entropy(logits, y, weight, IGNORE_INDEX, reduction="sum") * scale
    value = loss.item()
    if math.isfinite(value):
        loss.backward()
    return value


def _empty_partial() -> dict:
    return {"loss_sum": 0.0, "batches": 0, "images": 0, "seconds": 0.0}


def _describe(record: dict, config: TrainConfig) -> str:
    of = f"/{config.epochs}" if config.max_time is None else ""
    return (
        f"epoch {record['epoch']}{of} ({record['elapsed_s']:.0f} s): "
        f"train loss {record['train_loss']:.4f}, "
        f"held-out loss {record['loss']:.4f}, pixel acc {record['pixel_acc']:.4f}, "
        f"mean IU {record['mean_iou']:.4f}, {record['images_per_s']:.1f} img/s"
    )
