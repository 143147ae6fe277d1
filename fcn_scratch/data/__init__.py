"""Data: synthetic shapes, folders of images with masks (ours, or PASCAL VOC's layout),
batching, label colours."""

from fcn_scratch.data.base import IGNORE_INDEX, ArrayDataset, DataLoader
from fcn_scratch.data.folder import FolderDataset
from fcn_scratch.data.palette import colorize, overlay, voc_palette
from fcn_scratch.data.shapes import ShapesDataset
from fcn_scratch.data.voc import VOC_CLASSES, VOCCrops, VOCDataset, is_voc

__all__ = [
    "IGNORE_INDEX",
    "ArrayDataset",
    "DataLoader",
    "FolderDataset",
    "ShapesDataset",
    "VOC_CLASSES",
    "VOCCrops",
    "VOCDataset",
    "colorize",
    "is_voc",
    "overlay",
    "voc_palette",
]
