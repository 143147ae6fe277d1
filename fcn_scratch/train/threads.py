"""How many threads the BLAS library (the GEMMs) and the Numba kernels may use.

Both keep pools of threads that spin while they wait for work. On a machine with two
cores, two such pools (or one pool and any other busy program) take turns on the cores,
and every parallel region waits for a thread that is not running: a training step can
take 20 times longer than with one thread each. ``fcn-scratch train`` therefore uses one
thread unless told otherwise (``--threads``); more helps only on an otherwise idle machine.
"""

import numba
import threadpoolctl


def limit_threads(n: int) -> None:
    """Use at most ``n`` threads in BLAS and in the Numba kernels, from now on."""
    if n < 1:
        raise ValueError(f"limit_threads: n must be >= 1, got {n}")
    threadpoolctl.threadpool_limits(n, user_api="blas")
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
