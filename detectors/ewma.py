"""EWMA spike detection on each token's request count and error ratios per window.

Baselines are exponentially weighted means and variances over the windows
where the token was active. Idle windows are not averaged in as zeros, so a
token that sleeps at night is not "spiking" when it wakes up. A token is
judged against its own behaviour while active.

``EwmaRate`` (``ewma_rate``) flags request-count spikes. The expected count
of a window is the larger of two baselines:

* the short EWMA (``span`` active windows, 10 minutes at 10 s windows), which
  follows steady growth: a customer growing 3x over a week grows about 17 %
  a day, far less than the short baseline needs to fall behind;
* the hour-of-day profile (optional, ``seasonal=True``): for each UTC hour,
  a long-memory EWMA across days (weight ``season_alpha`` per day) of the
  token's mean count per active window in that hour. A nightly batch job or
  a daily peak seen on earlier days is expected again at that hour. The
  profile learns unclipped counts, so traffic that repeats at the same hour
  the next day is expected from then on; the policy acted on the first day.

A window is flagged when all of these hold:

* the token has been seen in at least ``warmup_windows`` active windows;
* it sent at least ``min_requests`` requests in the window, so low-volume
  tokens never trip on Poisson noise;
* its z-score ``(x - expected) / sqrt(max(var, expected) + 1)`` is at least
  ``threshold``; ``max(var, expected)`` floors the variance at the Poisson
  variance of a count with that mean;
* ``x >= min_ratio * expected``.

The score is that z-score. A flagged window is learned clipped to
``expected + threshold * sd``, so an attack does not become the baseline
within a few windows. ``threshold`` and ``min_ratio`` set the sensitivity.

``EwmaErrors`` (``ewma_errors``) flags jumps in the 4xx, 401/403 and 5xx
ratios against the token's own ratios; see its docstring.

Cost: a few vectorized numpy passes per batch, about 1 µs per window.

>>> import numpy as np
>>> from pipeline.state import SubjectIndex
>>> detector = EwmaRate(warmup_windows=3, min_requests=5)
>>> index = SubjectIndex()
>>> detector.attach(index)
>>> slots = np.zeros(4, dtype=np.int64)
>>> [int(z > 6) for z in detector.score_and_learn(slots, np.array([10.0, 11.0, 9.0, 200.0]))[0]]
[0, 0, 0, 1]
"""

from __future__ import annotations

import logging

import numpy as np

from detectors.base import (
    Detection,
    DetectionContext,
    SlotArrays,
    SlotStateDetector,
    build_detection,
    explain,
    format_number,
    rows_where,
    severity_from_score,
)
from pipeline.windows import WindowBatch
from schemas.detections import Evidence

logger = logging.getLogger(__name__)

_UNKNOWN_HOUR = 0
_PROFILE_STEPS = 8.0
"""The hour profile stores 1 + log2(count + 1) * 8 as uint8: steps of 9 %, up to 2**31 requests per window.

An update smaller than half a step is rounded away, so a profile entry can
stay up to about 15 % (with season_alpha 0.3) from the true hourly mean.
"""
_SECONDS_PER_HOUR = 3600.0
_ACTIVE_MAX = np.iinfo(np.uint16).max


