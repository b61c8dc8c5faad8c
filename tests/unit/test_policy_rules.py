"""Policy rules beyond the basics: escalation, allowlists, restore, client blocks, dry run, reload."""

import os
import time

import pytest

from detectors.base import DetectionContext
from detectors.rate_limit import StaticRateLimit
from pipeline.errors import ConfigError
from pipeline.identity import TokenHasher
from pipeline.parsers import LineParser
from pipeline.policy import Policy, PolicyConfig, RuleConfig, load_policy
from pipeline.runner import Pipeline
from pipeline.signing import Keyring, Signer, generate_key, verify
from pipeline.sources.base import LineBatch
from pipeline.state import SubjectIndex
from pipeline.windows import TumblingWindows
from schemas.actions import ActionKind
from schemas.detections import Detection, Evidence, Severity
from schemas.registry import TokenRecord

T0 = 1_767_225_600.0

LADDER_POLICY = """
version: ladder-1
cooldown: 5m
escalations:
  repeat:
    period: 1d
    steps:
      - {action: throttle, duration: 10m}
      - {action: throttle, duration: 1h, limit_rps: 2}
      - {action: revoke, duration: 0}
rules:
  - id: rate
    detectors: [rate_limit]
    action: throttle
    escalation: repeat
"""


def detection(
    detector="rate_limit",
    severity=Severity.MEDIUM,
    subject="key:a",
    window_end=T0 + 10,
    window_id=1,
    client_ip="",
    account="",
    subject_kind=0,
):
    return Detection(
        detection_id=window_id,
        detector=detector,
        detector_version="1",
        subject_id=subject,
        subject_kind=subject_kind,
        account=account,
        client_ip=client_ip,
        window_id=window_id,
        window_start=window_end - 10,
        window_end=window_end,
        score=2.0,
        threshold=1.0,
        severity=severity,
        explanation=f"{subject} over its limit",
        evidence=(Evidence(feature="request_rate_rps", observed=40.0, expected=20.0),),
    )


def policy_from_text(tmp_path, text, **kwargs):
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return Policy.from_file(path, **kwargs)


# ---- escalation and cooldown -----------------------------------------------------


def test_escalation_ladder_scripted_sequence(tmp_path):
    policy = policy_from_text(tmp_path, LADDER_POLICY)
    script = [
        # (seconds after T0, expected kind or None when suppressed by the cooldown)
        (10, ActionKind.THROTTLE),  # 1st offence: throttle 10 min at the evidence limit
        (60, None),  # within the 5 min cooldown, same strength
        (400, ActionKind.THROTTLE),  # 2nd offence: throttle 1 h at 2 rps
        (500, None),
        (800, ActionKind.REVOKE),  # 3rd offence: revoke without expiry
    ]
    results = []
    for window_id, (offset, _) in enumerate(script, start=1):
        actions = policy.decide([detection(window_end=T0 + offset, window_id=window_id)], now=T0 + offset)
        token_actions = [a for a in actions if a.kind is not ActionKind.RESTORE]
        results.append(token_actions)
    kinds = [r[0].kind if r else None for r in results]
    assert kinds == [expected for _, expected in script]
    first, second, third = results[0][0], results[2][0], results[4][0]
    assert first.expires_at == T0 + 10 + 600
    assert first.limit_rps == 20.0
    assert second.expires_at == T0 + 400 + 3600
    assert second.limit_rps == 2.0
    assert third.expires_at == 0.0
    assert {a.policy_version for a in (first, second, third)} == {"ladder-1"}


def test_escalation_period_forgets_old_offences(tmp_path):
    policy = policy_from_text(tmp_path, LADDER_POLICY)
    policy.decide([detection(window_end=T0 + 10, window_id=1)], now=T0 + 10)
    day_later = T0 + 10 + 86400 + 1
    actions = policy.decide([detection(window_end=day_later, window_id=2)], now=day_later)
    throttles = [a for a in actions if a.kind is ActionKind.THROTTLE]
    assert len(throttles) == 1
    assert throttles[0].expires_at == day_later + 600


def test_stronger_rule_overrides_cooldown_not_ladder(tmp_path):
    text = LADDER_POLICY + "  - id: critical\n    detectors: [credential_stuffing]\n    min_severity: critical\n    action: revoke\n"
    policy = policy_from_text(tmp_path, text)
    policy.decide([detection(window_end=T0 + 10, window_id=1)], now=T0 + 10)
    actions = policy.decide(
        [detection(detector="credential_stuffing", severity=Severity.CRITICAL, window_end=T0 + 20, window_id=2)], now=T0 + 20
    )
    assert [a.kind for a in actions] == [ActionKind.REVOKE]


