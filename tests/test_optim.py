"""Optimisers and schedules: parity with torch.optim step by step in float64, state_dict
round trips through an .npz without pickle, and clear errors."""

import math

import numpy as np
import pytest

from fcn_scratch import optim
from fcn_scratch.autograd import Tensor

SHAPES = [(3, 2, 3, 3), (3,), (4, 5)]
RTOL, ATOL = 1e-12, 1e-14  # float64: only rounding-order differences are allowed


def _params(seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return [Tensor(rng.standard_normal(s).astype(dtype), requires_grad=True) for s in SHAPES]


def _grads(step, params):
    """A deterministic gradient per step: of a quadratic (it depends on p) plus noise;
    parameter 1 gets no gradient on odd steps (its update must be skipped)."""
    rng = np.random.default_rng(100 + step)
    out = []
    for i, p in enumerate(params):
        data = p.data if isinstance(p, Tensor) else p.detach().numpy()
        g = 0.5 * data + rng.standard_normal(data.shape)
        out.append(None if (i == 1 and step % 2) else g)
    return out


def _run_ours(opt, params, steps, start=0):
    for step in range(start, start + steps):
        for p, g in zip(params, _grads(step, params), strict=True):
            p.grad = g
        opt.step()
        opt.zero_grad()


def _step_both_and_compare(torch, step, ours_opt, params, their_opt, theirs):
    """Give both optimisers step ``step``'s gradients, step both, compare every parameter."""
    for p, g in zip(params, _grads(step, params), strict=True):
        p.grad = g
    for p, g in zip(theirs, _grads(step, theirs), strict=True):
        p.grad = None if g is None else torch.from_numpy(g)
    ours_opt.step()
    their_opt.step()
    for i, (a, b) in enumerate(zip(params, theirs, strict=True)):
        np.testing.assert_allclose(
            a.data, b.detach().numpy(), rtol=RTOL, atol=ATOL, err_msg=f"step {step}, param {i}"
        )


OPTIMISERS = {
    "sgd": ({"lr": 0.1}, {"lr": 0.1}),
    "sgd-momentum": ({"lr": 0.05, "momentum": 0.9}, {"lr": 0.05, "momentum": 0.9}),
    "sgd-momentum-wd": (
        {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-2},
        {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-2},
    ),
    "sgd-nesterov-wd": (
        {"lr": 0.05, "momentum": 0.8, "weight_decay": 5e-3, "nesterov": True},
        {"lr": 0.05, "momentum": 0.8, "weight_decay": 5e-3, "nesterov": True},
    ),
    "adam": ({"lr": 1e-2}, {"lr": 1e-2}),
    "adam-wd-betas": (
        {"lr": 3e-3, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 1e-2},
        {"lr": 3e-3, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 1e-2},
    ),
    "adamw": ({"lr": 1e-2}, {"lr": 1e-2}),
    "adamw-wd-betas": (
        {"lr": 3e-3, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.1},
        {"lr": 3e-3, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.1},
    ),
}


def _kind(name):
    return {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW"}[name.split("-")[0]]


@pytest.mark.torch
@pytest.mark.parametrize("name", list(OPTIMISERS))
def test_matches_torch_step_by_step(name, torch):
    ours_kw, torch_kw = OPTIMISERS[name]
    kind = _kind(name)
    params = _params()
    theirs = [torch.tensor(p.data.copy(), requires_grad=True) for p in params]
    ours_opt = getattr(optim, kind)(params, **ours_kw)
    their_opt = getattr(torch.optim, kind)(theirs, **torch_kw)
    for step in range(6):
        _step_both_and_compare(torch, step, ours_opt, params, their_opt, theirs)
        ours_opt.zero_grad()
        their_opt.zero_grad()


@pytest.mark.parametrize("name", list(OPTIMISERS))
def test_state_dict_round_trip_through_npz(name, tmp_path):
    ours_kw, _ = OPTIMISERS[name]
    kind = getattr(optim, _kind(name))
    straight = _params()
    opt = kind(straight, **ours_kw)
    _run_ours(opt, straight, 3)

    copies = [Tensor(p.data.copy(), requires_grad=True) for p in straight]
    np.savez(tmp_path / "opt.npz", **opt.state_dict())
    with np.load(tmp_path / "opt.npz", allow_pickle=False) as f:
        state = dict(f)
    restored = kind(copies, lr=123.0)  # hyperparameters come back from the state too
    restored.load_state_dict(state)
    assert restored.lr == opt.lr

    _run_ours(opt, straight, 3, start=3)
    _run_ours(restored, copies, 3, start=3)
    for a, b in zip(straight, copies, strict=True):
        assert np.array_equal(a.data, b.data)


def test_state_dict_is_a_snapshot():
    params = _params()
    opt = optim.SGD(params, lr=0.1, momentum=0.9)
    _run_ours(opt, params, 1)
    state = opt.state_dict()
    before = state["momentum_buffer.0"].copy()
    _run_ours(opt, params, 2, start=1)
    assert np.array_equal(state["momentum_buffer.0"], before)


def test_float32_parameters_stay_float32():
    params = _params(dtype=np.float32)
    opt = optim.Adam(params, lr=1e-2)
    for p, g in zip(params, _grads(0, params), strict=True):
        p.grad = None if g is None else g.astype(np.float32)
    before = params[0].data.copy()
    opt.step()
    assert all(p.data.dtype == np.float32 for p in params)
    assert not np.array_equal(before, params[0].data)


def test_load_state_dict_errors():
    params = _params()
    opt = optim.Adam(params)
    _run_ours(opt, params, 1)
    state = opt.state_dict()
    with pytest.raises(ValueError, match=r"'exp_avg.0' has shape \(3, 2, 3, 3\)"):
        optim.Adam(
            [Tensor(np.zeros((2, 2)), requires_grad=True) for _ in range(3)]
        ).load_state_dict(state)
    with pytest.raises(ValueError, match="group 0 has 3 parameters in the state, but"):
        optim.Adam(params[:1]).load_state_dict(state)
    with pytest.raises(KeyError, match="missing entries \\['group0.momentum'"):
        optim.SGD(params, lr=0.1).load_state_dict(state)
    sgd_state = {**state, "group0.momentum": 0.0, "group0.nesterov": False}
    with pytest.raises(KeyError, match="unexpected entry 'group0.betas'"):
        optim.SGD(params, lr=0.1).load_state_dict(sgd_state)
    with pytest.raises(ValueError, match="entry 'group1.lr' is for a group"):
        optim.Adam(params).load_state_dict({**state, "group1.lr": 0.1})


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda p: optim.SGD([], lr=0.1), "empty parameter list"),
        (lambda p: optim.SGD(p, lr=-1), "lr must be >= 0"),
        (lambda p: optim.SGD(p, lr=0.1, nesterov=True), "nesterov needs momentum"),
        (lambda p: optim.Adam(p, betas=(0.9, 1.0)), "betas"),
        (lambda p: optim.CosineSchedule(optim.SGD(p, lr=0.1), total_steps=0), "total_steps"),
        (lambda p: optim.StepSchedule(optim.SGD(p, lr=0.1), step_size=0), "step_size"),
    ],
    ids=["empty", "negative-lr", "nesterov", "betas", "cosine-steps", "step-size"],
)
def test_bad_options(make, match):
    with pytest.raises(ValueError, match=match):
        make(_params())


