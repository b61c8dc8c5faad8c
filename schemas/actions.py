"""Enforcement actions: the commands gateways subscribe to on the action topic."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

ACTION_SCHEMA_VERSION = 1


class ActionKind(StrEnum):
    """What an enforcement point is asked to do.

    ``alert`` only notifies people; ``throttle``, ``revoke``, ``restore`` and
    ``rotate`` target a token; ``block`` and ``unblock`` target a client IP
    or network in CIDR notation.
    """

    ALERT = "alert"
    THROTTLE = "throttle"
    REVOKE = "revoke"
    RESTORE = "restore"
    ROTATE = "rotate"
    BLOCK = "block"
    UNBLOCK = "unblock"


class Reason(BaseModel):
    """A detection that led to the action, copied so the message stands alone."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    detection_id: int
    detector: str
    severity: int
    score: float
    explanation: str


class Action(BaseModel):
    """One enforcement command.

    ``token_id`` is the subject for token actions and empty for client
    actions; ``subject`` always names the target (a token id or a CIDR).
    Times are seconds since the Unix epoch: ``issued_at`` is the event time
    of the window that triggered the action, so a replay yields the same
    action twice over, and ``expires_at`` is 0 for actions without expiry.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = ACTION_SCHEMA_VERSION
    action_id: str = Field(description="Deterministic id: the same decision on redelivery has the same id.")
    kind: ActionKind
    token_id: str = ""
    subject: str
    account: str = ""
    limit_rps: float | None = Field(None, description="Requests per second allowed by a throttle.")
    issued_at: float
    expires_at: float = 0.0
    reason: str = Field(description="One-line summary of why, for people reading the topic.")
    reasons: tuple[Reason, ...] = ()
    policy_version: str = ""
    rule: str = Field("", description="Policy rule id that produced the action, or 'manual'.")
    dry_run: bool = Field(False, description="True when the action was only recorded, not published.")
    origin: str = Field("pipeline", description="'pipeline' for automatic actions, 'manual' for analysts.")
    key_id: str = Field("", description="Id of the signing key; empty when unsigned.")
    signature: str = Field("", description="Signature over the canonical encoding, hex or base64url.")
