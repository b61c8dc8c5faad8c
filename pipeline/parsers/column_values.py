"""Conversion of parsed string columns once per distinct value, for the columnar parsers.

Access logs repeat their times, latencies, countries and credentials on many
lines, so converting each distinct value once and spreading the results
with its codes costs less than converting every row.

>>> import numpy as np
>>> values = np.array(["0.5", "x", "0.5"], dtype=object)
>>> converted, failed = convert_each(values, float, np.float64)
>>> converted.tolist(), failed.tolist()
([0.5, 0.0, 0.5], [False, True, False])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from pipeline.factorize import factorize_strings


def convert_distinct(
    codes: np.ndarray, uniques: np.ndarray, convert: Callable[[str], Any], dtype
) -> tuple[np.ndarray, np.ndarray | None]:
    """Convert each distinct value once and return the row values with a mask of the rows whose value failed.

    A value fails when ``convert`` raises ValueError. The mask is None when
    no value failed, and the row values of failed rows are 0.
    """
    values = uniques.tolist()
    try:
        converted = np.array([convert(value) for value in values], dtype=dtype)
    except ValueError:
        converted = np.zeros(len(values), dtype=dtype)
        bad = np.zeros(len(values), dtype=np.bool_)
        for index, value in enumerate(values):
            try:
                converted[index] = convert(value)
            except ValueError:
                bad[index] = True
        return converted[codes], bad[codes]
    return converted[codes], None


def convert_each(values: np.ndarray, convert: Callable[[str], Any], dtype) -> tuple[np.ndarray, np.ndarray | None]:
    """Convert a column once per distinct value (see ``convert_distinct``)."""
    codes, uniques = factorize_strings(values)
    return convert_distinct(codes, uniques, convert, dtype)


def convert_runs(values: np.ndarray, convert: Callable[[str], Any], dtype) -> tuple[np.ndarray, np.ndarray | None]:
    """Convert a column once per run of equal consecutive values, cheaper than factorizing for log times."""
    changed = np.empty(len(values), dtype=np.bool_)
    changed[0] = True
    np.not_equal(values[1:], values[:-1], out=changed[1:])
    codes = np.cumsum(changed) - 1
    return convert_distinct(codes, values[changed], convert, dtype)


def dash_to_empty(values: np.ndarray) -> np.ndarray:
    """Return a copy of a string column with "-" (a field the log left empty) replaced by ""."""
    values = values.copy()
    values[values == "-"] = ""
    return values