# ---- schedules ---------------------------------------------------------------------------

SCHEDULES = {
    "step": (
        lambda o: optim.StepSchedule(o, step_size=3, gamma=0.5),
        lambda t, o: t.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5),
    ),
    "cosine": (
        lambda o: optim.CosineSchedule(o, total_steps=10, min_lr=0.01),
        lambda t, o: t.optim.lr_scheduler.CosineAnnealingLR(o, T_max=10, eta_min=0.01),
    ),
    "poly": (
        lambda o: optim.PolySchedule(o, total_steps=10, power=0.9),
        lambda t, o: t.optim.lr_scheduler.PolynomialLR(o, total_iters=10, power=0.9),
    ),
}


@pytest.mark.torch
@pytest.mark.parametrize("name", list(SCHEDULES))
def test_schedules_match_torch(name, torch):
    ours_make, theirs_make = SCHEDULES[name]
    opt = optim.SGD(_params(), lr=0.2)
    schedule = ours_make(opt)
    their_opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.2)
    theirs = theirs_make(torch, their_opt)
    for _ in range(10):  # torch's schedules are defined up to total_steps
        their_opt.step()
        theirs.step()
        schedule.step()
        assert opt.lr == pytest.approx(their_opt.param_groups[0]["lr"], rel=RTOL, abs=ATOL)


