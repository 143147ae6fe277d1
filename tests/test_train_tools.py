"""What a training run leaves and takes besides the weights: log.csv, best.npz, --config,
--max-time, --version, augmentation, and training on a folder of one's own images."""

import csv
import json

import numpy as np
import pytest
from test_train import TINY

from fcn_scratch import __version__
from fcn_scratch.cli import main
from fcn_scratch.data import ShapesDataset
from fcn_scratch.train import TrainConfig, Trainer, load_checkpoint, setup
from fcn_scratch.train.config import FOLDER_DEFAULTS


def test_log_csv_and_best_checkpoint(tmp_path):
    trainer = Trainer(TrainConfig(**TINY, epochs=3, out=str(tmp_path)), progress=False)
    trainer.fit()
    with open(tmp_path / "log.csv") as f:
        rows = list(csv.DictReader(f))
    header = "epoch,step,lr,loss,held_out_loss,pixel_acc,mean_acc,mean_iou,fw_iou,seconds"
    assert (tmp_path / "log.csv").read_text().splitlines()[0] == header
    records = trainer.history["epochs"]
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    for row, record in zip(rows, records, strict=True):
        assert int(row["step"]) == record["step"]
        assert float(row["mean_iou"]) == pytest.approx(record["mean_iou"], rel=1e-5)
        assert float(row["loss"]) == pytest.approx(record["train_loss"], rel=1e-5)
        assert float(row["seconds"]) == pytest.approx(record["elapsed_s"], rel=1e-5)
    best = int(np.argmax([r["mean_iou"] for r in records]))  # the first of equals
    ckpt = load_checkpoint(str(tmp_path / "best.npz"))
    assert ckpt.epoch == records[best]["epoch"]
    assert ckpt.meta["metrics"]["mean_iou"] == records[best]["mean_iou"]
    assert main(["evaluate", str(tmp_path / "best.npz")]) == 0


def test_config_file_with_command_line_overrides(tmp_path, capsys):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({**TINY, "widths": [4, 4, 8, 8, 8], "epochs": 3, "lr": 0.01}))
    out = tmp_path / "out"
    assert main(["train", "--config", str(path), "--epochs", "1", "--out", str(out)]) == 0
    config = load_checkpoint(str(out / "checkpoint.npz")).config
    assert config.epochs == 1  # the command line wins
    assert config.lr == 0.01 and config.widths == (4, 4, 8, 8, 8)  # from the file
    assert config.model == TrainConfig().model  # neither: the default


