"""The decision table and the NGINX renderer, checked with ``nginx -t`` but without Kafka."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from pipeline.enforce.renderers import RenderError
from pipeline.enforce.renderers.nginx import (
    HTTP_FILE,
    SECRET_FILE,
    SERVER_FILE,
    NginxController,
    NginxOptions,
    NginxRenderer,
    rate_classes,
    render,
)
from pipeline.enforce.state import DecisionTable, Effect
from schemas.actions import Action, ActionKind

NJS_MODULE = Path("/usr/lib/nginx/modules/ngx_http_js_module.so")
SECRET = b"s" * 32
NOW = 1_800_000_000.0


def action(kind: ActionKind, subject: str, **fields) -> Action:
    client = "/" in subject
    values = {
        "action_id": f"{kind.value}-{subject}",
        "kind": kind,
        "token_id": "" if client else subject,
        "subject": subject,
        "issued_at": NOW,
        "reason": "test",
    } | fields
    return Action(**values)


# ---- decision table ----------------------------------------------------------------


def test_latest_action_per_subject_wins():
    table = DecisionTable()
    table.apply(action(ActionKind.THROTTLE, "key:a", limit_rps=5.0), NOW)
    table.apply(action(ActionKind.REVOKE, "key:a"), NOW)
    assert [(d.subject, d.effect) for d in table.in_force(NOW)] == [("key:a", Effect.DENY)]
    outcome = table.apply(action(ActionKind.RESTORE, "key:a"), NOW)
    assert outcome.status == "applied"
    assert outcome.changed is True
    assert table.in_force(NOW) == []


def test_restore_of_unknown_subject_is_applied_without_change():
    outcome = DecisionTable().apply(action(ActionKind.RESTORE, "key:z"), NOW)
    assert (outcome.status, outcome.detail, outcome.changed) == ("applied", "nothing held", False)


def test_expired_action_ignored_and_held_one_expires():
    table = DecisionTable()
    assert table.apply(action(ActionKind.REVOKE, "key:a", expires_at=NOW - 1), NOW).detail.startswith("expired")
    table.apply(action(ActionKind.BLOCK, "192.0.2.0/24", expires_at=NOW + 60), NOW)
    assert table.next_change(NOW) == NOW + 60
    assert [d.subject for d in table.expire(NOW + 60)] == ["192.0.2.0/24"]
    assert table.decisions == {}


def test_rotate_takes_effect_after_grace_period():
    table = DecisionTable()
    table.apply(action(ActionKind.ROTATE, "key:r", grace_period_s=30.0), NOW)
    assert table.in_force(NOW) == []
    assert table.summary(NOW)["rotation_pending"] == 1
    assert table.next_change(NOW) == NOW + 30
    assert [d.kind for d in table.in_force(NOW + 30)] == [ActionKind.ROTATE]


@pytest.mark.parametrize(
    ("bad", "detail"),
    [
        (action(ActionKind.REVOKE, "key:a", token_id="key:b"), "token_id equal to subject"),
        (action(ActionKind.BLOCK, "not-an-ip", token_id=""), "not an IP address"),
        (action(ActionKind.BLOCK, "10.0.0.0/8", token_id="key:a"), "empty token_id"),
        (action(ActionKind.THROTTLE, "key:a"), "without a positive limit_rps"),
    ],
)
def test_inconsistent_actions_ignored(bad, detail):
    outcome = DecisionTable().apply(bad, NOW)
    assert outcome.status == "ignored"
    assert detail in outcome.detail


def test_alerts_and_dry_runs_never_enforced():
    table = DecisionTable()
    assert table.apply(action(ActionKind.ALERT, "key:a"), NOW).status == "ignored"
    assert table.apply(action(ActionKind.REVOKE, "key:a", dry_run=True), NOW).status == "ignored"
    assert table.decisions == {}


def test_duplicate_action_detected():
    table = DecisionTable()
    revoke = action(ActionKind.REVOKE, "key:a")
    table.apply(revoke, NOW)
    assert table.apply(revoke, NOW).status == "duplicate"


# ---- rate classes ------------------------------------------------------------------------


def test_rate_classes_round_down_to_nginx_units():
    classes = rate_classes([5.0, 2.5, 0.01], 16)
    assert classes[5.0].rate == "5r/s"
    assert classes[2.5].rate == "150r/m"
    assert classes[0.01].rate == "1r/m"


def test_rate_classes_bounded_and_never_above_limit():
    limits = [float(value) for value in range(1, 200)]
    classes = rate_classes(limits, 8)
    assert len({c.per_minute for c in classes.values()}) <= 8
    for limit, rate_class in classes.items():
        assert rate_class.per_minute <= limit * 60


# ---- rendered configuration ------------------------------------------------------------------


def decisions_for(actions: list[Action]):
    table = DecisionTable()
    for item in actions:
        table.apply(item, NOW)
    return table.in_force(NOW)


def test_render_is_deterministic_and_complete(tmp_path):
    decisions = decisions_for(
        [
            action(ActionKind.REVOKE, "tk_00000000000000aa"),
            action(ActionKind.ROTATE, "key:old", grace_period_s=0.0),
            action(ActionKind.THROTTLE, "key:busy", limit_rps=5.0),
            action(ActionKind.THROTTLE, "198.51.100.0/24", limit_rps=2.5),
            action(ActionKind.BLOCK, "203.0.113.0/24"),
        ]
    )
    options = NginxOptions(output_dir=tmp_path, hash_secret=SECRET)
    files = render(decisions, options, "g1")
    assert files == render(list(reversed(decisions)), options, "g1")
    http = files[HTTP_FILE]
    assert '"tk_00000000000000aa" revoked;' in http
    assert '"key:old" rotated;' in http
    assert '"key:busy" 5rs;' in http
    assert "203.0.113.0/24 blocked;" in http
    assert "198.51.100.0/24 150rm;" in http
    assert "zone=tokensentry_token_5rs:1m rate=5r/s;" in http
    assert "zone=tokensentry_client_150rm:1m rate=150r/m;" in http
    assert "limit_req zone=tokensentry_token_5rs burst=5 nodelay;" in files[SERVER_FILE]
    assert SECRET.hex() in files[SECRET_FILE]
    assert SECRET.hex() not in http


def test_unsafe_subject_not_rendered(tmp_path, caplog):
    decisions = decisions_for([action(ActionKind.REVOKE, 'key:x"; return 200; #')])
    files = render(decisions, NginxOptions(output_dir=tmp_path, hash_secret=SECRET), "g")
    assert "return 200" not in files[HTTP_FILE]
    assert "characters NGINX maps cannot hold" in caplog.text


def test_without_njs_no_secret_written(tmp_path):
    files = render([], NginxOptions(output_dir=tmp_path, njs=False), "g")
    assert SECRET_FILE not in files
    assert "js_set" not in files[HTTP_FILE]


def require_nginx() -> str:
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).exists() or not NJS_MODULE.exists():
        pytest.fail("nginx with njs is not installed; run `sudo bash deploy/nginx/install.sh`", pytrace=False)
    return binary


def write_main_conf(prefix: Path, conf_dir: Path) -> Path:
    (prefix / "logs").mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(
        f"load_module {NJS_MODULE};\npid {prefix / 'nginx.pid'};\nerror_log {prefix / 'logs' / 'error.log'};\n"
        f"events {{}}\nhttp {{\n  include {conf_dir / HTTP_FILE};\n"
        f"  server {{ listen 127.0.0.1:1; include {conf_dir / SERVER_FILE}; location / {{ return 200; }} }}\n}}\n"
    )
    return conf


def test_nginx_accepts_many_decisions(tmp_path):
    binary = require_nginx()
    actions = [action(ActionKind.REVOKE, f"tk_{i:016x}") for i in range(300)]
    actions += [action(ActionKind.THROTTLE, f"key:t{i}", limit_rps=float(i + 1)) for i in range(40)]
    actions += [action(ActionKind.BLOCK, f"10.{i}.0.0/16") for i in range(100)]
    options = NginxOptions(output_dir=tmp_path / "ts", hash_secret=SECRET)
    renderer = NginxRenderer(options)
    renderer.ensure_files()
    assert renderer.apply(decisions_for(actions)) is True
    conf = write_main_conf(tmp_path / "nginx", tmp_path / "ts")
    started = time.monotonic()
    result = subprocess.run([binary, "-t", "-p", str(tmp_path / "nginx"), "-c", str(conf)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 5.0
    assert renderer.apply(decisions_for(actions)) is False


def test_rejected_config_rolled_back(tmp_path):
    binary = require_nginx()
    conf_dir = tmp_path / "ts"
    conf = write_main_conf(tmp_path / "nginx", conf_dir)
    good = NginxOptions(output_dir=conf_dir, hash_secret=SECRET)
    NginxRenderer(good).ensure_files()
    before = (conf_dir / HTTP_FILE).read_text()
    bad = NginxOptions(output_dir=conf_dir, hash_secret=SECRET, zone_size="lots")
    renderer = NginxRenderer(bad, NginxController(binary, tmp_path / "nginx", conf))
    with pytest.raises(RenderError, match="zone"):
        renderer.apply(decisions_for([action(ActionKind.THROTTLE, "key:a", limit_rps=1.0)]))
    assert (conf_dir / HTTP_FILE).read_text() == before


def test_secret_file_mode_0600(tmp_path):
    NginxRenderer(NginxOptions(output_dir=tmp_path, hash_secret=SECRET)).ensure_files()
    assert (tmp_path / SECRET_FILE).stat().st_mode & 0o777 == 0o600


def test_invalid_options_rejected(tmp_path):
    with pytest.raises(ValueError, match="header name"):
        NginxOptions(output_dir=tmp_path, key_id_header="X Key", njs=False)
    with pytest.raises(ValueError, match="NGINX variable"):
        NginxOptions(output_dir=tmp_path, key_id_variable="api_key_id", njs=False)
    with pytest.raises(ValueError, match="token-hash secret"):
        NginxOptions(output_dir=tmp_path)
