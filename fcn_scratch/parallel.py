"""Threads on the CPU: a batch split into slices ("lanes"), each run by its own thread.

    limit_threads(2)                      # what --threads sets; default: every core we may use
    lanes = Lanes(model, lane_count(model, "cpu"))
    losses = lanes.run(step, images, labels)   # step(model_i, images_i, labels_i) per lane
    lanes.reduce_grads()                  # the replicas' gradients added to the model's

Every lane runs the whole model on its slice of the batch, with the single-threaded Numba
kernels and a single-threaded BLAS. Both release the GIL, so the lanes compute side by side
on separate cores; only the few microseconds of Python per op take turns. This is how the
package uses several cores, instead of splitting each kernel and each GEMM across a pool of
threads: the kernels of a small FCN last tens of microseconds, too short to pay for waking
a pool and waiting for its slowest thread, and a pool that waits (spinning) for a thread
the operating system has put aside for another busy program turns a 60 ms step into
seconds. A lane that is put aside only delays its own slice.

Threads still take turns at the GIL for the Python part of every op. A training step on
Linux therefore runs its lanes 1.. in forked processes instead (``ProcessLanes`` in
``fcn_scratch.lane_processes``: the same slices, kernels and order of additions, so the
same bits), and the evaluation after each epoch runs in those processes too; other
evaluation and prediction keep these threads, which need no start-up.

Lane 0 runs on the model itself, in the calling thread; lane i > 0 runs on a replica whose
parameters share the model's arrays but keep their own ``.grad``. ``reduce_grads`` adds the
replicas' gradients to the model's in lane order, and each lane draws dropout masks from a
generator of its own (seeded from the global one), so a run's results depend on the number
of lanes but never on how the threads happened to be scheduled.

Work that cannot be split (a batch of one image, or training a model with batch norm, whose
statistics are taken over the whole batch) runs in one lane, with BLAS using every thread.
There, and for a single op, the convolutions cut their own batch the same way
(``split_batch``, used by ``fcn_scratch.ops.conv``): one slice per thread, each on one
thread, the backward on the same slices (``run_parts``); a small op, one slice on the
calling thread. A Winograd convolution hands out its chunks of images to the threads as they
come free (``each``), and adds their results in chunk order. While a thread's part runs, the
calling thread keeps its CPU and the others keep off it (``fcn_scratch.cpus``).
"""

import contextlib
import copy
import os
import threading
from concurrent.futures import wait
from functools import cache

import numpy as np
import threadpoolctl

from fcn_scratch import cpus, random
from fcn_scratch.memory import keep_freed_memory

_threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def limit_threads(n: int) -> None:
    """Use at most ``n`` threads from now on: ``n`` lanes, or BLAS with ``n`` threads where
    the work is one lane."""
    global _threads
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"limit_threads: n must be an int >= 1, got {n!r}")
    _threads = n
    _blas().limit(limits=n)


def thread_count() -> int:
    """The number of threads the package may use (``limit_threads``; default: all cores)."""
    return _threads


_lane = threading.local()  # .active: this thread is running a lane of ``Lanes.run``


def on_one_thread() -> bool:
    """Whether the calling code computes on one thread: inside a lane, or everywhere after
    ``limit_threads(1)``. Elsewhere one piece of work has every thread (through BLAS).
    conv2d picks its algorithm by this (``fcn_scratch.ops.winograd``)."""
    return _threads == 1 or getattr(_lane, "active", False)


def lane_count(model, device: str) -> int:
    """How many lanes a training step of ``model`` on ``device`` may use.

    One on CUDA (the GPU is parallel already) and for models with batch norm in training
    (their statistics must see the whole batch); ``thread_count()`` otherwise.
    """
    batch_statistics = any(hasattr(m, "running_mean") for m in model.modules())
    if device != "cpu" or (batch_statistics and model.training):
        return 1
    return thread_count()


