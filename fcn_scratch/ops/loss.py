"""Pixel-wise softmax cross-entropy, as in FCN: one classification per pixel.

    logits (N, K, H, W) float, target (N, H, W) int in [0, K) or ignore_index,
    weight (K,) or None  ->  loss: scalar ('mean', 'sum') or (N, H, W) ('none')

Per pixel: l = -weight[t] * log softmax(logits)[t]; ignored pixels contribute 0.
'mean' divides by the summed weights of the non-ignored pixels (PyTorch's rule), so
it is nan when every pixel is ignored, as in PyTorch.
The gradient with respect to the logits is weight[t] * (softmax - onehot(t)), scaled.
"""

from typing import NamedTuple

import numpy as np

from fcn_scratch import kernels
from fcn_scratch.device import array_module, device_of, same_device
from fcn_scratch.ops.shapes import check_float, check_ndim, check_not_empty

REDUCTIONS = ("mean", "sum", "none")


class LossCtx(NamedTuple):
    prob: object  # softmax(logits), (N, K, H, W)
    target: object  # (N, H, W) int64, ignored pixels replaced by 0
    pixel_weight: object  # (N, H, W): weight[t] where valid, 0 where ignored
    reduction: str
    total_weight: object  # scalar array: sum of pixel_weight ('mean' divides by it)


