"""TrainConfig: every choice a training run makes, in one dataclass that round-trips JSON.

The defaults are the run ``fcn-scratch train`` does with no options: FCN-8s on 64x64
synthetic shapes, Adam with a cosine schedule, sized to run in a few minutes on two CPU
cores (README, Results, gives what it reaches). ``validate()`` checks every field and raises ValueError
naming the field, what it expected and what it got.
"""

import dataclasses
import json
from dataclasses import dataclass, field

from fcn_scratch.device import DEVICES

MODELS = ("fcn32s", "fcn16s", "fcn8s", "unpool")
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "cosine", "poly", "step")
CLASS_WEIGHTS = ("none", "median_freq")
MIN_IMAGE_SIZE = 32  # the models' total stride: pool5 needs one whole cell of the image


@dataclass
class TrainConfig:
    """A training run. ``widths`` / ``fc_width`` size the backbone (None: the model's own
    defaults) and ``model_kwargs`` passes any other ``build_model`` option (e.g.
    ``{"learn_final_upsampling": True}``); ``data`` is a folder of images and masks (None:
    synthetic shapes of ``image_size`` with ``train_size`` / ``val_size`` images;
    ``ignore_border`` is the
    width of the ignore band (label 255) around shapes, as in PASCAL VOC. With
    ``fresh_data`` every epoch draws new synthetic images (seeded by seed and epoch), so
    the model never sees an image twice and cannot memorise the training set."""

    model: str = "fcn8s"
    widths: tuple[int, ...] | None = (16, 32, 48, 64, 64)
    fc_width: int | None = 128
    epochs: int = 12
    batch_size: int = 16
    lr: float = 3e-3
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "cosine"
    class_weights: str = "none"
    image_size: int = 64
    train_size: int = 1024
    val_size: int = 128
    ignore_border: int = 1
    fresh_data: bool = True
    data: str | None = None
    seed: int = 0
    device: str = "cpu"
    out: str | None = "runs/default"
    model_kwargs: dict = field(default_factory=dict)  # more build_model options

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
        if self.widths is not None and (
            len(self.widths) != 5 or any(int(w) < 1 for w in self.widths)
        ):
            raise ValueError(
                f"TrainConfig: widths must be 5 positive ints (one per stage), got {self.widths}"
            )
        if self.fc_width is not None:
            _at_least("fc_width", self.fc_width, 1)
        return self

    def model_options(self) -> dict:
        """Keyword arguments for ``build_model`` beyond name and number of classes."""
        options: dict = {"rng": self.seed, **self.model_kwargs}
        if self.widths is not None:
            options["widths"] = tuple(int(w) for w in self.widths)
        if self.fc_width is not None and self.model != "unpool":
            options["fc_width"] = int(self.fc_width)
        return options

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["widths"] = None if self.widths is None else list(self.widths)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """The config ``to_dict`` gave; unknown keys are an error (a file from elsewhere)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"TrainConfig: unknown fields {unknown}")
        d = dict(d)
        if d.get("widths") is not None:
            d["widths"] = tuple(d["widths"])
        return cls(**d)


def _choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"TrainConfig: {name} must be one of {list(choices)}, got {value!r}")


def _at_least(name: str, value, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"TrainConfig: {name} must be an int >= {low}, got {value!r}")
