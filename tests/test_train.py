"""Training, checkpoints and the train / evaluate / predict / compare commands, on tiny
models (widths of 4 to 8 channels, 32x32 images) so the whole file runs in seconds."""

import json
import os
import signal

import matplotlib.image
import numpy as np
import pytest

from fcn_scratch.cli import main
from fcn_scratch.train import (
    CheckpointError,
    TrainConfig,
    Trainer,
    TrainingDiverged,
    TrainingInterrupted,
    load_checkpoint,
    train,
)
from fcn_scratch.train import trainer as trainer_module
from fcn_scratch.train.checkpoint import save_checkpoint
from fcn_scratch.train.interrupts import deferred_interrupts

TINY = dict(
    widths=(4, 4, 8, 8, 8), fc_width=8, batch_size=4, train_size=12, val_size=4, image_size=32
)
TINY_FLAGS = [
    "--widths",
    "4,4,8,8,8",
    "--fc-width",
    "8",
    "--batch-size",
    "4",
    "--train-size",
    "12",
    "--val-size",
    "4",
    "--image-size",
    "32",
    "--no-progress",
]


def tiny_config(out, **fields) -> TrainConfig:
    return TrainConfig(**{**TINY, "epochs": 2, "out": None if out is None else str(out), **fields})


def weights(path) -> dict:
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files if k.startswith("model/")}


def assert_same_bits(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key]), key


def interrupt_at(monkeypatch, call: int) -> None:
    """Make the ``call``-th training step raise KeyboardInterrupt (as Ctrl-C would)."""
    original = Trainer.train_step
    calls = []

    def step(self, x, y):
        calls.append(1)
        if len(calls) == call:
            raise KeyboardInterrupt
        return original(self, x, y)

    monkeypatch.setattr(Trainer, "train_step", step)


# ---- configuration --------------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("model", "vgg", "model must be one of"),
        ("epochs", 0, "epochs must be an int >= 1"),
        ("lr", -1.0, "lr must be a positive number"),
        ("lr", float("nan"), "lr must be a positive number"),
        ("image_size", 16, "image_size must be >= 32"),
        ("widths", (4, 4), "widths must be 5 positive ints"),
        ("optimizer", "rmsprop", "optimizer must be one of"),
        ("momentum", 1.0, "momentum must be in [0, 1)"),
    ],
    ids=lambda v: str(v),
)
def test_config_rejects_bad_fields(field, value, words):
    with pytest.raises(
        ValueError, match=words.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")
    ):
        tiny_config(None, **{field: value}).validate()


def test_config_round_trips_through_json():
    config = tiny_config("runs/x", model="unpool", lr=0.5)
    assert TrainConfig.from_dict(json.loads(config.to_json())) == config


# ---- training ---------------------------------------------------------------------------


def test_short_run_loss_falls_and_history_is_complete():
    trainer = train(tiny_config(None, epochs=4, lr=1e-2), progress=False)
    losses = trainer.history["step_loss"]
    assert len(losses) == 4 * 3
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3])
    epochs = trainer.history["epochs"]
    assert [r["epoch"] for r in epochs] == [1, 2, 3, 4]
    for key in ("train_loss", "loss", "pixel_acc", "mean_iou", "fw_iou", "images_per_s"):
        assert all(np.isfinite(r[key]) for r in epochs), key
    assert trainer.metrics is epochs[-1]


def test_train_command_writes_its_outputs(tmp_path):
    assert main(["train", *TINY_FLAGS, "--epochs", "1", "--out", str(tmp_path)]) == 0
    names = {"checkpoint.npz", "best.npz", "log.csv", "metrics.json"}
    names |= {"learning_curves.png", "predictions.png"}
    assert set(os.listdir(tmp_path)) == names
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("pixel_acc", "mean_acc", "mean_iou", "fw_iou"):
        assert 0.0 <= metrics[key] <= 1.0
    assert len(metrics["per_class_iou"]) == len(metrics["class_names"]) == 4
    assert metrics["config"]["widths"] == [4, 4, 8, 8, 8]
    assert len(metrics["history"]["epochs"]) == 1


# ---- checkpoints ----------------------------------------------------------------------


