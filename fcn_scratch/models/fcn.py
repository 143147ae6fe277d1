"""FCN-32s, FCN-16s and FCN-8s (Long, Shelhamer, Darrell 2015) on the VGG-style backbone.

All three share the classifier turned convolutional: ``fc6`` (a k x k conv, the fully
connected layer as a convolution), ``fc7`` (1x1) and ``score_fr`` (1x1 to class scores),
at 1/32 of the input resolution. They differ in how the scores get back to full size:

    FCN-32s  score_fr --upscore (x32)--------------------------------------------> crop
    FCN-16s  score_fr --upscore2 (x2)--+ score_pool4 --upscore16 (x16)-----------> crop
    FCN-8s   score_fr --upscore2 (x2)--+ score_pool4 --upscore_pool4 (x2)--+
                                                         score_pool3 --upscore8 (x8)--> crop

Every upsampling is a ConvTranspose2d with kernel 2f and stride f, initialised as bilinear
interpolation; the x2 steps are learned and the last one stays fixed (the paper's choice;
both are options). Where two branches meet ("+"), the crop that aligns them, and the final
crop back to the input, come from the layers' coordinate maps (``geometry``), so any input
size works and the logits always have exactly the input's height and width.
"""

from collections.abc import Sequence

import numpy as np

from fcn_scratch import functional as F
from fcn_scratch.autograd import Tensor
from fcn_scratch.models.backbone import (
    DEFAULT_CONVS_PER_STAGE,
    DEFAULT_WIDTHS,
    VGG16_CONVS_PER_STAGE,
    VGG16_WIDTHS,
    VGGBackbone,
)
from fcn_scratch.models.geometry import (
    Alignment,
    CoordMap,
    align,
    chain_map,
    layer_map,
    output_offset,
)
from fcn_scratch.models.preprocess import make_preprocess
from fcn_scratch.nn import Conv2d, ConvTranspose2d, Dropout, Module, ReLU
from fcn_scratch.nn.init import RngLike, as_generator


def fuse(a: Tensor, b: Tensor, alignment: Alignment) -> Tensor:
    """a + b on their common grid: each cropped at its offset to the overlap's size."""
    (oay, oax), (oby, obx) = alignment.offset_a, alignment.offset_b
    size = (min(a.shape[-2] - oay, b.shape[-2] - oby), min(a.shape[-1] - oax, b.shape[-1] - obx))
    return _crop(a, (oay, oax), size) + _crop(b, (oby, obx), size)  # (N, K, *size)


def crop_to_input(
    scores: Tensor, offset: tuple[int, int], size: tuple[int, int], where: str
) -> Tensor:
    """The input-aligned window of full-resolution scores: (N, K, H', W') -> (N, K, *size)."""
    if scores.shape[-2] < offset[0] + size[0] or scores.shape[-1] < offset[1] + size[1]:
        raise ValueError(
            f"{where}: the upsampled scores {scores.shape[-2:]} do not cover the input {size} "
            f"at offset {offset}"
        )
    return _crop(scores, offset, size)


def _crop(x: Tensor, offset: tuple[int, int], size: tuple[int, int]) -> Tensor:
    if tuple(offset) == (0, 0) and tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.crop(x, offset, size)


# What ``backbone`` chooses when an option is left as None: the backbone's stages, the
# padding of its first convolution, and the convolutionalised classifier (fc6, fc7).
BACKBONES = {
    # A small network for 64x64 synthetic shapes: "same" padding everywhere.
    "small": {
        "widths": DEFAULT_WIDTHS,
        "convs_per_stage": DEFAULT_CONVS_PER_STAGE,
        "first_padding": 1,
        "fc_width": 128,
        "fc6_kernel": 3,
        "fc6_padding": 1,
        "dropout": 0.0,
    },
    # The paper's: VGG16 with conv1_1 padded by 100, fc6 a 7x7 convolution without padding
    # (VGG16's first FC layer on 512x7x7 features), fc7 1x1, both 4096 wide, dropout 0.5.
    "vgg16": {
        "widths": VGG16_WIDTHS,
        "convs_per_stage": VGG16_CONVS_PER_STAGE,
        "first_padding": 100,
        "fc_width": 4096,
        "fc6_kernel": 7,
        "fc6_padding": 0,
        "dropout": 0.5,
    },
}


