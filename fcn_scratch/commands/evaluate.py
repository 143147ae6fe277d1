"""``fcn-scratch evaluate CKPT``: the paper's four metrics and per-class IU of a checkpoint.

By default on the run's own held-out set (rebuilt from the configuration stored in the
checkpoint); --data evaluates on a folder of images and masks instead, or on the val
split of a folder in PASCAL VOC's layout, every image at its own size.
"""

import argparse

from fcn_scratch.commands.options import add_device, add_max_memory, add_threads, int_at_least
from fcn_scratch.data import FolderDataset, VOCDataset, is_voc
from fcn_scratch.data.images import image_size
from fcn_scratch.io import write_json
from fcn_scratch.models.memory import check_forward_fits
from fcn_scratch.parallel import limit_threads
from fcn_scratch.train import confusion, load_checkpoint
from fcn_scratch.train.setup import make_held_out

METRIC_NAMES = (
    ("pixel_acc", "pixel acc"),
    ("mean_acc", "mean acc"),
    ("mean_iou", "mean IU"),
    ("fw_iou", "f.w. IU"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="CKPT", help="a checkpoint .npz from train")
    parser.add_argument(
        "--data",
        metavar="DIR",
        help="evaluate on this folder of images and masks instead (VOC layout: its val split)",
    )
    parser.add_argument("--batch-size", type=int_at_least(1), default=16)
    parser.add_argument("--json", metavar="FILE", help="also write the metrics as JSON")
    add_max_memory(parser)
    add_device(parser)
    add_threads(parser)


def load_data(args, ckpt):
    """The data to evaluate on: --data (a folder, or VOC's val split) or the run's own."""
    if args.data and is_voc(args.data):
        return VOCDataset(args.data, "val")
    if args.data:
        return FolderDataset(
            args.data,
            size=ckpt.config.image_size,
            num_classes=len(ckpt.class_names),
            class_names=ckpt.class_names,
        )
    return make_held_out(ckpt.config)


def run(args) -> int:
    limit_threads(args.threads)
    ckpt = load_checkpoint(args.checkpoint)
    model = ckpt.build_model().to(args.device)
    dataset = load_data(args, ckpt)
    if list(dataset.class_names) != ckpt.class_names:
        raise ValueError(
            f"the data's classes {list(dataset.class_names)} differ from "
            f"the checkpoint's {ckpt.class_names}"
        )
    for path in getattr(dataset, "image_paths", lambda: [])():
        check_forward_fits(model, image_size(path), args.max_memory, f"image {path}")
    cm, loss = confusion(model, dataset, args.batch_size, args.device)
    report(args, ckpt, dataset, cm, loss)
    return 0


def report(args, ckpt, dataset, cm, loss: float) -> None:
    """Print the metrics and the per-class table; write --json."""
    size = dataset.image_size
    size = "their own sizes" if size is None else f"{size[0]}x{size[1]}"
    source = args.data or "the run's held-out set"
    print(
        f"{args.checkpoint}: {ckpt.config.model} after {ckpt.epoch} epochs, on {source} "
        f"({len(dataset)} images of {size})\n"
    )
    summary = cm.summary()
    for key, name in METRIC_NAMES:
        print(f"{name:<10} {summary[key]:.4f}")
    print(f"{'loss':<10} {loss:.4f}\n")
    print(cm.table(ckpt.class_names))
    if args.json:
        write_json(
            args.json,
            {
                **summary,
                "loss": loss,
                "class_names": ckpt.class_names,
                "checkpoint": args.checkpoint,
            },
        )