def test_rule_cooldown_overrides_policy_cooldown():
    rule = RuleConfig(id="r", action=ActionKind.THROTTLE, cooldown=30.0)
    policy = Policy(PolicyConfig(cooldown=3600.0, rules=(rule,)))
    assert len(policy.decide([detection(window_end=T0 + 10, window_id=1)])) == 1
    assert policy.decide([detection(window_end=T0 + 20, window_id=2)]) == []
    assert len(policy.decide([detection(window_end=T0 + 50, window_id=3)])) == 1


# ---- automatic restore ---------------------------------------------------------------


def test_throttle_restored_when_event_time_passes_expiry():
    rule = RuleConfig(id="r", action=ActionKind.THROTTLE, duration=600.0)
    policy = Policy(PolicyConfig(rules=(rule,)))
    throttle = policy.decide([detection(window_end=T0 + 10)])[0]
    assert policy.decide([], now=T0 + 600) == []
    restores = policy.decide([], now=T0 + 610)
    assert [a.kind for a in restores] == [ActionKind.RESTORE]
    assert restores[0].token_id == "key:a"
    assert restores[0].issued_at == throttle.expires_at
    assert throttle.action_id in restores[0].reason
    assert policy.decide([], now=T0 + 10_000) == []


def test_restore_ids_deterministic():
    def run():
        policy = Policy(PolicyConfig(rules=(RuleConfig(id="r", action=ActionKind.THROTTLE),)))
        policy.decide([detection()])
        return policy.decide([], now=T0 + 5000)[0].action_id

    assert run() == run()


def test_block_ends_with_unblock():
    rule = RuleConfig(id="stuffing", detectors=("credential_stuffing",), action=ActionKind.BLOCK, duration=60.0, block_prefix_v4=24)
    policy = Policy(PolicyConfig(rules=(rule,)))
    block = policy.decide([detection(detector="credential_stuffing", client_ip="203.0.113.77", subject="ip:203.0.113.77")])[0]
    assert block.kind is ActionKind.BLOCK
    assert block.subject == "203.0.113.0/24"
    assert block.token_id == ""
    unblock = policy.decide([], now=T0 + 100)
    assert [(a.kind, a.subject) for a in unblock] == [(ActionKind.UNBLOCK, "203.0.113.0/24")]


def test_permanent_revoke_is_never_restored():
    policy = Policy(PolicyConfig(rules=(RuleConfig(id="r", action=ActionKind.REVOKE, duration=0),)))
    policy.decide([detection()])
    assert policy.decide([], now=T0 + 10**7) == []


def test_restore_state_survives_checkpoint():
    config = PolicyConfig(rules=(RuleConfig(id="r", action=ActionKind.THROTTLE, duration=60.0),))
    first = Policy(config)
    first.decide([detection()])
    second = Policy(config)
    second.restore_state(first.state())
    assert [a.kind for a in second.decide([], now=T0 + 100)] == [ActionKind.RESTORE]


def test_restore_state_accepts_old_format():
    policy = Policy(PolicyConfig(rules=(RuleConfig(id="r", action=ActionKind.THROTTLE),)))
    policy.restore_state({"key:a": (T0, 2)})
    assert policy.decide([detection(window_end=T0 + 10)]) == []


# ---- client blocks and targets -------------------------------------------------------


def test_client_detection_revoke_becomes_block_of_ip():
    policy = Policy(PolicyConfig(rules=(RuleConfig(id="r", action=ActionKind.REVOKE),)))
    action = policy.decide([detection(client_ip="198.51.100.9", subject="key:a")])[0]
    assert action.kind is ActionKind.BLOCK
    assert action.subject == "198.51.100.9/32"


def test_client_detections_aggregate_per_network():
    rule = RuleConfig(id="r", action=ActionKind.BLOCK, block_prefix_v4=24)
    policy = Policy(PolicyConfig(rules=(rule,)))
    actions = policy.decide(
        [
            detection(client_ip="198.51.100.9", window_id=1),
            detection(client_ip="198.51.100.10", window_id=2),
            detection(client_ip="2001:db8::1", window_id=3),
        ]
    )
    assert sorted(a.subject for a in actions) == ["198.51.100.0/24", "2001:db8::1/128"]
    ipv4 = next(a for a in actions if a.subject == "198.51.100.0/24")
    assert len(ipv4.reasons) == 2


