"""Data: synthetic shapes, folders of user images with masks, batching, label colours."""

from fcn_scratch.data.base import IGNORE_INDEX, ArrayDataset, DataLoader
from fcn_scratch.data.folder import FolderDataset
from fcn_scratch.data.palette import colorize, overlay, voc_palette
from fcn_scratch.data.shapes import ShapesDataset

__all__ = [
    "IGNORE_INDEX",
    "ArrayDataset",
    "DataLoader",
    "FolderDataset",
    "ShapesDataset",
    "colorize",
    "overlay",
    "voc_palette",
]
