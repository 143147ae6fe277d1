"""Hostile files and failing disks: tampered checkpoints, unwritable outputs, stray mask
values, temporaries of killed saves. Every failure must end in a message naming what is
wrong (exit status 2 from the commands), never a traceback or a silent wrong result."""

import errno
import json
import os
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

from fcn_scratch.cli import main
from fcn_scratch.data import FolderDataset
from fcn_scratch.io import remove_stale_temporaries
from fcn_scratch.train import CheckpointError, Trainer, TrainingInterrupted, load_checkpoint
from fcn_scratch.train.setup import make_model, parameter_bound
from tests.test_train import TINY_FLAGS, assert_same_bits, rewrite, set_config, tiny_config


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    Trainer(tiny_config(out, epochs=1), progress=False).fit()
    return str(out / "checkpoint.npz")


def set_meta(arrays, **fields):
    meta = {**json.loads(str(arrays["meta"])), **fields}
    arrays["meta"] = np.array(json.dumps({k: v for k, v in meta.items() if v != "DROP"}))


# ---- where a resumed run writes ---------------------------------------------------------


def test_resume_writes_beside_the_checkpoint_not_where_the_file_says(tmp_path, checkpoint):
    elsewhere = tmp_path / "elsewhere"
    moved = tmp_path / "moved"
    moved.mkdir()
    path = rewrite(checkpoint, str(moved / "ckpt.npz"), lambda a: set_config(a, out=str(elsewhere)))
    assert main(["train", "--resume", path, "--epochs", "2", "--no-progress"]) == 0
    assert not elsewhere.exists()
    assert load_checkpoint(str(moved / "checkpoint.npz")).epoch == 2
    assert (moved / "metrics.json").exists()
    chosen = tmp_path / "chosen"
    assert main(["train", "--resume", path, "--out", str(chosen), "--no-progress"]) == 0
    assert (chosen / "checkpoint.npz").exists() and not elsewhere.exists()


# ---- the end of an epoch ----------------------------------------------------------------


def test_ctrl_c_between_an_epochs_last_step_and_its_record(tmp_path, monkeypatch):
    straight = Trainer(tiny_config(tmp_path / "straight", epochs=1), progress=False)
    straight.fit()
    original = Trainer._train_epoch

    def then_ctrl_c(self):
        original(self)
        raise KeyboardInterrupt  # after the last step, before the epoch is recorded

    monkeypatch.setattr(Trainer, "_train_epoch", then_ctrl_c)
    with pytest.raises(TrainingInterrupted) as info:
        Trainer(tiny_config(tmp_path / "run", epochs=1), progress=False).fit()
    monkeypatch.undo()
    ckpt = load_checkpoint(info.value.checkpoint)
    assert (ckpt.epoch, ckpt.meta["step"], ckpt.meta["history"]["epochs"]) == (0, 3, [])
    resumed = Trainer.resume(info.value.checkpoint, progress=False)
    assert resumed.fit() is resumed.metrics and resumed.epoch == 1
    assert_same_bits(resumed.model.state_dict(), straight.model.state_dict())
    assert resumed.metrics["mean_iou"] == straight.metrics["mean_iou"]


# ---- tampered checkpoints ---------------------------------------------------------------

