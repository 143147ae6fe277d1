"""An unpooling encoder-decoder (DeconvNet / SegNet style): upsampling by recorded maxima.

    encoder: conv1 -> pool1 -> ... -> conv5 -> pool5   (pools keep their argmax indices)
    decoder: unpool5 -> dec5 -> ... -> unpool1 -> dec1 -> score (1x1 conv)

Each MaxUnpool2d puts the values back where pool{i} found its maxima, with the recorded
pre-pooling size, so the output size equals the input size for any input, and ``dec{i}``
(3x3 convs) fills in the zeros between them. The other upsampling of the paper: where the
FCNs interpolate (transposed convolution), this one remembers where.
"""

from collections.abc import Sequence

import numpy as np

from fcn_scratch.autograd import Tensor
from fcn_scratch.models.backbone import (
    DEFAULT_CONVS_PER_STAGE,
    DEFAULT_WIDTHS,
    NUM_STAGES,
    VGGBackbone,
    conv_block,
)
from fcn_scratch.nn import Conv2d, MaxUnpool2d, Module
from fcn_scratch.nn.init import RngLike, as_generator


class UnpoolNet(Module):
    """x (N, C, H, W) -> logits (N, K, H, W).

    dec{i} maps widths[i-1] to widths[i-2] channels (dec1 keeps widths[0]) with
    convs_per_stage[i-1] 3x3 convs; score maps widths[0] to num_classes.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        widths: Sequence[int] = DEFAULT_WIDTHS,
        convs_per_stage: Sequence[int] = DEFAULT_CONVS_PER_STAGE,
        score_init: str = "kaiming_normal",
        dtype=np.float32,
        rng: RngLike = None,
    ) -> None:
        super().__init__()
        rng = as_generator(rng)
        self.num_classes = int(num_classes)
        self.encoder = VGGBackbone(
            in_channels, widths, convs_per_stage, return_indices=True, dtype=dtype, rng=rng
        )
        w = self.encoder.widths
        for i in range(NUM_STAGES, 0, -1):
            out = w[max(i - 2, 0)]
            setattr(self, f"unpool{i}", MaxUnpool2d(2, 2))
            setattr(
                self, f"dec{i}", conv_block(w[i - 1], out, int(convs_per_stage[i - 1]), dtype, rng)
            )
        self.score = Conv2d(w[0], self.num_classes, 1, dtype=dtype, rng=rng, init=score_init)

    def forward(self, x: Tensor) -> Tensor:
        recorded = []  # (indices, size before pooling) per stage
        for conv, pool in self.encoder.stages():
            x = conv(x)
            size = x.shape[-2:]
            x, indices = pool(x)
            recorded.append((indices, size))
        for i in range(NUM_STAGES, 0, -1):
            indices, size = recorded[i - 1]
            x = getattr(self, f"unpool{i}")(x, indices, output_size=size)
            x = getattr(self, f"dec{i}")(x)
        return self.score(x)  # (N, K, H, W)
