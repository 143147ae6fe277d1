"""Layers and models' building blocks, named and called as in torch.nn.

Parameters are ``fcn_scratch.Tensor`` objects with ``requires_grad=True``, held as module
attributes; see ``module.Module`` for how they are found, saved, loaded and moved.
"""

from fcn_scratch.nn import init
from fcn_scratch.nn.activation import Dropout, Flatten, ReLU
from fcn_scratch.nn.conv import Conv2d, ConvTranspose2d, Linear
from fcn_scratch.nn.module import LoadResult, Module, ModuleList, Sequential
from fcn_scratch.nn.normalization import BatchNorm2d
from fcn_scratch.nn.pooling import MaxPool2d, MaxUnpool2d
from fcn_scratch.nn.summary import Summary, summary

__all__ = [
    "BatchNorm2d",
    "Conv2d",
    "ConvTranspose2d",
    "Dropout",
    "Flatten",
    "Linear",
    "LoadResult",
    "MaxPool2d",
    "MaxUnpool2d",
    "Module",
    "ModuleList",
    "ReLU",
    "Sequential",
    "Summary",
    "init",
    "summary",
]