def test_checkpoint_round_trip(tmp_path):
    trainer = Trainer(tiny_config(tmp_path, epochs=1), progress=False)
    trainer.fit()
    ckpt = load_checkpoint(trainer.checkpoint_path)
    assert ckpt.config == trainer.config and ckpt.epoch == 1
    assert ckpt.class_names == trainer.class_names
    assert_same_bits(ckpt.model_state, trainer.model.state_dict())
    assert_same_bits(ckpt.state["optimizer"], trainer.optimizer.state_dict())
    assert ckpt.state["loader"]["epoch"] == 1 and ckpt.state["loader"]["position"] == 0
    from fcn_scratch import random

    assert ckpt.state["random"] == random.get_state()
    assert_same_bits(ckpt.build_model().state_dict(), trainer.model.state_dict())


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    trainer = Trainer(tiny_config(tmp_path, epochs=1), progress=False)
    path = trainer.save()
    before = open(path, "rb").read()

    def broken_savez(f, **arrays):
        f.write(b"PK half an archive")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        trainer.save()
    with pytest.raises(OSError, match="disk full"):
        trainer.save(str(tmp_path / "new.npz"))
    assert open(path, "rb").read() == before  # the old checkpoint is intact
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.npz"]  # no temporary left behind


@pytest.mark.parametrize("stop_at", [2, 4], ids=["mid-epoch", "epoch-boundary"])
def test_resume_equals_uninterrupted_run(tmp_path, monkeypatch, capsys, stop_at):
    straight = tmp_path / "straight"
    assert main(["train", *TINY_FLAGS, "--epochs", "2", "--out", str(straight)]) == 0

    resumed = tmp_path / "resumed"
    interrupt_at(monkeypatch, stop_at)
    assert main(["train", *TINY_FLAGS, "--epochs", "2", "--out", str(resumed)]) == 130
    ckpt = resumed / "checkpoint.npz"
    assert f"saved {ckpt}" in capsys.readouterr().err
    assert load_checkpoint(str(ckpt)).meta["step"] == stop_at - 1
    monkeypatch.undo()
    assert main(["train", "--resume", str(ckpt), "--no-progress"]) == 0

    assert_same_bits(weights(straight / "checkpoint.npz"), weights(ckpt))
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (straight, resumed))
    assert a["history"]["step_loss"] == b["history"]["step_loss"]
    assert a["mean_iou"] == b["mean_iou"]


def test_resume_can_extend_the_run(tmp_path):
    Trainer(tiny_config(tmp_path, epochs=1), progress=False).fit()
    trainer = Trainer.resume(str(tmp_path / "checkpoint.npz"), progress=False, epochs=2)
    trainer.fit()
    assert trainer.epoch == 2 and len(trainer.history["epochs"]) == 2


def test_ctrl_c_during_evaluation_waits_for_the_checkpoint(tmp_path, monkeypatch):
    straight = Trainer(tiny_config(tmp_path / "straight"), progress=False)
    straight.fit()
    original = trainer_module.evaluate

    def evaluate_then_ctrl_c(*args):
        os.kill(os.getpid(), signal.SIGINT)  # arrives in the middle of the epoch's end
        return original(*args)

    monkeypatch.setattr(trainer_module, "evaluate", evaluate_then_ctrl_c)
    with pytest.raises(TrainingInterrupted) as info:
        Trainer(tiny_config(tmp_path / "run"), progress=False).fit()
    monkeypatch.undo()
    ckpt = load_checkpoint(info.value.checkpoint)
    assert ckpt.epoch == 1 and len(ckpt.meta["history"]["epochs"]) == 1
    resumed = Trainer.resume(info.value.checkpoint, progress=False)
    resumed.fit()
    assert_same_bits(resumed.model.state_dict(), straight.model.state_dict())
    assert [r["mean_iou"] for r in resumed.history["epochs"]] == [
        r["mean_iou"] for r in straight.history["epochs"]
    ]


def test_interrupt_without_out_saves_nothing(monkeypatch):
    interrupt_at(monkeypatch, 2)
    trainer = Trainer(tiny_config(None), progress=False)
    with pytest.raises(TrainingInterrupted) as info:
        trainer.fit()
    assert info.value.checkpoint is None and trainer.step == 1


def test_deferred_interrupt_arrives_after_the_block():
    done = []
    with pytest.raises(KeyboardInterrupt):
        with deferred_interrupts():
            os.kill(os.getpid(), signal.SIGINT)
            done.append("finished the step")
    assert done == ["finished the step"]


