"""TrainConfig: every choice a training run makes, in one dataclass that round-trips JSON.

The defaults are the run ``fcn-scratch train`` does with no options: FCN-8s on 64x64
synthetic shapes (fresh images every epoch), Adam with a poly schedule after a linear
warm-up over the first 5% of the steps, 25 epochs: the fewest of this recipe that reach a
held-out mean IU of 0.9 (seed 0 gave 0.903, its last four epochs at least
0.901; seeds 1 and 2 gave 0.923 and 0.927; with the code of an earlier rounding, 24 epochs
gave 0.902, 25 gave 0.915 and 26 gave 0.906), in about two minutes on two CPU cores (the
README's Results give what was measured). ``validate()`` checks every field and
raises ValueError naming the field, what it expected and what it got.
"""

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field

from fcn_scratch.device import DEVICES
from fcn_scratch.models.backbone import stage_values

MODELS = ("fcn32s", "fcn16s", "fcn8s", "unpool")
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "cosine", "poly", "step")
CLASS_WEIGHTS = ("none", "median_freq")
MAX_SEED = 2**63 - 1  # seeds are stored as int64
# What model_kwargs and shapes_kwargs may hold (the other options are TrainConfig fields).
FCN_KWARGS = (
    "backbone",
    "first_padding",
    "fc6_kernel",
    "fc6_padding",
    "dropout",
    "score_init",
    "learn_skip_upsampling",
    "preprocess",
)
UNPOOL_KWARGS = ("score_init", "num_stages")
SHAPES_KWARGS = ("kinds", "min_shapes", "max_shapes", "radius", "noise", "texture")
MIN_IMAGE_SIZE = 32  # the models' total stride: pool5 needs one whole cell of the image
# ``fcn-scratch train --data DIR``: the fields not given on the command line or in --config.
FOLDER_DEFAULTS = {"augment": True, "warmup": 0.02}


