"""Fresh synthetic training images every epoch, the next epoch's drawn in the background.

Epoch ``e`` trains on ``ShapesDataset(seed=split_seed(seed, 2, e))`` (epoch 0 on the usual
training set), so the images depend only on the seed and the epoch: a resumed run sees the
same ones. While epoch ``e`` trains, a worker thread renders epoch ``e + 1``'s (NumPy
releases the GIL, so this overlaps with training on a second core).
"""

from concurrent.futures import Future, ThreadPoolExecutor

from fcn_scratch.data import ShapesDataset
from fcn_scratch.train.config import TrainConfig
from fcn_scratch.train.setup import fresh_train_set


class FreshShapes:
    """``get(epoch)`` returns that epoch's training set and starts rendering the next;
    ``prefetch(epoch)`` starts rendering one."""

    def __init__(self, config: TrainConfig):
        self.config = config
        self._pool: ThreadPoolExecutor | None = None
        self._next: tuple[int, Future] | None = None

    def get(self, epoch: int) -> ShapesDataset:
        if self._next is not None and self._next[0] == epoch:
            data = self._next[1].result()
        else:
            data = fresh_train_set(self.config, epoch)
        self._next = None
        self.prefetch(epoch + 1)
        return data

    def prefetch(self, epoch: int) -> None:
        """Start rendering ``epoch``'s images in the background, unless it is past the last
        epoch or under way already (the trainer asks for epoch 1 while epoch 0, whose
        images it has from the start, trains)."""
        if epoch >= self.config.epochs or (self._next is not None and self._next[0] == epoch):
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="fresh-shapes")
        self._next = (epoch, self._pool.submit(fresh_train_set, self.config, epoch))

    def wait(self) -> None:
        """Block until the next epoch's images, if any are being rendered, are ready."""
        if self._next is not None:
            self._next[1].result()

    def close(self) -> None:
        """Stop the worker (a render in progress is abandoned)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool, self._next = None, None
