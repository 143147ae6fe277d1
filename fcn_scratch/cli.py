"""The ``fcn-scratch`` command line (also ``python -m fcn_scratch``).

Each subcommand lives in ``fcn_scratch/commands/<name>.py`` with two functions,
``add_arguments(parser)`` and ``run(args) -> int`` (the exit status); they are imported
only when their subcommand runs, so ``fcn-scratch info`` stays quick. Commands raise on
failure; ``main`` is the one place that turns an error into a message on stderr and an
exit status (``report``, ``EXIT_STATUS``).
"""

import argparse
import importlib
import sys

from fcn_scratch import __version__
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


EXIT_STATUS = """\
exit status:
  0    done
  1    the work failed: training diverged (train, compare), a gradient check failed
  2    bad options, input files, outputs or device: the message on stderr says which
  130  interrupted (Ctrl-C); train's last checkpoint stays complete and resumable"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fcn-scratch",
        description="Fully Convolutional Networks for semantic segmentation, from scratch.",
        epilog=EXIT_STATUS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"fcn-scratch {__version__}")
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
        prog=f"fcn-scratch {args.command}",
        description=COMMANDS[args.command],
        epilog=EXIT_STATUS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    module.add_arguments(sub)
    try:
        return module.run(sub.parse_args(argv[1:]))
    except (KeyboardInterrupt, ValueError, OSError, RuntimeError) as err:
        reported = report(args.command, err)
        if reported is None:
            raise
        message, status = reported
        print(message, file=sys.stderr)
        return status


def report(command: str, err: BaseException) -> tuple[str, int] | None:
    """The message and exit status (``EXIT_STATUS``) for an error ``command`` raised, or
    None for one that is a bug (a RuntimeError of no kind below). Our errors carry their
    own words: CheckpointError, ConversionError and the option checks are ValueErrors
    naming what is wrong; DeviceError says what is missing."""
    from fcn_scratch.train.trainer import TrainingDiverged  # only once something failed

    if isinstance(err, KeyboardInterrupt):  # TrainingInterrupted says what was saved
        return f"\nfcn-scratch {command}: {str(err) or 'interrupted'}", 130
    if isinstance(err, TrainingDiverged):
        return f"fcn-scratch {command}: {err}", 1
    if isinstance(err, (ValueError, OSError, DeviceError)):
        return f"fcn-scratch {command}: error: {err}", 2
    return None