NESTED = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda a: set_config(a, model_kwargs={"bogus": 1}), "model_kwargs may hold only"),
        (lambda a: set_config(a, shapes_kwargs={"n": 5}), "shapes_kwargs may hold only"),
        (lambda a: set_config(a, model_kwargs={"fc6_kernel": "3"}), "cannot build fcn8s"),
        (lambda a: set_config(a, seed=1.5), "seed must be an int >= 0, got 1.5"),
        (lambda a: set_config(a, seed=2**70), "seed must be <= 2**63 - 1"),
        (lambda a: set_config(a, fresh_data="no"), "fresh_data must be true or false"),
        (lambda a: set_meta(a, class_names="DROP"), "class_names must be a non-empty list"),
        (lambda a: set_meta(a, epoch="DROP"), "epoch must be an int >= 0, got None"),
        (lambda a: set_meta(a, history=None), "history must hold the lists"),
        (lambda a: set_meta(a, state=[]), "state must be an object"),
        (lambda a: a.update(meta=np.array('{"a": ' + NESTED + "}")), "unreadable config or meta"),
        (lambda a: set_config(a, fc_width=10**7), "GiB of parameters, more than the 8 GiB"),
        (lambda a: a.update({"model/fc6.weight": a["model/fc6.weight"] * np.nan}), "'fc6.weight' holds NaN"),
        (lambda a: a.update({"model/fc7.bias": a["model/fc7.bias"].astype(int)}), "'fc7.bias' holds dtype int"),
    ],
    ids=[
        "unknown model_kwargs", "unknown shapes_kwargs", "model_kwargs of a wrong type",
        "float seed", "huge seed", "string bool", "no class_names", "no epoch", "null history",
        "state a list", "deeply nested JSON", "fc_width 1e7", "NaN weights", "int weights",
    ],
)  # fmt: skip
def test_tampered_checkpoint_is_refused_by_name(tmp_path, checkpoint, change, words):
    path = rewrite(checkpoint, str(tmp_path / "bad.npz"), change)
    tracemalloc.start()
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path).build_model()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert path in str(info.value) and words in str(info.value)
    assert peak < 100 * 2**20  # refused before building (fc_width 1e7 needs 400 TB)
    for argv in (["evaluate", path], ["train", "--resume", path, "--no-progress"]):
        assert main(argv) == 2


def test_resume_refuses_a_history_short_of_its_epochs(tmp_path, checkpoint, capsys):
    path = rewrite(checkpoint, str(tmp_path / "old.npz"), lambda a: set_meta(a, epoch=2))
    assert main(["train", "--resume", path, "--no-progress"]) == 2
    assert "history records 1 epochs but it says 2" in capsys.readouterr().err


@pytest.mark.parametrize("content", [b"plain text\n", b"\x89PNG\r\n\x1a\n...", b""])
def test_a_file_that_is_no_checkpoint_says_so(tmp_path, content):
    path = tmp_path / "x.npz"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="not a checkpoint of fcn-scratch"):
        load_checkpoint(str(path))


# ---- command-line options and unwritable outputs ----------------------------------------


@pytest.mark.parametrize("seed", ["-1", str(2**70)])
def test_train_names_a_bad_seed(capsys, seed):
    with pytest.raises(SystemExit) as info:
        main(["train", "--seed", seed])
    assert info.value.code == 2
    assert f"argument --seed: must be in [0, {2**63 - 1}], got {seed}" in capsys.readouterr().err


def test_train_refuses_a_huge_model_before_allocating(tmp_path, capsys):
    argv = ["train", *TINY_FLAGS, "--fc-width", "10000000", "--out", str(tmp_path)]
    assert main(argv) == 2
    assert "GiB of parameters" in capsys.readouterr().err


