"""Extra fields that custom NGINX and Apache formats append after the user agent.

Named fields are ``name=value`` or ``name="value"`` pairs, as in the common
NGINX convention ``rt=$request_time urt="$upstream_response_time"``. Known
names, matched case-insensitively, fill row fields. Unknown names and
unnamed fields (quoted strings, numbers, ``12ms`` durations, a trailing
X-Forwarded-For) are skipped, so an unexpected extra never rejects a line.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from pipeline.parsers.base import FIELD_INDEX
from pipeline.parsers.fields import NAN, asn_value, credential_value, duration_ms, int_value

LATENCY_SECONDS = "latency_s"
UPSTREAM_LATENCY_SECONDS = "upstream_latency_s"

# Lower-case extra field name -> RAW_FIELDS name, or LATENCY_SECONDS /
# UPSTREAM_LATENCY_SECONDS for NGINX times in seconds. The http_* names are
# NGINX's variables for request headers.
EXTRA_FIELD_TARGETS: dict[str, str] = {
    "rt": LATENCY_SECONDS,
    "request_time": LATENCY_SECONDS,
    "urt": UPSTREAM_LATENCY_SECONDS,
    "upstream_response_time": UPSTREAM_LATENCY_SECONDS,
    "key": "credential",
    "api_key": "credential",
    "apikey": "credential",
    "x_api_key": "credential",
    "http_x_api_key": "credential",
    "auth": "credential",
    "authorization": "credential",
    "http_authorization": "credential",
    "origin": "origin",
    "http_origin": "origin",
    "country": "country",
    "cc": "country",
    "geoip_country": "country",
    "geoip_country_code": "country",
    "asn": "asn",
    "req_id": "request_id",
    "request_id": "request_id",
    "device": "device_id",
    "device_id": "device_id",
    "ja3": "device_id",
    "ja4": "device_id",
    "host": "host",
    "http_host": "host",
    "consumer": "account",
    "account": "account",
    "key_id": "key_id",
    "credential_id": "key_id",
    "route": "route",
    "service": "route",
    "request_length": "bytes_in",
    "bytes_in": "bytes_in",
}

# A named pair (group 1 name, group 2 quoted value without its quotes, group
# 3 bare value), else an unnamed quoted string or bare token, which findall
# returns with an empty name. An unterminated quote runs to the end of the line.
_EXTRA_TOKEN = re.compile(
    r'([A-Za-z_][\w.\-]*)=(?:"([^"\\]*(?:\\.[^"\\]*)*)"?|(\S*))|"[^"\\]*(?:\\.[^"\\]*)*"?|\S+'
)
# NGINX separates the times of several upstream attempts with ", " and " : ".
_UPSTREAM_TIME_SEPARATOR = re.compile(r"[,:]\s*|\s+")

_CREDENTIAL = FIELD_INDEX["credential"]
_LATENCY = FIELD_INDEX["latency_ms"]
_BYTES_IN = FIELD_INDEX["bytes_in"]
_ASN = FIELD_INDEX["asn"]
_COUNTRY = FIELD_INDEX["country"]


def upstream_seconds_to_ms(name: str, value: str) -> float:
    """Sum NGINX upstream times such as ``0.004, 0.010 : 0.002`` (seconds) to ms.

    Several values mean several upstream attempts, and their sum approximates
    the upstream part of the request time. A "-" item (no attempt) counts as 0.
    """
    total = 0.0
    for item in _UPSTREAM_TIME_SEPARATOR.split(value):
        if item and item != "-":
            total += duration_ms(name, item, 1000.0)
    return total


class Layout:
    """A compiled extras layout: the names, order and quoting of one tail, seen again on most lines.

    ``fills`` lists (group index, row index, converter) for the known names;
    a converter returns the row value for a logged value other than "" or "-".
    ``pattern_text`` is the regex source of ``pattern``, so a parser can
    append it to its own line pattern. ``items`` lists each field's name and
    whether its value is quoted, in line order; fill indexes point into it.
    """

    __slots__ = ("fills", "items", "pattern", "pattern_text")

    def __init__(
        self,
        pattern_text: str,
        fills: tuple[tuple[int, int, Callable[[str], Any]], ...],
        items: tuple[tuple[str, bool], ...],
    ) -> None:
        self.pattern_text = pattern_text
        self.pattern = re.compile(pattern_text)
        self.fills = fills
        self.items = items


_QUOTED_VALUE = r'"([^"\\]*(?:\\.[^"\\]*)*)"'
_last_layout: Layout | None = None
# After a tail that has no layout (unnamed fields), skip this many tails
# before compiling again, so such logs do not pay for a build on every line.
_BUILD_BACKOFF_LINES = 1000
_builds_skipped = 0


def unescape_quotes(value: str) -> str:
    """Return a quoted value with Apache's ``\\"`` escapes undone."""
    return value.replace('\\"', '"') if '\\"' in value else value


