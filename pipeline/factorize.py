"""Factorization of string columns into integer codes, the first step of every group-by on strings.

``pandas.factorize`` also scans object arrays for missing values, which took
about 40% of its time on 20,000-row columns of short str (pandas 3.1,
CPython 3.11, 2-vCPU AMD EPYC: 108 ns against 63 ns per row). Batch columns
here hold str only, "" standing for a missing value, so ``factorize_strings``
calls pandas' object hash table directly and falls back to ``pandas.factorize``
when that internal class is not there.

>>> codes, uniques = factorize_strings(np.array(["b", "a", "b", ""], dtype=object))
>>> codes.tolist(), uniques.tolist()
([0, 1, 0, 2], ['b', 'a', ''])
"""

from __future__ import annotations

import numpy as np
import pandas as pd

try:
    # NOTE: a pandas internal, checked with pandas 3.1.1 only. The import guard falls back when it is gone.
    from pandas._libs.hashtable import PyObjectHashTable
except ImportError:  # pragma: no cover - depends on the installed pandas
    PyObjectHashTable = None


def factorize_strings(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (codes, uniques) for an object array of str: ``uniques[codes]`` equals ``values``.

    Uniques are in order of first appearance and codes are intp.
    """
    if PyObjectHashTable is None or values.dtype != object:
        codes, uniques = pd.factorize(values, use_na_sentinel=False)
        return codes, np.asarray(uniques, dtype=object)
    uniques, codes = PyObjectHashTable(max(len(values), 1)).factorize(values, ignore_na=False)
    return codes, uniques
