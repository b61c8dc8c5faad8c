"""Value conversions shared by the format parsers.

Every converter returns a value in the ``RAW_FIELDS`` convention ("" for a
missing string, -1 for unknown bytes, NaN for unknown latency). On invalid
input it raises ``ValueError`` with a message that names the field and the
value, because that message becomes the dead-letter reason.
"""

from __future__ import annotations

import re
from typing import Any

NAN = float("nan")

# A row with every field unknown. JSON parsers copy it into a list and fill it.
EMPTY_ROW: tuple = (
    0.0,  # ts
    "",  # client_ip
    "",  # method
    "",  # host
    "",  # target
    "",  # route
    0,  # status
    NAN,  # latency_ms
    -1,  # bytes_in
    -1,  # bytes_out
    "",  # user_agent
    "",  # referer
    "",  # origin
    "",  # country
    0,  # asn
    "",  # request_id
    "",  # key_id
    "",  # account
    "",  # credential
    "",  # device_id
)

# Lower-cased values that gateways write in place of a secret. Kong and
# Traefik write "REDACTED", and this project's dead letters use "<redacted>".
# Taken as a credential, such a value would hash every client to one token.
REDACTED_VALUES = frozenset({"redacted", "<redacted>"})

MAX_QUOTED_VALUE_CHARS = 40

MAX_COUNT = 2**63 - 1
"""Largest byte count or other count a row can carry: the store keeps them as Int64."""
MAX_COUNT_DIGITS = 18
"""Digits a count can have and still be below ``MAX_COUNT``, whatever the digits are."""
MAX_ASN = 2**32 - 1

_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")
_INTEGER = re.compile(r"[0-9]+")
_ASN = re.compile(r"(?:AS)?([0-9]+)", re.IGNORECASE)


def quote_value(value: Any) -> str:
    """Return ``repr(value)`` cut to ``MAX_QUOTED_VALUE_CHARS`` for a dead-letter reason.

    The cut keeps reasons short and keeps most of a misplaced secret out of them.
    """
    text = repr(value)
    if len(text) > MAX_QUOTED_VALUE_CHARS:
        return text[: MAX_QUOTED_VALUE_CHARS - 3] + "..."
    return text


def text_value(value: Any) -> str:
    """Convert a logged value to a row string: "" for None, "-" or an empty list.

    A list, such as a repeated header in Kong or Caddy logs, gives its first
    item when that is a string.
    """
    if value is None:
        return ""
    if isinstance(value, str):
        return "" if value == "-" else value
    if isinstance(value, list):
        first = value[0] if value else None
        return first if isinstance(first, str) and first != "-" else ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return ""


def first_text(record: dict[str, Any], keys: tuple[str, ...]) -> str:
    """Return the text value of the first of ``keys`` that gives one, "" when none does."""
    for key in keys:
        value = record.get(key)
        if value is None:
            continue
        if type(value) is str:
            if value and value != "-":
                return value
            continue
        text = text_value(value)
        if text:
            return text
    return ""


def first_credential(record: dict[str, Any], keys: tuple[str, ...]) -> str:
    """Return the credential value of the first of ``keys`` that gives one, "" when none does."""
    for key in keys:
        value = record.get(key)
        if value is not None:
            credential = credential_value(value)
            if credential:
                return credential
    return ""


def first_present_key(record: dict[str, Any], keys: tuple[str, ...]) -> str | None:
    """Return the first of ``keys`` whose value in ``record`` is truthy, None when none is."""
    for key in keys:
        if record.get(key):
            return key
    return None


def credential_value(value: Any) -> str:
    """Convert a logged Authorization or API-key value to a credential, "" when redacted."""
    text = text_value(value).strip()
    if text.lower() in REDACTED_VALUES:
        return ""
    return text


def int_value(name: str, value: Any, missing: int) -> int:
    """Convert a logged count or code to int, ``missing`` when absent or "-".

    Raises:
        ValueError: the value is not a non-negative whole number.
    """
    if value is None or value == "-" or value == "":
        return missing
    if isinstance(value, bool):
        raise ValueError(f"{name} {quote_value(value)} is not a number")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{name} {value} is negative")
        return count_in_range(name, value)
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return count_in_range(name, int(value))
    if isinstance(value, str) and _INTEGER.fullmatch(value):
        return count_in_range(name, int(value))
    raise ValueError(f"{name} {quote_value(value)} is not a number")


def count_in_range(name: str, count: int) -> int:
    """Return ``count`` unless it is above ``MAX_COUNT``.

    Raises:
        ValueError: the count does not fit the store's Int64 columns.
    """
    if count > MAX_COUNT:
        raise ValueError(f"{name} {quote_value(str(count))} is too large: counts above 2**63 - 1 are not valid")
    return count


def status_value(name: str, value: Any) -> int:
    """Convert a logged HTTP status to int, 0 when absent or "-".

    Raises:
        ValueError: the value is not a number from 0 to 999.
    """
    status = int_value(name, value, 0)
    if status > 999:
        raise ValueError(f"{name} {status} is not an HTTP status code")
    return status


def duration_ms(name: str, value: Any, ms_per_unit: float) -> float:
    """Convert a logged duration to milliseconds, NaN when absent or "-".

    ``ms_per_unit`` is 1000.0 for seconds, 1.0 for ms, 1e-3 for µs, 1e-6 for ns.
    Negative values, which Kong uses for "not measured", also give NaN.

    Raises:
        ValueError: the value is not a number.
    """
    if value is None or value == "-" or value == "":
        return NAN
    if isinstance(value, bool):
        raise ValueError(f"{name} {quote_value(value)} is not a number")
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str) and _DECIMAL.fullmatch(value):
        number = float(value)
    else:
        raise ValueError(f"{name} {quote_value(value)} is not a number")
    if number < 0 or number != number:
        return NAN
    return number * ms_per_unit


def asn_value(name: str, value: Any) -> int:
    """Convert a logged autonomous system number ("13335" or "AS13335") to int, 0 when absent.

    Raises:
        ValueError: the value is not an ASN.
    """
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_ASN:
        return value
    text = text_value(value)
    if not text:
        return 0
    match = _ASN.fullmatch(text)
    if match is None or int(match.group(1)) > MAX_ASN:
        raise ValueError(f"{name} {quote_value(value)} is not an AS number (0 to 2**32 - 1)")
    return int(match.group(1))


def strip_port(address: str) -> str:
    """Return the host part of ``ip:port``, ``[ipv6]:port`` or a bare address.

    A bare IPv6 address (more than one colon, no brackets) is returned as is.
    """
    address = address.strip()
    if address == "-":
        return ""
    if address.startswith("["):
        end = address.find("]")
        return address[1:end] if end > 0 else address
    if address.count(":") == 1:
        return address.partition(":")[0]
    return address


def first_forwarded_address(forwarded_for: str) -> str:
    """Return the first (client-most) address of an X-Forwarded-For value, without port."""
    first = forwarded_for.partition(",")[0]
    return strip_port(first)
