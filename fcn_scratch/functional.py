"""PyTorch-named operations on Tensors: each wraps one forward/backward pair of ``ops``.

Argument names, defaults and results follow ``torch.nn.functional``. Inputs may be
Tensors or plain arrays (or nested lists, made arrays as ``numpy.asarray`` does); arrays
are treated as constants (no gradient). Unlike PyTorch, the NCHW ops refuse empty
batches and zero channels with a ValueError.

    conv2d(x, w, b=None, stride=1, padding=0, dilation=1)
    conv_transpose2d(x, w, b=None, stride=1, padding=0, output_padding=0, dilation=1)
    max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False)
    max_unpool2d(x, indices, kernel_size, stride=None, padding=0, output_size=None)
    relu(x), dropout(x, p=0.5, training=True, generator=None), crop(x, offset, size)
    batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5)
    cross_entropy(logits, target, weight=None, ignore_index=255, reduction='mean')
"""

from fcn_scratch import random
from fcn_scratch.autograd import Tensor, as_tensor
from fcn_scratch.ops import activation, batchnorm, conv, loss, pool
from fcn_scratch.ops import crop as crop_op


def _data(x):
    """The array inside a Tensor, an array as it is, a list as an array; None stays None."""
    return None if x is None else as_tensor(x).data


def conv2d(x, w, b=None, stride=1, padding=0, dilation=1) -> Tensor:
    """x: (N, C_in, H, W), w: (C_out, C_in, KH, KW), b: (C_out,) -> (N, C_out, OH, OW)."""
    x, w = as_tensor(x), as_tensor(w)
    parents = (x, w) if b is None else (x, w, as_tensor(b))
    y, ctx = conv.conv2d_forward(x.data, w.data, _data(b), stride, padding, dilation)

    def backward(dy):
        return conv.conv2d_backward(dy, ctx, x.requires_grad, w.requires_grad)

    return Tensor.from_op(y, parents, backward, "conv2d")


def conv_transpose2d(x, w, b=None, stride=1, padding=0, output_padding=0, dilation=1) -> Tensor:
    """x: (N, C_in, H, W), w: (C_in, C_out, KH, KW), b: (C_out,) -> (N, C_out, OH, OW)."""
    x, w = as_tensor(x), as_tensor(w)
    parents = (x, w) if b is None else (x, w, as_tensor(b))
    y, ctx = conv.conv_transpose2d_forward(
        x.data, w.data, _data(b), stride, padding, output_padding, dilation
    )

    def backward(dy):
        return conv.conv_transpose2d_backward(dy, ctx, x.requires_grad, w.requires_grad)

    return Tensor.from_op(y, parents, backward, "conv_transpose2d")


def max_pool2d(
    x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False
):
    """x: (N, C, H, W) -> y: (N, C, OH, OW), and with return_indices the int64 indices
    (a Tensor, flat positions in each H*W plane)."""
    x = as_tensor(x)
    y, indices, ctx = pool.max_pool2d_forward(
        x.data, kernel_size, stride, padding, dilation, ceil_mode
    )
    out = Tensor.from_op(y, (x,), lambda dy: (pool.max_pool2d_backward(dy, ctx),), "max_pool2d")
    return (out, Tensor(indices)) if return_indices else out


def max_unpool2d(x, indices, kernel_size, stride=None, padding=0, output_size=None) -> Tensor:
    """x: (N, C, OH, OW), indices like x -> (N, C, H, W): zeros, x at the indices."""
    x = as_tensor(x)
    y, ctx = pool.max_unpool2d_forward(
        x.data, _data(indices), kernel_size, stride, padding, output_size
    )
    return Tensor.from_op(
        y, (x,), lambda dy: (pool.max_unpool2d_backward(dy, ctx),), "max_unpool2d"
    )


def relu(x) -> Tensor:
    x = as_tensor(x)
    y, mask = activation.relu_forward(x.data)
    return Tensor.from_op(y, (x,), lambda dy: (activation.relu_backward(dy, mask),), "relu")


def dropout(x, p: float = 0.5, training: bool = True, generator=None) -> Tensor:
    """Inverted dropout; the identity when not training or p == 0.

    generator: a numpy (or cupy) random Generator; default: fcn_scratch.random's.
    """
    x = as_tensor(x)
    if not training or p == 0:
        return x
    generator = random.generator(x.device) if generator is None else generator
    y, mask = activation.dropout_forward(x.data, p, generator)
    return Tensor.from_op(y, (x,), lambda dy: (activation.dropout_backward(dy, mask),), "dropout")


def batch_norm(
    x,
    running_mean,
    running_var,
    weight=None,
    bias=None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """x: (N, C, H, W), running_*/weight/bias: (C,) -> y like x, normalised per channel.

    training: batch statistics (and running_* updated in place, unless None); otherwise
    the running statistics. See ``ops.batchnorm`` for the formulas and the backward.
    """
    x = as_tensor(x)
    parents = [x] + [as_tensor(p) for p in (weight, bias) if p is not None]
    y, ctx = batchnorm.batch_norm_forward(
        x.data,
        _data(running_mean),
        _data(running_var),
        _data(weight),
        _data(bias),
        training,
        momentum,
        eps,
    )

    def backward(dy):
        dx, dweight, dbias = batchnorm.batch_norm_backward(dy, ctx)
        return tuple(g for g in (dx, dweight, dbias) if g is not None)

    return Tensor.from_op(y, parents, backward, "batch_norm")


def crop(x, offset, size) -> Tensor:
    """x: (..., H, W) -> x[..., oy:oy+h, ox:ox+w]; offset int or (oy, ox), size (h, w)."""
    x = as_tensor(x)
    y, ctx = crop_op.crop_forward(x.data, offset, size)
    return Tensor.from_op(y, (x,), lambda dy: (crop_op.crop_backward(dy, ctx),), "crop")


def cross_entropy(logits, target, weight=None, ignore_index=255, reduction="mean") -> Tensor:
    """logits: (N, K, H, W), target: (N, H, W) int -> scalar (or (N, H, W) for 'none')."""
    logits = as_tensor(logits)
    value, ctx = loss.cross_entropy_forward(
        logits.data, _data(target), _data(weight), ignore_index, reduction
    )
    return Tensor.from_op(
        value, (logits,), lambda dy: (loss.cross_entropy_backward(dy, ctx),), "cross_entropy"
    )
