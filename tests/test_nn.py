"""fcn_scratch.nn: module mechanics, state dicts, initialisers, layers."""

import numpy as np
import pytest

from fcn_scratch import Tensor, gradcheck, nn
from fcn_scratch import functional as F
from fcn_scratch.device import DeviceError, import_cupy
from fcn_scratch.models.geometry import layer_map


class Block(nn.Module):
    def __init__(self, rng):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1, rng=rng)
        self.scale = Tensor(np.ones(3, np.float32), requires_grad=True)
        self.act = nn.ReLU()
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        return self.drop(self.act(self.conv(x)))


class Net(nn.Module):
    def __init__(self, seed=0):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.first = Block(rng)
        self.up = nn.ConvTranspose2d(
            3, 3, 4, stride=2, bias=False, init="bilinear", learnable=False
        )
        self.last = nn.Conv2d(3, 1, 1, rng=rng)

    def forward(self, x):
        return self.last(self.up(self.first(x)))


def test_parameters_found_in_definition_order():
    net = Net()
    names = [name for name, _ in net.named_parameters()]
    assert names == [
        "first.conv.weight",
        "first.conv.bias",
        "first.scale",
        "up.weight",
        "last.weight",
        "last.bias",
    ]
    assert [name for name, _ in net.named_children()] == ["first", "up", "last"]
    assert [name for name, _ in net.named_modules()] == [
        "",
        "first",
        "first.conv",
        "first.act",
        "first.drop",
        "up",
        "last",
    ]
    assert net.num_parameters() == 3 * 2 * 9 + 3 + 3 + 3 * 3 * 16 + 3 + 1
    assert net.num_parameters(trainable_only=True) == net.num_parameters() - 3 * 3 * 16


def test_shared_parameter_listed_once():
    a = nn.Conv2d(2, 2, 1, rng=0)
    seq = nn.Sequential(a, nn.ReLU(), a)
    assert [name for name, _ in seq.named_parameters()] == ["0.weight", "0.bias"]


def test_list_of_modules_is_refused():
    class Bad(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = [nn.ReLU(), nn.Conv2d(1, 1, 1, rng=0)]

    with pytest.raises(TypeError, match="Bad.layers.*Sequential"):
        list(Bad().parameters())


def test_call_runs_forward_and_missing_forward_is_explained():
    x = Tensor(np.array([[-1.0, 2.0]]))
    np.testing.assert_array_equal(nn.ReLU()(x).numpy(), [[0.0, 2.0]])
    with pytest.raises(NotImplementedError, match="Module: forward"):
        nn.Module()(x)


def test_train_eval_reach_every_module():
    net = Net().eval()
    assert not any(m.training for m in net.modules())
    assert all(m.training for m in net.train().modules())


def test_dropout_only_in_training():
    x = Tensor(np.ones((1, 2, 20, 20)))
    drop = nn.Dropout(0.5, generator=np.random.default_rng(0))
    y = drop(x).numpy()
    assert set(np.unique(y)) == {0.0, 2.0}
    np.testing.assert_array_equal(drop.eval()(x).numpy(), x.numpy())
    with pytest.raises(ValueError, match="Dropout: p must be in"):
        nn.Dropout(1.0)


def test_zero_grad_and_frozen_parameters():
    net = Net()
    x = Tensor(np.random.default_rng(1).standard_normal((1, 2, 5, 5)).astype(np.float32))
    net(x).sum().backward()
    assert net.first.conv.weight.grad is not None and net.first.scale.grad is None
    assert net.up.weight.grad is None  # frozen: no gradient
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())


def test_repr_shows_tree_and_arguments():
    text = repr(Net())
    assert text.startswith("Net(\n  (first): Block(\n    (conv): Conv2d(2, 3, kernel_size=(3, 3)")
    assert "(up): ConvTranspose2d(3, 3, kernel_size=(4, 4), stride=(2, 2)" in text
    assert "bias=False, init='bilinear', frozen" in text
    assert "(drop): Dropout(p=0.5)" in text


def test_same_seed_same_model_different_seed_different():
    a, b, c = Net(seed=3).state_dict(), Net(seed=3).state_dict(), Net(seed=4).state_dict()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["first.conv.weight"], c["first.conv.weight"])


