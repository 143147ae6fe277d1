"""Max pooling (optionally returning the argmax positions) and max unpooling.

MaxPool2d with ``return_indices=True`` returns ``(y, indices)``: int64 flat positions
``h*W + w`` of each window's maximum in its input plane (PyTorch's convention).
MaxUnpool2d puts values back at those positions and zeros elsewhere: the upsampling of
DeconvNet/SegNet, which keeps the "where" that pooling throws away.
"""

from fcn_scratch import functional as F
from fcn_scratch.arguments import pair
from fcn_scratch.autograd import Tensor
from fcn_scratch.nn.module import Module


class MaxPool2d(Module):
    """x (N, C, H, W) -> y (N, C, OH, OW), OH = floor_or_ceil((H + 2P - D*(K-1) - 1)/S) + 1.

    stride defaults to kernel_size. With ceil_mode the last partial window is kept.
    """

    def __init__(
        self,
        kernel_size,
        stride=None,
        padding=0,
        dilation=1,
        return_indices: bool = False,
        ceil_mode: bool = False,
    ) -> None:
        super().__init__()
        op = "MaxPool2d"
        self.kernel_size = pair(op, "kernel_size", kernel_size, 1)
        self.stride = self.kernel_size if stride is None else pair(op, "stride", stride, 1)
        self.padding = pair(op, "padding", padding, 0)
        self.dilation = pair(op, "dilation", dilation, 1)
        self.return_indices = bool(return_indices)
        self.ceil_mode = bool(ceil_mode)

    def forward(self, x: Tensor):
        return F.max_pool2d(
            x,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            ceil_mode=self.ceil_mode,
            return_indices=self.return_indices,
        )

    def extra_repr(self) -> str:
        text = f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        if self.ceil_mode:
            text += ", ceil_mode=True"
        if self.return_indices:
            text += ", return_indices=True"
        return text


class MaxUnpool2d(Module):
    """x (N, C, H, W), indices (N, C, H, W) -> y (N, C, OH, OW), zeros off the indices.

    OH = (H-1)*S - 2P + K unless ``output_size`` (the pooled input's (H, W), or its full
    shape) is given to forward, which is how odd sizes are recovered exactly.
    """

    def __init__(self, kernel_size, stride=None, padding=0) -> None:
        super().__init__()
        op = "MaxUnpool2d"
        self.kernel_size = pair(op, "kernel_size", kernel_size, 1)
        self.stride = self.kernel_size if stride is None else pair(op, "stride", stride, 1)
        self.padding = pair(op, "padding", padding, 0)

    def forward(self, x: Tensor, indices, output_size=None) -> Tensor:
        return F.max_unpool2d(
            x, indices, self.kernel_size, self.stride, self.padding, output_size=output_size
        )

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
