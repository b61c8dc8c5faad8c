"""Caddy 2 JSON access logs (``caddy_json``).

Caddy's access logger writes ``{"logger": "http.log.access...", "msg":
"handled request", "ts": <epoch s>, "request": {...}, "status", "size",
"bytes_read", "duration" (seconds), "user_id"}``. Request headers are
lists of strings. ``request.client_ip`` (Caddy 2.7 and later) honours
Caddy's trusted-proxy setting, so it is preferred over ``remote_ip``.
A header value of "REDACTED", which log filters write in place of secrets,
gives no credential.
"""

from __future__ import annotations

from pipeline.parsers.errors import FormatMismatch
from pipeline.parsers.fields import (
    duration_ms,
    first_credential,
    int_value,
    status_value,
    text_value,
)
from pipeline.parsers.jsonline import load_json_object, object_field
from pipeline.parsers.timestamps import timestamp_value_to_epoch

CREDENTIAL_HEADERS: tuple[str, ...] = ("Authorization", "X-Api-Key", "Apikey")


class CaddyJsonParser:
    """Caddy access-log objects (``msg`` "handled request" with a ``request`` object)."""

    format_id = "caddy_json"

    def matches(self, line: str) -> bool:
        """Return True when ``line`` is a JSON object from Caddy's access logger."""
        return line.startswith("{") and '"http.log.access' in line

    def parse_line(self, line: str) -> tuple:
        """Parse one Caddy access-log object into a row."""
        record = load_json_object(line)
        request = record.get("request")
        if not isinstance(request, dict) or "status" not in record:
            raise FormatMismatch("no request object and status, as Caddy access logs have")
        if "ts" not in record:
            raise ValueError("no ts field")
        headers = object_field(request, "headers")
        return (
            timestamp_value_to_epoch("ts", record["ts"]),
            text_value(request.get("client_ip")) or text_value(request.get("remote_ip")),
            text_value(request.get("method")),
            text_value(request.get("host")),
            text_value(request.get("uri")),
            "",
            status_value("status", record.get("status")),
            duration_ms("duration", record.get("duration"), 1000.0),
            int_value("bytes_read", record.get("bytes_read"), -1),
            int_value("size", record.get("size"), -1),
            text_value(headers.get("User-Agent")),
            text_value(headers.get("Referer")),
            text_value(headers.get("Origin")),
            "",
            0,
            text_value(headers.get("X-Request-Id")),
            "",
            text_value(record.get("user_id")),
            first_credential(headers, CREDENTIAL_HEADERS),
            text_value(headers.get("X-Device-Id")),
        )
