"""Builders for event batches in unit tests (event time is fixed, never wall clock)."""

from __future__ import annotations

import numpy as np

from pipeline.windows import _with_defaults

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z, a window boundary for every size that divides a day


def events(**columns) -> dict[str, np.ndarray]:
    """Build a full event batch from the given columns (lists), filling the rest with empty values."""
    converted = {}
    for name, values in columns.items():
        if len(values) and isinstance(values[0], str):
            array = np.empty(len(values), dtype=object)
            array[:] = values
            converted[name] = array
        else:
            converted[name] = np.asarray(values)
    batch = _with_defaults(converted)
    if "offset" not in columns:
        batch["offset"] = np.arange(1, len(batch["ts"]) + 1, dtype=np.int64)
    return batch


def steady_windows(subject: str, counts: list[int], start: float = T0, size: float = 10.0) -> dict[str, np.ndarray]:
    """Events for one subject with ``counts[i]`` requests spread inside window ``i``."""
    ts: list[float] = []
    for i, count in enumerate(counts):
        ts.extend((start + i * size + np.linspace(0.0, size * 0.99, count)).tolist())
    return events(ts=ts, subject_id=[subject] * len(ts), client_ip=["198.51.100.1"] * len(ts), status=[200] * len(ts))
