"""``fcn-scratch convert SRC -o DST.npz``: PyTorch weights as a checkpoint of ours.

SRC is a PyTorch file (``torch.save``) holding a state dict, plain or under
``model_state_dict``, of

    the PyTorch port of the paper's FCN-32s/16s/8s   the result predicts what it predicts
    torchvision's VGG16                              an FCN to fine-tune (score layers zero)

The table of names and the shape checks are in ``fcn_scratch.models.convert``. The
checkpoint records the input preprocessing the weights expect (BGR 0-255 minus the Caffe
means, or torchvision's normalisation); predict, evaluate and ``train --init-from`` apply
it. This is the only code of the package that imports torch, and only when it runs.
"""

import argparse
import os

import numpy as np

from fcn_scratch.commands.options import int_at_least
from fcn_scratch.data.voc import default_class_names
from fcn_scratch.models.backbone import VGG16_CONVS_PER_STAGE
from fcn_scratch.models.convert import SCORES, ConversionError, Converted, convert_state_dict
from fcn_scratch.train.checkpoint import save_checkpoint
from fcn_scratch.train.config import TrainConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source",
        metavar="SRC",
        help="a PyTorch file: the PyTorch port's FCN-32s/16s/8s or torchvision's VGG16",
    )
    parser.add_argument("-o", "--output", metavar="DST.npz", required=True)
    parser.add_argument(
        "--model",
        choices=list(SCORES),
        help="the FCN to build (default: the port's own; fcn8s from VGG16)",
    )
    parser.add_argument(
        "--num-classes",
        type=int_at_least(2),
        help="classes, background included (default: the port's; 21 from VGG16)",
    )


def read_torch_state(path: str) -> dict[str, np.ndarray]:
    """The state dict in a PyTorch file as NumPy arrays; ConversionError if there is none."""
    try:
        import torch
    except ImportError:
        raise ConversionError(
            "reading PyTorch files needs torch: pip install 'fcn-scratch[torch]'"
        ) from None
    if not os.path.isfile(path):
        raise ConversionError(f"{path}: no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load raises many kinds for a file that is not its own
        raise ConversionError(
            f"{path}: not a PyTorch file of weights (torch.load refused it: "
            f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
        ) from err
    if isinstance(obj, dict) and "model_state_dict" in obj:
        obj = obj["model_state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ConversionError(
            f"{path}: expected a state dict (parameter name -> tensor) or a dict holding one "
            f"under 'model_state_dict', got a {type(obj).__name__}"
            + (f" with keys {sorted(map(str, obj))[:6]}" if isinstance(obj, dict) else "")
        )
    return {str(k): v.detach().cpu().numpy() for k, v in obj.items()}


def save_converted(path: str, converted: Converted, source: str) -> None:
    """Write ``converted`` as a float32 checkpoint that ``load_checkpoint`` reads."""
    options = dict(converted.options)
    config = TrainConfig(
        model=converted.model,
        widths=tuple(options.pop("widths")),
        convs_per_stage=VGG16_CONVS_PER_STAGE,
        fc_width=options.pop("fc_width"),
        learn_final_upsampling=False,
        out=None,
        model_kwargs=options,  # backbone and preprocess
    )
    meta = {
        "class_names": default_class_names(converted.num_classes),
        "epoch": 0,
        "step": 0,
        "elapsed": 0.0,
        "history": {"epochs": [], "step_loss": []},
        "metrics": None,
        "converted_from": {"file": os.path.basename(source), "kind": converted.kind},
    }
    state = {k: v.astype(np.float32) for k, v in converted.state.items()}
    save_checkpoint(path, state, config.validate(), meta, {})


def run(args) -> int:
    converted = convert_state_dict(read_torch_state(args.source), args.model, args.num_classes)
    save_converted(args.output, converted, args.source)
    what = "the PyTorch port's" if converted.kind != "vgg16" else "torchvision's VGG16 as"
    print(
        f"converted {args.source} ({what} {converted.model}, {converted.num_classes} classes, "
        f"input {converted.options['preprocess']['channels']}) to {args.output}"
    )
    return 0
