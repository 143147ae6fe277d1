"""Drawing synthetic shapes.

Every shape is a signed distance field ``d(x, y)`` (negative inside, about one unit per pixel
near the border), evaluated on the grid of pixel centres for all images of a batch at once:

    circle     d = |p| - r
    polygon    d = max_k <p, n_k> - a       (regular m-gon: m half-planes, apothem a)
    cross      d = min(box(L, w), box(w, L))   (union of two rectangles)

where ``p`` is the pixel centre in the shape's own frame (shifted to its centre, rotated by
``-angle``). Sizes are area-equivalent radii: every kind with radius ``r`` covers ``pi r^2``
pixels, so size does not give the class away. The label is the kind where ``d < 0``; the
colour is blended with coverage ``alpha = clip(0.5 - d, 0, 1)`` (one pixel of anti-aliasing).
Shapes are drawn in slot order, so a later shape occludes an earlier one.

Two versions draw the same pixels, bit for bit: ``draw_shapes_reference`` evaluates each
field on the whole grid of every image at once in NumPy (the definition, easy to read), and
``draw_shapes``, which the datasets use, is a Numba loop over only the pixels near each
shape (a shape covers a few percent of the image): about a tenth of the time, without the
GIL, so that the next epoch's images render beside training at little cost to it.
"""

from dataclasses import dataclass

import numpy as np

from fcn_scratch.kernels.cpu import kernel

KINDS = ("circle", "square", "triangle", "cross")

# Half-lengths of each kind for an area-equivalent radius of 1 (area pi).
_SQUARE_HALF = np.sqrt(np.pi) / 2  # (2s)^2 = pi
_TRIANGLE_APOTHEM = np.sqrt(np.pi / (3 * np.sqrt(3)))  # area 3*sqrt(3)*a^2 = pi
_CROSS_ARM = np.sqrt(9 * np.pi / 20)  # arm half-length L, half-width L/3: area 20 L^2 / 9 = pi
# The triangle's other two edge normals, at +-120 degrees from (0, 1).
_TRIANGLE_SIN = np.float32(np.sin(2 * np.pi / 3)), np.float32(np.sin(4 * np.pi / 3))
_TRIANGLE_COS = np.float32(np.cos(2 * np.pi / 3)), np.float32(np.cos(4 * np.pi / 3))


@dataclass(frozen=True)
class ShapeParams:
    """Shapes of N images, S slots each (drawn in slot order). Coordinates are in pixels.

    kind:   (N, S) int64, index into the dataset's kinds; -1 marks an empty slot
    cx, cy: (N, S) float, centre (x to the right, y down)
    radius: (N, S) float, area-equivalent radius
    angle:  (N, S) float, rotation in radians
    colour: (N, S, 3) float in [0, 1]
    shade:  (N, S, 2) float, colour gradient per radius along (x, y): a light texture
    """

    kind: np.ndarray
    cx: np.ndarray
    cy: np.ndarray
    radius: np.ndarray
    angle: np.ndarray
    colour: np.ndarray
    shade: np.ndarray


