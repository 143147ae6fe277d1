"""A small VGG-style backbone: five stages of 3x3 convolutions, each ending in 2x2 pooling.

    x (N, C, H, W) -> conv1 -> pool1 (1/2) -> ... -> conv5 -> pool5 (1/32)

Stage i is ``conv{i}`` (a Sequential of [Conv2d 3x3 pad 1, ReLU] x convs_per_stage[i],
or [Conv2d, BatchNorm2d, ReLU] with ``batch_norm``) followed by ``pool{i}`` (MaxPool2d
2x2 stride 2). The 3x3 "same" convolutions keep the
size; pooling halves it, rounding up (``ceil_mode``, as in Caffe's FCN), so no border pixel
is dropped and any input size, odd or even, down to 1x1, has a 1/32 map covering it.
"""

from collections.abc import Sequence

import numpy as np

from fcn_scratch.autograd import Tensor
from fcn_scratch.nn import BatchNorm2d, Conv2d, MaxPool2d, Module, ReLU, Sequential
from fcn_scratch.nn.init import RngLike, as_generator

# The models' own defaults (build_model and the classes without widths / convs_per_stage):
# one 3x3 conv per stage and at most 64 channels, about 14 M multiply-accumulates per 64x64
# image for FCN-8s, the small net the tests and tutorials build. A training run sizes its
# network in TrainConfig (train/config.py), whose defaults are the training recipe's.
DEFAULT_WIDTHS = (16, 32, 64, 64, 64)
DEFAULT_CONVS_PER_STAGE = (1, 1, 1, 1, 1)
# VGG16 (Simonyan & Zisserman's configuration D), the backbone of the paper's FCNs.
VGG16_WIDTHS = (64, 128, 256, 512, 512)
VGG16_CONVS_PER_STAGE = (2, 2, 3, 3, 3)
NUM_STAGES = 5


def conv_block(
    in_channels: int,
    width: int,
    count: int,
    dtype,
    rng,
    first_padding: int = 1,
    batch_norm: bool = False,
) -> Sequential:
    """[Conv2d(3x3, padding 1), ReLU] repeated ``count`` times: (N, C, H, W) -> (N, width, H, W).

    ``first_padding`` pads the block's first convolution differently (VGG16's FCN pads
    conv1_1 by 100: the image then grows by 198 pixels per axis). With ``batch_norm``:
    [Conv2d (no bias: BN's own bias replaces it), BatchNorm2d, ReLU].
    """
    layers: list[Module] = []
    for i in range(count):
        padding = first_padding if i == 0 else 1
        conv = Conv2d(
            in_channels, width, 3, padding=padding, bias=not batch_norm, dtype=dtype, rng=rng
        )
        layers += [conv, BatchNorm2d(width, dtype=dtype), ReLU()] if batch_norm else [conv, ReLU()]
        in_channels = width
    return Sequential(*layers)


def stage_values(op: str, name: str, values: Sequence[int]) -> tuple[int, ...]:
    """``widths`` or ``convs_per_stage`` as a tuple of ints, checked: one positive int per
    pooling stage. The one check of these options (the backbone, TrainConfig, the CLI)."""
    if len(values) != NUM_STAGES or any(int(v) < 1 for v in values):
        raise ValueError(
            f"{op}: {name} must be {NUM_STAGES} positive ints (one per pooling stage), "
            f"got {tuple(values)}"
        )
    return tuple(int(v) for v in values)


class VGGBackbone(Module):
    """x (N, C_in, H, W) -> [pool1, ..., pool5], pool_i: (N, widths[i-1], ceil(H'/2^i), ...)
    with H' = H + 2 * (first_padding - 1).

    ``return_indices=True`` makes every pool return (y, indices) (for unpooling decoders).
    ``num_stages`` < 5 builds only the first stages (an encoder that stops at 1/2**num_stages;
    ``widths`` and ``convs_per_stage`` still give all five, the later ones unused).
    ``first_padding``: the padding of conv1_1 (1 keeps the size; the paper's VGG16 uses 100).
    ``batch_norm=True`` puts a BatchNorm2d after every convolution.
    Conv ``conv{i}_{j}`` of the paper is ``conv{i}.{2 * (j - 1)}`` here (ReLUs in between;
    ``3 * (j - 1)`` with batch norm).
    """

    def __init__(
        self,
        in_channels: int = 3,
        widths: Sequence[int] = DEFAULT_WIDTHS,
        convs_per_stage: Sequence[int] = DEFAULT_CONVS_PER_STAGE,
        return_indices: bool = False,
        first_padding: int = 1,
        batch_norm: bool = False,
        num_stages: int = NUM_STAGES,
        dtype=np.float32,
        rng: RngLike = None,
    ) -> None:
        super().__init__()
        if (
            isinstance(num_stages, bool)
            or not isinstance(num_stages, (int, np.integer))
            or not (1 <= num_stages <= NUM_STAGES)
        ):
            raise ValueError(
                f"VGGBackbone: num_stages must be in 1..{NUM_STAGES}, got {num_stages!r}"
            )
        widths = stage_values("VGGBackbone", "widths", widths)
        convs_per_stage = stage_values("VGGBackbone", "convs_per_stage", convs_per_stage)
        rng = as_generator(rng)
        self.widths = widths
        self.num_stages = int(num_stages)
        channels = in_channels
        stages = zip(widths[:num_stages], convs_per_stage[:num_stages], strict=True)
        for i, (width, count) in enumerate(stages, 1):
            padding = first_padding if i == 1 else 1
            block = conv_block(channels, width, count, dtype, rng, padding, batch_norm)
            setattr(self, f"conv{i}", block)
            setattr(
                self, f"pool{i}", MaxPool2d(2, 2, ceil_mode=True, return_indices=return_indices)
            )
            channels = width

    def stages(self) -> list[tuple[Sequential, MaxPool2d]]:
        """[(conv1, pool1), ..., (conv{num_stages}, pool{num_stages})]."""
        return [
            (getattr(self, f"conv{i}"), getattr(self, f"pool{i}"))
            for i in range(1, self.num_stages + 1)
        ]

    def layers_to(self, stage: int) -> list[Module]:
        """The layers from the image to the output of ``pool{stage}``, in order."""
        return [layer for conv, pool in self.stages()[:stage] for layer in (conv, pool)]

    def forward(self, x: Tensor) -> list[Tensor]:
        pooled = []
        for conv, pool in self.stages():
            x = pool(conv(x))
            pooled.append(x)
        return pooled  # pool_i: (N, widths[i-1], ~H/2^i, ~W/2^i)
