"""Checkpoints: one ``.npz`` per save, readable with ``numpy.load(..., allow_pickle=False)``.

Layout of the archive:

    config         JSON string: the TrainConfig of the run
    meta           JSON string: format version, classes, epoch/step, RNG states, history,
                   and the skeleton of ``state`` with each array replaced by its key
    model/<name>   the model's parameters (``Module.state_dict``), one array per name
    state/<path>   every array inside the training state (optimiser moments, schedule,
                   data loader position), addressed by its path in the nested dict

A save writes a temporary file in the target's folder, flushes and fsyncs it, then
renames it over the target (``os.replace`` is atomic on POSIX and Windows), so a crash
leaves either the old checkpoint or the new one, never half a file. Loading checks the
archive and reports problems as CheckpointError naming the file and what is wrong.
"""

import json
import os
import secrets
import zipfile
import zlib
from dataclasses import dataclass

import numpy as np

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
        """The run's model, with these weights loaded, in eval mode."""
        from fcn_scratch.models import build_model

        model = build_model(self.config.model, len(self.class_names), **self.config.model_options())
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


def atomic_write(path: str, write, mode: str = "wb") -> None:
    """Call ``write(f)`` on a new temporary file beside ``path``, fsync it and rename it
    over ``path``; on any failure (Ctrl-C included) remove it and leave ``path`` alone."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    name = f".{os.path.basename(path)}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    tmp = os.path.join(folder, name)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_folder(folder)


def load_checkpoint(path: str) -> Checkpoint:
    """Read and check a checkpoint; raise CheckpointError naming the file and the problem."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path}: no such file")
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
        config = TrainConfig.from_dict(json.loads(str(arrays.pop("config")))).validate()
    except (json.JSONDecodeError, TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint {path}: unreadable config or meta: {err}") from err
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise CheckpointError(
            f"checkpoint {path}: expected format {FORMAT!r} version {VERSION}, got "
            f"{meta.get('format')!r} version {meta.get('version')!r}"
        )
    model_state = {k[len("model/") :]: v for k, v in arrays.items() if k.startswith("model/")}
    if not model_state:
        raise CheckpointError(f"checkpoint {path}: holds no model weights ('model/...')")
    try:
        state = _unflatten(meta.pop("state"), arrays)
    except KeyError as err:
        raise CheckpointError(f"checkpoint {path}: missing array {err}") from err
    return Checkpoint(path, config, model_state, state, meta)


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
    return skeleton["value"]


def _fsync_folder(folder: str) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