def test_schedule_closed_forms_and_round_trip():
    opt = optim.SGD(_params(), lr=1.0)
    cosine = optim.CosineSchedule(opt, total_steps=4)
    lrs = []
    for _ in range(6):
        cosine.step()
        lrs.append(opt.lr)
    expected = [(1 + math.cos(math.pi * min(t, 4) / 4)) / 2 for t in range(1, 7)]
    assert lrs == pytest.approx(expected)  # held at min_lr (0) after total_steps

    opt2 = optim.SGD(_params(), lr=7.0)
    restored = optim.CosineSchedule(opt2, total_steps=4)
    restored.load_state_dict(cosine.state_dict())
    assert restored.t == 6 and restored.base_lrs == [1.0] and opt2.lr == opt.lr
    constant = optim.ConstantSchedule(opt2)
    constant.step()
    assert opt2.lr == opt.lr
    poly = optim.PolySchedule(optim.SGD(_params(), lr=2.0), total_steps=10, power=2)
    assert poly.lr_at(5) == pytest.approx(2.0 * 0.25) and poly.lr_at(12) == 0.0
    with pytest.raises(KeyError, match="base_lrs"):
        poly.load_state_dict({"t": 1})


# ---- parameter groups and warm-up ----------------------------------------------------------


def _fcn_groups(params, lr):
    """The FCN recipe: parameter 1 (a bias) at twice the lr and without weight decay."""
    return [
        {"params": [params[0], params[2]]},
        {"params": [params[1]], "lr": 2 * lr, "weight_decay": 0.0},
    ]


@pytest.mark.torch
@pytest.mark.parametrize("kind", ["SGD", "Adam", "AdamW"])
def test_parameter_groups_match_torch_with_a_schedule(kind, torch):
    """Groups with their own lr and weight decay, a warm-up then poly decay, and a change of
    one group's lr by hand between steps: parameters and lrs follow torch step by step."""
    extra = {"momentum": 0.9} if kind == "SGD" else {}
    params = _params()
    theirs = [torch.tensor(p.data.copy(), requires_grad=True) for p in params]
    ours_opt = getattr(optim, kind)(_fcn_groups(params, 0.01), lr=0.01, weight_decay=0.05, **extra)
    their_opt = getattr(torch.optim, kind)(
        _fcn_groups(theirs, 0.01), lr=0.01, weight_decay=0.05, **extra
    )
    assert [len(g["params"]) for g in ours_opt.param_groups] == [2, 1]
    assert ours_opt.param_groups[1]["weight_decay"] == 0.0
    assert ours_opt.param_groups[0]["weight_decay"] == 0.05
    schedule = optim.PolySchedule(ours_opt, total_steps=8, power=0.9, warmup_steps=3)
    lr_sched = torch.optim.lr_scheduler
    their_schedule = lr_sched.SequentialLR(
        their_opt,
        [
            lr_sched.LinearLR(their_opt, start_factor=0.1, total_iters=3),
            lr_sched.PolynomialLR(their_opt, total_iters=5, power=0.9),
        ],
        milestones=[3],
    )
    for step in range(8):
        _step_both_and_compare(torch, step, ours_opt, params, their_opt, theirs)
        schedule.step()
        their_schedule.step()
        for ours_g, their_g in zip(ours_opt.param_groups, their_opt.param_groups, strict=True):
            assert ours_g["lr"] == pytest.approx(their_g["lr"], rel=1e-12, abs=1e-15)
        ours_opt.zero_grad()
        their_opt.zero_grad()
    assert ours_opt.param_groups[1]["lr"] == 0.0  # the poly schedule has run out
    ours_opt.param_groups[0]["lr"] = their_opt.param_groups[0]["lr"] = 0.003  # by hand
    for p, g in zip(params, _grads(9, params), strict=True):
        p.grad = g
    for p, g in zip(theirs, _grads(9, theirs), strict=True):
        p.grad = None if g is None else torch.from_numpy(g)
    ours_opt.step()
    their_opt.step()
    for a, b in zip(params, theirs, strict=True):
        np.testing.assert_allclose(a.data, b.detach().numpy(), rtol=RTOL, atol=ATOL)


