"""Policy: turn detections into enforcement actions.

A policy file (YAML) lists rules. Each rule matches detections by detector
id, minimum severity and, optionally, the subject's plan, kind, account,
token group and scope (token or client), and names the action to take:
``alert``, ``throttle``, ``revoke``, ``rotate`` or ``block``. The first
matching rule applies to a detection. For each subject and batch the
strongest action wins (revoke > rotate = block > throttle > alert).

Around the rules:

- cooldown: a subject that was acted on is left alone for ``cooldown``
  seconds of event time unless a stronger action is due;
- escalation: a rule may name a ladder whose n-th step applies to the n-th
  action against a subject within the ladder's period;
- automatic restore: when event time passes the ``expires_at`` of a
  throttle, revoke or block, the policy emits ``restore`` (token) or
  ``unblock`` (client network);
- allowlists: tokens, accounts, client networks and routes that never get
  an action. The action that would have been taken is recorded as a shadow
  action with the reason;
- dry run, for the whole policy or one rule: actions are recorded with
  ``dry_run=True`` and never published.

Action ids are derived from rule, subject and windows (restores from the
action they end), so reprocessing the same windows yields the same ids and
no duplicate actions downstream. A policy read from a file is reloaded when
the file changes, and its version (the ``version`` key, else a hash of the
file) is stored with each action.
"""

from __future__ import annotations

import fnmatch
import hashlib
import ipaddress
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.durations import parse_duration
from pipeline.errors import ConfigError
from schemas.actions import Action, ActionKind, Reason
from schemas.detections import ACCOUNT_SUBJECT_KIND, Detection, Severity
from schemas.events import SubjectKind
from schemas.registry import TokenRecord

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

# Kinds that restrict traffic; they count towards escalation.
ENFORCING_KINDS = frozenset({ActionKind.THROTTLE, ActionKind.REVOKE, ActionKind.ROTATE, ActionKind.BLOCK})
# Kinds a policy emits by itself when an action expires; rules cannot name them.
AUTOMATIC_KINDS = frozenset({ActionKind.RESTORE, ActionKind.UNBLOCK})

BUILTIN_VERSION = "builtin-1"
IP_SUBJECT_PREFIX = "ip:"
_RELOAD_CHECK_INTERVAL_S = 1.0


# ---- configuration -----------------------------------------------------------


def _severity(value: str | int | Severity) -> Severity:
    if isinstance(value, str):
        try:
            return Severity[value.upper()]
        except KeyError:
            raise ValueError(
                f"unknown severity {value!r}; use one of {', '.join(s.name.lower() for s in Severity)}"
            ) from None
    return Severity(value)


def _subject_kinds(values: Any) -> tuple[int, ...]:
    """Parse subject kind names: key_id, token_hash, client_ip (``SubjectKind``) or account."""
    if isinstance(values, str):
        values = [values]
    names = {kind.name.lower(): int(kind) for kind in SubjectKind} | {"account": ACCOUNT_SUBJECT_KIND}
    kinds = []
    for value in values:
        if isinstance(value, str):
            if value.lower() not in names:
                raise ValueError(f"unknown subject kind {value!r}; use one of {', '.join(names)}")
            kinds.append(names[value.lower()])
        else:
            kinds.append(int(value))
    return tuple(kinds)


def _networks(values: Any) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    if isinstance(values, str):
        values = [values]
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(str(value), strict=False))
        except ValueError:
            raise ValueError(f"invalid network {value!r}; use an IP address or CIDR such as 10.0.0.0/8") from None
    return tuple(networks)


def _rule_action(value: ActionKind) -> ActionKind:
    if value in AUTOMATIC_KINDS:
        raise ValueError(
            f"{value.value!r} is issued automatically when an action expires, or manually; "
            "use alert, throttle, revoke, rotate or block"
        )
    return value


class GroupConfig(BaseModel):
    """A named token group: a subject belongs to it by token id, account or plan."""

    model_config = ConfigDict(extra="forbid")

    tokens: tuple[str, ...] = ()
    accounts: tuple[str, ...] = ()
    plans: tuple[str, ...] = ()


