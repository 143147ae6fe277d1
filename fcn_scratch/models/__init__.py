"""Segmentation models: FCN-32s / 16s / 8s, an unpooling decoder, and their tools.

``build_model(name, num_classes, **options)`` makes one by its CLI name; ``geometry``
explains the crops; ``convolutionalize`` turns a classifier's FC layers into convolutions.
"""

from fcn_scratch.models.backbone import VGGBackbone
from fcn_scratch.models.convolutionalize import convolutionalize
from fcn_scratch.models.fcn import FCN8s, FCN16s, FCN32s
from fcn_scratch.models.unpool import UnpoolNet
from fcn_scratch.nn import Module

MODELS = {"fcn32s": FCN32s, "fcn16s": FCN16s, "fcn8s": FCN8s, "unpool": UnpoolNet}


def build_model(name: str, num_classes: int, **options) -> Module:
    """The model called ``name`` ('fcn32s', 'fcn16s', 'fcn8s', 'unpool').

    options go to its constructor: in_channels, widths, convs_per_stage, batch_norm, dtype,
    rng, and for the FCNs backbone ('small', or 'vgg16' for the paper's networks: see
    ``fcn.BACKBONES``), first_padding, fc_width, fc6_kernel, fc6_padding, dropout,
    score_init, learn_skip_upsampling, learn_final_upsampling, preprocess.

        build_model("fcn8s", 21, backbone="vgg16")   # the paper's FCN-8s, 134 M parameters
    """
    if name not in MODELS:
        raise ValueError(f"build_model: unknown model {name!r}, expected one of {list(MODELS)}")
    return MODELS[name](num_classes, **options)


__all__ = [
    "FCN8s",
    "FCN16s",
    "FCN32s",
    "MODELS",
    "UnpoolNet",
    "VGGBackbone",
    "build_model",
    "convolutionalize",
]
