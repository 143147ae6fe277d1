"""Weights from elsewhere as a state dict of ours: one table per source, shapes checked.

Two sources, both read from PyTorch files by ``fcn-scratch convert`` (which alone imports
torch) and handed here as ``{name: numpy array}``:

    the PyTorch port of the paper's FCNs   conv1_1 ... conv5_3, fc6, fc7, score_fr,
                                           score_pool4, score_pool3, upscore, upscore2,
                                           upscore_pool4, upscore8 / upscore16
    torchvision's VGG16                    features.0 ... features.28, classifier.0/3/6

Each source parameter has one row in a table ``(source name, our name)``; our name for the
paper's ``conv{i}_{j}`` is ``backbone.conv{i}.{2 * (j - 1)}`` (a Sequential with ReLUs in
between), every other layer keeps its name. torchvision's ``classifier.0`` (a Linear on
flattened 512x7x7 features) becomes fc6 by a reshape to (4096, 512, 7, 7), ``classifier.3``
fc7 as (4096, 4096, 1, 1) (FCN section 3.1, ``convolutionalize``); ``classifier.6`` (the
1000 ImageNet classes) is dropped, and the score layers start at zero and the upsampling
bilinear, as the paper fine-tunes. Shapes are checked entry by entry against what the
architecture needs (``expected_shapes``); widths may be scaled down (tests use narrow
VGG16s), and are read from the source.
"""

from dataclasses import dataclass

import numpy as np

from fcn_scratch.models.backbone import VGG16_CONVS_PER_STAGE
from fcn_scratch.models.preprocess import CAFFE_BGR, TORCHVISION
from fcn_scratch.nn.init import bilinear_kernel

# Score layers and upsampling (name, factor) of each FCN, as named in the paper's models.
SCORES = {
    "fcn32s": ("score_fr",),
    "fcn16s": ("score_fr", "score_pool4"),
    "fcn8s": ("score_fr", "score_pool4", "score_pool3"),
}
UPSAMPLING = {
    "fcn32s": (("upscore", 32),),
    "fcn16s": (("upscore2", 2), ("upscore16", 16)),
    "fcn8s": (("upscore2", 2), ("upscore_pool4", 2), ("upscore8", 8)),
}
FC_KERNEL = 7  # VGG16's first FC layer sees 7x7 features
TORCHVISION_UNUSED = ("classifier.6.weight", "classifier.6.bias")  # the ImageNet classifier


class ConversionError(ValueError):
    """A source state dict that does not fit: wrong names, wrong shapes, unknown kind."""


@dataclass
class Converted:
    """A converted network: ``build_model(model, num_classes, **options)`` loads ``state``."""

    kind: str  # "fcn8s" / "fcn16s" / "fcn32s" (the port) or "vgg16" (torchvision)
    model: str
    num_classes: int
    options: dict
    state: dict


def our_conv_name(stage: int, j: int) -> str:
    """The paper's conv{stage}_{j} in our backbone (a Sequential: conv, ReLU, conv, ...)."""
    return f"backbone.conv{stage}.{2 * (j - 1)}"


def port_table(model: str) -> list[tuple[str, str]]:
    """(source name, our name) for every parameter of the PyTorch port of ``model``."""
    rows = []
    for i, count in enumerate(VGG16_CONVS_PER_STAGE, 1):
        for j in range(1, count + 1):
            rows += [(f"conv{i}_{j}.{p}", f"{our_conv_name(i, j)}.{p}") for p in ("weight", "bias")]
    for layer in ("fc6", "fc7", *SCORES[model]):
        rows += [(f"{layer}.{p}", f"{layer}.{p}") for p in ("weight", "bias")]
    return rows + [(f"{name}.weight", f"{name}.weight") for name, _ in UPSAMPLING[model]]


def torchvision_table() -> list[tuple[str, str]]:
    """(source name, our name) for torchvision's VGG16: features.N are the 13 convolutions
    (each followed by a ReLU, each stage by a max pool), classifier.0/3 become fc6/fc7."""
    rows, index = [], 0
    for i, count in enumerate(VGG16_CONVS_PER_STAGE, 1):
        for j in range(1, count + 1):
            rows += [
                (f"features.{index}.{p}", f"{our_conv_name(i, j)}.{p}") for p in ("weight", "bias")
            ]
            index += 2  # conv, ReLU
        index += 1  # the stage's max pool
    for source, ours in (("classifier.0", "fc6"), ("classifier.3", "fc7")):
        rows += [(f"{source}.{p}", f"{ours}.{p}") for p in ("weight", "bias")]
    return rows


def expected_shapes(model: str, num_classes: int, widths, fc_width: int) -> dict[str, tuple]:
    """Our parameter shapes for a VGG16 FCN of these widths, without building it."""
    shapes, channels = {}, 3
    for i, (width, count) in enumerate(zip(widths, VGG16_CONVS_PER_STAGE, strict=True), 1):
        for j in range(1, count + 1):
            shapes[f"{our_conv_name(i, j)}.weight"] = (width, channels, 3, 3)
            shapes[f"{our_conv_name(i, j)}.bias"] = (width,)
            channels = width
    k = num_classes
    inputs = {"score_fr": fc_width, "score_pool4": widths[3], "score_pool3": widths[2]}
    shapes["fc6.weight"] = (fc_width, widths[4], FC_KERNEL, FC_KERNEL)
    shapes["fc7.weight"] = (fc_width, fc_width, 1, 1)
    shapes["fc6.bias"] = shapes["fc7.bias"] = (fc_width,)
    for layer in SCORES[model]:
        shapes[f"{layer}.weight"], shapes[f"{layer}.bias"] = (k, inputs[layer], 1, 1), (k,)
    for name, factor in UPSAMPLING[model]:
        shapes[f"{name}.weight"] = (k, k, 2 * factor, 2 * factor)
    return shapes


