"""fcn_scratch.models: output sizes, crop geometry, convolutionalize, summary, whole-network
gradient checks and PyTorch parity."""

from fractions import Fraction

import numpy as np
import pytest

from fcn_scratch import Tensor, gradcheck, nn
from fcn_scratch import functional as F
from fcn_scratch.gradcheck_cases import shuffled_linspace
from fcn_scratch.models import FCN8s, FCN16s, FCN32s, UnpoolNet, build_model, convolutionalize
from fcn_scratch.models.geometry import CoordMap, align, layer_map, output_offset

TINY = dict(widths=(2, 3, 4, 4, 5), convs_per_stage=(1, 1, 1, 1, 1))
TINY_FCN = dict(TINY, fc_width=6, score_init="kaiming_normal")
SIZES = [(1, 1), (5, 7), (17, 31), (33, 33), (37, 45), (63, 65), (71, 29)]


def tiny(name, **options):
    extra = TINY_FCN if name.startswith("fcn") else TINY
    return build_model(name, 3, **extra, rng=0, **options)


@pytest.mark.parametrize("name", ["fcn32s", "fcn16s", "fcn8s", "unpool"])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_logits_have_the_input_size(name, size):
    model = tiny(name)
    x = Tensor(np.random.default_rng(0).standard_normal((2, 3, *size)).astype(np.float32))
    assert model(x).shape == (2, 3, *size)