class EwmaRate(SlotStateDetector):
    """Per-token EWMA of requests per active window, with an hour-of-day baseline, flagging spikes.

    Args:
        span: Effective memory of the short baseline in active windows;
            ``alpha = 2 / (span + 1)``.
        threshold: z-score at which a window is flagged.
        warmup_windows: Active windows a token needs before it can be flagged.
        min_requests: Minimum requests of a window that can be flagged.
        min_ratio: Minimum multiple of the expected count that a flagged window must reach.
        seasonal: Keep the hour-of-day profile (24 uint8 per token).
        season_alpha: Weight of a new day's hour in its hour-of-day profile.

    Memory: 44 bytes per token slot (float32 mean and variance, 24 uint8
    hour profile entries, the running hour's float32 sum, uint16 count and
    uint32 index, a uint16 window counter).
    """

    detector_id = "ewma_rate"
    version = "2"

    def __init__(
        self,
        span: float = 60.0,
        threshold: float = 6.0,
        warmup_windows: int = 12,
        min_requests: float = 30.0,
        min_ratio: float = 3.0,
        seasonal: bool = True,
        season_alpha: float = 0.3,
    ) -> None:
        if span < 1:
            raise ValueError(f"span must be >= 1 window, got {span!r}")
        if threshold <= 0:
            raise ValueError(f"threshold must be a positive z-score, got {threshold!r}")
        if not 0 < season_alpha <= 1:
            raise ValueError(f"season_alpha must be in (0, 1], got {season_alpha!r}")
        self.alpha = 2.0 / (span + 1.0)
        self.threshold = threshold
        self.warmup_windows = warmup_windows
        self.min_requests = min_requests
        self.min_ratio = min_ratio
        self.seasonal = seasonal
        self.season_alpha = season_alpha
        self.state = SlotArrays(
            {
                "mean": (np.float32, 0.0, ()),
                "var": (np.float32, 0.0, ()),
                "active": (np.uint16, 0, ()),
                "season": (np.uint8, _UNKNOWN_HOUR, (24,)),
                "hour_sum": (np.float32, 0.0, ()),
                "hour_windows": (np.uint16, 0, ()),
                "hour_index": (np.uint32, 0, ()),
            }
        )

    def baseline(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return the short baseline's mean and variance of requests per active window."""
        return self.state["mean"][slots].astype(np.float64), self.state["var"][slots].astype(np.float64)

    def hour_expectation(self, slots: np.ndarray, window_start: np.ndarray) -> np.ndarray:
        """Return the hour-of-day expected count for each window, 0 where the hour was never seen."""
        if not self.seasonal:
            return np.zeros(len(slots))
        hour_of_day = (np.floor(window_start / _SECONDS_PER_HOUR).astype(np.int64)) % 24
        stored = self.state["season"][slots, hour_of_day].astype(np.float64)
        expected = np.exp2((stored - 1.0) / _PROFILE_STEPS) - 1.0
        return np.where(stored != _UNKNOWN_HOUR, expected, 0.0)

    def score_and_learn(
        self, slots: np.ndarray, counts: np.ndarray, window_start: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Score each count against its slot's baseline, then learn it.

        Windows of the same slot are processed in their given order, one
        round per repetition, so each is scored against the windows before it.
        ``window_start`` (seconds since the epoch) drives the hour-of-day
        baseline; without it only the short baseline is used.
        Returns (z-scores, expected counts, flag mask).
        """
        z, expected, flags, _ = self._score_and_learn(slots, counts, window_start)
        return z, expected, flags

    def _score_and_learn(
        self, slots: np.ndarray, counts: np.ndarray, window_start: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Like ``score_and_learn``, also returning the smallest count each window needed to be flagged."""
        z = np.zeros(len(slots))
        expected = np.zeros(len(slots))
        flags = np.zeros(len(slots), dtype=bool)
        flag_at = np.zeros(len(slots))
        for rows in _rounds(slots):
            starts = None if window_start is None else window_start[rows]
            z[rows], expected[rows], flags[rows], flag_at[rows] = self._score_round(slots[rows], counts[rows], starts)
        return z, expected, flags, flag_at

    def _score_round(
        self, slots: np.ndarray, counts: np.ndarray, window_start: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        mean, var = self.baseline(slots)
        expected = mean
        if window_start is not None:
            expected = np.maximum(mean, self.hour_expectation(slots, window_start))
        spread = np.sqrt(np.maximum(var, expected) + 1.0)
        z = (counts - expected) / spread
        active = self.state["active"][slots]
        warm = active >= self.warmup_windows
        flags = (
            warm & (counts >= self.min_requests) & (z >= self.threshold) & (counts >= self.min_ratio * expected)
        )
        learned = np.where(flags, expected + self.threshold * spread, counts)

        # Short baseline: exponentially weighted mean and variance (West's update),
        # with alpha = 1 / (n + 1) while fewer than span windows were seen.
        alpha = np.maximum(self.alpha, 1.0 / (active.astype(np.float64) + 1.0))
        delta = learned - mean
        self.state["mean"][slots] = mean + alpha * delta
        self.state["var"][slots] = (1.0 - alpha) * (var + alpha * delta**2)
        self.state["active"][slots] = np.minimum(active.astype(np.int64) + 1, _ACTIVE_MAX)
        if self.seasonal and window_start is not None:
            self._learn_hour(slots, counts, window_start)
        flag_at = np.maximum(expected + self.threshold * spread, np.maximum(self.min_ratio * expected, self.min_requests))
        return np.where(warm, z, 0.0), expected, flags, flag_at

    def _learn_hour(self, slots: np.ndarray, counts: np.ndarray, window_start: np.ndarray) -> None:
        """Add a window to its hour; when a token's hour changes, fold the finished hour into its profile."""
        state = self.state
        hour = np.floor(window_start / _SECONDS_PER_HOUR).astype(np.int64)
        previous = state["hour_index"][slots].astype(np.int64)
        windows_in_hour = state["hour_windows"][slots]
        fold = (previous != hour) & (windows_in_hour > 0)
        if fold.any():
            fold_slots = slots[fold]
            hour_mean = state["hour_sum"][fold_slots].astype(np.float64) / windows_in_hour[fold]
            value = 1.0 + np.log2(hour_mean + 1.0) * _PROFILE_STEPS
            hour_of_day = previous[fold] % 24
            old = state["season"][fold_slots, hour_of_day].astype(np.float64)
            blended = np.where(old == _UNKNOWN_HOUR, value, old + self.season_alpha * (value - old))
            state["season"][fold_slots, hour_of_day] = np.clip(np.rint(blended), 1, 255).astype(np.uint8)
        moved = previous != hour
        state["hour_sum"][slots] = np.where(moved, 0.0, state["hour_sum"][slots]) + counts
        state["hour_windows"][slots] = np.minimum(
            np.where(moved, 0, windows_in_hour).astype(np.int64) + 1, _ACTIVE_MAX
        )
        state["hour_index"][slots] = hour

    def detect(self, windows: WindowBatch, context: DetectionContext) -> list[Detection]:
        if windows.size == 0:
            return []
        counts = windows.feature("requests")
        z, expected, flags, flag_at = self._score_and_learn(windows.slots, counts, windows.keys["window_start"])
        detections = []
        for row in rows_where(flags):
            evidence = (
                Evidence(feature="requests", observed=counts[row], expected=expected[row], threshold=flag_at[row]),
            )
            summary = (
                f"{windows.keys['subject_id'][row]} sent {format_number(counts[row])} requests in "
                f"{context.window_s:g} s, z = {z[row]:.1f} against its own baseline (threshold {self.threshold:g})"
            )
            detections.append(
                build_detection(
                    self,
                    windows,
                    row,
                    score=z[row],
                    threshold=self.threshold,
                    severity=severity_from_score(z[row], self.threshold, 2 * self.threshold, 4 * self.threshold),
                    explanation=explain(summary, evidence),
                    evidence=evidence,
                    context=context,
                )
            )
        return detections


ERROR_FEATURES: tuple[str, ...] = ("ratio_4xx", "ratio_401_403", "ratio_5xx")


class EwmaErrors(SlotStateDetector):
    """Per-token EWMA of the 4xx, 401/403 and 5xx ratios, flagging jumps.

    Each ratio ``r`` of a window with ``n`` requests is compared with the
    token's weighted mean ratio ``p`` through
    ``z = (r - p) / sqrt(max(p, p_floor) * (1 - p) / n + var)``: the binomial
    variance of a ratio over ``n`` requests plus the token's own extra
    variance, so few requests give a wide band. A ratio is flagged when the
    token is warm, the window has ``min_requests`` requests and
    ``min_errors`` such errors, the ratio rose by at least ``min_increase``
    and ``z >= threshold``. The score is the largest flagged z; evidence
    lists every flagged ratio against the token's mean.

    Learning weighs a window by ``n / (n + 10)``, so a window of one or two
    requests barely moves the baseline. Flagged ratios are learned clipped,
    as in ``EwmaRate``.

    Memory: 26 bytes per token slot (float32 mean and variance of three
    ratios, a uint16 window counter).
    """

    detector_id = "ewma_errors"
    version = "1"

    def __init__(
        self,
        span: float = 60.0,
        threshold: float = 6.0,
        warmup_windows: int = 12,
        min_requests: float = 20.0,
        min_errors: float = 10.0,
        min_increase: float = 0.25,
        p_floor: float = 0.02,
    ) -> None:
        if span < 1:
            raise ValueError(f"span must be >= 1 window, got {span!r}")
        self.alpha = 2.0 / (span + 1.0)
        self.threshold = threshold
        self.warmup_windows = warmup_windows
        self.min_requests = min_requests
        self.min_errors = min_errors
        self.min_increase = min_increase
        self.p_floor = p_floor
        self.state = SlotArrays(
            {
                "mean": (np.float32, 0.0, (len(ERROR_FEATURES),)),
                "var": (np.float32, 0.0, (len(ERROR_FEATURES),)),
                "active": (np.uint16, 0, ()),
            }
        )

    def score_and_learn(
        self, slots: np.ndarray, ratios: np.ndarray, requests: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Score ``(n, 3)`` ratios against each slot's baseline, then learn them.

        Returns (z-scores, expected ratios, flag mask), each ``(n, 3)``.
        """
        z = np.zeros(ratios.shape)
        expected = np.zeros(ratios.shape)
        flags = np.zeros(ratios.shape, dtype=bool)
        for rows in _rounds(slots):
            z[rows], expected[rows], flags[rows] = self._score_round(slots[rows], ratios[rows], requests[rows])
        return z, expected, flags

    def _score_round(
        self, slots: np.ndarray, ratios: np.ndarray, requests: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        mean = self.state["mean"][slots].astype(np.float64)
        var = self.state["var"][slots].astype(np.float64)
        n = requests[:, None]
        spread = np.sqrt(np.maximum(mean, self.p_floor) * (1.0 - np.minimum(mean, 0.99)) / n + var)
        z = (ratios - mean) / spread
        active = self.state["active"][slots]
        warm = (active >= self.warmup_windows)[:, None]
        flags = (
            warm
            & (n >= self.min_requests)
            & (ratios * n >= self.min_errors)
            & (ratios - mean >= self.min_increase)
            & (z >= self.threshold)
        )
        learned = np.where(flags, np.minimum(mean + self.threshold * spread, 1.0), ratios)
        weight = n / (n + 10.0)
        alpha = weight * np.maximum(self.alpha, 1.0 / (active.astype(np.float64) + 1.0))[:, None]
        delta = learned - mean
        self.state["mean"][slots] = mean + alpha * delta
        self.state["var"][slots] = (1.0 - alpha) * (var + alpha * delta**2)
        self.state["active"][slots] = np.minimum(active.astype(np.int64) + 1, _ACTIVE_MAX)
        return np.where(warm, z, 0.0), mean, flags

    def detect(self, windows: WindowBatch, context: DetectionContext) -> list[Detection]:
        if windows.size == 0:
            return []
        ratios = np.stack([windows.feature(name) for name in ERROR_FEATURES], axis=1)
        requests = windows.feature("requests")
        z, expected, flags = self.score_and_learn(windows.slots, ratios, requests)
        detections = []
        for row in rows_where(flags.any(axis=1)):
            flagged = np.flatnonzero(flags[row])
            score = float(z[row, flagged].max())
            evidence = tuple(
                Evidence(
                    feature=ERROR_FEATURES[i],
                    observed=ratios[row, i],
                    expected=expected[row, i],
                    threshold=expected[row, i] + self.min_increase,
                )
                for i in flagged
            )
            summary = (
                f"{windows.keys['subject_id'][row]} error ratio jumped over {format_number(requests[row])} "
                f"requests, z = {score:.1f} against its own ratios (threshold {self.threshold:g})"
            )
            detections.append(
                build_detection(
                    self,
                    windows,
                    row,
                    score=score,
                    threshold=self.threshold,
                    severity=severity_from_score(score, self.threshold, 2 * self.threshold, 4 * self.threshold),
                    explanation=explain(summary, evidence),
                    evidence=evidence,
                    context=context,
                )
            )
        return detections


def _rounds(slots: np.ndarray) -> list[np.ndarray]:
    """Split row numbers into rounds in which every slot appears at most once, keeping order."""
    if len(slots) == 0:
        return []
    order = np.argsort(slots, kind="stable")
    sorted_slots = slots[order]
    starts = np.r_[True, sorted_slots[1:] != sorted_slots[:-1]]
    group_start = np.maximum.accumulate(np.where(starts, np.arange(len(slots)), 0))
    rank = np.empty(len(slots), dtype=np.int64)
    rank[order] = np.arange(len(slots)) - group_start
    if rank.max() == 0:
        return [np.arange(len(slots))]
    return [np.flatnonzero(rank == r) for r in range(int(rank.max()) + 1)]
