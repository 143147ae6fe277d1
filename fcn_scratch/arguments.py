"""Argument checks shared by the layers that take window arguments (ops and nn): each
raises an error whose message names the op, the argument, what was expected and what came.
"""

import numpy as np


def pair(op: str, name: str, value, minimum: int) -> tuple[int, int]:
    """Normalise an int or a pair of ints to ``(h, w)`` and check ``>= minimum``."""
    # The common cases first, ops call this often: an int, or the pair a module keeps.
    if type(value) is int and value >= minimum:
        return (value, value)
    if (
        type(value) is tuple
        and len(value) == 2
        and type(value[0]) is type(value[1]) is int
        and min(value) >= minimum
    ):
        return value
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (int(value), int(value))
    if (
        not isinstance(value, (tuple, list))
        or len(value) != 2
        or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value)
    ):
        raise TypeError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")
    value = (int(value[0]), int(value[1]))
    if min(value) < minimum:
        if minimum == 1:
            raise ValueError(f"{op}: {name} must be positive, got {value}")
        raise ValueError(f"{op}: {name} must be >= {minimum}, got {value}")
    return value
