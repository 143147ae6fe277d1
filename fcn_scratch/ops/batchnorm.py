"""Batch normalisation (Ioffe & Szegedy 2015) as a stateless forward/backward pair.

    x (N, C, H, W) (or (N, C), (N, C, L): any shape whose axis 1 is the channel)
    running_mean, running_var, weight (gamma), bias (beta): (C,)
    y = gamma * xhat + beta,   xhat = (x - mu) / sqrt(var + eps)

Per channel, the statistics are taken over the M = N*H*W values of that channel.
In training, mu and var are the batch's (var biased, divided by M) and the running arrays
are updated in place with the unbiased variance, as torch does:

    running_mean = (1 - momentum) * running_mean + momentum * mu
    running_var  = (1 - momentum) * running_var  + momentum * var * M / (M - 1)

In evaluation, mu and var are the running arrays, so y is an affine map of x per channel.

The backward, in its compact form (one channel; sums over its M values). With
invstd = 1 / sqrt(var + eps) and g = dL/dxhat = gamma * dy:

    xhat_i depends on x_j through x_i itself, through mu and through var:
      d mu / d x_j = 1/M,     d var / d x_j = 2 (x_j - mu) / M
      d xhat_i / d x_j = invstd * ([i == j] - 1/M) - (x_i - mu) * invstd^3 * (x_j - mu) / M
                       = invstd / M * (M [i == j] - 1 - xhat_i xhat_j)
    so dL/dx_j = sum_i g_i d xhat_i / d x_j
               = invstd / M * (M g_j - sum_i g_i - xhat_j sum_i g_i xhat_i)
    and with g = gamma * dy (gamma is constant per channel):

      dx = gamma * invstd / M * (M * dy - sum(dy) - xhat * sum(dy * xhat))
      dgamma = sum(dy * xhat),   dbeta = sum(dy)

The two sums are dbeta and dgamma, so the whole backward is two reductions and one
elementwise pass. In evaluation mu and var are constants: dx = gamma * invstd * dy.
"""

from fcn_scratch.device import array_module, device_of
from fcn_scratch.ops.shapes import check_float


def batch_norm_forward(
    x, running_mean, running_var, weight, bias, training: bool, momentum: float, eps: float
):
    """Returns (y, ctx), y like x. running_* may be None in training (nothing is tracked);
    weight / bias may be None (gamma = 1, beta = 0). Updates running_* in place."""
    op = "batch_norm"
    _check(op, x, running_mean, running_var, weight, bias, training, momentum, eps)
    xp = array_module(x)
    axes = (0, *range(2, x.ndim))  # every axis but the channel
    shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)  # (1, C, 1, 1) for broadcasting
    if training:
        M = x.size // x.shape[1]
        mean = x.mean(axis=axes)  # (C,)
        xc = x - mean.reshape(shape)  # (N, C, H, W)
        var = xp.mean(xc * xc, axis=axes)  # (C,) biased
        if running_mean is not None:
            running_mean *= 1 - momentum
            running_mean += momentum * mean
            running_var *= 1 - momentum
            running_var += (momentum * M / (M - 1)) * var
    else:
        xc = x - running_mean.reshape(shape)
        var = running_var
    invstd = 1 / xp.sqrt(var + eps)  # (C,)
    xhat = xc
    xhat *= invstd.reshape(shape)  # in place: xc is not needed again
    if weight is not None:
        y = xhat * weight.reshape(shape)  # (N, C, H, W)
        if bias is not None:
            y += bias.reshape(shape)
    else:
        y = xhat if bias is None else xhat + bias.reshape(shape)
    ctx = (xhat, invstd, weight, bias is not None, training, axes, shape)
    return y, ctx


def batch_norm_backward(dy, ctx):
    """Returns (dx, dweight, dbias); dweight / dbias are None where weight / bias were."""
    xhat, invstd, weight, has_bias, training, axes, shape = ctx
    dbias = dy.sum(axis=axes)  # (C,) = sum(dy)
    dweight = (dy * xhat).sum(axis=axes)  # (C,) = sum(dy * xhat)
    scale = invstd if weight is None else weight * invstd  # (C,) gamma * invstd
    if training:
        M = dy.size // dy.shape[1]
        dx = xhat * (dweight / -M).reshape(shape)  # -xhat * sum(dy * xhat) / M
        dx += dy
        dx -= (dbias / M).reshape(shape)
        dx *= scale.reshape(shape)
    else:
        dx = dy * scale.reshape(shape)
    return dx, (None if weight is None else dweight), (dbias if has_bias else None)


def _check(op, x, running_mean, running_var, weight, bias, training, momentum, eps) -> None:
    check_float(op, "x", x)
    if x.ndim < 2:
        raise ValueError(
            f"{op}: x must be (N, C, ...) with at least 2 dimensions, got shape {tuple(x.shape)}"
        )
    C = x.shape[1]
    if (running_mean is None) != (running_var is None):
        raise ValueError(f"{op}: give both running_mean and running_var, or neither")
    if not training and running_mean is None:
        raise ValueError(f"{op}: evaluation (training=False) needs running_mean and running_var")
    for name, a in (
        ("running_mean", running_mean),
        ("running_var", running_var),
        ("weight", weight),
        ("bias", bias),
    ):
        if a is None:
            continue
        if tuple(a.shape) != (C,):
            raise ValueError(
                f"{op}: {name} must have shape ({C},) for x with {C} channels "
                f"(x: {tuple(x.shape)}), got {tuple(a.shape)}"
            )
        if a.dtype != x.dtype:
            raise TypeError(f"{op}: {name} must have x's dtype {x.dtype}, got {a.dtype}")
        if device_of(a) != device_of(x):
            raise ValueError(f"{op}: {name} is on '{device_of(a)}' but x is on '{device_of(x)}'")
    if training and x.size // max(C, 1) < 2:
        raise ValueError(
            f"{op}: training needs more than one value per channel to take statistics, "
            f"got x of shape {tuple(x.shape)}"
        )
    if not 0 <= momentum <= 1:
        raise ValueError(f"{op}: momentum must be in [0, 1], got {momentum}")
    if not eps > 0:
        raise ValueError(f"{op}: eps must be positive, got {eps}")
