"""Account profile: spikes in an account's requests, active tokens, client IPs or failures.

Each account has a baseline (exponentially weighted mean and variance over
its active windows) of the account aggregates of ``detectors.accounts``:
requests, tokens active in the window, distinct client IPs and 401/403
responses. A feature fires like ``ewma_rate`` does: z-score
``(x - mean) / sqrt(max(var, mean) + 1)`` at least ``threshold``, at least
``min_ratio`` times the mean and at least its ``min_count``. So abuse spread
thinly over many tokens of one account (each token under its own limits)
shows as one spike of the account.

Accounts get their own slot index inside the detector (keyed
``account:<name>``, expired after ``idle_ttl_s`` of event time), because
they are not token subjects. Score: the largest z of the fired features.
Severity: MEDIUM, HIGH from twice the threshold, CRITICAL from four times.
Memory: 34 bytes per account slot plus about 150 bytes per account name in
the index.
"""

from __future__ import annotations

import numpy as np

from detectors.accounts import ACCOUNT_FEATURE_INDEX, account_windows
from detectors.base import (
    Detection,
    DetectionContext,
    Detector,
    SlotArrays,
    build_detection,
    explain,
    severity_from_score,
)
from detectors.ewma import _rounds
from pipeline.state import SubjectIndex
from pipeline.windows import WindowBatch
from schemas.detections import Evidence

PROFILE_FEATURES: tuple[str, ...] = ("requests", "tokens", "distinct_ips", "failures_401_403")
_ACTIVE_MAX = np.iinfo(np.uint16).max


class AccountProfile(Detector):
    """Per-account EWMA baselines of requests, active tokens, IPs and failures, flagging spikes.

    Args:
        span: Memory of the baselines in active windows of the account.
        threshold: z-score at which a feature fires.
        min_ratio: Minimum multiple of the mean that a firing value must reach.
        min_count: Smallest firing value, per feature in ``PROFILE_FEATURES`` order.
        warmup_windows: Active windows an account needs before it can be flagged.
        idle_ttl_s: Event-time idleness after which an account's baseline is dropped.
    """

    detector_id = "account_spike"
    version = "1"
    scope = "account"

    def __init__(
        self,
        span: float = 60.0,
        threshold: float = 6.0,
        min_ratio: float = 3.0,
        min_count: tuple[float, ...] = (100.0, 10.0, 10.0, 30.0),
        warmup_windows: int = 12,
        idle_ttl_s: float = 7 * 86400.0,
    ) -> None:
        if len(min_count) != len(PROFILE_FEATURES):
            raise ValueError(f"min_count needs one value per feature: {', '.join(PROFILE_FEATURES)}")
        self.alpha = 2.0 / (span + 1.0)
        self.threshold = threshold
        self.min_ratio = min_ratio
        self.min_count = np.asarray(min_count, dtype=np.float64)
        self.warmup_windows = warmup_windows
        self.index = SubjectIndex(idle_ttl_s=idle_ttl_s)
        self.state = SlotArrays(
            {
                "mean": (np.float32, 0.0, (len(PROFILE_FEATURES),)),
                "var": (np.float32, 0.0, (len(PROFILE_FEATURES),)),
                "active": (np.uint16, 0, ()),
            }
        )
        self.index.attach(self)

    def grow(self, capacity: int) -> None:
        self.state.grow(capacity)

    def reset(self, slots: np.ndarray) -> None:
        self.state.reset(slots)

    def state_nbytes(self) -> int:
        return self.state.nbytes + self.index.nbytes

    def detect(self, windows: WindowBatch, context: DetectionContext) -> list[Detection]:
        accounts = account_windows(windows, context)
        if accounts is None:
            return []
        slots = self.index.assign(accounts.keys["subject_id"], accounts.keys["window_end"])
        columns = [ACCOUNT_FEATURE_INDEX[name] for name in PROFILE_FEATURES]
        values = accounts.features[:, columns]
        z = np.zeros(values.shape)
        expected = np.zeros(values.shape)
        fired = np.zeros(values.shape, dtype=bool)
        for rows in _rounds(slots):
            z[rows], expected[rows], fired[rows] = self._score_round(slots[rows], values[rows])
        self.index.expire(float(accounts.keys["window_end"].max()))

        detections = []
        for row in np.flatnonzero(fired.any(axis=1)).tolist():
            features = np.flatnonzero(fired[row])
            score = float(z[row, features].max())
            evidence = tuple(
                Evidence(feature=PROFILE_FEATURES[i], observed=values[row, i], expected=expected[row, i])
                for i in features
            )
            summary = (
                f"account {accounts.keys['account'][row]} spiked over all its tokens, z = {score:.1f} "
                f"against its own baseline (threshold {self.threshold:g})"
            )
            detections.append(
                build_detection(
                    self,
                    accounts,
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

    def _score_round(self, slots: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        mean = self.state["mean"][slots].astype(np.float64)
        var = self.state["var"][slots].astype(np.float64)
        active = self.state["active"][slots]
        spread = np.sqrt(np.maximum(var, mean) + 1.0)
        z = (values - mean) / spread
        warm = (active >= self.warmup_windows)[:, None]
        fire = warm & (z >= self.threshold) & (values >= self.min_ratio * mean) & (values >= self.min_count)
        learned = np.where(fire, mean + self.threshold * spread, values)
        alpha = np.maximum(self.alpha, 1.0 / (active.astype(np.float64) + 1.0))[:, None]
        delta = learned - mean
        self.state["mean"][slots] = mean + alpha * delta
        self.state["var"][slots] = (1.0 - alpha) * (var + alpha * delta**2)
        self.state["active"][slots] = np.minimum(active.astype(np.int64) + 1, _ACTIVE_MAX)
        return np.where(warm, z, 0.0), mean, fire
