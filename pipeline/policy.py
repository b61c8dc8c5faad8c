"""Policy: turn detections into enforcement actions.

A policy file (YAML) lists rules; each matches detections by detector id and
minimum severity and names the action to take. For each subject and batch
the strongest matching action wins (revoke > throttle > alert), and a
subject that was acted on is left alone for ``cooldown`` seconds of event
time unless a stronger action is due.

Action ids are derived from rule, subject and window, so reprocessing the
same windows yields the same ids and no duplicate actions downstream.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from pipeline.durations import parse_duration
from pipeline.errors import ConfigError
from schemas.actions import Action, ActionKind, Reason
from schemas.detections import Detection, Severity

logger = logging.getLogger(__name__)

Seconds = Annotated[float, BeforeValidator(parse_duration)]

# Strength order used to pick one action per subject and to override a cooldown.
ACTION_STRENGTH: dict[ActionKind, int] = {
    ActionKind.ALERT: 1,
    ActionKind.THROTTLE: 2,
    ActionKind.ROTATE: 3,
    ActionKind.BLOCK: 3,
    ActionKind.REVOKE: 4,
}


def _severity(value: str | int | Severity) -> Severity:
    if isinstance(value, str):
        try:
            return Severity[value.upper()]
        except KeyError:
            raise ValueError(
                f"unknown severity {value!r}; use one of {', '.join(s.name.lower() for s in Severity)}"
            ) from None
    return Severity(value)


class RuleConfig(BaseModel):
    """One policy rule: which detections lead to which action."""

    model_config = ConfigDict(extra="forbid")

    id: str
    detectors: tuple[str, ...] = Field(("*",), description="Detector ids this rule matches; '*' matches all.")
    min_severity: Annotated[Severity, BeforeValidator(_severity)] = Severity.MEDIUM
    action: ActionKind
    limit_rps: float | None = Field(None, gt=0, description="Throttle limit; default: the token's static limit.")
    duration: Seconds = Field(600.0, description="How long the action lasts; 0 means until restored.")

    def matches(self, detection: Detection) -> bool:
        return detection.severity >= self.min_severity and (
            "*" in self.detectors or detection.detector in self.detectors
        )


class PolicyConfig(BaseModel):
    """A whole policy file. Unknown keys are rejected so typos do not pass silently."""

    model_config = ConfigDict(extra="forbid")

    version: str = "builtin-1"
    dry_run: bool = False
    cooldown: Seconds = 300.0
    default_limit_rps: float = Field(20.0, gt=0)
    client_limit_rps: float = Field(20.0, gt=0)
    plan_limits_rps: dict[str, float] = Field(default_factory=dict)
    rules: tuple[RuleConfig, ...] = ()


DEFAULT_RULES: tuple[RuleConfig, ...] = (
    RuleConfig(id="rate-limit-revoke", detectors=("rate_limit",), min_severity=Severity.CRITICAL,
               action=ActionKind.REVOKE, duration=3600.0),
    RuleConfig(id="rate-limit-throttle", detectors=("rate_limit",), min_severity=Severity.MEDIUM,
               action=ActionKind.THROTTLE, duration=600.0),
    RuleConfig(id="spike-throttle", detectors=("ewma_rate",), min_severity=Severity.HIGH,
               action=ActionKind.THROTTLE, duration=600.0),
    RuleConfig(id="spike-alert", detectors=("ewma_rate",), min_severity=Severity.MEDIUM,
               action=ActionKind.ALERT, duration=0.0),
)


def default_policy() -> PolicyConfig:
    """Return the built-in policy used when no policy file is given."""
    return PolicyConfig(rules=DEFAULT_RULES)


def load_policy(path: Path) -> PolicyConfig:
    """Load and validate a policy file; errors name the key and the bad value."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"policy file {path} not found; pass an existing file to --policy") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"policy file {path} is not valid YAML: {exc}") from None
    try:
        return PolicyConfig.model_validate(raw or {})
    except ValidationError as exc:
        raise ConfigError(f"policy file {path} is invalid: {format_validation_error(exc)}") from None


