"""Ctrl-C and kill -9 at chosen moments of a real ``fcn-scratch train`` process, then
``--resume``: the resumed run must end with the same bits as one never stopped.

Each case starts a short training in a subprocess whose functions are wrapped (by the
DRIVER below, not by the library) so that the n-th call of one of them sends the process
SIGINT (or SIGKILL) before or after doing its work: a deterministic Ctrl-C at a moment of
our choosing, delivered through the real signal handlers. Tiny model, 2 epochs of 2 steps.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fcn_scratch.cli import main
from fcn_scratch.train import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
FLAGS = [
    "--widths", "4,4,8,8,8", "--fc-width", "8", "--batch-size", "4", "--train-size", "8",
    "--val-size", "4", "--image-size", "32", "--epochs", "2", "--threads", "1", "--no-progress",
]  # fmt: skip

# argv: SPECS then the train command's arguments. SPECS is comma-separated
# "target:n:when": on the n-th call of target send SIGINT before (or after) running it,
# or for "kill" write half an archive and send SIGKILL (only for savez).
DRIVER = r"""
import os, signal, sys
import numpy as np
from fcn_scratch import cli, plots
from fcn_scratch.train import trainer

TARGETS = {
    "train_step": (trainer.Trainer, "train_step"),
    "train_epoch": (trainer.Trainer, "_train_epoch"),
    "savez": (np, "savez"),
    "plot": (plots, "plot_learning_curves"),
}

def hook(owner, name, n, when):
    original, calls = getattr(owner, name), []
    def wrapper(*args, **kwargs):
        calls.append(1)
        if len(calls) != n:
            return original(*args, **kwargs)
        if when == "kill":
            args[0].write(b"PK half an archive")
            args[0].flush()
            os.kill(os.getpid(), signal.SIGKILL)
        if when == "before":
            os.kill(os.getpid(), signal.SIGINT)
            return original(*args, **kwargs)
        result = original(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGINT)
        return result
    setattr(owner, name, wrapper)

# A test runner started in the background (e.g. by "cmd &" in a script) passes SIGINT on
# as ignored, and Python then keeps it ignored: give Ctrl-C its usual meaning here.
signal.signal(signal.SIGINT, signal.default_int_handler)
for spec in sys.argv[1].split(","):
    target, n, when = spec.split(":")
    hook(*TARGETS[target], int(n), when)
sys.exit(cli.main(["train", *sys.argv[2:]]))
"""


def weights(path) -> dict:
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files if k.startswith("model/")}


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The run never interrupted: its out folder."""
    out = tmp_path_factory.mktemp("straight")
    assert main(["train", *FLAGS, "--out", str(out)]) == 0
    return out


def interrupted_run(specs: str, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", DRIVER, specs, *FLAGS, "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


# (id, specs, exit status, step of the checkpoint left behind)
CASES = [
    ("first save", "savez:1:before", 130, 0),
    ("mid-epoch step", "train_step:2:before", 130, 1),
    ("after an epoch's last step", "train_epoch:1:after", 130, 2),
    ("after the run's last step", "train_epoch:2:after", 130, 4),
    ("epoch-end save", "savez:2:before", 130, 2),
    ("Ctrl-C twice: again during the save", "train_step:2:before,savez:2:before", 130, 0),
    ("plotting", "plot:1:before", 130, 4),
    ("kill -9 during a save", "savez:2:kill", -signal.SIGKILL, 0),
]


@pytest.mark.parametrize("specs, status, step", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_interrupted_run_resumes_to_the_same_bits(tmp_path, straight, specs, status, step):
    out = tmp_path / "run"
    result = interrupted_run(specs, out)
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr
    ckpt = out / "checkpoint.npz"
    if status == 130:
        assert f"--resume {ckpt}" in result.stderr
    saved = load_checkpoint(str(ckpt))  # complete and readable whatever happened
    assert saved.meta["step"] == step
    assert len(saved.meta["history"]["epochs"]) == saved.epoch
    left = [name for name in os.listdir(out) if name.endswith(".tmp")]
    assert len(left) == (1 if "kill" in specs else 0)

    assert main(["train", "--resume", str(ckpt), "--no-progress"]) == 0
    assert not [name for name in os.listdir(out) if name.endswith(".tmp")]  # stale one gone
    a, b = weights(straight / "checkpoint.npz"), weights(ckpt)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    first, second = (json.loads((d / "metrics.json").read_text()) for d in (straight, out))
    assert first["history"]["step_loss"] == second["history"]["step_loss"]
    assert [r["mean_iou"] for r in first["history"]["epochs"]] == [
        r["mean_iou"] for r in second["history"]["epochs"]
    ]
    assert (out / "predictions.png").stat().st_size > 0
