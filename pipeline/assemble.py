"""Builds a ready ``Pipeline`` from settings: the wiring shared by ``replay`` and ``run``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from detectors.base import DetectionContext, Detector
from detectors.catalog import build_country_lookup_from
from detectors.catalog import build_detectors as build_detector_set
from pipeline.config import Settings
from pipeline.errors import ConfigError
from pipeline.identity import SECRET_FILE_NAME, TokenHasher, load_or_create_secret, parse_secret
from pipeline.parsers import LineParser
from pipeline.policy import Policy, PolicyConfig, default_policy, load_policy
from pipeline.registry import TokenRegistry
from pipeline.runner import Pipeline
from pipeline.signing import Signer, keyring_from_settings
from pipeline.sinks.actions import ActionSink
from pipeline.sinks.clickhouse import AuditStore
from pipeline.sinks.write_behind import WriteBehind
from pipeline.state import SubjectIndex
from pipeline.windows import TumblingWindows

logger = logging.getLogger(__name__)


def load_hasher(settings: Settings, create: bool = True) -> TokenHasher:
    """Return the token hasher keyed by the configured secret, or the one kept in the data directory.

    With ``create=False`` (commands that look ids up) a missing secret is an
    error: a new secret would give ids that match nothing stored.
    """
    if settings.hash_secret is not None:
        return TokenHasher(parse_secret(settings.hash_secret.get_secret_value(), origin="TOKENSENTRY_HASH_SECRET"))
    if not create and not (settings.data_dir / SECRET_FILE_NAME).exists():
        raise ConfigError(
            f"no token-hash secret in {settings.data_dir}; pass the --data-dir of the store whose ids you want, "
            "or set TOKENSENTRY_HASH_SECRET"
        )
    return TokenHasher(load_or_create_secret(settings.data_dir))


def load_policy_config(settings: Settings) -> PolicyConfig:
    """Return the policy file's configuration, or the built-in default policy."""
    if settings.policy_file is None:
        return default_policy()
    return load_policy(Path(settings.policy_file))


def build_policy(settings: Settings, config: PolicyConfig, registry: TokenRegistry | None = None) -> Policy:
    """Return the policy that signs its actions; a policy file is reloaded when it changes."""
    signer = Signer(keyring_from_settings(settings))
    if settings.policy_file is None:
        return Policy(config, signer=signer, registry=registry)
    return Policy(config, path=Path(settings.policy_file), signer=signer, registry=registry)


def build_detectors(settings: Settings | None = None) -> list[Detector]:
    """Return the detector set, in the order detections are reported."""
    return build_detector_set(settings.detectors if settings is not None else None)


def load_registry(settings: Settings) -> TokenRegistry:
    """Return the token registry file's contents, or an empty registry when none is configured."""
    if settings.registry_file is None:
        return TokenRegistry()
    return TokenRegistry.load(settings.registry_file)


def open_store(settings: Settings) -> AuditStore:
    """Open the audit store and apply pending migrations."""
    store = AuditStore.open(settings.store_dsn())
    store.migrate()
    return store


def build_pipeline(
    settings: Settings,
    *,
    store: AuditStore,
    log_format: str | None = None,
    mapping: dict[str, str] | None = None,
    action_sinks: Sequence[ActionSink] = (),
    dead_letter_sinks: Sequence = (),
    writer: WriteBehind | None = None,
) -> Pipeline:
    """Wire every stage from ``settings``; the caller owns ``store`` and the sinks."""
    policy_config = load_policy_config(settings)
    registry = load_registry(settings)
    context = DetectionContext(
        window_s=settings.window_s,
        default_limit_rps=policy_config.default_limit_rps,
        client_limit_rps=policy_config.client_limit_rps,
        plan_limits_rps=dict(policy_config.plan_limits_rps),
        registry=registry,
    )
    return Pipeline(
        parser=LineParser(format=log_format, mapping=mapping),
        hasher=load_hasher(settings),
        windows=TumblingWindows(
            settings.window_s,
            settings.allowed_lateness_s,
            country_lookup=build_country_lookup_from(settings.detectors),
        ),
        index=SubjectIndex(idle_ttl_s=settings.idle_ttl_s),
        detectors=build_detectors(settings),
        context=context,
        policy=build_policy(settings, policy_config, registry),
        store=store,
        action_sinks=action_sinks,
        dead_letter_sinks=dead_letter_sinks,
        writer=writer,
    )
