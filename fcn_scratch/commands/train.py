"""``fcn-scratch train``: train a segmentation model and write its results to --out.

With no options it trains FCN-8s on synthetic shapes for a few minutes on a laptop CPU
(the README's Results section gives the metrics it reaches). With --data DIR, the fields
not given come from ``FOLDER_DEFAULTS`` instead. --config FILE.json reads a TrainConfig
(options given here override it). --resume continues a saved run (Ctrl-C saves one).
"""

import argparse
import json
import os

from fcn_scratch.commands.options import (
    add_device,
    add_threads,
    convs_per_stage,
    float_in,
    int_at_least,
    int_in,
    widths,
)
from fcn_scratch.parallel import limit_threads
from fcn_scratch.train import (
    TrainConfig,
    Trainer,
    TrainingInterrupted,
    load_checkpoint,
    setup,
    write_outputs,
)
from fcn_scratch.train.config import (
    CLASS_WEIGHTS,
    FOLDER_DEFAULTS,
    MAX_SEED,
    MIN_IMAGE_SIZE,
    MODELS,
    OPTIMIZERS,
    SCHEDULES,
)
from fcn_scratch.train.trainer import RESUMABLE

# (option, config field, argparse keywords); every default comes from TrainConfig.
OPTIONS = [
    ("--model", "model", {"choices": MODELS}),
    ("--epochs", "epochs", {"type": int_at_least(1)}),
    (
        "--max-time",
        "max_time",
        {
            "type": float_in(0.0, low_open=True),
            "metavar": "SECONDS",
            "help": "train for this wall-clock time instead of --epochs",
        },
    ),
    ("--batch-size", "batch_size", {"type": int_at_least(1)}),
    ("--lr", "lr", {"type": float_in(0.0, low_open=True), "help": "learning rate"}),
    ("--optimizer", "optimizer", {"choices": OPTIMIZERS}),
    ("--momentum", "momentum", {"type": float_in(0.0, 1.0), "help": "SGD momentum"}),
    ("--weight-decay", "weight_decay", {"type": float_in(0.0)}),
    ("--schedule", "schedule", {"choices": SCHEDULES, "help": "learning-rate schedule"}),
    (
        "--warmup",
        "warmup",
        {"type": float_in(0.0, 1.0), "help": "fraction of the run with a linear lr warm-up"},
    ),
    (
        "--augment",
        "augment",
        {"action": argparse.BooleanOptionalAction, "help": "random left-right flips"},
    ),
    ("--class-weights", "class_weights", {"choices": CLASS_WEIGHTS}),
    ("--image-size", "image_size", {"type": int_at_least(MIN_IMAGE_SIZE)}),
    ("--train-size", "train_size", {"type": int_at_least(1), "help": "training images"}),
    ("--val-size", "val_size", {"type": int_at_least(1), "help": "held-out images"}),
    (
        "--ignore-border",
        "ignore_border",
        {"type": int_at_least(0), "help": "ignore band (label 255) around shapes, in pixels"},
    ),
    (
        "--fresh-data",
        "fresh_data",
        {
            "action": argparse.BooleanOptionalAction,
            "help": "new synthetic training images every epoch",
        },
    ),
    ("--widths", "widths", {"type": widths, "help": "backbone channels, e.g. 16,32,48,64,64"}),
    (
        "--convs-per-stage",
        "convs_per_stage",
        {
            "type": convs_per_stage,
            "help": "3x3 convolutions in each backbone stage, e.g. 1,1,2,2,2",
        },
    ),
    ("--fc-width", "fc_width", {"type": int_at_least(1), "help": "channels of fc6 and fc7"}),
    (
        "--learn-final-upsampling",
        "learn_final_upsampling",
        {
            "action": argparse.BooleanOptionalAction,
            "help": "train the FCNs' last (bilinear-initialised) upsampling too",
        },
    ),
    (
        "--batch-norm",
        "batch_norm",
        {
            "action": argparse.BooleanOptionalAction,
            "help": "BatchNorm2d after every backbone convolution (None: on for unpool only)",
        },
    ),
    ("--seed", "seed", {"type": int_in(0, MAX_SEED)}),
    ("--out", "out", {"metavar": "DIR", "help": "output folder"}),
    (
        "--data",
        "data",
        {"metavar": "DIR", "help": "a folder of images and masks instead of synthetic shapes"},
    ),
    (
        "--num-classes",
        "num_classes",
        {
            "type": int_at_least(1),
            "help": "classes of the --data folder (or list them in DIR/classes.txt)",
        },
    ),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = TrainConfig()
    for flag, field, kwargs in OPTIONS:
        default = getattr(defaults, field)
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        kwargs = dict(kwargs)
        help_text = kwargs.pop("help", field.replace("_", " "))
        parser.add_argument(
            flag, dest=field, default=None, help=f"{help_text} (default: {shown})", **kwargs
        )
    add_device(parser, default=None)
    add_threads(parser)
    parser.add_argument(
        "--config", metavar="FILE.json", help="a TrainConfig as JSON; options given here win"
    )
    parser.add_argument("--resume", metavar="CKPT", help="continue the run saved in CKPT")
    parser.add_argument(
        "--init-from",
        metavar="CKPT",
        help="start from the weights (and model) of CKPT, e.g. one made by fcn-scratch convert",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def given(args) -> dict:
    """The config fields set on the command line."""
    fields = [field for _, field, _ in OPTIONS] + ["device"]
    return {f: getattr(args, f) for f in fields if getattr(args, f) is not None}


def read_config(path: str) -> dict:
    """The fields of a TrainConfig JSON file, checked (unknown fields, wrong types)."""
    try:
        with open(path) as f:
            fields = json.load(f)
    except OSError as err:
        raise ValueError(f"--config {path}: cannot read it: {err.strerror}") from err
    except json.JSONDecodeError as err:
        raise ValueError(f"--config {path}: not valid JSON: {err}") from err
    try:
        TrainConfig.from_dict(fields).validate()
    except (TypeError, ValueError) as err:
        raise ValueError(f"--config {path}: {err}") from err
    return fields


def config_fields(args) -> dict:
    """The fields of a new run that differ from TrainConfig's defaults: FOLDER_DEFAULTS when
    training on a folder, overridden by the --config file's fields, overridden by the
    options given on the command line."""
    fields = {**(read_config(args.config) if args.config else {}), **given(args)}
    if fields.get("data") is not None:
        fields = {**FOLDER_DEFAULTS, **fields}
    return fields


def build_trainer(args) -> Trainer:
    progress = not args.no_progress
    if args.resume is not None and args.init_from is not None:
        raise ValueError("--resume and --init-from exclude each other")
    if args.resume is None:
        fields = config_fields(args)
        if args.init_from is None:
            return Trainer(TrainConfig.from_dict(fields).validate(), progress=progress)
        ckpt = load_checkpoint(args.init_from)
        config = TrainConfig(**setup.with_architecture_of(ckpt, fields)).validate()
        trainer = Trainer(config, progress=progress)
        setup.init_weights(trainer.model, ckpt, trainer.class_names)
        return trainer
    options = given(args)
    fixed = {k: v for k, v in options.items() if k not in RESUMABLE}
    if fixed or args.config:
        flags = ", ".join("--" + k.replace("_", "-") for k in fixed) or "--config"
        allowed = ", ".join("--" + k.replace("_", "-") for k in RESUMABLE)
        raise ValueError(
            f"--resume continues the saved run's configuration; only {allowed} may be "
            f"given with it, got {flags}"
        )
    return Trainer.resume(args.resume, progress=progress, **options)


def run(args) -> int:
    """Train; errors go to cli.main, which reports them (TrainingDiverged: 1, bad options
    or files: 2, interrupted: 130, the last checkpoint complete and resumable)."""
    limit_threads(args.threads)
    trainer = None
    try:
        trainer = build_trainer(args)
        train(trainer)
    except TrainingInterrupted:
        raise
    except KeyboardInterrupt as err:  # before training began, during a save or the outputs
        raise TrainingInterrupted(f"interrupted; {_saved(trainer)}", None) from err
    return 0


def train(trainer: Trainer) -> None:
    """Fit, print the held-out metrics, write the outputs."""
    config = trainer.config
    print(
        f"training {config.model} ({trainer.model.num_parameters():,} parameters) on "
        f"{len(trainer.train_set)} images of {trainer.train_set.image_size}, "
        f"{len(trainer.val_set)} held out; {config.epochs} epochs of {len(trainer.loader)} "
        f"batches; out: {config.out}"
    )
    trainer.fit()
    m = trainer.metrics
    print(
        f"held-out: pixel acc {m['pixel_acc']:.4f}, mean acc {m['mean_acc']:.4f}, "
        f"mean IU {m['mean_iou']:.4f}, f.w. IU {m['fw_iou']:.4f} "
        f"({trainer.elapsed:.0f} s of training)"
    )
    if config.out is not None:
        paths = write_outputs(trainer)
        print("wrote " + ", ".join([trainer.checkpoint_path, *paths.values()]))


def _saved(trainer: Trainer | None) -> str:
    """What an interrupted run left behind."""
    path = trainer and trainer.checkpoint_path
    if path is None or not os.path.isfile(path):
        return "nothing saved"
    return f"the last checkpoint is {path}; continue with: fcn-scratch train --resume {path}"
