"""Batch normalisation of convolution features: BatchNorm2d, as in torch.nn."""

import numpy as np

from fcn_scratch import functional as F
from fcn_scratch.autograd import Tensor
from fcn_scratch.nn.module import Module


class BatchNorm2d(Module):
    """y = weight * (x - mean) / sqrt(var + eps) + bias per channel: x, y (N, C, H, W).

    In training, mean and var are the batch's over (N, H, W), and the buffers
    ``running_mean`` / ``running_var`` (C,) follow them with ``momentum`` (None: their
    cumulative average); ``num_batches_tracked`` (an int64 0-d array) counts the batches.
    In eval mode the running statistics normalise. Buffers are saved in ``state_dict`` and
    moved by ``to``. ``affine=False``: no weight and bias.
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        dtype=np.float32,
    ) -> None:
        super().__init__()
        op = "BatchNorm2d"
        if not isinstance(num_features, (int, np.integer)) or num_features < 1:
            raise ValueError(f"{op}: num_features must be a positive int, got {num_features!r}")
        if momentum is not None and not 0 <= momentum <= 1:
            raise ValueError(f"{op}: momentum must be in [0, 1] or None, got {momentum!r}")
        if not eps > 0:
            raise ValueError(f"{op}: eps must be positive, got {eps!r}")
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise TypeError(f"{op}: dtype must be float32 or float64, got {dtype}")
        C = self.num_features = int(num_features)
        self.eps = float(eps)
        self.momentum = None if momentum is None else float(momentum)
        self.affine = bool(affine)
        self.weight = Tensor(np.ones(C, dtype), requires_grad=True) if affine else None  # (C,)
        self.bias = Tensor(np.zeros(C, dtype), requires_grad=True) if affine else None  # (C,)
        self.register_buffer("running_mean", np.zeros(C, dtype))  # (C,)
        self.register_buffer("running_var", np.ones(C, dtype))  # (C,)
        self.register_buffer("num_batches_tracked", np.zeros((), np.int64))

    def forward(self, x: Tensor) -> Tensor:
        if len(x.shape) != 4 or x.shape[1] != self.num_features:
            raise ValueError(
                f"BatchNorm2d: expected input (N, {self.num_features}, H, W), "
                f"got shape {tuple(x.shape)}"
            )
        momentum = self.momentum
        if momentum is None:  # cumulative moving average over the batches seen
            momentum = 1.0 / (int(self.num_batches_tracked) + 1) if self.training else 0.0
        y = F.batch_norm(
            x,
            self.running_mean,
            self.running_var,
            self.weight,
            self.bias,
            training=self.training,
            momentum=momentum,
            eps=self.eps,
        )
        if self.training:
            self.num_batches_tracked += 1
        return y

    def reset_running_stats(self) -> None:
        """Running mean 0, variance 1, no batches tracked (in place, on their device)."""
        self.running_mean[...] = 0
        self.running_var[...] = 1
        self.num_batches_tracked[...] = 0

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps:g}, momentum={self.momentum}, affine={self.affine}"
        )