def _check(logits, target, weight, ignore_index, reduction):
    op = "cross_entropy"
    same_device(op, logits=logits, target=target, weight=weight)
    check_ndim(op, "logits", logits, 4, "(N, K, H, W)")
    check_not_empty(op, logits=(logits, "N", "K"))
    check_float(op, "logits", logits)
    N, K, H, W = logits.shape
    if tuple(target.shape) != (N, H, W):
        raise ValueError(
            f"{op}: target must have shape (N, H, W) = {(N, H, W)} to match logits "
            f"{tuple(logits.shape)}, got {tuple(target.shape)}"
        )
    if not np.issubdtype(target.dtype, np.integer):
        raise TypeError(f"{op}: target must be an integer array, got dtype {target.dtype}")
    if weight is not None:
        if tuple(weight.shape) != (K,):
            raise ValueError(f"{op}: weight must have shape ({K},), got {tuple(weight.shape)}")
        if weight.dtype != logits.dtype:
            raise TypeError(
                f"{op}: mixed dtypes: logits is {logits.dtype} but weight is {weight.dtype}"
            )
    if reduction not in REDUCTIONS:
        raise ValueError(f"{op}: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    # Checked on the host only: on CUDA the check would cost a device-to-host sync. The
    # Numba kernel counts bad targets as it goes (the forward raises if it found any).
    if device_of(target) == "cpu" and not kernels.is_numba(logits):
        _check_targets(target, K, ignore_index)


def _check_targets(target, K, ignore_index):
    bad = (target != ignore_index) & ((target < 0) | (target >= K))
    if bad.any():
        raise ValueError(
            f"cross_entropy: target values must be in [0, {K}) or ignore_index={ignore_index}, "
            f"got {sorted(set(target[bad].tolist()))[:5]}"
        )


def cross_entropy_forward(logits, target, weight=None, ignore_index=255, reduction="mean"):
    """Returns (loss, ctx). Per pixel, with z = logits - max over classes (for stability):
    -log softmax(logits)[t] = log(sum_k exp(z_k)) - z_t."""
    _check(logits, target, weight, ignore_index, reduction)
    forward = _fused_forward if kernels.is_numba(logits) else _array_forward
    prob, t, w, losses = forward(logits, target, weight, ignore_index)
    total = w.sum()
    return _reduce(losses, total, reduction), LossCtx(prob, t, w, reduction, total)


def _array_forward(logits, target, weight, ignore_index):
    """The forward in array expressions (NumPy or CuPy): (prob (N, K, H, W), t (N, H, W)
    int64 with ignored pixels 0, pixel weights (N, H, W), losses (N, H, W))."""
    xp = array_module(logits)
    valid = target != ignore_index  # (N, H, W)
    t = xp.where(valid, target, 0).astype(np.int64)[:, None]  # (N, 1, H, W)
    prob = logits - logits.max(axis=1, keepdims=True)  # z: (N, K, H, W)
    z_t = xp.take_along_axis(prob, t, axis=1)[:, 0]  # (N, H, W)
    xp.exp(prob, out=prob)
    total_exp = prob.sum(axis=1)  # (N, H, W)
    prob /= total_exp[:, None]  # softmax, in place of z
    w = valid.astype(logits.dtype) if weight is None else weight[t[:, 0]] * valid
    losses = (xp.log(total_exp) - z_t) * w  # (N, H, W)
    return prob, t[:, 0], w, losses


def _fused_forward(logits, target, weight, ignore_index):
    """The forward by the Numba kernels, with NumPy's exp and log (vectorised, where Numba
    calls them one number at a time): the same arrays as ``_array_forward``, the same bits."""
    from fcn_scratch.kernels import cross_entropy

    N, K, H, W = logits.shape
    logits = np.ascontiguousarray(logits)
    target = np.ascontiguousarray(target)
    weight = np.ones(K, logits.dtype) if weight is None else np.ascontiguousarray(weight)
    prob = np.empty_like(logits)  # z, then exp(z), then the softmax
    t = np.empty((N, H, W), np.int64)
    w, z_t = np.empty((N, H, W), logits.dtype), np.empty((N, H, W), logits.dtype)
    bad = cross_entropy.shift(
        logits.reshape(N, K, -1),
        target.reshape(N, -1),
        weight,
        ignore_index,
        prob.reshape(N, K, -1),
        t.reshape(N, -1),
        w.reshape(N, -1),
        z_t.reshape(N, -1),
    )
    if bad:
        _check_targets(target, K, ignore_index)
    np.exp(prob, out=prob)
    total_exp = np.empty((N, H, W), logits.dtype)
    cross_entropy.normalise(prob.reshape(N, K, -1), total_exp.reshape(N, -1))
    losses = np.log(total_exp, out=total_exp)
    losses -= z_t
    losses *= w
    return prob, t, w, losses


def _reduce(losses, total, reduction):
    """losses (N, H, W) -> as ``reduction`` asks; 'mean' divides by ``total``, the summed
    pixel weights."""
    if reduction == "none":
        return losses
    if reduction == "sum":
        return losses.sum()
    return losses.sum() / total


def cross_entropy_backward(dloss, ctx):
    """dloss: scalar, or (N, H, W) for reduction='none' -> dlogits: (N, K, H, W),
    weight[t] * dloss * (softmax - onehot(t)): the softmax scaled, then the scale taken
    off at each pixel's target class."""
    xp = array_module(ctx.prob)
    scale = ctx.pixel_weight * dloss  # (N, H, W)
    if ctx.reduction == "mean":
        scale = scale / ctx.total_weight
    scale = scale.astype(ctx.prob.dtype, copy=False)  # (N, H, W)
    if kernels.is_numba(ctx.prob):
        from fcn_scratch.kernels import cross_entropy

        N, K = ctx.prob.shape[:2]
        dlogits = np.empty_like(ctx.prob)
        cross_entropy.backward(
            ctx.prob.reshape(N, K, -1),
            ctx.target.reshape(N, -1),
            np.ascontiguousarray(scale).reshape(N, -1),
            dlogits.reshape(N, K, -1),
        )
        return dlogits
    scale = scale[:, None]  # (N, 1, H, W)
    dlogits = ctx.prob * scale  # (N, K, H, W)
    t = ctx.target[:, None]  # (N, 1, H, W)
    xp.put_along_axis(dlogits, t, xp.take_along_axis(dlogits, t, axis=1) - scale, axis=1)
    return dlogits
