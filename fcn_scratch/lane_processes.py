"""Lanes in processes of their own: the interface of ``parallel.Lanes``, without the GIL.

    lanes = training_lanes(model, "cpu")  # ProcessLanes on Linux when there are 2+ lanes
    lanes.start()                         # fork the lanes' processes (before other threads)
    losses = lanes.run(step, images, labels)
    lanes.reduce_grads()
    lanes.close()                         # end them (a later run starts them again)

The threads of one process take turns holding the GIL. Every op of a lane spends a few
microseconds in Python (checks, the autograd record) and those add up to about a fifth of
a lane's time for a small FCN, so two thread lanes run 20-30% slower than two processes
would. Here lane 0 runs in the calling process, on the model itself, and lane i > 0 in a
child forked from it, on the child's copy of the model:

- before each run, the model's arrays (parameters, and array attributes such as batch
  norm's running statistics) are copied into one block of memory that parent and children
  both map; a child points its copy's arrays at that block;
- the function goes to the child through a pipe (so it must pickle: a module-level
  function, or a partial of one), and the lane's slices of the batch through a block of
  shared memory of the lane's own, its inbox (in the default run the parent's send took
  0.12-0.16 ms per step that way, 0.39-0.43 ms through the pipe); the result comes back
  through the pipe;
- the child's gradients come back through a block of its own, and ``reduce_grads`` adds
  them to the model's in lane order, as ``Lanes`` adds its replicas'.

A lane computes the same kernels on the same slice with the same dropout generator as a
thread lane would, so the results are bit for bit those of ``Lanes`` with as many lanes.
The same holds where a run computes every lane in turn in the parent instead, on the model
itself, which is faster beside a busy program that leaves the lanes one core to share:
which way a run takes is measured, run by run (``fcn_scratch.lane_placement``).
A child ignores Ctrl-C (the parent decides what an interrupt means) and ends when the
parent closes its pipe or exits; a child that dies is reported by the next ``run`` as a
``LaneProcessError`` that names the lane, its process and its exit code.
"""

import mmap
import multiprocessing
import pickle
import signal
import sys
import time
import traceback
import weakref

import numpy as np

from fcn_scratch import parallel
from fcn_scratch.autograd import is_grad_enabled, set_grad_enabled
from fcn_scratch.lane_placement import HERE, Placement
from fcn_scratch.memory import keep_freed_memory


class LaneProcessError(RuntimeError):
    """A lane's process ended, or its error could not be brought back whole."""


def forks() -> bool:
    """Whether lanes may run in forked processes here: on Linux (elsewhere fork is missing,
    or unsafe beside the system's libraries), so everywhere else lanes are threads."""
    return sys.platform.startswith("linux")


def training_lanes(model, device: str):
    """The lanes for training ``model`` on ``device``: ``ProcessLanes`` where the step has
    more than one lane and ``forks()``, ``parallel.Lanes`` (threads) otherwise."""
    count = parallel.lane_count(model, device)
    if count > 1 and forks():
        return ProcessLanes(model, count)
    return parallel.Lanes(model, count)