def test_block_rule_ignores_token_only_detection():
    policy = Policy(PolicyConfig(rules=(RuleConfig(id="r", action=ActionKind.BLOCK),)))
    assert policy.decide([detection(subject="tk_0123456789abcdef")]) == []
    assert policy.counters["no_target"] == 1


def test_rotate_carries_grace_period():
    rule = RuleConfig(id="r", action=ActionKind.ROTATE, grace_period=3600.0)
    action = Policy(PolicyConfig(rules=(rule,))).decide([detection()])[0]
    assert action.kind is ActionKind.ROTATE
    assert action.grace_period_s == 3600.0
    assert action.expires_at == 0.0


# ---- matching by plan, group, kind, scope ----------------------------------------------


def test_plan_rules_use_registry():
    text = """
rules:
  - {id: free, plans: [free], action: revoke}
  - {id: rest, action: throttle}
"""
    config = PolicyConfig.model_validate(__import__("yaml").safe_load(text))
    registry = {"key:free1": TokenRecord(subject_id="key:free1", plan="free")}
    policy = Policy(config, registry=registry)
    actions = policy.decide([detection(subject="key:free1", window_id=1), detection(subject="key:paid", window_id=2)])
    assert {a.subject: a.kind for a in actions} == {"key:free1": ActionKind.REVOKE, "key:paid": ActionKind.THROTTLE}


def test_plan_limit_used_for_throttle_without_evidence():
    config = PolicyConfig(plan_limits_rps={"free": 3.0}, rules=(RuleConfig(id="r", action=ActionKind.THROTTLE),))
    registry = {"key:f": TokenRecord(subject_id="key:f", plan="free")}
    plain = detection(subject="key:f").model_copy(update={"evidence": ()})
    assert Policy(config, registry=registry).decide([plain])[0].limit_rps == 3.0


def test_group_and_subject_kind_matching():
    text = """
groups:
  partners: {accounts: [acme]}
rules:
  - {id: partners, groups: [partners], action: alert}
  - {id: hashed, subject_kinds: [token_hash], action: revoke}
  - {id: client, scope: client, action: block}
"""
    config = PolicyConfig.model_validate(__import__("yaml").safe_load(text))
    policy = Policy(config)
    actions = policy.decide(
        [
            detection(subject="key:p", account="acme", window_id=1),
            detection(subject="tk_00000000000000aa", subject_kind=1, window_id=2),
            detection(subject="key:x", client_ip="192.0.2.1", window_id=3),
            detection(subject="key:other", window_id=4),
        ]
    )
    assert {a.subject: a.rule for a in actions} == {
        "key:p": "partners",
        "tk_00000000000000aa": "hashed",
        "192.0.2.1/32": "client",
    }


# ---- allowlists --------------------------------------------------------------------------


ALLOWLIST_POLICY = """
allowlist:
  tokens: [key:monitor]
  accounts: [internal]
  networks: [10.0.0.0/8]
  routes: ["/health*"]
rules:
  - {id: r, action: revoke}
"""


@pytest.mark.parametrize(
    ("kwargs", "why"),
    [
        ({"subject": "key:monitor"}, "allowlist.tokens contains key:monitor"),
        ({"account": "internal"}, "allowlist.accounts contains internal"),
        ({"client_ip": "10.1.2.3"}, "allowlist.networks entry 10.0.0.0/8 overlaps 10.1.2.3/32"),
    ],
)
def test_allowlisted_subject_gets_shadow_record(tmp_path, kwargs, why):
    policy = policy_from_text(tmp_path, ALLOWLIST_POLICY)
    actions = policy.decide([detection(**kwargs)])
    assert len(actions) == 1
    assert actions[0].dry_run is True
    assert actions[0].shadow_reason == f"allowlisted: {why}"


def test_allowlisted_record_repeats_only_after_cooldown(tmp_path):
    policy = policy_from_text(tmp_path, ALLOWLIST_POLICY)
    assert len(policy.decide([detection(subject="key:monitor", window_end=T0 + 10, window_id=1)])) == 1
    assert policy.decide([detection(subject="key:monitor", window_end=T0 + 20, window_id=2)]) == []
    assert len(policy.decide([detection(subject="key:monitor", window_end=T0 + 400, window_id=3)])) == 1