# ---- divergence -------------------------------------------------------------------------


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    original = Trainer.train_step

    def poisoned(self, x, y):
        """Epoch 2's first batch (step 4) made of NaN images: NaN must reach the loss
        through every layer (max pooling included) and stop the run."""
        return original(self, np.full_like(x, np.nan) if self.step == 3 else x, y)

    monkeypatch.setattr(Trainer, "train_step", poisoned)
    assert main(["train", *TINY_FLAGS, "--epochs", "3", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "loss is nan at epoch 2, step 4" in err and "lower learning rate" in err
    assert str(tmp_path / "checkpoint.npz") in err
    ckpt = load_checkpoint(str(tmp_path / "checkpoint.npz"))
    assert ckpt.epoch == 1 and ckpt.meta["step"] == 3
    assert all(np.isfinite(v).all() for v in ckpt.model_state.values())


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid:RuntimeWarning")
def test_huge_learning_rate_diverges_with_a_clear_error():
    trainer = Trainer(tiny_config(None, epochs=5, optimizer="sgd", lr=1e6), progress=False)
    with pytest.raises(TrainingDiverged, match="lower learning rate"):
        trainer.fit()


# ---- bad checkpoints --------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    Trainer(tiny_config(out, epochs=1), progress=False).fit()
    return str(out / "checkpoint.npz")


def rewrite(src: str, dst: str, change) -> str:
    """Copy checkpoint ``src`` to ``dst`` with ``change(arrays)`` applied."""
    with np.load(src, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    change(arrays)
    np.savez(dst, **arrays)
    return dst


def set_config(arrays, **fields):
    arrays["config"] = np.array(json.dumps({**json.loads(str(arrays["config"])), **fields}))


@pytest.mark.parametrize(
    "case, words",
    [
        ("missing", "no such file"),
        ("text", "not a checkpoint of fcn-scratch"),
        ("image", "not a checkpoint of fcn-scratch"),
        ("truncated", "not a readable .npz archive"),
        ("no meta", "missing the 'meta' entry"),
        ("pickled", "not a readable .npz archive"),
        ("other model", "do not fit FCN32s"),
        ("other widths", "expected shape"),
        ("missing weight", "missing keys"),
    ],
)
def test_bad_checkpoint_errors_name_file_and_problem(tmp_path, checkpoint, case, words):
    path = str(tmp_path / "bad.npz")
    if case == "text":
        open(path, "w").write("not a checkpoint\n")
    elif case == "image":
        matplotlib.image.imsave(path, np.zeros((4, 4, 3)), format="png")
    elif case == "truncated":
        data = open(checkpoint, "rb").read()
        open(path, "wb").write(data[: len(data) // 2])
    elif case == "no meta":
        rewrite(checkpoint, path, lambda a: a.pop("meta"))
    elif case == "pickled":
        np.savez(path, meta=np.array([{"a": 1}], dtype=object))
    elif case == "other model":
        rewrite(checkpoint, path, lambda a: set_config(a, model="fcn32s"))
    elif case == "other widths":
        rewrite(checkpoint, path, lambda a: set_config(a, widths=[4, 4, 8, 8, 16]))
    elif case == "missing weight":
        rewrite(checkpoint, path, lambda a: a.pop("model/score_pool3.weight"))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path).build_model()
    assert path in str(info.value) and words in str(info.value)


def test_evaluate_command_reports_a_bad_checkpoint(tmp_path, capsys):
    path = tmp_path / "junk.npz"
    path.write_bytes(b"\x00" * 100)
    assert main(["evaluate", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "not a checkpoint of fcn-scratch" in err


def test_save_refuses_non_finite_weights(tmp_path):
    trainer = Trainer(tiny_config(tmp_path), progress=False)
    next(iter(trainer.model.parameters())).data[0] = np.nan
    with pytest.raises(TrainingDiverged, match="NaN or inf"):
        trainer.save()
    assert not os.path.exists(trainer.checkpoint_path)


def test_save_checkpoint_needs_no_pickle(tmp_path):
    path = str(tmp_path / "c.npz")
    save_checkpoint(
        path,
        {"w": np.ones(3, np.float32)},
        tiny_config(None),
        {"epoch": 0},
        {"optimizer": {"lr": np.array(0.1)}, "list": [np.zeros(2), 3, "x"]},
    )
    with np.load(path, allow_pickle=False) as f:
        assert sorted(f.files) == [
            "config",
            "meta",
            "model/w",
            "state/list/0",
            "state/optimizer/lr",
        ]


# ---- command-line errors ----------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--model", "vgg"], "invalid choice: 'vgg'"),
        (["--epochs", "0"], "must be >= 1"),
        (["--lr", "-0.1"], "must be in (0.0, inf)"),
        (["--lr", "fast"], "expected a number"),
        (["--image-size", "16"], "must be >= 32"),
        (["--optimizer", "rmsprop"], "invalid choice"),
        (["--device", "tpu"], "invalid choice"),
        (["--widths", "4,4"], "expected 5 positive integers"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_train_rejects_bad_options(capsys, argv, words):
    with pytest.raises(SystemExit) as info:
        main(["train", *argv])
    assert info.value.code == 2
    assert words in capsys.readouterr().err


def test_resume_rejects_changed_options(checkpoint, capsys):
    assert main(["train", "--resume", checkpoint, "--model", "fcn32s"]) == 2
    assert "--resume continues the saved run's configuration" in capsys.readouterr().err


def test_train_on_a_folder_of_images_and_masks(tmp_path):
    from PIL import Image

    from fcn_scratch.data import ShapesDataset

    shapes = ShapesDataset(10, size=40, seed=3)
    for folder in ("images", "masks"):
        (tmp_path / "data" / folder).mkdir(parents=True)
    for i, (image, label) in enumerate(zip(shapes.images, shapes.labels)):
        rgb = (image.transpose(1, 2, 0) * 255).round().astype(np.uint8)
        Image.fromarray(rgb).save(tmp_path / "data" / "images" / f"{i}.png")
        Image.fromarray(label).save(tmp_path / "data" / "masks" / f"{i}.png")
    out = tmp_path / "run"
    argv = [
        "train",
        *TINY_FLAGS,
        "--epochs",
        "1",
        "--data",
        str(tmp_path / "data"),
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["class_names"] == ["background", "class 1", "class 2", "class 3"]
    trainer = Trainer.resume(str(out / "checkpoint.npz"), progress=False)
    assert (len(trainer.train_set), len(trainer.val_set)) == (8, 2)  # a fifth held out
    assert trainer.train_set.image_size == (32, 32)  # resized to --image-size


def test_train_rejects_a_missing_data_folder(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "nowhere"), "--no-progress"]) == 2
    assert "nowhere" in capsys.readouterr().err


# ---- evaluate, predict, compare ---------------------------------------------------------


def test_evaluate_command_prints_the_metrics(checkpoint, capsys):
    assert main(["evaluate", checkpoint]) == 0
    out = capsys.readouterr().out
    metrics = load_checkpoint(checkpoint).meta["metrics"]
    assert f"mean IU    {metrics['mean_iou']:.4f}" in out
    assert f"pixel acc  {metrics['pixel_acc']:.4f}" in out
    for name in ("background", "circle", "square", "triangle"):
        assert name in out


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_predict_command_segments_an_image_of_any_size(tmp_path, checkpoint, suffix):
    image = tmp_path / f"in{suffix}"
    rgb = np.random.default_rng(0).integers(0, 255, size=(37, 53, 3), dtype=np.uint8)
    matplotlib.image.imsave(image, rgb)
    out, mask = tmp_path / "out.png", tmp_path / "mask.png"
    argv = ["predict", checkpoint, str(image), "-o", str(out), "--mask", str(mask)]
    assert main(argv) == 0
    assert matplotlib.image.imread(out).shape[:2] == (37, 53)
    assert matplotlib.image.imread(mask).shape[:2] == (37, 53)


def test_predict_command_reports_an_unreadable_image(tmp_path, checkpoint, capsys):
    image = tmp_path / "broken.png"
    image.write_text("no pixels here")
    assert main(["predict", checkpoint, str(image), "-o", str(tmp_path / "o.png")]) == 2
    assert "broken.png" in capsys.readouterr().err


def test_compare_command_writes_table_and_figure(tmp_path):
    argv = [
        "compare",
        "--models",
        "fcn32s,unpool",
        "--epochs",
        "1",
        "--train-size",
        "8",
        "--val-size",
        "4",
        "--image-size",
        "32",
        "--batch-size",
        "4",
        "--widths",
        "4,4,8,8,8",
        "--fc-width",
        "8",
        "--out",
        str(tmp_path),
        "--no-progress",
    ]
    assert main(argv) == 0
    table = (tmp_path / "compare.md").read_text()
    assert "| model | pixel acc. | mean acc. | mean IU | f.w. IU |" in table
    assert "| FCN-32s |" in table and "| Unpooling |" in table
    assert (tmp_path / "compare.png").stat().st_size > 0
    results = json.loads((tmp_path / "compare.json").read_text())["results"]
    assert set(results) == {"fcn32s", "unpool"}