class AllowlistConfig(BaseModel):
    """Subjects that never get an action; matching decisions are recorded as shadow actions."""

    model_config = ConfigDict(extra="forbid")

    tokens: tuple[str, ...] = Field((), description="Token ids (tk_..., key:..., ip:...).")
    accounts: tuple[str, ...] = ()
    networks: Annotated[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...], BeforeValidator(_networks)] = ()
    routes: tuple[str, ...] = Field((), description="Route names or glob patterns such as '/health*'.")


class EscalationStep(BaseModel):
    """One rung of a ladder; unset values fall back to the rule's."""

    model_config = ConfigDict(extra="forbid")

    action: Annotated[ActionKind, AfterValidator(_rule_action)]
    duration: Seconds | None = None
    limit_rps: float | None = Field(None, gt=0)


class EscalationConfig(BaseModel):
    """A ladder: the n-th action against a subject within ``period`` uses step n (the last step repeats)."""

    model_config = ConfigDict(extra="forbid")

    period: Seconds = 86400.0
    steps: tuple[EscalationStep, ...] = Field(min_length=1)


def _known_detectors(ids: tuple[str, ...]) -> tuple[str, ...]:
    from detectors.catalog import DETECTOR_CLASSES

    unknown = [detector for detector in ids if detector != "*" and detector not in DETECTOR_CLASSES]
    if unknown:
        raise ValueError(
            f"unknown detector id {', '.join(map(repr, unknown))}; use '*' or one of: {', '.join(sorted(DETECTOR_CLASSES))}"
        )
    return ids


