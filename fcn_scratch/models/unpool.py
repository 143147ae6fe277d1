"""An unpooling encoder-decoder (SegNet / DeconvNet style): upsampling by recorded maxima.

    encoder: conv1 -> pool1 -> ... -> conv3 -> pool3   (pools keep their argmax indices)
    middle:  fc6 (3x3 conv) -> fc7 (1x1 conv)          (DeconvNet's fully connected layers)
    decoder: unpool3 -> dec3 -> ... -> unpool1 -> dec1 -> score (1x1 conv)

Every conv{i} and dec{i} is [Conv2d 3x3, BatchNorm2d, ReLU] x convs_per_stage[i-1]; fc6
and fc7 are [Conv2d, BatchNorm2d, ReLU] too, fc6 widening to ``fc_width`` channels and fc7
back to the last pool's, as DeconvNet's convolutionalised fc6/fc7 sit between its halves.
Each MaxUnpool2d puts the values back where pool{i} found its maxima, with the recorded
pre-pooling size, so the output size equals the input size for any input, and ``dec{i}``
fills in the zeros between them. The other upsampling of the paper: where the FCNs
interpolate (transposed convolution), this one remembers where.

Batch normalisation after every convolution is what makes this deep, skip-free path
trainable (DeconvNet and SegNet both rely on it): without it the stages learn far more
slowly than the FCNs (``batch_norm=False`` keeps that variant for comparison).

Three pooling stages by default (``num_stages``), where the FCNs have five: with no
skips, everything the decoder knows about a shape's class passes through the middle, and
on the 64x64 images of training a fifth pooling leaves a 2x2 map of 32-pixel cells,
larger than most shapes. Stopping at 1/8 keeps an 8x8 map, the resolution of FCN-8s's
finest skip, and fc6 there (with the training recipe's two convs in stage 3) still sees
46x46 pixels, more than the largest shape. On ``fcn-scratch compare``'s budget, five
stages reached a held-out mean IU of 34.0 and four 35.9; three: the README's Results.
``widths`` and ``convs_per_stage`` still take five
values, as for the FCNs (one configuration for every model); stages past ``num_stages``
are unused.
"""

from collections.abc import Sequence

import numpy as np

from fcn_scratch.autograd import Tensor
from fcn_scratch.models.backbone import (
    DEFAULT_CONVS_PER_STAGE,
    DEFAULT_WIDTHS,
    VGGBackbone,
    conv_block,
)
from fcn_scratch.nn import BatchNorm2d, Conv2d, MaxUnpool2d, Module, ReLU, Sequential
from fcn_scratch.nn.init import RngLike, as_generator

DEFAULT_UNPOOL_STAGES = 3


class UnpoolNet(Module):
    """x (N, C, H, W) -> logits (N, K, H, W).

    With S = num_stages: dec{i} maps widths[i-1] to widths[i-2] channels (dec1 keeps
    widths[0]) with convs_per_stage[i-1] 3x3 convs; fc6 / fc7: widths[S-1] -> fc_width
    -> widths[S-1] at 1/2**S; score maps widths[0] to num_classes.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        widths: Sequence[int] = DEFAULT_WIDTHS,
        convs_per_stage: Sequence[int] = DEFAULT_CONVS_PER_STAGE,
        fc_width: int = 128,
        score_init: str = "kaiming_normal",
        batch_norm: bool = True,
        num_stages: int = DEFAULT_UNPOOL_STAGES,
        dtype=np.float32,
        rng: RngLike = None,
    ) -> None:
        super().__init__()
        rng = as_generator(rng)
        self.num_classes = int(num_classes)
        self.encoder = VGGBackbone(
            in_channels,
            widths,
            convs_per_stage,
            return_indices=True,
            batch_norm=batch_norm,
            num_stages=num_stages,
            dtype=dtype,
            rng=rng,
        )
        w, last = self.encoder.widths, self.encoder.num_stages
        self.fc6 = self._layer(w[last - 1], fc_width, 3, batch_norm, dtype, rng)
        self.fc7 = self._layer(fc_width, w[last - 1], 1, batch_norm, dtype, rng)
        for i in range(last, 0, -1):
            out = w[max(i - 2, 0)]
            count = int(convs_per_stage[i - 1])
            setattr(self, f"unpool{i}", MaxUnpool2d(2, 2))
            setattr(
                self, f"dec{i}", conv_block(w[i - 1], out, count, dtype, rng, batch_norm=batch_norm)
            )
        self.score = Conv2d(w[0], self.num_classes, 1, dtype=dtype, rng=rng, init=score_init)

    @staticmethod
    def _layer(c_in: int, c_out: int, k: int, batch_norm: bool, dtype, rng) -> Sequential:
        """[Conv2d k x k (size kept), BatchNorm2d, ReLU], or [Conv2d, ReLU] without BN."""
        conv = Conv2d(c_in, c_out, k, padding=k // 2, bias=not batch_norm, dtype=dtype, rng=rng)
        layers = [conv, BatchNorm2d(c_out, dtype=dtype), ReLU()] if batch_norm else [conv, ReLU()]
        return Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        recorded = []  # (indices, size before pooling) per stage
        for conv, pool in self.encoder.stages():
            x = conv(x)
            size = x.shape[-2:]
            x, indices = pool(x)
            recorded.append((indices, size))
        x = self.fc7(self.fc6(x))  # (N, widths[S-1], ~H/2**S, ~W/2**S)
        for i in range(len(recorded), 0, -1):
            indices, size = recorded[i - 1]
            x = getattr(self, f"unpool{i}")(x, indices, output_size=size)
            x = getattr(self, f"dec{i}")(x)
        return self.score(x)  # (N, K, H, W)