@pytest.mark.parametrize("num_stages", [1, 4, 5])
@pytest.mark.parametrize("size", [(1, 1), (17, 31), (37, 45)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_unpool_stage_count_sets_depth_and_keeps_the_input_size(num_stages, size):
    """num_stages poolings down, as many unpoolings back up (3 by default); the middle
    sits at 1/2**num_stages with the last built stage's width."""
    model = tiny("unpool", num_stages=num_stages)
    assert tiny("unpool").encoder.num_stages == 3
    assert [name for name, _ in model.encoder.named_children()][-2:] == [
        f"conv{num_stages}",
        f"pool{num_stages}",
    ]
    assert hasattr(model, f"dec{num_stages}") and not hasattr(model, f"dec{num_stages + 1}")
    assert model.fc6[0].in_channels == TINY["widths"][num_stages - 1]
    x = Tensor(np.random.default_rng(0).standard_normal((2, 3, *size)).astype(np.float32))
    assert model(x).shape == (2, 3, *size)


@pytest.mark.parametrize("bad", [0, 6, 2.0, True])
def test_unpool_stage_count_errors(bad):
    with pytest.raises(ValueError, match=rf"num_stages must be in 1\.\.5, got {bad!r}"):
        tiny("unpool", num_stages=bad)


def test_build_model_names_and_errors():
    assert isinstance(tiny("fcn8s"), FCN8s) and isinstance(tiny("unpool"), UnpoolNet)
    assert isinstance(tiny("fcn16s"), FCN16s) and isinstance(tiny("fcn32s"), FCN32s)
    with pytest.raises(ValueError, match=r"unknown model 'fcn4s', expected one of \['fcn32s'"):
        build_model("fcn4s", 3)
    with pytest.raises(ValueError, match="widths must be 5 positive ints"):
        build_model("fcn8s", 3, widths=(4, 4, 4))


@pytest.mark.parametrize("name", ["fcn8s", "unpool"])
def test_same_seed_builds_the_same_model(name):
    a, b = tiny(name).state_dict(), tiny(name).state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    c = build_model(name, 3, **(TINY_FCN if name == "fcn8s" else TINY), rng=1).state_dict()
    assert not np.array_equal(
        a["backbone.conv1.0.weight" if name == "fcn8s" else "encoder.conv1.0.weight"],
        c["backbone.conv1.0.weight" if name == "fcn8s" else "encoder.conv1.0.weight"],
    )


def test_upsampling_initialised_bilinear_final_frozen():
    model = tiny("fcn8s")
    assert model.upscore2.weight.requires_grad and model.upscore_pool4.weight.requires_grad
    assert not model.upscore8.weight.requires_grad
    np.testing.assert_array_equal(model.upscore8.weight.numpy(), nn.init.bilinear_kernel(3, 16))
    default = FCN8s(3, **TINY, rng=0)  # the paper starts every score layer at zero
    for layer in (default.score_fr, default.score_pool4, default.score_pool3):
        assert not layer.weight.numpy().any()


# ---- geometry ---------------------------------------------------------------------------


def test_window_and_inverse_maps():
    conv = nn.Conv2d(1, 1, 5, stride=2, padding=1, dilation=(1, 2))
    m = layer_map(conv)  # x_in = 2*x_out + (d*(k-1)/2 - p)
    assert m.scale == (2, 2) and m.shift == (1, 3)
    tconv = nn.ConvTranspose2d(1, 1, 4, stride=2)
    assert layer_map(tconv) == CoordMap((Fraction(1, 2),) * 2, (Fraction(-3, 4),) * 2)
    assert layer_map(nn.Sequential(conv, tconv)) == layer_map(conv).then(layer_map(tconv))
    with pytest.raises(TypeError, match="geometry: no coordinate map for Linear"):
        layer_map(nn.Linear(2, 2))


def test_align_and_output_offset_errors():
    a = CoordMap((Fraction(16),) * 2, (Fraction(-17, 2),) * 2)
    b = CoordMap((Fraction(16),) * 2, (Fraction(15, 2),) * 2)
    assert align(a, b).offset_a == (1, 1) and align(a, b).offset_b == (0, 0)
    assert align(b, a).offset_b == (1, 1) and align(a, b).fused == b
    with pytest.raises(ValueError, match="different scales"):
        align(a, CoordMap((Fraction(8),) * 2, b.shift))
    with pytest.raises(ValueError, match="misaligned by 1/2 cells"):
        align(a, CoordMap(b.scale, (Fraction(-1, 2),) * 2))
    with pytest.raises(ValueError, match="cannot be cropped to the input"):
        output_offset(CoordMap((Fraction(1),) * 2, (Fraction(3),) * 2))


def test_crop_offsets_from_geometry():
    """Hand derivation: a 3x3 pad-1 conv maps x_in = x_out; a 2x2 stride-2 pool x = 2y + 1/2,
    so pool_i cells sit at 2^i * y + (2^i - 1)/2: pool3 8y + 7/2, pool4 16y + 15/2, pool5
    (and score_fr) 32y + 31/2. A k=2f, s=f transposed conv maps u to y = (u - (2f-1)/2)/f.
    upscore2(score_fr): 16u - 17/2, exactly one cell (16 pixels) before pool4's
    16y + 15/2: crop it by 1. Then upscore_pool4: 8u - 9/2, one cell before pool3: crop 1.
    Final maps: FCN-32s u - 16, FCN-16s u - 8, FCN-8s u - 4."""
    m8, m16, m32 = tiny("fcn8s"), tiny("fcn16s"), tiny("fcn32s")
    assert m8.map_of_pool(3) == CoordMap((8, 8), (Fraction(7, 2),) * 2)
    assert m8.map_of_score_fr() == CoordMap((32, 32), (Fraction(31, 2),) * 2)
    assert (m32.offset, m16.offset, m8.offset) == ((16, 16), (8, 8), (4, 4))
    assert m16.align_pool4.offset_a == (1, 1) and m16.align_pool4.offset_b == (0, 0)
    assert m8.align_pool3.offset_a == (1, 1) and m8.align_pool3.offset_b == (0, 0)
    # A 7x7 fc6 (padding 3) keeps every offset; the maps do not depend on widths.
    assert build_model("fcn8s", 2, fc6_kernel=7, **TINY).offset == (4, 4)


def test_crops_put_upsampled_cells_at_their_receptive_field_centres():
    """An impulse at score_fr cell (i, j) spreads, through a bilinear upsampling and the
    geometric crop, symmetrically around the centre of the cell's image window, which is
    pixel 32*i + 15.5 (pool5 cell i covers pixels 32i .. 32i+31)."""
    model = tiny("fcn32s")
    score = np.zeros((1, 3, 3, 3), np.float64)
    score[0, 1, 2, 1] = 1.0
    up = model.upscore(Tensor(score.astype(np.float32))).numpy()[0, 1]
    oy, ox = model.offset
    window = up[oy : oy + 96, ox : ox + 96]
    rows, cols = np.nonzero(window == window.max())
    assert set(rows) == {32 * 2 + 15, 32 * 2 + 16} and set(cols) == {32 + 15, 32 + 16}
    # Same for the skip: upscore2 of score_fr cell i peaks between pool4 cells 2i and 2i+1.
    m8 = tiny("fcn8s")
    up2 = m8.upscore2(Tensor(score.astype(np.float32))).numpy()[0, 1]
    (dy, dx) = m8.align_pool4.offset_a
    rows, cols = np.nonzero(up2[dy:, dx:] == up2.max())
    assert set(rows) == {4, 5} and set(cols) == {2, 3}


# ---- convolutionalize ---------------------------------------------------------------------


def small_classifier():
    """18x18 images -> 6 x 3 x 3 features (total stride 4) -> FC 54->10 -> FC 10->10 -> 5."""
    rng = np.random.default_rng(0)
    kw = dict(dtype=np.float64, rng=rng)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, **kw),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, **kw),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(54, 10, **kw),
        nn.ReLU(),
        nn.Linear(10, 10, **kw),
        nn.ReLU(),
        nn.Linear(10, 5, **kw),
    )