@pytest.mark.parametrize("where", ["a file", "under a file", "read-only"])
def test_train_reports_an_unwritable_out(tmp_path, monkeypatch, capsys, where):
    (tmp_path / "file").write_text("x")
    out = {"a file": "file", "under a file": "file/run", "read-only": "ro"}[where]
    if where == "read-only":
        (tmp_path / "ro").mkdir(mode=0o500)
        if os.geteuid() == 0:  # root writes anyway: refuse as the kernel would for others
            real_open = os.open

            def read_only(path, *args, **kwargs):
                if str(path).startswith(str(tmp_path / "ro")):
                    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
                return real_open(path, *args, **kwargs)

            monkeypatch.setattr(os, "open", read_only)
    argv = ["train", *TINY_FLAGS, "--epochs", "1", "--out", str(tmp_path / out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("fcn-scratch train: error: cannot write") and str(tmp_path / out) in err
    if where == "a file":
        assert f"{tmp_path / 'file'} is a file, not a folder" in err
    if where == "read-only":
        assert "Permission denied" in err


def test_train_reports_a_full_disk_and_keeps_the_last_checkpoint(tmp_path, monkeypatch, capsys):
    calls, savez = [], np.savez

    def fills_up(f, **arrays):
        calls.append(1)
        if len(calls) == 2:  # the save at the end of epoch 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        savez(f, **arrays)

    monkeypatch.setattr(np, "savez", fills_up)
    assert main(["train", *TINY_FLAGS, "--epochs", "2", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"error: cannot write {tmp_path / 'checkpoint.npz'}: No space left on device" in err
    assert load_checkpoint(str(tmp_path / "checkpoint.npz")).meta["step"] == 0
    assert os.listdir(tmp_path) == ["checkpoint.npz"]


def test_evaluate_reports_an_unwritable_json(tmp_path, checkpoint, capsys):
    (tmp_path / "file").write_text("x")
    target = tmp_path / "file" / "m.json"
    assert main(["evaluate", checkpoint, "--json", str(target)]) == 2
    assert f"fcn-scratch evaluate: error: cannot write {target}" in capsys.readouterr().err


# ---- temporaries of killed saves --------------------------------------------------------


def test_a_save_removes_temporaries_of_dead_processes_only(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    stale = tmp_path / f".checkpoint.npz.{int(dead.stdout)}.0a1b2c3d.tmp"
    alive = tmp_path / f".checkpoint.npz.{os.getppid()}.0a1b2c3d.tmp"
    own = tmp_path / f".checkpoint.npz.{os.getpid()}.0a1b2c3d.tmp"  # a pid come back
    other = tmp_path / f".metrics.json.{int(dead.stdout)}.0a1b2c3d.tmp"
    for path in (stale, alive, own, other):
        path.write_bytes(b"PK half")
    Trainer(tiny_config(tmp_path, epochs=1), progress=False).save()
    assert not stale.exists() and not own.exists() and alive.exists() and other.exists()
    assert remove_stale_temporaries(str(tmp_path / "metrics.json")) == [str(other)]


# ---- stray mask values ------------------------------------------------------------------


def write_folder(root, stray: int | None) -> None:
    from PIL import Image

    for folder in ("images", "masks"):
        (root / folder).mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((32, 32, 3), 60 * i, np.uint8)).save(root / "images" / f"{i}.png")
        mask = (np.arange(32 * 32).reshape(32, 32) % 4).astype(np.uint8)
        if stray is not None and i == 1:
            mask[5, 7] = stray
        Image.fromarray(mask).save(root / "masks" / f"{i}.png")


def test_a_stray_mask_value_is_reported_not_taken_for_classes(tmp_path, capsys):
    write_folder(tmp_path, stray=200)
    argv = ["train", *TINY_FLAGS, "--data", str(tmp_path), "--out", str(tmp_path / "run")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "201 classes, of which 196 never occur" in err and "200: 1" in err
    assert "--num-classes" in err and "classes.txt" in err
    (tmp_path / "classes.txt").write_text("".join(f"c{i}\n" for i in range(201)))
    assert FolderDataset(str(tmp_path)).num_classes == 201  # accepted when stated


def test_mask_ids_all_present_still_infer_the_class_count(tmp_path):
    write_folder(tmp_path, stray=None)
    assert FolderDataset(str(tmp_path)).num_classes == 4
    assert FolderDataset(str(tmp_path), num_classes=6).num_classes == 6


@pytest.mark.parametrize("model", ["fcn32s", "fcn8s", "unpool"])
@pytest.mark.parametrize("sizes", [{}, {"widths": None, "convs_per_stage": None, "fc_width": None}])
def test_parameter_bound_holds_the_built_model(model, sizes):
    config = tiny_config(None, model=model, **sizes)
    built = make_model(config, 5).num_parameters()
    assert built <= parameter_bound(config, 5)


def test_a_missing_gpu_is_a_command_error(capsys):
    from fcn_scratch.device import DeviceError, import_cupy

    try:
        import_cupy()
        pytest.skip("a GPU is usable here")
    except DeviceError:
        pass
    assert main(["bench", "--device", "cuda", "--case", "nothing"]) == 2
    assert capsys.readouterr().err.startswith("fcn-scratch bench: error: device 'cuda'")
