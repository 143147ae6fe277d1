"""Checkpoints: one ``.npz`` per save, readable with ``numpy.load(..., allow_pickle=False)``.

Layout of the archive:

    config         JSON string: the TrainConfig of the run
    meta           JSON string: format version, classes, epoch/step, RNG states, history,
                   and the skeleton of ``state`` with each array replaced by its key
    model/<name>   the model's parameters (``Module.state_dict``), one array per name
    state/<path>   every array inside the training state (optimiser moments, schedule,
                   data loader position), addressed by its path in the nested dict

A save is an ``fcn_scratch.io.atomic_write``: a temporary file in the target's folder,
flushed, fsynced and renamed over the target, so a crash leaves either the old checkpoint
or the new one, never half a file; temporary files that a killed process left behind are
removed by the next save. Loading checks the archive,
its JSON fields and its weights (finite), and reports problems as CheckpointError naming
the file and what is wrong.
"""

import json
import os
import zipfile
import zlib
from dataclasses import dataclass

import numpy as np

from fcn_scratch.io import atomic_write
from fcn_scratch.train.config import TrainConfig

FORMAT = "fcn-scratch-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: missing, corrupt, or from another model."""


@dataclass
class Checkpoint:
    """What ``load_checkpoint`` returns.

    config: the run's TrainConfig; model_state: name -> array; state: the training state
    (optimizer, schedule, loader, random, progress) as saved; meta: everything else
    (class_names, epoch, step, history, ...).
    """

    path: str
    config: TrainConfig
    model_state: dict
    state: dict
    meta: dict

    @property
    def class_names(self) -> list[str]:
        return list(self.meta["class_names"])

    @property
    def epoch(self) -> int:
        return int(self.meta["epoch"])

    def build_model(self):
        """The run's model, with these weights loaded, in eval mode (on the CPU)."""
        from fcn_scratch.train.setup import make_model

        try:
            model = make_model(self.config, len(self.class_names), device="cpu")
        except ValueError as err:
            raise CheckpointError(f"checkpoint {self.path}: {err}") from err
        load_model_state(model, self.model_state, self.path)
        return model.eval()


def save_checkpoint(
    path: str, model_state: dict, config: TrainConfig, meta: dict, state: dict
) -> None:
    """Write a checkpoint to ``path`` atomically (see the module docstring)."""
    arrays = {f"model/{name}": np.asarray(value) for name, value in model_state.items()}
    skeleton = _flatten(state, "state", arrays)
    arrays["config"] = np.array(config.to_json())
    arrays["meta"] = np.array(
        json.dumps({"format": FORMAT, "version": VERSION, **meta, "state": skeleton})
    )

    def write(f) -> None:
        np.savez(f, **arrays)

    atomic_write(path, write)


