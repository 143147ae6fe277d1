"""Pixel-wise softmax cross-entropy in few passes, compiled with Numba (CPU only).

The arithmetic is ``fcn_scratch.ops.loss``'s, which calls these on NumPy arrays when the
Numba backend runs (``kernels.is_numba``); the NumPy expressions there stay for CuPy and
the other host backends. Those take a dozen passes over the logits (the max, the gather
of the target's logit, the subtraction, the sum, the division, the weights; the backward's
product, gather and scatter), each with a temporary, where the FCNs' logits have a handful
of classes: for the default model that was a twentieth of a training step. Here the
forward is ``shift``, NumPy's exp (vectorised; Numba would call exp one number at a time)
and ``normalise``, the backward one loop. The loops run over an image's pixels with the
classes outside, so every inner loop is unit-stride, and a pixel's classes are added in
class order, as NumPy's sum over the class axis adds them: the results are the NumPy
expressions' bit for bit (tested).

Layouts: logits, z and prob (N, K, P), target, t, the pixel weights and z_t (N, P), with P
the pixels of an image (H * W); weight (K,) the class weights (ones when none are given).
"""

import numpy as np
from numba import uint64

from fcn_scratch.kernels.cpu import kernel


@kernel
def shift(logits, target, weight, ignore_index, z, t, pixel_weight, z_t):
    """Per pixel p of image n: z[n, :, p] = logits[n, :, p] - max_k logits[n, k, p] (for
    stability), t = target (0 where ignored), pixel_weight = weight[t] (0 where ignored)
    and z_t = z[n, t, p].

    Returns the number of pixels whose target is neither ignore_index nor in [0, K)
    (their outputs are those of an ignored pixel): the caller raises if it is not 0."""
    N, K, P = logits.shape
    K, P = uint64(K), uint64(P)
    peak = np.empty(P, dtype=logits.dtype)
    bad = 0
    for n in range(uint64(N)):
        for p in range(P):
            label = target[n, p]
            valid = (label != ignore_index) & (label >= 0) & (label < K)
            bad += (label != ignore_index) & ~valid
            t[n, p] = label if valid else 0
            pixel_weight[n, p] = weight[t[n, p]] if valid else 0
        for p in range(P):
            peak[p] = logits[n, 0, p]
        for k in range(uint64(1), K):
            for p in range(P):
                peak[p] = max(peak[p], logits[n, k, p])
        for k in range(K):
            for p in range(P):
                z[n, k, p] = logits[n, k, p] - peak[p]
        for p in range(P):
            z_t[n, p] = z[n, t[n, p], p]
    return bad


@kernel
def normalise(e, total):
    """e: (N, K, P) exp(z) -> the softmax, in place; total (N, P): sum_k e[n, k, p], added
    in class order."""
    N, K, P = e.shape
    for n in range(uint64(N)):
        for p in range(uint64(P)):
            total[n, p] = e[n, 0, p]
        for k in range(uint64(1), uint64(K)):
            for p in range(uint64(P)):
                total[n, p] += e[n, k, p]
        for k in range(uint64(K)):
            for p in range(uint64(P)):
                e[n, k, p] /= total[n, p]


@kernel
def backward(prob, t, scale, dlogits):
    """dlogits[n, k, p] = prob[n, k, p] * scale[n, p], less scale[n, p] where k = t[n, p]:
    scale * (softmax - onehot(t)), scale being the pixel's weight times dloss."""
    N, K, P = prob.shape
    for n in range(uint64(N)):
        for k in range(uint64(K)):
            for p in range(uint64(P)):
                d = prob[n, k, p] * scale[n, p]
                dlogits[n, k, p] = d - scale[n, p] if t[n, p] == k else d
