"""What a TrainConfig builds: datasets, model, optimiser, schedule, class weights."""

import numpy as np

from fcn_scratch import optim
from fcn_scratch.data import (
    IGNORE_INDEX,
    FolderDataset,
    ShapesDataset,
    VOCCrops,
    VOCDataset,
    is_voc,
)
from fcn_scratch.models import build_model
from fcn_scratch.models.fcn import BACKBONES
from fcn_scratch.train.config import TrainConfig


def split_seed(seed: int, *keys: int) -> int:
    """Independent seeds for the training (keys 0), held-out (1) and epoch e's fresh
    training data (2, e), and step s's augmentation (3, s)."""
    return int(np.random.SeedSequence([seed, *keys]).generate_state(1)[0])


def make_datasets(config: TrainConfig):
    """(train, held-out): synthetic shapes from two independent seeds, a folder's split,
    or a VOC-layout folder's train split (random crops of image_size) and val split (the
    first val_size images, each at its own size)."""
    if config.data is not None and is_voc(config.data):
        train = VOCDataset(config.data, "train")
        return VOCCrops(train, config.image_size, split_seed(config.seed, 0)), _voc_val(config)
    if config.data is not None:
        folder = FolderDataset(config.data, size=config.image_size, num_classes=config.num_classes)
        return split_folder(folder, config)
    return _shapes(config, config.train_size, 0), _shapes(config, config.val_size, 1)


def make_held_out(config: TrainConfig):
    """The run's held-out set alone (what ``make_datasets`` returns second)."""
    if config.data is not None and is_voc(config.data):
        return _voc_val(config)
    if config.data is not None:
        return make_datasets(config)[1]
    return _shapes(config, config.val_size, 1)