def format_validation_error(exc: ValidationError) -> str:
    """Render pydantic errors as 'key.path: message (got value)' joined by '; '."""
    parts = []
    for error in exc.errors():
        location = ".".join(str(part) for part in error["loc"]) or "(top level)"
        parts.append(f"{location}: {error['msg']} (got {error.get('input')!r})")
    return "; ".join(parts)


class Policy:
    """Decides actions for detections under a ``PolicyConfig``; keeps cooldown state."""

    def __init__(self, config: PolicyConfig) -> None:
        self.config = config
        self._last_action: dict[str, tuple[float, int]] = {}

    def state(self) -> dict[str, tuple[float, int]]:
        """Return the cooldown state (subject -> last action time and strength) for checkpoints."""
        return dict(self._last_action)

    def restore_state(self, state: dict[str, tuple[float, int]]) -> None:
        self._last_action = dict(state)

    def decide(self, detections: list[Detection]) -> list[Action]:
        """Return the actions for a batch of detections, at most one per subject."""
        best: dict[str, tuple[RuleConfig, list[Detection]]] = {}
        for detection in detections:
            rule = self._first_match(detection)
            if rule is None:
                continue
            subject = detection.client_ip or detection.subject_id
            current = best.get(subject)
            if current is None or ACTION_STRENGTH[rule.action] > ACTION_STRENGTH[current[0].action]:
                best[subject] = (rule, [detection])
            elif rule is current[0]:
                current[1].append(detection)
        actions = []
        for subject, (rule, matched) in best.items():
            issued_at = max(d.window_end for d in matched)
            if self._in_cooldown(subject, rule.action, issued_at):
                logger.debug("cooldown: no %s for %s at %.0f", rule.action, subject, issued_at)
                continue
            actions.append(self._build_action(rule, subject, matched, issued_at))
            self._last_action[subject] = (issued_at, ACTION_STRENGTH[rule.action])
        return actions

    def _first_match(self, detection: Detection) -> RuleConfig | None:
        for rule in self.config.rules:
            if rule.matches(detection):
                return rule
        return None

    def _in_cooldown(self, subject: str, kind: ActionKind, now: float) -> bool:
        last = self._last_action.get(subject)
        if last is None:
            return False
        last_time, last_strength = last
        return now - last_time < self.config.cooldown and ACTION_STRENGTH[kind] <= last_strength

    def _build_action(self, rule: RuleConfig, subject: str, matched: list[Detection], issued_at: float) -> Action:
        first = matched[0]
        is_client = bool(first.client_ip)
        limit = None
        if rule.action is ActionKind.THROTTLE:
            limit = rule.limit_rps or _limit_from_evidence(matched) or self.config.default_limit_rps
        window_ids = ",".join(str(d.window_id) for d in matched)
        action_id = hashlib.sha256(f"{rule.id}\x00{subject}\x00{window_ids}".encode()).hexdigest()[:32]
        return Action(
            action_id=action_id,
            kind=rule.action,
            token_id="" if is_client else subject,
            subject=subject,
            account=first.account,
            limit_rps=limit,
            issued_at=issued_at,
            expires_at=issued_at + rule.duration if rule.duration else 0.0,
            reason="; ".join(d.explanation for d in matched),
            reasons=tuple(
                Reason(
                    detection_id=d.detection_id,
                    detector=d.detector,
                    severity=int(d.severity),
                    score=d.score,
                    explanation=d.explanation,
                )
                for d in matched
            ),
            policy_version=self.config.version,
            rule=rule.id,
            dry_run=self.config.dry_run,
        )


def _limit_from_evidence(detections: list[Detection]) -> float | None:
    for detection in detections:
        for evidence in detection.evidence:
            if evidence.feature == "request_rate_rps" and evidence.expected:
                return evidence.expected
    return None
