"""How much memory an inference forward pass needs, before running it.

A forward pass in ``inference`` mode frees each layer's input once the next layer has run,
so its peak is one convolution at work (its input, its im2col columns, its output) plus
what is kept for later (the pooled features the skips and the decoder read) plus the
full-resolution scores at the end. ``forward_bytes`` adds these up from the layer shapes
alone, for one image; ``check_forward_fits`` refuses an image whose estimate passes a
budget, naming both, so that a huge photo ends in a clear error instead of the kernel's
out-of-memory killer. The estimate is checked against measured allocations in the tests.
"""

import numpy as np

from fcn_scratch.nn import Conv2d, ConvTranspose2d, MaxPool2d, Module
from fcn_scratch.ops.shapes import conv_out_size

GIB = 2**30
DEFAULT_BUDGET_GIB = 4.0


def _backbone(model: Module) -> Module:
    for name in ("backbone", "encoder"):
        if hasattr(model, name):
            return getattr(model, name)
    raise TypeError(f"forward_bytes: {type(model).__name__} has no backbone or encoder")


def forward_bytes(model: Module, size: tuple[int, int]) -> int:
    """Estimated peak bytes of ``model``'s inference forward pass on one (3, H, W) image."""
    itemsize = np.dtype(next(model.parameters()).dtype).itemsize
    h, w = size
    k = model.num_classes
    kept, c_out, before_pool = 3 * h * w, 3, []  # the image itself stays alive
    peak_layer = 0
    for layer in _backbone(model).modules():
        if isinstance(layer, Conv2d):
            cost, (h, w) = _conv_cost(layer, (h, w))
            peak_layer, c_out = max(peak_layer, cost), layer.out_channels
        elif isinstance(layer, MaxPool2d):
            before_pool.append((h, w))
            h, w = conv_out_size(
                "forward_bytes", (h, w), *_window(layer), ceil_mode=layer.ceil_mode
            )
            kept += 3 * c_out * h * w  # the pooled features and their int64 argmax
    for i, grid in enumerate(before_pool, 1):  # an unpooling decoder's stages, if any
        for layer in getattr(model, f"dec{i}", Module()).modules():
            if isinstance(layer, Conv2d):
                peak_layer = max(
                    peak_layer, _conv_cost(layer, grid)[0] + layer.in_channels * grid[0] * grid[1]
                )
    scores = 3 * k * size[0] * size[1]  # upsampled, cropped, and argmax of the logits
    ups = [m for m in model.modules() if isinstance(m, ConvTranspose2d)]
    if ups:  # the last upsampling's columns: K * KH * KW per input cell
        (kh, kw), (sh, sw) = ups[-1].kernel_size, ups[-1].stride
        scores += k * kh * kw * (size[0] // sh + 2) * (size[1] // sw + 2)
    return int(itemsize * (peak_layer + kept + scores))


def _conv_cost(layer: Conv2d, size: tuple[int, int]) -> tuple[int, tuple[int, int]]:
    """(elements of input + im2col columns + output, output (OH, OW)) of one convolution."""
    oh, ow = conv_out_size("forward_bytes", size, *_window(layer))
    kh, kw = layer.kernel_size
    c_in, c_out = layer.in_channels, layer.out_channels
    return c_in * size[0] * size[1] + c_in * kh * kw * oh * ow + c_out * oh * ow, (oh, ow)


def _window(layer) -> tuple:
    return layer.kernel_size, layer.stride, layer.padding, layer.dilation


def check_forward_fits(model: Module, size: tuple[int, int], budget_gib: float, what: str) -> None:
    """ValueError naming ``what`` (e.g. the image file), its size, the estimate and the
    budget if one forward pass on it needs more than ``budget_gib`` GiB."""
    need = forward_bytes(model, size)
    if need > budget_gib * GIB:
        raise ValueError(
            f"{what} is {size[0]}x{size[1]} (HxW): segmenting it would need about "
            f"{need / GIB:.1f} GiB, more than the memory budget of {budget_gib:g} GiB "
            "(--max-memory); use a smaller image or raise the budget"
        )
