"""The ``fcn-scratch`` command line (also ``python -m fcn_scratch``).

Each subcommand lives in ``fcn_scratch/commands/<name>.py`` with two functions,
``add_arguments(parser)`` and ``run(args) -> int`` (the exit status); they are imported
only when their subcommand runs, so ``fcn-scratch info`` stays quick.
"""

import argparse
import importlib
import sys

from fcn_scratch.device import DeviceError

COMMANDS = {
    "train": "train a model on synthetic shapes (or a folder of images and masks)",
    "evaluate": "evaluate a checkpoint: the four metrics and per-class IU",
    "predict": "segment image files with a checkpoint: coloured overlays, masks of class ids",
    "convert": "convert PyTorch weights (the paper's FCNs, torchvision's VGG16) to a checkpoint",
    "compare": "train FCN-32s/16s/8s and the unpooling model on one budget and tabulate",
    "gradcheck": "check every op's gradients by central differences and print a table",
    "bench": "time forward+backward of the ops against baselines and PyTorch",
    "info": "print versions and which backends are usable here",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fcn-scratch",
        description="Fully Convolutional Networks for semantic segmentation, from scratch.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    # Parse the command name first, then let that command's module add its own options.
    args, _ = parser.parse_known_args(argv)
    module = importlib.import_module(f"fcn_scratch.commands.{args.command}")
    sub = argparse.ArgumentParser(
        prog=f"fcn-scratch {args.command}", description=COMMANDS[args.command]
    )
    module.add_arguments(sub)
    try:
        return module.run(sub.parse_args(argv[1:]))
    except DeviceError as err:  # e.g. --device cuda where CuPy or a GPU is missing
        print(f"fcn-scratch {args.command}: error: {err}", file=sys.stderr)
        return 2