def test_groups_round_trip_and_freeze_with_lr_zero(tmp_path):
    params = _params()
    opt = optim.AdamW(_fcn_groups(params, 0.01), lr=0.01)
    _run_ours(opt, params, 2)
    np.savez(tmp_path / "opt.npz", **opt.state_dict())
    with np.load(tmp_path / "opt.npz", allow_pickle=False) as f:
        state = dict(f)
    copies = [Tensor(p.data.copy(), requires_grad=True) for p in params]
    restored = optim.AdamW(_fcn_groups(copies, 5.0), lr=5.0)
    restored.load_state_dict(state)
    assert [g["lr"] for g in restored.param_groups] == [0.01, 0.02]
    assert restored.param_groups[0]["betas"] == (0.9, 0.999)
    _run_ours(opt, params, 2, start=2)
    _run_ours(restored, copies, 2, start=2)
    for a, b in zip(params, copies, strict=True):
        assert np.array_equal(a.data, b.data)
    with pytest.raises(ValueError, match="group 0 has 2 parameters in the state, but"):
        optim.AdamW([{"params": copies[:1]}, {"params": copies[1:]}]).load_state_dict(state)


def test_warmup_closed_form():
    opt = optim.SGD(_params(), lr=1.0)
    schedule = optim.ConstantSchedule(opt, warmup_steps=4, warmup_start=0.2)
    lrs = [opt.lr]
    for _ in range(6):
        schedule.step()
        lrs.append(opt.lr)
    assert lrs == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0, 1.0, 1.0])


@pytest.mark.parametrize(
    "groups, match",
    [
        ([{"params": []}], "parameter group 0 has no parameters"),
        ([{"params": [0]}, {"params": [1], "learning_rate": 0.1}], "group 1 has unknown keys"),
        ([{"params": [0]}, {"params": [0]}], "a parameter appears twice"),
        ([{"params": [0], "lr": -0.1}], "group 0: lr must be >= 0, got -0.1"),
        ([{"params": [0], "momentum": 0.9}], "unknown keys \\['momentum'\\]"),
    ],
    ids=["empty-group", "unknown-key", "twice", "negative-lr", "sgd-key-on-adam"],
)
def test_bad_groups(groups, match):
    params = _params()
    groups = [{**g, "params": [params[i] for i in g["params"]]} for g in groups]
    with pytest.raises(ValueError, match=match):
        optim.Adam(groups, lr=0.1)


def test_bad_warmup():
    opt = optim.SGD(_params(), lr=1.0)
    with pytest.raises(ValueError, match="PolySchedule: warmup_steps \\(10\\) must be fewer"):
        optim.PolySchedule(opt, total_steps=10, warmup_steps=10)
    with pytest.raises(ValueError, match="warmup_start must be in \\(0, 1\\], got 0"):
        optim.ConstantSchedule(opt, warmup_steps=2, warmup_start=0)


