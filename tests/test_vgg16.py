"""The paper's own networks: VGG16 FCN-32s/16s/8s, and weights converted from PyTorch.

Architecture checks run on width-scaled VGG16s (the geometry does not depend on widths);
the full-size network is built once, to check its names and shapes against the port's.
"""

import numpy as np
import pytest

from fcn_scratch import Tensor
from fcn_scratch.models import build_model
from fcn_scratch.models.convert import (
    ConversionError,
    convert_state_dict,
    expected_shapes,
    port_table,
    torchvision_table,
)
from fcn_scratch.models.preprocess import CAFFE_BGR, TORCHVISION
from fcn_scratch.nn import ConvTranspose2d, Dropout, MaxPool2d
from fcn_scratch.nn.init import bilinear_kernel
from fcn_scratch.train.evaluation import inference

NARROW = {"widths": (4, 8, 8, 16, 16), "fc_width": 16}
VARIANTS = ("fcn32s", "fcn16s", "fcn8s")
SIZES = [(1, 1), (37, 53), (64, 31), (97, 40)]


def narrow(model, num_classes=5, **options):
    return build_model(model, num_classes, backbone="vgg16", rng=0, **NARROW, **options)


def test_published_crop_offsets():
    assert narrow("fcn32s").offset == (19, 19)
    m16 = narrow("fcn16s")
    assert (m16.align_pool4.offset_a, m16.align_pool4.offset_b, m16.offset) == (
        (0, 0),
        (5, 5),
        (27, 27),
    )
    m8 = narrow("fcn8s")
    assert (m8.align_pool4.offset_b, m8.align_pool3.offset_b, m8.offset) == (
        (5, 5),
        (9, 9),
        (31, 31),
    )
    assert m8.align_pool4.offset_a == m8.align_pool3.offset_a == (0, 0)


@pytest.mark.parametrize("model", VARIANTS)
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_logits_have_the_input_size(model, size):
    net = build_model(model, 3, backbone="vgg16", widths=(2, 2, 2, 2, 2), fc_width=2, rng=0)
    x = np.random.default_rng(0).random((1, 3, *size), dtype=np.float32)
    with inference(net):
        assert net(Tensor(x)).shape == (1, 3, *size)


def test_vgg16_layers_are_the_papers():
    net = narrow("fcn8s", learn_final_upsampling=False)
    convs = [
        c for i in range(1, 6) for c in getattr(net.backbone, f"conv{i}") if hasattr(c, "weight")
    ]
    assert [c.kernel_size for c in convs] == [(3, 3)] * 13
    assert [c.padding for c in convs] == [(100, 100)] + [(1, 1)] * 12
    pools = [m for m in net.modules() if isinstance(m, MaxPool2d)]
    assert [(p.kernel_size, p.stride, p.ceil_mode) for p in pools] == [((2, 2), (2, 2), True)] * 5
    assert (net.fc6.kernel_size, net.fc6.padding, net.fc7.kernel_size) == ((7, 7), (0, 0), (1, 1))
    assert [m.p for m in net.modules() if isinstance(m, Dropout)] == [0.5, 0.5]
    ups = {n: m for n, m in net.named_modules() if isinstance(m, ConvTranspose2d)}
    assert {n: (m.kernel_size[0], m.stride[0], m.bias) for n, m in ups.items()} == {
        "upscore2": (4, 2, None),
        "upscore_pool4": (4, 2, None),
        "upscore8": (16, 8, None),
    }
    for m in ups.values():
        np.testing.assert_array_equal(m.weight.numpy(), bilinear_kernel(5, m.kernel_size[0]))
    assert not net.upscore8.learnable and net.upscore2.learnable


@pytest.mark.parametrize("model", VARIANTS)
def test_expected_shapes_are_those_of_the_built_model(model):
    own = {k: v.shape for k, v in narrow(model).state_dict().items()}
    assert own == expected_shapes(model, 5, NARROW["widths"], NARROW["fc_width"])


@pytest.mark.slow
def test_full_size_fcn8s_names_and_shapes_match_the_port(torch):
    from torch_sources import PortFCN

    ours = {k: v.shape for k, v in build_model("fcn8s", 21, backbone="vgg16").state_dict().items()}
    port = PortFCN("fcn8s", device="meta").state_dict()
    table = dict(port_table("fcn8s"))
    assert sorted(table) == sorted(port)
    assert {table[k]: tuple(v.shape) for k, v in port.items()} == ours
    assert sum(int(np.prod(s)) for s in ours.values()) == sum(v.numel() for v in port.values())
    assert ours == expected_shapes("fcn8s", 21, (64, 128, 256, 512, 512), 4096)


def test_full_size_torchvision_table_matches_its_names_and_shapes(torch):
    from torch_sources import TorchvisionVGG16

    source = {k: tuple(v.shape) for k, v in TorchvisionVGG16(device="meta").state_dict().items()}
    table = dict(torchvision_table())
    assert sorted(set(source) - set(table)) == ["classifier.6.bias", "classifier.6.weight"]
    want = expected_shapes("fcn8s", 21, (64, 128, 256, 512, 512), 4096)
    for name, ours in table.items():
        assert int(np.prod(source[name])) == int(np.prod(want[ours])), name
        assert source[name][0] == want[ours][0], name


def numpy_state(module):
    return {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}


