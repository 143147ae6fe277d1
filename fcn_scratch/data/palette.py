"""Colours for label maps: the PASCAL VOC palette, colouring and overlays.

VOC's palette spreads the bits of the class id over the high bits of R, G and B (class 1 is
dark red, 2 dark green, 3 olive, ...); the ignore label 255 comes out cream (224, 224, 192).
"""

import numpy as np


def voc_palette(n: int = 256) -> np.ndarray:
    """(n, 3) uint8 colours: row ``c`` is the colour of class ``c``."""
    ids = np.arange(n)
    colours = np.zeros((n, 3), dtype=np.int64)
    for shift in range(8):  # bit triple ``shift`` of the id goes to bit ``7 - shift`` of R, G, B
        for channel in range(3):
            bit = (ids >> (3 * shift + channel)) & 1
            colours[:, channel] |= bit << (7 - shift)
    return colours.astype(np.uint8)


def colorize(label: np.ndarray, palette: np.ndarray | None = None) -> np.ndarray:
    """Colour a label map: ``label: (..., H, W)`` int -> ``(..., H, W, 3)`` uint8.

    Ids must lie in ``[0, len(palette))``; the default palette covers 0 to 255.
    """
    palette = voc_palette() if palette is None else np.asarray(palette, dtype=np.uint8)
    label = np.asarray(label)
    if label.size and (label.min() < 0 or label.max() >= len(palette)):
        raise ValueError(
            f"colorize: label ids must lie in [0, {len(palette)}), got range "
            f"[{label.min()}, {label.max()}]"
        )
    return palette[label]


def to_hwc(image: np.ndarray) -> np.ndarray:
    """An image ``(3, H, W)`` float in [0, 1] -> ``(H, W, 3)`` float for display (clipped)."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"to_hwc: image must be (3, H, W), got shape {image.shape}")
    return np.clip(image.transpose(1, 2, 0), 0.0, 1.0)


def overlay(image: np.ndarray, label: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend coloured labels over an image: ``image: (3, H, W)`` float in [0, 1],
    ``label: (H, W)`` int -> ``(H, W, 3)`` uint8. Background (0) stays uncoloured."""
    rgb = to_hwc(image)  # (H, W, 3)
    if label.shape != rgb.shape[:2]:
        raise ValueError(
            f"overlay: label must be (H, W) = {rgb.shape[:2]} to match the image, got {label.shape}"
        )
    colours = colorize(label).astype(np.float64) / 255.0  # (H, W, 3)
    weight = np.where(label[..., None] == 0, 0.0, alpha)  # (H, W, 1)
    out = (1 - weight) * rgb + weight * colours
    return np.round(out * 255).astype(np.uint8)
