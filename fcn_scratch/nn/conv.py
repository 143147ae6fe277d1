"""Layers with weights: Conv2d, ConvTranspose2d, and Linear (a 1x1 convolution).

Constructor names and arguments follow torch.nn; in addition every layer takes ``dtype``
(float32 or float64), ``rng`` (a numpy Generator or an int seed: see ``init.as_generator``)
and ``init``, the weight initialiser. Biases start at zero.
"""

import numpy as np

from fcn_scratch import functional as F
from fcn_scratch.arguments import pair
from fcn_scratch.autograd import Tensor
from fcn_scratch.nn import init as initialisers
from fcn_scratch.nn.module import Module

CONV_INITS = ("kaiming_normal", "kaiming_uniform", "zeros")
TRANSPOSED_INITS = (*CONV_INITS, "bilinear")


def _check_dtype(op: str, dtype) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"{op}: dtype must be float32 or float64, got {dtype}")
    return dtype


def _positive(op: str, name: str, value) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{op}: {name} must be a positive int, got {value!r}")
    return int(value)


def _initial_weight(op: str, init: str, shape, fan: int, rng, dtype) -> np.ndarray:
    if init == "kaiming_normal":
        return initialisers.kaiming_normal(shape, rng, fan=fan, dtype=dtype)
    if init == "kaiming_uniform":
        return initialisers.kaiming_uniform(shape, rng, fan=fan, dtype=dtype)
    if init == "zeros":
        return initialisers.zeros(shape, dtype=dtype)
    raise ValueError(f"{op}: init must be one of {CONV_INITS}, got {init!r}")


def _zero_bias(n: int, bias: bool, dtype, requires_grad: bool = True) -> Tensor | None:
    """A zero bias of shape (n,), or None when ``bias`` is False."""
    return Tensor(initialisers.zeros((n,), dtype), requires_grad=requires_grad) if bias else None


class _Conv(Module):
    """What Conv2d and ConvTranspose2d share: channels and window checked, and their repr."""

    def __init__(
        self, op: str, in_channels: int, out_channels: int, kernel_size, stride, padding, dilation
    ) -> None:
        super().__init__()
        self.in_channels = _positive(op, "in_channels", in_channels)
        self.out_channels = _positive(op, "out_channels", out_channels)
        self.kernel_size = pair(op, "kernel_size", kernel_size, 1)
        self.stride = pair(op, "stride", stride, 1)
        self.padding = pair(op, "padding", padding, 0)
        self.dilation = pair(op, "dilation", dilation, 1)

    def extra_repr(self, *extras: str) -> str:
        """Channels, kernel, stride and padding, then ``extras``, dilation and bias when not
        the default."""
        parts = [
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}",
            f"stride={self.stride}",
            f"padding={self.padding}",
            *extras,
        ]
        if self.dilation != (1, 1):
            parts.append(f"dilation={self.dilation}")
        if self.bias is None:
            parts.append("bias=False")
        return ", ".join(parts)


