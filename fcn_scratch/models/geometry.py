"""Coordinate geometry of layers: where each output pixel sits in the input image.

Every layer we use maps the coordinates of its output grid to the coordinates of its
input grid by a per-axis affine map ``x_in = scale * x_out + shift``, where ``x_out`` is
the centre of the output cell's window in input coordinates:

    conv / pool (kernel k, stride s, padding p, dilation d):
        x_in = s * x_out + (d * (k - 1) / 2 - p)
    transposed conv with the same arguments runs that map backwards:
        x_in = (x_out - (d * (k - 1) / 2 - p)) / s
    ReLU, Dropout: x_in = x_out

Composing the maps along a path from the image to a feature map says where each cell of
that map sits in the image (``scale`` is the path's total stride). Where two paths meet
(an upsampled score map and a skip), both maps must have the same scale, and the
difference of their shifts, in cells, is the crop offset that aligns them. At the end of
the net the map must be ``x = u + shift`` with ``shift <= 0``: cropping ``-shift`` pixels
gives logits aligned with the input. No offset is typed by hand; ceil_mode in pooling does
not change the map (windows still start at ``s * x_out - p``).

Fractions keep the arithmetic exact (shifts are often halves).
"""

from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction

from fcn_scratch.nn.activation import Dropout, ReLU
from fcn_scratch.nn.conv import Conv2d, ConvTranspose2d
from fcn_scratch.nn.module import Module, Sequential
from fcn_scratch.nn.normalization import BatchNorm2d
from fcn_scratch.nn.pooling import MaxPool2d

Pair = tuple[Fraction, Fraction]


@dataclass(frozen=True)
class CoordMap:
    """Per-axis affine map ``x_in = scale * x_out + shift``, axes (h, w)."""

    scale: Pair
    shift: Pair

    @staticmethod
    def identity() -> "CoordMap":
        one, zero = Fraction(1), Fraction(0)
        return CoordMap((one, one), (zero, zero))

    @staticmethod
    def window(kernel_size, stride, padding, dilation) -> "CoordMap":
        """The map of a conv or pool layer, all arguments (h, w) pairs of ints."""
        centre = tuple(
            Fraction(d * (k - 1), 2) - p
            for k, p, d in zip(kernel_size, padding, dilation, strict=True)
        )
        return CoordMap(tuple(Fraction(s) for s in stride), centre)

    def inverse(self) -> "CoordMap":
        """``x_out = (x_in - shift) / scale``: a transposed conv undoes its conv's map."""
        return CoordMap(
            tuple(1 / s for s in self.scale),
            tuple(-t / s for s, t in zip(self.scale, self.shift, strict=True)),
        )

    def then(self, layer: "CoordMap") -> "CoordMap":
        """Compose: ``self`` maps a grid to the image, ``layer`` maps the next grid to it.

        x = a * z + b and z = s * y + t give x = (a * s) * y + (a * t + b).
        """
        scale = tuple(a * s for a, s in zip(self.scale, layer.scale, strict=True))
        shift = tuple(
            a * t + b for a, t, b in zip(self.scale, layer.shift, self.shift, strict=True)
        )
        return CoordMap(scale, shift)

    def __str__(self) -> str:
        axes = [f"x = {s}*u + {t}" for s, t in zip(self.scale, self.shift, strict=True)]
        return f"CoordMap(h: {axes[0]}; w: {axes[1]})"


def layer_map(module: Module) -> CoordMap:
    """The coordinate map of one layer (or a Sequential, composed in order)."""
    if isinstance(module, Sequential):
        return chain_map(module)
    if isinstance(module, (Conv2d, MaxPool2d)):
        return CoordMap.window(module.kernel_size, module.stride, module.padding, module.dilation)
    if isinstance(module, ConvTranspose2d):
        conv = CoordMap.window(module.kernel_size, module.stride, module.padding, module.dilation)
        return conv.inverse()
    if isinstance(module, (ReLU, Dropout, BatchNorm2d)):
        return CoordMap.identity()
    raise TypeError(
        f"geometry: no coordinate map for {type(module).__name__}; expected Conv2d, "
        "ConvTranspose2d, MaxPool2d, ReLU, Dropout, BatchNorm2d or a Sequential of them"
    )


def chain_map(modules: Iterable[Module], start: CoordMap | None = None) -> CoordMap:
    """Compose the maps of ``modules`` applied in order, after ``start`` (the image)."""
    result = CoordMap.identity() if start is None else start
    for module in modules:
        result = result.then(layer_map(module))
    return result


@dataclass(frozen=True)
class Alignment:
    """Crop offsets that put two maps of one scale on a common grid.

    Cell ``i`` of ``a`` cropped at ``offset_a`` and cell ``i`` of ``b`` cropped at
    ``offset_b`` sit at the same image position; ``fused`` is the map of the result.
    """

    offset_a: tuple[int, int]
    offset_b: tuple[int, int]
    fused: CoordMap


def align(a: CoordMap, b: CoordMap, where: str = "align") -> Alignment:
    """Offsets that align ``a`` and ``b``: the one starting earlier in the image is cropped.

    Raises ValueError if the scales differ or the shifts differ by a fraction of a cell.
    """
    if a.scale != b.scale:
        raise ValueError(f"{where}: cannot fuse maps of different scales {a} and {b}")
    offset_a, offset_b, shift = [], [], []
    for s, ta, tb in zip(a.scale, a.shift, b.shift, strict=True):
        cells = (tb - ta) / s  # a's cell i+cells sits where b's cell i sits
        if cells.denominator != 1:
            raise ValueError(
                f"{where}: maps {a} and {b} are misaligned by {cells} cells, not a whole number"
            )
        offset_a.append(max(int(cells), 0))
        offset_b.append(max(-int(cells), 0))
        shift.append(max(ta, tb))
    return Alignment(tuple(offset_a), tuple(offset_b), CoordMap(a.scale, tuple(shift)))


def output_offset(m: CoordMap, where: str = "output") -> tuple[int, int]:
    """The crop offset that aligns a full-resolution map ``x = u + shift`` with the input.

    Raises ValueError unless the scale is 1 and ``-shift`` is a whole, non-negative number.
    """
    offset = []
    for s, t in zip(m.scale, m.shift, strict=True):
        if s != 1 or t.denominator != 1 or t > 0:
            raise ValueError(
                f"{where}: the score map {m} cannot be cropped to the input: expected scale 1 "
                "and a whole, non-positive shift"
            )
        offset.append(int(-t))
    return tuple(offset)
