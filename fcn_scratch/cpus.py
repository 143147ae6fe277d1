"""Threads that compute at once, kept on different CPUs while they do.

When the calling thread hands part of an op to a thread of a pool and computes its own
part, the two should run on two CPUs. The scheduler does not always put them there: on a
KVM guest whose kernel packs tasks onto few virtual CPUs (``sched_vcpu_pack`` on its
command line), after the threads had slept (a pause of 50 ms was enough, between ops or
runs), the woken worker was put on the caller's CPU and stayed there, run after run, while
the other CPU idled.
Forward and backward of the 3-channel convolution of ``fcn-scratch bench`` (batch 16, two
slices on 2 threads, the runs 0.3 s apart) took 4.0-4.6 ms that way, against 2.3-2.6 ms
with the two threads on different CPUs (2 vCPUs of an AMD EPYC under KVM; the caller's
slices took the same time either way, the rest was the worker waiting for the caller's
CPU). Moving the worker once it runs is too late: it first waits there for the caller's
part to end.

So before the work is handed out, ``apart`` keeps the pool's threads off the CPU the
calling thread is on (through their affinity, set only when it changes) and holds the
caller on it until the parts are done, then gives the caller back the CPUs it had. It
does nothing where there are more threads than CPUs to spread them over, or where the
system has no affinity (not Linux). Which thread computes what is unchanged, so are the
results.
"""

import contextlib
import ctypes
import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from functools import cache


@cache
def _sched_getcpu():
    """glibc's sched_getcpu, or None where there is none."""
    try:
        return ctypes.CDLL(None).sched_getcpu
    except (OSError, AttributeError):
        return None


def current_cpu() -> int | None:
    """The CPU the calling thread runs on now; None where the system cannot say, or has no
    thread affinity to keep threads apart with."""
    getcpu = _sched_getcpu()
    if getcpu is None or not hasattr(os, "sched_setaffinity"):
        return None
    cpu = getcpu()
    return cpu if cpu >= 0 else None


class Pool:
    """``size`` worker threads that ``apart`` can keep off the caller's CPU: a
    ThreadPoolExecutor whose threads are started at once and known by their thread ids."""

    def __init__(self, size: int, name: str):
        self.ids: list[int] = []
        self._executor = ThreadPoolExecutor(
            size, name, initializer=lambda: self.ids.append(threading.get_native_id())
        )
        started = threading.Barrier(size)  # each task holds its thread until all have one
        wait([self._executor.submit(started.wait) for _ in range(size)])
        self._kept_off: frozenset | None = None  # the CPUs the workers are allowed now

    def submit(self, fn, *args):
        return self._executor.submit(fn, *args)

    def shutdown(self) -> None:
        self._executor.shutdown()

    def keep_on(self, cpus: frozenset) -> None:
        """Let the workers run on ``cpus`` only (a system call per worker where that
        changes)."""
        if cpus != self._kept_off:
            for tid in self.ids:
                os.sched_setaffinity(tid, cpus)
            self._kept_off = cpus


@contextlib.contextmanager
def apart(pool: Pool, workers: int):
    """While the block hands parts to ``workers`` threads of ``pool`` and computes its own:
    the calling thread stays on its CPU and the pool's threads keep off it."""
    here = current_cpu()
    if here is None:
        yield
        return
    mine = os.sched_getaffinity(0)
    if here not in mine or workers >= len(mine):  # no CPU to spare for each worker
        pool.keep_on(frozenset(mine))
        yield
        return
    pool.keep_on(frozenset(mine - {here}))
    os.sched_setaffinity(0, {here})
    try:
        yield
    finally:
        os.sched_setaffinity(0, mine)
