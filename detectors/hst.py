"""Multivariate anomaly score of token windows with river's Half-Space Trees.

One ``river.anomaly.HalfSpaceTrees`` model serves every token. Its input is
never a raw count: each window becomes a vector of deviations from the token's own
baseline, so a busy token and a quiet one look alike while they behave as
usual, and memory does not grow with the number of tokens (no per-token
trees). For each token the detector keeps exponentially weighted means of:

* ``log2(x + 1)`` of requests, distinct IPs, distinct routes, distinct user
  agents and bytes sent per request: the feature is ``log2(x + 1) - mean``,
  the log of observed over expected, clipped to ``[-clip, clip]``;
* the 4xx, 401/403 and 5xx ratios: the feature is ``ratio - mean``, in
  ``[-1, 1]``.

Both are scaled into ``[0, 1]``, the range Half-Space Trees assumes.

Score: river's HST score in ``[0, 1]``; higher means the window fell where
few recent windows did. HST is strongest on combinations: several features
off their baselines at once (errors with new routes, many IPs with many
user agents). A spike in one feature alone scores lower, because only the
tree nodes that split on that feature isolate it; ``ewma_rate`` and
``ewma_errors`` cover single-feature spikes. It is calibrated per model, not per token: a window
is flagged when its score is above the ``quantile`` of the last
``calibration_size`` scores AND above ``score_floor``.

Warm-up: a token is scored after ``warmup_windows`` active windows with at
least ``min_requests`` requests each; the model may flag after it learned
``model_warmup`` windows and collected ``min_calibration`` scores.

Cost: river's HST takes about 25 µs per ``score_one`` plus ``learn_one``
with the default 10 trees of height 8 (river 0.26.1). Only windows of warm
tokens with ``min_requests`` requests are scored, and only a
``learn_fraction`` sample of those is learned (chosen by a hash of the
window id, so replays learn the same windows). Flagged windows are never
learned.

>>> detector = HalfSpaceTreesDetector(seed=7)
>>> detector.detector_id, detector.score_range
('hst', (0.0, 1.0))
"""

from __future__ import annotations

import logging

import numpy as np
from river.anomaly import HalfSpaceTrees

from detectors.base import (
    Detection,
    DetectionContext,
    SlotArrays,
    SlotStateDetector,
    build_detection,
    explain,
    format_number,
    severity_from_score,
    stable_fraction,
)
from detectors.ewma import _rounds
from pipeline.windows import WindowBatch
from schemas.detections import Evidence

logger = logging.getLogger(__name__)

COUNT_FEATURES: tuple[str, ...] = (
    "requests",
    "distinct_ips",
    "distinct_routes",
    "distinct_user_agents",
    "bytes_per_request",
)
RATIO_FEATURES: tuple[str, ...] = ("ratio_4xx", "ratio_401_403", "ratio_5xx")
HST_FEATURES: tuple[str, ...] = COUNT_FEATURES + RATIO_FEATURES
_N_COUNT = len(COUNT_FEATURES)
_ACTIVE_MAX = np.iinfo(np.uint16).max