def test_allowlisted_route_gets_shadow_record(tmp_path):
    class RoutedDetection(Detection):
        route: str = ""

    policy = policy_from_text(tmp_path, ALLOWLIST_POLICY)
    routed = RoutedDetection(**detection().model_dump(), route="/healthz")
    actions = policy.decide([routed])
    assert actions[0].shadow_reason == "allowlisted: allowlist.routes entry '/health*' matches /healthz"


def test_block_overlapping_allowlisted_network_is_shadowed(tmp_path):
    text = "allowlist:\n  networks: [192.0.2.5]\nrules:\n  - {id: r, action: block, block_prefix_v4: 24}\n"
    policy = policy_from_text(tmp_path, text)
    action = policy.decide([detection(client_ip="192.0.2.77")])[0]
    assert action.dry_run is True
    assert action.subject == "192.0.2.0/24"


def test_allowlist_does_not_hide_other_subjects(tmp_path):
    policy = policy_from_text(tmp_path, ALLOWLIST_POLICY)
    actions = policy.decide([detection(subject="key:monitor", window_id=1), detection(subject="key:b", window_id=2)])
    live = [a for a in actions if not a.dry_run]
    assert [a.subject for a in live] == ["key:b"]


# ---- dry run ----------------------------------------------------------------------------


def test_rule_dry_run_only_shadows_that_rule():
    config = PolicyConfig(
        rules=(
            RuleConfig(id="shadow", detectors=("ewma_rate",), action=ActionKind.REVOKE, dry_run=True),
            RuleConfig(id="live", detectors=("rate_limit",), action=ActionKind.THROTTLE),
        )
    )
    actions = Policy(config).decide(
        [detection(detector="ewma_rate", subject="key:s", window_id=1), detection(subject="key:l", window_id=2)]
    )
    by_subject = {a.subject: a for a in actions}
    assert by_subject["key:s"].dry_run is True
    assert by_subject["key:s"].shadow_reason == "dry-run: rule shadow"
    assert by_subject["key:l"].dry_run is False


def test_dry_run_restore_is_shadowed_too():
    config = PolicyConfig(dry_run=True, rules=(RuleConfig(id="r", action=ActionKind.THROTTLE, duration=60.0),))
    policy = Policy(config)
    policy.decide([detection()])
    restore = policy.decide([], now=T0 + 100)[0]
    assert restore.kind is ActionKind.RESTORE
    assert restore.dry_run is True


class RecordingStore:
    """Stands in for AuditStore: keeps what the runner writes."""

    def __init__(self):
        self.actions: list[tuple[str, bool]] = []
        self.detections = 0

    def write_events(self, events):
        return len(events["ts"])

    def write_dead_letters(self, letters):
        return len(letters)

    def write_windows(self, columns):
        return 0

    def write_detections(self, detections):
        self.detections += len(detections)
        return len(detections)

    def write_actions(self, actions, published):
        self.actions.extend((action.kind.value, published) for action in actions)
        return len(actions)


class RecordingSink:
    sink_id = "recording"

    def __init__(self):
        self.published = []

    def publish(self, actions):
        self.published.extend(actions)

    def close(self):
        pass


def run_pipeline(policy: Policy):
    store, sink = RecordingStore(), RecordingSink()
    pipeline = Pipeline(
        parser=LineParser(format="nginx_combined"),
        hasher=TokenHasher(b"k" * 32),
        windows=TumblingWindows(10.0, 0.0),
        index=SubjectIndex(idle_ttl_s=86400.0),
        detectors=[StaticRateLimit()],
        context=DetectionContext(window_s=10.0, default_limit_rps=1.0),
        policy=policy,
        store=store,
        action_sinks=[sink],
    )
    for start in range(0, 120, 10):
        lines = [
            f'198.51.100.7 - - [01/Jan/2026:00:{second // 60:02d}:{second % 60:02d} +0000] '
            f'"GET /v1/items?api_key=abc HTTP/1.1" 200 10 "-" "curl"'.encode()
            for second in range(start, start + 10)
            for _ in range(5)
        ]
        positions = list(range(start * 5 + 1, start * 5 + len(lines) + 1))
        pipeline.process(LineBatch(source="test", partition=-1, lines=lines, positions=positions, size_bytes=0))
    pipeline.finish()
    return store, sink


def test_dry_run_publishes_nothing_records_everything():
    config = PolicyConfig(dry_run=True, rules=(RuleConfig(id="r", action=ActionKind.THROTTLE, duration=15.0),))
    store, sink = run_pipeline(Policy(config))
    assert sink.published == []
    assert store.detections >= 1
    assert ("throttle", False) in store.actions
    assert ("restore", False) in store.actions
    assert all(published is False for _, published in store.actions)


