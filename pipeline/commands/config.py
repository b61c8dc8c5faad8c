"""``tokensentry config check|show``: validate the settings in force and print them."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from pipeline.commands.common import add_settings_arguments
from pipeline.config import (
    DEFAULT_ORIGIN,
    ENV_PREFIX,
    ResolvedSettings,
    SettingsError,
    mask_store_dsn,
    masked_values,
    resolve_settings,
)
from pipeline.errors import ConfigError

EXIT_OK = 0
EXIT_INVALID = 2

_ORIGIN_KINDS = (
    (DEFAULT_ORIGIN, "defaults"),
    ("config file", "the config file"),
    ("environment variable", "the environment"),
    ("command-line option", "options"),
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "config",
        help="check or show the settings in force",
        description="Validate or print the settings a command would run with: defaults, then the YAML file "
        f"(--config or {ENV_PREFIX}CONFIG), then {ENV_PREFIX}* environment variables (nested keys joined "
        f"with __, e.g. {ENV_PREFIX}KAFKA__TOPICS=a,b), then options.",
    )
    actions = parser.add_subparsers(dest="config_command", required=True, metavar="ACTION")

    check = actions.add_parser(
        "check",
        help="validate the settings; exit 0 and print ok, or exit 2 and print every error",
        description="Validate every setting and the files they name (policy file, TLS files). "
        "Prints ok and the source of each value, or every error with its key and exits with status 2.",
    )
    add_settings_arguments(check)
    check.set_defaults(func=run_check)

    show = actions.add_parser(
        "show",
        help="print every effective value and its source, secrets masked",
        description="Print every effective setting with the source it came from. Secrets print as **********.",
    )
    show.add_argument("--json", action="store_true", help="print one JSON object of nested values instead of a table")
    add_settings_arguments(show)
    show.set_defaults(func=run_show)


def run_check(args: argparse.Namespace) -> int:
    resolved = _resolve(args)
    if resolved is None:
        return EXIT_INVALID
    problems = check_referenced_files(resolved)
    if problems:
        _print_errors("check", problems)
        return EXIT_INVALID
    print(f"ok: {len(resolved.origins)} settings valid ({_sources_summary(resolved)})")
    _print_table(resolved, sys.stdout)
    return EXIT_OK


def run_show(args: argparse.Namespace) -> int:
    resolved = _resolve(args)
    if resolved is None:
        return EXIT_INVALID
    if args.json:
        print(json.dumps(_nest(_shown_values(resolved)), indent=2))
    else:
        _print_table(resolved, sys.stdout)
    return EXIT_OK


def check_referenced_files(resolved: ResolvedSettings) -> list[str]:
    """Return one error per file setting that cannot be used: missing, unreadable or invalid."""
    settings = resolved.settings
    problems: list[str] = []
    if settings.policy_file is not None:
        from pipeline.policy import load_policy  # the policy module pulls in the schemas; load it only when needed

        try:
            load_policy(Path(settings.policy_file))
        except ConfigError as exc:
            problems.append(f"policy_file: {exc}, set by {resolved.origins['policy_file']}")
    for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        path = getattr(settings.kafka, key)
        if path is not None and not os.access(path, os.R_OK):
            reason = "does not exist" if not Path(path).exists() else "is not readable by this user"
            problems.append(f"kafka.{key}: file {path} {reason}, set by {resolved.origins['kafka.' + key]}")
    if (settings.kafka.ssl_certfile is None) != (settings.kafka.ssl_keyfile is None):
        problems.append("kafka.ssl_certfile and kafka.ssl_keyfile must be set together for mutual TLS")
    return problems


def _resolve(args: argparse.Namespace) -> ResolvedSettings | None:
    try:
        return resolve_settings(args.config, data_dir=args.data_dir, store=args.store)
    except SettingsError as exc:
        _print_errors(args.config_command, exc.errors)
    except ConfigError as exc:
        _print_errors(args.config_command, [str(exc)])
    return None


def _print_errors(command: str, errors: list[str]) -> None:
    noun = "error" if len(errors) == 1 else "errors"
    print(f"tokensentry config {command}: {len(errors)} {noun} in the settings:", file=sys.stderr)
    for error in errors:
        print(f"  {error}", file=sys.stderr)


def _print_table(resolved: ResolvedSettings, file: Any) -> None:
    values = _shown_values(resolved)
    rows = [(key, _text(value), _origin_text(resolved, key)) for key, value in values.items()]
    key_width = max(len(key) for key, _, _ in rows)
    value_width = min(max(len(value) for _, value, _ in rows), 60)
    for key, value, origin in rows:
        print(f"{key:<{key_width}}  {value:<{value_width}}  {origin}", file=file)


def _shown_values(resolved: ResolvedSettings) -> dict[str, Any]:
    """Return the masked values, with the effective store DSN in place of an unset ``store``."""
    values = masked_values(resolved.settings)
    if values["store"] is None:
        values["store"] = mask_store_dsn(resolved.settings.store_dsn())
    return values


def _origin_text(resolved: ResolvedSettings, key: str) -> str:
    origin = resolved.origins[key]
    if key == "store" and resolved.settings.store is None:
        return f"{origin} (embedded chDB under data_dir)"
    return origin


def _sources_summary(resolved: ResolvedSettings) -> str:
    counts: dict[str, int] = {}
    for origin in resolved.origins.values():
        kind = next((name for prefix, name in _ORIGIN_KINDS if origin.startswith(prefix)), origin)
        counts[kind] = counts.get(kind, 0) + 1
    return ", ".join(f"{count} from {kind}" for kind, count in sorted(counts.items()))


def _text(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        target = nested
        parts = key.split(".")
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = value
    return nested
