"""cpus.apart: while an op's parts run, the caller keeps its CPU and the pool's threads keep
off it; afterwards the caller has its CPUs back. Needs Linux and at least 2 allowed CPUs
(skipped elsewhere)."""

import os
import threading

import pytest

from fcn_scratch import cpus, parallel

pytestmark = pytest.mark.skipif(
    cpus.current_cpu() is None or len(os.sched_getaffinity(0)) < 2,
    reason="needs thread affinity (Linux) and at least 2 CPUs",
)


@pytest.fixture
def pool():
    p = cpus.Pool(1, "test")
    yield p
    p.shutdown()


def test_a_pool_knows_each_of_its_threads():
    p = cpus.Pool(3, "test")
    try:
        assert len(set(p.ids)) == 3 and threading.get_native_id() not in p.ids
    finally:
        p.shutdown()


def test_the_caller_keeps_its_cpu_and_the_worker_keeps_off_it(pool):
    mine = os.sched_getaffinity(0)
    with cpus.apart(pool, 1):
        here = cpus.current_cpu()
        assert os.sched_getaffinity(0) == {here}
        assert os.sched_getaffinity(pool.ids[0]) == mine - {here}
        where = pool.submit(cpus.current_cpu).result()
        assert where != here
    assert os.sched_getaffinity(0) == mine


def test_the_caller_gets_its_cpus_back_after_an_error(pool):
    mine = os.sched_getaffinity(0)
    with pytest.raises(RuntimeError), cpus.apart(pool, 1):
        raise RuntimeError("a failing part")
    assert os.sched_getaffinity(0) == mine


def test_more_workers_than_spare_cpus_are_left_free(pool):
    mine = os.sched_getaffinity(0)
    with cpus.apart(pool, 1):  # pins the worker first
        pass
    with cpus.apart(pool, len(mine)):
        assert os.sched_getaffinity(0) == mine
        assert os.sched_getaffinity(pool.ids[0]) == mine


def test_split_ops_run_their_slices_apart():
    parallel.limit_threads(2)
    allowed = []
    parallel.run_parts(lambda: allowed.append(os.sched_getaffinity(0)), [(), ()])
    assert len(allowed) == 2 and not allowed[0] & allowed[1]