def test_convolutionalize_same_outputs_and_a_spatial_map():
    classifier = small_classifier()
    for layer in classifier:
        if isinstance(layer, nn.Linear):
            layer.bias.data[...] = np.random.default_rng(1).standard_normal(layer.out_features)
    fcn = convolutionalize(classifier, (3, 18, 18))
    convs = [m for m in fcn if isinstance(m, nn.Conv2d)]
    assert [c.kernel_size for c in convs[2:]] == [(3, 3), (1, 1), (1, 1)]  # the FC layers
    assert not any(isinstance(m, (nn.Linear, nn.Flatten)) for m in fcn)

    x = np.random.default_rng(2).standard_normal((2, 3, 18, 18))
    np.testing.assert_allclose(
        fcn(Tensor(x)).numpy()[:, :, 0, 0], classifier(Tensor(x)).numpy(), rtol=1e-12, atol=1e-12
    )
    # As the paper's 384x384 AlexNet input gives 12x12 features and a 6x6 map, a 30x30 input
    # gives 6x6 features and a 4x4 map; cell (i, j) is the classifier on the window at 4*(i, j).
    big = np.random.default_rng(3).standard_normal((1, 3, 30, 30))
    scores = fcn(Tensor(big)).numpy()
    assert scores.shape == (1, 5, 4, 4)
    for i, j in [(0, 0), (1, 3), (3, 2)]:
        window = big[:, :, 4 * i : 4 * i + 18, 4 * j : 4 * j + 18]
        np.testing.assert_allclose(
            scores[:, :, i, j], classifier(Tensor(window)).numpy(), rtol=1e-12, atol=1e-12
        )
    np.testing.assert_array_equal(classifier[7].weight.numpy().shape, (10, 54))  # untouched


def test_convolutionalize_errors():
    with pytest.raises(ValueError, match="no Flatten"):
        convolutionalize(nn.Sequential(nn.Conv2d(1, 1, 1, rng=0)), (1, 4, 4))
    with pytest.raises(
        ValueError,
        match="Linear expects 54 inputs but the features reaching "
        r"it are 6 x 4 x 4 = 96",
    ):
        convolutionalize(small_classifier(), (3, 22, 22))


# ---- summary ------------------------------------------------------------------------------


def test_summary_against_hand_counts(capsys):
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, rng=0),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.ConvTranspose2d(4, 2, 4, stride=2, bias=False, rng=0),
        nn.Flatten(),
        nn.Linear(200, 7, rng=0),
    )
    s = model.summary((3, 8, 8))
    assert [r.output_shape for r in s.rows] == [
        (1, 4, 8, 8),
        (1, 4, 8, 8),
        (1, 4, 4, 4),
        (1, 2, 10, 10),
        (1, 200),
        (1, 7),
    ]
    # conv: 4*3*9 + 4 weights; 4*8*8 outputs x 27 taps.  tconv: 4*2*16; 4*4*4 inputs x 2*16.
    assert [r.params for r in s.rows] == [112, 0, 0, 128, 0, 1407]
    assert [r.macs for r in s.rows] == [256 * 27, 0, 0, 64 * 32, 0, 1400]
    assert (s.total_params, s.total_macs) == (112 + 128 + 1407, 6912 + 2048 + 1400)
    out = capsys.readouterr().out
    assert "ConvTranspose2d" in out and "total MACs   10,360" in out


def test_summary_of_fcn8s_counts_every_parameter_and_frozen_ones_apart():
    model = tiny("fcn8s")
    s = model.summary((3, 16, 16), print_table=False)
    w = TINY["widths"]
    convs = [(3, w[0]), (w[0], w[1]), (w[1], w[2]), (w[2], w[3]), (w[3], w[4])]
    backbone = sum((ci * 9 + 1) * co for ci, co in convs)
    head = (w[4] * 9 + 1) * 6 + (6 + 1) * 6 + (6 + 1) * 3  # fc6 3x3, fc7, score_fr
    skips = (w[3] + 1) * 3 + (w[2] + 1) * 3
    upsampling = 3 * 3 * (4 * 4 + 4 * 4 + 16 * 16)
    assert s.total_params == backbone + head + skips + upsampling
    assert s.trainable_params == s.total_params - 3 * 3 * 16 * 16  # upscore8 is frozen
    assert s.rows[-1].name == "upscore8" and s.rows[-1].output_shape == (1, 3, 24, 24)
    assert model.training  # summary restores the mode