class HalfSpaceTreesDetector(SlotStateDetector):
    """One Half-Space Trees model over baseline-normalized token windows.

    Args:
        n_trees, height, window_size: passed to ``river.anomaly.HalfSpaceTrees``.
        seed: Seeds the trees and the learning sample; equal seeds give equal results.
        span: Memory of each token's baseline means, in active windows.
        clip: Largest log2 ratio kept (4 means 16 times the baseline).
        warmup_windows: Windows a token needs before it is scored.
        min_requests: Minimum requests of a window that is scored.
        model_warmup: Windows the model must learn before it may flag.
        learn_fraction: Share of scored windows the model learns.
        quantile: Calibration quantile of recent scores.
        score_floor: Smallest score ever flagged.
        calibration_size: Number of recent scores kept for the quantile.
        min_calibration: Scores needed before the quantile is trusted.

    Memory: 34 bytes per token slot (eight float32 means and a uint16
    counter), plus one model of ``n_trees * (2 ** (height + 1) - 1)`` nodes
    and ``calibration_size`` float32 scores, independent of the number of
    tokens.
    """

    detector_id = "hst"
    version = "1"
    score_range = (0.0, 1.0)

    def __init__(
        self,
        n_trees: int = 10,
        height: int = 8,
        window_size: int = 250,
        seed: int = 42,
        span: float = 60.0,
        clip: float = 4.0,
        warmup_windows: int = 12,
        min_requests: float = 20.0,
        model_warmup: int = 1000,
        learn_fraction: float = 0.25,
        quantile: float = 0.995,
        score_floor: float = 0.5,
        calibration_size: int = 4096,
        min_calibration: int = 500,
    ) -> None:
        if not 0 < learn_fraction <= 1:
            raise ValueError(f"learn_fraction must be in (0, 1], got {learn_fraction!r}")
        if not 0 < quantile < 1:
            raise ValueError(f"quantile must be in (0, 1), got {quantile!r}")
        self.seed = seed
        self.model = HalfSpaceTrees(n_trees=n_trees, height=height, window_size=window_size, seed=seed)
        self.alpha = 2.0 / (span + 1.0)
        self.clip = clip
        self.warmup_windows = warmup_windows
        self.min_requests = min_requests
        self.model_warmup = model_warmup
        self.learn_fraction = learn_fraction
        self.quantile = quantile
        self.score_floor = score_floor
        self.min_calibration = min(min_calibration, calibration_size)
        self.learned = 0
        self._scores = np.zeros(calibration_size, dtype=np.float32)
        self._scores_seen = 0
        self.state = SlotArrays(
            {
                "mean": (np.float32, 0.0, (len(HST_FEATURES),)),
                "active": (np.uint16, 0, ()),
            }
        )

    def state_nbytes(self) -> int:
        return self.state.nbytes + self._scores.nbytes

    @property
    def model_warm(self) -> bool:
        return self.learned >= self.model_warmup and self._scores_seen >= self.min_calibration

    def threshold(self) -> float:
        """Return the score a window must exceed now: the calibration quantile or the floor."""
        filled = min(self._scores_seen, len(self._scores))
        if filled == 0:
            return max(self.score_floor, 1.0)
        return max(float(np.quantile(self._scores[:filled], self.quantile)), self.score_floor)

    def detect(self, windows: WindowBatch, context: DetectionContext) -> list[Detection]:
        if windows.size == 0:
            return []
        raw = window_values(windows)
        threshold = self.threshold()
        may_flag = self.model_warm
        scores = np.full(windows.size, np.nan)
        baselines = np.zeros_like(raw)
        learn_draw = stable_fraction(windows.keys["window_id"], self.seed)
        for rows in _rounds(windows.slots):
            baselines[rows] = self._score_round(windows, rows, raw, scores, learn_draw, threshold, may_flag)
        scored = ~np.isnan(scores)
        self._remember_scores(scores[scored])
        if not may_flag:
            return []
        detections = []
        for row in np.flatnonzero(scored & (scores > threshold)).tolist():
            detections.append(self._detection(windows, row, raw[row], baselines[row], scores[row], threshold, context))
        return detections

    def _score_round(
        self,
        windows: WindowBatch,
        rows: np.ndarray,
        raw: np.ndarray,
        scores: np.ndarray,
        learn_draw: np.ndarray,
        threshold: float,
        may_flag: bool,
    ) -> np.ndarray:
        """Score and learn one round of windows (each slot at most once); return their baselines."""
        slots = windows.slots[rows]
        values = raw[rows]
        mean = self.state["mean"][slots].astype(np.float64)
        active = self.state["active"][slots]
        requests = windows.feature("requests")[rows]
        eligible = (active >= self.warmup_windows) & (requests >= self.min_requests)
        scaled = self.normalize(values, mean)
        model = self.model
        flagged = np.zeros(len(rows), dtype=bool)
        for i in np.flatnonzero(eligible).tolist():
            x = dict(enumerate(scaled[i].tolist()))
            score = model.score_one(x)
            scores[rows[i]] = score
            flagged[i] = may_flag and score > threshold
            if not flagged[i] and learn_draw[rows[i]] < self.learn_fraction:
                model.learn_one(x)
                self.learned += 1

        # Baselines learn every window except flagged ones; alpha = 1 / (n + 1) while young.
        alpha = np.maximum(self.alpha, 1.0 / (active.astype(np.float64) + 1.0))[:, None]
        update = ~flagged
        new_mean = mean + alpha * (values - mean)
        self.state["mean"][slots[update]] = new_mean[update]
        self.state["active"][slots] = np.minimum(active.astype(np.int64) + 1, _ACTIVE_MAX)
        return mean

    def normalize(self, values: np.ndarray, mean: np.ndarray) -> np.ndarray:
        """Scale deviations from the baseline into [0, 1]: 0.5 is "as usual"."""
        scaled = np.empty_like(values)
        counts = np.clip(values[:, :_N_COUNT] - mean[:, :_N_COUNT], -self.clip, self.clip)
        scaled[:, :_N_COUNT] = (counts + self.clip) / (2.0 * self.clip)
        ratios = np.clip(values[:, _N_COUNT:] - mean[:, _N_COUNT:], -1.0, 1.0)
        scaled[:, _N_COUNT:] = (ratios + 1.0) / 2.0
        return scaled

    def _remember_scores(self, scores: np.ndarray) -> None:
        """Append scores to the calibration ring buffer."""
        size = len(self._scores)
        if len(scores) >= size:
            self._scores[:] = scores[-size:]
            self._scores_seen += len(scores)
            return
        start = self._scores_seen % size
        end = start + len(scores)
        if end <= size:
            self._scores[start:end] = scores
        else:
            split = size - start
            self._scores[start:] = scores[:split]
            self._scores[: end - size] = scores[split:]
        self._scores_seen += len(scores)

    def _detection(
        self,
        windows: WindowBatch,
        row: int,
        values: np.ndarray,
        baseline: np.ndarray,
        score: float,
        threshold: float,
        context: DetectionContext,
    ) -> Detection:
        deviation = np.abs(self.normalize(values[None, :], baseline[None, :])[0] - 0.5) * 2.0
        order = np.argsort(-deviation, kind="stable")
        drivers = [i for i in order[:4].tolist() if deviation[i] >= 0.25] or order[:2].tolist()
        evidence = tuple(
            Evidence(feature=HST_FEATURES[i], observed=_to_raw(i, values[i]), expected=_to_raw(i, baseline[i]))
            for i in drivers
        )
        summary = (
            f"{windows.keys['subject_id'][row]} window is unusual for this token: half-space-trees score "
            f"{format_number(score)} above {format_number(threshold)} (the {self.quantile:g} quantile of recent "
            f"scores, floor {self.score_floor:g}); largest deviations from its baseline"
        )
        high = threshold + (1.0 - threshold) / 2.0
        return build_detection(
            self,
            windows,
            row,
            score=score,
            threshold=threshold,
            severity=severity_from_score(score, threshold, high, 2.0),
            explanation=explain(summary, evidence),
            evidence=evidence,
            context=context,
        )


def window_values(windows: WindowBatch) -> np.ndarray:
    """Return each window's features in ``HST_FEATURES`` order: log2(x + 1) for counts, ratios as they are."""
    requests = windows.feature("requests")
    values = np.empty((windows.size, len(HST_FEATURES)))
    values[:, 0] = requests
    values[:, 1] = windows.feature("distinct_ips")
    values[:, 2] = windows.feature("distinct_routes")
    values[:, 3] = windows.feature("distinct_user_agents")
    values[:, 4] = windows.feature("bytes_out") / np.maximum(requests, 1.0)
    values[:, :_N_COUNT] = np.log2(values[:, :_N_COUNT] + 1.0)
    for offset, name in enumerate(RATIO_FEATURES):
        values[:, _N_COUNT + offset] = windows.feature(name)
    return values


def _to_raw(feature: int, value: float) -> float:
    """Undo the log2(x + 1) of count features, for explanations."""
    return float(2.0**value - 1.0) if feature < _N_COUNT else float(value)