def signed_distance(kind: str, u: np.ndarray, v: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Signed distance to a shape of radius ``r: (B, 1, 1)`` at local coordinates
    ``u, v: (B, H, W)`` (the shape's centre at 0, unrotated)."""
    if kind == "circle":
        return np.sqrt(u * u + v * v) - r
    if kind == "square":
        return np.maximum(np.abs(u), np.abs(v)) - r * _SQUARE_HALF
    if kind == "triangle":
        d = v.copy()  # edge normal (0, 1); the other two at +-120 degrees
        for sin, cos in zip(_TRIANGLE_SIN, _TRIANGLE_COS):
            np.maximum(d, u * sin + v * cos, out=d)
        return d - r * _TRIANGLE_APOTHEM
    if kind == "cross":
        au, av = np.abs(u), np.abs(v)
        long_, half = r * _CROSS_ARM, r * (_CROSS_ARM / 3)
        return np.minimum(np.maximum(au - long_, av - half), np.maximum(au - half, av - long_))
    raise ValueError(f"signed_distance: kind must be one of {KINDS}, got {kind!r}")


def draw_shapes_reference(
    images: np.ndarray, labels: np.ndarray, params: ShapeParams, kinds: tuple[str, ...]
) -> None:
    """``draw_shapes`` in NumPy, one slot and kind at a time over the whole grid of every
    image that has it: the readable definition, which the compiled one equals bit for bit."""
    h, w = images.shape[2:]
    ys = (np.arange(h, dtype=np.float32) + 0.5)[None, :, None]  # (1, H, 1)
    xs = (np.arange(w, dtype=np.float32) + 0.5)[None, None, :]  # (1, 1, W)
    for s in range(params.kind.shape[1]):
        for k, name in enumerate(kinds):
            rows = np.flatnonzero(params.kind[:, s] == k)  # images whose slot s holds kind k
            if rows.size == 0:
                continue
            cx, cy, angle, r = (
                a[rows, s].astype(np.float32)[:, None, None]  # (B, 1, 1)
                for a in (params.cx, params.cy, params.angle, params.radius)
            )
            dx, dy = xs - cx, ys - cy  # (B, 1, W), (B, H, 1)
            cos, sin = np.cos(angle), np.sin(angle)
            u = dx * cos + dy * sin  # (B, H, W), rotated by -angle
            v = dy * cos - dx * sin  # (B, H, W)
            d = signed_distance(name, u, v, r)  # (B, H, W)
            alpha = np.clip(0.5 - d, 0.0, 1.0)[:, None]  # (B, 1, H, W)
            grad = params.shade[rows, s].astype(np.float32)  # (B, 2)
            shade = (dx * grad[:, 0, None, None] + dy * grad[:, 1, None, None]) / r  # (B, H, W)
            fill = params.colour[rows, s].astype(np.float32)[:, :, None, None] + shade[:, None]
            sub = images[rows]  # (B, 3, H, W), a copy (fancy indexing)
            fill -= sub
            fill *= alpha
            sub += fill
            images[rows] = sub
            lab = labels[rows]  # (B, H, W)
            lab[d < 0] = k + 1
            labels[rows] = lab


def draw_shapes(
    images: np.ndarray, labels: np.ndarray, params: ShapeParams, kinds: tuple[str, ...]
) -> None:
    """Draw ``params`` onto ``images: (N, 3, H, W)`` float32 and ``labels: (N, H, W)`` uint8,
    in place.

    Slot ``s`` of image ``n`` gets label ``kind + 1`` (0 stays background). No randomness
    here: the same parameters always give the same pixels. A Numba loop that visits only the
    pixels near each shape and releases the GIL; its arithmetic is that of
    ``draw_shapes_reference`` step for step, in the same precisions, so the two agree bit for
    bit (the sines and cosines come from NumPy).
    """
    n, h, w = labels.shape if labels.ndim == 3 else (None, None, None)
    if images.dtype != np.float32 or images.shape != (n, 3, h, w) or labels.dtype != np.uint8:
        raise ValueError(
            "draw_shapes: need images (N, 3, H, W) float32 and labels (N, H, W) uint8, got "
            f"images {images.shape} {images.dtype} and labels {labels.shape} {labels.dtype}"
        )
    angle = params.angle.astype(np.float32)
    geometry = np.stack(
        [
            params.cx.astype(np.float32),
            params.cy.astype(np.float32),
            params.radius.astype(np.float32),
            np.cos(angle),
            np.sin(angle),
        ],
        axis=-1,
    )  # (N, S, 5)
    _draw(
        images,
        labels,
        np.ascontiguousarray(params.kind),
        geometry,
        params.colour.astype(np.float32),
        params.shade.astype(np.float32),
        np.array([KINDS.index(name) for name in kinds], dtype=np.int64),
    )


@kernel
def _reach(code, r):
    """Distance from a shape's centre beyond which its signed distance is >= 1/2 (no
    coverage, no label), from a lower bound of each field: |p|/sqrt(2) for the square's and
    the cross's max-norms, |p|/2 for the triangle's three half-planes."""
    if code == 0:
        return r + 0.5
    if code == 1:
        return np.sqrt(2.0) * (r * _SQUARE_HALF + 0.5)
    if code == 2:
        return 2.0 * (r * _TRIANGLE_APOTHEM + 0.5)
    return np.sqrt(2.0) * (r * _CROSS_ARM + 0.5)


@kernel
def _draw(images, labels, kind, geometry, colour, shade, codes):
    """The loop of ``draw_shapes``: kind (N, S) (-1: empty slot), geometry (N, S, 5) float32
    (cx, cy, r, cos, sin), colour (N, S, 3), shade (N, S, 2), codes: index into KINDS of
    each of the dataset's kinds. Float32 where the reference computes in float32, float64
    where NumPy's promotion rules make it float64 (the radius times a float64 constant)."""
    N, _, H, W = images.shape
    for n in range(N):
        for s in range(kind.shape[1]):
            k = kind[n, s]
            if k < 0:
                continue
            code = codes[k]
            cx, cy, r, cos, sin = geometry[n, s]
            r64 = np.float64(r)
            reach = _reach(code, r64) + 1.0  # a pixel to spare for rounding
            y0, y1 = max(0, int(np.floor(cy - reach))), min(H, int(np.ceil(cy + reach)) + 1)
            x0, x1 = max(0, int(np.floor(cx - reach))), min(W, int(np.ceil(cx + reach)) + 1)
            g0, g1 = shade[n, s, 0], shade[n, s, 1]
            for i in range(y0, y1):
                dy = np.float32(i + 0.5) - cy
                for j in range(x0, x1):
                    dx = np.float32(j + 0.5) - cx
                    u = dx * cos + dy * sin  # rotated by -angle
                    v = dy * cos - dx * sin
                    if code == 0:  # float32 throughout, like the reference
                        d32 = np.sqrt(u * u + v * v) - r
                        d = np.float64(d32)
                        alpha32 = min(max(np.float32(0.5) - d32, np.float32(0.0)), np.float32(1.0))
                    else:
                        if code == 1:
                            d = np.float64(max(abs(u), abs(v))) - r64 * _SQUARE_HALF
                        elif code == 2:
                            t = max(v, u * _TRIANGLE_SIN[0] + v * _TRIANGLE_COS[0])
                            t = max(t, u * _TRIANGLE_SIN[1] + v * _TRIANGLE_COS[1])
                            d = np.float64(t) - r64 * _TRIANGLE_APOTHEM
                        else:
                            au, av = np.float64(abs(u)), np.float64(abs(v))
                            long_, half = r64 * _CROSS_ARM, r64 * (_CROSS_ARM / 3)
                            d = min(max(au - long_, av - half), max(au - half, av - long_))
                        alpha = min(max(0.5 - d, 0.0), 1.0)
                    tint = (dx * g0 + dy * g1) / r
                    for c in range(3):
                        fill = (colour[n, s, c] + tint) - images[n, c, i, j]
                        if code == 0:
                            fill = fill * alpha32
                        else:
                            fill = np.float32(np.float64(fill) * alpha)
                        images[n, c, i, j] = images[n, c, i, j] + fill
                    if d < 0:
                        labels[n, i, j] = k + 1


def smooth_noise(n: int, size: tuple[int, int], cells: int, rng: np.random.Generator) -> np.ndarray:
    """Low-frequency noise ``(N, 3, H, W)`` in about [-1, 1]: a random ``cells x cells`` grid
    per channel, bilinearly interpolated up to ``size`` (two small matrix products)."""
    h, w = size
    grid = rng.uniform(-1, 1, size=(n, 3, cells, cells)).astype(np.float32)
    return _interp_matrix(h, cells) @ grid @ _interp_matrix(w, cells).T  # (N, 3, H, W)


def _interp_matrix(out: int, cells: int) -> np.ndarray:
    """(out, cells) linear-interpolation weights from ``cells`` knots spread over ``out`` pixels."""
    pos = (np.arange(out) + 0.5) / out * (cells - 1)  # knot coordinate of each pixel
    lo = np.minimum(np.floor(pos).astype(int), cells - 2)
    frac = pos - lo
    m = np.zeros((out, cells), dtype=np.float32)
    m[np.arange(out), lo] = 1 - frac
    m[np.arange(out), lo + 1] = frac
    return m


def ignore_band(labels: np.ndarray, radius: int, ignore_index: int = 255) -> np.ndarray:
    """Mark pixels near a label border as ``ignore_index``, as PASCAL VOC does.

    A pixel is ignored when some pixel within Chebyshev distance ``radius`` has another label
    (the band is about ``2 * radius`` pixels wide, centred on each border; the image edge is
    not a border). labels: (N, H, W) -> new array, same shape and dtype.
    """
    if radius <= 0:
        return labels.copy()
    lo = _window(labels, radius, np.minimum)
    hi = _window(labels, radius, np.maximum)
    out = labels.copy()
    out[lo != hi] = ignore_index
    return out


def _window(a: np.ndarray, radius: int, reduce) -> np.ndarray:
    """Min or max over a (2r+1) x (2r+1) window of ``a: (N, H, W)`` (separable, edge padded)."""
    _, h, w = a.shape
    span = 2 * radius + 1
    p = np.pad(a, ((0, 0), (radius, radius), (0, 0)), mode="edge")
    rows = p[:, :h].copy()
    for i in range(1, span):
        reduce(rows, p[:, i : i + h], out=rows)
    p = np.pad(rows, ((0, 0), (0, 0), (radius, radius)), mode="edge")
    out = p[:, :, :w].copy()
    for i in range(1, span):
        reduce(out, p[:, :, i : i + w], out=out)
    return out
