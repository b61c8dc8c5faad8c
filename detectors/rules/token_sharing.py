"""Token sharing or leak: a token used from far more places or clients than its own baseline.

For each token the detector keeps exponentially weighted means (over its
active windows) of distinct IPs, /24 or /48 networks, countries, user
agents and device fingerprints (``device_id``: a device header or TLS
fingerprint) per window. A feature fires when its count reaches
``max(min_count, factor * (mean + 1))``. Features form three groups:

* addresses: IPs or networks;
* geography: countries;
* client software: user agents or devices.

A window is flagged when two groups fire, or geography fires alone. A
mobile client hopping between carrier addresses within one country fires
only addresses, so it stays quiet. An office NAT with many users on one IP
fires only client software, and the baseline soon learns it. A leaked token
used from new networks by new clients, or from several countries at once,
is flagged.

Score: the largest count / firing level over fired features (>= 1).
Severity: MEDIUM, HIGH from 2, CRITICAL from 5. Warm-up:
``warmup_windows`` active windows. Fired features are learned clipped to
their firing level.

Memory: 22 bytes per token slot (five float32 means, a uint16 counter).
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
from pipeline.windows import WindowBatch
from schemas.detections import Evidence

SHARING_FEATURES: tuple[str, ...] = (
    "distinct_ips",
    "distinct_networks",
    "distinct_countries",
    "distinct_user_agents",
    "distinct_devices",
)
_GROUP_OF_FEATURE = np.array([0, 0, 1, 2, 2])
_ADDRESSES, _GEOGRAPHY, _SOFTWARE = 0, 1, 2
_ACTIVE_MAX = np.iinfo(np.uint16).max


class TokenSharing(SlotStateDetector):
    """Flags tokens suddenly used from many more IPs, networks, countries or clients than usual.

    Args:
        span: Memory of the baselines in active windows.
        factor: How many times ``mean + 1`` a count must reach, per feature
            in ``SHARING_FEATURES`` order.
        min_count: Smallest count that can fire, per feature.
        warmup_windows: Active windows a token needs before it can be flagged.
    """

    detector_id = "token_sharing"
    version = "1"
    score_range = (1.0, float("inf"))

    def __init__(
        self,
        span: float = 360.0,
        factor: tuple[float, ...] = (4.0, 4.0, 2.0, 4.0, 4.0),
        min_count: tuple[float, ...] = (20.0, 8.0, 3.0, 8.0, 5.0),
        warmup_windows: int = 12,
    ) -> None:
        if len(factor) != len(SHARING_FEATURES) or len(min_count) != len(SHARING_FEATURES):
            raise ValueError(f"factor and min_count need one value per feature: {', '.join(SHARING_FEATURES)}")
        self.alpha = 2.0 / (span + 1.0)
        self.factor = np.asarray(factor, dtype=np.float64)
        self.min_count = np.asarray(min_count, dtype=np.float64)
        self.warmup_windows = warmup_windows
        self.state = SlotArrays(
            {"mean": (np.float32, 0.0, (len(SHARING_FEATURES),)), "active": (np.uint16, 0, ())}
        )

    def detect(self, windows: WindowBatch, context: DetectionContext) -> list[Detection]:
        if windows.size == 0:
            return []
        counts = np.stack([windows.feature(name) for name in SHARING_FEATURES], axis=1)
        limits = np.zeros_like(counts)
        expected = np.zeros_like(counts)
        fired = np.zeros(counts.shape, dtype=bool)
        flagged = np.zeros(windows.size, dtype=bool)
        for rows in _rounds(windows.slots):
            slots = windows.slots[rows]
            mean = self.state["mean"][slots].astype(np.float64)
            active = self.state["active"][slots]
            limit = np.maximum(self.min_count, self.factor * (mean + 1.0))
            fire = (counts[rows] >= limit) & (active >= self.warmup_windows)[:, None]
            groups = np.zeros((len(rows), 3), dtype=bool)
            for group in (_ADDRESSES, _GEOGRAPHY, _SOFTWARE):
                groups[:, group] = fire[:, _GROUP_OF_FEATURE == group].any(axis=1)
            flag = (groups.sum(axis=1) >= 2) | groups[:, _GEOGRAPHY]
            learned = np.where(fire, limit, counts[rows])
            alpha = np.maximum(self.alpha, 1.0 / (active.astype(np.float64) + 1.0))[:, None]
            self.state["mean"][slots] = mean + alpha * (learned - mean)
            self.state["active"][slots] = np.minimum(active.astype(np.int64) + 1, _ACTIVE_MAX)
            limits[rows], expected[rows], fired[rows], flagged[rows] = limit, mean, fire, flag

        detections = []
        for row in np.flatnonzero(flagged).tolist():
            features = np.flatnonzero(fired[row])
            score = float((counts[row, features] / limits[row, features]).max())
            evidence = tuple(
                Evidence(
                    feature=SHARING_FEATURES[i],
                    observed=counts[row, i],
                    expected=expected[row, i],
                    threshold=limits[row, i],
                )
                for i in features
            )
            summary = f"{windows.keys['subject_id'][row]} was used from far more places or clients than usual"
            detections.append(
                build_detection(
                    self,
                    windows,
                    row,
                    score=score,
                    threshold=1.0,
                    severity=severity_from_score(score, 1.0, 2.0, 5.0),
                    explanation=explain(summary, evidence),
                    evidence=evidence,
                    context=context,
                )
            )
        return detections