class Lanes:
    """Runs a function of (model, slice of a batch) in up to ``count`` threads at once."""

    def __init__(self, model, count: int):
        if count < 1:
            raise ValueError(f"Lanes: count must be >= 1, got {count}")
        keep_freed_memory()  # every batch computed passes through here
        self.model = model
        self.replicas = [model] + [replicate(model) for _ in range(count - 1)]
        self._pool: cpus.Pool | None = None
        self._used = 1
        # (model parameter, replica parameter) pairs, per replica: found once, since walking
        # the module tree every step costs more than the rest of the bookkeeping together
        self._pairs = [list(zip(model.parameters(), r.parameters())) for r in self.replicas]
        self._modules = [list(zip(model.modules(), r.modules())) for r in self.replicas]

    @property
    def count(self) -> int:
        return len(self.replicas)

    def run(self, fn, *arrays) -> list:
        """``[fn(model_i, *slices_i) for each lane i]``, computed at once, in lane order.

        arrays: batches (first axis N) cut into ``min(count, N)`` contiguous slices of
        near-equal size. Replicas see the model's current parameters and mode.
        """
        n = len(arrays[0])
        used = max(1, min(self.count, n))
        self._used = used
        if used == 1:
            return [fn(self.model, *arrays)]
        self.start()
        self._sync(used)
        calls = [(r, *part) for r, part in zip(self.replicas, cut(arrays, used))]
        return _at_once(self._pool, in_lane(fn, lane_seed(self.model)), calls)

    def reduce_grads(self) -> None:
        """Add the gradients of the replicas used by the last ``run`` to the model's."""
        for pairs in self._pairs[1 : self._used]:
            for p, r in pairs:
                if r.grad is not None:
                    p.grad = r.grad if p.grad is None else p.grad + r.grad
                    r.grad = None

    def start(self) -> None:
        """Start the threads of lanes 1.. (if they are not running)."""
        if self._pool is None and self.count > 1:
            self._pool = cpus.Pool(self.count - 1, "lane")

    def close(self) -> None:
        """End the threads (a later ``run`` starts them again)."""
        if self._pool is not None:
            self._pool.shutdown()
        self._pool = None

    def _sync(self, used: int) -> None:
        """Point the replicas at the model's current arrays, flags and modes."""
        for modules, pairs in zip(self._modules[1:used], self._pairs[1:used]):
            for m, r in modules:
                r.training = m.training
            for p, r in pairs:
                r.data, r.requires_grad, r.grad = p.data, p.requires_grad, None


def split_batch(fn, *arrays, most: int | None = None) -> list:
    """``[fn(*slices_i) for each slice i]``: one op's batch cut as ``Lanes.run`` cuts it,
    into ``min(thread_count(), N, most)`` slices computed at once, each as a lane
    (single-threaded BLAS, ``on_one_thread()`` true in it), results in slice order.

    For an op that has every thread to itself (a single op, a model with batch norm trained
    in one lane): one slice per thread beats one multi-threaded GEMM between single-threaded
    kernels. ``most=1`` computes the whole batch as one lane, on this thread (an op too small
    to pay for handing slices to other threads). Called inside a lane, or with one thread,
    it is ``[fn(*arrays)]``.
    """
    used = 1 if on_one_thread() else max(1, min(_threads, len(arrays[0]), most or _threads))
    return run_parts(fn, cut(arrays, used))


def run_parts(fn, parts: list) -> list:
    """``[fn(*part) for part in parts]``, computed at once, one thread each, as lanes (the
    backward of an op that ``split_batch`` cut: the same slices again)."""
    if len(parts) == 1 and on_one_thread():
        return [fn(*parts[0])]
    one_thread = _on_one_thread(fn)  # an op draws no random numbers: no lane generator
    if len(parts) == 1:
        with one_thread_blas():
            return [one_thread(*parts[0])]
    return _at_once(_op_pool(len(parts) - 1), lambda _, *part: one_thread(*part), parts)


