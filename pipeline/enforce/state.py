"""The decisions an enforcement agent holds: at most one per subject.

The latest action for a subject replaces the previous one, in the order the
agent reads them. That is the order Kafka keeps within a partition, so the
action topic must be keyed by subject (``pipeline.enforce.topics``). Expiry
is judged by the agent's wall clock.
"""

from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from schemas.actions import Action, ActionKind

TOKEN_KINDS = frozenset({ActionKind.REVOKE, ActionKind.RESTORE, ActionKind.ROTATE})
CLIENT_KINDS = frozenset({ActionKind.BLOCK, ActionKind.UNBLOCK})


class Effect(StrEnum):
    """The response a gateway gives to a request of a restricted subject."""

    DENY = "deny"
    THROTTLE = "throttle"


@dataclass(frozen=True, slots=True)
class Decision:
    """The restriction in force for one subject.

    ``not_before`` is when the decision takes effect (the end of a rotate's
    grace period, else 0) and ``expires_at`` when it lapses (0: never), both
    wall-clock seconds since the Unix epoch.
    """

    subject: str
    client: bool
    effect: Effect
    kind: ActionKind
    action_id: str
    issued_at: float
    limit_rps: float | None = None
    not_before: float = 0.0
    expires_at: float = 0.0

    def in_force(self, now: float) -> bool:
        return self.not_before <= now and (self.expires_at == 0 or now < self.expires_at)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["effect"] = self.effect.value
        data["kind"] = self.kind.value
        return data


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of ``DecisionTable.apply`` for one action.

    ``status`` is ``applied`` (the action is now reflected in the table,
    including restores of subjects the agent held nothing for), ``duplicate``
    (the same action is already held) or ``ignored`` with ``detail`` saying why.
    """

    status: str
    detail: str = ""
    changed: bool = False


class DecisionTable:
    """Current decision per subject, built from actions in topic order."""

    def __init__(self) -> None:
        self.decisions: dict[str, Decision] = {}

    def apply(self, action: Action, now: float) -> Outcome:
        """Apply one verified action at wall-clock time ``now``."""
        if action.dry_run:
            return Outcome("ignored", "dry-run actions are never enforced")
        if action.kind is ActionKind.ALERT:
            return Outcome("ignored", "alert: nothing to enforce")
        problem = _shape_problem(action)
        if problem:
            return Outcome("ignored", f"invalid: {problem}")
        if action.expires_at and action.expires_at <= now:
            return Outcome("ignored", f"expired {now - action.expires_at:.0f} s ago")
        current = self.decisions.get(action.subject)
        if action.kind in (ActionKind.RESTORE, ActionKind.UNBLOCK):
            removed = self.decisions.pop(action.subject, None)
            return Outcome("applied", "lifted" if removed else "nothing held", changed=removed is not None)
        if current is not None and current.action_id == action.action_id:
            return Outcome("duplicate", "already held")
        decision = _decision_for(action)
        self.decisions[action.subject] = decision
        return Outcome("applied", decision.effect.value, changed=True)

    def remove(self, subject: str) -> bool:
        """Drop the decision for ``subject`` (a tombstone on the topic); return True if one was held."""
        return self.decisions.pop(subject, None) is not None

    def expire(self, now: float) -> list[Decision]:
        """Drop and return decisions whose ``expires_at`` has passed."""
        expired = [d for d in self.decisions.values() if d.expires_at and d.expires_at <= now]
        for decision in expired:
            del self.decisions[decision.subject]
        return expired

    def in_force(self, now: float) -> list[Decision]:
        """Return the decisions in force at ``now``, sorted by subject."""
        return sorted((d for d in self.decisions.values() if d.in_force(now)), key=lambda d: d.subject)

    def next_change(self, now: float) -> float | None:
        """Return the earliest future time at which a decision starts or lapses."""
        times = [d.not_before for d in self.decisions.values() if d.not_before > now]
        times += [d.expires_at for d in self.decisions.values() if d.expires_at > now]
        return min(times) if times else None

    def summary(self, now: float) -> dict[str, int]:
        """Count held decisions by what they do now."""
        counts = {"revoked": 0, "rotated": 0, "rotation_pending": 0, "throttled_tokens": 0, "blocked": 0, "throttled_clients": 0}
        for decision in self.decisions.values():
            if not decision.in_force(now):
                counts["rotation_pending"] += 1
            elif decision.effect is Effect.THROTTLE:
                counts["throttled_clients" if decision.client else "throttled_tokens"] += 1
            elif decision.client:
                counts["blocked"] += 1
            elif decision.kind is ActionKind.ROTATE:
                counts["rotated"] += 1
            else:
                counts["revoked"] += 1
        return counts


def _decision_for(action: Action) -> Decision:
    client = not action.token_id
    if action.kind is ActionKind.THROTTLE:
        effect = Effect.THROTTLE
    else:
        effect = Effect.DENY
    not_before = 0.0
    if action.kind is ActionKind.ROTATE:
        not_before = action.issued_at + (action.grace_period_s or 0.0)
    return Decision(
        subject=action.subject,
        client=client,
        effect=effect,
        kind=action.kind,
        action_id=action.action_id,
        issued_at=action.issued_at,
        limit_rps=action.limit_rps if effect is Effect.THROTTLE else None,
        not_before=not_before,
        expires_at=action.expires_at,
    )


def _shape_problem(action: Action) -> str:
    """Return why an action cannot be enforced as addressed, or an empty string."""
    if action.kind in TOKEN_KINDS or (action.kind is ActionKind.THROTTLE and action.token_id):
        if not action.token_id or action.token_id != action.subject:
            return f"{action.kind.value} needs token_id equal to subject (token_id {action.token_id!r}, subject {action.subject!r})"
    elif action.kind in CLIENT_KINDS or action.kind is ActionKind.THROTTLE:
        if action.token_id:
            return f"{action.kind.value} of a client needs an empty token_id"
        try:
            ipaddress.ip_network(action.subject, strict=False)
        except ValueError:
            return f"subject {action.subject!r} is not an IP address or CIDR network"
    if action.kind is ActionKind.THROTTLE and not (action.limit_rps and action.limit_rps > 0):
        return "throttle without a positive limit_rps"
    return ""
