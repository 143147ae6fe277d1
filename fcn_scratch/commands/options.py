"""Argument types shared by the train, evaluate, predict and compare commands."""

import argparse

from fcn_scratch.device import DEVICES
from fcn_scratch.parallel import thread_count


def int_at_least(low: int):
    """An argparse type: an int >= low, with an error saying so."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    parse.__name__ = f"int >= {low}"
    return parse


def int_in(low: int, high: int):
    """An argparse type: an int in [low, high], with an error saying so."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be in [{low}, {high}], got {value}")
        return value

    parse.__name__ = f"int in [{low}, {high}]"
    return parse


def float_in(low: float, high: float | None = None, low_open: bool = False):
    """An argparse type: a float in [low, high) (or (low, high) with low_open)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        too_low = value <= low if low_open else value < low
        if too_low or value != value or (high is not None and value >= high):
            bracket = "(" if low_open else "["
            upper = f"{high})" if high is not None else "inf)"
            raise argparse.ArgumentTypeError(f"must be in {bracket}{low}, {upper}, got {value}")
        return value

    parse.__name__ = "number"
    return parse


def _stage_ints(name: str, text: str) -> tuple[int, ...]:
    """'16,32,48,64,64' -> (16, 32, 48, 64, 64), checked as the backbone checks ``name``."""
    from fcn_scratch.models.backbone import NUM_STAGES, stage_values

    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected {NUM_STAGES} comma-separated integers, got {text!r}"
        ) from None
    try:
        return stage_values(f"--{name}", name, values)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected {NUM_STAGES} positive integers (one per stage), got {text!r}"
        ) from None


def widths(text: str) -> tuple[int, ...]:
    """--widths: the channels of the backbone's five stages, e.g. '16,32,48,64,64'."""
    return _stage_ints("widths", text)


def convs_per_stage(text: str) -> tuple[int, ...]:
    """--convs-per-stage: the 3x3 convolutions of each of the five stages, e.g. '1,1,2,2,2'."""
    return _stage_ints("convs_per_stage", text)


def add_max_memory(parser: argparse.ArgumentParser) -> None:
    """--max-memory: images whose forward pass would need more are refused, not attempted."""
    from fcn_scratch.models.memory import DEFAULT_BUDGET_GIB

    parser.add_argument(
        "--max-memory",
        metavar="GIB",
        type=float_in(0.0, low_open=True),
        default=DEFAULT_BUDGET_GIB,
        help="refuse an image whose forward pass would need more than this many GiB, "
        "by an estimate from the model's layers (default: %(default)s)",
    )


def add_device(parser: argparse.ArgumentParser, default: str | None = "cpu") -> None:
    """--device; ``default=None`` lets a command tell whether it was given (it means cpu)."""
    parser.add_argument(
        "--device",
        choices=DEVICES,
        default=default,
        help=f"where to compute (default: {default or 'cpu'})",
    )


def add_threads(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads",
        type=int_at_least(1),
        default=thread_count(),
        help=f"threads to use: each runs a slice of every batch (default: the {thread_count()} "
        "cores this process may use; see fcn_scratch/parallel.py)",
    )