def source_kind(state: dict) -> str:
    """'fcn8s' / 'fcn16s' / 'fcn32s' for the port (from its upsampling layers' names),
    'vgg16' for torchvision's; ConversionError for anything else."""
    if any(key.startswith("features.") for key in state):
        return "vgg16"
    for model, layers in UPSAMPLING.items():
        if f"{layers[-1][0]}.weight" in state:
            return model
    raise ConversionError(
        "not a known source: expected the parameter names of the PyTorch port of the "
        "paper's FCNs (conv1_1.weight, ..., upscore8.weight / upscore16.weight / "
        "upscore.weight) or of torchvision's VGG16 (features.0.weight, ..., "
        f"classifier.0.weight); found {sorted(state)[:6]}"
    )


def convert_state_dict(
    state: dict, model: str | None = None, num_classes: int | None = None
) -> Converted:
    """Convert ``state`` (source name -> array); dtypes are kept.

    model: the FCN to build; for the port it must agree with the source (None: the
    source's); for torchvision VGG16 it defaults to 'fcn8s'. num_classes: for the port it
    must agree with score_fr (None: the source's); for VGG16 it defaults to 21 (VOC).
    """
    kind = source_kind(state)
    if kind == "vgg16":
        model, num_classes = model or "fcn8s", num_classes or 21
        table, unused = torchvision_table(), TORCHVISION_UNUSED
    else:
        if model is not None and model != kind:
            raise ConversionError(f"--model {model}: the source is the port's {kind}")
        model, table, unused = kind, port_table(kind), ()
    if model not in SCORES:
        raise ConversionError(f"--model must be one of {list(SCORES)}, got {model!r}")
    _check_keys(state, table, unused, model)
    source_of = {o: s for s, o in table}
    firsts = [source_of[f"{our_conv_name(i, 1)}.weight"] for i in range(1, 6)]
    widths = tuple(int(state[name].shape[0]) for name in firsts)  # conv{i}_1's outputs
    fc_width = int(state[source_of["fc6.weight"]].shape[0])
    if kind != "vgg16":
        found = int(state["score_fr.weight"].shape[0])
        if num_classes is not None and num_classes != found:
            raise ConversionError(f"--num-classes {num_classes}: the source's score_fr has {found}")
        num_classes = found
    shapes = expected_shapes(model, num_classes, widths, fc_width)
    _check_shapes(state, table, shapes, model)
    ours = {o: np.ascontiguousarray(state[s]).reshape(shapes[o]) for s, o in table}
    if kind == "vgg16":
        ours |= _fresh_head(model, num_classes, shapes, state["classifier.0.weight"].dtype)
    options = {
        "backbone": "vgg16",
        "widths": widths,
        "fc_width": fc_width,
        "preprocess": dict(TORCHVISION if kind == "vgg16" else CAFFE_BGR),
    }
    return Converted(kind, model, num_classes, options, {k: ours[k] for k in shapes})


def _fresh_head(model: str, num_classes: int, shapes: dict, dtype) -> dict:
    """Score layers at zero and bilinear upsampling: how the paper starts fine-tuning."""
    head = {}
    for layer in SCORES[model]:
        for p in ("weight", "bias"):
            head[f"{layer}.{p}"] = np.zeros(shapes[f"{layer}.{p}"], dtype=dtype)
    for name, factor in UPSAMPLING[model]:
        head[f"{name}.weight"] = bilinear_kernel(num_classes, 2 * factor, dtype)
    return head


def _check_keys(state: dict, table, unused, model: str) -> None:
    """Missing and unexpected keys, listed as torch's strict ``load_state_dict`` lists them."""
    known = {source for source, _ in table}
    missing = [source for source, _ in table if source not in state]
    unexpected = [key for key in state if key not in known and key not in unused]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append("Missing key(s): " + ", ".join(f'"{k}"' for k in missing))
        if unexpected:
            parts.append("Unexpected key(s): " + ", ".join(f'"{k}"' for k in unexpected))
        raise ConversionError(f"Error(s) converting to {model}: " + ". ".join(parts) + ".")


def _check_shapes(state: dict, table, shapes: dict, model: str) -> None:
    """Every source array has our shape (torchvision's Linear layers: (out, C * KH * KW))."""
    errors = []
    for source, ours in table:
        want, got = shapes[ours], tuple(state[source].shape)
        linear = source.startswith("classifier.") and len(want) == 4
        flat = (want[0], int(np.prod(want[1:]))) if linear else want
        if got != want and got != flat:
            errors.append(
                f"size mismatch for {source}: expected {want} for {ours} "
                + (f"(or {flat}) " if flat != want else "")
                + f"but the source has {got}"
            )
    if errors:
        raise ConversionError(f"Error(s) converting to {model}: " + "; ".join(errors))