@dataclass
class TrainConfig:
    """A training run.

    Model: ``widths`` / ``convs_per_stage`` / ``fc_width`` size the backbone and the conv
    "fc" layers (None: the model's own defaults, models/backbone.py);
    ``learn_final_upsampling`` trains the last bilinear upsampling of the FCNs too;
    ``batch_norm`` puts a BatchNorm2d after every backbone (and decoder) convolution (None:
    the model's default, on for the unpooling model only). Their
    defaults here are the training recipe's network, larger than the models' own defaults
    (the small net of the tests and tutorials). ``model_kwargs`` passes any other
    ``build_model`` option. Data: ``data`` is a folder of images and masks, or None for
    synthetic shapes of ``image_size`` with ``train_size`` / ``val_size`` images, an ignore
    band (label 255) ``ignore_border`` pixels wide around every shape as in PASCAL VOC, and
    any other ``ShapesDataset`` option in ``shapes_kwargs``. ``num_classes`` fixes the class
    count of a ``data`` folder (None: its classes.txt, else the largest mask value + 1, and
    then most ids below it must occur). With ``fresh_data`` every epoch draws new images
    (seeded by seed and epoch): the model never sees one twice and cannot memorise the
    training set.

    Recipe: ``max_time`` (seconds) replaces ``epochs`` by a wall-clock budget, over which
    the learning-rate schedule then runs; ``warmup`` is the fraction of the run whose lr
    ramps up linearly first; ``augment`` flips training images left-right at random.
    ``FOLDER_DEFAULTS`` are what ``fcn-scratch train --data DIR`` uses for the fields
    not given.
    """

    model: str = "fcn8s"
    widths: tuple[int, ...] | None = (16, 32, 48, 64, 64)
    convs_per_stage: tuple[int, ...] | None = (1, 1, 2, 2, 2)
    fc_width: int | None = 128
    learn_final_upsampling: bool = True
    batch_norm: bool | None = None
    epochs: int = 25
    batch_size: int = 8
    lr: float = 4e-3
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "poly"
    class_weights: str = "none"
    image_size: int = 64
    train_size: int = 2048
    val_size: int = 128
    ignore_border: int = 1
    fresh_data: bool = True
    data: str | None = None
    num_classes: int | None = None
    seed: int = 0
    device: str = "cpu"
    out: str | None = "runs/default"
    max_time: float | None = None
    warmup: float = 0.05
    augment: bool = False
    model_kwargs: dict = field(default_factory=dict)  # more build_model options
    shapes_kwargs: dict = field(default_factory=dict)  # more ShapesDataset options

    def validate(self) -> "TrainConfig":
        """Raise ValueError for the first bad field; return self when all are fine."""
        _choice("model", self.model, MODELS)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("schedule", self.schedule, SCHEDULES)
        _choice("class_weights", self.class_weights, CLASS_WEIGHTS)
        _choice("device", self.device, DEVICES)
        for name in ("epochs", "batch_size", "train_size", "val_size"):
            _at_least(name, getattr(self, name), 1)
        _at_least("ignore_border", self.ignore_border, 0)
        _at_least("seed", self.seed, 0)
        if self.seed > MAX_SEED:
            raise ValueError(f"TrainConfig: seed must be <= 2**63 - 1, got {self.seed}")
        if self.num_classes is not None:
            _at_least("num_classes", self.num_classes, 1)
        for name in ("fresh_data", "learn_final_upsampling"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(
                    f"TrainConfig: {name} must be true or false, got {getattr(self, name)!r}"
                )
        for name in ("data", "out"):
            if not isinstance(getattr(self, name), (str, type(None))):
                raise ValueError(
                    f"TrainConfig: {name} must be a path or None, got {getattr(self, name)!r}"
                )
        model_kwargs = UNPOOL_KWARGS if self.model == "unpool" else FCN_KWARGS
        _options("model_kwargs", self.model_kwargs, model_kwargs)
        _options("shapes_kwargs", self.shapes_kwargs, SHAPES_KWARGS)
        for f in dataclasses.fields(self):  # types first: the comparisons below need them
            value = getattr(self, f.name)
            if not _has_type(value, f.type):
                raise ValueError(
                    f"TrainConfig: {f.name} must be {_type_name(f.type)}, got {value!r}"
                )
        if not self.lr > 0 or self.lr != self.lr:
            raise ValueError(f"TrainConfig: lr must be a positive number, got {self.lr!r}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"TrainConfig: momentum must be in [0, 1), got {self.momentum!r}")
        if not self.weight_decay >= 0:
            raise ValueError(f"TrainConfig: weight_decay must be >= 0, got {self.weight_decay!r}")
        if self.image_size < MIN_IMAGE_SIZE:
            raise ValueError(
                f"TrainConfig: image_size must be >= {MIN_IMAGE_SIZE} for {self.model} "
                f"(its total stride is 32: smaller images leave pool5 without one whole "
                f"cell of image), got {self.image_size}"
            )
        for name in ("widths", "convs_per_stage"):
            if getattr(self, name) is not None:
                stage_values("TrainConfig", name, getattr(self, name))
        if self.fc_width is not None:
            _at_least("fc_width", self.fc_width, 1)
        if self.max_time is not None and not self.max_time > 0:
            raise ValueError(
                f"TrainConfig: max_time must be a positive number of seconds, got {self.max_time!r}"
            )
        if not 0 <= self.warmup < 1:
            raise ValueError(
                f"TrainConfig: warmup must be a fraction in [0, 1), got {self.warmup!r}"
            )
        return self

    def model_options(self) -> dict:
        """Keyword arguments for ``build_model`` beyond name and number of classes."""
        options: dict = {"rng": self.seed, **self.model_kwargs}
        if self.widths is not None:
            options["widths"] = tuple(int(w) for w in self.widths)
        if self.convs_per_stage is not None:
            options["convs_per_stage"] = tuple(int(c) for c in self.convs_per_stage)
        if self.batch_norm is not None:
            options["batch_norm"] = bool(self.batch_norm)
        if self.fc_width is not None:
            options["fc_width"] = int(self.fc_width)
        if self.model != "unpool":  # an option of the FCNs only
            options["learn_final_upsampling"] = bool(self.learn_final_upsampling)
        return options

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for key in ("widths", "convs_per_stage"):
            d[key] = None if d[key] is None else list(d[key])
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """The config ``to_dict`` gave (or a JSON file holds); unknown keys are an error
        (``validate`` then checks the values' types and ranges)."""
        if not isinstance(d, dict):
            raise ValueError(
                f"TrainConfig: expected a JSON object of fields, got {type(d).__name__}"
            )
        known = sorted(f.name for f in dataclasses.fields(cls))
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ValueError(f"TrainConfig: unknown fields {unknown}; known: {known}")
        d = dict(d)
        for key in ("widths", "convs_per_stage"):
            if isinstance(d.get(key), list):
                d[key] = tuple(d[key])
        return cls(**d)


def _has_type(value, annotation) -> bool:
    """Whether a value fits a field's annotation (int, float, bool, str, dict, a tuple of
    ints, and unions with None)."""
    if isinstance(annotation, types.UnionType):
        return any(_has_type(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if typing.get_origin(annotation) is tuple:
        return isinstance(value, tuple) and all(_has_type(v, int) for v in value)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, annotation)


def _type_name(annotation) -> str:
    if isinstance(annotation, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return "null"
    if typing.get_origin(annotation) is tuple:
        return "a list of ints"
    return {int: "an int", float: "a number", bool: "true or false", str: "a string"}.get(
        annotation, "an object"
    )


def _choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"TrainConfig: {name} must be one of {list(choices)}, got {value!r}")


def _options(name: str, value, allowed) -> None:
    """A dict of extra options whose keys are among ``allowed`` (values are checked by
    the constructor they go to)."""
    if not isinstance(value, dict) or set(value) - set(allowed):
        unknown = sorted(set(value) - set(allowed)) if isinstance(value, dict) else value
        raise ValueError(f"TrainConfig: {name} may hold only {list(allowed)}, got {unknown!r}")


def _at_least(name: str, value, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"TrainConfig: {name} must be an int >= {low}, got {value!r}")
