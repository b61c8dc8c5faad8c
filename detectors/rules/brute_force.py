"""Brute force: one client IP collecting many 401/403 responses in one window.

Runs on client windows (``windows.clients``), over every subject the
client used, including requests without a credential. A client window is
flagged when it has at least ``min_failures`` 401/403 responses and they
are at least ``min_failure_ratio`` of its requests, so a busy office NAT
with the odd expired token stays quiet. Credential stuffing (many tokens
failing) usually trips this rule too; the policy keeps the strongest action
per client.

Score: 401/403 responses in the window. Severity: HIGH, CRITICAL from four
times ``min_failures``. Detections carry ``client_ip``. Stateless.
"""

from __future__ import annotations

import numpy as np

from detectors.base import Detection, DetectionContext, Detector, build_detection, explain, severity_from_score
from pipeline.windows import WindowBatch
from schemas.detections import Evidence


class BruteForce(Detector):
    """Flags client IPs with many failed authentications in one window.

    Args:
        min_failures: 401/403 responses to the client in one window.
        min_failure_ratio: Share of the client's requests that failed.
    """

    detector_id = "brute_force"
    version = "1"
    scope = "client"

    def __init__(self, min_failures: float = 30.0, min_failure_ratio: float = 0.8) -> None:
        self.min_failures = min_failures
        self.min_failure_ratio = min_failure_ratio

    def detect(self, windows: WindowBatch, context: DetectionContext) -> list[Detection]:
        clients = windows.clients
        if clients is None or clients.size == 0:
            return []
        requests = clients.feature("requests")
        failures = clients.feature("failures_401_403")
        flagged = (failures >= self.min_failures) & (failures >= self.min_failure_ratio * requests)
        detections = []
        for row in np.flatnonzero(flagged).tolist():
            address = clients.keys["client_ip"][row]
            evidence = (
                Evidence(feature="failures_401_403", observed=failures[row], threshold=self.min_failures),
                Evidence(
                    feature="failure_ratio_401_403",
                    observed=failures[row] / requests[row],
                    threshold=self.min_failure_ratio,
                ),
                Evidence(feature="distinct_subjects", observed=clients.feature("distinct_subjects")[row]),
            )
            summary = f"client {address} collected many authentication failures in {context.window_s:g} s"
            detections.append(
                build_detection(
                    self,
                    clients,
                    row,
                    score=failures[row],
                    threshold=self.min_failures,
                    severity=severity_from_score(failures[row], 0.0, self.min_failures, 4 * self.min_failures),
                    explanation=explain(summary, evidence),
                    evidence=evidence,
                    context=context,
                    client_ip=address,
                )
            )
        return detections
