"""``tokensentry schema``: export the JSON Schemas of the published messages.

The files under ``schemas/jsonschema`` are generated from the pydantic
models, one per message type and schema version (``action.v1.json``, ...).
``tokensentry schema export`` rewrites them and ``--check`` reports stale
files; a unit test runs the same comparison.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pydantic import BaseModel

import schemas
from pipeline.errors import ConfigError
from schemas.actions import ACTION_SCHEMA_VERSION, RECEIPT_SCHEMA_VERSION, Action, ActionReceipt
from schemas.deadletters import DEAD_LETTER_SCHEMA_VERSION, DeadLetter
from schemas.detections import DETECTION_SCHEMA_VERSION, Detection
from schemas.events import EVENT_SCHEMA_VERSION, AccessEvent

SCHEMA_DIR = Path(schemas.__file__).parent / "jsonschema"
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

# Message name -> (model, schema version).
MESSAGES: dict[str, tuple[type[BaseModel], int]] = {
    "action": (Action, ACTION_SCHEMA_VERSION),
    "receipt": (ActionReceipt, RECEIPT_SCHEMA_VERSION),
    "event": (AccessEvent, EVENT_SCHEMA_VERSION),
    "detection": (Detection, DETECTION_SCHEMA_VERSION),
    "deadletter": (DeadLetter, DEAD_LETTER_SCHEMA_VERSION),
}


def schema_documents() -> dict[str, str]:
    """Return file name -> JSON Schema text for every published message."""
    documents = {}
    for name, (model, version) in MESSAGES.items():
        file_name = f"{name}.v{version}.json"
        schema = {"$schema": JSON_SCHEMA_DIALECT, "$id": file_name, **model.model_json_schema()}
        documents[file_name] = json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    return documents


def stale_files(directory: Path = SCHEMA_DIR) -> list[str]:
    """Return the names of schema files that are missing or differ from the models."""
    stale = []
    for file_name, text in schema_documents().items():
        path = directory / file_name
        if not path.exists() or path.read_bytes() != text.encode("utf-8"):
            stale.append(file_name)
    return stale


def export(directory: Path = SCHEMA_DIR) -> list[str]:
    """Write every schema file into ``directory`` and return the names of files that changed.

    Raises:
        ConfigError: ``directory`` exists and is not a directory, or cannot be created.
    """
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"schema output path {directory} exists and is not a directory; pass a directory to --dir")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"cannot create the schema output directory {directory}: {error.strerror or error}; check --dir") from error
    changed = stale_files(directory)
    for file_name, text in schema_documents().items():
        if file_name in changed:
            (directory / file_name).write_bytes(text.encode("utf-8"))
    return changed


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "schema",
        help="export the JSON Schemas of published messages",
        description="Write the JSON Schemas of actions, receipts, events, detections and dead letters, "
        "generated from the pydantic models.",
    )
    parser.add_argument("operation", choices=("export",), help="export: write the schema files")
    parser.add_argument("--dir", type=Path, default=SCHEMA_DIR, help=f"output directory (default: {SCHEMA_DIR})")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when a file is missing or stale")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.check:
        stale = stale_files(args.dir)
        for file_name in stale:
            print(f"stale: {args.dir / file_name}; run `tokensentry schema export`", file=sys.stderr)
        return 1 if stale else 0
    for file_name in export(args.dir):
        print(f"wrote {args.dir / file_name}")
    return 0