class Conv2d(_Conv):
    """y = conv2d(x, weight, bias): x (N, C_in, H, W) -> y (N, C_out, OH, OW).

    weight: (C_out, C_in, KH, KW), bias: (C_out,); OH = (H + 2P - D*(K-1) - 1) // S + 1.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        bias: bool = True,
        dtype=np.float32,
        rng: initialisers.RngLike = None,
        init: str = "kaiming_normal",
    ) -> None:
        op = "Conv2d"
        super().__init__(op, in_channels, out_channels, kernel_size, stride, padding, dilation)
        dtype = _check_dtype(op, dtype)
        shape = (self.out_channels, self.in_channels, *self.kernel_size)
        w = _initial_weight(op, init, shape, initialisers.fan_in(shape), rng, dtype)
        self.weight = Tensor(w, requires_grad=True)  # (C_out, C_in, KH, KW)
        self.bias = _zero_bias(self.out_channels, bias, dtype)  # (C_out,)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation)

    def macs(self, x_shape, y_shape) -> int:
        """Multiply-accumulates: one per output element per kernel tap per input channel."""
        return int(np.prod(y_shape)) * self.in_channels * int(np.prod(self.kernel_size))


class ConvTranspose2d(_Conv):
    """The adjoint of Conv2d ("deconvolution"): x (N, C_in, H, W) -> y (N, C_out, OH, OW).

    weight: (C_in, C_out, KH, KW) as in torch; OH = (H-1)*S - 2P + D*(K-1) + OP + 1.
    ``init="bilinear"`` (needs C_in == C_out and a square kernel) starts it as bilinear
    upsampling, FCN's initialisation; ``learnable=False`` freezes weight and bias
    (requires_grad False) so it stays fixed interpolation.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        output_padding=0,
        bias: bool = True,
        dilation=1,
        dtype=np.float32,
        rng: initialisers.RngLike = None,
        init: str = "kaiming_normal",
        learnable: bool = True,
    ) -> None:
        op = "ConvTranspose2d"
        super().__init__(op, in_channels, out_channels, kernel_size, stride, padding, dilation)
        self.output_padding = pair(op, "output_padding", output_padding, 0)
        self.init = init
        dtype = _check_dtype(op, dtype)
        shape = (self.in_channels, self.out_channels, *self.kernel_size)
        if init == "bilinear":
            KH, KW = self.kernel_size
            if self.in_channels != self.out_channels or KH != KW:
                raise ValueError(
                    f"{op}: init='bilinear' needs in_channels == out_channels and a square "
                    f"kernel, got {self.in_channels} -> {self.out_channels}, kernel "
                    f"{self.kernel_size}"
                )
            w = initialisers.bilinear_kernel(self.in_channels, KH, dtype)
        elif init in CONV_INITS:
            # Each output pixel gathers about C_in*KH*KW/(SH*SW) inputs.
            fan = max(
                1, self.in_channels * int(np.prod(self.kernel_size)) // int(np.prod(self.stride))
            )
            w = _initial_weight(op, init, shape, fan, rng, dtype)
        else:
            raise ValueError(f"{op}: init must be one of {TRANSPOSED_INITS}, got {init!r}")
        self.weight = Tensor(w, requires_grad=learnable)  # (C_in, C_out, KH, KW)
        self.bias = _zero_bias(self.out_channels, bias, dtype, learnable)  # (C_out,)

    @property
    def learnable(self) -> bool:
        return self.weight.requires_grad

    def forward(self, x: Tensor) -> Tensor:
        return F.conv_transpose2d(
            x, self.weight, self.bias, self.stride, self.padding, self.output_padding, self.dilation
        )

    def macs(self, x_shape, y_shape) -> int:
        """Multiply-accumulates: every input element meets every tap of every output channel."""
        return int(np.prod(x_shape)) * self.out_channels * int(np.prod(self.kernel_size))

    def extra_repr(self) -> str:
        padded = self.output_padding != (0, 0)
        text = super().extra_repr(*([f"output_padding={self.output_padding}"] if padded else []))
        return text + f", init={self.init!r}" + ("" if self.learnable else ", frozen")


class Linear(Module):
    """y = x @ weight.T + bias: x (N, in_features) -> y (N, out_features).

    weight: (out_features, in_features) as in torch. It runs as a 1x1 convolution on
    x viewed as (N, in_features, 1, 1), so it needs no op of its own.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        dtype=np.float32,
        rng: initialisers.RngLike = None,
        init: str = "kaiming_normal",
    ) -> None:
        super().__init__()
        op = "Linear"
        self.in_features = _positive(op, "in_features", in_features)
        self.out_features = _positive(op, "out_features", out_features)
        dtype = _check_dtype(op, dtype)
        shape = (self.out_features, self.in_features)
        w = _initial_weight(op, init, shape, self.in_features, rng, dtype)
        self.weight = Tensor(w, requires_grad=True)  # (out, in)
        self.bias = _zero_bias(self.out_features, bias, dtype)  # (out,)

    def forward(self, x: Tensor) -> Tensor:
        if len(x.shape) != 2 or x.shape[1] != self.in_features:
            raise ValueError(
                f"Linear: input must be (N, {self.in_features}), got shape {tuple(x.shape)}"
            )
        n = x.shape[0]
        w = self.weight.reshape((self.out_features, self.in_features, 1, 1))
        y = F.conv2d(x.reshape((n, self.in_features, 1, 1)), w, self.bias)  # (N, out, 1, 1)
        return y.reshape((n, self.out_features))

    def macs(self, x_shape, y_shape) -> int:
        return int(np.prod(y_shape)) * self.in_features

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}" + (
            "" if self.bias is not None else ", bias=False"
        )