# ---- whole-network gradient checks ---------------------------------------------------------


def parameters_as_inputs(model, x, target):
    """gradcheck's fn(x, *params): plugs the given tensors into the model, returns the loss."""
    slots = [
        (module, attr)
        for module in model.modules()
        for attr, value in vars(module).items()
        if isinstance(value, Tensor)
    ]
    params = [getattr(module, attr) for module, attr in slots]

    def fn(x, *tensors):
        for (module, attr), t in zip(slots, tensors, strict=True):
            setattr(module, attr, t)
        return F.cross_entropy(model(x), target)

    return fn, [x, *params]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["fcn8s", "unpool"])
def test_whole_network_directional_gradients(name):
    """Every parameter and the input, along random directions, in float64: FCN-8s with its
    crops, skips, learned upsampling and a loss with ignored pixels; the unpooling model
    with its recorded indices and odd sizes."""
    options = dict(learn_final_upsampling=True) if name == "fcn8s" else {}
    model = tiny(name, dtype=np.float64, **options)
    rng = np.random.default_rng(0)
    for module in model.modules():  # zero biases would put whole unpooled (all-zero)
        if getattr(module, "bias", None) is not None:  # windows exactly on ReLU's kink
            module.bias.data[...] = rng.uniform(0.05, 0.2, module.bias.shape) * rng.choice(
                [-1, 1], module.bias.shape
            )
    n = 2 if name == "unpool" else 1  # batch norm: more than the 2x2 middle's four values
    x = shuffled_linspace(rng, (n, 3, 13, 11)) * 3.0  # distinct values: no pooling ties
    target = rng.integers(0, 3, (n, 13, 11))
    target[0, :2] = 255
    fn, inputs = parameters_as_inputs(model, x, target)
    result = gradcheck(fn, inputs, max_full=0, directions=3)
    assert result.checked == 3 * len(inputs)
    assert result.passed, result.details


# ---- PyTorch parity -------------------------------------------------------------------------


@pytest.mark.torch
@pytest.mark.parametrize(
    "name,size,batch_norm",
    [
        ("fcn8s", (37, 45), False),
        ("fcn8s", (64, 64), False),
        ("fcn8s", (35, 33), True),
        ("fcn16s", (33, 31), False),
        ("unpool", (37, 45), True),
    ],
    ids=str,
)
def test_model_matches_torch(torch, name, size, batch_norm):
    """Logits, loss, every parameter gradient and the batch-norm running statistics
    against the same network in torch (training mode)."""
    from fcn_scratch.models.torch_mirror import torch_model

    options = dict(fc_width=12, score_init="kaiming_normal") if name != "unpool" else {}
    options["batch_norm"] = batch_norm
    model = build_model(name, 4, widths=(4, 6, 8, 8, 8), dtype=np.float64, rng=0, **options)
    twin = torch_model(model)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, *size))
    target = rng.integers(0, 4, (2, *size))
    target[:, 0] = 255
    logits = model(Tensor(x))
    loss = F.cross_entropy(logits, target)
    loss.backward()
    logits_t = twin(torch.from_numpy(x))
    loss_t = torch.nn.functional.cross_entropy(logits_t, torch.from_numpy(target), ignore_index=255)
    loss_t.backward()
    np.testing.assert_allclose(logits.numpy(), logits_t.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(loss.item(), loss_t.item(), rtol=1e-12)
    theirs = dict(twin.named_parameters())
    assert list(theirs) == [name for name, _ in model.named_parameters()]
    for name, p in model.named_parameters():
        if p.requires_grad:
            np.testing.assert_allclose(
                p.grad, theirs[name].grad.numpy(), rtol=1e-9, atol=1e-12, err_msg=name
            )
        else:
            assert p.grad is None and theirs[name].grad is None, name
    buffers = dict(twin.named_buffers())
    assert list(buffers) == [name for name, _ in model.named_buffers()]
    assert bool(buffers) == batch_norm
    for name, b in model.named_buffers():
        np.testing.assert_allclose(b, buffers[name].numpy(), rtol=1e-10, atol=1e-12, err_msg=name)
