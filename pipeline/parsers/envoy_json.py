"""Envoy JSON access logs (``envoy_json``), as written by a ``json_format`` config.

Envoy has no fixed JSON layout, so this parser reads the key names of the
common configurations: Envoy's documented examples, Istio's JSON format
(``path``, ``x_forwarded_for``, ``user_agent``, ``authority``) and Envoy
Gateway's (``x-envoy-origin-path``, ``user-agent``, ``:authority``). The
candidate keys for each field are listed below, best first. Numbers may
be JSON numbers or strings, because Istio quotes some of them.

The client is ``downstream_remote_address`` without its port, because Envoy
fills it from X-Forwarded-For only as far as its trusted-hops setting
allows. The first X-Forwarded-For address is used only when that is missing.
"""

from __future__ import annotations

from typing import Any

from pipeline.parsers.errors import FormatMismatch
from pipeline.parsers.fields import (
    duration_ms,
    first_credential,
    first_forwarded_address,
    first_present_key,
    first_text,
    int_value,
    status_value,
    strip_port,
    text_value,
)
from pipeline.parsers.jsonline import load_json_object
from pipeline.parsers.timestamps import timestamp_value_to_epoch

TIME_KEYS: tuple[str, ...] = ("start_time", "timestamp", "@timestamp")
METHOD_KEYS: tuple[str, ...] = ("method", ":method")
TARGET_KEYS: tuple[str, ...] = (
    "x-envoy-original-path",
    "x_envoy_original_path",
    "x-envoy-origin-path",
    "path",
    ":path",
)
HOST_KEYS: tuple[str, ...] = (":authority", "authority", "host")
ROUTE_KEYS: tuple[str, ...] = ("route_name", "upstream_cluster")
CLIENT_ADDRESS_KEYS: tuple[str, ...] = ("downstream_remote_address", "client_ip")
FORWARDED_FOR_KEYS: tuple[str, ...] = ("x-forwarded-for", "x_forwarded_for")
USER_AGENT_KEYS: tuple[str, ...] = ("user-agent", "user_agent")
REQUEST_ID_KEYS: tuple[str, ...] = ("x-request-id", "request_id", "x_request_id")
CREDENTIAL_KEYS: tuple[str, ...] = ("authorization", "x-api-key", "x_api_key", "api_key", "apikey")
DEVICE_KEYS: tuple[str, ...] = ("x-device-id", "device_id", "ja3", "ja4")


def _client_address(record: dict[str, Any]) -> str:
    client = strip_port(first_text(record, CLIENT_ADDRESS_KEYS))
    if client:
        return client
    return first_forwarded_address(first_text(record, FORWARDED_FOR_KEYS))


class EnvoyJsonParser:
    """Envoy access-log objects with ``response_code`` and ``start_time``."""

    format_id = "envoy_json"

    def matches(self, line: str) -> bool:
        """Return True when ``line`` is a JSON object with a ``response_code`` key."""
        return line.startswith("{") and '"response_code"' in line

    def parse_line(self, line: str) -> tuple:
        """Parse one Envoy JSON object into a row."""
        record = load_json_object(line)
        if "response_code" not in record:
            raise FormatMismatch("no response_code field, as Envoy logs have")
        time_key = first_present_key(record, TIME_KEYS)
        if time_key is None:
            raise ValueError("no start_time field")
        return (
            timestamp_value_to_epoch(time_key, record[time_key]),
            _client_address(record),
            first_text(record, METHOD_KEYS),
            first_text(record, HOST_KEYS),
            first_text(record, TARGET_KEYS),
            first_text(record, ROUTE_KEYS),
            status_value("response_code", record.get("response_code")),
            duration_ms("duration", record.get("duration"), 1.0),
            int_value("bytes_received", record.get("bytes_received"), -1),
            int_value("bytes_sent", record.get("bytes_sent"), -1),
            first_text(record, USER_AGENT_KEYS),
            first_text(record, ("referer", "referrer")),
            text_value(record.get("origin")),
            "",
            0,
            first_text(record, REQUEST_ID_KEYS),
            "",
            "",
            first_credential(record, CREDENTIAL_KEYS),
            first_text(record, DEVICE_KEYS),
        )