def test_state_dict_round_trip():
    src, dst = Net(seed=1), Net(seed=2)
    state = src.state_dict()
    assert all(isinstance(v, np.ndarray) for v in state.values())
    state["last.bias"][...] = 5.0  # a copy: the model is untouched
    assert src.last.bias.numpy()[0] == 0.0
    weight_before = dst.first.conv.weight
    assert dst.load_state_dict(state) == ([], [])
    assert dst.first.conv.weight is weight_before  # loaded in place
    x = Tensor(np.random.default_rng(0).standard_normal((1, 2, 6, 6)).astype(np.float32))
    src.last.bias.data[...] = 5.0
    src.eval(), dst.eval()
    np.testing.assert_array_equal(src(x).numpy(), dst(x).numpy())


@pytest.mark.parametrize(
    "edit,match",
    [
        (lambda s: s.pop("up.weight"), r"missing keys \['up.weight'\], unexpected keys \[\]"),
        (lambda s: s.update(extra=np.zeros(1)), r"unexpected keys \['extra'\]"),
        (
            lambda s: s.update({"last.bias": np.zeros(2, np.float32)}),
            r"'last.bias' expected shape \(1,\), got \(2,\)",
        ),
        (
            lambda s: s.update({"last.bias": np.zeros(1, np.float64)}),
            "'last.bias' expected dtype float32, got float64",
        ),
    ],
    ids=["missing", "unexpected", "shape", "dtype"],
)
def test_load_state_dict_errors_leave_module_unchanged(edit, match):
    net, state = Net(seed=1), Net(seed=2).state_dict()
    edit(state)
    before = net.state_dict()
    with pytest.raises(ValueError, match=match):
        net.load_state_dict(state)
    for key, value in net.state_dict().items():
        np.testing.assert_array_equal(value, before[key])


def test_load_state_dict_not_strict_reports_keys():
    net, state = Net(seed=1), Net(seed=2).state_dict()
    state.pop("last.weight")
    state["extra"] = np.zeros(1)
    result = net.load_state_dict(state, strict=False)
    assert result.missing_keys == ["last.weight"] and result.unexpected_keys == ["extra"]
    np.testing.assert_array_equal(net.first.conv.weight.numpy(), state["first.conv.weight"])


def test_to_cpu_keeps_parameters_and_cuda_is_explained():
    net = Net()
    weight = net.first.conv.weight
    assert net.to("cpu") is net and net.first.conv.weight is weight
    assert all(p.device == "cpu" for p in net.parameters())
    with pytest.raises(ValueError, match="device: expected one of"):
        net.to("tpu")
    try:
        import_cupy()
    except DeviceError:
        with pytest.raises(DeviceError, match="cuda"):
            net.to("cuda")


@pytest.mark.gpu
def test_to_cuda_and_back(cp):
    net = Net()
    state = net.state_dict()
    net.to("cuda")
    assert all(p.device == "cuda" for p in net.parameters())
    for key, value in net.to("cpu").state_dict().items():
        np.testing.assert_array_equal(value, state[key])


# ---- initialisers -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["kaiming_normal", "kaiming_uniform"])
def test_kaiming_variance(name):
    shape = (64, 32, 3, 3)  # fan_in 288
    w = getattr(nn.init, name)(shape, rng=0, dtype=np.float64)
    expected_var = 2.0 / 288
    # The sample variance of n draws has relative standard error about sqrt(2/n) (normal)
    # or less (uniform); allow 5 standard errors.
    assert abs(w.var() / expected_var - 1) < 5 * np.sqrt(2 / w.size)
    assert abs(w.mean()) < 5 * np.sqrt(expected_var / w.size)
    if name == "kaiming_uniform":
        assert np.abs(w).max() <= np.sqrt(2.0) * np.sqrt(3.0 / 288)


def test_generator_argument():
    g = np.random.default_rng(7)
    first = nn.init.kaiming_normal((2, 3), rng=g)
    second = nn.init.kaiming_normal((2, 3), rng=g)
    assert not np.array_equal(first, second)  # a Generator is consumed, not reseeded
    np.testing.assert_array_equal(first, nn.init.kaiming_normal((2, 3), rng=7))
    with pytest.raises(TypeError, match="rng must be a numpy Generator"):
        nn.init.kaiming_normal((2, 3), rng="seed")


