"""Layers without weights: ReLU, Dropout, Flatten."""

import numpy as np

from fcn_scratch import functional as F
from fcn_scratch.autograd import Tensor
from fcn_scratch.nn.module import Module


class ReLU(Module):
    """y = max(x, 0), elementwise."""

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x)


class Dropout(Module):
    """Zero each element with probability p and scale the rest by 1/(1-p), in training only.

    ``generator``: a numpy Generator for the masks; None uses the library's global one
    (``fcn_scratch.random``), which checkpoints save and restore.
    """

    def __init__(self, p: float = 0.5, generator: np.random.Generator | None = None) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1), got {p}")
        self.p = float(p)
        self.generator = generator

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        return F.dropout(x, self.p, training=True, generator=self.generator)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Flatten(Module):
    """x (N, C, H, W) -> (N, C*H*W): the step before a classifier's fully connected layers."""

    def forward(self, x: Tensor) -> Tensor:
        n = x.shape[0]
        return x.reshape((n, int(np.prod(x.shape[1:]))))