def preprocessed(torch, x, options):
    """What the source network expects, computed independently of ``Preprocess``."""
    order = [2, 1, 0] if options["channels"] == "BGR" else [0, 1, 2]
    mean, std = (np.array(options[k]).reshape(1, 3, 1, 1) for k in ("mean", "std"))
    return torch.from_numpy((options["scale"] * x[:, order] - mean) / std)


def assert_close(ours, ref, rtol):
    np.testing.assert_allclose(ours, ref, rtol=rtol, atol=rtol * np.abs(ref).max())


@pytest.mark.parametrize("model", VARIANTS)
def test_port_converts_to_the_same_logits_float64(torch, model):
    from torch_sources import PortFCN, randomise

    source = randomise(PortFCN(model, 5, **NARROW), dtype=torch.float64)
    converted = convert_state_dict(numpy_state(source))
    assert (converted.model, converted.num_classes, converted.kind) == (model, 5, model)
    assert converted.options["preprocess"] == CAFFE_BGR
    net = build_model(model, 5, dtype=np.float64, **converted.options)
    net.load_state_dict(converted.state)
    x = np.random.default_rng(1).random((2, 3, 45, 67))
    with inference(net):
        ours = net(Tensor(x)).numpy()
    with torch.no_grad():
        ref = source(preprocessed(torch, x, CAFFE_BGR)).numpy()
    assert ours.shape == ref.shape == (2, 5, 45, 67)
    assert_close(ours, ref, 1e-10)


def vgg16_as_port(torch, vgg, model, num_classes, fc_width):
    """The port's FCN initialised from torchvision's VGG16 as the port does it, with random
    score layers (converted ones start at zero, which would compare nothing)."""
    from torch_sources import PortFCN, randomise

    fcn = randomise(PortFCN(model, num_classes, **NARROW), seed=3, dtype=torch.float64)
    convs = [m for m in vgg.features if isinstance(m, torch.nn.Conv2d)]
    names = [f"conv{i}_{j}" for i, n in enumerate((2, 2, 3, 3, 3), 1) for j in range(1, n + 1)]
    with torch.no_grad():
        for conv, name in zip(convs, names, strict=True):
            getattr(fcn, name).weight.copy_(conv.weight)
            getattr(fcn, name).bias.copy_(conv.bias)
        for i, name in ((0, "fc6"), (3, "fc7")):
            layer = getattr(fcn, name)
            layer.weight.copy_(vgg.classifier[i].weight.view(layer.weight.shape))
            layer.bias.copy_(vgg.classifier[i].bias)
    return fcn


def test_torchvision_vgg16_converts_for_fine_tuning_float64(torch):
    from torch_sources import TorchvisionVGG16, randomise

    vgg = randomise(TorchvisionVGG16(**NARROW), dtype=torch.float64)
    converted = convert_state_dict(numpy_state(vgg), "fcn16s", 4)
    assert (converted.kind, converted.model, converted.num_classes) == ("vgg16", "fcn16s", 4)
    assert converted.options["preprocess"] == TORCHVISION
    for name in ("score_fr", "score_pool4"):
        assert (
            not converted.state[f"{name}.weight"].any()
            and not converted.state[f"{name}.bias"].any()
        )
    np.testing.assert_array_equal(converted.state["upscore16.weight"], bilinear_kernel(4, 32))
    net = build_model("fcn16s", 4, dtype=np.float64, **converted.options)
    net.load_state_dict(converted.state)
    # Give both the same random score layers and upsampling, then compare the logits.
    ref_net = vgg16_as_port(torch, vgg, "fcn16s", 4, NARROW["fc_width"])
    head = {k: v for k, v in numpy_state(ref_net).items() if k.startswith(("score", "upscore"))}
    net.load_state_dict(head, strict=False)
    x = np.random.default_rng(2).random((1, 3, 50, 41))
    with inference(net):
        ours = net(Tensor(x)).numpy()
    with torch.no_grad():
        ref = ref_net(preprocessed(torch, x, TORCHVISION)).numpy()
    assert_close(ours, ref, 1e-10)


def test_conversion_errors_list_missing_unexpected_and_misshapen(torch):
    from torch_sources import PortFCN

    state = numpy_state(PortFCN("fcn32s", 5, **NARROW))
    broken = dict(state)
    del broken["conv3_2.bias"]
    broken["extra.weight"] = np.zeros(3)
    with pytest.raises(
        ConversionError,
        match=r'Missing key\(s\): "conv3_2.bias".*Unexpected key\(s\): "extra.weight"',
    ):
        convert_state_dict(broken)
    broken = dict(state, **{"conv2_2.weight": np.zeros((8, 5, 3, 3))})
    with pytest.raises(
        ConversionError,
        match=r"size mismatch for conv2_2.weight: expected \(8, 8, 3, 3\).* \(8, 5, 3, 3\)",
    ):
        convert_state_dict(broken)
    with pytest.raises(ConversionError, match="not a known source.*found"):
        convert_state_dict({"encoder.weight": np.zeros(3)})
    with pytest.raises(ConversionError, match="--model fcn8s: the source is the port's fcn32s"):
        convert_state_dict(state, "fcn8s")
    with pytest.raises(ConversionError, match="--num-classes 21: the source's score_fr has 5"):
        convert_state_dict(state, num_classes=21)