class ProcessLanes:
    """Runs a function of (model, slice of a batch) in ``count`` lanes: lane 0 in this
    process, the others in forked processes (started by ``start`` or the first ``run``), or
    all in this process, one after the other, where ``placement`` says so (default: a
    ``Placement()`` that measures which is faster)."""

    def __init__(self, model, count: int, placement: Placement | None = None):
        if count < 1:
            raise ValueError(f"ProcessLanes: count must be >= 1, got {count}")
        self.model = model
        self.count = count
        self._params = list(model.parameters())
        self._buffers = _buffers(model)
        self._modules: list = []  # the model's modules when the children were forked
        self._workers: list[_Worker] = []
        self._shared: _Block | None = None  # the model's arrays, as the children see them
        self._used = 1
        self._stop = None
        self.placement = placement or Placement()

    @property
    def pids(self) -> list[int]:
        """The process ids of the running lanes 1.. (none before ``start``)."""
        return [w.process.pid for w in self._workers]

    def start(self) -> None:
        """Fork the lanes' processes, if they are not running. Fork before starting threads
        of your own: a thread that holds a lock while the process forks leaves that lock
        held forever in the child."""
        if self._workers or self.count == 1:
            return
        keep_freed_memory()  # malloc's setting: the children inherit it
        self._modules = list(self.model.modules())  # the children's, in the same order
        self._shared = _Block(self._arrays())
        self._publish()
        context = multiprocessing.get_context("fork")
        for lane in range(1, self.count):
            grads, inbox = _Block([p.data for p in self._params]), _Inbox(INBOX_BYTES)
            ours, theirs = context.Pipe()
            inherited = [w.conn for w in self._workers] + [ours]  # the child closes these
            process = context.Process(
                target=_serve,
                args=(theirs, inherited, self.model, lane, self._shared, grads, inbox),
                name=f"fcn-scratch lane {lane}",
                daemon=True,
            )
            process.start()
            theirs.close()
            self._workers.append(_Worker(lane, process, ours, grads, inbox))
        self._stop = weakref.finalize(self, _stop, self._workers)

    def close(self) -> None:
        """End the lanes' processes (a later ``run`` starts new ones)."""
        if self._stop is not None:
            self._stop()
        self._workers, self._shared, self._stop = [], None, None

    def run(self, fn, *arrays) -> list:
        """``[fn(model_i, *slices_i) for each lane i]``, in lane order: computed at once, or
        in turn in this process, as ``placement`` chooses for runs of this kind (the name of
        the function ``fn`` calls and N), which is told how long the run took.

        arrays: batches (first axis N) cut into ``min(count, N)`` contiguous slices of
        near-equal size, as ``Lanes.run`` cuts them. The lanes see the model's current
        arrays, ``requires_grad`` flags and training modes, and ``no_grad()`` if it is on."""
        used = max(1, min(self.count, len(arrays[0])))
        self._used = used
        if used == 1:
            return [fn(self.model, *arrays)]
        self.start()
        if [(a.shape, a.dtype) for a in self._arrays()] != self._shared.layout:
            self.close()  # an array changed its shape or type: new processes for the new layout
            self.start()
        self._publish()
        seed = parallel.lane_seed(self.model)
        parts = parallel.cut(arrays, used)
        modes = [m.training for m in self._modules]  # walking the tree each step cost 0.3 ms
        flags = [p.requires_grad for p in self._params], is_grad_enabled()
        # pickled whichever way the run takes (unused where it runs here): a function that
        # cannot reach a process fails every run, not only those the placement spreads
        try:
            requests = [_Request((fn, seed, modes, flags, part)) for part in parts[1:]]
        except (pickle.PicklingError, TypeError, AttributeError) as err:
            raise TypeError(
                "ProcessLanes.run: fn and its arrays must pickle to reach a lane's process "
                f"(a module-level function or a partial of one); got {fn!r}: {err}"
            ) from err
        workers, kind = self._workers[: used - 1], (_name(fn), len(arrays[0]))
        lane = parallel.in_lane(fn, seed)
        way, start = self.placement.choose(kind), time.perf_counter()
        if way == HERE:
            results = self._run_here(lane, parts, workers)
        else:
            results = self._run_spread(lane, parts, workers, requests)
        self.placement.record(kind, way, time.perf_counter() - start)
        return results

    def _run_spread(self, lane, parts: list, workers: list, requests: list) -> list:
        """Lane 0 here, lanes 1.. in their processes, side by side."""
        sent = []
        try:
            for worker, request in zip(workers, requests):
                worker.send(request)
                sent.append(worker)
            with parallel.one_thread_blas():
                first = lane(0, self.model, *parts[0])
        finally:
            replies = self._collect(sent)
        return [first, *(worker.result(reply) for worker, reply in zip(workers, replies))]

    def _run_here(self, lane, parts: list, workers: list) -> list:
        """Every lane here, one after the other, on the model itself; lane i's gradients go
        to its process's block, as the process would have put them, for ``reduce_grads``."""
        with parallel.one_thread_blas():
            results = [lane(0, self.model, *parts[0])]
            own = [p.grad for p in self._params]  # lane 0's, set aside meanwhile
            try:
                for worker, part in zip(workers, parts[1:]):
                    for p in self._params:
                        p.grad = None
                    results.append(lane(worker.lane, self.model, *part))
                    views = worker.grads.views
                    worker.has_grad = [_put(p.grad, g) for p, g in zip(self._params, views)]
            finally:
                for p, grad in zip(self._params, own):
                    p.grad = grad
        return results

    def reduce_grads(self) -> None:
        """Add the gradients of the lanes used by the last ``run`` to the model's. The sums
        are views of one new flat array, one after the other in parameter order, as the
        parameters lie in the shared block: Adam then updates both in place, without
        gathering them into flat arrays first (``optim.adjacent``)."""
        workers = self._workers[: self._used - 1]
        present = [
            p.grad is not None or any(w.has_grad[i] for w in workers)
            for i, p in enumerate(self._params)
        ]
        dtype = self._params[0].data.dtype  # a parameter of another dtype gets its own array
        joined = [p for p, there in zip(self._params, present) if there and p.data.dtype == dtype]
        flat, offset = np.empty(sum(p.data.size for p in joined), dtype=dtype), 0
        for i, (p, there) in enumerate(zip(self._params, present)):
            if not there:
                continue
            if p.data.dtype == dtype:
                total = flat[offset : offset + p.data.size].reshape(p.data.shape)
                offset += p.data.size
            else:
                total = np.empty_like(p.data)
            grads = [w.grads.views[i] for w in workers if w.has_grad[i]]
            if p.grad is None:
                total[...], grads = grads[0], grads[1:]
            else:
                total[...] = p.grad
            for grad in grads:  # in lane order, as p.grad + grad would add them
                total += grad
            p.grad = total
        for worker in workers:
            worker.has_grad = []

    def _arrays(self) -> list:
        """The model's arrays in a fixed order: parameters, then array attributes."""
        return [p.data for p in self._params] + [getattr(m, k) for m, k in self._buffers]

    def _publish(self) -> None:
        """Put the model's arrays where the children read them: the model's own arrays
        become views of the shared block, so an optimiser that updates them in place
        publishes its update as it makes it; only an array that was replaced since (a
        loaded state, a new buffer) is copied here."""
        for p, view in zip(self._params, self._shared.views):
            if p.data is not view:
                np.copyto(view, p.data)
                p.data = view
        for (m, k), view in zip(self._buffers, self._shared.views[len(self._params) :]):
            if getattr(m, k) is not view:
                np.copyto(view, getattr(m, k))
                setattr(m, k, view)

    def _collect(self, workers: list) -> list:
        """The replies of the workers sent a request. If a send failed, or waiting is cut
        short (a dead process, Ctrl-C), every process ends, since a reply left in a pipe
        would answer the next request: the next run starts new ones."""
        try:
            replies = [worker.receive() for worker in workers]
        except BaseException:
            self.close()
            raise
        if len(workers) < self._used - 1:
            self.close()
        return replies


