"""Settings loading: layering, environment lists, validation errors that name the key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.config import (
    SECRET_MASK,
    SettingsError,
    load_settings,
    mask_store_dsn,
    masked_values,
    resolve_settings,
    secret_keys,
    settings_keys,
)
from pipeline.errors import ConfigError

HEX_SECRET = "ab" * 32


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("TOKENSENTRY_"):
            monkeypatch.delenv(name)


def write_yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def errors_of(excinfo: pytest.ExceptionInfo[SettingsError]) -> list[str]:
    return excinfo.value.errors


def test_defaults_load_without_file_or_environment() -> None:
    settings = load_settings()
    assert settings.kafka.topics == ("gateway-logs",)
    assert settings.metrics.port == 9464
    assert settings.log_format == "text"


def test_environment_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_yaml(tmp_path, "kafka:\n  partitions: 3\n  group_id: from-file\n")
    monkeypatch.setenv("TOKENSENTRY_KAFKA__PARTITIONS", "12")
    settings = load_settings(path)
    assert settings.kafka.partitions == 12
    assert settings.kafka.group_id == "from-file"


def test_option_overrides_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TOKENSENTRY_DATA_DIR", str(tmp_path / "env"))
    settings = load_settings(data_dir=tmp_path / "option", store=None)
    assert settings.data_dir == tmp_path / "option"


def test_config_file_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_yaml(tmp_path, "window_s: 30\n")
    monkeypatch.setenv("TOKENSENTRY_CONFIG", str(path))
    assert load_settings().window_s == 30.0


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("a,b", ("a", "b")),
        (" a , b ,", ("a", "b")),
        ("single", ("single",)),
        ('["a", "b"]', ("a", "b")),
        (' ["x.y-z_1"] ', ("x.y-z_1",)),
    ],
)
def test_environment_list_forms(monkeypatch: pytest.MonkeyPatch, raw: str, expected: tuple[str, ...]) -> None:
    monkeypatch.setenv("TOKENSENTRY_KAFKA__TOPICS", raw)
    assert load_settings().kafka.topics == expected


def test_environment_list_invalid_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENSENTRY_KAFKA__TOPICS", '["a", ')
    with pytest.raises(SettingsError) as excinfo:
        load_settings()
    assert "TOKENSENTRY_KAFKA__TOPICS is not valid JSON" in errors_of(excinfo)[0]


def test_environment_nested_model_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENSENTRY_METRICS", '{"port": 9999, "host": "0.0.0.0"}')
    settings = load_settings()
    assert settings.metrics.port == 9999
    assert settings.metrics.host == "0.0.0.0"


def test_partitions_error_names_key(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, "kafka:\n  partitions: 0\n")
    with pytest.raises(SettingsError) as excinfo:
        load_settings(path)
    (error,) = errors_of(excinfo)
    assert error.startswith("kafka.partitions: Input should be greater than or equal to 1 (got 0)")
    assert f"set by config file {path}" in error


def test_error_names_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENSENTRY_METRICS__PORT", "70000")
    with pytest.raises(SettingsError) as excinfo:
        load_settings()
    (error,) = errors_of(excinfo)
    assert error.startswith("metrics.port: Input should be less than or equal to 65535")
    assert error.endswith("set by environment variable TOKENSENTRY_METRICS__PORT")


def test_every_error_is_listed(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, "window_s: 0\nbatch_lines: 0\nkafka:\n  partitions: 0\n  replication_factor: 0\n")
    with pytest.raises(SettingsError) as excinfo:
        load_settings(path)
    keys = sorted(error.split(":")[0] for error in errors_of(excinfo))
    assert keys == ["batch_lines", "kafka.partitions", "kafka.replication_factor", "window_s"]


def test_unknown_key_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_yaml(tmp_path, "kafka:\n  partitons: 3\n")
    monkeypatch.setenv("TOKENSENTRY_WINDOWS", "10")
    with pytest.raises(SettingsError) as excinfo:
        load_settings(path)
    errors = "\n".join(errors_of(excinfo))
    assert "kafka.partitons: unknown setting" in errors
    assert "windows: unknown setting" in errors
    assert "set by environment variable TOKENSENTRY_WINDOWS" in errors


def test_error_message_keeps_config_error_type(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, "window_s: -1\n")
    with pytest.raises(ConfigError, match=r"invalid settings from config file .* window_s: Input should be greater than 0"):
        load_settings(path)


def test_missing_config_file() -> None:
    with pytest.raises(ConfigError, match="config file /nonexistent/tokensentry.yaml not found"):
        load_settings(Path("/nonexistent/tokensentry.yaml"))


def test_config_file_not_a_mapping(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, "- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a mapping of settings, got list"):
        load_settings(path)


def test_invalid_yaml(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, "kafka: [\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_settings(path)


def test_hash_secret_error_is_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENSENTRY_HASH_SECRET", "not-hex-but-secret")
    with pytest.raises(SettingsError) as excinfo:
        load_settings()
    (error,) = errors_of(excinfo)
    assert error.startswith("hash_secret: token-hash secret")
    assert "not-hex-but-secret" not in error
    assert SECRET_MASK in error


def test_hash_secret_too_short(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENSENTRY_HASH_SECRET", "abcd")
    with pytest.raises(SettingsError, match="has 2 bytes; use at least 16"):
        load_settings()


def test_store_dsn_error_masks_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENSENTRY_STORE", "ftp://user:hunter2@host/db")
    with pytest.raises(SettingsError) as excinfo:
        load_settings()
    (error,) = errors_of(excinfo)
    assert error.startswith("store: Invalid store DSN")
    assert "hunter2" not in error


def test_topic_name_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENSENTRY_KAFKA__ACTION_TOPIC", "bad topic")
    with pytest.raises(SettingsError, match=r"kafka.action_topic: invalid Kafka topic name 'bad topic'"):
        load_settings()


def test_empty_topic_list_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENSENTRY_KAFKA__TOPICS", ",")
    with pytest.raises(SettingsError, match=r"kafka.topics: .*at least 1 item"):
        load_settings()


def test_sasl_needs_mechanism(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, "kafka:\n  security_protocol: SASL_SSL\n")
    with pytest.raises(SettingsError, match=r"kafka: security_protocol SASL_SSL needs kafka.sasl_mechanism"):
        load_settings(path)


def test_sasl_scram_needs_credentials_and_masks_them(tmp_path: Path) -> None:
    path = write_yaml(
        tmp_path,
        "kafka:\n  security_protocol: SASL_SSL\n  sasl_mechanism: SCRAM-SHA-512\n  sasl_password: s3cret-value\n",
    )
    with pytest.raises(SettingsError) as excinfo:
        load_settings(path)
    (error,) = errors_of(excinfo)
    assert "needs kafka.sasl_username and kafka.sasl_password" in error
    assert "s3cret-value" not in error


def test_log_options_normalised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENSENTRY_LOG_FORMAT", "JSON")
    monkeypatch.setenv("TOKENSENTRY_LOG_LEVEL", "info")
    settings = load_settings()
    assert settings.log_format == "json"
    assert settings.log_level == "INFO"


def test_log_format_invalid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENSENTRY_LOG_FORMAT", "xml")
    with pytest.raises(SettingsError, match=r"log_format: Input should be 'text' or 'json'"):
        load_settings()


def test_origins_cover_every_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_yaml(tmp_path, "kafka:\n  group_id: g\n")
    monkeypatch.setenv("TOKENSENTRY_KAFKA__TOPICS", "a,b")
    resolved = resolve_settings(path, data_dir=tmp_path)
    assert list(resolved.origins) == settings_keys()
    assert resolved.origins["kafka.group_id"] == f"config file {path}"
    assert resolved.origins["kafka.topics"] == "environment variable TOKENSENTRY_KAFKA__TOPICS"
    assert resolved.origins["data_dir"] == "command-line option"
    assert resolved.origins["window_s"] == "default"


def test_secret_keys_found() -> None:
    assert secret_keys() == {"hash_secret", "signing_key", "alert_webhook_url", "kafka.sasl_password"}


def test_signing_key_validated_and_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENSENTRY_SIGNING_KEY", "0123")
    with pytest.raises(SettingsError) as excinfo:
        load_settings()
    (error,) = errors_of(excinfo)
    assert error.startswith("signing_key: the signing key has 2 bytes; use at least 16")
    assert "0123" not in error


def test_signing_settings_read_by_keyring(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from pipeline.signing import keyring_from_settings

    monkeypatch.setenv("TOKENSENTRY_SIGNING_KEY", HEX_SECRET)
    monkeypatch.setenv("TOKENSENTRY_SIGNING_KEY_ID", "prod-2")
    keyring = keyring_from_settings(load_settings(data_dir=tmp_path))
    assert keyring.active == "prod-2"


def test_masked_values_hide_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENSENTRY_HASH_SECRET", HEX_SECRET)
    monkeypatch.setenv("TOKENSENTRY_STORE", "http://writer:p%40ss@clickhouse:8123/tokensentry")
    values = masked_values(load_settings())
    assert values["hash_secret"] == SECRET_MASK
    assert values["store"] == f"http://writer:{SECRET_MASK}@clickhouse:8123/tokensentry"
    assert HEX_SECRET not in repr(values)


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        ("http://u:pw@h:8123/db", f"http://u:{SECRET_MASK}@h:8123/db"),
        ("https://u:p@w:rd@h/db", f"https://u:{SECRET_MASK}@h/db"),
        ("http://u@h/db", "http://u@h/db"),
        ("chdb:///var/lib/store", "chdb:///var/lib/store"),
    ],
)
def test_mask_store_dsn(dsn: str, expected: str) -> None:
    assert mask_store_dsn(dsn) == expected
