"""The contract every log-format parser implements.

A parser turns a chunk of raw lines into row tuples in ``RAW_FIELDS`` order
plus dead letters. Rows still hold raw credentials (``credential`` and the
query string inside ``target``): only the identity stage may read them, and
it replaces them with keyed hashes before anything is stored or logged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

# Field order of a parsed row. Strings are "" when the log lacks the field;
# numbers use the same sentinels as the event batch (NaN latency, -1 bytes,
# 0 ASN, 0 status when the log has none: a `-` status, a JSON log without
# one, or Envoy's 0 for "no response sent").
RAW_FIELDS: tuple[str, ...] = (
    "ts",  # float, event time in seconds since the Unix epoch, UTC
    "client_ip",  # str
    "method",  # str, upper case as logged
    "host",  # str, Host header or virtual host when logged
    "target",  # str, request target as logged: path plus query string (may hold a credential)
    "route",  # str, gateway route or service name when logged
    "status",  # int
    "latency_ms",  # float, NaN when unknown
    "bytes_in",  # int, -1 when unknown
    "bytes_out",  # int, -1 when unknown
    "user_agent",  # str
    "referer",  # str
    "origin",  # str, Origin header when logged
    "country",  # str, ISO 3166-1 alpha-2 when the gateway adds it
    "asn",  # int, 0 when unknown
    "request_id",  # str
    "key_id",  # str, credential or key id the gateway logged (not secret)
    "account",  # str, consumer, user or account id the gateway logged
    "credential",  # str, RAW secret: Authorization or X-API-Key header value when logged
    "device_id",  # str, device-id header or TLS fingerprint (JA3/JA4) when logged
)
FIELD_INDEX: dict[str, int] = {name: i for i, name in enumerate(RAW_FIELDS)}


@dataclass(slots=True)
class ParsedChunk:
    """The output of a parser for one chunk of lines.

    Invariant: ``len(rows) + len(dead)`` equals the number of lines given, so
    counts add up; ``positions[i]`` and ``formats[i]`` belong to ``rows[i]``.
    """

    rows: list[tuple] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    formats: list[str] = field(default_factory=list)
    # (position, raw line as text, reason, format tried or "")
    dead: list[tuple[int, str, str, str]] = field(default_factory=list)


class Parser(Protocol):
    """One log format. ``format_id`` is stable: it is stored with every event."""

    format_id: str

    def matches(self, line: str) -> bool:
        """Return True when ``line`` may be this format: a cheap pre-filter; detection confirms with ``parse_line``."""
        ...

    def parse_line(self, line: str) -> tuple:
        """Parse one line into a row in ``RAW_FIELDS`` order.

        Raises:
            FormatMismatch: the line is not this format at all, so the driver
                tries the other formats (a ``ValueError`` subclass in
                ``pipeline.parsers.errors``).
            ValueError: the line is this format with a bad value; the message
                is the dead-letter reason and names what is wrong.
        """
        ...
