"""Enforcement actions: the commands gateways subscribe to on the action topic.

Also the receipt an enforcement agent sends back once it has applied an
action. Both travel as JSON; their JSON Schemas are published under
``schemas/jsonschema`` (``tokensentry schema export``).
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from schemas.detections import Evidence

ACTION_SCHEMA_VERSION = 1
RECEIPT_SCHEMA_VERSION = 1


class ActionKind(StrEnum):
    """The operation an enforcement point is asked to perform.

    ``alert`` only notifies people. ``revoke``, ``restore`` and ``rotate``
    target a token. ``block`` and ``unblock`` target a client IP or network
    in CIDR notation. ``throttle`` targets a token, or a client network when
    ``token_id`` is empty, and ``restore`` or ``unblock`` lifts it.
    """

    ALERT = "alert"
    THROTTLE = "throttle"
    REVOKE = "revoke"
    RESTORE = "restore"
    ROTATE = "rotate"
    BLOCK = "block"
    UNBLOCK = "unblock"


class Reason(BaseModel):
    """A detection that led to the action, copied so that the message is self-contained."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    detection_id: int
    detector: str
    severity: int
    score: float
    explanation: str
    window_start: float | None = Field(None, description="Start of the detection's event-time window.")
    window_end: float | None = Field(None, description="End of the detection's event-time window.")
    evidence: tuple[Evidence, ...] = Field((), description="The features that drove the detection.")


class Action(BaseModel):
    """One enforcement command.

    ``token_id`` is the subject for token actions and empty for client
    actions; ``subject`` always names the target (a token id or a CIDR).
    Times are seconds since the Unix epoch. ``issued_at`` is the event time
    of the window that triggered the action (wall-clock time for manual
    actions), so a replay yields the same action twice over. ``expires_at``
    is 0 for actions without expiry, and enforcement points compare it with
    their wall clock.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = ACTION_SCHEMA_VERSION
    action_id: str = Field(description="Deterministic id: the same decision on redelivery has the same id.")
    kind: ActionKind
    token_id: str = ""
    subject: str
    account: str = ""
    limit_rps: float | None = Field(None, description="Requests per second allowed by a throttle.")
    grace_period_s: float | None = Field(
        None,
        description="For rotate: seconds after issued_at during which the old key still works "
        "while the key-management system issues its replacement.",
    )
    issued_at: float
    expires_at: float = 0.0
    reason: str = Field(description="One-line summary of why, for people reading the topic.")
    reasons: tuple[Reason, ...] = ()
    policy_version: str = ""
    rule: str = Field("", description="Policy rule id that produced the action, or 'manual'.")
    dry_run: bool = Field(False, description="True when the action was only recorded, not published.")
    shadow_reason: str = Field(
        "", description="Why a recorded action was not published, e.g. 'dry-run: rule r1' or 'allowlisted: ...'."
    )
    origin: str = Field("pipeline", description="'pipeline' for automatic actions, 'manual' for analysts.")
    key_id: str = Field("", description="Id of the signing key; empty when unsigned.")
    signature: str = Field("", description="Signature over the canonical encoding, hex or base64url.")


class ActionReceipt(BaseModel):
    """An enforcement agent's confirmation that it applied an action.

    Sent on the receipt topic with the action id as key. ``applied_at`` is
    the agent's wall-clock time once the enforcement point served the new
    decision.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = RECEIPT_SCHEMA_VERSION
    agent_id: str = Field(min_length=1, description="Enforcement agent, e.g. one gateway instance.")
    action_id: str = Field(min_length=1)
    kind: ActionKind
    subject: str
    issued_at: float = Field(description="The action's issued_at, copied so latency needs no join.")
    applied_at: float = Field(description="When the agent applied the action, seconds since the Unix epoch.")
