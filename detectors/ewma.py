"""EWMA spike detection on each token's request count per window.

The baseline is an exponentially weighted mean and variance of the number
of requests in the windows where the token was active. Idle windows are not
averaged in as zeros, so a token that sleeps at night is not "spiking"
when it wakes up; a token is judged against its own rate while active.

A window is flagged when all of these hold:

* the token has been seen in at least ``warmup_windows`` active windows;
* it sent at least ``min_requests`` requests in the window, so low-volume
  tokens never trip on Poisson noise;
* its z-score ``(x - mean) / sqrt(max(var, mean) + 1)`` is at least
  ``threshold``; using ``max(var, mean)`` floors the variance at the Poisson
  variance of a count with that mean;
* ``x >= min_ratio * mean``.

A flagged window is learned clipped to ``mean + threshold * sd``, so an
attack does not become the baseline within a few windows.

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

from detectors.base import Detection, DetectionContext, Detector, build_detection, rows_where, severity_from_score
from pipeline.state import SubjectIndex, grow_array
from pipeline.windows import WindowBatch
from schemas.detections import Evidence

logger = logging.getLogger(__name__)


class EwmaRate(Detector):
    """Per-token EWMA of requests per active window, flagging spikes.

    Args:
        span: Effective memory in active windows; ``alpha = 2 / (span + 1)``.
        threshold: z-score at which a window is flagged.
        warmup_windows: Active windows a token needs before it can be flagged.
        min_requests: Fewest requests in a window that can be flagged.
        min_ratio: Fewest times the baseline mean a flagged window must reach.

    Memory: three float64 sums and one uint32 counter, 28 bytes per token slot.
    """

    detector_id = "ewma_rate"
    version = "1"

    def __init__(
        self,
        span: float = 60.0,
        threshold: float = 6.0,
        warmup_windows: int = 12,
        min_requests: float = 30.0,
        min_ratio: float = 3.0,
    ) -> None:
        if span < 1:
            raise ValueError(f"span must be >= 1 window, got {span!r}")
        self.alpha = 2.0 / (span + 1.0)
        self.threshold = threshold
        self.warmup_windows = warmup_windows
        self.min_requests = min_requests
        self.min_ratio = min_ratio
        self._sums = np.zeros((0, 3))
        self._active = np.zeros(0, dtype=np.uint32)

    def attach(self, index: SubjectIndex) -> None:
        index.attach(self)

    def grow(self, capacity: int) -> None:
        self._sums = grow_array(self._sums, capacity, 0.0)
        self._active = grow_array(self._active, capacity, 0)

    def reset(self, slots: np.ndarray) -> None:
        self._sums[slots] = 0.0
        self._active[slots] = 0

    def baseline(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return the current mean and variance of requests per active window."""
        weight = self._sums[slots, 0]
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(weight > 0, self._sums[slots, 1] / weight, 0.0)
            var = np.where(weight > 0, self._sums[slots, 2] / weight - mean**2, 0.0)
        return mean, np.maximum(var, 0.0)

    def score_and_learn(self, slots: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Score each count against its slot's baseline, then learn it.

        Windows of the same slot are processed in their given order, one
        round per repetition, so each is scored against the windows before it.
        Returns (z-scores, baseline means, flag mask).
        """
        z = np.zeros(len(slots))
        means = np.zeros(len(slots))
        flags = np.zeros(len(slots), dtype=bool)
        for rows in _rounds(slots):
            z[rows], means[rows], flags[rows] = self._score_round(slots[rows], counts[rows])
        return z, means, flags

    def _score_round(self, slots: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        mean, var = self.baseline(slots)
        spread = np.sqrt(np.maximum(var, mean) + 1.0)
        z = (counts - mean) / spread
        warm = self._active[slots] >= self.warmup_windows
        flags = warm & (counts >= self.min_requests) & (z >= self.threshold) & (counts >= self.min_ratio * mean)
        learned = np.where(flags, mean + self.threshold * spread, counts)
        decay = 1.0 - self.alpha
        sums = self._sums[slots] * decay
        sums[:, 0] += 1.0
        sums[:, 1] += learned
        sums[:, 2] += learned**2
        self._sums[slots] = sums
        self._active[slots] += 1
        return np.where(warm, z, 0.0), mean, flags

    def detect(self, windows: WindowBatch, context: DetectionContext) -> list[Detection]:
        if windows.size == 0:
            return []
        counts = windows.feature("requests")
        z, means, flags = self.score_and_learn(windows.slots, counts)
        detections = []
        for row in rows_where(flags):
            rate = counts[row] / context.window_s
            expected = means[row] / context.window_s
            detections.append(
                build_detection(
                    self,
                    windows,
                    row,
                    score=z[row],
                    threshold=self.threshold,
                    severity=severity_from_score(z[row], self.threshold, 2 * self.threshold, 4 * self.threshold),
                    explanation=(
                        f"{windows.keys['subject_id'][row]} sent {counts[row]:.0f} requests "
                        f"({rate:.1f}/s) against a baseline of {means[row]:.1f} per window "
                        f"({expected:.2f}/s): z = {z[row]:.1f}, threshold {self.threshold:g}"
                    ),
                    evidence=(
                        Evidence(
                            feature="requests", observed=counts[row], expected=means[row], threshold=self.threshold
                        ),
                    ),
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