@pytest.mark.parametrize(
    "content, words",
    [
        ('{"epochs": 2, "learning_rate": 0.1}', "unknown fields ['learning_rate']"),
        ('{"epochs": "2"}', "epochs must be an int >= 1, got '2'"),
        ('{"lr": true}', "lr must be a number, got True"),
        ('{"widths": [4, 4.5, 8, 8, 8]}', "widths must be a list of ints or null"),
        ('{"epochs": 2,', "not valid JSON"),
        ("[1, 2]", "expected a JSON object of fields, got list"),
    ],
    ids=["unknown", "string-int", "bool-float", "float-in-widths", "syntax", "list"],
)
def test_bad_config_file(tmp_path, capsys, content, words):
    path = tmp_path / "bad.json"
    path.write_text(content)
    assert main(["train", "--config", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fcn-scratch train: error: --config ") and words in err


def test_missing_config_file(tmp_path, capsys):
    assert main(["train", "--config", str(tmp_path / "none.json")]) == 2
    assert "none.json: cannot read it" in capsys.readouterr().err


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"fcn-scratch {__version__}"


@pytest.mark.parametrize("value", ["0", "-5", "soon"])
def test_max_time_must_be_positive(capsys, value):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--max-time", value])
    assert exit_info.value.code == 2
    assert "argument --max-time" in capsys.readouterr().err
    with pytest.raises(ValueError, match="max_time must be a positive number of seconds"):
        TrainConfig(max_time=0).validate()


def test_time_budget_spans_the_schedule_and_resumes(tmp_path, monkeypatch):
    """A fake clock: each step takes 1 s. The run stops at the budget, mid-epoch; the lr
    follows the budget (poly reaches 0 at its end), and a resume with more time goes on."""
    now = [0.0]

    def clock():
        now[0] += 0.5  # two readings per step
        return now[0]

    monkeypatch.setattr("fcn_scratch.train.trainer.time.perf_counter", clock)
    config = TrainConfig(**TINY, epochs=1, max_time=4.0, warmup=0.0, out=str(tmp_path))
    trainer = Trainer(config, progress=False)
    lrs = []
    step = trainer.train_step

    def record(x, y):
        lrs.append(trainer.optimizer.lr)
        return step(x, y)

    monkeypatch.setattr(trainer, "train_step", record)
    trainer.fit()
    assert trainer.elapsed >= 4.0 and trainer.step < 3 * len(trainer.loader)
    assert lrs[0] == config.lr and all(a > b for a, b in zip(lrs, lrs[1:]))
    assert trainer.optimizer.lr == 0.0  # the poly schedule ends with the budget
    more = Trainer.resume(str(tmp_path / "checkpoint.npz"), progress=False, max_time=8.0)
    assert more.step == trainer.step
    more.fit()
    assert more.step > trainer.step and more.elapsed >= 8.0


def test_augment_flips_images_with_their_labels():
    config = TrainConfig(augment=True, seed=3)
    x = np.arange(4 * 3 * 2 * 5, dtype=np.float32).reshape(4, 3, 2, 5)
    y = np.arange(4 * 2 * 5).reshape(4, 2, 5)
    fx, fy = setup.augment(config, x, y, step=7)
    flipped = [not np.array_equal(fx[i], x[i]) for i in range(4)]
    for i in range(4):
        ex, ey = (x[i, :, :, ::-1], y[i, :, ::-1]) if flipped[i] else (x[i], y[i])
        np.testing.assert_array_equal(fx[i], ex)
        np.testing.assert_array_equal(fy[i], ey)
    again = setup.augment(config, x, y, step=7)
    np.testing.assert_array_equal(again[0], fx)  # same step, same flips
    flips = [
        [not np.array_equal(f[i], x[i]) for i in range(4)]
        for f, _ in (setup.augment(config, x, y, s) for s in range(8))
    ]
    assert 0 < np.mean(flips) < 1
    assert setup.augment(TrainConfig(), x, y, 7)[0] is x  # off: untouched


def test_warmup_starts_low_and_reaches_the_lr():
    trainer = Trainer(TrainConfig(**TINY, epochs=2, warmup=0.5, out=None), progress=False)
    lr = trainer.config.lr
    assert trainer.optimizer.lr == pytest.approx(0.1 * lr)
    steps = len(trainer.loader)  # warm-up: the first epoch's steps
    for _ in range(steps):
        trainer.schedule.step()
    assert trainer.optimizer.lr == pytest.approx(lr)


def write_folder(root, shapes: ShapesDataset) -> None:
    """Images as PNG in root/images, labels as greyscale PNG in root/masks."""
    from PIL import Image

    for folder in ("images", "masks"):
        (root / folder).mkdir(parents=True)
    for i, (image, label) in enumerate(zip(shapes.images, shapes.labels, strict=True)):
        rgb = (image.transpose(1, 2, 0) * 255).round().astype(np.uint8)
        Image.fromarray(rgb).save(root / "images" / f"{i:04d}.png")
        Image.fromarray(label).save(root / "masks" / f"{i:04d}.png")


def test_folder_defaults_learn_and_generalise_to_a_held_out_folder(tmp_path):
    """A folder made with other settings than the synthetic defaults (squares only,
    larger images resized on loading, flat backgrounds, more noise, one big shape per
    image), trained with the folder defaults (only the model's size and the length of the
    run are made tiny) and scored on a second folder of new images: it beats the class
    frequencies (loss) and predicting background everywhere (mean IU)."""
    settings = dict(size=40, kinds=("square",), texture=0.0, noise=0.08)
    settings.update(radius=(0.25, 0.4), max_shapes=1)
    write_folder(tmp_path / "train", ShapesDataset(160, seed=11, **settings))
    held_out = ShapesDataset(40, seed=12, **settings)
    write_folder(tmp_path / "test", held_out)
    out = tmp_path / "run"
    argv = ["train", "--data", str(tmp_path / "train"), "--out", str(out), "--no-progress"]
    argv += ["--widths", "16,16,32,32,32", "--fc-width", "32", "--image-size", "32"]
    assert main([*argv, "--epochs", "16", "--batch-size", "4"]) == 0
    config = load_checkpoint(str(out / "checkpoint.npz")).config
    assert {k: getattr(config, k) for k in FOLDER_DEFAULTS} == FOLDER_DEFAULTS
    report = out / "test.json"
    assert main(["evaluate", str(out / "best.npz"), "--data", str(tmp_path / "test"),
                 "--json", str(report)]) == 0  # fmt: skip
    metrics = json.loads(report.read_text())
    freq = np.bincount(held_out.labels.ravel(), minlength=2) / held_out.labels.size
    assert metrics["loss"] < -(freq * np.log(freq)).sum(), metrics
    assert metrics["mean_iou"] > freq[0] / 2 + 0.1, metrics  # all background: freq[0] / 2
