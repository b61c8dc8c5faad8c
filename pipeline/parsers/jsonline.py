"""Decoding of one JSON-object log line, with orjson."""

from __future__ import annotations

from typing import Any

import orjson

from pipeline.parsers.errors import FormatMismatch


def load_json_object(line: str) -> dict[str, Any]:
    """Decode ``line`` as one JSON object.

    Raises:
        FormatMismatch: the line does not start with ``{``, so it is some
            other kind of line rather than a broken JSON object.
        ValueError: the line is not valid JSON, or is JSON but not an object.
            The message gives orjson's reason and character offset.
    """
    if not line.startswith("{"):
        raise FormatMismatch("the line does not start with '{'")
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as error:
        raise ValueError(f"no JSON object: {error.msg} at char {error.pos}") from None
    if not isinstance(record, dict):
        raise ValueError(f"no JSON object: the line is a JSON {type(record).__name__}")
    return record


def object_field(record: dict[str, Any], key: str) -> dict[str, Any]:
    """Return the object at ``record[key]``, or {} when it is missing or not an object."""
    value = record.get(key)
    return value if isinstance(value, dict) else {}