def test_bilinear_filter_values():
    np.testing.assert_allclose(nn.init.bilinear_filter(4)[0], [0.0625, 0.1875, 0.1875, 0.0625])
    np.testing.assert_allclose(nn.init.bilinear_filter(3)[1], [0.5, 1.0, 0.5])
    w = nn.init.bilinear_kernel(3, 4)
    assert w.shape == (3, 3, 4, 4)
    off_diagonal = w[~np.eye(3, dtype=bool)]
    assert not off_diagonal.any()
    np.testing.assert_array_equal(w[1, 1], nn.init.bilinear_filter(4))


@pytest.mark.parametrize("factor", [2, 3, 4, 8])
def test_bilinear_upsampling_reproduces_a_ramp_in_the_interior(factor):
    """Linear interpolation is exact on linear functions: the upsampled ramp, read at each
    output pixel's position in input coordinates (from the layer's coordinate map), is
    the ramp itself wherever both neighbouring inputs exist."""
    H, W = 5, 7
    ii, jj = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    ramps = np.stack([0.5 * ii - 0.25 * jj + 1.0, -2.0 * ii + 3.0 * jj])  # (2, H, W)
    up = nn.ConvTranspose2d(
        2, 2, 2 * factor, stride=factor, bias=False, init="bilinear", dtype=np.float64
    )
    y = up(Tensor(ramps[None])).numpy()[0]  # (2, OH, OW)
    m = layer_map(up)  # output pixel u sits at input coordinate scale*u + shift
    v = float(m.scale[0]) * np.arange(y.shape[1]) + float(m.shift[0])
    h = float(m.scale[1]) * np.arange(y.shape[2]) + float(m.shift[1])
    inside_v, inside_h = (v >= 0) & (v <= H - 1), (h >= 0) & (h <= W - 1)
    assert inside_v.sum() >= (H - 1) * factor
    vv, hh = np.meshgrid(v[inside_v], h[inside_h], indexing="ij")
    expected = np.stack([0.5 * vv - 0.25 * hh + 1.0, -2.0 * vv + 3.0 * hh])
    np.testing.assert_allclose(y[:, inside_v][:, :, inside_h], expected, rtol=1e-12, atol=1e-12)


def test_bilinear_init_needs_square_same_channels():
    with pytest.raises(ValueError, match="init='bilinear' needs in_channels == out_channels"):
        nn.ConvTranspose2d(2, 3, 4, stride=2, init="bilinear")
    with pytest.raises(ValueError, match="ConvTranspose2d: init must be one of"):
        nn.ConvTranspose2d(2, 2, 4, init="ones")


def test_learnable_bilinear_upsampling_gets_gradients():
    up = nn.ConvTranspose2d(2, 2, 4, stride=2, init="bilinear", rng=0)
    assert up.learnable and up.weight.requires_grad and up.bias.requires_grad
    up(Tensor(np.ones((1, 2, 3, 3), np.float32))).sum().backward()
    assert up.weight.grad.shape == (2, 2, 4, 4) and up.bias.grad.shape == (2,)


# ---- layers ------------------------------------------------------------------------------


def test_conv_layers_match_functional():
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((2, 3, 9, 8)))
    conv = nn.Conv2d(
        3,
        4,
        (3, 2),
        stride=2,
        padding=1,
        dilation=(1, 2),
        dtype=np.float64,
        rng=1,
        init="kaiming_uniform",
    )
    conv.bias.data[...] = rng.standard_normal(4)
    np.testing.assert_array_equal(
        conv(x).numpy(), F.conv2d(x, conv.weight, conv.bias, 2, 1, (1, 2)).numpy()
    )
    tconv = nn.ConvTranspose2d(
        3, 2, 3, stride=2, padding=1, output_padding=1, dtype=np.float64, rng=1
    )
    np.testing.assert_array_equal(
        tconv(x).numpy(), F.conv_transpose2d(x, tconv.weight, tconv.bias, 2, 1, 1).numpy()
    )
    assert tconv(x).shape == (2, 2, 18, 16)


