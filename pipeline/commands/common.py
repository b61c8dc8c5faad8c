"""Options and helpers shared by several subcommands."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.config import Settings, load_settings
from pipeline.errors import ConfigError


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--config``, ``--data-dir`` and ``--store``, which most commands take."""
    parser.add_argument("--config", type=Path, help="YAML settings file (env: TOKENSENTRY_CONFIG)")
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="directory for the embedded store, the token-hash secret and state "
        "(env: TOKENSENTRY_DATA_DIR; default: ~/.local/share/tokensentry)",
    )
    parser.add_argument(
        "--store",
        help="audit store: chdb:///ABS/DIR (embedded) or http(s)://user:password@host:8123/db "
        "(env: TOKENSENTRY_STORE; default: chdb under the data directory)",
    )


def settings_from_args(args: argparse.Namespace, **overrides) -> Settings:
    """Load settings with the common options applied on top of file and environment."""
    return load_settings(
        args.config,
        data_dir=args.data_dir,
        store=args.store,
        **overrides,
    )


def load_mapping(path: Path | None) -> dict[str, str] | None:
    """Read a generic-JSON field mapping file (a JSON object of field -> key path)."""
    if path is None:
        return None
    try:
        mapping = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"mapping file {path} not found; check --mapping") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"mapping file {path} is not valid JSON: {exc}") from None
    if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
        raise ConfigError(f"mapping file {path} must be a JSON object of field name -> JSON key path strings")
    return mapping
