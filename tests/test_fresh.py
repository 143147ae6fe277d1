"""Fresh training images per epoch: the background render gives what rendering in place
gives, ``wait`` returns once the next epoch's images are ready, and training draws every
epoch's images after the first in the background."""

import threading

import numpy as np

from fcn_scratch.train import TrainConfig, Trainer
from fcn_scratch.train import fresh as fresh_module
from fcn_scratch.train.fresh import FreshShapes
from fcn_scratch.train.setup import fresh_train_set


def _arrays(dataset):
    return dataset.get_batch(np.arange(len(dataset)))


def test_background_epochs_equal_epochs_rendered_in_place():
    config = TrainConfig(out=None, epochs=3, train_size=4, image_size=32)
    fresh = FreshShapes(config)
    try:
        for epoch in range(3):
            x, y = _arrays(fresh.get(epoch))
            fresh.wait()
            x_ref, y_ref = _arrays(fresh_train_set(config, epoch))
            assert np.array_equal(x, x_ref) and np.array_equal(y, y_ref)
        assert not np.array_equal(_arrays(fresh.get(1))[0], x)  # epochs differ
    finally:
        fresh.close()


def test_wait_blocks_until_the_next_epoch_is_rendered_and_is_a_no_op_after_the_last():
    config = TrainConfig(out=None, epochs=2, train_size=4, image_size=32)
    fresh = FreshShapes(config)
    try:
        fresh.get(0)
        fresh.wait()
        assert fresh._next is not None and fresh._next[1].done()
        fresh.get(1)  # the last epoch: nothing more is rendered
        fresh.wait()
        assert fresh._next is None
    finally:
        fresh.close()


def test_fit_renders_the_second_epoch_while_the_first_trains(monkeypatch):
    """The trainer has epoch 0's images from the start and asks for epoch 1's at once: they
    are drawn in the background thread, not in the training loop between the epochs."""
    rendered = []

    def recording(config, epoch):
        rendered.append((epoch, threading.current_thread().name.startswith("fresh-shapes")))
        return fresh_train_set(config, epoch)

    monkeypatch.setattr(fresh_module, "fresh_train_set", recording)
    config = TrainConfig(out=None, epochs=3, train_size=8, val_size=4, image_size=32)
    Trainer(config, progress=False).fit()
    assert rendered == [(1, True), (2, True)]
