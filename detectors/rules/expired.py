"""Expired tokens still in use: flags windows of tokens whose registry ``expires_at`` has passed.

A window is flagged when its end is more than ``grace_s`` after the token's
expiry. Use of an expired token means a client kept a credential it should
have dropped, or a gateway that does not enforce expiry. Severity is HIGH
when some of the window's requests were accepted (status other than 401
and 403: the gateway let the token through), MEDIUM when all were
rejected. Score: hours since expiry at the window's end. Stateless.

NOTE: every window of an expired token in use is a detection, so a client
that keeps the token produces one per window; the policy's cooldown limits
the actions, not the audit rows.
"""

from __future__ import annotations

import numpy as np

from detectors.base import Detection, DetectionContext, Detector, build_detection, explain, registry_rows
from pipeline.windows import WindowBatch
from schemas.detections import Evidence, Severity

_SECONDS_PER_HOUR = 3600.0


class ExpiredToken(Detector):
    """Flags windows of tokens used after their registry expiry.

    Args:
        grace_s: Seconds after expiry during which use is still tolerated
            (clock skew, requests in flight).
    """

    detector_id = "expired_token"
    version = "1"

    def __init__(self, grace_s: float = 60.0) -> None:
        self.grace_s = grace_s

    def detect(self, windows: WindowBatch, context: DetectionContext) -> list[Detection]:
        if windows.size == 0 or len(context.tokens) == 0:
            return []
        rows = registry_rows(windows, context)
        known = rows >= 0
        expires_at = np.full(windows.size, np.nan)
        expires_at[known] = context.tokens.expires_at[rows[known]]
        window_end = windows.keys["window_end"]
        with np.errstate(invalid="ignore"):
            expired = window_end - expires_at > self.grace_s
        requests = windows.feature("requests")
        accepted = requests * (1.0 - windows.feature("ratio_401_403"))
        detections = []
        for row in np.flatnonzero(expired).tolist():
            hours = (window_end[row] - expires_at[row]) / _SECONDS_PER_HOUR
            evidence = (
                Evidence(feature="hours_since_expiry", observed=hours, expected=0.0, threshold=self.grace_s / _SECONDS_PER_HOUR),
                Evidence(feature="accepted_requests", observed=accepted[row], expected=0.0),
            )
            summary = f"{windows.keys['subject_id'][row]} was used after its registry expiry"
            detections.append(
                build_detection(
                    self,
                    windows,
                    row,
                    score=hours,
                    threshold=self.grace_s / _SECONDS_PER_HOUR,
                    severity=Severity.HIGH if accepted[row] > 0 else Severity.MEDIUM,
                    explanation=explain(summary, evidence),
                    evidence=evidence,
                    context=context,
                )
            )
        return detections