def load_checkpoint(path: str) -> Checkpoint:
    """Read and check a checkpoint; raise CheckpointError naming the file and the problem."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path}: no such file")
    with open(path, "rb") as f:
        start = f.read(8)
    if not start.startswith(b"PK"):  # every .npz is a zip archive
        raise CheckpointError(
            f"checkpoint {path}: not a checkpoint of fcn-scratch (expected an .npz archive "
            f"written by fcn-scratch train; the file starts with {start!r})"
        )
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as err:
        raise CheckpointError(
            f"checkpoint {path}: not a readable .npz archive (corrupt or truncated?): {err}"
        ) from err
    for key in ("config", "meta"):
        if key not in arrays:
            raise CheckpointError(
                f"checkpoint {path}: missing the '{key}' entry (not written by fcn-scratch "
                f"train?); it has {sorted(arrays)[:8]}"
            )
    try:
        meta = json.loads(str(arrays.pop("meta")))
        if not isinstance(meta, dict):
            raise ValueError(f"meta must be a JSON object, got {type(meta).__name__}")
        config = TrainConfig.from_dict(json.loads(str(arrays.pop("config")))).validate()
    except (TypeError, ValueError, RecursionError) as err:
        raise CheckpointError(f"checkpoint {path}: unreadable config or meta: {err}") from err
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise CheckpointError(
            f"checkpoint {path}: expected format {FORMAT!r} version {VERSION}, got "
            f"{meta.get('format')!r} version {meta.get('version')!r}"
        )
    problem = _meta_problem(meta)
    if problem:
        raise CheckpointError(f"checkpoint {path}: {problem}")
    model_state = {k[len("model/") :]: v for k, v in arrays.items() if k.startswith("model/")}
    if not model_state:
        raise CheckpointError(f"checkpoint {path}: holds no model weights ('model/...')")
    for name, value in model_state.items():
        if value.dtype.kind == "i" and value.ndim == 0:
            continue  # a counter among the buffers (BatchNorm's num_batches_tracked)
        if value.dtype.kind != "f" or not np.isfinite(value).all():
            raise CheckpointError(
                f"checkpoint {path}: parameter {name!r} holds "
                + ("NaN or inf" if value.dtype.kind == "f" else f"dtype {value.dtype}")
                + "; refusing to use it"
            )
    try:
        state = _unflatten(meta.pop("state"), arrays)
    except KeyError as err:
        raise CheckpointError(f"checkpoint {path}: missing array {err}") from err
    except (TypeError, AttributeError, RecursionError) as err:
        raise CheckpointError(f"checkpoint {path}: malformed training state: {err}") from err
    return Checkpoint(path, config, model_state, state, meta)


def _meta_problem(meta: dict) -> str | None:
    """What is wrong with the fields ``Trainer.save`` writes into meta, or None."""
    names = meta.get("class_names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        return f"class_names must be a non-empty list of strings, got {_short(names)}"
    for key in ("epoch", "step"):
        value = meta.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            return f"{key} must be an int >= 0, got {_short(value)}"
    elapsed = meta.get("elapsed")
    if not isinstance(elapsed, (int, float)) or isinstance(elapsed, bool):
        return f"elapsed must be a number, got {_short(elapsed)}"
    history = meta.get("history")
    if not (
        isinstance(history, dict)
        and isinstance(history.get("epochs"), list)
        and isinstance(history.get("step_loss"), list)
        and all(isinstance(record, dict) for record in history["epochs"])
    ):
        return "history must hold the lists 'epochs' (of objects) and 'step_loss', got " + _short(
            history
        )
    if not (meta.get("metrics") is None or isinstance(meta.get("metrics"), dict)):
        return f"metrics must be an object or null, got {_short(meta.get('metrics'))}"
    if not isinstance(meta.get("state"), dict):
        return f"state must be an object, got {_short(meta.get('state'))}"
    return None


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def load_model_state(model, model_state: dict, path: str) -> None:
    """``model.load_state_dict(model_state)``, its errors restated as CheckpointError."""
    try:
        model.load_state_dict(model_state)
    except ValueError as err:
        raise CheckpointError(
            f"checkpoint {path}: its weights do not fit {type(model).__name__}: {err}"
        ) from err


def _flatten(tree, path: str, arrays: dict):
    """A JSON-able copy of ``tree`` whose arrays are moved into ``arrays[path]`` and
    replaced by {"array": path}; dicts, lists, numbers, strings and None stay."""
    if isinstance(tree, dict):
        return {"dict": {str(k): _flatten(v, f"{path}/{k}", arrays) for k, v in tree.items()}}
    if isinstance(tree, (list, tuple)):
        return {"list": [_flatten(v, f"{path}/{i}", arrays) for i, v in enumerate(tree)]}
    if isinstance(tree, np.ndarray) or hasattr(tree, "__cuda_array_interface__"):
        arrays[path] = tree if isinstance(tree, np.ndarray) else tree.get()
        return {"array": path}
    if isinstance(tree, np.generic):
        return {"value": tree.item()}
    return {"value": tree}


def _unflatten(skeleton, arrays: dict):
    if "dict" in skeleton:
        return {k: _unflatten(v, arrays) for k, v in skeleton["dict"].items()}
    if "list" in skeleton:
        return [_unflatten(v, arrays) for v in skeleton["list"]]
    if "array" in skeleton:
        return arrays[skeleton["array"]]
    if "value" not in skeleton:
        raise TypeError(f"expected 'dict', 'list', 'array' or 'value', got {sorted(skeleton)}")
    return skeleton["value"]