class RuleConfig(BaseModel):
    """One policy rule: which detections lead to which action."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    detectors: Annotated[tuple[str, ...], AfterValidator(_known_detectors)] = Field(
        ("*",), description="Detector ids this rule matches; '*' matches all."
    )
    min_severity: Annotated[Severity, BeforeValidator(_severity)] = Severity.MEDIUM
    plans: tuple[str, ...] = Field((), description="Plans (from the token registry) this rule matches; empty: any.")
    subject_kinds: Annotated[tuple[int, ...], BeforeValidator(_subject_kinds)] = ()
    accounts: tuple[str, ...] = ()
    groups: tuple[str, ...] = Field((), description="Names of token groups under 'groups'; empty: any.")
    scope: Literal["any", "token", "client"] = Field(
        "any", description="'client' matches detections with client_ip set, 'token' the others."
    )
    action: Annotated[ActionKind, AfterValidator(_rule_action)]
    limit_rps: float | None = Field(None, gt=0, description="Throttle limit; default: evidence, plan, then policy default.")
    duration: Seconds = Field(600.0, description="How long the action lasts; 0 means until restored.")
    grace_period: Seconds | None = Field(None, description="Rotate only: how long the old key keeps working.")
    block_prefix_v4: int | None = Field(None, ge=0, le=32, description="Block the client's IPv4 network of this prefix.")
    block_prefix_v6: int | None = Field(None, ge=0, le=128)
    cooldown: Seconds | None = Field(None, description="Overrides the policy cooldown for this rule's actions.")
    escalation: str | None = Field(None, description="Name of a ladder under 'escalations'.")
    dry_run: bool = Field(False, description="Record this rule's actions without publishing them.")

    def matches(self, detection: Detection) -> bool:
        """Return True when detector, severity, subject kind, account and scope match."""
        if detection.severity < self.min_severity:
            return False
        if "*" not in self.detectors and detection.detector not in self.detectors:
            return False
        if self.subject_kinds and detection.subject_kind not in self.subject_kinds:
            return False
        if self.accounts and detection.account not in self.accounts:
            return False
        if self.scope == "client" and not detection.client_ip:
            return False
        return not (self.scope == "token" and detection.client_ip)


class PolicyConfig(BaseModel):
    """A whole policy file. Unknown keys are rejected so typos do not pass silently."""

    model_config = ConfigDict(extra="forbid")

    version: Annotated[str, BeforeValidator(lambda value: str(value) if isinstance(value, int | float) else value)] = Field(
        BUILTIN_VERSION, min_length=1, description="Stored with each action; default for files: a content hash."
    )
    dry_run: bool = False
    cooldown: Seconds = 300.0
    default_limit_rps: float = Field(20.0, gt=0)
    client_limit_rps: float = Field(20.0, gt=0)
    plan_limits_rps: dict[str, float] = Field(default_factory=dict)
    block_prefix_v4: int = Field(32, ge=0, le=32, description="Default IPv4 prefix of client blocks.")
    block_prefix_v6: int = Field(128, ge=0, le=128)
    rotate_grace_period: Seconds = Field(86400.0, description="Default grace period of rotate actions.")
    record_allowlisted: bool = Field(True, description="Record allowlisted decisions as shadow actions.")
    allowlist: AllowlistConfig = Field(default_factory=AllowlistConfig)
    groups: dict[str, GroupConfig] = Field(default_factory=dict)
    escalations: dict[str, EscalationConfig] = Field(default_factory=dict)
    rules: tuple[RuleConfig, ...] = ()

    @field_validator("rules")
    @classmethod
    def _unique_rule_ids(cls, rules: tuple[RuleConfig, ...]) -> tuple[RuleConfig, ...]:
        seen: set[str] = set()
        for rule in rules:
            if rule.id in seen:
                raise ValueError(f"rule id {rule.id!r} is used twice; action ids depend on it, so make it unique")
            seen.add(rule.id)
        return rules

    @model_validator(mode="after")
    def _check_references(self) -> PolicyConfig:
        for index, rule in enumerate(self.rules):
            if rule.escalation is not None and rule.escalation not in self.escalations:
                raise ValueError(
                    f"rules.{index}.escalation: unknown escalation {rule.escalation!r}; "
                    f"defined under 'escalations': {sorted(self.escalations) or 'none'}"
                )
            for group in rule.groups:
                if group not in self.groups:
                    raise ValueError(
                        f"rules.{index}.groups: unknown group {group!r}; defined under 'groups': {sorted(self.groups) or 'none'}"
                    )
        return self


DEFAULT_RULES: tuple[RuleConfig, ...] = (
    RuleConfig(id="rate-limit-revoke", detectors=("rate_limit",), min_severity=Severity.CRITICAL,
               action=ActionKind.REVOKE, duration=3600.0),
    RuleConfig(id="rate-limit-throttle", detectors=("rate_limit",), min_severity=Severity.MEDIUM,
               action=ActionKind.THROTTLE, duration=600.0),
    RuleConfig(id="spike-throttle", detectors=("ewma_rate",), min_severity=Severity.HIGH,
               action=ActionKind.THROTTLE, duration=600.0),
    RuleConfig(id="spike-alert", detectors=("ewma_rate",), min_severity=Severity.MEDIUM,
               action=ActionKind.ALERT, duration=0.0),
    RuleConfig(id="client-block", detectors=("ip_blocklist", "credential_stuffing", "brute_force"),
               min_severity=Severity.HIGH, action=ActionKind.BLOCK, duration=3600.0),
    RuleConfig(id="expired-revoke", detectors=("expired_token",), min_severity=Severity.HIGH,
               action=ActionKind.REVOKE, duration=0.0),
    RuleConfig(id="leak-rotate", detectors=("token_sharing",), min_severity=Severity.CRITICAL,
               action=ActionKind.ROTATE, duration=0.0),
    RuleConfig(id="detections-alert", detectors=("*",), min_severity=Severity.MEDIUM,
               action=ActionKind.ALERT, duration=0.0),
)


def default_policy() -> PolicyConfig:
    """Return the built-in policy used when no policy file is given."""
    return PolicyConfig(rules=DEFAULT_RULES)


def load_policy(path: Path) -> PolicyConfig:
    """Load and validate a policy file; errors name the key and the bad value.

    A file without a ``version`` key gets ``sha256:`` plus the first 12 hex
    digits of the SHA-256 of its bytes.
    """
    try:
        content = path.read_bytes()
        raw = yaml.safe_load(content)
    except FileNotFoundError:
        raise ConfigError(f"policy file {path} not found; pass an existing file to --policy") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"policy file {path} is not valid YAML: {exc}") from None
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"policy file {path} must contain a mapping of policy keys, got {type(raw).__name__}")
    try:
        config = PolicyConfig.model_validate(raw or {})
    except ValidationError as exc:
        raise ConfigError(f"policy file {path} is invalid: {format_validation_error(exc)}") from None
    if "version" not in config.model_fields_set:
        config = config.model_copy(update={"version": "sha256:" + hashlib.sha256(content).hexdigest()[:12]})
    return config


def format_validation_error(exc: ValidationError) -> str:
    """Render pydantic errors as 'key.path: message (got value)' joined by '; '."""
    parts = []
    for error in exc.errors():
        location = ".".join(str(part) for part in error["loc"]) or "(top level)"
        if error["type"] == "value_error" and error["loc"] == ():
            parts.append(error["msg"].removeprefix("Value error, "))
            continue
        parts.append(f"{location}: {error['msg']} (got {error.get('input')!r})")
    return "; ".join(parts)


# ---- decisions ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """Whom an action addresses: a token, or a client network in CIDR notation."""

    subject: str
    token_id: str

    @property
    def is_client(self) -> bool:
        return not self.token_id


@dataclass(slots=True)
class ActiveAction:
    """An expiring action the policy will end with ``restore`` or ``unblock``."""

    action_id: str
    kind: ActionKind
    token_id: str
    account: str
    rule: str
    expires_at: float
    dry_run: bool
    shadow_reason: str


@dataclass(slots=True)
class _Candidate:
    rule: RuleConfig
    target: Target
    detections: list[Detection]
    allowlisted_by: str


class Policy:
    """Decides actions for detections under a ``PolicyConfig`` and keeps per-subject state.

    The state (last action per subject, escalation history, expiring actions)
    is event-time based; ``state()`` and ``restore_state()`` carry it through
    pipeline checkpoints.
    """

    def __init__(
        self,
        config: PolicyConfig,
        *,
        path: Path | None = None,
        registry: Mapping[str, TokenRecord] | None = None,
        signer=None,
    ) -> None:
        self.config = config
        self.path = path
        self.registry: Mapping[str, TokenRecord] = registry or {}
        self.signer = signer
        self._file_stamp = _file_stamp(path) if path is not None else None
        self._next_reload_check = 0.0
        self._last_action: dict[str, tuple[float, int]] = {}
        self._history: dict[str, list[float]] = {}
        self._active: dict[str, ActiveAction] = {}
        self._suppressed_at: dict[str, float] = {}
        self.counters: dict[str, int] = {"actions": 0, "cooldown": 0, "allowlisted": 0, "restores": 0, "no_target": 0}

    @classmethod
    def from_file(cls, path: Path, **kwargs: Any) -> Policy:
        """Load ``path`` and return a policy that reloads it when the file changes."""
        return cls(load_policy(path), path=path, **kwargs)

    # ---- reload ---------------------------------------------------------------

    def reload(self) -> bool:
        """Re-read the policy file; on an invalid file keep the current policy and log why.

        Returns True when a new configuration is in force. State (cooldowns,
        escalation history, expiring actions) carries over.
        """
        if self.path is None:
            return False
        self._file_stamp = _file_stamp(self.path)
        try:
            config = load_policy(self.path)
        except ConfigError as exc:
            logger.error("policy reload failed, keeping version %s: %s", self.config.version, exc)
            return False
        if config == self.config:
            return False
        logger.info("policy %s reloaded: version %s -> %s", self.path, self.config.version, config.version)
        self.config = config
        return True

    def maybe_reload(self) -> bool:
        """Reload when the file's mtime or size changed; checks at most once per second."""
        if self.path is None:
            return False
        now = time.monotonic()
        if now < self._next_reload_check:
            return False
        self._next_reload_check = now + _RELOAD_CHECK_INTERVAL_S
        if _file_stamp(self.path) == self._file_stamp:
            return False
        return self.reload()

    # ---- checkpoint state -----------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Return the decision state for checkpoints (plain picklable values)."""
        return {
            "format": 2,
            "last_action": dict(self._last_action),
            "history": {subject: list(times) for subject, times in self._history.items()},
            "active": dict(self._active),
            "suppressed_at": dict(self._suppressed_at),
        }

    def restore_state(self, state: dict[str, Any]) -> None:
        """Replace the decision state; also accepts the older format (subject -> (time, strength))."""
        if state.get("format") != 2:
            self._last_action = dict(state)
            return
        self._last_action = dict(state["last_action"])
        self._history = {subject: list(times) for subject, times in state["history"].items()}
        self._active = dict(state["active"])
        self._suppressed_at = dict(state["suppressed_at"])

    # ---- decide ---------------------------------------------------------------

    def decide(self, detections: list[Detection], now: float | None = None) -> list[Action]:
        """Return the actions for a batch of detections, at most one per subject, plus due restores.

        ``now`` is the current event time (the pipeline passes the end of the
        newest closed window). Expiring actions whose ``expires_at`` is at or
        before ``now`` are ended with ``restore`` or ``unblock``. Without
        ``now`` the newest detection's ``window_end`` is used.
        """
        self.maybe_reload()
        if now is None and detections:
            now = max(d.window_end for d in detections)
        actions: list[Action] = []
        if now is not None:
            actions.extend(self._end_expired(now))
        live, allowlisted = self._candidates(detections)
        for subject, candidate in live.items():
            action = self._decide_subject(subject, candidate)
            if action is not None:
                actions.append(action)
        for subject, candidate in allowlisted.items():
            if subject in live:
                continue
            action = self._record_allowlisted(subject, candidate)
            if action is not None:
                actions.append(action)
        if now is not None:
            self._prune(now)
        if self.signer is not None:
            actions = [self.signer.sign(action) for action in actions]
        return actions

    def _candidates(self, detections: list[Detection]) -> tuple[dict[str, _Candidate], dict[str, _Candidate]]:
        """Group matched detections by target, keeping the strongest rule per target."""
        live: dict[str, _Candidate] = {}
        allowlisted: dict[str, _Candidate] = {}
        for detection in detections:
            rule = self._first_match(detection)
            if rule is None:
                continue
            target = self._target(detection, rule)
            if target is None:
                self.counters["no_target"] += 1
                logger.debug("rule %s: no %s target for detection %d", rule.id, rule.action, detection.detection_id)
                continue
            allowlisted_by = self._allowlisted_by(detection, target)
            pool = allowlisted if allowlisted_by else live
            current = pool.get(target.subject)
            if current is None or _strength(rule, target) > _strength(current.rule, target):
                pool[target.subject] = _Candidate(rule, target, [detection], allowlisted_by)
            elif rule is current.rule:
                current.detections.append(detection)
        return live, allowlisted

    def _decide_subject(self, subject: str, candidate: _Candidate) -> Action | None:
        rule, target, matched = candidate.rule, candidate.target, candidate.detections
        issued_at = max(d.window_end for d in matched)
        base_kind = _kind_for_target(rule.action, target)
        if self._in_cooldown(subject, base_kind, issued_at, rule):
            self.counters["cooldown"] += 1
            logger.debug("cooldown: no %s for %s at %.0f", base_kind, subject, issued_at)
            return None
        kind, duration, limit = self._escalate(rule, target, issued_at)
        action = self._build_action(rule, target, matched, issued_at, kind, duration, limit)
        self._remember(action)
        self.counters["actions"] += 1
        return action

    def _record_allowlisted(self, subject: str, candidate: _Candidate) -> Action | None:
        """Record the action an allowlist prevented, at most once per cooldown and subject."""
        if not self.config.record_allowlisted:
            return None
        issued_at = max(d.window_end for d in candidate.detections)
        last = self._suppressed_at.get(subject)
        if last is not None and issued_at - last < self.config.cooldown:
            return None
        self._suppressed_at[subject] = issued_at
        self.counters["allowlisted"] += 1
        rule = candidate.rule
        kind = _kind_for_target(rule.action, candidate.target)
        action = self._build_action(
            rule, candidate.target, candidate.detections, issued_at, kind, rule.duration, rule.limit_rps
        )
        logger.info("allowlisted: no %s for %s (%s)", kind.value, subject, candidate.allowlisted_by)
        return action.model_copy(update={"dry_run": True, "shadow_reason": f"allowlisted: {candidate.allowlisted_by}"})

    # ---- matching -------------------------------------------------------------

    def _first_match(self, detection: Detection) -> RuleConfig | None:
        for rule in self.config.rules:
            if rule.matches(detection) and self._matches_plan_and_groups(rule, detection):
                return rule
        return None

    def _matches_plan_and_groups(self, rule: RuleConfig, detection: Detection) -> bool:
        plan = self._plan(detection.subject_id)
        if rule.plans and plan not in rule.plans:
            return False
        if not rule.groups:
            return True
        for name in rule.groups:
            group = self.config.groups[name]
            if detection.subject_id in group.tokens or detection.account in group.accounts or plan in group.plans:
                return True
        return False

    def _plan(self, subject_id: str) -> str:
        record = self.registry.get(subject_id)
        return record.plan if record is not None else "default"

    def _target(self, detection: Detection, rule: RuleConfig) -> Target | None:
        """Return the token or client network an action for ``detection`` addresses.

        Client-scoped detections (``client_ip`` set) and ``ip:`` subjects
        target the client's network, widened to the rule's block prefix.
        A block needs a client address, so a block rule gives no target for
        a token-only detection.
        """
        address = detection.client_ip
        if not address and detection.subject_id.startswith(IP_SUBJECT_PREFIX):
            address = detection.subject_id[len(IP_SUBJECT_PREFIX) :]
        if not address:
            if rule.action is ActionKind.BLOCK:
                return None
            return Target(subject=detection.subject_id, token_id=detection.subject_id)
        try:
            network = ipaddress.ip_network(address, strict=False)
        except ValueError:
            logger.warning("detection %d has an invalid client address %r; no action", detection.detection_id, address)
            return None
        if network.version == 4:
            prefix = rule.block_prefix_v4 if rule.block_prefix_v4 is not None else self.config.block_prefix_v4
        else:
            prefix = rule.block_prefix_v6 if rule.block_prefix_v6 is not None else self.config.block_prefix_v6
        if network.prefixlen > prefix:
            network = network.supernet(new_prefix=prefix)
        return Target(subject=str(network), token_id="")

    def _allowlisted_by(self, detection: Detection, target: Target) -> str:
        """Return why ``detection`` is allowlisted, or an empty string."""
        allowlist = self.config.allowlist
        if detection.subject_id in allowlist.tokens:
            return f"allowlist.tokens contains {detection.subject_id}"
        if detection.account and detection.account in allowlist.accounts:
            return f"allowlist.accounts contains {detection.account}"
        if target.is_client:
            network = ipaddress.ip_network(target.subject)
            for allowed in allowlist.networks:
                if allowed.version == network.version and allowed.overlaps(network):
                    return f"allowlist.networks entry {allowed} overlaps {network}"
        # NOTE: detections carry no route yet; this applies once Detection has a
        # 'route' field for route-scoped findings.
        route = getattr(detection, "route", "")
        if route:
            for pattern in allowlist.routes:
                if fnmatch.fnmatchcase(route, pattern):
                    return f"allowlist.routes entry {pattern!r} matches {route}"
        return ""

    # ---- cooldown and escalation ----------------------------------------------

    def _in_cooldown(self, subject: str, kind: ActionKind, now: float, rule: RuleConfig) -> bool:
        last = self._last_action.get(subject)
        if last is None:
            return False
        last_time, last_strength = last
        cooldown = rule.cooldown if rule.cooldown is not None else self.config.cooldown
        return now - last_time < cooldown and ACTION_STRENGTH[kind] <= last_strength

    def _escalate(self, rule: RuleConfig, target: Target, now: float) -> tuple[ActionKind, float, float | None]:
        """Return kind, duration and limit after applying the rule's escalation ladder."""
        kind = _kind_for_target(rule.action, target)
        if rule.escalation is None:
            return kind, rule.duration, rule.limit_rps
        ladder = self.config.escalations[rule.escalation]
        prior = sum(1 for issued in self._history.get(target.subject, ()) if now - issued < ladder.period)
        step = ladder.steps[min(prior, len(ladder.steps) - 1)]
        step_kind = _kind_for_target(step.action, target)
        if ACTION_STRENGTH[step_kind] < ACTION_STRENGTH[kind]:
            return kind, rule.duration, rule.limit_rps
        duration = step.duration if step.duration is not None else rule.duration
        return step_kind, duration, step.limit_rps or rule.limit_rps

    def _remember(self, action: Action) -> None:
        subject = action.subject
        self._last_action[subject] = (action.issued_at, ACTION_STRENGTH[action.kind])
        if action.kind not in ENFORCING_KINDS:
            return
        self._history.setdefault(subject, []).append(action.issued_at)
        if action.kind is not ActionKind.ROTATE and action.expires_at > 0:
            self._active[subject] = ActiveAction(
                action_id=action.action_id,
                kind=action.kind,
                token_id=action.token_id,
                account=action.account,
                rule=action.rule,
                expires_at=action.expires_at,
                dry_run=action.dry_run,
                shadow_reason=action.shadow_reason,
            )
        else:
            self._active.pop(subject, None)

    # ---- automatic restore ----------------------------------------------------

    def _end_expired(self, now: float) -> list[Action]:
        due = sorted((active.expires_at, subject) for subject, active in self._active.items() if active.expires_at <= now)
        restores = []
        for _, subject in due:
            active = self._active.pop(subject)
            restores.append(self._build_restore(subject, active))
            self.counters["restores"] += 1
        return restores

    def _build_restore(self, subject: str, active: ActiveAction) -> Action:
        kind = ActionKind.UNBLOCK if not active.token_id else ActionKind.RESTORE
        action_id = hashlib.sha256(f"{kind.value}\x00{subject}\x00{active.action_id}".encode()).hexdigest()[:32]
        return Action(
            action_id=action_id,
            kind=kind,
            token_id=active.token_id,
            subject=subject,
            account=active.account,
            issued_at=active.expires_at,
            reason=f"{active.kind.value} {active.action_id} expired",
            policy_version=self.config.version,
            rule=active.rule,
            dry_run=active.dry_run,
            shadow_reason=active.shadow_reason,
        )

    def _prune(self, now: float) -> None:
        """Drop state that can no longer change a decision, so memory stays bounded."""
        horizon = max([self.config.cooldown] + [rule.cooldown or 0.0 for rule in self.config.rules])
        self._last_action = {s: v for s, v in self._last_action.items() if now - v[0] < horizon}
        self._suppressed_at = {s: t for s, t in self._suppressed_at.items() if now - t < self.config.cooldown}
        period = max([ladder.period for ladder in self.config.escalations.values()], default=0.0)
        history = {}
        for subject, times in self._history.items():
            recent = [t for t in times if now - t < period]
            if recent:
                history[subject] = recent
        self._history = history

    # ---- building -------------------------------------------------------------

    def _build_action(
        self,
        rule: RuleConfig,
        target: Target,
        matched: list[Detection],
        issued_at: float,
        kind: ActionKind,
        duration: float,
        limit: float | None,
    ) -> Action:
        first = matched[0]
        if kind is ActionKind.THROTTLE:
            limit = limit or _limit_from_evidence(matched) or self._default_limit(target)
        else:
            limit = None
        grace = None
        expires_at = issued_at + duration if duration else 0.0
        if kind is ActionKind.ROTATE:
            grace = rule.grace_period if rule.grace_period is not None else self.config.rotate_grace_period
            expires_at = 0.0
        window_ids = ",".join(str(d.window_id) for d in matched)
        action_id = hashlib.sha256(f"{rule.id}\x00{target.subject}\x00{window_ids}".encode()).hexdigest()[:32]
        shadow_reason = ""
        if self.config.dry_run:
            shadow_reason = f"dry-run: policy {self.config.version}"
        elif rule.dry_run:
            shadow_reason = f"dry-run: rule {rule.id}"
        return Action(
            action_id=action_id,
            kind=kind,
            token_id=target.token_id,
            subject=target.subject,
            account=first.account,
            limit_rps=limit,
            grace_period_s=grace,
            issued_at=issued_at,
            expires_at=expires_at,
            reason="; ".join(d.explanation for d in matched),
            reasons=tuple(_reason(d) for d in matched),
            policy_version=self.config.version,
            rule=rule.id,
            dry_run=bool(shadow_reason),
            shadow_reason=shadow_reason,
        )

    def _default_limit(self, target: Target) -> float:
        if target.is_client:
            return self.config.client_limit_rps
        plan = self._plan(target.subject)
        return self.config.plan_limits_rps.get(plan, self.config.default_limit_rps)


def _kind_for_target(kind: ActionKind, target: Target) -> ActionKind:
    """Map a rule's action onto what the target supports: a client network cannot be revoked or rotated."""
    if target.is_client and kind in (ActionKind.REVOKE, ActionKind.ROTATE):
        return ActionKind.BLOCK
    return kind


def _strength(rule: RuleConfig, target: Target) -> int:
    return ACTION_STRENGTH[_kind_for_target(rule.action, target)]


def _reason(detection: Detection) -> Reason:
    return Reason(
        detection_id=detection.detection_id,
        detector=detection.detector,
        severity=int(detection.severity),
        score=detection.score,
        explanation=detection.explanation,
        window_start=detection.window_start,
        window_end=detection.window_end,
        evidence=detection.evidence,
    )


def _limit_from_evidence(detections: list[Detection]) -> float | None:
    for detection in detections:
        for evidence in detection.evidence:
            if evidence.feature == "request_rate_rps" and evidence.expected:
                return evidence.expected
    return None


def _file_stamp(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size