class _Worker:
    """The parent's side of one lane's process."""

    def __init__(self, lane: int, process, conn, grads, inbox):
        self.lane, self.process, self.conn, self.grads = lane, process, conn, grads
        self.inbox = inbox
        self.has_grad: list = []

    def send(self, request: "_Request") -> None:
        """Send a request (only after the reply to the last one: its arrays are overwritten)."""
        try:
            request.send(self.conn, self.inbox)
        except OSError as err:  # a broken pipe: the process has ended
            raise self._ended() from err

    def receive(self) -> tuple:
        try:
            return pickle.loads(self.conn.recv_bytes())
        except (EOFError, OSError) as err:
            raise self._ended() from err

    def _ended(self) -> LaneProcessError:
        self.process.join(timeout=1.0)
        return LaneProcessError(
            f"training lane {self.lane}: its process (pid {self.process.pid}) ended "
            f"unexpectedly (exit code {self.process.exitcode}); this step is lost"
        )

    def result(self, reply: tuple):
        """The lane's result, or its exception raised here (with the child's traceback)."""
        ok, value, detail = reply
        if ok:
            self.has_grad = detail
            return value
        try:
            error = pickle.loads(value)
        except Exception:  # an exception that does not unpickle: its traceback still comes
            error = LaneProcessError(f"training lane {self.lane} failed")
        raise error from LaneProcessError(f"in training lane {self.lane}:\n{detail}")


class _Request:
    """A request pickled with its arrays' data out of band: the data goes to the child's
    inbox, or through the pipe where it does not fit, as it is, without being copied into
    the pickle first (and back out in the child)."""

    def __init__(self, request: tuple):
        buffers: list = []
        self.body = pickle.dumps(request, 5, buffer_callback=buffers.append)
        self.buffers = [b.raw() for b in buffers]

    def send(self, conn, inbox: "_Inbox") -> None:
        sizes = [b.nbytes for b in self.buffers]
        offsets = inbox.put(self.buffers)
        conn.send_bytes(pickle.dumps((self.body, sizes, offsets), 5))
        if offsets is None:
            for b in self.buffers:
                conn.send_bytes(b)

    @staticmethod
    def receive(conn, inbox: "_Inbox") -> tuple:
        body, sizes, offsets = pickle.loads(conn.recv_bytes())
        if offsets is None:
            buffers = [bytearray(n) for n in sizes]  # writable: the arrays may be written to
            for b in buffers:
                conn.recv_bytes_into(b)
        else:
            buffers = [inbox.view(offset, n) for offset, n in zip(offsets, sizes)]
        return pickle.loads(body, buffers=buffers)


