"""Counter-based hashing for values that must not depend on draw order.

Secrets, rotating client addresses and steady-rate jitter are pure functions
of (seed, index), so a token's secret or a mobile client's address at a given
time is the same whichever chunk or scenario computes it first.
"""

from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MUL1 = np.uint64(0xBF58476D1CE4E5B9)
_MUL2 = np.uint64(0x94D049BB133111EB)
_BASE62 = np.array(list("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"))
_DIGITS_PER_WORD = 8  # 62**8 < 2**48, so 8 digits per 64-bit hash stay close to uniform


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


def unit_float(hashes: np.ndarray) -> np.ndarray:
    """Map uint64 hashes to floats in [0, 1) using their top 53 bits."""
    return (hashes >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def base62_strings(key: int, indices: np.ndarray, length: int) -> list[str]:
    """Return one base62 string of ``length`` characters per index, derived from ``key``."""
    indices = np.asarray(indices, dtype=np.uint64)
    words = -(-length // _DIGITS_PER_WORD)
    digits = np.empty((len(indices), words * _DIGITS_PER_WORD), dtype=np.int64)
    for word in range(words):
        hashes = hash_pair(hash_pair(key, word), indices)
        for position in range(_DIGITS_PER_WORD):
            digits[:, word * _DIGITS_PER_WORD + position] = (hashes % np.uint64(62)).astype(np.int64)
            hashes = hashes // np.uint64(62)
    characters = np.ascontiguousarray(_BASE62[digits[:, :length]])
    return characters.view(f"<U{length}")[:, 0].tolist()
