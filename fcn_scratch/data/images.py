"""Reading images and label masks, and writing masks, with Pillow.

Pillow's decompression-bomb limit stays on (``Image.MAX_IMAGE_PIXELS``, about 89 M pixels
warns and twice that is refused), so a small file that claims huge dimensions is refused
before it is decoded. ``image_size`` reads only the header, so callers can check what a
forward pass would cost before anything large is allocated.

    read_image(path)   -> (3, H, W) float32 RGB in [0, 1] (grey repeated, alpha dropped)
    read_mask(path)    -> (H, W) uint8 class ids (a mode "L" or "P" PNG: its pixel values)
    write_mask(path, label)  a palette PNG (mode "P", VOC colours) whose values are the ids
"""

import warnings

import numpy as np
from PIL import Image

from fcn_scratch.data.palette import voc_palette


def _open(path: str, what: str) -> Image.Image:
    """Image.open with the bomb warning as an error and a message naming the file."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ValueError(
            f"{what} {path}: refused, too many pixels to decode safely: {err}"
        ) from err
    except (OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"{what} {path}: cannot be read as an image: {err}") from err


def image_size(path: str) -> tuple[int, int]:
    """(H, W) of an image file, from its header (nothing is decoded)."""
    with _open(path, "image") as im:
        return im.height, im.width


def read_image(path: str) -> np.ndarray:
    """An image file as (3, H, W) float32 RGB in [0, 1]."""
    with _open(path, "image") as im:
        try:
            rgb = np.asarray(im.convert("RGB"))  # (H, W, 3) uint8
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            raise ValueError(f"image {path}: cannot be decoded: {err}") from err
    return np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32) / np.float32(255)


def read_mask(path: str) -> np.ndarray:
    """A mask PNG as (H, W) uint8 class ids: mode "L" or "P" (palette indices are the ids)."""
    with _open(path, "mask") as im:
        if im.mode not in ("L", "P"):
            raise ValueError(
                f"mask {path} has mode {im.mode!r}; expected a single-channel PNG (mode 'L' "
                "or 'P') whose pixel values are class ids"
            )
        return np.array(im, dtype=np.uint8)


def write_mask(path: str, label: np.ndarray) -> None:
    """Save label (H, W) ints in [0, 256) as a palette PNG in VOC's colours."""
    label = np.asarray(label)
    if label.ndim != 2 or (label.size and (label.min() < 0 or label.max() > 255)):
        raise ValueError(f"write_mask: expected (H, W) class ids in [0, 256), got {label.shape}")
    h, w = label.shape
    im = Image.frombytes("P", (w, h), np.ascontiguousarray(label, dtype=np.uint8).tobytes())
    im.putpalette(voc_palette().ravel().tolist())
    im.save(path, format="PNG")
