"""PyTorch twins of our models, with our weights copied in: the oracle for parity checks.

Needs torch (``pip install 'fcn-scratch[torch]'``); nothing else in the package imports
this module. ``torch_model(model)`` builds a ``torch.nn.Module`` with the same layers under
the same names (so ``named_parameters`` keys match ours), the same frozen parameters, and a
forward written with torch's own ops. Crop offsets are taken from our model: what this
checks is the arithmetic of every layer, their wiring, and the gradients.
"""

import numpy as np
import torch

from fcn_scratch import nn
from fcn_scratch.models.fcn import FCN8s, FCN16s, FCN32s, FCNBase
from fcn_scratch.models.unpool import UnpoolNet


def _parameter(t, requires_grad: bool) -> torch.nn.Parameter:
    return torch.nn.Parameter(
        torch.from_numpy(np.array(t.numpy(), copy=True)), requires_grad=requires_grad
    )


def torch_layer(layer: nn.Module) -> torch.nn.Module:
    """The torch equivalent of one of our layers (or containers), weights copied."""
    if isinstance(layer, nn.Conv2d):
        out = torch.nn.Conv2d(
            layer.in_channels,
            layer.out_channels,
            layer.kernel_size,
            layer.stride,
            layer.padding,
            layer.dilation,
            bias=layer.bias is not None,
        )
    elif isinstance(layer, nn.ConvTranspose2d):
        out = torch.nn.ConvTranspose2d(
            layer.in_channels,
            layer.out_channels,
            layer.kernel_size,
            layer.stride,
            layer.padding,
            layer.output_padding,
            bias=layer.bias is not None,
            dilation=layer.dilation,
        )
    elif isinstance(layer, nn.MaxPool2d):
        return torch.nn.MaxPool2d(
            layer.kernel_size,
            layer.stride,
            layer.padding,
            layer.dilation,
            return_indices=layer.return_indices,
            ceil_mode=layer.ceil_mode,
        )
    elif isinstance(layer, nn.BatchNorm2d):
        dtype = torch.float64 if layer.running_mean.dtype == np.float64 else torch.float32
        out = torch.nn.BatchNorm2d(layer.num_features, layer.eps, layer.momentum, layer.affine)
        out = out.to(dtype)
        for name, value in layer.named_buffers():
            getattr(out, name).copy_(torch.from_numpy(np.array(value)))
        if not layer.affine:
            return out
    elif isinstance(layer, nn.ReLU):
        return torch.nn.ReLU()
    elif isinstance(layer, nn.MaxUnpool2d):
        return torch.nn.MaxUnpool2d(layer.kernel_size, layer.stride, layer.padding)
    elif isinstance(layer, nn.Dropout):
        return torch.nn.Dropout(layer.p)
    elif isinstance(layer, nn.Sequential):
        return torch.nn.Sequential(*(torch_layer(child) for child in layer))
    else:
        holder = torch.nn.Module()
        for name, child in layer.named_children():
            holder.add_module(name, torch_layer(child))
        return holder
    out.weight = _parameter(layer.weight, layer.weight.requires_grad)
    if layer.bias is not None:
        out.bias = _parameter(layer.bias, layer.bias.requires_grad)
    return out.to(torch.float64 if layer.weight.dtype == np.float64 else torch.float32)


class TorchFCN(torch.nn.Module):
    """FCN-32s / 16s / 8s in torch, mirroring ``model`` layer for layer."""

    def __init__(self, model: FCNBase) -> None:
        super().__init__()
        if not isinstance(model, (FCN32s, FCN16s, FCN8s)):
            raise TypeError(f"torch_model: expected FCN32s, FCN16s or FCN8s, got {type(model)}")
        for name, child in model.named_children():
            self.add_module(name, torch_layer(child))
        self.kind = type(model).__name__
        self.offset = model.offset
        self.offsets = {
            name: (a.offset_a, a.offset_b)
            for name in ("align_pool4", "align_pool3")
            if (a := getattr(model, name, None)) is not None
        }

    def _fuse(self, a: torch.Tensor, b: torch.Tensor, name: str) -> torch.Tensor:
        (ay, ax), (by, bx) = self.offsets[name]
        h = min(a.shape[-2] - ay, b.shape[-2] - by)
        w = min(a.shape[-1] - ax, b.shape[-1] - bx)
        return a[..., ay : ay + h, ax : ax + w] + b[..., by : by + h, bx : bx + w]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[-2:]
        pooled, h = [], x
        for i in range(1, 6):
            h = getattr(self.backbone, f"pool{i}")(getattr(self.backbone, f"conv{i}")(h))
            pooled.append(h)
        h = self.drop6(self.relu6(self.fc6(h)))
        score = self.score_fr(self.drop7(self.relu7(self.fc7(h))))
        if self.kind == "FCN32s":
            up = self.upscore(score)
        elif self.kind == "FCN16s":
            up = self.upscore16(
                self._fuse(self.upscore2(score), self.score_pool4(pooled[3]), "align_pool4")
            )
        else:
            fuse4 = self._fuse(self.upscore2(score), self.score_pool4(pooled[3]), "align_pool4")
            fuse3 = self._fuse(
                self.upscore_pool4(fuse4), self.score_pool3(pooled[2]), "align_pool3"
            )
            up = self.upscore8(fuse3)
        oy, ox = self.offset
        return up[..., oy : oy + H, ox : ox + W]


class TorchUnpoolNet(torch.nn.Module):
    """UnpoolNet in torch, mirroring ``model`` layer for layer."""

    def __init__(self, model: UnpoolNet) -> None:
        super().__init__()
        for name, child in model.named_children():
            self.add_module(name, torch_layer(child))
        self.num_stages = model.encoder.num_stages

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        recorded = []
        for i in range(1, self.num_stages + 1):
            x = getattr(self.encoder, f"conv{i}")(x)
            size = x.shape[-2:]
            x, indices = getattr(self.encoder, f"pool{i}")(x)
            recorded.append((indices, size))
        x = self.fc7(self.fc6(x))
        for i in range(self.num_stages, 0, -1):
            indices, size = recorded[i - 1]
            x = getattr(self, f"unpool{i}")(x, indices, output_size=size)
            x = getattr(self, f"dec{i}")(x)
        return self.score(x)


def torch_model(model: FCNBase | UnpoolNet) -> torch.nn.Module:
    """A torch copy of one of our models (same parameter names, values and frozen flags)."""
    if isinstance(model, UnpoolNet):
        return TorchUnpoolNet(model)
    return TorchFCN(model)
