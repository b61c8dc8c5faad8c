"""One typed settings object for every command.

Values come from, lowest precedence first: defaults, the YAML file named by
``--config`` (or ``TOKENSENTRY_CONFIG``), ``TOKENSENTRY_*`` environment
variables (nested keys with ``__``, e.g. ``TOKENSENTRY_KAFKA__BOOTSTRAP_SERVERS``),
then command-line options. Unknown keys are rejected. Secrets are
``SecretStr`` and print masked.

A list setting such as ``kafka.topics`` takes a JSON list
(``TOKENSENTRY_KAFKA__TOPICS='["a","b"]'``) or comma-separated names
(``TOKENSENTRY_KAFKA__TOPICS=a,b``) from the environment. Validation errors
name the dotted key, the rejected value (masked for secrets) and where the
value came from.
"""

from __future__ import annotations

import json
import math
import os
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from detectors.catalog import DetectorSettings
from pipeline.errors import ConfigError

ENV_PREFIX = "TOKENSENTRY_"
CONFIG_ENV = ENV_PREFIX + "CONFIG"
SECRET_MASK = "**********"
# Error messages mask the value of every key whose name contains one of
# these words, known setting or not, besides the SecretStr settings.
SECRET_NAME_WORDS = ("secret", "password", "passwd", "key", "token", "credential", "auth")
# Error messages cut an echoed value to this many characters.
MAX_ECHOED_VALUE = 80
# A validator's message may quote the value too (a topic name), so messages are cut as well.
MAX_ERROR_MESSAGE = 300
MAX_WINDOW_S = 86400.0

DEFAULT_ORIGIN = "default"

# Kafka's own rule for topic names (kafka.common.internals.Topic): at most 249
# characters from [a-zA-Z0-9._-], and neither "." nor "..".
_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
# Equal to pipeline.signing.MIN_HMAC_KEY_BYTES, repeated so that loading settings does not import the signing module.
_MIN_SIGNING_KEY_BYTES = 16
_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI", "OAUTHBEARER")
_DSN_PASSWORD = re.compile(r"^(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:@/]*:)(?P<password>.*)(?P<tail>@[^@]*)$")


def default_data_dir() -> Path:
    """Return ``$XDG_DATA_HOME/tokensentry``, or ``~/.local/share/tokensentry``."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "tokensentry"


def _check_topic(name: str) -> str:
    if not _TOPIC_NAME.match(name) or name in {".", ".."}:
        raise ValueError(f"invalid Kafka topic name {name!r}; use 1 to 249 characters from letters, digits, '.', '_' and '-'")
    return name


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


class KafkaSettings(BaseModel):
    """Kafka client settings; names follow Kafka's own configuration keys."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    bootstrap_servers: str = Field("127.0.0.1:9092", min_length=1, description="Comma-separated host:port list of brokers.")
    group_id: str = Field("tokensentry", min_length=1, description="Consumer group the workers share.")
    client_id: str = Field("tokensentry", min_length=1, description="Client id sent to the brokers (shown in broker logs and quotas).")
    topics: tuple[str, ...] = Field(("gateway-logs",), min_length=1, description="Topics of gateway access-log lines to consume.")
    action_topic: str = Field("tokensentry-actions", description="Topic the enforcement actions are published to.")
    dead_letter_topic: str = Field("tokensentry-dead-letters", description="Topic for records that failed to parse.")
    receipt_topic: str = Field("tokensentry-receipts", description="Topic enforcement agents report applied actions on.")
    security_protocol: str = Field(
        "PLAINTEXT",
        pattern="^(PLAINTEXT|SSL|SASL_PLAINTEXT|SASL_SSL)$",
        description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.",
    )
    sasl_mechanism: str | None = Field(None, description="PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, GSSAPI or OAUTHBEARER, needed with SASL_*.")
    sasl_username: str | None = Field(None, description="SASL user for PLAIN and SCRAM.")
    sasl_password: SecretStr | None = Field(None, description="SASL password for PLAIN and SCRAM.")
    ssl_cafile: Path | None = Field(None, description="PEM file of the CA that signed the brokers' certificates.")
    ssl_certfile: Path | None = Field(None, description="PEM client certificate, for brokers that require mutual TLS.")
    ssl_keyfile: Path | None = Field(None, description="PEM private key of ssl_certfile.")
    create_topics: bool = Field(True, description="Create missing topics at start with the partitions and replication below.")
    partitions: int = Field(6, ge=1, description="Partitions of topics created at start, and so the most workers that share the load.")
    replication_factor: int = Field(1, ge=1, description="Replication factor of topics created at start.")
    max_batch_records: int = Field(10_000, ge=1, description="Most records one poll hands to the pipeline.")

    _topic_names = field_validator("action_topic", "dead_letter_topic", "receipt_topic")(_check_topic)

    @field_validator("topics")
    @classmethod
    def _check_topics(cls, topics: tuple[str, ...]) -> tuple[str, ...]:
        for topic in topics:
            _check_topic(topic)
        return topics

    @model_validator(mode="after")
    def _check_sasl(self) -> KafkaSettings:
        if not self.security_protocol.startswith("SASL_"):
            return self
        if self.sasl_mechanism is None:
            raise ValueError(
                f"security_protocol {self.security_protocol} needs kafka.sasl_mechanism, one of {', '.join(_SASL_MECHANISMS)}"
            )
        if self.sasl_mechanism not in _SASL_MECHANISMS:
            raise ValueError(f"unknown kafka.sasl_mechanism {self.sasl_mechanism!r}; use one of {', '.join(_SASL_MECHANISMS)}")
        if self.sasl_mechanism in {"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"} and (
            not self.sasl_username or self.sasl_password is None
        ):
            raise ValueError(f"kafka.sasl_mechanism {self.sasl_mechanism} needs kafka.sasl_username and kafka.sasl_password")
        return self


