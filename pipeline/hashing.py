"""Counter-based 64-bit hashing of integer arrays (SplitMix64), vectorized with numpy.

Used wherever an id or a draw must be a pure function of its inputs, such as
window ids from (subject key, window start) or simulated secrets from (seed, index).

>>> int(hash_pair(1, 2)) == int(hash_pair(1, 2)) != int(hash_pair(2, 1))
True
"""

from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MUL1 = np.uint64(0xBF58476D1CE4E5B9)
_MUL2 = np.uint64(0x94D049BB133111EB)


def splitmix64(values: np.ndarray | int) -> np.ndarray:
    """Hash uint64 values with the SplitMix64 finalizer (wrapping arithmetic)."""
    z = np.asarray(values, dtype=np.uint64) + _GOLDEN
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * _MUL1
        z = (z ^ (z >> np.uint64(27))) * _MUL2
    return z ^ (z >> np.uint64(31))


def hash_pair(key: np.ndarray | int, value: np.ndarray | int) -> np.ndarray:
    """Hash two uint64 inputs together (order matters)."""
    with np.errstate(over="ignore"):
        return splitmix64(splitmix64(key) ^ np.asarray(value, dtype=np.uint64))
