"""Policy decisions: rule matching, strongest action, cooldown and file validation."""

import pytest

from pipeline.errors import ConfigError
from pipeline.policy import Policy, PolicyConfig, RuleConfig, default_policy, load_policy
from schemas.actions import ActionKind
from schemas.detections import Detection, Evidence, Severity

T0 = 1_767_225_600.0


def detection(detector="rate_limit", severity=Severity.MEDIUM, subject="key:a", window_end=T0 + 10, window_id=1):
    return Detection(
        detection_id=window_id,
        detector=detector,
        detector_version="1",
        subject_id=subject,
        subject_kind=0,
        window_id=window_id,
        window_start=window_end - 10,
        window_end=window_end,
        score=2.0,
        threshold=1.0,
        severity=severity,
        explanation=f"{subject} over its limit",
        evidence=(Evidence(feature="request_rate_rps", observed=40.0, expected=20.0),),
    )


def test_default_policy_throttles_at_static_limit():
    actions = Policy(default_policy()).decide([detection()])
    assert len(actions) == 1
    assert actions[0].kind is ActionKind.THROTTLE
    assert actions[0].limit_rps == 20.0
    assert actions[0].expires_at == T0 + 10 + 600
    assert actions[0].token_id == "key:a"
    assert "over its limit" in actions[0].reason


def test_default_policy_revokes_on_critical_rate():
    actions = Policy(default_policy()).decide([detection(severity=Severity.CRITICAL)])
    assert actions[0].kind is ActionKind.REVOKE


def test_strongest_action_wins_per_subject():
    actions = Policy(default_policy()).decide(
        [detection(detector="ewma_rate", severity=Severity.MEDIUM), detection(severity=Severity.CRITICAL, window_id=2)]
    )
    assert [a.kind for a in actions] == [ActionKind.REVOKE]


def test_cooldown_suppresses_repeat_then_expires():
    policy = Policy(default_policy())
    first = policy.decide([detection(window_end=T0 + 10, window_id=1)])
    repeat = policy.decide([detection(window_end=T0 + 20, window_id=2)])
    after = policy.decide([detection(window_end=T0 + 10 + 301, window_id=3)])
    assert len(first) == 1
    assert repeat == []
    assert len(after) == 1


def test_stronger_action_overrides_cooldown():
    policy = Policy(default_policy())
    policy.decide([detection(window_id=1)])
    stronger = policy.decide([detection(severity=Severity.CRITICAL, window_end=T0 + 20, window_id=2)])
    assert [a.kind for a in stronger] == [ActionKind.REVOKE]


def test_action_ids_deterministic():
    first = Policy(default_policy()).decide([detection()])
    second = Policy(default_policy()).decide([detection()])
    assert first[0].action_id == second[0].action_id


def test_dry_run_marks_actions():
    config = PolicyConfig(dry_run=True, rules=(RuleConfig(id="r", action=ActionKind.REVOKE),))
    actions = Policy(config).decide([detection()])
    assert actions[0].dry_run is True


def test_unmatched_detection_gives_no_action():
    config = PolicyConfig(rules=(RuleConfig(id="r", detectors=("ewma_rate",), action=ActionKind.REVOKE),))
    assert Policy(config).decide([detection(detector="rate_limit")]) == []


def test_policy_file_bad_severity_names_key(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text("rules:\n  - id: r\n    action: throttle\n    min_severity: extreme\n")
    with pytest.raises(ConfigError, match=r"rules\.0\.min_severity.*extreme"):
        load_policy(path)


def test_policy_file_unknown_key_rejected(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text("cooldwn: 5m\n")
    with pytest.raises(ConfigError, match="cooldwn"):
        load_policy(path)


def test_policy_file_durations_parsed(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text("cooldown: 2m\nrules:\n  - id: r\n    action: throttle\n    duration: 1h\n")
    config = load_policy(path)
    assert config.cooldown == 120.0
    assert config.rules[0].duration == 3600.0


def test_policy_file_unknown_detector_rejected(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text("rules:\n  - id: r\n    action: throttle\n    detectors: [no_such_detector]\n")
    with pytest.raises(ConfigError, match="unknown detector id 'no_such_detector'"):
        load_policy(path)
