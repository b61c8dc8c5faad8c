"""Credential stuffing: one client IP failing authentication on many different tokens.

Runs on client windows (``windows.clients``). A client window is flagged
when, within one window, the client got 401/403 responses on at least
``min_failing_subjects`` distinct tokens, at least ``min_failure_ratio`` of
its requests failed, and at least ``min_failing_share`` of the tokens it
used failed. The shares keep an office NAT quiet: many people behind one
address use many tokens, and only a few of those fail.

Score: distinct failing tokens. Severity: HIGH, CRITICAL from four times
``min_failing_subjects``. Detections carry ``client_ip`` (the address), so
a policy can block it. Stateless.
"""

from __future__ import annotations

import numpy as np

from detectors.base import Detection, DetectionContext, Detector, build_detection, explain, severity_from_score
from pipeline.windows import WindowBatch
from schemas.detections import Evidence


class CredentialStuffing(Detector):
    """Flags client IPs that fail authentication on many distinct tokens in one window.

    Args:
        min_failing_subjects: Distinct tokens with a 401/403 from the client.
        min_failure_ratio: Share of the client's requests that failed.
        min_failing_share: Share of the client's tokens that failed.
    """

    detector_id = "credential_stuffing"
    version = "1"
    scope = "client"

    def __init__(
        self, min_failing_subjects: float = 5.0, min_failure_ratio: float = 0.5, min_failing_share: float = 0.5
    ) -> None:
        self.min_failing_subjects = min_failing_subjects
        self.min_failure_ratio = min_failure_ratio
        self.min_failing_share = min_failing_share

    def detect(self, windows: WindowBatch, context: DetectionContext) -> list[Detection]:
        clients = windows.clients
        if clients is None or clients.size == 0:
            return []
        requests = clients.feature("requests")
        failures = clients.feature("failures_401_403")
        subjects = clients.feature("distinct_subjects")
        failing = clients.feature("distinct_failing_subjects")
        flagged = (
            (failing >= self.min_failing_subjects)
            & (failures >= self.min_failure_ratio * requests)
            & (failing >= self.min_failing_share * subjects)
        )
        detections = []
        for row in np.flatnonzero(flagged).tolist():
            address = clients.keys["client_ip"][row]
            evidence = (
                Evidence(feature="distinct_failing_subjects", observed=failing[row], threshold=self.min_failing_subjects),
                Evidence(feature="distinct_subjects", observed=subjects[row]),
                Evidence(
                    feature="failure_ratio_401_403",
                    observed=failures[row] / requests[row],
                    threshold=self.min_failure_ratio,
                ),
            )
            summary = f"client {address} failed authentication on many tokens in {context.window_s:g} s"
            detections.append(
                build_detection(
                    self,
                    clients,
                    row,
                    score=failing[row],
                    threshold=self.min_failing_subjects,
                    severity=severity_from_score(
                        failing[row], 0.0, self.min_failing_subjects, 4 * self.min_failing_subjects
                    ),
                    explanation=explain(summary, evidence),
                    evidence=evidence,
                    context=context,
                    client_ip=address,
                )
            )
        return detections
