"""Detections: a detector's verdict on one subject in one window, with its evidence."""

from __future__ import annotations

from enum import IntEnum

from pydantic import BaseModel, ConfigDict, Field

DETECTION_SCHEMA_VERSION = 1

ACCOUNT_SUBJECT_KIND = 3
"""``Detection.subject_kind`` of findings about all tokens of one account; ``subject_id`` is ``account:<name>``.

Values 0 to 2 are ``schemas.events.SubjectKind``.
NOTE: an action on such a detection names ``account:<name>`` as its subject;
enforcement points must map it to the account's tokens.
"""
ACCOUNT_PREFIX = "account:"


class Severity(IntEnum):
    """Ordered severities; policies compare them with ``>=``."""

    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4


class Evidence(BaseModel):
    """One feature that drove a detection: what was observed against what was expected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    feature: str
    observed: float
    expected: float | None = Field(None, description="Baseline or limit the observation is compared with.")
    threshold: float | None = None


class Detection(BaseModel):
    """A detector's finding for one subject and window.

    ``detection_id`` is derived from detector, subject and window, so a
    redelivered window yields the same id and the audit trail stays free of
    duplicates.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = DETECTION_SCHEMA_VERSION
    detection_id: int
    detector: str = Field(description="Stable detector id, e.g. 'ewma_rate'.")
    detector_version: str
    subject_id: str
    subject_kind: int
    account: str = ""
    client_ip: str = Field("", description="Client IP or CIDR for client-scoped findings, else empty.")
    window_id: int
    window_start: float
    window_end: float
    score: float
    threshold: float
    severity: Severity
    explanation: str = Field(description="One sentence an analyst can check against the evidence.")
    evidence: tuple[Evidence, ...] = ()
    registry_version: str = ""
