"""Counter-based hashing for values that must not depend on draw order.

Secrets, rotating client addresses and steady-rate jitter are pure functions
of (seed, index), so a token's secret or a mobile client's address at a given
time is the same whichever chunk or scenario computes it first.
"""

from __future__ import annotations

import numpy as np

from pipeline.hashing import hash_pair, splitmix64

_BASE62 = np.array(list("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"))
_DIGITS_PER_WORD = 8  # 62**8 < 2**48, so 8 digits per 64-bit hash stay close to uniform

__all__ = ["base62_strings", "hash_pair", "splitmix64", "unit_float"]


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