class MetricsSettings(BaseModel):
    """The HTTP endpoint a worker serves /metrics, /healthz and /readyz on."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    enabled: bool = Field(True, description="Serve the endpoint while `tokensentry run` works.")
    host: str = Field("127.0.0.1", min_length=1, description="Address to bind; 0.0.0.0 (or ::) in a container.")
    port: int = Field(9464, ge=0, le=65535, description="TCP port; 0 picks a free port.")
    stall_timeout_s: float = Field(
        120.0, gt=0, description="/healthz fails when the consume loop has not ticked for this many seconds."
    )
    ready_max_lag: int | None = Field(
        500_000, ge=0, description="/readyz fails while an assigned partition lags by more records; null removes the bound."
    )


class Settings(BaseSettings):
    """Every setting TokenSentry reads. See ``tokensentry config show`` for the values in force."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", allow_inf_nan=False)

    data_dir: Path = Field(default_factory=default_data_dir, description="Embedded store, secrets and state.")
    store: str | None = Field(None, description="chdb:///DIR or http(s)://user:pass@host:8123/db; default: chdb under data_dir.")
    hash_secret: SecretStr | None = Field(None, description="Hex key for token ids; default: generated in data_dir.")
    policy_file: Path | None = Field(None, description="Policy YAML file; default: the built-in policy.")
    registry_file: Path | None = Field(
        None, description="Token registry, YAML or CSV, reloaded when the file changes; default: no registry."
    )
    window_s: float = Field(10.0, gt=0, le=MAX_WINDOW_S, description="Tumbling window size, seconds (at most one day).")
    allowed_lateness_s: float = Field(
        5.0, ge=0, le=MAX_WINDOW_S, description="How long a window waits for late events, seconds (at most one day)."
    )
    idle_ttl_s: float = Field(7 * 86400.0, gt=0, description="Event-time idleness after which a token's state is dropped.")
    batch_lines: int = Field(20_000, ge=1, le=1_000_000, description="Lines per batch when replaying files.")
    log_level: typing.Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR"], BeforeValidator(_upper)] = Field(
        "WARNING", description="Least severe log level written to stderr."
    )
    log_format: typing.Annotated[Literal["text", "json"], BeforeValidator(_lower)] = Field(
        "text", description="Log line format on stderr: text for people, json (one object per line) for collectors."
    )
    signing_keyring: Path | None = Field(
        None, description="Keyring file for signing actions; default: signing-keys.json in data_dir, created on first use."
    )
    signing_key: SecretStr | None = Field(None, description="Hex HMAC-SHA256 key that signs actions; overrides the keyring's active key.")
    signing_key_id: str | None = Field(None, min_length=1, description="Key id for signing_key; default 'env'.")
    alert_webhook_url: SecretStr | None = Field(None, description="Webhook that receives alerts; none: no alerts are sent.")
    alert_format: Literal["json", "slack"] = Field("json", description="json: the action object; slack: {\"text\": ...}.")
    alert_min_interval_s: float = Field(600.0, ge=0, description="At most one alert per subject in this many seconds.")
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    detectors: DetectorSettings = Field(default_factory=DetectorSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # load_settings reads the file and the environment itself, so that it
        # can split comma-separated lists and tell where each value came from.
        # pydantic-settings' own environment source would parse the same
        # variables a second time and reject "a,b" for a list.
        return (init_settings,)

    @field_validator("hash_secret")
    @classmethod
    def _check_hash_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        from pipeline.identity import parse_secret  # identity imports numpy and the parsers; load it only here

        try:
            parse_secret(value.get_secret_value().strip(), origin="hash_secret")
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("signing_key")
    @classmethod
    def _check_signing_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        try:
            key = bytes.fromhex(value.get_secret_value().strip())
        except ValueError:
            raise ValueError("the signing key is not hex; write 64 hex digits") from None
        if len(key) < _MIN_SIGNING_KEY_BYTES:
            raise ValueError(f"the signing key has {len(key)} bytes; use at least {_MIN_SIGNING_KEY_BYTES} (32 recommended)")
        return value

    @field_validator("store")
    @classmethod
    def _check_store(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from pipeline.sinks.store_dsn import parse_dsn
        from pipeline.sinks.store_errors import StoreError

        try:
            parse_dsn(value)
        except StoreError as exc:
            raise ValueError(str(exc)) from None
        return value

    def store_dsn(self) -> str:
        """Return the store DSN in force: the explicit one or the embedded default."""
        return self.store or f"chdb://{(self.data_dir / 'store').resolve()}"


@dataclass(frozen=True)
class ResolvedSettings:
    """Validated settings plus where each value came from.

    ``origins`` maps every dotted key (``kafka.partitions``) to ``default``,
    ``config file PATH``, ``environment variable NAME`` or ``command-line option``.
    """

    settings: Settings
    origins: dict[str, str]
    config_file: Path | None


class SettingsError(ConfigError):
    """Settings failed validation; ``errors`` has one line per problem, each naming its key."""

    def __init__(self, errors: list[str], config_file: Path | None, sources: list[str] | None = None) -> None:
        if sources:
            origin = " and ".join(sources)
        else:
            origin = f"config file {config_file} / environment" if config_file else "environment"
        super().__init__(f"invalid settings from {origin}: {'; '.join(errors)}")
        self.errors = errors
        self.config_file = config_file


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build settings from the YAML file, the environment and non-None ``overrides``."""
    return resolve_settings(config_file, **overrides).settings


def resolve_settings(config_file: Path | None = None, **overrides: Any) -> ResolvedSettings:
    """Build settings like ``load_settings`` and record where each value came from.

    Raises:
        ConfigError: the config file is missing or not a YAML mapping.
        SettingsError: a value is invalid or a key is unknown; every problem
            is listed, not only the first.
    """
    path = config_file or (Path(os.environ[CONFIG_ENV]) if os.environ.get(CONFIG_ENV) else None)
    file_values = _read_yaml(path) if path is not None else {}
    env_values, env_names = _env_with_names()
    option_values = {key: value for key, value in overrides.items() if value is not None}

    origins: dict[str, str] = {}
    for key in _leaf_keys(file_values):
        origins[key] = f"config file {path}"
    for key in _leaf_keys(env_values):
        # A JSON object in TOKENSENTRY_METRICS sets metrics.port and its siblings.
        variable = next(env_names[prefix] for prefix in _prefixes(key) if prefix in env_names)
        origins[key] = f"environment variable {variable}"
    for key in _leaf_keys(option_values):
        origins[key] = "command-line option"

    merged = _deep_merge(_deep_merge(file_values, env_values), option_values)
    try:
        settings = Settings.model_validate(merged)
    except ValidationError as exc:
        raise SettingsError(format_settings_errors(exc, origins), path, _error_sources(exc, origins)) from None

    non_finite = _non_finite_floats(settings)
    if non_finite:
        lines = [f"{key}: must be a finite number (got {value!r}), set by {origins.get(key, DEFAULT_ORIGIN)}" for key, value in non_finite]
        raise SettingsError(lines, path, sorted({origins.get(key, DEFAULT_ORIGIN) for key, _ in non_finite}))

    for key in settings_keys():
        origins.setdefault(key, DEFAULT_ORIGIN)
    return ResolvedSettings(settings=settings, origins={key: origins[key] for key in settings_keys()}, config_file=path)


def settings_keys(model: type[BaseModel] = Settings, prefix: str = "") -> list[str]:
    """Return every dotted leaf key of ``model`` in declaration order."""
    keys: list[str] = []
    for name, field in model.model_fields.items():
        nested = _model_type(field.annotation)
        if nested is not None:
            keys.extend(settings_keys(nested, f"{prefix}{name}."))
        else:
            keys.append(prefix + name)
    return keys


def secret_keys(model: type[BaseModel] = Settings, prefix: str = "") -> set[str]:
    """Return the dotted keys whose values are secrets and print masked."""
    keys: set[str] = set()
    for name, field in model.model_fields.items():
        nested = _model_type(field.annotation)
        if nested is not None:
            keys |= secret_keys(nested, f"{prefix}{name}.")
        elif SecretStr in _union_members(field.annotation):
            keys.add(prefix + name)
    return keys


def mask_store_dsn(dsn: str) -> str:
    """Return ``dsn`` with the password of its user info replaced by ``SECRET_MASK``."""
    match = _DSN_PASSWORD.match(dsn)
    if match is None:
        return dsn
    return f"{match['head']}{SECRET_MASK}{match['tail']}"


def masked_values(settings: Settings) -> dict[str, Any]:
    """Return every effective value by dotted key, as JSON types, with secrets masked."""
    dumped = settings.model_dump(mode="json")
    values: dict[str, Any] = {}
    for key in settings_keys():
        value: Any = dumped
        for part in key.split("."):
            value = value[part]
        values[key] = _mask_value(key, value)
    return values


def format_settings_errors(exc: ValidationError, origins: dict[str, str]) -> list[str]:
    """Render pydantic errors as ``key.path: message (got value), set by ORIGIN``.

    The value is masked for secrets, for unknown keys and for keys named like
    secrets (``SECRET_NAME_WORDS``), and cut to ``MAX_ECHOED_VALUE`` characters.
    """
    lines = []
    for error in exc.errors():
        location = [str(part) for part in error["loc"]]
        key = _shorten(".".join(location) or "(top level)")
        message = _shorten(error["msg"].removeprefix("Value error, "), MAX_ERROR_MESSAGE)
        unknown = error["type"] == "extra_forbidden"
        if unknown:
            message = "unknown setting; check the spelling against `tokensentry config show`"
        value = error.get("input")
        if isinstance(value, dict | BaseModel):
            # A model-level check names its keys in the message; the whole mapping would only add noise.
            line = f"{key}: {message}"
        elif unknown or _is_secret_name(key):
            # A misspelled key may still hold a secret (hash_secrt, sasl_pasword), so its value is never shown.
            line = f"{key}: {message} (got {SECRET_MASK})"
        else:
            line = f"{key}: {message} (got {_shorten(repr(_mask_value(key, value)))})"
        origin = _origin_of(location, origins)
        if origin is not None:
            line += f", set by {origin}"
        lines.append(line)
    return lines


def _is_secret_name(key: str) -> bool:
    name = key.lower()
    return any(word in name for word in SECRET_NAME_WORDS)


def _shorten(text: str, limit: int = MAX_ECHOED_VALUE) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _error_sources(exc: ValidationError, origins: dict[str, str]) -> list[str]:
    """Return the sources (file, variables, options) of the values that failed validation."""
    sources = set()
    for error in exc.errors():
        origin = _origin_of([str(part) for part in error["loc"]], origins)
        if origin is not None:
            sources.update(origin.split(" and "))
    return sorted(sources)


def _non_finite_floats(model: BaseModel, prefix: str = "") -> list[tuple[str, float]]:
    """Return (dotted key, value) of every float setting that is inf or nan, nested models included.

    ``allow_inf_nan=False`` covers the models in this file. This walk also
    reaches nested models defined in other modules (``DetectorSettings``),
    whose model config this file does not set.
    """
    found: list[tuple[str, float]] = []
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            found.extend(_non_finite_floats(value, f"{prefix}{name}."))
        elif isinstance(value, float) and not math.isfinite(value):
            found.append((prefix + name, value))
    return found


def _mask_value(key: str, value: Any) -> Any:
    if isinstance(value, dict):
        return {name: _mask_value(f"{key}.{name}", item) for name, item in value.items()}
    if value is None:
        return None
    if key in secret_keys():
        return SECRET_MASK
    if key == "store" and isinstance(value, str):
        return mask_store_dsn(value)
    return value


def _origin_of(location: list[str], origins: dict[str, str]) -> str | None:
    # A list element's error (kafka.topics.1) comes from the list's key; a
    # model-level error (kafka) may come from any of its keys.
    for end in range(len(location), 0, -1):
        origin = origins.get(".".join(location[:end]))
        if origin is not None:
            return origin
    prefix = ".".join(location) + "."
    below = sorted({origin for key, origin in origins.items() if key.startswith(prefix)})
    return " and ".join(below) if below else None


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found; check --config or TOKENSENTRY_CONFIG") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory; pass a YAML file to --config or TOKENSENTRY_CONFIG") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {path} is not UTF-8 text (invalid byte at offset {exc.start}); save it as UTF-8"
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} must hold a mapping of settings, got {type(values).__name__}")
    return values


def _env_only() -> dict[str, Any]:
    """Collect TOKENSENTRY_* variables as nested dicts (validation happens once, in load_settings)."""
    return _env_with_names()[0]


def _env_with_names() -> tuple[dict[str, Any], dict[str, str]]:
    """Collect TOKENSENTRY_* variables as nested dicts, plus the variable name of each dotted key."""
    values: dict[str, Any] = {}
    names: dict[str, str] = {}
    for name, raw in os.environ.items():
        if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV:
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        target = values
        for part in path[:-1]:
            child = target.setdefault(part, {})
            if not isinstance(child, dict):
                # TOKENSENTRY_KAFKA=... and TOKENSENTRY_KAFKA__X=... both set: the nested one wins.
                child = target[part] = {}
            target = child
        target[path[-1]] = _parse_env_value(path, raw, name)
        names[".".join(path)] = name
    return values, names


def _parse_env_value(path: list[str], raw: str, name: str) -> Any:
    """Turn an environment string into a list or mapping where the setting is one."""
    annotation = _annotation_at(path)
    if annotation is None:
        return raw
    if _model_type(annotation) is not None and raw.lstrip().startswith("{"):
        return _parse_json(raw, name, "a JSON object")
    if _is_sequence(annotation):
        text = raw.strip()
        if text.startswith("["):
            return _parse_json(text, name, "a JSON list")
        return [item.strip() for item in text.split(",") if item.strip()]
    return raw


def _parse_json(raw: str, name: str, expected: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise SettingsError([f"environment variable {name} is not valid JSON ({exc.msg} at position {exc.pos}); write {expected} or comma-separated values"], None) from None


def _annotation_at(path: list[str]) -> Any:
    model: type[BaseModel] | None = Settings
    annotation: Any = None
    for part in path:
        if model is None or part not in model.model_fields:
            return None
        annotation = model.model_fields[part].annotation
        model = _model_type(annotation)
    return annotation


def _union_members(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def _model_type(annotation: Any) -> type[BaseModel] | None:
    for member in _union_members(annotation):
        if isinstance(member, type) and issubclass(member, BaseModel):
            return member
    return None


def _is_sequence(annotation: Any) -> bool:
    return any(typing.get_origin(member) in (list, tuple, set, frozenset) for member in _union_members(annotation))


def _leaf_keys(values: dict[str, Any], prefix: str = "") -> list[str]:
    keys: list[str] = []
    for name, value in values.items():
        if isinstance(value, dict) and value:
            keys.extend(_leaf_keys(value, f"{prefix}{name}."))
        else:
            keys.append(prefix + str(name))
    return keys


def _prefixes(key: str) -> list[str]:
    """Return ``a.b.c``, ``a.b``, ``a``: the key and its parents, longest first."""
    parts = key.split(".")
    return [".".join(parts[:end]) for end in range(len(parts), 0, -1)]


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged
