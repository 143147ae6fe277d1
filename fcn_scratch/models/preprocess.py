"""The input preprocessing a model's weights expect, applied inside the model.

Images enter every model of ours as RGB in [0, 1]. Weights trained elsewhere expect
something else, and converted checkpoints record what (``preprocess`` in the model options):

    the paper's Caffe FCNs   BGR, 0-255, per-channel means (B, G, R) subtracted  CAFFE_BGR
    torchvision's VGG16      RGB, 0-1, ImageNet mean subtracted, divided by std  TORCHVISION

``Preprocess(channels, scale, mean, std)`` computes, for output channel c,

    y[c] = (scale * x[source(c)] - mean[c]) / std[c]     x: (N, 3, H, W) -> y: (N, 3, H, W)

with source(c) = c for "RGB" and 2 - c for "BGR"; mean and std are in the output's channel
order. It is a fixed 1x1 convolution (weight (3, 3, 1, 1), one non-zero per row), so
gradients reach the input as through any layer, and it holds no parameters: nothing to
train, nothing in the state dict. Because it sits inside the model, ``predict``,
``evaluate`` and training all apply it without knowing it is there.
"""

from collections.abc import Sequence

import numpy as np

from fcn_scratch import functional as F
from fcn_scratch.autograd import Tensor
from fcn_scratch.device import to_device
from fcn_scratch.nn import Module

CAFFE_BGR = {
    "channels": "BGR",
    "scale": 255.0,
    "mean": [104.00698793, 116.66876762, 122.67891434],
    "std": [1.0, 1.0, 1.0],
}
TORCHVISION = {
    "channels": "RGB",
    "scale": 1.0,
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
}
KEYS = ("channels", "scale", "mean", "std")


class Preprocess(Module):
    """x (N, 3, H, W) RGB in [0, 1] -> (N, 3, H, W) as the weights expect (module docstring)."""

    def __init__(
        self,
        channels: str = "RGB",
        scale: float = 1.0,
        mean: Sequence[float] = (0.0, 0.0, 0.0),
        std: Sequence[float] = (1.0, 1.0, 1.0),
    ) -> None:
        super().__init__()
        if channels not in ("RGB", "BGR"):
            raise ValueError(f"Preprocess: channels must be 'RGB' or 'BGR', got {channels!r}")
        mean, std = np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
        if mean.shape != (3,) or std.shape != (3,) or not (std > 0).all() or not scale > 0:
            raise ValueError(
                f"Preprocess: expected a positive scale and 3 means and 3 positive stds, got "
                f"scale {scale!r}, mean {mean.tolist()}, std {std.tolist()}"
            )
        self.channels, self.scale = channels, float(scale)
        self.mean, self.std = mean, std
        source = [0, 1, 2] if channels == "RGB" else [2, 1, 0]
        weight = np.zeros((3, 3, 1, 1))
        weight[[0, 1, 2], source, 0, 0] = self.scale / std
        self._weight, self._bias = weight, -mean / std  # (3, 3, 1, 1), (3,) float64

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"Preprocess: expected (N, 3, H, W) RGB images, got {x.shape}")
        w = Tensor(to_device(self._weight.astype(x.dtype), x.device))
        b = Tensor(to_device(self._bias.astype(x.dtype), x.device))
        return F.conv2d(x, w, b)  # (N, 3, H, W)

    def options(self) -> dict:
        """The JSON-able arguments that rebuild this layer (what checkpoints record)."""
        return {
            "channels": self.channels,
            "scale": self.scale,
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
        }

    def extra_repr(self) -> str:
        return (
            f"{self.channels}, scale={self.scale:g}, mean={self.mean.tolist()}, "
            f"std={self.std.tolist()}"
        )


def make_preprocess(options: dict | None) -> Preprocess | None:
    """A Preprocess from its options dict (None: the model takes RGB in [0, 1] as is)."""
    if options is None:
        return None
    if not isinstance(options, dict) or set(options) - set(KEYS):
        raise ValueError(
            f"preprocess: expected a dict with keys among {list(KEYS)}, got {options!r}"
        )
    return Preprocess(**options)
