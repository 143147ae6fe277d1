"""Bad input raises ValueError/TypeError naming the op, the argument, what was expected and
what came."""

import numpy as np
import pytest

from fcn_scratch import Tensor
from fcn_scratch import functional as F
from fcn_scratch.ops import conv, loss, pool

f32 = np.float32


def x4(*shape, dtype=f32):
    return np.zeros(shape, dtype=dtype)


W = x4(4, 3, 3, 3)
X = x4(2, 3, 8, 8)


@pytest.mark.parametrize(
    "call,error,pattern",
    [
        (
            lambda: F.conv2d(x4(3, 8, 8), W),
            ValueError,
            r"conv2d: x must be 4-D .*got 3-D shape \(3, 8, 8\)",
        ),
        (lambda: F.conv2d(X, x4(4, 3, 3)), ValueError, r"conv2d: w must be 4-D"),
        (
            lambda: F.conv2d(x4(2, 5, 8, 8), W),
            ValueError,
            r"conv2d: channel mismatch: x has 5 channels .* w expects 3",
        ),
        (
            lambda: F.conv2d(X, W, stride=0),
            ValueError,
            r"conv2d: stride must be positive, got \(0, 0\)",
        ),
        (
            lambda: F.conv2d(X, W, stride=(1, -2)),
            ValueError,
            r"conv2d: stride must be positive, got \(1, -2\)",
        ),
        (
            lambda: F.conv2d(X, W, padding=-1),
            ValueError,
            r"conv2d: padding must be >= 0, got \(-1, -1\)",
        ),
        (lambda: F.conv2d(X, W, dilation=0), ValueError, r"conv2d: dilation must be positive"),
        (
            lambda: F.conv2d(X, W, stride=1.5),
            TypeError,
            r"conv2d: stride must be an int or a pair of ints, got 1.5",
        ),
        (lambda: F.conv2d(X, x4(4, 3, 0, 3)), ValueError, r"conv2d: kernel size must be positive"),
        (
            lambda: F.conv2d(x4(1, 3, 2, 2), W),
            ValueError,
            r"conv2d: output would be empty: input size \(2, 2\)",
        ),
        (
            lambda: F.conv2d(X.astype(np.int32), W),
            TypeError,
            r"conv2d: x must be float32 or float64, got dtype int32",
        ),
        (
            lambda: F.conv2d(X, W.astype(np.float64)),
            TypeError,
            r"conv2d: mixed dtypes: x is float32 but w is float64",
        ),
        (
            lambda: F.conv2d(X, W, x4(5)),
            ValueError,
            r"conv2d: b must have shape \(4,\), got \(5,\)",
        ),
        (
            lambda: F.conv_transpose2d(X, x4(3, 2, 4, 4), stride=2, output_padding=2),
            ValueError,
            r"conv_transpose2d: output_padding must be smaller than either stride or dilation",
        ),
        (
            lambda: F.conv_transpose2d(X, x4(4, 2, 3, 3)),
            ValueError,
            r"conv_transpose2d: channel mismatch: x has 3 channels",
        ),
        (
            lambda: F.conv_transpose2d(x4(1, 3, 1, 1), x4(3, 2, 1, 1), padding=1),
            ValueError,
            r"conv_transpose2d: output would be empty",
        ),
        (lambda: F.max_pool2d(x4(8, 8), 2), ValueError, r"max_pool2d: x must be 4-D"),
        (
            lambda: F.max_pool2d(X, 0),
            ValueError,
            r"max_pool2d: kernel_size must be positive, got \(0, 0\)",
        ),
        (
            lambda: F.max_pool2d(X, 2, padding=2),
            ValueError,
            r"max_pool2d: padding must be at most half of kernel_size",
        ),
        (lambda: F.max_pool2d(x4(1, 1, 2, 2), 3), ValueError, r"max_pool2d: output would be empty"),
        (
            lambda: F.max_pool2d(x4(1, 1, 1, 5), 2, 2, 1, 2),
            ValueError,
            r"max_pool2d: the window at output row 0 covers only padding",
        ),
        (
            lambda: F.max_pool2d(X.astype(np.int64), 2),
            TypeError,
            r"max_pool2d: x must be float32 or float64, got dtype int64",
        ),
        (
            lambda: F.max_unpool2d(x4(2, 3, 4, 4), np.zeros((2, 3, 4, 5), np.int64), 2),
            ValueError,
            r"max_unpool2d: indices must have the shape of x \(2, 3, 4, 4\), got \(2, 3, 4, 5\)",
        ),
        (
            lambda: F.max_unpool2d(x4(2, 3, 4, 4), np.full((2, 3, 4, 4), 64), 2),
            ValueError,
            r"max_unpool2d: indices must lie in \[0, 64\) for output size \(8, 8\), got values in \[64, 64\]",
        ),
        (
            lambda: F.max_unpool2d(x4(2, 3, 4, 4), np.zeros((2, 3, 4, 4), f32), 2),
            TypeError,
            r"max_unpool2d: indices must be an integer array, got dtype float32",
        ),
        (
            lambda: F.max_unpool2d(
                x4(2, 3, 4, 4), np.zeros((2, 3, 4, 4), int), 2, output_size=(12, 8)
            ),
            ValueError,
            r"max_unpool2d: output_size \(12, 8\) is not within one stride",
        ),
        (
            lambda: F.cross_entropy(x4(2, 3, 4, 4), np.full((2, 4, 4), 3)),
            ValueError,
            r"cross_entropy: target values must be in \[0, 3\) or ignore_index=255, got \[3\]",
        ),
        (
            lambda: F.cross_entropy(x4(2, 3, 4, 4), np.full((2, 4, 4), -1)),
            ValueError,
            r"cross_entropy: target values must be in \[0, 3\)",
        ),
        (
            lambda: F.cross_entropy(x4(2, 3, 4, 4), np.zeros((2, 4, 5), int)),
            ValueError,
            r"cross_entropy: target must have shape \(N, H, W\) = \(2, 4, 4\)",
        ),
        (
            lambda: F.cross_entropy(x4(2, 3, 4, 4), np.zeros((2, 4, 4), f32)),
            TypeError,
            r"cross_entropy: target must be an integer array, got dtype float32",
        ),
        (
            lambda: F.cross_entropy(
                x4(2, 3, 4, 4), np.zeros((2, 4, 4), int), x4(3, dtype=np.float64)
            ),
            TypeError,
            r"cross_entropy: mixed dtypes: logits is float32 but weight is float64",
        ),
        (
            lambda: F.cross_entropy(x4(2, 3, 4, 4), np.zeros((2, 4, 4), int), x4(4)),
            ValueError,
            r"cross_entropy: weight must have shape \(3,\), got \(4,\)",
        ),
        (
            lambda: F.cross_entropy(x4(2, 3, 4, 4), np.zeros((2, 4, 4), int), reduction="avg"),
            ValueError,
            r"cross_entropy: reduction must be one of",
        ),
        (
            lambda: F.crop(X, (6, 0), (4, 4)),
            ValueError,
            r"crop: offset \(6, 0\) \+ size \(4, 4\) exceeds the input size \(8, 8\)",
        ),
        (lambda: F.dropout(X, p=1.0), ValueError, r"dropout: p must be in \[0, 1\), got 1.0"),
        (lambda: Tensor(X) + Tensor(x4(2, 3, 8, 7)), ValueError, r"add: shapes must match"),
        (
            lambda: Tensor(X) + Tensor(X.astype(np.float64)),
            TypeError,
            r"add: mixed dtypes: float32 and float64",
        ),
        (
            lambda: Tensor(np.zeros(3, int), requires_grad=True),
            TypeError,
            r"Tensor: requires_grad needs a float32 or float64",
        ),
        (
            lambda: Tensor(X).to("tpu"),
            ValueError,
            r"device: expected one of \('cpu', 'cuda'\), got 'tpu'",
        ),
    ],
)
def test_bad_input_message(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()


def test_backward_needs_grad_for_non_scalar():
    y = F.relu(Tensor(np.ones((2, 2), f32), requires_grad=True))
    with pytest.raises(
        ValueError, match=r"backward: grad must be given for a non-scalar tensor of shape \(2, 2\)"
    ):
        y.backward()


@pytest.mark.parametrize(
    "call,pattern",
    [
        (lambda: F.conv2d(x4(0, 3, 8, 8), W), r"conv2d: x has N = 0 \(shape \(0, 3, 8, 8\)\)"),
        (lambda: F.conv2d(X, x4(0, 3, 3, 3)), r"conv2d: w has C_out = 0"),
        (lambda: F.conv2d(x4(2, 0, 8, 8), x4(4, 0, 3, 3)), r"conv2d: x has C_in = 0"),
        (lambda: F.conv_transpose2d(x4(2, 0, 8, 8), x4(0, 4, 3, 3)), r"conv_transpose2d: x has C_in = 0"),
        (lambda: F.conv_transpose2d(X, x4(3, 0, 3, 3)), r"conv_transpose2d: w has C_out = 0"),
        (lambda: F.max_pool2d(x4(0, 3, 8, 8), 2), r"max_pool2d: x has N = 0"),
        (lambda: F.max_unpool2d(x4(2, 0, 4, 4), np.zeros((2, 0, 4, 4), int), 2), r"max_unpool2d: x has C = 0"),
        (lambda: F.cross_entropy(x4(0, 3, 4, 4), np.zeros((0, 4, 4), int)), r"cross_entropy: logits has N = 0"),
        (lambda: F.cross_entropy(x4(1, 0, 4, 4), np.zeros((1, 4, 4), int)), r"cross_entropy: logits has K = 0"),
    ],
)  # fmt: skip
def test_empty_batches_and_channels_are_refused_by_name(call, pattern):
    with pytest.raises(ValueError, match=pattern + ".*empty batches, channels and classes"):
        call()


@pytest.mark.parametrize(
    "call,pattern",
    [
        (lambda: conv.conv2d_forward(x4(0, 3, 8, 8), W), r"conv2d: x has N = 0"),
        (lambda: conv.conv_transpose2d_forward(X, x4(3, 0, 3, 3)), r"conv_transpose2d: w has C_out = 0"),
        (lambda: pool.max_pool2d_forward(x4(2, 0, 8, 8), 2), r"max_pool2d: x has C = 0"),
        (lambda: loss.cross_entropy_forward(x4(1, 0, 4, 4), np.zeros((1, 4, 4), int)), r"cross_entropy: logits has K = 0"),
    ],
)  # fmt: skip
def test_the_ops_themselves_refuse_empty_arrays(call, pattern):
    """The checks live in the ops, so calling an op directly gets the same message."""
    with pytest.raises(ValueError, match=pattern + ".*empty batches, channels and classes"):
        call()


def test_lists_work_as_arrays_for_targets_weights_and_indices():
    logits = np.random.default_rng(0).standard_normal((1, 3, 1, 2)).astype(f32)
    target, weight = np.array([[[0, 2]]]), np.array([1, 2, 3], f32)
    expected = F.cross_entropy(logits, target, weight=weight).item()
    assert F.cross_entropy(logits, target.tolist(), weight=Tensor(weight)).item() == expected
    with pytest.raises(
        TypeError, match="cross_entropy: mixed dtypes: logits is float32 but weight"
    ):
        F.cross_entropy(logits, target, weight=[1.0, 2.0, 3.0])  # a float list is float64
    y = F.max_unpool2d(np.ones((1, 1, 1, 1), f32), [[[[3]]]], 2)
    assert y.data.ravel().tolist() == [0, 0, 0, 1]


def test_load_state_dict_refuses_values_that_are_not_arrays():
    from fcn_scratch import nn

    conv = nn.Conv2d(1, 1, 1)
    before = conv.weight.data.copy()
    with pytest.raises(
        ValueError, match=r"Conv2d.load_state_dict: 'weight' must be an array, got list"
    ):
        conv.load_state_dict({"weight": [[[[1.0]]]], "bias": np.zeros(1, f32)})
    assert np.array_equal(conv.weight.data, before)