def test_live_policy_publishes_what_it_records():
    config = PolicyConfig(rules=(RuleConfig(id="r", action=ActionKind.THROTTLE, duration=15.0),))
    store, sink = run_pipeline(Policy(config))
    assert [a.kind for a in sink.published][:1] == [ActionKind.THROTTLE]
    assert all(published is True for _, published in store.actions)
    assert len(store.actions) == len(sink.published)


# ---- evidence and signing ----------------------------------------------------------------


def test_reasons_carry_evidence_and_window():
    action = Policy(PolicyConfig(rules=(RuleConfig(id="r", action=ActionKind.THROTTLE),))).decide([detection()])[0]
    reason = action.reasons[0]
    assert reason.evidence[0].feature == "request_rate_rps"
    assert reason.window_end == T0 + 10
    assert reason.window_start == T0


def test_policy_signs_actions_and_restores():
    keyring = Keyring()
    keyring.add(generate_key(), make_active=True)
    policy = Policy(PolicyConfig(rules=(RuleConfig(id="r", action=ActionKind.THROTTLE, duration=60.0),)), signer=Signer(keyring))
    throttle = policy.decide([detection()])[0]
    restore = policy.decide([], now=T0 + 100)[0]
    assert verify(throttle, keyring)
    assert verify(restore, keyring)


# ---- policy file validation and reload ---------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rules:\n  - {id: r, action: restore}\n", r"rules\.0\.action.*issued automatically"),
        ("rules:\n  - {id: r, action: banish}\n", r"rules\.0\.action.*banish"),
        ("rules:\n  - {id: r, action: throttle, limit_rps: -1}\n", r"rules\.0\.limit_rps.*-1"),
        ("rules:\n  - {id: r, action: block, block_prefix_v4: 40}\n", r"rules\.0\.block_prefix_v4.*40"),
        ("rules:\n  - {id: r, action: throttle, escalation: nope}\n", r"rules\.0\.escalation: unknown escalation 'nope'"),
        ("rules:\n  - {id: r, action: throttle, groups: [vip]}\n", r"rules\.0\.groups: unknown group 'vip'"),
        ("allowlist:\n  networks: [10.0.0.300/8]\n", r"allowlist\.networks.*10\.0\.0\.300/8"),
        ("rules:\n  - {id: r, action: throttle, subject_kinds: [robot]}\n", r"rules\.0\.subject_kinds.*robot"),
        ("escalations:\n  e: {steps: []}\n", r"escalations\.e\.steps"),
        ("rules:\n  - {id: r, action: throttle}\n  - {id: r, action: revoke}\n", r"rule id 'r' is used twice"),
        ("rules:\n  - {id: r, action: throttle, duration: soon}\n", r"rules\.0\.duration.*soon"),
        ("- just a list\n", r"must contain a mapping"),
    ],
)
def test_invalid_policy_file_names_key(tmp_path, text, message):
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_policy(path)


def test_numeric_policy_version_kept_as_text(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text("version: 7\n")
    assert load_policy(path).version == "7"


def test_policy_version_defaults_to_content_hash(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text("rules:\n  - {id: r, action: throttle}\n")
    first = load_policy(path).version
    path.write_text("rules:\n  - {id: r, action: revoke}\n")
    second = load_policy(path).version
    assert first.startswith("sha256:")
    assert first != second


def test_policy_reloads_changed_file(tmp_path):
    policy = policy_from_text(tmp_path, "version: v1\nrules:\n  - {id: r, action: throttle}\n")
    assert policy.decide([detection(subject="key:a", window_id=1)])[0].policy_version == "v1"
    path = tmp_path / "policy.yaml"
    path.write_text("version: v2\nrules:\n  - {id: r, action: revoke}\n")
    stamp = time.time() + 5
    os.utime(path, (stamp, stamp))
    policy._next_reload_check = 0.0
    action = policy.decide([detection(subject="key:b", window_id=2)])[0]
    assert action.policy_version == "v2"
    assert action.kind is ActionKind.REVOKE


def test_invalid_reload_keeps_current_policy(tmp_path, caplog):
    policy = policy_from_text(tmp_path, "version: v1\nrules:\n  - {id: r, action: throttle}\n")
    (tmp_path / "policy.yaml").write_text("version: v2\nrules:\n  - {id: r, action: obliterate}\n")
    assert policy.reload() is False
    assert policy.config.version == "v1"
    assert "obliterate" in caplog.text