def test_pool_and_unpool_layers():
    x = Tensor(np.random.default_rng(0).permutation(2 * 3 * 7 * 5).reshape(2, 3, 7, 5) * 1.0)
    y, idx = nn.MaxPool2d(2, return_indices=True, ceil_mode=True)(x)
    assert y.shape == (2, 3, 4, 3)
    back = nn.MaxUnpool2d(2)(y, idx, output_size=(7, 5))
    assert back.shape == x.shape
    kept = back.numpy() != 0
    np.testing.assert_array_equal(back.numpy()[kept], x.numpy()[kept])
    assert kept.sum() == y.numpy().size - (y.numpy() == 0).sum()


def test_linear_is_a_matrix_product_with_gradients():
    rng = np.random.default_rng(0)
    lin = nn.Linear(5, 3, dtype=np.float64, rng=0)
    lin.bias.data[...] = rng.standard_normal(3)
    x = rng.standard_normal((4, 5))
    np.testing.assert_allclose(
        lin(Tensor(x)).numpy(), x @ lin.weight.numpy().T + lin.bias.numpy(), rtol=1e-12
    )

    def fn(x, w, b):
        lin.weight, lin.bias = w, b
        return lin(x)

    assert gradcheck(fn, [x, lin.weight.numpy(), lin.bias.numpy()]).passed
    with pytest.raises(ValueError, match=r"Linear: input must be \(N, 5\)"):
        lin(Tensor(np.zeros((4, 6))))


def test_flatten_and_sequential():
    seq = nn.Sequential(nn.Conv2d(1, 2, 3, rng=0), nn.Flatten())
    assert seq(Tensor(np.zeros((3, 1, 5, 4), np.float32))).shape == (3, 2 * 3 * 2)
    assert len(seq) == 2 and isinstance(seq[1], nn.Flatten)
    with pytest.raises(TypeError, match="Sequential: argument 0 must be a Module"):
        nn.Sequential(np.zeros(3))


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: nn.Conv2d(0, 2, 3), "Conv2d: in_channels must be a positive int, got 0"),
        (lambda: nn.Conv2d(1, 2, 3, stride=0), r"Conv2d: stride must be positive, got \(0, 0\)"),
        (lambda: nn.Conv2d(1, 2, 3, dtype=np.int32), "Conv2d: dtype must be float32 or float64"),
        (lambda: nn.Conv2d(1, 2, 3, init="ones"), "Conv2d: init must be one of"),
        (lambda: nn.MaxPool2d(0), "MaxPool2d: kernel_size must be positive"),
    ],
    ids=["channels", "stride", "dtype", "init", "pool"],
)
def test_bad_layer_arguments(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_module_list_requires_grad_and_apply():
    layers = nn.ModuleList([nn.Conv2d(1, 2, 3, rng=0), nn.ReLU()])
    layers.append(nn.Conv2d(2, 1, 1, rng=1))
    assert len(layers) == 3 and isinstance(layers[2], nn.Conv2d)
    assert [n for n, _ in layers.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    with pytest.raises(TypeError, match="ModuleList: argument 3 must be a Module, got int"):
        layers.append(3)

    net = Net()
    net.first.requires_grad_(False)  # freeze one branch in one line
    assert [n for n, p in net.named_parameters() if p.requires_grad] == ["last.weight", "last.bias"]
    x = Tensor(np.ones((1, 2, 4, 4), np.float32))
    net.eval()
    net(x).sum().backward()
    assert net.first.conv.weight.grad is None and net.last.weight.grad is not None
    net.requires_grad_()
    assert all(p.requires_grad for p in net.parameters())

    visited = []
    net.apply(lambda m: visited.append(m))
    assert visited[-1] is net and len(visited) == len(list(net.modules()))


def test_no_grad_records_no_graph():
    import fcn_scratch

    w = Tensor(np.ones((2, 1, 3, 3)), requires_grad=True)
    x = np.ones((1, 1, 4, 4))
    assert fcn_scratch.is_grad_enabled()
    with fcn_scratch.no_grad():
        assert not fcn_scratch.is_grad_enabled()
        y = F.relu(F.conv2d(x, w, padding=1)) * 2.0
    assert fcn_scratch.is_grad_enabled()
    assert not y.requires_grad and y.is_leaf
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.sum().backward()
    np.testing.assert_array_equal(y.numpy(), (F.relu(F.conv2d(x, w, padding=1)) * 2.0).numpy())

    @fcn_scratch.no_grad()
    def forward():
        return F.conv2d(x, w)

    assert not forward().requires_grad
    assert F.conv2d(x, w).requires_grad  # enabled again after the call
