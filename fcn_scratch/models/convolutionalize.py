"""convolutionalize: a classifier's fully connected layers as convolutions (FCN section 3.1).

A fully connected layer on flattened C x H x W features computes, for each output unit, a
dot product with a C x H x W block of weights: exactly a convolution with an H x W kernel,
evaluated at the one position where it fits. AlexNet's FC on 256 x 7 x 7 features with
4096 outputs is a 7x7 convolution with 4096 filters; the next FC (4096 -> 4096) is a 1x1
convolution. The converted network computes the same numbers at the original input size,
and on a larger input slides the classifier over the features and returns a spatial map
of scores (AlexNet: a 384x384 image gives 12x12 features and a 6x6 map) instead of one vector.
"""

import copy

import numpy as np

from fcn_scratch.autograd import Tensor
from fcn_scratch.nn import Conv2d, Flatten, Linear, Module, Sequential


def _conv_from_linear(linear: Linear, features: tuple[int, int, int]) -> Conv2d:
    """The Conv2d with kernel (H, W) over C channels equal to ``linear`` on (C, H, W) inputs."""
    c, h, w = features
    if linear.in_features != c * h * w:
        raise ValueError(
            f"convolutionalize: Linear expects {linear.in_features} inputs but the features "
            f"reaching it are {c} x {h} x {w} = {c * h * w}"
        )
    weight = linear.weight.numpy()  # (out, C*H*W), flattened in (c, y, x) order
    conv = Conv2d(
        c,
        linear.out_features,
        (h, w),
        bias=linear.bias is not None,
        dtype=weight.dtype,
        init="zeros",
    )
    conv.weight.data[...] = weight.reshape(linear.out_features, c, h, w)
    if linear.bias is not None:
        conv.bias.data[...] = linear.bias.numpy()
    return conv


def convolutionalize(model: Sequential, input_shape: tuple[int, int, int]) -> Sequential:
    """A fully convolutional copy of ``model``: [..., Flatten, Linear, ..., Linear, ...].

    input_shape: (C, H, W) of the images the classifier was built for; it fixes the
    feature size at the Flatten, hence the first FC layer's kernel. Every Linear becomes a
    Conv2d (the first: kernel = feature H x W; later ones: 1x1), Flatten is dropped, and
    other layers are copied. The result maps (N, C, H', W') to (N, out, h', w') with
    h' = W' = 1 at the original size. ``model`` itself is not changed.
    """
    if not isinstance(model, Sequential):
        raise TypeError(f"convolutionalize: expected a Sequential, got {type(model).__name__}")
    x = Tensor(np.zeros((1, *input_shape), dtype=next(model.parameters()).dtype))
    layers: list[Module] = []
    features = None  # (C, H, W) arriving at the first Linear, once the Flatten is seen
    for layer in model:
        if isinstance(layer, Flatten):
            features = tuple(x.shape[1:])
            continue
        if isinstance(layer, Linear):
            if features is None:
                raise ValueError("convolutionalize: a Linear layer comes before any Flatten")
            layers.append(_conv_from_linear(layer, features))
            features = (layer.out_features, 1, 1)
            continue
        if features is None:
            x = layer(x)  # track the feature shape up to the Flatten
        layers.append(copy.deepcopy(layer))
    if features is None:
        raise ValueError("convolutionalize: the model has no Flatten, nothing to convert")
    return Sequential(*layers)
