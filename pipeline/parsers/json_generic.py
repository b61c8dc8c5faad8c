"""Any JSON-object access log (``json``), read through a field mapping.

The mapping gives, for each row field, the JSON key or dotted path that
contains it, or a list of them tried in order::

    {"ts": "time", "client_ip": "remote.addr", "credential": "headers.x-api-key"}

A path is first looked up as one literal key, because flat logs use
dotted names such as ``http.request.method``, and then walked through
nested objects. A given mapping is merged over ``DEFAULT_MAPPING``, and a
field mapped to None loses its default. Besides the ``RAW_FIELDS`` names,
the keys ``latency_s``, ``latency_us`` and ``latency_ns`` read a latency
logged in those units.

Timestamps may be epoch s, ms, µs or ns (distinguished by magnitude), ISO
8601 or CLF time. A record needs a timestamp and at least one of
client_ip, method, target or status, so that application log lines with
only a time and a message are not taken for requests.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.errors import ConfigError
from pipeline.parsers.base import FIELD_INDEX, RAW_FIELDS
from pipeline.parsers.errors import FormatMismatch
from pipeline.parsers.fields import (
    EMPTY_ROW,
    asn_value,
    credential_value,
    duration_ms,
    int_value,
    status_value,
    strip_port,
    text_value,
)
from pipeline.parsers.jsonline import load_json_object
from pipeline.parsers.timestamps import timestamp_value_to_epoch

# Latency mapping keys -> ms per logged unit. The first one present wins.
LATENCY_UNITS: dict[str, float] = {"latency_ms": 1.0, "latency_s": 1000.0, "latency_us": 1e-3, "latency_ns": 1e-6}

# Field -> candidate paths, best first: NGINX JSON variable names, Elastic
# Common Schema names and other common spellings. "duration" is left out
# because gateways log it in different units.
DEFAULT_MAPPING: dict[str, tuple[str, ...]] = {
    "ts": ("time", "timestamp", "@timestamp", "ts", "start_time", "time_iso8601", "time_local", "msec", "date"),
    "client_ip": ("client_ip", "remote_addr", "remote_ip", "clientip", "client", "ip", "source.ip", "client.ip"),
    "method": ("method", "request_method", "http.request.method", "verb"),
    "host": ("host", "http_host", "server_name", "authority", "url.domain"),
    "target": ("request_uri", "uri", "path", "url", "request_path", "url.original", "target"),
    "route": ("route", "route_name", "service"),
    "status": ("status", "status_code", "response_code", "statusCode", "http.response.status_code"),
    "latency_ms": ("latency_ms", "duration_ms", "response_time_ms", "elapsed_ms"),
    "latency_s": ("request_time", "duration_s", "response_time_s"),
    "bytes_in": ("bytes_in", "request_length", "bytes_received", "request_size"),
    "bytes_out": ("bytes_out", "body_bytes_sent", "bytes_sent", "response_size", "size"),
    "user_agent": ("user_agent", "http_user_agent", "userAgent", "user-agent", "user_agent.original"),
    "referer": ("referer", "http_referer", "referrer"),
    "origin": ("origin", "http_origin"),
    "country": ("country", "country_code", "geoip_country", "geoip_country_code", "cc"),
    "asn": ("asn",),
    "request_id": ("request_id", "req_id", "x_request_id", "requestId"),
    "key_id": ("key_id", "credential_id", "api_key_id"),
    "account": ("account", "consumer", "remote_user", "user_id", "user"),
    "credential": ("authorization", "http_authorization", "api_key", "apikey", "x_api_key", "http_x_api_key"),
    "device_id": ("device_id", "ja3", "ja4"),
}

_ACCESS_FIELDS = ("client_ip", "method", "target", "status")
_TEXT_FIELDS = ("client_ip", "method", "host", "target", "route", "user_agent", "referer", "origin",
                "country", "request_id", "key_id", "account", "device_id")  # fmt: skip
_MAX_NAMES_IN_REASON = 4
# Rank offset of a walked dotted path, so that a literal key of the same rank wins.
_WALK_RANK_OFFSET = 0.5


def _normalize_paths(field: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, (list, tuple)) or not all(isinstance(path, str) and path for path in value):
        raise ConfigError(
            f"json field mapping for {field!r} is {value!r}: expected a key, a dotted path or a list of them"
        )
    return tuple(value)


def merge_mapping(mapping: Mapping[str, Any] | None) -> dict[str, tuple[str, ...]]:
    """Return ``DEFAULT_MAPPING`` with ``mapping`` merged over it, validated.

    Raises:
        ConfigError: a key is not a row field or latency unit key, or a value is
            not a path or a list of paths.
    """
    merged = dict(DEFAULT_MAPPING)
    for field, value in (mapping or {}).items():
        if field not in FIELD_INDEX and field not in LATENCY_UNITS:
            known = ", ".join((*RAW_FIELDS, *LATENCY_UNITS))
            raise ConfigError(f"json field mapping has unknown field {field!r}: expected one of {known}")
        merged[field] = _normalize_paths(field, value)
    return merged


def _walk(record: dict[str, Any], parts: tuple[str, ...]) -> Any:
    node: Any = record
    for part in parts:
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


# Value kinds, which set the check and conversion of a candidate value.
_TEXT, _CREDENTIAL, _RAW = 0, 1, 2


def _value_kind(field: str) -> int:
    if field == "credential":
        return _CREDENTIAL
    return _TEXT if field in _TEXT_FIELDS else _RAW


class GenericJsonParser:
    """JSON-object access logs read through a field mapping (see the module docstring)."""

    format_id = "json"

    def __init__(self, mapping: Mapping[str, Any] | None = None) -> None:
        self._paths = merge_mapping(mapping)
        # First-level key -> (field, rank, path, dotted parts or None for a
        # literal key, value kind). Looking up only the keys a record has is
        # much cheaper than trying every candidate of every field.
        index: dict[str, list[tuple[str, float, str, tuple[str, ...] | None, int]]] = {}
        for field, paths in self._paths.items():
            kind = _value_kind(field)
            for rank, path in enumerate(paths):
                index.setdefault(path, []).append((field, rank, path, None, kind))
                parts = tuple(path.split("."))
                if len(parts) > 1:
                    index.setdefault(parts[0], []).append((field, rank + _WALK_RANK_OFFSET, path, parts, kind))
        self._index = {key: tuple(entries) for key, entries in index.items()}
        self._keys = frozenset(self._index)

    def matches(self, line: str) -> bool:
        """Return True when ``line`` looks like a JSON object."""
        return line.startswith("{")

    def _resolve(self, record: dict[str, Any]) -> dict[str, tuple[float, str, Any]]:
        """Return field -> (rank, path, value) of the best candidate present in ``record``.

        A candidate counts only when it gives something: text fields take
        the text value, so an object or "-" under one key lets a later
        candidate win, and a redacted credential counts as absent.
        """
        best: dict[str, tuple[float, str, Any]] = {}
        for key in self._keys.intersection(record):
            for field, rank, path, parts, kind in self._index[key]:
                current = best.get(field)
                if current is not None and current[0] <= rank:
                    continue
                value = record[key] if parts is None else _walk(record, parts)
                if kind == _TEXT:
                    if type(value) is not str:
                        value = text_value(value)
                    if not value or value == "-":
                        continue
                elif kind == _CREDENTIAL:
                    value = credential_value(value)
                    if not value:
                        continue
                elif value is None or value == "" or value == "-":
                    continue
                best[field] = (rank, path, value)
        return best

    def parse_line(self, line: str) -> tuple:
        """Parse one JSON object into a row through the mapping."""
        record = load_json_object(line)
        found = self._resolve(record)
        if "ts" not in found:
            raise FormatMismatch(f"no timestamp field ({self._describe_candidates('ts')})")
        values = list(EMPTY_ROW)
        _, path, value = found["ts"]
        values[0] = timestamp_value_to_epoch(path, value)
        for field in _TEXT_FIELDS:
            if field in found:
                values[FIELD_INDEX[field]] = found[field][2]
        values[FIELD_INDEX["client_ip"]] = strip_port(values[FIELD_INDEX["client_ip"]])
        values[FIELD_INDEX["country"]] = values[FIELD_INDEX["country"]].upper()
        if "credential" in found:
            values[FIELD_INDEX["credential"]] = found["credential"][2]
        if "status" in found:
            values[FIELD_INDEX["status"]] = status_value(found["status"][1], found["status"][2])
        if "bytes_in" in found:
            values[FIELD_INDEX["bytes_in"]] = int_value(found["bytes_in"][1], found["bytes_in"][2], -1)
        if "bytes_out" in found:
            values[FIELD_INDEX["bytes_out"]] = int_value(found["bytes_out"][1], found["bytes_out"][2], -1)
        if "asn" in found:
            values[FIELD_INDEX["asn"]] = asn_value(found["asn"][1], found["asn"][2])
        for unit, ms_per_unit in LATENCY_UNITS.items():
            if unit in found:
                values[FIELD_INDEX["latency_ms"]] = duration_ms(found[unit][1], found[unit][2], ms_per_unit)
                break

        if not any(values[FIELD_INDEX[field]] for field in _ACCESS_FIELDS):
            raise FormatMismatch("no client_ip, method, target or status field, so not an access record")
        return tuple(values)

    def _describe_candidates(self, field: str) -> str:
        names = list(self._paths.get(field, ())[:_MAX_NAMES_IN_REASON])
        if len(self._paths.get(field, ())) > _MAX_NAMES_IN_REASON:
            names.append("...")
        return ", ".join(names)
