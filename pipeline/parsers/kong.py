"""Kong Gateway JSON logs (``kong_json``), as the file-log and http-log plugins write them.

Every line is the object of Kong's log serializer (``kong.log.serialize``):
``started_at`` in epoch ms, ``client_ip``, ``request`` {method, uri, url,
size, headers}, ``response`` {status, size}, ``latencies`` {request, kong,
proxy} in ms, ``route``, ``service``, ``consumer`` and
``authenticated_entity`` {id, consumer_id}.

The credential id (``authenticated_entity.id``) becomes ``key_id`` and the
consumer username, custom_id or id ``account``. Kong replaces the Authorization header
with "REDACTED" by default, so the raw credential usually comes from an
``x-api-key`` or ``apikey`` header, when the gateway logs one.
"""

from __future__ import annotations

from typing import Any

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

# Request headers that carry a raw credential, in order of preference. Kong
# logs header names in lower case.
CREDENTIAL_HEADERS: tuple[str, ...] = ("authorization", "x-api-key", "apikey")


def _entity_id(value: Any) -> str:
    """Return the id of a Kong entity given as an object with ``id`` or as a bare id."""
    if isinstance(value, dict):
        return text_value(value.get("id"))
    return text_value(value)


def _host_from_url(url: str) -> str:
    """Return ``host:port`` of ``scheme://host:port/path``, "" when there is no scheme."""
    _, separator, rest = url.partition("://")
    if not separator:
        return ""
    return rest.split("/", 1)[0]


class KongJsonParser:
    """Kong file-log / http-log JSON objects."""

    format_id = "kong_json"

    def matches(self, line: str) -> bool:
        """Return True when ``line`` is a JSON object with a ``started_at`` key."""
        return line.startswith("{") and '"started_at"' in line

    def parse_line(self, line: str) -> tuple:
        """Parse one Kong log object into a row."""
        record = load_json_object(line)
        request = record.get("request")
        if "started_at" not in record or not isinstance(request, dict):
            raise FormatMismatch("no started_at and request object, as Kong logs have")
        response = object_field(record, "response")
        headers = object_field(request, "headers")
        latencies = object_field(record, "latencies")
        route = object_field(record, "route")
        consumer = object_field(record, "consumer")
        entity = object_field(record, "authenticated_entity")

        host = text_value(headers.get("host")) or _host_from_url(text_value(request.get("url")))
        route_name = text_value(route.get("name")) or text_value(route.get("id"))
        if not route_name:
            route_name = text_value(object_field(record, "service").get("name"))
        # username (or custom_id) is the name account registries use; the id is a UUID
        account = (
            text_value(consumer.get("username"))
            or text_value(consumer.get("custom_id"))
            or text_value(consumer.get("id"))
        )
        if not account:
            account = _entity_id(entity.get("consumer_id"))
        request_id = (
            text_value(request.get("id"))
            or text_value(headers.get("x-request-id"))
            or text_value(object_field(response, "headers").get("x-kong-request-id"))
        )
        return (
            timestamp_value_to_epoch("started_at", record.get("started_at")),
            text_value(record.get("client_ip")),
            text_value(request.get("method")),
            host,
            text_value(request.get("uri")),
            route_name,
            status_value("response.status", response.get("status")),
            duration_ms("latencies.request", latencies.get("request"), 1.0),
            int_value("request.size", request.get("size"), -1),
            int_value("response.size", response.get("size"), -1),
            text_value(headers.get("user-agent")),
            text_value(headers.get("referer")),
            text_value(headers.get("origin")),
            # Kong has no country of its own; a plugin or log template may add one
            text_value(record.get("country")) or text_value(headers.get("cf-ipcountry")),
            0,
            request_id,
            _entity_id(entity),
            account,
            first_credential(headers, CREDENTIAL_HEADERS),
            text_value(headers.get("x-device-id")),
        )
