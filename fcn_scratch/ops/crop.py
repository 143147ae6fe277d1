"""FCN's crop layer: cut a window out of the last two axes.

    x (..., H, W), offset (oy, ox), size (h, w) -> y (..., h, w) = x[..., oy:oy+h, ox:ox+w]

Its gradient pastes dy back into a zero array of x's shape.
"""

from fcn_scratch.arguments import pair
from fcn_scratch.device import array_module


def crop_forward(x, offset, size):
    """Returns (y, ctx)."""
    op = "crop"
    if x.ndim < 2:
        raise ValueError(f"crop: x must have at least 2 dimensions, got shape {tuple(x.shape)}")
    oy, ox = pair(op, "offset", offset, 0)
    h, w = pair(op, "size", size, 1)
    H, W = x.shape[-2:]
    if oy + h > H or ox + w > W:
        raise ValueError(
            f"crop: offset ({oy}, {ox}) + size ({h}, {w}) exceeds the input size ({H}, {W})"
        )
    return x[..., oy : oy + h, ox : ox + w], (x.shape, (oy, ox))


def crop_backward(dy, ctx):
    shape, (oy, ox) = ctx
    dx = array_module(dy).zeros(shape, dtype=dy.dtype)
    dx[..., oy : oy + dy.shape[-2], ox : ox + dy.shape[-1]] = dy
    return dx
