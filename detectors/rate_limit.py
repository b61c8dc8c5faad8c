"""Static per-token rate limit: the baseline most gateways already enforce.

A window's rate is ``requests / window_s`` in requests per second. The limit
comes from the token's registry entry, else the policy's limit for its plan,
else the registry's limit for its plan, else the policy's default. Requests
without a credential are limited per client IP. The score is rate / limit,
so 1.0 is exactly at the limit. Stateless; cost is one registry lookup per
batch (shared with the rules) and a few vectorized passes.
"""

from __future__ import annotations

import numpy as np

from detectors.base import (
    Detection,
    DetectionContext,
    Detector,
    build_detection,
    explain,
    registry_rows,
    rows_where,
    severity_from_score,
)
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
            evidence = (Evidence(feature="request_rate_rps", observed=rate[row], expected=limits[row], threshold=limits[row]),)
            summary = f"{subject} exceeded its static limit in a {context.window_s:g} s window"
            detections.append(
                build_detection(
                    self,
                    windows,
                    row,
                    score=score[row],
                    threshold=1.0,
                    severity=severity_from_score(score[row], 1.0, 2.0, 5.0),
                    explanation=explain(summary, evidence),
                    evidence=evidence,
                    context=context,
                )
            )
        return detections

    @staticmethod
    def limits(windows: WindowBatch, context: DetectionContext) -> np.ndarray:
        """Return each window's limit in requests per second."""
        kinds = windows.keys["subject_kind"]
        limits = np.where(kinds == SubjectKind.CLIENT_IP, context.client_limit_rps, context.default_limit_rps)
        limits = limits.astype(np.float64)
        tokens = context.tokens
        if len(tokens) == 0:
            return limits
        rows = registry_rows(windows, context)
        known = np.flatnonzero(rows >= 0)
        if len(known) == 0:
            return limits
        record_rows = rows[known]
        plan_limits = {plan: record.rate_limit_rps for plan, record in tokens.plans.items() if record.rate_limit_rps}
        plan_limits.update(context.plan_limits_rps)
        plans = tokens.plan[record_rows]
        from_plan = np.array([plan_limits.get(plan, np.nan) for plan in plans], dtype=np.float64)
        own = tokens.rate_limit_rps[record_rows]
        chosen = np.where(~np.isnan(own), own, from_plan)
        limits[known] = np.where(np.isnan(chosen), limits[known], chosen)
        return limits
