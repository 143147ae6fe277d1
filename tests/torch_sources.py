"""The two outside sources of weights, written in torch as their authors wrote them.

``PortFCN(model, ...)`` follows the PyTorch port of the paper's FCN-32s/16s/8s (its layer
names, conv1_1 padded by 100, the published crop offsets typed in); ``torchvision_vgg16``
returns a state dict named and shaped like torchvision's VGG16. Widths can be scaled down
(``widths``, ``fc_width``) so that tests stay small; ``device="meta"`` allocates nothing.
Needs torch; only tests import this module.
"""

import torch
from torch import nn

VGG16_WIDTHS = (64, 128, 256, 512, 512)
CONVS = (2, 2, 3, 3, 3)
# Published crops: FCN-32s 19; FCN-16s 5 (score_pool4), 27; FCN-8s 5, 9 (score_pool3), 31.
CROPS = {"fcn32s": {"out": 19}, "fcn16s": {"pool4": 5, "out": 27}}
CROPS["fcn8s"] = {"pool4": 5, "pool3": 9, "out": 31}


class PortFCN(nn.Module):
    def __init__(self, model, num_classes=21, widths=VGG16_WIDTHS, fc_width=4096, device=None):
        super().__init__()
        self.model, self.crops = model, CROPS[model]
        channels = 3
        for i, (width, count) in enumerate(zip(widths, CONVS), 1):
            for j in range(1, count + 1):
                pad = 100 if (i, j) == (1, 1) else 1
                setattr(
                    self, f"conv{i}_{j}", nn.Conv2d(channels, width, 3, padding=pad, device=device)
                )
                channels = width
        self.fc6 = nn.Conv2d(widths[4], fc_width, 7, device=device)
        self.fc7 = nn.Conv2d(fc_width, fc_width, 1, device=device)
        self.score_fr = nn.Conv2d(fc_width, num_classes, 1, device=device)
        k = num_classes

        def up(factor):
            return nn.ConvTranspose2d(k, k, 2 * factor, stride=factor, bias=False, device=device)

        if model == "fcn32s":
            self.upscore = up(32)
        else:
            self.score_pool4 = nn.Conv2d(widths[3], k, 1, device=device)
            self.upscore2 = up(2)
        if model == "fcn16s":
            self.upscore16 = up(16)
        if model == "fcn8s":
            self.score_pool3 = nn.Conv2d(widths[2], k, 1, device=device)
            self.upscore_pool4 = up(2)
            self.upscore8 = up(8)

    def forward(self, x):
        h, pools = x, []
        for i, count in enumerate(CONVS, 1):
            for j in range(1, count + 1):
                h = torch.relu(getattr(self, f"conv{i}_{j}")(h))
            h = nn.functional.max_pool2d(h, 2, 2, ceil_mode=True)
            pools.append(h)
        h = torch.relu(self.fc7(torch.relu(self.fc6(h))))  # dropout: eval mode
        h = self.score_fr(h)
        c = self.crops
        if self.model == "fcn32s":
            h = self.upscore(h)
        else:
            h = self.upscore2(h)
            h = h + _crop(self.score_pool4(pools[3]), c["pool4"], h)
            if self.model == "fcn16s":
                h = self.upscore16(h)
            else:
                h = self.upscore_pool4(h)
                h = h + _crop(self.score_pool3(pools[2]), c["pool3"], h)
                h = self.upscore8(h)
        return h[:, :, c["out"] : c["out"] + x.shape[2], c["out"] : c["out"] + x.shape[3]]


def _crop(h, offset, like):
    return h[:, :, offset : offset + like.shape[2], offset : offset + like.shape[3]]


class TorchvisionVGG16(nn.Module):
    """torchvision.models.vgg16's layout: features (convs, ReLUs, pools), classifier."""

    def __init__(self, widths=VGG16_WIDTHS, fc_width=4096, device=None):
        super().__init__()
        layers, channels = [], 3
        for width, count in zip(widths, CONVS):
            for _ in range(count):
                layers += [nn.Conv2d(channels, width, 3, padding=1, device=device), nn.ReLU()]
                channels = width
            layers.append(nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Linear(widths[4] * 49, fc_width, device=device),
            nn.ReLU(),
            nn.Dropout(),
            nn.Linear(fc_width, fc_width, device=device),
            nn.ReLU(),
            nn.Dropout(),
            nn.Linear(fc_width, 1000, device=device),
        )


def randomise(module, seed=0, dtype=torch.float32):
    """Random weights of ``dtype`` everywhere (upsampling included), scaled to keep
    activations of order one through many layers."""
    g = torch.Generator().manual_seed(seed)
    module.to(dtype)
    with torch.no_grad():
        for name, p in module.named_parameters():
            fan = p[0].numel() if p.ndim > 1 else 1
            p.copy_(torch.randn(p.shape, generator=g, dtype=dtype) * (2.0 / fan) ** 0.5)
            if name.startswith("upscore"):
                p.abs_()
    return module.eval()
