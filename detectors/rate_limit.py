"""Static per-token rate limit: the baseline most gateways already enforce.

A window's rate is ``requests / window_s`` in requests per second. The limit
comes from the token's registry entry, else its plan, else the policy's
default; requests without a credential are limited per client IP. The score
is rate / limit, so 1.0 is exactly at the limit.
"""

from __future__ import annotations

import numpy as np

from detectors.base import Detection, DetectionContext, Detector, build_detection, rows_where, severity_from_score
from pipeline.windows import WindowBatch
from schemas.detections import Evidence
from schemas.events import SubjectKind


class StaticRateLimit(Detector):
    """Flags windows whose request rate exceeds the subject's static limit.

    Severity: above the limit is MEDIUM, twice the limit HIGH, five times
    CRITICAL.
    """

    detector_id = "rate_limit"
    version = "1"

    def detect(self, windows: WindowBatch, context: DetectionContext) -> list[Detection]:
        if windows.size == 0:
            return []
        rate = windows.feature("requests") / context.window_s
        limits = self.limits(windows, context)
        score = rate / limits
        detections = []
        for row in rows_where(score > 1.0):
            subject = windows.keys["subject_id"][row]
            detections.append(
                build_detection(
                    self,
                    windows,
                    row,
                    score=score[row],
                    threshold=1.0,
                    severity=severity_from_score(score[row], 1.0, 2.0, 5.0),
                    explanation=(
                        f"{subject} sent {rate[row]:.1f} requests/s in a {context.window_s:g} s window, "
                        f"above its static limit of {limits[row]:g} requests/s"
                    ),
                    evidence=(Evidence(feature="request_rate_rps", observed=rate[row], expected=limits[row]),),
                    context=context,
                )
            )
        return detections

    @staticmethod
    def limits(windows: WindowBatch, context: DetectionContext) -> np.ndarray:
        """Return each window's limit in requests per second."""
        kinds = windows.keys["subject_kind"]
        limits = np.where(kinds == SubjectKind.CLIENT_IP, context.client_limit_rps, context.default_limit_rps)
        if context.registry or context.plan_limits_rps:
            for row, subject in enumerate(windows.keys["subject_id"]):
                record = context.registry.get(subject)
                if record is None:
                    continue
                if record.rate_limit_rps is not None:
                    limits[row] = record.rate_limit_rps
                elif record.plan in context.plan_limits_rps:
                    limits[row] = context.plan_limits_rps[record.plan]
        return limits.astype(np.float64)
