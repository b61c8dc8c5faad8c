"""Shared steps of the registry rules that compare (window, value) pairs with a token's allow-list.

Geofence, allowed origins and scopes work the same way. They take the
batch's pair table for one event column (``windows.pairs``) and keep the
pairs of windows whose token has an allow-list in the registry. Each of
those pairs is tested against the list in a short Python loop, which is
cheap because pairs are distinct per window, far fewer than events. Then
the requests outside the list are summed per window.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from detectors.base import Detection, DetectionContext, Detector, build_detection, explain, registry_rows
from pipeline.windows import PairTable, WindowBatch
from schemas.detections import Evidence, Severity


@dataclass(slots=True)
class Violations:
    """Windows with requests outside their token's allow-list."""

    rows: np.ndarray
    """Window rows, ascending."""
    requests_outside: np.ndarray
    """Requests of each window whose value is outside the list."""
    values_outside: list[list[str]]
    """Distinct values outside the list per window, most requests first."""
    record_rows: np.ndarray
    """Registry row of each window's token."""


def find_violations(
    windows: WindowBatch,
    context: DetectionContext,
    pair_column: str,
    has_list: np.ndarray,
    allowed: Callable[[int, str], bool],
    skip_empty: bool = True,
) -> Violations | None:
    """Return the windows with values outside their token's list, or None when there are none.

    ``has_list`` is the registry column telling which tokens have a list;
    ``allowed(record_row, value)`` decides one pair.
    """
    if windows.pairs is None or not has_list.any():
        return None
    table: PairTable = windows.pairs[pair_column]
    if len(table) == 0:
        return None
    rows = registry_rows(windows, context)
    record = rows[table.rows]
    candidate = record >= 0
    candidate[candidate] = has_list[record[candidate]]
    if skip_empty:
        candidate &= table.values != ""
    index = np.flatnonzero(candidate)
    if len(index) == 0:
        return None
    outside = np.array(
        [not allowed(int(r), str(v)) for r, v in zip(record[index], table.values[index], strict=True)], dtype=bool
    )
    index = index[outside]
    if len(index) == 0:
        return None
    order = np.lexsort((-table.requests[index], table.rows[index]))
    index = index[order]
    window_rows, starts = np.unique(table.rows[index], return_index=True)
    sums = np.add.reduceat(table.requests[index], starts)
    bounds = np.append(starts, len(index))
    values = [table.values[index[bounds[i] : bounds[i + 1]]].tolist() for i in range(len(window_rows))]
    return Violations(
        rows=window_rows.astype(np.int64),
        requests_outside=sums,
        values_outside=values,
        record_rows=rows[window_rows],
    )


def violation_detections(
    detector: Detector,
    windows: WindowBatch,
    context: DetectionContext,
    found: Violations,
    *,
    features: tuple[str, str],
    summarize: Callable[[int, list[str], int], str],
    is_high: Callable[[float, float], bool],
) -> list[Detection]:
    """Build one detection per window of ``found``, scored by the share of its requests outside the list.

    ``features`` names the two evidence items: the requests outside the list
    and their share of the window. ``summarize(row, values_outside, record)``
    returns the explanation's first sentence, and ``is_high(outside, share)``
    whether the detection is HIGH rather than MEDIUM.
    """
    requests = windows.feature("requests")
    detections = []
    for row, outside, values, record in zip(
        found.rows.tolist(), found.requests_outside, found.values_outside, found.record_rows.tolist(), strict=True
    ):
        share = outside / requests[row]
        evidence = (
            Evidence(feature=features[0], observed=outside, expected=0.0),
            Evidence(feature=features[1], observed=share, expected=0.0),
        )
        detections.append(
            build_detection(
                detector,
                windows,
                row,
                score=share,
                threshold=0.0,
                severity=Severity.HIGH if is_high(outside, share) else Severity.MEDIUM,
                explanation=explain(summarize(row, values, record), evidence),
                evidence=evidence,
                context=context,
            )
        )
    return detections


def list_text(values: list[str], limit: int = 5) -> str:
    """Join values for an explanation, naming how many were left out."""
    shown = ", ".join(values[:limit])
    if len(values) > limit:
        shown += f" and {len(values) - limit} more"
    return shown
