"""Lanes in forked processes: the same bits as thread lanes, and faults reported, not hidden."""

import os
import signal
from functools import partial

import numpy as np
import pytest

from fcn_scratch import lane_processes, optim, parallel
from fcn_scratch import random as fcn_random
from fcn_scratch.autograd import is_grad_enabled, no_grad
from fcn_scratch.lane_placement import HERE, SPREAD, Placement
from fcn_scratch.lane_processes import LaneProcessError, ProcessLanes, training_lanes
from fcn_scratch.models import build_model
from fcn_scratch.train import TrainConfig, Trainer
from fcn_scratch.train.checkpoint import load_checkpoint
from fcn_scratch.train.trainer import lane_loss

pytestmark = pytest.mark.skipif(not lane_processes.forks(), reason="lanes fork on Linux only")

SMALL = dict(widths=(4, 4, 8, 8, 8), convs_per_stage=(1, 1, 1, 1, 1), fc_width=8)


def batch(n=6, size=32, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 3, size, size), dtype=np.float32)
    y = rng.integers(0, classes, (n, size, size))
    y[0, :5] = 255
    return x, y


def step(lanes, x, y) -> tuple[list, dict]:
    """One lane step of ``lanes.model`` on (x, y): the lanes' losses and the summed grads."""
    model = lanes.model
    for p in model.parameters():
        p.grad = None
    losses = lanes.run(partial(lane_loss, scale=1e-3, weight=None, device="cpu"), x, y)
    lanes.reduce_grads()
    return losses, {n: p.grad.copy() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("way", [SPREAD, HERE])
@pytest.mark.parametrize("count", [2, 3])
def test_process_lanes_give_the_bits_of_thread_lanes(count, way):
    """Dropout on, so each lane's own generator is exercised; the parameters change
    between the two steps, so the children must see the new ones. The lanes computed in
    their processes (SPREAD) or in turn in this one (HERE): the same bits."""
    x, y = batch()
    results = []
    for make in (parallel.Lanes, partial(ProcessLanes, placement=Placement(way))):
        model = build_model("fcn8s", 4, rng=0, dropout=0.5, **SMALL)
        lanes = make(model, count)
        fcn_random.manual_seed(7)
        first = step(lanes, x, y)
        for p in model.parameters():
            if p.grad is not None:
                p.data = p.data - 0.01 * p.grad
        results.append((first, step(lanes, x, y)))
        lanes.close()
    (threads_1, threads_2), (processes_1, processes_2) = results
    for (t_losses, t_grads), (p_losses, p_grads) in (
        (threads_1, processes_1),
        (threads_2, processes_2),
    ):
        assert len(p_losses) == count and p_losses == t_losses
        assert t_grads.keys() == p_grads.keys() and t_grads
        for name, g in t_grads.items():
            assert g.tobytes() == p_grads[name].tobytes(), name
    assert threads_1[0] != threads_2[0]  # the second step saw the updated parameters


def test_steps_with_an_optimiser_give_the_bits_of_thread_lanes():
    """Adam updates the parameters in place between steps: the children must see that."""
    x, y = batch()
    params = []
    for kind in (parallel.Lanes, ProcessLanes):
        parallel.limit_threads(2)
        trainer = Trainer(
            TrainConfig(out=None, train_size=6, val_size=2, image_size=32, batch_size=6, **SMALL),
            progress=False,
        )
        trainer.lanes = kind(trainer.model, 2)
        for _ in range(3):
            trainer.train_step(x, y)
            trainer.optimizer.step()
        trainer.lanes.close()
        params.append([p.data.tobytes() for p in trainer.model.parameters()])
    assert params[0] == params[1]


def test_the_parameters_and_the_summed_gradients_lie_one_after_the_other():
    """So Adam updates them where they are, without gathering them (optim.adjacent)."""
    x, y = batch()
    parallel.limit_threads(2)
    trainer = Trainer(
        TrainConfig(out=None, train_size=6, val_size=2, image_size=32, batch_size=6, **SMALL),
        progress=False,
    )
    trainer.lanes = ProcessLanes(trainer.model, 2)
    try:
        trainer.train_step(x, y)
        params = list(trainer.model.parameters())
        assert optim.adjacent([p.data for p in params]) is not None
        assert optim.adjacent([p.grad for p in params]) is not None
        before = [p.data for p in params]
        trainer.optimizer.step()
        assert all(p.data is b for p, b in zip(params, before))
    finally:
        trainer.lanes.close()


def report(model, x):
    """What a lane sees: its slice's size, the model's mode, the first parameter's flag and
    whether ops record a graph."""
    return len(x), model.training, next(iter(model.parameters())).requires_grad, is_grad_enabled()


@pytest.mark.parametrize("way", [SPREAD, HERE])
def test_modes_flags_and_uneven_slices_reach_the_children(way):
    model = build_model("fcn32s", 3, rng=0, **SMALL)
    lanes = ProcessLanes(model, 3, Placement(way))
    x, _ = batch(n=7)
    model.eval()
    next(iter(model.parameters())).requires_grad = False
    with no_grad():
        seen = lanes.run(report, x)
    assert seen == [(2, False, False, False), (3, False, False, False), (2, False, False, False)]
    model.train()
    seen = lanes.run(report, x[:2])  # two images: two lanes used
    assert seen == [(1, True, False, True), (1, True, False, True)]
    lanes.close()


def add_lane_mark(model, x):
    """x's slice with 1 added in place (the arrays that reach a lane may be written to)."""
    x += 1
    return x.copy()


@pytest.mark.parametrize("inbox_bytes", [lane_processes.INBOX_BYTES, 1024])
def test_slices_reach_the_children_through_the_inbox_or_else_the_pipe(inbox_bytes, monkeypatch):
    """Each request's slices overwrite the last one's in the child's inbox; slices larger
    than the inbox (1 KiB here) go through the pipe instead."""
    monkeypatch.setattr(lane_processes, "INBOX_BYTES", inbox_bytes)
    puts = []
    put = lane_processes._Inbox.put
    monkeypatch.setattr(
        lane_processes._Inbox, "put", lambda self, b: puts.append(put(self, b)) or puts[-1]
    )
    lanes = ProcessLanes(build_model("fcn32s", 3, rng=0, **SMALL), 2)
    for seed in (0, 1):
        x, _ = batch(n=4, seed=seed)
        got = lanes.run(add_lane_mark, x.copy())
        np.testing.assert_array_equal(np.concatenate(got), x + 1)
    lanes.close()
    assert len(puts) == 2
    assert all(p is None for p in puts) == (inbox_bytes == 1024)


def fail_in_lane_1(model, x):
    if len(x) == 3:  # the second slice of 5 images
        raise ValueError("lane 1 refuses this slice")
    return len(x)


def test_an_error_in_a_child_is_raised_with_its_type_and_the_lanes_go_on():
    lanes = ProcessLanes(build_model("fcn32s", 3, rng=0, **SMALL), 2)
    x, _ = batch(n=5)
    with pytest.raises(ValueError, match="lane 1 refuses this slice") as info:
        lanes.run(fail_in_lane_1, x)
    assert "in training lane 1" in str(info.value.__cause__)
    assert "fail_in_lane_1" in str(info.value.__cause__)  # the child's traceback
    assert lanes.run(fail_in_lane_1, x[:4]) == [2, 2]
    lanes.close()


def test_an_error_in_a_lane_computed_here_is_raised_and_lane_0s_gradients_stay():
    """As when lane 1 fails in its process: the error comes, the model keeps lane 0's."""
    x, y = batch(n=5, classes=3)
    kept = []
    for way in (SPREAD, HERE):
        model = build_model("fcn32s", 3, rng=0, **SMALL)
        lanes = ProcessLanes(model, 2, Placement(way))
        with pytest.raises(ValueError, match="lane 1 refuses this slice"):
            lanes.run(fail_after_backward_in_lane_1, x, y)
        lanes.close()
        kept.append(
            {n: p.grad.tobytes() for n, p in model.named_parameters() if p.grad is not None}
        )
    assert kept[0] and kept[0] == kept[1]


def fail_after_backward_in_lane_1(model, x, y):
    """A lane step that fails in lane 1 (3 of 5 images) after its backward."""
    lane_loss(model, x, y, scale=1e-3, weight=None, device="cpu")
    return fail_in_lane_1(model, x)


class Recorded(Placement):
    """A placement that notes the kinds asked about and the ways recorded."""

    def __init__(self, fixed):
        super().__init__(fixed)
        self.asked, self.recorded = [], []

    def choose(self, kind):
        self.asked.append(kind)
        return super().choose(kind)

    def record(self, kind, way, seconds):
        self.recorded.append((kind, way, seconds > 0))
        super().record(kind, way, seconds)


@pytest.mark.parametrize("way", [SPREAD, HERE])
def test_each_run_asks_its_placement_and_reports_its_time(way):
    """A run's kind: the name of the function (through a partial) and the batch's size."""
    placement = Recorded(way)
    lanes = ProcessLanes(build_model("fcn32s", 3, rng=0, **SMALL), 2, placement)
    x, y = batch(n=5, classes=3)
    lanes.run(partial(lane_loss, scale=1e-3, weight=None, device="cpu"), x, y)
    lanes.run(report, x[:4])
    lanes.run(report, x[:1])  # one lane: no placement to choose
    lanes.close()
    assert placement.asked == [("lane_loss", 5), ("report", 4)]
    assert placement.recorded == [(("lane_loss", 5), way, True), (("report", 4), way, True)]


def test_training_lanes_measure_where_to_compute():
    parallel.limit_threads(2)
    lanes = training_lanes(build_model("fcn8s", 3, rng=0, **SMALL), "cpu")
    assert isinstance(lanes, ProcessLanes) and lanes.placement.fixed is None


def test_a_function_that_does_not_pickle_is_named():
    lanes = ProcessLanes(build_model("fcn32s", 3, rng=0, **SMALL), 2)
    x, _ = batch(n=4)
    with pytest.raises(TypeError, match="ProcessLanes.run: fn and its arrays must pickle"):
        lanes.run(lambda model, part: len(part), x)
    assert lanes.run(report, x)[1] == (2, True, True, True)  # nothing half-sent: the lanes go on
    lanes.close()


def test_a_dead_child_is_reported_and_the_next_run_starts_a_new_one():
    lanes = ProcessLanes(build_model("fcn32s", 3, rng=0, **SMALL), 2)
    x, _ = batch(n=4)
    lanes.start()
    process = lanes._workers[0].process
    os.kill(process.pid, signal.SIGKILL)
    process.join()
    with pytest.raises(LaneProcessError, match=r"training lane 1: its process \(pid \d+\) ended"):
        lanes.run(report, x)
    assert lanes.run(report, x) == [(2, True, True, True), (2, True, True, True)]
    assert lanes._workers[0].process.pid != process.pid
    lanes.close()


def test_close_ends_the_processes_and_a_changed_model_gets_new_ones():
    model = build_model("fcn32s", 3, rng=0, **SMALL)
    lanes = ProcessLanes(model, 2)
    lanes.start()
    first = lanes._workers[0].process
    p = next(iter(model.parameters()))
    p.data = np.zeros(p.data.shape + (1,), p.data.dtype)  # a new shape: the layout changed
    x, _ = batch(n=2)
    assert lanes.run(lambda m, part: len(part), x[:1]) == [1]  # one lane: no process needed
    assert lanes.run(report, x) == [(1, True, True, True), (1, True, True, True)]
    assert not first.is_alive() and lanes._workers[0].process is not first
    second = lanes._workers[0].process
    lanes.close()
    assert not second.is_alive() and lanes._workers == []


def test_training_picks_processes_for_several_lanes_only():
    model = build_model("fcn8s", 3, rng=0, **SMALL)
    parallel.limit_threads(2)
    assert isinstance(training_lanes(model, "cpu"), ProcessLanes)
    parallel.limit_threads(1)
    assert isinstance(training_lanes(model, "cpu"), parallel.Lanes)
    parallel.limit_threads(2)
    normed = build_model("fcn8s", 3, rng=0, batch_norm=True, **SMALL)
    assert isinstance(training_lanes(normed, "cpu"), parallel.Lanes)  # statistics of the batch


def small_trainer(tmp_path, **fields) -> Trainer:
    parallel.limit_threads(2)
    config = TrainConfig(
        out=str(tmp_path), train_size=12, val_size=4, image_size=32, batch_size=6, **SMALL, **fields
    )
    return Trainer(config, progress=False)


def test_fit_ends_its_lane_processes(tmp_path):
    trainer = small_trainer(tmp_path, epochs=1)
    assert isinstance(trainer.lanes, ProcessLanes)
    started = []
    original = trainer.lanes.start

    def start():
        original()
        started.extend(w.process for w in trainer.lanes._workers)

    trainer.lanes.start = start
    trainer.fit()
    assert started and not any(p.is_alive() for p in started)


def test_a_lane_that_dies_in_fit_keeps_the_last_checkpoint(tmp_path):
    trainer = small_trainer(tmp_path, epochs=2)
    original = trainer._end_epoch

    def end_epoch():  # after the first epoch's checkpoint, lane 1's process is killed
        original()
        os.kill(trainer.lanes._workers[0].process.pid, signal.SIGKILL)
        trainer.lanes._workers[0].process.join()

    trainer._end_epoch = end_epoch
    with pytest.raises(LaneProcessError, match="training lane 1"):
        trainer.fit()
    meta = load_checkpoint(trainer.checkpoint_path).meta
    assert meta["epoch"] == 1


def test_evaluation_runs_in_the_lane_processes_with_the_bits_of_threads():
    """A trainer's lane processes evaluate too: the same metrics and loss to the last bit
    as thread lanes; lanes of another count (or model) are left alone."""
    from fcn_scratch.data import ArrayDataset
    from fcn_scratch.train.evaluation import evaluate

    x, y = batch(n=7)
    dataset = ArrayDataset(x, y, ["a", "b", "c", "d"])
    model = build_model("fcn8s", 4, rng=0, **SMALL)
    parallel.limit_threads(2)
    lanes = ProcessLanes(model, 2)
    try:
        in_processes = evaluate(model, dataset, 4, "cpu", lanes)
        assert lanes.pids  # they ran it
        on_threads = evaluate(model, dataset, 4, "cpu")
        other = ProcessLanes(model, 3)
        assert evaluate(model, dataset, 4, "cpu", other) == on_threads
        assert not other.pids  # not the evaluation's count: not used, not started
    finally:
        lanes.close()
    assert in_processes == on_threads
    assert model.training  # the mode is restored
