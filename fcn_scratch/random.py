"""The global random generators used by dropout: one per device, seeded together.

``manual_seed(seed)`` makes dropout masks reproducible; ``get_state`` / ``set_state``
capture and restore the CPU generator (a JSON-able dict), which checkpoints store so
that a resumed run continues with the same masks. Inside ``lane_generator(seed, i)`` a
thread draws from a generator of its own instead (``fcn_scratch.parallel``'s lanes).
"""

import threading
from contextlib import contextmanager

import numpy as np

from fcn_scratch.device import import_cupy

_seed = 0
_generators: dict = {}
_lane = threading.local()  # .seed, .generator: this thread's while in a lane


def manual_seed(seed: int) -> None:
    """Reseed every device's generator."""
    global _seed
    _seed = int(seed)
    _generators.clear()


def generator(device: str = "cpu"):
    """The generator for ``device``: numpy.random.Generator, or cupy's on 'cuda'."""
    seed = getattr(_lane, "seed", None)
    if seed is not None and device == "cpu":
        if _lane.generator is None:
            _lane.generator = np.random.default_rng(seed)
        return _lane.generator
    if device not in _generators:
        if device == "cuda":
            _generators[device] = import_cupy().random.default_rng(_seed)
        else:
            _generators[device] = np.random.default_rng(_seed)
    return _generators[device]


def get_state() -> dict:
    """The seed and the CPU generator's bit-generator state."""
    return {"seed": _seed, "cpu": generator("cpu").bit_generator.state}


def set_state(state: dict) -> None:
    """Restore what get_state returned."""
    manual_seed(state["seed"])
    generator("cpu").bit_generator.state = state["cpu"]


@contextmanager
def lane_generator(seed: int, lane: int):
    """In this block, this thread's CPU draws come from a generator seeded by (seed, lane),
    made at the first draw (most steps draw nothing: dropout is off by default)."""
    _lane.seed, _lane.generator = [seed, lane], None
    try:
        yield
    finally:
        _lane.seed = _lane.generator = None