def split_folder(dataset, config: TrainConfig):
    """(train, held-out) from one folder: a seeded random ``val_size`` images are held out,
    at most a fifth of the folder (and at least one image), the rest train."""
    n = len(dataset)
    if n < 2:
        raise ValueError(
            f"--data {config.data}: need at least 2 image/mask pairs (one to "
            f"train on, one to hold out), found {n}"
        )
    held = min(config.val_size, max(1, n // 5))
    return dataset.split(held, seed=split_seed(config.seed, 1))


def _voc_val(config: TrainConfig) -> VOCDataset:
    return VOCDataset(config.data, "val", limit=config.val_size)


def fresh_train_set(config: TrainConfig, epoch: int) -> ShapesDataset:
    """Epoch ``epoch``'s training images under ``fresh_data`` (epoch 0: the usual set)."""
    if epoch == 0:
        return _shapes(config, config.train_size, 0)
    return _shapes(config, config.train_size, 2, epoch)


def _shapes(config: TrainConfig, n: int, *keys: int) -> ShapesDataset:
    return ShapesDataset(
        n,
        size=config.image_size,
        seed=split_seed(config.seed, *keys),
        ignore_border=config.ignore_border,
        **config.shapes_kwargs,
    )


# Refuse models whose float32 parameters alone would need more than this (full-size
# VGG16 FCN-8s needs 0.5 GiB; training holds about four copies: weights, gradients and
# Adam's two moments).
MAX_PARAMETER_BYTES = 8 * 2**30


def make_model(config: TrainConfig, num_classes: int, device: str | None = None):
    """The config's model on ``device`` (default: config.device). A model too large for
    MAX_PARAMETER_BYTES is refused before anything is allocated."""
    try:
        needed = 4 * parameter_bound(config, num_classes)
        if needed > MAX_PARAMETER_BYTES:
            raise ValueError(
                f"TrainConfig: {config.model} with widths {config.widths}, fc_width "
                f"{config.fc_width} and {num_classes} classes would need about "
                f"{needed / 2**30:,.1f} GiB of parameters, more than the "
                f"{MAX_PARAMETER_BYTES / 2**30:.0f} GiB allowed"
            )
        model = build_model(config.model, num_classes, **config.model_options())
    except (TypeError, KeyError) as err:  # a model_kwargs value of the wrong type
        raise ValueError(
            f"TrainConfig: cannot build {config.model} with model_kwargs "
            f"{config.model_kwargs}: {err}"
        ) from err
    return model.to(device or config.device)


def parameter_bound(config: TrainConfig, num_classes: int) -> int:
    """An upper bound of the model's parameter count, from the config alone: the
    backbone's 3x3 convs (twice, for the unpooling model's decoder), fc6 and fc7, the 1x1
    score layers and the K->K upsamplings (kernels of at most 64x64). Options left unset
    take the chosen backbone's defaults."""
    options = config.model_options()
    defaults = BACKBONES[options.get("backbone", "small")]
    widths = options.get("widths") or defaults["widths"]
    convs = options.get("convs_per_stage") or defaults["convs_per_stage"]
    fc = options.get("fc_width") or defaults["fc_width"]
    k6, k = options.get("fc6_kernel") or defaults["fc6_kernel"], num_classes
    backbone, previous = 0, 3
    for width, n in zip(widths, convs):
        backbone += 9 * (previous * width + n * width * width) + n * width
        previous = width
    fc_layers = k6 * k6 * previous * fc + fc * fc + 2 * fc
    scores = (fc + sum(widths) + 1) * k
    upsampling = k * k * (64 * 64 + 3 * 16 * 16)
    return 2 * backbone + fc_layers + scores + upsampling


def make_optimizer(config: TrainConfig, model):
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        return optim.SGD(
            params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    return optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)


# A run on a time budget (``max_time``) counts its schedule in ticks of 1/TIME_TICKS of it.
TIME_TICKS = 10_000


def make_schedule(config: TrainConfig, optimizer, steps_per_epoch: int):
    """A per-step learning-rate schedule over the whole run (in steps, or in ticks of the
    time budget), after a linear warm-up over ``config.warmup`` of it."""
    total = TIME_TICKS if config.max_time is not None else config.epochs * steps_per_epoch
    warmup = {"warmup_steps": min(int(config.warmup * total), total - 1)}
    if config.schedule == "cosine":
        return optim.CosineSchedule(optimizer, total_steps=total, **warmup)
    if config.schedule == "poly":
        return optim.PolySchedule(optimizer, total_steps=total, power=0.9, **warmup)
    if config.schedule == "step":
        return optim.StepSchedule(optimizer, step_size=max(1, total // 3), gamma=0.1, **warmup)
    return optim.ConstantSchedule(optimizer, **warmup)


def augment(config: TrainConfig, x: np.ndarray, y: np.ndarray, step: int):
    """With ``config.augment``, flip each image of a batch (and its labels) left-right with
    probability 1/2, seeded by the run's seed and the step (so a resumed run flips alike).
    x: (B, 3, H, W), y: (B, H, W)."""
    if not config.augment:
        return x, y
    flip = np.random.default_rng(split_seed(config.seed, 3, step)).random(len(x)) < 0.5
    x, y = x.copy(), y.copy()
    x[flip] = x[flip, :, :, ::-1]
    y[flip] = y[flip, :, ::-1]
    return x, y


def class_weights(config: TrainConfig, labels, num_classes: int):
    """None, or median-frequency balancing (Eigen & Fergus): weight_c = median(f) / f_c,
    f_c = pixels of class c / pixels of the images where c appears. labels: (N, H, W), or
    any iterable of (H, W) label maps (read one at a time)."""
    if config.class_weights == "none":
        return None
    counts = np.zeros(num_classes, dtype=np.int64)  # pixels of class c
    pixels = np.zeros(num_classes, dtype=np.int64)  # pixels of the images holding class c
    for label in labels:
        valid = np.asarray(label).ravel()
        valid = valid[valid != IGNORE_INDEX]
        in_image = np.bincount(valid, minlength=num_classes)[:num_classes]  # (K,)
        counts += in_image
        pixels += (in_image > 0) * valid.size
    freq = counts / np.maximum(pixels, 1)
    freq = np.where(freq > 0, freq, np.nan)
    weight = np.nanmedian(freq) / freq
    return np.nan_to_num(weight, nan=0.0).astype(np.float32)  # (K,)


# The config fields that fix a model's parameters: what ``--init-from`` takes from its file.
ARCHITECTURE = ("model", "widths", "convs_per_stage", "fc_width", "model_kwargs")


def with_architecture_of(ckpt, fields: dict) -> dict:
    """Config ``fields`` with ``ckpt``'s architecture (model, sizes, backbone, input
    preprocessing) filled in, to fine-tune its weights; ValueError where a field given in
    ``fields`` differs from the checkpoint's."""
    theirs = ckpt.config.to_dict()
    clash = [k for k in ARCHITECTURE if k in fields and _plain(fields[k]) != _plain(theirs[k])]
    if clash:
        raise ValueError(
            f"--init-from {ckpt.path}: its model is fixed by the file; "
            + ", ".join(f"{k} is {theirs[k]!r} there, not {fields[k]!r}" for k in clash)
        )
    adopted = {k: tuple(v) if isinstance(v, list) else v for k, v in theirs.items()}
    return {**fields, **{k: adopted[k] for k in ARCHITECTURE}}


def init_weights(model, ckpt, class_names) -> None:
    """Load ``ckpt``'s weights into ``model`` (built by ``with_architecture_of``'s config)
    for data with ``class_names``; the class counts must agree."""
    from fcn_scratch.train.checkpoint import load_model_state

    if len(class_names) != len(ckpt.class_names):
        raise ValueError(
            f"--init-from {ckpt.path}: its model scores {len(ckpt.class_names)} classes, "
            f"the data has {len(class_names)}; convert with --num-classes {len(class_names)}"
        )
    load_model_state(model, ckpt.model_state, ckpt.path)


def _plain(value):
    return list(value) if isinstance(value, tuple) else value
