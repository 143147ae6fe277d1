"""``fcn-scratch compare``: FCN-32s, FCN-16s, FCN-8s and the unpooling model on one budget.

Every model trains on the same data, from the same seed, for the same epochs with the
same optimiser, then is scored on the same held-out set. Writes into --out:

    compare.md     the table in the format of the paper's Table 2 (pixel acc., mean acc.,
                   mean IU, f.w. IU), plus parameters and training time
    compare.json   the same numbers
    compare.png    held-out images, their truth and every model's prediction side by side
    <model>/       each run's checkpoint, metrics.json and plots
"""

import argparse
import dataclasses
import os

from fcn_scratch.commands.options import add_device, add_threads, float_in, int_at_least, widths
from fcn_scratch.io import atomic_write, write_json
from fcn_scratch.parallel import limit_threads
from fcn_scratch.plots import plot_predictions
from fcn_scratch.train import TrainConfig, Trainer, TrainingDiverged, predict, write_outputs
from fcn_scratch.train.config import MIN_IMAGE_SIZE, MODELS, OPTIMIZERS
from fcn_scratch.train.outputs import example_images
from fcn_scratch.train.setup import make_held_out

NAMES = {"fcn32s": "FCN-32s", "fcn16s": "FCN-16s", "fcn8s": "FCN-8s", "unpool": "Unpooling"}
# The budget each model gets: the default ``train`` recipe for 8 epochs instead of 20,
# so that the four models take a few minutes together, and without its warm-up.
BUDGET = {"epochs": 8, "warmup": 0.0, "train_size": 2048, "val_size": 128}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = TrainConfig()
    parser.add_argument(
        "--models",
        type=model_list,
        default=list(MODELS),
        help=f"comma-separated subset of {','.join(MODELS)} (default: all)",
    )
    parser.add_argument("--epochs", type=int_at_least(1), default=BUDGET["epochs"])
    parser.add_argument("--train-size", type=int_at_least(1), default=BUDGET["train_size"])
    parser.add_argument("--val-size", type=int_at_least(1), default=BUDGET["val_size"])
    parser.add_argument(
        "--image-size", type=int_at_least(MIN_IMAGE_SIZE), default=defaults.image_size
    )
    parser.add_argument("--batch-size", type=int_at_least(1), default=defaults.batch_size)
    parser.add_argument("--lr", type=float_in(0.0, low_open=True), default=defaults.lr)
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default=defaults.optimizer)
    parser.add_argument(
        "--widths",
        type=widths,
        default=defaults.widths,
        help="backbone channels of every model (default: %(default)s)",
    )
    parser.add_argument("--fc-width", type=int_at_least(1), default=defaults.fc_width)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument(
        "--data",
        metavar="DIR",
        help="a folder of images and masks (or in VOC's layout) instead of synthetic shapes",
    )
    parser.add_argument("--out", metavar="DIR", default="runs/compare")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_device(parser)
    add_threads(parser)


def model_list(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODELS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated subset of {','.join(MODELS)}, got {text!r}"
        )
    return names


def run(args) -> int:
    limit_threads(args.threads)
    base = TrainConfig(
        epochs=args.epochs,
        warmup=BUDGET["warmup"],
        train_size=args.train_size,
        val_size=args.val_size,
        image_size=args.image_size,
        batch_size=args.batch_size,
        lr=args.lr,
        optimizer=args.optimizer,
        widths=args.widths,
        fc_width=args.fc_width,
        seed=args.seed,
        device=args.device,
        data=args.data,
    )
    base.validate()
    val_set = make_held_out(base)  # each model makes the same data from the seed
    results, predictions = {}, {}
    images, truth = example_images(val_set)
    for name in args.models:
        config = dataclasses.replace(base, model=name, out=os.path.join(args.out, name))
        print(f"== {NAMES[name]} ==")
        trainer = Trainer(config, progress=not args.no_progress)
        try:
            trainer.fit()
        except TrainingDiverged as err:
            raise TrainingDiverged(f"{NAMES[name]}: {err}") from err
        write_outputs(trainer)
        results[name] = {
            **trainer.metrics,
            "num_parameters": trainer.model.num_parameters(),
            "train_seconds": trainer.elapsed,
        }
        predictions[NAMES[name]] = predict(trainer.model, images, args.device)
    table = markdown_table(results, base, val_set)
    paths = [os.path.join(args.out, f) for f in ("compare.md", "compare.json", "compare.png")]
    atomic_write(paths[0], lambda f: f.write(table), mode="w")
    write_json(paths[1], {"config": base.to_dict(), "results": results})
    plot_predictions(
        images,
        truth,
        predictions,
        paths[2],
        list(val_set.class_names),
        title="Held-out predictions, same budget",
    )
    print("\n" + table)
    print("wrote " + ", ".join(paths))
    return 0


def markdown_table(results: dict, config: TrainConfig, val_set) -> str:
    """The paper's Table 2 columns, one row per model, numbers in percent."""
    if config.data is None:
        held = f"{len(val_set)} synthetic-shapes images of {config.image_size}x{config.image_size}"
        trained = f"{config.train_size} {'fresh ' if config.fresh_data else ''}images each"
    else:
        size = val_set.image_size
        size = "their own sizes" if size is None else f"{size[0]}x{size[1]}"
        held = f"{len(val_set)} held-out images of {size} from {config.data}"
        trained = "the folder's training images"
    lines = [
        f"Held-out results on {held}, after {config.epochs} epochs of {trained} "
        f"({config.optimizer}, lr {config.lr:g} with a {config.schedule} schedule, batch "
        f"{config.batch_size}, seed {config.seed}).",
        "",
        "| model | pixel acc. | mean acc. | mean IU | f.w. IU | parameters | train time |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        cells = [f"{100 * r[k]:.1f}" for k in ("pixel_acc", "mean_acc", "mean_iou", "fw_iou")]
        lines.append(
            f"| {NAMES[name]} | {' | '.join(cells)} | {r['num_parameters']:,} | "
            f"{r['train_seconds']:.0f} s |"
        )
    return "\n".join(lines) + "\n"
