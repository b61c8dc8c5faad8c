"""Impossible travel: a token seen in two countries farther apart than anyone could travel in between.

Each window's main country is the one with the most requests among the
countries with a known centroid (``detectors.geo``). A window is flagged
when, compared with the token's previous active window, the main country
changed, the centroids are at least ``min_distance_km`` apart, and covering
that distance in the time between the windows needs more than
``max_speed_kmh``. Two such countries inside one window count as
simultaneous use (the time is the window length).

Tokens used from several countries at once as a matter of course
(multi-region servers, VPN users) are exempt once ``exempt_after``
windows with more than one country were seen. From then on only
``token_sharing`` judges them, against their own baseline.

Score: the required speed divided by ``max_speed_kmh``. Severity: HIGH,
CRITICAL from 10 times. Memory: 8 bytes per token slot (last main
country, last window end, multi-country counter).
"""

from __future__ import annotations

import numpy as np

from detectors.base import (
    Detection,
    DetectionContext,
    SlotArrays,
    SlotStateDetector,
    build_detection,
    explain,
    severity_from_score,
)
from detectors.ewma import _rounds
from detectors.geo import CENTROID_CODES, country_indices, distance_km
from pipeline.windows import WindowBatch
from schemas.detections import Evidence

_SECONDS_PER_HOUR = 3600.0


class ImpossibleTravel(SlotStateDetector):
    """Flags tokens whose country changes faster than travel allows.

    Args:
        max_speed_kmh: Fastest plausible travel between country centres.
        min_distance_km: Smallest centroid distance that can be flagged, so
            neighbouring countries and border regions never are.
        exempt_after: Multi-country windows after which a token is exempt.
    """

    detector_id = "impossible_travel"
    version = "1"
    score_range = (1.0, float("inf"))

    def __init__(self, max_speed_kmh: float = 1000.0, min_distance_km: float = 1500.0, exempt_after: int = 3) -> None:
        self.max_speed_kmh = max_speed_kmh
        self.min_distance_km = min_distance_km
        self.exempt_after = exempt_after
        self.state = SlotArrays(
            {
                "country": (np.int16, -1, ()),
                "seen_until": (np.uint32, 0, ()),
                "multi_country": (np.uint8, 0, ()),
            }
        )

    def detect(self, windows: WindowBatch, context: DetectionContext) -> list[Detection]:
        if windows.size == 0 or windows.pairs is None:
            return []
        main, farthest, spread_km, pair_rows, pair_codes = _window_countries(windows)
        start = windows.keys["window_start"]
        end = windows.keys["window_end"]
        speed = np.zeros(windows.size)
        distance = np.zeros(windows.size)
        hours = np.zeros(windows.size)
        previous = np.full(windows.size, -1, dtype=np.int64)
        flagged = np.zeros(windows.size, dtype=bool)
        for rows in _rounds(windows.slots):
            slots = windows.slots[rows]
            last = self.state["country"][slots].astype(np.int64)
            last_end = self.state["seen_until"][slots].astype(np.float64)
            exempt = self.state["multi_country"][slots] >= self.exempt_after
            # Travel since the previous window, or simultaneous use inside this one.
            gap_h = np.maximum(start[rows] - last_end, 0.0) / _SECONDS_PER_HOUR + (end[rows] - start[rows]) / _SECONDS_PER_HOUR
            moved = (last >= 0) & (main[rows] >= 0) & (last != main[rows])
            travel_km = np.where(moved, distance_km(last, main[rows]), 0.0)
            inside_km = np.nan_to_num(spread_km[rows])
            use_inside = inside_km > travel_km
            km = np.where(use_inside, inside_km, np.nan_to_num(travel_km))
            window_h = (end[rows] - start[rows]) / _SECONDS_PER_HOUR
            h = np.where(use_inside, window_h, gap_h)
            v = km / h
            flag = ~exempt & (km >= self.min_distance_km) & (v > self.max_speed_kmh)
            speed[rows], distance[rows], hours[rows], flagged[rows] = v, km, h, flag
            previous[rows] = np.where(use_inside, main[rows], last)

            multi = np.isfinite(spread_km[rows]) & (spread_km[rows] > 0)
            self.state["multi_country"][slots] = np.minimum(
                self.state["multi_country"][slots].astype(np.int64) + multi, 255
            )
            known = main[rows] >= 0
            self.state["country"][slots[known]] = main[rows][known]
            self.state["seen_until"][slots] = end[rows].astype(np.uint32)

        detections = []
        for row in np.flatnonzero(flagged).tolist():
            here = str(CENTROID_CODES[main[row]])
            there_index = farthest[row] if previous[row] == main[row] else previous[row]
            there = str(CENTROID_CODES[there_index]) if there_index >= 0 else "?"
            score = speed[row] / self.max_speed_kmh
            evidence = (
                Evidence(feature="distance_km", observed=distance[row], threshold=self.min_distance_km),
                Evidence(feature="hours_between", observed=hours[row]),
                Evidence(feature="speed_kmh", observed=speed[row], threshold=self.max_speed_kmh),
            )
            lo, hi = np.searchsorted(pair_rows, [row, row + 1])
            seen = ", ".join(str(CENTROID_CODES[code]) for code in pair_codes[lo:hi].tolist())
            summary = f"{windows.keys['subject_id'][row]} was used from {there} and {here} (countries this window: {seen})"
            detections.append(
                build_detection(
                    self,
                    windows,
                    row,
                    score=score,
                    threshold=1.0,
                    severity=severity_from_score(score, 0.0, 1.0, 10.0),
                    explanation=explain(summary, evidence),
                    evidence=evidence,
                    context=context,
                )
            )
        return detections


def _window_countries(windows: WindowBatch) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return the centroid rows of each window's countries.

    Per window: the main country, the farthest other country and their
    distance in km (NaN with one country), from countries with at least one
    request served with a status below 400. Then every (window row, country)
    pair with a known centroid, sorted by row and most requests first.
    """
    n = windows.size
    main = np.full(n, -1, dtype=np.int64)
    farthest = np.full(n, -1, dtype=np.int64)
    spread = np.full(n, np.nan)
    table = windows.pairs["country"]
    centroid = country_indices(table.values)
    # Only countries with at least one served request (status below 400)
    # count as "used from": rejected attempts with a guessed or revoked
    # credential are stuffing, which the client-scoped rules report.
    known = np.flatnonzero((centroid >= 0) & (table.requests > table.failures))
    if len(known) == 0:
        return main, farthest, spread, np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    rows = table.rows[known]
    order = np.lexsort((-table.requests[known], rows))
    rows, codes = rows[order], centroid[known][order]
    first = np.r_[True, rows[1:] != rows[:-1]]
    main[rows[first]] = codes[first]
    to_main = distance_km(main[rows], codes)
    others = ~first
    if others.any():
        best = np.full(n, -1.0)
        np.maximum.at(best, rows[others], to_main[others])
        has = best >= 0
        spread[has] = best[has]
        hit = others & (to_main == best[rows])
        farthest[rows[hit]] = codes[hit]
    return main, farthest, spread, rows, codes