INBOX_BYTES = 64 * 2**20  # address space: only the pages a request writes take memory


class _Inbox:
    """A block of shared memory, mapped before the fork, that carries a request's arrays to
    one lane's process: the parent copies them in, the child reads them where they lie (and
    may write to them). Each request overwrites the last one's."""

    ALIGN = 64  # bytes: each array starts on a cache line

    def __init__(self, size: int):
        self._map = mmap.mmap(-1, size)
        self.size = size

    def put(self, buffers: list) -> list | None:
        """Copy the buffers in, one after the other; their offsets, or None (and nothing
        copied) if they do not fit."""
        offsets, end = [], 0
        for b in buffers:
            start = -(-end // self.ALIGN) * self.ALIGN
            offsets.append(start)
            end = start + b.nbytes
        if end > self.size:
            return None
        for b, start in zip(buffers, offsets):
            self._map[start : start + b.nbytes] = b
        return offsets

    def view(self, offset: int, size: int) -> memoryview:
        """The ``size`` bytes from ``offset`` on, as they lie in the block (no copy)."""
        return memoryview(self._map)[offset : offset + size]


class _Block:
    """Arrays of the given shapes and types in one anonymous shared mapping: a process
    forked after it was made sees every write to it."""

    def __init__(self, arrays: list):
        self.layout = [(a.shape, a.dtype) for a in arrays]
        offsets, size = [], 0
        for a in arrays:  # one after the other (aligned to their item size)
            size = -(-size // a.itemsize) * a.itemsize
            offsets.append(size)
            size += a.nbytes
        self._map = mmap.mmap(-1, max(size, 1))
        self.views = [
            np.ndarray(shape, dtype, self._map, offset)
            for (shape, dtype), offset in zip(self.layout, offsets)
        ]


def _buffers(model) -> list:
    """(module, attribute name) of every array a module holds outside its parameters."""
    return [
        (m, k) for m in model.modules() for k, v in vars(m).items() if isinstance(v, np.ndarray)
    ]


def _serve(
    conn, inherited: list, model, lane: int, shared: _Block, grads: _Block, inbox: _Inbox
) -> None:
    """A lane's process: answer requests until the parent closes the pipe or exits."""
    for c in inherited:  # the parent's ends: with them closed, the parent's exit is an EOF
        c.close()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parallel.one_thread_blas()  # for the life of the process: never restored
    params, buffers, modules = list(model.parameters()), _buffers(model), list(model.modules())
    for p, view in zip(params, shared.views):
        p.data = view
    for (m, k), view in zip(buffers, shared.views[len(params) :]):
        setattr(m, k, view)
    while True:
        try:
            fn, seed, modes, flags, part = _Request.receive(conn, inbox)
        except EOFError:
            return
        for m, mode in zip(modules, modes):
            m.training = mode
        requires_grad, grad_enabled = flags
        for p, flag in zip(params, requires_grad):
            p.requires_grad, p.grad = flag, None
        try:
            with set_grad_enabled(grad_enabled):
                value = parallel.in_lane(fn, seed)(lane, model, *part)
            reply = (True, value, [_put(p.grad, g) for p, g in zip(params, grads.views)])
        except Exception as err:
            reply = (False, _pickled(err), traceback.format_exc())
        for p in params:
            p.grad = None
        conn.send_bytes(pickle.dumps(reply, 5))


def _put(grad, slot: np.ndarray) -> bool:
    """Copy a parameter's gradient (or None) to its slot; whether there was one."""
    if grad is None:
        return False
    if grad.shape != slot.shape or grad.dtype != slot.dtype:
        raise TypeError(
            f"lane process: a gradient of shape {grad.shape} and dtype {grad.dtype} for a "
            f"parameter of shape {slot.shape} and dtype {slot.dtype}"
        )
    np.copyto(slot, grad)
    return True


def _name(fn) -> str:
    """The name of the function ``fn`` calls (through a partial): part of a run's kind."""
    inner = getattr(fn, "func", fn)
    return getattr(inner, "__qualname__", type(inner).__qualname__)


def _pickled(err: Exception) -> bytes:
    """``err`` pickled, or the pickle of a LaneProcessError with its message."""
    try:
        return pickle.dumps(err, 5)
    except Exception:
        return pickle.dumps(LaneProcessError(f"{type(err).__name__}: {err}"), 5)


def _stop(workers: list) -> None:
    """Close the pipes (each child then ends) and wait for the processes."""
    for worker in workers:
        worker.conn.close()
    for worker in workers:
        worker.process.join(timeout=5.0)
        if worker.process.is_alive():
            worker.process.terminate()
            worker.process.join()
