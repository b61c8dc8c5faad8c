"""Traefik's JSON access log (``traefik_json``).

Traefik 1.x to 3.x write one object per request with Go-style field names:
``ClientHost``, ``StartUTC``, ``RequestMethod``, ``RequestPath`` (with the
query string), ``DownstreamStatus``, ``Duration`` in nanoseconds,
``RouterName`` (2.x+) or ``FrontendName`` (1.x), and one
``request_<Header-Name>`` key per kept request header. Header names are in
Go's canonical form (``X-Api-Key``). ``request_Authorization`` contains the
raw credential unless Traefik's header configuration redacts it. A redacted
value is "REDACTED" and gives no credential.
"""

from __future__ import annotations

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

# Keys holding the request start, best first. StartLocal has an offset, so it
# converts to the same instant.
TIME_KEYS: tuple[str, ...] = ("StartUTC", "StartLocal", "time")
CREDENTIAL_KEYS: tuple[str, ...] = ("request_Authorization", "request_X-Api-Key", "request_Apikey")


class TraefikJsonParser:
    """Traefik JSON access-log objects."""

    format_id = "traefik_json"

    def matches(self, line: str) -> bool:
        """Return True when ``line`` is a JSON object with a Traefik status key."""
        return line.startswith("{") and ('"DownstreamStatus"' in line or '"OriginStatus"' in line)

    def parse_line(self, line: str) -> tuple:
        """Parse one Traefik JSON object into a row."""
        record = load_json_object(line)
        if "DownstreamStatus" in record:
            status = status_value("DownstreamStatus", record["DownstreamStatus"])
        elif "OriginStatus" in record:
            status = status_value("OriginStatus", record["OriginStatus"])
        else:
            raise FormatMismatch("no DownstreamStatus or OriginStatus field, as Traefik logs have")
        time_key = first_present_key(record, TIME_KEYS)
        if time_key is None:
            raise ValueError("no StartUTC, StartLocal or time field")

        # ClientHost is a comma-separated list when Traefik trusts X-Forwarded-For.
        client = first_forwarded_address(text_value(record.get("ClientHost")))
        if not client:
            client = strip_port(text_value(record.get("ClientAddr")))
        return (
            timestamp_value_to_epoch(time_key, record[time_key]),
            client,
            text_value(record.get("RequestMethod")),
            first_text(record, ("RequestHost", "RequestAddr")),
            text_value(record.get("RequestPath")),
            first_text(record, ("RouterName", "FrontendName", "ServiceName", "BackendName")),
            status,
            duration_ms("Duration", record.get("Duration"), 1e-6),
            int_value("RequestContentSize", record.get("RequestContentSize"), -1),
            int_value("DownstreamContentSize", record.get("DownstreamContentSize"), -1),
            text_value(record.get("request_User-Agent")),
            text_value(record.get("request_Referer")),
            text_value(record.get("request_Origin")),
            "",
            0,
            text_value(record.get("request_X-Request-Id")),
            "",
            text_value(record.get("ClientUsername")),
            first_credential(record, CREDENTIAL_KEYS),
            text_value(record.get("request_X-Device-Id")),
        )