WARMED_UP = {  # ours with 4 warm-up steps of 12; torch: LinearLR, then the schedule
    "step": (
        lambda o: optim.StepSchedule(o, step_size=3, gamma=0.5, warmup_steps=4),
        lambda t, o: t.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5),
    ),
    "cosine": (
        lambda o: optim.CosineSchedule(o, total_steps=12, min_lr=0.01, warmup_steps=4),
        lambda t, o: t.optim.lr_scheduler.CosineAnnealingLR(o, T_max=8, eta_min=0.01),
    ),
    "constant": (
        lambda o: optim.ConstantSchedule(o, warmup_steps=4),
        lambda t, o: t.optim.lr_scheduler.ConstantLR(o, factor=1.0),
    ),
}


@pytest.mark.torch
@pytest.mark.parametrize("name", list(WARMED_UP))
def test_warmup_matches_torch_sequential_lr(name, torch):
    ours_make, theirs_make = WARMED_UP[name]
    opt = optim.SGD(_params(), lr=0.2)
    schedule = ours_make(opt)
    their_opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.2)
    lr_sched = torch.optim.lr_scheduler
    warm = lr_sched.LinearLR(their_opt, start_factor=0.1, total_iters=4)
    theirs = lr_sched.SequentialLR(their_opt, [warm, theirs_make(torch, their_opt)], [4])
    assert opt.lr == pytest.approx(their_opt.param_groups[0]["lr"], rel=RTOL)
    for _ in range(12):
        their_opt.step()
        theirs.step()
        schedule.step()
        assert opt.lr == pytest.approx(their_opt.param_groups[0]["lr"], rel=1e-12, abs=1e-15)


def _views(block, shapes, gap=0):
    """Views of a flat array with the given shapes, one after the other (``gap`` elements
    left between them)."""
    views, offset = [], 0
    for shape in shapes:
        size = int(np.prod(shape))
        views.append(block[offset : offset + size].reshape(shape))
        offset += size + gap
    return views


def test_adjacent_joins_arrays_that_lie_one_after_the_other():
    shapes = [(3, 4), (5,), (2, 2, 3)]
    block = np.arange(40, dtype=np.float32)
    flat = optim.adjacent(_views(block, shapes))
    assert flat is not None and np.shares_memory(flat, block)
    np.testing.assert_array_equal(flat, block[:29])
    assert optim.adjacent(_views(block, shapes, gap=1)) is None
    assert optim.adjacent([block[:4], block[4:8].astype(np.float64)]) is None
    assert optim.adjacent([block[:12].reshape(3, 4).T, block[12:16]]) is None  # not C order
    assert optim.adjacent([block[4:8], block[:4]]) is None  # out of order


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_adam_updates_adjacent_parameters_in_place_with_the_same_bits(weight_decay, monkeypatch):
    rng = np.random.default_rng(3)
    shapes = [(3, 4), (5,), (2, 2, 3)]
    block = rng.standard_normal(29).astype(np.float32)
    joined = [Tensor(v, requires_grad=True) for v in _views(block, shapes)]
    apart = [Tensor(v.copy(), requires_grad=True) for v in _views(block, shapes)]
    opts = [optim.Adam(ps, lr=0.01, weight_decay=weight_decay) for ps in (joined, apart)]
    for _ in range(3):
        grads = [rng.standard_normal(s).astype(np.float32) for s in shapes]
        grad_block = np.concatenate([g.ravel() for g in grads])
        for p, g in zip(apart, grads):
            p.grad = g.copy()
        opts[1].step()
        for p, g in zip(joined, _views(grad_block, shapes)):
            p.grad = g
        with monkeypatch.context() as m:  # nothing is gathered: no concatenation
            m.setattr(np, "concatenate", None)
            opts[0].step()
    for a, b in zip(joined, apart):
        assert a.data.tobytes() == b.data.tobytes()
        assert np.shares_memory(a.data, block)  # updated where it lies
