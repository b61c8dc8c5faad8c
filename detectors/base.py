"""The interface every detector implements, and helpers to build detections.

A detector sees a batch of closed windows (``pipeline.windows.WindowBatch``)
whose ``slots`` rows point into its own per-subject arrays. It scores the
whole batch at once, returns detections for the windows that cross its
threshold, and then learns from the batch. Scoring before learning means a
window is always judged against a baseline that did not include it.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from pipeline.state import SubjectIndex
from pipeline.windows import WindowBatch
from schemas.detections import Detection, Evidence, Severity
from schemas.registry import TokenRecord


@dataclass(slots=True)
class DetectionContext:
    """What detectors may read besides the windows: limits and the token registry."""

    window_s: float
    default_limit_rps: float = 20.0
    """Static limit for tokens without a registry or plan limit, requests per second."""
    client_limit_rps: float = 20.0
    """Static limit for requests without a credential, per client IP, requests per second."""
    plan_limits_rps: dict[str, float] = field(default_factory=dict)
    registry: dict[str, TokenRecord] = field(default_factory=dict)
    registry_version: str = ""


class Detector(ABC):
    """A detector with a stable id used in logs, metrics and the audit trail."""

    detector_id: ClassVar[str]
    version: ClassVar[str]

    def attach(self, index: SubjectIndex) -> None:  # noqa: B027 - optional hook
        """Register per-subject arrays with the index; stateless detectors keep the default."""

    @abstractmethod
    def detect(self, windows: WindowBatch, context: DetectionContext) -> list[Detection]:
        """Score ``windows``, return detections, then learn from them."""


def detection_id(detector_id: str, window_id: int, salt: str = "") -> int:
    """Derive a deterministic 63-bit detection id, stable across redelivery."""
    digest = hashlib.blake2b(f"{detector_id}\x00{window_id}\x00{salt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def severity_from_score(score: float, medium: float, high: float, critical: float) -> Severity:
    """Map a score onto severities by three increasing cut points; below ``medium`` is LOW."""
    if score >= critical:
        return Severity.CRITICAL
    if score >= high:
        return Severity.HIGH
    if score >= medium:
        return Severity.MEDIUM
    return Severity.LOW


def build_detection(
    detector: Detector,
    windows: WindowBatch,
    row: int,
    *,
    score: float,
    threshold: float,
    severity: Severity,
    explanation: str,
    evidence: tuple[Evidence, ...],
    context: DetectionContext,
    client_ip: str = "",
) -> Detection:
    """Build the detection for window ``row`` of ``windows``."""
    keys = windows.keys
    window_id = int(keys["window_id"][row])
    return Detection(
        detection_id=detection_id(detector.detector_id, window_id, client_ip),
        detector=detector.detector_id,
        detector_version=detector.version,
        subject_id=str(keys["subject_id"][row]),
        subject_kind=int(keys["subject_kind"][row]),
        account=str(keys["account"][row]),
        client_ip=client_ip,
        window_id=window_id,
        window_start=float(keys["window_start"][row]),
        window_end=float(keys["window_end"][row]),
        score=float(score),
        threshold=float(threshold),
        severity=severity,
        explanation=explanation,
        evidence=evidence,
        registry_version=context.registry_version,
    )


def rows_where(mask: np.ndarray) -> list[int]:
    """Return the row numbers where ``mask`` is True, as Python ints."""
    return [int(row) for row in np.flatnonzero(mask)]
