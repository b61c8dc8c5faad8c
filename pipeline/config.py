"""One typed settings object for every command.

Values come from, lowest precedence first: defaults, the YAML file named by
``--config`` (or ``TOKENSENTRY_CONFIG``), ``TOKENSENTRY_*`` environment
variables (nested keys with ``__``, e.g. ``TOKENSENTRY_KAFKA__BOOTSTRAP_SERVERS``),
then command-line options. Unknown keys are rejected. Secrets are
``SecretStr`` and print masked.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from pipeline.errors import ConfigError
from pipeline.policy import format_validation_error

ENV_PREFIX = "TOKENSENTRY_"


def default_data_dir() -> Path:
    """Return ``$XDG_DATA_HOME/tokensentry``, or ``~/.local/share/tokensentry``."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "tokensentry"


class KafkaSettings(BaseModel):
    """Kafka client settings; names follow Kafka's own configuration keys."""

    model_config = ConfigDict(extra="forbid")

    bootstrap_servers: str = "127.0.0.1:9092"
    group_id: str = "tokensentry"
    client_id: str = "tokensentry"
    topics: tuple[str, ...] = ("gateway-logs",)
    action_topic: str = "tokensentry-actions"
    dead_letter_topic: str = "tokensentry-dead-letters"
    receipt_topic: str = "tokensentry-receipts"
    security_protocol: str = Field("PLAINTEXT", pattern="^(PLAINTEXT|SSL|SASL_PLAINTEXT|SASL_SSL)$")
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    create_topics: bool = True
    partitions: int = Field(6, ge=1)
    replication_factor: int = Field(1, ge=1)
    max_batch_records: int = Field(10_000, ge=1)


class Settings(BaseSettings):
    """Every setting TokenSentry reads. See ``tokensentry config show`` for the values in force."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid")

    data_dir: Path = Field(default_factory=default_data_dir, description="Embedded store, secrets and state.")
    store: str | None = Field(None, description="chdb:///DIR or http(s)://user:pass@host:8123/db; default: chdb under data_dir.")
    hash_secret: SecretStr | None = Field(None, description="Hex key for token ids; default: generated in data_dir.")
    policy_file: Path | None = None
    window_s: float = Field(10.0, gt=0, description="Tumbling window size, seconds.")
    allowed_lateness_s: float = Field(5.0, ge=0, description="How long a window waits for late events, seconds.")
    idle_ttl_s: float = Field(7 * 86400.0, gt=0, description="Event-time idleness after which a token's state is dropped.")
    batch_lines: int = Field(20_000, ge=1, le=1_000_000)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, file_secret_settings)

    def store_dsn(self) -> str:
        """Return the store DSN in force: the explicit one or the embedded default."""
        return self.store or f"chdb://{(self.data_dir / 'store').resolve()}"


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build settings from the YAML file, the environment and non-None ``overrides``."""
    file_values: dict[str, Any] = {}
    path = config_file or (Path(os.environ[ENV_PREFIX + "CONFIG"]) if os.environ.get(ENV_PREFIX + "CONFIG") else None)
    if path is not None:
        file_values = _read_yaml(path)
    env_values = _env_only()
    merged = _deep_merge(file_values, env_values)
    merged = _deep_merge(merged, {key: value for key, value in overrides.items() if value is not None})
    try:
        return Settings.model_validate(merged)
    except ValidationError as exc:
        origin = f"config file {path} / environment" if path else "environment"
        raise ConfigError(f"invalid settings from {origin}: {format_validation_error(exc)}") from None


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found; check --config or TOKENSENTRY_CONFIG") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} must hold a mapping of settings, got {type(values).__name__}")
    return values


def _env_only() -> dict[str, Any]:
    """Collect TOKENSENTRY_* variables as nested dicts (validation happens once, in load_settings)."""
    values: dict[str, Any] = {}
    for name, value in os.environ.items():
        if not name.startswith(ENV_PREFIX) or name == ENV_PREFIX + "CONFIG":
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        target = values
        for part in path[:-1]:
            target = target.setdefault(part, {})
        target[path[-1]] = value
    return values


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged
