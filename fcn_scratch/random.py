"""The global random generators used by dropout: one per device, seeded together.

``manual_seed(seed)`` makes dropout masks reproducible; ``get_state`` / ``set_state``
capture and restore the CPU generator (a JSON-able dict), which checkpoints store so
that a resumed run continues with the same masks.
"""

import numpy as np

from fcn_scratch.device import import_cupy

_seed = 0
_generators: dict = {}


def manual_seed(seed: int) -> None:
    """Reseed every device's generator."""
    global _seed
    _seed = int(seed)
    _generators.clear()


def generator(device: str = "cpu"):
    """The generator for ``device``: numpy.random.Generator, or cupy's on 'cuda'."""
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