class FCNBase(Module):
    """Backbone and convolutionalised classifier shared by the FCN variants.

    num_classes: K, including background. backbone: 'small' or 'vgg16', which gives the
    defaults of every option below left as None (``BACKBONES``). widths /
    convs_per_stage: the backbone's five stages. first_padding: conv1_1's padding.
    fc_width: channels of fc6 and fc7. fc6_kernel / fc6_padding: fc6's kernel size and
    padding (the small backbone pads it to keep the size). dropout: after fc6 and fc7, in
    training. score_init: 'zeros' (the paper) or 'kaiming_normal' for score_fr and the skip
    score layers. learn_skip_upsampling / learn_final_upsampling: whether the bilinear
    upsampling kernels are trained. preprocess: None, or the options of a ``Preprocess``
    applied to the RGB [0, 1] input first (what outside weights expect). batch_norm: a
    BatchNorm2d after every backbone convolution. rng: numpy Generator or int seed; the
    same seed builds the same model.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        backbone: str = "small",
        widths: Sequence[int] | None = None,
        convs_per_stage: Sequence[int] | None = None,
        first_padding: int | None = None,
        fc_width: int | None = None,
        fc6_kernel: int | None = None,
        fc6_padding: int | None = None,
        dropout: float | None = None,
        score_init: str = "zeros",
        learn_skip_upsampling: bool = True,
        learn_final_upsampling: bool = False,
        preprocess: dict | None = None,
        batch_norm: bool = False,
        dtype=np.float32,
        rng: RngLike = None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if backbone not in BACKBONES:
            raise ValueError(f"{name}: backbone must be one of {list(BACKBONES)}, got {backbone!r}")
        given = {
            "widths": widths,
            "convs_per_stage": convs_per_stage,
            "first_padding": first_padding,
            "fc_width": fc_width,
            "fc6_kernel": fc6_kernel,
            "fc6_padding": fc6_padding,
            "dropout": dropout,
        }
        o = {k: BACKBONES[backbone][k] if v is None else v for k, v in given.items()}
        if o["fc6_kernel"] < 1:
            raise ValueError(f"{name}: fc6_kernel must be positive, got {o['fc6_kernel']}")
        if fc6_padding is None and backbone == "small":
            if o["fc6_kernel"] % 2 == 0:
                raise ValueError(f"{name}: fc6_kernel must be odd, got {o['fc6_kernel']}")
            o["fc6_padding"] = o["fc6_kernel"] // 2  # keep the size
        self._rng = as_generator(rng)
        self.backbone_name = backbone
        self.num_classes = int(num_classes)
        self.dtype = np.dtype(dtype)
        self.score_init = score_init
        self.learn_skip_upsampling = learn_skip_upsampling
        self.learn_final_upsampling = learn_final_upsampling
        self.preprocess = make_preprocess(preprocess)
        self.backbone = VGGBackbone(
            in_channels,
            o["widths"],
            o["convs_per_stage"],
            first_padding=o["first_padding"],
            batch_norm=batch_norm,
            dtype=dtype,
            rng=self._rng,
        )
        width5, fc = self.backbone.widths[-1], o["fc_width"]
        self.fc6 = Conv2d(
            width5, fc, o["fc6_kernel"], padding=o["fc6_padding"], dtype=dtype, rng=self._rng
        )
        self.relu6 = ReLU()
        self.drop6 = Dropout(o["dropout"])
        self.fc7 = Conv2d(fc, fc, 1, dtype=dtype, rng=self._rng)
        self.relu7 = ReLU()
        self.drop7 = Dropout(o["dropout"])
        self.score_fr = self.score_layer(fc)

    def score_layer(self, in_channels: int) -> Conv2d:
        """A 1x1 conv from features to class scores (score_fr, score_pool4, score_pool3)."""
        return Conv2d(
            in_channels, self.num_classes, 1, dtype=self.dtype, rng=self._rng, init=self.score_init
        )

    def upsampling(self, factor: int, learnable: bool) -> ConvTranspose2d:
        """Bilinear x``factor`` upsampling of class scores: kernel 2*factor, stride factor."""
        return ConvTranspose2d(
            self.num_classes,
            self.num_classes,
            2 * factor,
            stride=factor,
            bias=False,
            dtype=self.dtype,
            init="bilinear",
            learnable=learnable,
        )

    def map_of_pool(self, stage: int) -> CoordMap:
        """Where the cells of pool{stage} sit in the image."""
        return chain_map(self.backbone.layers_to(stage))

    def map_of_score_fr(self) -> CoordMap:
        head = [self.fc6, self.relu6, self.drop6, self.fc7, self.relu7, self.drop7, self.score_fr]
        return chain_map(head, start=self.map_of_pool(5))

    def score_coarse(self, x: Tensor) -> tuple[list[Tensor], Tensor]:
        """Backbone features [pool1..pool5] and score_fr (N, K, ~H/32, ~W/32)."""
        if self.preprocess is not None:
            x = self.preprocess(x)  # (N, 3, H, W) as the weights expect
        pooled = self.backbone(x)
        h = self.drop6(self.relu6(self.fc6(pooled[-1])))
        h = self.drop7(self.relu7(self.fc7(h)))
        return pooled, self.score_fr(h)


class FCN32s(FCNBase):
    """x (N, C, H, W) -> logits (N, K, H, W): score_fr upsampled x32 in one step."""

    def __init__(self, num_classes: int, **options) -> None:
        super().__init__(num_classes, **options)
        self.upscore = self.upsampling(32, self.learn_final_upsampling)
        self.offset = output_offset(self.map_of_score_fr().then(layer_map(self.upscore)), "FCN32s")

    def forward(self, x: Tensor) -> Tensor:
        _, score = self.score_coarse(x)
        return crop_to_input(self.upscore(score), self.offset, x.shape[-2:], "FCN32s")


class _Pool4Skip(FCNBase):
    """What FCN-16s and FCN-8s share: score_fr upsampled x2 (upscore2), fused with pool4's
    scores (score_pool4) at the offset the geometry gives."""

    def __init__(self, num_classes: int, name: str, **options) -> None:
        super().__init__(num_classes, **options)
        self.upscore2 = self.upsampling(2, self.learn_skip_upsampling)
        self.score_pool4 = self.score_layer(self.backbone.widths[3])
        self.align_pool4 = align(
            self.map_of_score_fr().then(layer_map(self.upscore2)),
            self.map_of_pool(4).then(layer_map(self.score_pool4)),
            f"{name}: upscore2 + score_pool4",
        )

    def score_pool4_fused(self, x: Tensor) -> tuple[list[Tensor], Tensor]:
        """Backbone features [pool1..pool5] and the fused scores (N, K, ~H/16, ~W/16)."""
        pooled, score = self.score_coarse(x)
        return pooled, fuse(self.upscore2(score), self.score_pool4(pooled[3]), self.align_pool4)


class FCN16s(_Pool4Skip):
    """x (N, C, H, W) -> logits (N, K, H, W): 1/32 scores x2, fused with pool4's, then x16."""

    def __init__(self, num_classes: int, **options) -> None:
        super().__init__(num_classes, "FCN16s", **options)
        self.upscore16 = self.upsampling(16, self.learn_final_upsampling)
        self.offset = output_offset(
            self.align_pool4.fused.then(layer_map(self.upscore16)), "FCN16s"
        )

    def forward(self, x: Tensor) -> Tensor:
        _, fuse4 = self.score_pool4_fused(x)
        return crop_to_input(self.upscore16(fuse4), self.offset, x.shape[-2:], "FCN16s")


class FCN8s(_Pool4Skip):
    """x (N, C, H, W) -> logits (N, K, H, W): fuses pool4's and pool3's scores, then x8."""

    def __init__(self, num_classes: int, **options) -> None:
        super().__init__(num_classes, "FCN8s", **options)
        self.upscore_pool4 = self.upsampling(2, self.learn_skip_upsampling)
        self.score_pool3 = self.score_layer(self.backbone.widths[2])
        self.upscore8 = self.upsampling(8, self.learn_final_upsampling)
        self.align_pool3 = align(
            self.align_pool4.fused.then(layer_map(self.upscore_pool4)),
            self.map_of_pool(3).then(layer_map(self.score_pool3)),
            "FCN8s: upscore_pool4 + score_pool3",
        )
        self.offset = output_offset(self.align_pool3.fused.then(layer_map(self.upscore8)), "FCN8s")

    def forward(self, x: Tensor) -> Tensor:
        pooled, fuse4 = self.score_pool4_fused(x)
        fuse3 = fuse(self.upscore_pool4(fuse4), self.score_pool3(pooled[2]), self.align_pool3)
        return crop_to_input(self.upscore8(fuse3), self.offset, x.shape[-2:], "FCN8s")