def _converter(target: str, name: str) -> Callable[[str], Any]:
    if target == LATENCY_SECONDS:
        return lambda value: duration_ms(name, value, 1000.0)
    if target == UPSTREAM_LATENCY_SECONDS:
        return lambda value: upstream_seconds_to_ms(name, value)
    if target == "credential":
        return lambda value: credential_value(unescape_quotes(value))
    if target == "bytes_in":
        return lambda value: int_value(name, value, -1)
    if target == "asn":
        return lambda value: asn_value(name, value)
    if target == "country":
        return lambda value: unescape_quotes(value).upper()
    return unescape_quotes


def build_layout(tail: str) -> Layout | None:
    """Compile the layout of ``tail``, or None when it has unnamed fields or a field twice.

    A field that two names fill (two credentials, request and upstream time)
    needs the first-wins rules of the general path, so such tails get no layout.
    """
    parts: list[str] = []
    fills: list[tuple[int, int, Callable[[str], Any]]] = []
    items: list[tuple[str, bool]] = []
    slots: set[int] = set()
    for index, match in enumerate(_EXTRA_TOKEN.finditer(tail)):
        name = match.group(1)
        if name is None:
            return None
        quoted = match.group(0)[len(name) + 1 : len(name) + 2] == '"'
        # An unquoted value must not start with a quote: the general path strips the quotes of such a value.
        parts.append(re.escape(name) + "=" + (_QUOTED_VALUE if quoted else r'((?!")\S*)'))
        items.append((name, quoted))
        target = EXTRA_FIELD_TARGETS.get(name.lower())
        if target is None:
            continue
        slot = _LATENCY if target in (LATENCY_SECONDS, UPSTREAM_LATENCY_SECONDS) else FIELD_INDEX[target]
        if slot in slots:
            return None
        slots.add(slot)
        fills.append((index, slot, _converter(target, name)))
    if not parts:
        return None
    return Layout(r"\s*" + r"\s+".join(parts) + r"\s*", tuple(fills), tuple(items))


def apply_extra_fields(row: tuple, tail: str) -> tuple:
    """Return ``row`` with the known named fields of ``tail`` filled in.

    A tail with the same names, order and quoting as the previous one is
    matched by that layout's compiled regex, the common case in a log file;
    any other tail goes through the general path below, and its layout is
    compiled for the next lines.

    The first credential found wins. Request time (``rt``) gives the latency,
    and upstream time (``urt``) is used only when the request time is missing.

    Raises:
        ValueError: a known numeric field has a value that is not a number.
    """
    global _last_layout, _builds_skipped
    layout = _last_layout
    if layout is not None:
        match = layout.pattern.fullmatch(tail)
        if match is not None:
            groups = match.groups()
            filled = list(row)
            for index, slot, convert in layout.fills:
                value = groups[index]
                if value and value != "-":
                    filled[slot] = convert(value)
            return tuple(filled)
    if _builds_skipped > 0:
        _builds_skipped -= 1
    else:
        _last_layout = build_layout(tail)
        if _last_layout is None:
            _builds_skipped = _BUILD_BACKOFF_LINES
    return _apply_general(row, tail)


def _apply_general(row: tuple, tail: str) -> tuple:
    values: list | None = None
    request_ms = NAN
    upstream_ms = NAN
    for name, quoted, bare in _EXTRA_TOKEN.findall(tail):
        if not name:
            continue
        target = EXTRA_FIELD_TARGETS.get(name) or EXTRA_FIELD_TARGETS.get(name.lower())
        if target is None:
            continue
        value = quoted or bare
        if value == "" or value == "-":
            continue
        if '\\"' in value:
            value = value.replace('\\"', '"')
        if values is None:
            values = list(row)
        if target == LATENCY_SECONDS:
            request_ms = duration_ms(name, value, 1000.0)
        elif target == UPSTREAM_LATENCY_SECONDS:
            upstream_ms = upstream_seconds_to_ms(name, value)
        elif target == "credential":
            if not values[_CREDENTIAL]:
                values[_CREDENTIAL] = credential_value(value)
        elif target == "bytes_in":
            values[_BYTES_IN] = int_value(name, value, -1)
        elif target == "asn":
            values[_ASN] = asn_value(name, value)
        elif target == "country":
            values[_COUNTRY] = value.upper()
        else:
            values[FIELD_INDEX[target]] = value
    if values is None:
        return row
    if request_ms == request_ms:
        values[_LATENCY] = request_ms
    elif upstream_ms == upstream_ms:
        values[_LATENCY] = upstream_ms
    return tuple(values)