def each(fn, count: int) -> list:
    """``[fn(i) for i in range(count)]``, as lanes (single-threaded BLAS, ``on_one_thread()``
    true), the indices handed out in order to every thread as it comes free, results in
    index order. Which thread computes an index depends on timing, so ``fn(i)`` must depend on
    ``i`` alone and the caller must combine the results in index order; then the results do
    not depend on the thread count either. A thread that finishes early takes the next index
    instead of waiting for the others, as it would at the end of a fixed slice (of the two
    slices of a Winograd convolution, one took 1.3x the other's time in every step of a
    timing). Called inside a lane, or with one thread, it is a loop on this thread."""
    if on_one_thread():
        return [fn(i) for i in range(count)]
    results = [None] * count
    indices = iter(range(count))
    lock = threading.Lock()

    def take() -> None:
        while True:
            with lock:
                i = next(indices, None)
            if i is None:
                return
            results[i] = fn(i)

    run_parts(take, [()] * min(_threads, count))
    return results


def cut(arrays, count: int) -> list:
    """``arrays`` (first axis N) cut into ``count`` contiguous slices of near-equal size."""
    if count == 1:
        return [tuple(arrays)]
    bounds = np.linspace(0, len(arrays[0]), count + 1).round().astype(int)
    return [tuple(a[lo:hi] for a in arrays) for lo, hi in zip(bounds[:-1], bounds[1:])]


def _at_once(pool: cpus.Pool, lane, calls: list) -> list:
    """``[lane(i, *calls[i]) for each i]`` with single-threaded BLAS: call 0 in this thread,
    the others in ``pool``, on other CPUs than this thread's (``cpus.apart``); every call
    has finished when this returns (or raises)."""
    with one_thread_blas(), cpus.apart(pool, len(calls) - 1):
        futures = [pool.submit(lane, i, *call) for i, call in enumerate(calls) if i]
        try:
            first = lane(0, *calls[0])
            return [first, *(f.result() for f in futures)]
        finally:
            wait(futures)


def one_thread_blas():
    """BLAS limited to one thread until the returned limiter is left (``with``) or restored."""
    return _blas().limit(limits=1)


def quiet_blas():
    """``one_thread_blas()`` unless BLAS is on one thread already (a lane; one thread): for a
    small GEMM between the parts that ``each`` hands out. With several threads, BLAS's
    threads keep spinning for about 0.1 s after a call, on the cores the parts need (a
    Winograd convolution's chunks took up to 3x their time beside them)."""
    return contextlib.nullcontext() if on_one_thread() else one_thread_blas()


@cache
def _op_pool(size: int) -> cpus.Pool:
    """The threads that run ``run_parts``'s parts past the first (idle between ops)."""
    return cpus.Pool(size, "op")


@cache
def _blas() -> threadpoolctl.ThreadpoolController:
    """The BLAS libraries loaded when this is first called: numpy's, which the package's GEMMs
    use, among them (numpy loads its BLAS when it is imported). Found once, since the search
    reads /proc; a BLAS loaded later (SciPy's, which Numba loads where SciPy is installed) is
    not limited, and the package does not call it."""
    return threadpoolctl.ThreadpoolController().select(user_api="blas")


def replicate(model):
    """A copy of ``model`` whose parameters and other arrays are the model's own arrays."""
    memo = {}
    for module in model.modules():
        for value in vars(module).values():
            if isinstance(value, np.ndarray):
                memo[id(value)] = value
    for p in model.parameters():
        memo[id(p.data)] = p.data
    return copy.deepcopy(model, memo)


def lane_seed(model) -> int:
    """The seed of a run's lane generators: drawn from the global generator in training,
    0 in evaluation (dropout acts only in training, so evaluation leaves it alone)."""
    return int(random.generator("cpu").integers(2**63)) if model.training else 0


def in_lane(fn, seed: int):
    """``fn`` run as lane i: dropout in this thread draws from the generator (seed, i)."""
    one_thread = _on_one_thread(fn)

    def lane(i, model, *arrays):
        with random.lane_generator(seed, i):
            return one_thread(model, *arrays)

    return lane


def _on_one_thread(fn):
    """``fn`` with ``on_one_thread()`` true while it runs in the calling thread."""

    def run(*args):
        _lane.active = True
        try:
            return fn(*args)
        finally:
            _lane.active = False

    return run
